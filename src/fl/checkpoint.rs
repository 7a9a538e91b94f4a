//! A party's checkpoint: everything it needs to continue a run where it stopped, written
//! atomically to its `--state-dir`.
//!
//! A checkpoint holds the model's parameters, the optimizer's moments, the data order and
//! the generators that draw batches and round updates, the next round to run, the epochs'
//! metrics so far, and the plan's fingerprint (the SHA-256 of the plan's JSON: a public
//! value computed from public data, so it leaks nothing). A party restarted on the same
//! directory recomputes, from the checkpoint on, exactly the updates it computed before it
//! stopped, fetches the sums it missed from the server and applies them in order, so it
//! ends with the parameters of a run that never stopped. A checkpoint of another
//! federation (another plan) or another party is refused.
//!
//! The file is written with [`write_private_atomic`] (temporary file, fsync, rename, mode
//! 0600: the parameters are the party's model) and read back as untrusted input: its size
//! is bounded and every field is checked against the plan before use.

use super::client::{Client, ClientState, RngState};
use super::metrics::EpochMetrics;
use super::plan::{Plan, ValidPlan};
use super::server::PartyId;
use crate::secret_file::{SecretFileError, read_private, write_private_atomic};
use bincode::Options;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Version of the checkpoint format.
const FORMAT: u32 = 1;

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("checkpoint {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: SecretFileError,
    },
    /// The plan or rules of a resumed server do not validate.
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
    /// The file is not a checkpoint of this party in this federation, or is damaged.
    #[error("checkpoint {path}: {reason}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where a party's run stands, besides its client's state.
#[derive(Clone, Debug, Default)]
pub(crate) struct Progress {
    /// The next round to run.
    pub(crate) next_round: u64,
    /// Metrics of the epochs done (reporting parties only).
    pub(crate) epochs: Vec<EpochMetrics>,
    /// Sum of this epoch's train losses so far.
    pub(crate) loss_sum: f64,
    /// Rounds skipped: their sums could not be sums of valid updates.
    pub(crate) skipped: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
struct PartyCheckpoint {
    format: u32,
    fingerprint: [u8; 32],
    party: u32,
    next_round: u64,
    loss_sum: f64,
    skipped: Vec<u64>,
    /// The epochs' metrics as JSON (their optional fields are skipped when empty, which a
    /// positional encoding cannot express).
    epochs: String,
    client: ClientState,
    /// The generator that rounds updates (federated runs).
    rounding: Option<RngState>,
}

/// The plan's fingerprint: SHA-256 of its JSON.
pub fn plan_fingerprint(plan: &Plan) -> [u8; 32] {
    // Serializing a plain struct of numbers and strings cannot fail.
    let json = serde_json::to_vec(plan).unwrap_or_default();
    Sha256::digest(&json).into()
}

/// Writes and reads one party's checkpoints in a directory.
pub(crate) struct Checkpoints {
    path: PathBuf,
    model_path: PathBuf,
    fingerprint: [u8; 32],
    party: PartyId,
    /// Rounds between checkpoints (besides every epoch's end).
    pub(crate) every: u64,
}

/// Largest checkpoint read: parameters, two moments and the data order of the largest
/// model and shard the library accepts fit many times over.
const MAX_CHECKPOINT: u64 = 1 << 30;

impl Checkpoints {
    pub(crate) fn new(dir: &Path, plan: &ValidPlan, party: PartyId, every: u64) -> Self {
        Self {
            path: dir.join(format!("party-{}.checkpoint", party.0)),
            model_path: dir.join(format!("party-{}.model.safetensors", party.0)),
            fingerprint: plan_fingerprint(plan),
            party,
            every: every.max(1),
        }
    }

    fn refused(&self, reason: impl Into<String>) -> CheckpointError {
        CheckpointError::Refused {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Restores `client` (and the rounding generator) from the checkpoint if there is one;
    /// returns where the run stands (`None`: start from round 0).
    pub(crate) fn load(
        &self,
        client: &mut Client,
        rounding: Option<&mut ChaCha20Rng>,
        total_rounds: u64,
    ) -> Result<Option<Progress>, CheckpointError> {
        if !self.path.exists() {
            return Ok(None);
        }
        let bytes =
            read_private(&self.path, MAX_CHECKPOINT).map_err(|source| CheckpointError::File {
                path: self.path.clone(),
                source,
            })?;
        let checkpoint: PartyCheckpoint = bincode::options()
            .with_limit(MAX_CHECKPOINT)
            .with_fixint_encoding()
            .deserialize(&bytes)
            .map_err(|e| self.refused(format!("not a hefl checkpoint ({e})")))?;
        if checkpoint.format != FORMAT {
            return Err(self.refused(format!("format {}, expected {FORMAT}", checkpoint.format)));
        }
        if checkpoint.fingerprint != self.fingerprint {
            return Err(self.refused(format!(
                "it belongs to another federation (plan fingerprint {}, this server's plan is {}): use another --state-dir, or delete it to start over",
                hex::encode(&checkpoint.fingerprint[..8]),
                hex::encode(&self.fingerprint[..8])
            )));
        }
        if checkpoint.party != self.party.0 {
            return Err(self.refused(format!(
                "it is party {}'s, expected {}'s",
                checkpoint.party, self.party
            )));
        }
        if checkpoint.next_round > total_rounds {
            return Err(self.refused(format!(
                "next round {}, beyond the run's {total_rounds}",
                checkpoint.next_round
            )));
        }
        let epochs: Vec<EpochMetrics> = serde_json::from_str(&checkpoint.epochs)
            .map_err(|e| self.refused(format!("its epoch metrics do not parse: {e}")))?;
        client
            .restore(checkpoint.client)
            .map_err(|reason| self.refused(reason))?;
        match (rounding, checkpoint.rounding) {
            (Some(rng), Some(state)) => *rng = state.restore(),
            (None, None) => {}
            _ => {
                return Err(self.refused(
                    "a rounding generator where the run has none, or none where it has one",
                ));
            }
        }
        Ok(Some(Progress {
            next_round: checkpoint.next_round,
            epochs,
            loss_sum: checkpoint.loss_sum,
            skipped: checkpoint.skipped,
        }))
    }

    /// Writes the checkpoint atomically.
    pub(crate) fn save(
        &self,
        client: &Client,
        rounding: Option<&ChaCha20Rng>,
        progress: &Progress,
    ) -> Result<(), CheckpointError> {
        let checkpoint = PartyCheckpoint {
            format: FORMAT,
            fingerprint: self.fingerprint,
            party: self.party.0,
            next_round: progress.next_round,
            loss_sum: progress.loss_sum,
            skipped: progress.skipped.clone(),
            epochs: serde_json::to_string(&progress.epochs)
                .map_err(|e| self.refused(format!("cannot encode the epoch metrics: {e}")))?,
            client: client.snapshot(),
            rounding: rounding.map(RngState::of),
        };
        let bytes = bincode::options()
            .with_fixint_encoding()
            .serialize(&checkpoint)
            .map_err(|e| self.refused(format!("cannot encode: {e}")))?;
        write_private_atomic(&self.path, &bytes, true).map_err(|source| CheckpointError::File {
            path: self.path.clone(),
            source,
        })?;
        crate::model::write_model(&self.model_path, client.model()).map_err(|e| {
            self.refused(format!(
                "cannot write the model {}: {e}",
                self.model_path.display()
            ))
        })
    }
}

/// A server's checkpoint in its `--state-dir`: `server.state` (the plan's fingerprint, the
/// open round, each party's missed rounds and fetch positions, the rounds kept and who is
/// in each) and one `sums/R.sum` file per kept sum (ciphertext in `he` mode: the server
/// never holds anything else). Written after every round that closes, sums first and the
/// state last (each atomically), so the state never names a sum that is not on disk. A
/// restarted server continues from the open round; the parties resend their updates for
/// it (the open round's submissions are not saved).
pub(crate) struct ServerStore {
    dir: PathBuf,
    fingerprint: [u8; 32],
    /// Sum files on disk.
    written: std::collections::BTreeSet<u64>,
    /// Largest sum file read.
    max_sum: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredServer {
    format: u32,
    fingerprint: [u8; 32],
    round: u64,
    missed: Vec<u32>,
    next_fetch: Vec<u64>,
    keep_from: Vec<u64>,
    short_rounds: u64,
    /// (round, parties in its sum) of the sums kept.
    kept: Vec<(u64, Vec<u32>)>,
}

impl ServerStore {
    /// A store for `plan`'s server in `dir`; sums read back are at most `max_sum` bytes.
    pub(crate) fn new(dir: &Path, plan: &Plan, max_sum: usize) -> Self {
        Self {
            dir: dir.to_path_buf(),
            fingerprint: plan_fingerprint(plan),
            written: std::collections::BTreeSet::new(),
            max_sum: max_sum as u64,
        }
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("server.state")
    }

    fn sum_path(&self, round: u64) -> PathBuf {
        self.dir.join("sums").join(format!("{round}.sum"))
    }

    fn refused(&self, reason: impl Into<String>) -> CheckpointError {
        CheckpointError::Refused {
            path: self.state_path(),
            reason: reason.into(),
        }
    }

    fn file_error(path: PathBuf) -> impl FnOnce(SecretFileError) -> CheckpointError {
        move |source| CheckpointError::File { path, source }
    }

    /// The saved state and its short-round count, if the directory holds one (checked
    /// against the plan; the sums are checked by [`Server::restore`](super::Server::restore)).
    pub(crate) fn load(
        &mut self,
    ) -> Result<Option<(super::server::ServerSnapshot, u64)>, CheckpointError> {
        let path = self.state_path();
        if !path.exists() {
            return Ok(None);
        }
        let bytes = crate::secret_file::read_limited(&path, MAX_CHECKPOINT)
            .map_err(Self::file_error(path.clone()))?;
        let stored: StoredServer = bincode::options()
            .with_limit(MAX_CHECKPOINT)
            .with_fixint_encoding()
            .deserialize(&bytes)
            .map_err(|e| self.refused(format!("not a hefl server state ({e})")))?;
        if stored.format != FORMAT {
            return Err(self.refused(format!("format {}, expected {FORMAT}", stored.format)));
        }
        if stored.fingerprint != self.fingerprint {
            return Err(self.refused(format!(
                "it is another federation's (plan fingerprint {}, this plan's is {}): serve the same plan, use another --state-dir, or delete it to start over",
                hex::encode(&stored.fingerprint[..8]),
                hex::encode(&self.fingerprint[..8])
            )));
        }
        let mut published = Vec::with_capacity(stored.kept.len());
        for (round, parties) in stored.kept {
            let sum_path = self.sum_path(round);
            let bytes = crate::secret_file::read_limited(&sum_path, self.max_sum)
                .map_err(Self::file_error(sum_path))?;
            self.written.insert(round);
            published.push(super::server::Published {
                round: super::server::Round(round),
                parties: parties.into_iter().map(PartyId).collect(),
                bytes: std::sync::Arc::new(bytes),
            });
        }
        let snapshot = super::server::ServerSnapshot {
            round: super::server::Round(stored.round),
            missed: stored.missed,
            next_fetch: stored.next_fetch,
            keep_from: stored.keep_from,
            published,
        };
        Ok(Some((snapshot, stored.short_rounds)))
    }

    /// Saves `snapshot`: new sums first, then the state; then removes dropped sums.
    pub(crate) fn save(
        &mut self,
        snapshot: &super::server::ServerSnapshot,
        short_rounds: u64,
    ) -> Result<(), CheckpointError> {
        use crate::secret_file::{Access, write_atomic};
        for published in &snapshot.published {
            let round = published.round.0;
            if !self.written.contains(&round) {
                let path = self.sum_path(round);
                write_atomic(&path, &published.bytes, true, Access::Default)
                    .map_err(Self::file_error(path))?;
                self.written.insert(round);
            }
        }
        let stored = StoredServer {
            format: FORMAT,
            fingerprint: self.fingerprint,
            round: snapshot.round.0,
            missed: snapshot.missed.clone(),
            next_fetch: snapshot.next_fetch.clone(),
            keep_from: snapshot.keep_from.clone(),
            short_rounds,
            kept: snapshot
                .published
                .iter()
                .map(|p| (p.round.0, p.parties.iter().map(|q| q.0).collect()))
                .collect(),
        };
        let bytes = bincode::options()
            .with_fixint_encoding()
            .serialize(&stored)
            .map_err(|e| self.refused(format!("cannot encode: {e}")))?;
        let path = self.state_path();
        write_atomic(&path, &bytes, true, Access::Default).map_err(Self::file_error(path))?;
        let kept: std::collections::BTreeSet<u64> =
            snapshot.published.iter().map(|p| p.round.0).collect();
        let dropped: Vec<u64> = self.written.difference(&kept).copied().collect();
        for round in dropped {
            // A sum left behind is only disk space: the state no longer names it.
            let _ = std::fs::remove_file(self.sum_path(round));
            self.written.remove(&round);
        }
        Ok(())
    }
}
