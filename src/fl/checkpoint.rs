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

use super::client::{Client, ClientState};
use super::metrics::EpochMetrics;
use super::party::{Party, PartyState};
use super::plan::{RunId, ValidPlan};
use super::server::{ModelSnapshot, PartyId, PartySets, Published, Round, ServerState};
use crate::secret_file::{
    Integrity, SecretFileError, check_integrity, read_private, with_integrity, write_private_atomic,
};
use bincode::Options;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Version of the checkpoint format.
const FORMAT: u32 = 4;

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
    /// A fresh run id could not be drawn from the operating system's random source.
    #[error("cannot draw a run id: {0}")]
    RunId(getrandom::Error),
    /// The file is not a checkpoint of this party in this federation, or is damaged.
    #[error("checkpoint {path}: {reason}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where a party's run stands besides its machine's and its client's state: what it reports.
#[derive(Clone, Debug, Default)]
pub(crate) struct Progress {
    /// Metrics of the epochs done (reporting parties only).
    pub(crate) epochs: Vec<EpochMetrics>,
    /// Sum of this epoch's train losses so far.
    pub(crate) loss_sum: f64,
}

#[derive(Serialize, Deserialize)]
struct PartyCheckpoint {
    format: u32,
    fingerprint: [u8; 32],
    /// The run's id, for the message when another run's checkpoint is refused.
    run_id: Option<RunId>,
    party: u32,
    loss_sum: f64,
    /// The epochs' metrics as JSON (their optional fields are skipped when empty, which a
    /// positional encoding cannot express).
    epochs: String,
    /// The party machine's state: the global model, the round, the rounding generator.
    party_state: PartyState,
    /// The client's: local optimizer, data order, DP steps.
    client: ClientState,
}

/// Writes and reads one party's checkpoints in a directory.
pub(crate) struct Checkpoints {
    dir: PathBuf,
    path: PathBuf,
    model_path: PathBuf,
    fingerprint: [u8; 32],
    run_id: Option<RunId>,
    party: PartyId,
    layers: Vec<usize>,
    /// The MAC key (`he`: derived from the shared key), else `None`: a checksum.
    mac: Option<Zeroizing<[u8; 32]>>,
    /// Rounds between checkpoints (besides every epoch's end).
    pub(crate) every: u64,
}

/// Largest checkpoint read: parameters, two moments and the data order of the largest
/// model and shard the library accepts fit many times over.
const MAX_CHECKPOINT: u64 = 1 << 30;

impl Checkpoints {
    /// Party `party`'s checkpoints of `plan` in `dir`, every `every` rounds, MACed under
    /// `key`'s state MAC key when there is a key (`he`), else checksummed.
    pub(crate) fn new(
        dir: &Path,
        plan: &ValidPlan,
        party: PartyId,
        every: u64,
        key: Option<&crate::he::keys::SecretKey>,
    ) -> Self {
        Self {
            dir: dir.to_path_buf(),
            path: dir.join(format!("party-{}.checkpoint", party.0)),
            model_path: dir.join(format!("party-{}.model.safetensors", party.0)),
            fingerprint: plan.fingerprint(),
            run_id: plan.run_id,
            party,
            layers: plan.config.layers.clone(),
            mac: key.map(|key| Zeroizing::new(*key.state_mac_key())),
            every: every.max(1),
        }
    }

    fn integrity(&self) -> Integrity<'_> {
        match &self.mac {
            Some(key) => Integrity::Mac(key),
            None => Integrity::Checksum,
        }
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn refused(&self, reason: impl Into<String>) -> CheckpointError {
        CheckpointError::Refused {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Restores `party` and `client` from the checkpoint if there is one; returns where the
    /// run stands (`None`: start from round 0).
    pub(crate) fn load(
        &self,
        party: &mut Party,
        client: &mut Client,
        total_rounds: u64,
    ) -> Result<Option<Progress>, CheckpointError> {
        if !self.path.exists() {
            return Ok(None);
        }
        let file_error = |source| CheckpointError::File {
            path: self.path.clone(),
            source,
        };
        let bytes = read_private(&self.path, MAX_CHECKPOINT).map_err(file_error)?;
        let payload = check_integrity(&self.path, &bytes, self.integrity()).map_err(file_error)?;
        let checkpoint: PartyCheckpoint = bincode::options()
            .with_limit(MAX_CHECKPOINT)
            .with_fixint_encoding()
            .deserialize(payload)
            .map_err(|e| self.refused(format!("not a hefl checkpoint ({e})")))?;
        if checkpoint.format != FORMAT {
            return Err(self.refused(format!("format {}, expected {FORMAT}", checkpoint.format)));
        }
        if checkpoint.fingerprint != self.fingerprint {
            let runs = match (checkpoint.run_id, self.run_id) {
                (Some(theirs), Some(ours)) if theirs != ours => {
                    format!("run {theirs}, this server's run is {ours}; ")
                }
                _ => String::new(),
            };
            return Err(self.refused(format!(
                "it belongs to another federation ({runs}plan fingerprint {}, this server's plan is {}): use another --state-dir, or delete it to start over",
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
        let next_round = checkpoint.party_state.next_round();
        if next_round.0 > total_rounds {
            return Err(self.refused(format!(
                "next round {}, beyond the run's {total_rounds}",
                next_round.0
            )));
        }
        let epochs: Vec<EpochMetrics> = serde_json::from_str(&checkpoint.epochs)
            .map_err(|e| self.refused(format!("its epoch metrics do not parse: {e}")))?;
        party
            .restore(checkpoint.party_state)
            .map_err(|e| self.refused(e.to_string()))?;
        client
            .restore(checkpoint.client)
            .map_err(|e| self.refused(e.to_string()))?;
        Ok(Some(Progress {
            epochs,
            loss_sum: checkpoint.loss_sum,
        }))
    }

    /// Writes the checkpoint atomically, and the global model beside it.
    pub(crate) fn save(
        &self,
        party: &Party,
        client: &Client,
        progress: &Progress,
    ) -> Result<(), CheckpointError> {
        let checkpoint = PartyCheckpoint {
            format: FORMAT,
            fingerprint: self.fingerprint,
            run_id: self.run_id,
            party: self.party.0,
            loss_sum: progress.loss_sum,
            epochs: serde_json::to_string(&progress.epochs)
                .map_err(|e| self.refused(format!("cannot encode the epoch metrics: {e}")))?,
            party_state: party.state(),
            client: client.state(),
        };
        let bytes = bincode::options()
            .with_fixint_encoding()
            .serialize(&checkpoint)
            .map_err(|e| self.refused(format!("cannot encode: {e}")))?;
        let bytes = with_integrity(&bytes, self.integrity());
        write_private_atomic(&self.path, &bytes, true).map_err(|source| CheckpointError::File {
            path: self.path.clone(),
            source,
        })?;
        let model = crate::model::Mlp::from_params(&self.layers, party.model().to_vec())
            .map_err(|e| self.refused(format!("cannot make the model file: {e}")))?;
        crate::model::write_model(&self.model_path, &model).map_err(|e| {
            self.refused(format!(
                "cannot write the model {}: {e}",
                self.model_path.display()
            ))
        })
    }
}

/// A server's checkpoint in its `--state-dir`: `server.state` (the plan's fingerprint, the
/// open round, each party's missed rounds and fetch positions, the rounds kept and who is
/// in each, the round of the model snapshot kept), one `sums/R.sum` file per kept sum and
/// `snapshot.bin`, the latest model snapshot (ciphertext in `he` mode: the server never
/// holds anything else). Written after every round that closes, sums and snapshot first and
/// the state last (each atomically), so the state never names a file that is not on disk. A
/// restarted server continues from the open round; the parties resend their updates for
/// it (the open round's submissions are not saved).
pub(crate) struct ServerStore {
    dir: PathBuf,
    fingerprint: [u8; 32],
    run_id: Option<RunId>,
    /// Sum files on disk.
    written: std::collections::BTreeSet<u64>,
    /// The round of the snapshot file on disk.
    snapshot_written: Option<u64>,
    /// Largest sum file read.
    max_sum: u64,
    /// Largest snapshot file read.
    max_snapshot: u64,
}

/// The server's state file in its directory.
const STATE_FILE: &str = "server.state";

#[derive(Serialize, Deserialize)]
struct StoredServer {
    format: u32,
    fingerprint: [u8; 32],
    /// The run's id (its plan's), chosen at the server's first start.
    run_id: Option<RunId>,
    round: u64,
    missed: Vec<u32>,
    next_fetch: Vec<u64>,
    keep_from: Vec<u64>,
    short_rounds: u64,
    /// The rounds kept (a sum in `sums/{round}.sum` unless void).
    kept: Vec<KeptRound>,
    /// The round of the model snapshot in `snapshot.bin`, if one is kept.
    snapshot: Option<u64>,
    /// Strict secure aggregation: the open round's party set and the parties rejoining.
    sets: Option<(Vec<u32>, Vec<u32>)>,
}

/// A published round the server keeps, as its state file names it.
#[derive(Serialize, Deserialize)]
struct KeptRound {
    round: u64,
    /// The parties in its sum (void: those that had submitted).
    parties: Vec<u32>,
    /// Void: no sum file.
    void: bool,
    /// Strict secure aggregation: the next round's party set.
    next_set: Option<Vec<u32>>,
}

impl ServerStore {
    /// A store for `plan`'s server in `dir`; sums read back are at most `max_sum` bytes,
    /// snapshots `max_snapshot`.
    pub(crate) fn new(dir: &Path, plan: &ValidPlan, max_sum: usize, max_snapshot: usize) -> Self {
        Self {
            dir: dir.to_path_buf(),
            fingerprint: plan.fingerprint(),
            run_id: plan.run_id,
            written: std::collections::BTreeSet::new(),
            snapshot_written: None,
            max_sum: max_sum as u64,
            max_snapshot: max_snapshot as u64,
        }
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    fn sum_path(&self, round: u64) -> PathBuf {
        self.dir.join("sums").join(format!("{round}.sum"))
    }

    fn snapshot_path(&self) -> PathBuf {
        self.dir.join("snapshot.bin")
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

    /// A state file's payload, at most `limit` bytes, its checksum checked.
    fn read_checked(path: &Path, limit: u64) -> Result<Vec<u8>, CheckpointError> {
        let limit = limit.saturating_add(64);
        let bytes = crate::secret_file::read_limited(path, limit)
            .map_err(Self::file_error(path.to_path_buf()))?;
        check_integrity(path, &bytes, Integrity::Checksum)
            .map(<[u8]>::to_vec)
            .map_err(Self::file_error(path.to_path_buf()))
    }

    /// Writes `payload` to `path` atomically with its checksum.
    fn write_checked(path: &Path, payload: &[u8]) -> Result<(), CheckpointError> {
        use crate::secret_file::{Access, write_atomic};
        let bytes = with_integrity(payload, Integrity::Checksum);
        write_atomic(path, &bytes, true, Access::Default)
            .map_err(Self::file_error(path.to_path_buf()))
    }

    /// The run id of the state in `dir`, if it holds one (checked whole; the rest is checked
    /// by [`ServerStore::load`]).
    pub(crate) fn stored_run_id(dir: &Path) -> Result<Option<RunId>, CheckpointError> {
        let path = dir.join(STATE_FILE);
        if !path.exists() {
            return Ok(None);
        }
        Ok(Self::read_stored(&path)?.run_id)
    }

    fn read_stored(path: &Path) -> Result<StoredServer, CheckpointError> {
        let stored: StoredServer = bincode::options()
            .with_limit(MAX_CHECKPOINT)
            .with_fixint_encoding()
            .deserialize(&Self::read_checked(path, MAX_CHECKPOINT)?)
            .map_err(|e| CheckpointError::Refused {
                path: path.to_path_buf(),
                reason: format!("not a hefl server state ({e})"),
            })?;
        if stored.format != FORMAT {
            return Err(CheckpointError::Refused {
                path: path.to_path_buf(),
                reason: format!("format {}, expected {FORMAT}", stored.format),
            });
        }
        Ok(stored)
    }

    /// The saved state and its short-round count, if the directory holds one (checked
    /// against the plan; the sums are checked by [`Server::restore`](super::Server::restore)).
    pub(crate) fn load(&mut self) -> Result<Option<(ServerState, u64)>, CheckpointError> {
        let path = self.state_path();
        if !path.exists() {
            return Ok(None);
        }
        let stored = Self::read_stored(&path)?;
        if stored.fingerprint != self.fingerprint {
            return Err(self.refused(format!(
                "it is another federation's (plan fingerprint {}, this plan's is {}): serve the same plan, use another --state-dir, or delete it to start over",
                hex::encode(&stored.fingerprint[..8]),
                hex::encode(&self.fingerprint[..8])
            )));
        }
        let mut published = Vec::with_capacity(stored.kept.len());
        let ids = |list: Vec<u32>| list.into_iter().map(PartyId).collect();
        for kept in stored.kept {
            let bytes = if kept.void {
                Vec::new()
            } else {
                let bytes = Self::read_checked(&self.sum_path(kept.round), self.max_sum)?;
                self.written.insert(kept.round);
                bytes
            };
            published.push(Published {
                round: Round(kept.round),
                parties: ids(kept.parties),
                bytes: std::sync::Arc::new(bytes),
                void: kept.void,
                next_set: kept.next_set.map(ids),
            });
        }
        let model_snapshot = match stored.snapshot {
            None => None,
            Some(round) => {
                let bytes = Self::read_checked(&self.snapshot_path(), self.max_snapshot)?;
                self.snapshot_written = Some(round);
                Some(ModelSnapshot {
                    round: Round(round),
                    bytes: std::sync::Arc::new(bytes),
                })
            }
        };
        let state = ServerState {
            round: Round(stored.round),
            missed: stored.missed,
            next_fetch: stored.next_fetch,
            keep_from: stored.keep_from,
            published,
            model_snapshot,
            sets: stored.sets.map(|(open, rejoining)| PartySets {
                open: open.into_iter().map(PartyId).collect(),
                rejoining: rejoining.into_iter().map(PartyId).collect(),
            }),
        };
        Ok(Some((state, stored.short_rounds)))
    }

    /// Saves `state`: new sums and a new snapshot first, then the state; then removes
    /// dropped sums.
    pub(crate) fn save(
        &mut self,
        state: &ServerState,
        short_rounds: u64,
    ) -> Result<(), CheckpointError> {
        let ids = |list: &[PartyId]| list.iter().map(|p| p.0).collect::<Vec<u32>>();
        for published in state.published.iter().filter(|p| !p.void) {
            let round = published.round.0;
            if !self.written.contains(&round) {
                Self::write_checked(&self.sum_path(round), &published.bytes)?;
                self.written.insert(round);
            }
        }
        if let Some(snapshot) = &state.model_snapshot
            && self.snapshot_written != Some(snapshot.round.0)
        {
            Self::write_checked(&self.snapshot_path(), &snapshot.bytes)?;
            self.snapshot_written = Some(snapshot.round.0);
        }
        let stored = StoredServer {
            format: FORMAT,
            fingerprint: self.fingerprint,
            run_id: self.run_id,
            round: state.round.0,
            missed: state.missed.clone(),
            next_fetch: state.next_fetch.clone(),
            keep_from: state.keep_from.clone(),
            short_rounds,
            kept: state
                .published
                .iter()
                .map(|p| KeptRound {
                    round: p.round.0,
                    parties: ids(&p.parties),
                    void: p.void,
                    next_set: p.next_set.as_deref().map(ids),
                })
                .collect(),
            snapshot: state.model_snapshot.as_ref().map(|s| s.round.0),
            sets: state.sets.as_ref().map(|sets| {
                (
                    sets.open.iter().map(|p| p.0).collect(),
                    sets.rejoining.iter().map(|p| p.0).collect(),
                )
            }),
        };
        let bytes = bincode::options()
            .with_fixint_encoding()
            .serialize(&stored)
            .map_err(|e| self.refused(format!("cannot encode: {e}")))?;
        Self::write_checked(&self.state_path(), &bytes)?;
        let kept: std::collections::BTreeSet<u64> = state
            .published
            .iter()
            .filter(|p| !p.void)
            .map(|p| p.round.0)
            .collect();
        let dropped: Vec<u64> = self.written.difference(&kept).copied().collect();
        for round in dropped {
            // A sum left behind is only disk space: the state no longer names it.
            let _ = std::fs::remove_file(self.sum_path(round));
            self.written.remove(&round);
        }
        Ok(())
    }
}
