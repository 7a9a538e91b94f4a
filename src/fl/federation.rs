//! Federated rounds in one process: P clients, one [`Server`], bytes passed by value.
//!
//! This is the in-process transport: each round the clients compute and seal their
//! updates in parallel (rayon), the server validates and folds the sealed bytes exactly as
//! it would those of a network peer, and every client opens the published sum and steps.

use super::client::Client;
use super::privacy::{Envelope, EnvelopeCost, EnvelopeError, Privacy};
use super::server::{PartyId, Published, Refusal, Round, Server, ServerConfig};
use super::train::{Strategy, TrainConfig, TrainError};
use crate::fl::PlainSum;
use crate::he::EncryptedVector;
use crate::he::keys::SecretKey;
use crate::quant::FixedPoint;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

/// Where the time of a federated run's envelopes went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Overhead {
    /// The privacy mode.
    pub privacy: Privacy,
    /// Wall-clock seconds sealing updates (encode + encrypt, clients in parallel).
    pub seal_seconds: f64,
    /// Wall-clock seconds in the server (validating and summing submissions).
    pub server_seconds: f64,
    /// Wall-clock seconds opening aggregates (decrypt + decode, clients in parallel).
    pub open_seconds: f64,
    /// CPU seconds per operation, summed over clients.
    pub client_cpu: EnvelopeCost,
}

impl Overhead {
    /// Wall-clock seconds spent on envelopes and the server's sum.
    pub fn total_seconds(&self) -> f64 {
        self.seal_seconds + self.server_seconds + self.open_seconds
    }
}

/// The server of either privacy mode.
enum AnyServer {
    Plain(Server<PlainSum>),
    He(Server<EncryptedVector>),
}

impl AnyServer {
    fn submit(&mut self, party: PartyId, round: Round, bytes: &[u8]) -> Result<(), Refusal> {
        let now = Instant::now();
        match self {
            Self::Plain(s) => s.submit(party, round, bytes, now),
            Self::He(s) => s.submit(party, round, bytes, now),
        }
    }

    fn aggregate(&self, round: Round) -> Result<Option<Published>, Refusal> {
        match self {
            Self::Plain(s) => s.aggregate(round),
            Self::He(s) => s.aggregate(round),
        }
    }
}

/// Why a federated round failed.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    /// A client could not seal or open.
    #[error("party {party}: {source}")]
    Envelope {
        /// The client.
        party: usize,
        /// What failed.
        source: EnvelopeError,
    },
    /// The server refused a submission (a bug when all parties are in one process).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The round did not close although every party submitted.
    #[error("{0} did not close with every party in")]
    NotClosed(Round),
}

/// The generator of a party's stochastic rounding: seeded by the run's seed and the party,
/// so that the same run quantizes the same way in every privacy mode and every transport.
pub(crate) fn rounding_rng(seed: u64, party: usize) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed ^ 0x0F1D_ED00 ^ ((party as u64) << 32))
}

/// The fixed-point encoding of a federation of `parties`.
pub(crate) fn fixed_point(parties: usize) -> Result<FixedPoint, TrainError> {
    let parties = u32::try_from(parties)
        .map_err(|_| TrainError::Config(format!("{parties} parties is too many")))?;
    FixedPoint::for_parties(parties).map_err(|e| TrainError::Config(e.to_string()))
}

/// P clients and a server in one process.
pub(crate) struct Federation {
    envelope: Envelope,
    server: AnyServer,
    rounding: Vec<ChaCha20Rng>,
    strategy: Strategy,
    batch_size: usize,
    round: Round,
    overhead: Overhead,
}

impl Federation {
    pub(crate) fn new(
        config: &TrainConfig,
        parties: usize,
        num_params: usize,
        key: Option<Arc<SecretKey>>,
    ) -> Result<Self, TrainError> {
        let fp = fixed_point(parties)?;
        let server_config = ServerConfig::new(fp.params().max_parties);
        let now = Instant::now();
        let bad_server = |e: super::server::ServerConfigError| TrainError::Config(e.to_string());
        let (envelope, server) = match config.privacy {
            Privacy::Plain | Privacy::Dp => {
                let envelope = Envelope::plain(fp, num_params);
                let server =
                    Server::new(server_config, envelope.wire_len(), now).map_err(bad_server)?;
                (envelope, AnyServer::Plain(server))
            }
            Privacy::He => {
                let key = key
                    .ok_or_else(|| TrainError::Config("privacy he needs the shared key".into()))?;
                let envelope = Envelope::he(fp, key, num_params);
                let expect = envelope
                    .expected_he()
                    .ok_or_else(|| TrainError::Config("he envelope without a key".into()))?;
                let server = Server::new(server_config, expect, now).map_err(bad_server)?;
                (envelope, AnyServer::He(server))
            }
        };
        let rounding = (0..parties).map(|p| rounding_rng(config.seed, p)).collect();
        Ok(Self {
            envelope,
            server,
            rounding,
            strategy: config.strategy,
            batch_size: config.batch_size,
            round: Round(0),
            overhead: Overhead {
                privacy: config.privacy,
                ..Overhead::default()
            },
        })
    }

    /// Runs one round; returns the mean training loss of the parties' updates.
    pub(crate) fn round(&mut self, clients: &mut [Client]) -> Result<f32, RoundError> {
        let nominal = (self.batch_size * self.strategy.steps_per_round()) as f32;
        let updates: Vec<_> = clients
            .par_iter_mut()
            .map(|c| c.compute_update(self.strategy, self.batch_size))
            .collect();
        let loss = updates.iter().map(|u| u.loss).sum::<f32>() / updates.len().max(1) as f32;

        let start = Instant::now();
        let envelope = &self.envelope;
        let sealed: Vec<(Vec<u8>, EnvelopeCost)> = updates
            .par_iter()
            .zip(self.rounding.par_iter_mut())
            .enumerate()
            .map(|(party, (update, rng))| {
                let mut cost = EnvelopeCost::default();
                let weight = update.samples as f32 / nominal;
                envelope
                    .seal(&update.values, weight, rng, &mut cost)
                    .map(|bytes| (bytes, cost))
                    .map_err(|source| RoundError::Envelope { party, source })
            })
            .collect::<Result<_, _>>()?;
        let sealed_at = Instant::now();
        self.overhead.seal_seconds += (sealed_at - start).as_secs_f64();

        for (party, (bytes, cost)) in sealed.iter().enumerate() {
            self.overhead.client_cpu.add(cost);
            self.server
                .submit(PartyId(party as u32), self.round, bytes)?;
        }
        let published = self
            .server
            .aggregate(self.round)?
            .ok_or(RoundError::NotClosed(self.round))?;
        let summed_at = Instant::now();
        self.overhead.server_seconds += (summed_at - sealed_at).as_secs_f64();

        let parties = published.parties.len() as u32;
        let opened: Vec<(Vec<f32>, EnvelopeCost)> = (0..clients.len())
            .into_par_iter()
            .map(|party| {
                let mut cost = EnvelopeCost::default();
                envelope
                    .open(&published.bytes, parties, &mut cost)
                    .map(|mean| (mean, cost))
                    .map_err(|source| RoundError::Envelope { party, source })
            })
            .collect::<Result<_, _>>()?;
        self.overhead.open_seconds += summed_at.elapsed().as_secs_f64();
        let strategy = self.strategy;
        clients
            .par_iter_mut()
            .zip(&opened)
            .for_each(|(client, (mean, _))| client.apply(strategy, mean));
        for (_, cost) in &opened {
            self.overhead.client_cpu.add(cost);
        }
        self.round = Round(self.round.0 + 1);
        Ok(loss)
    }

    pub(crate) fn overhead(&self) -> Overhead {
        self.overhead
    }
}
