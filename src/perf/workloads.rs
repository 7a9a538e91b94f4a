//! The operations measured, set up once and run as often as a benchmark asks.
//!
//! * [`ClientRound`]: one client's round in each privacy mode (the plaintext step, the
//!   DP-SGD step, the HE step), with the default MLP at batch 64 on a 20,000-image shard
//!   (one of the demo's three parties);
//! * [`Submissions`]: what a server receives in one round from P parties, as wire bytes,
//!   and the round itself (parse, validate, fold, publish) through [`Server`];
//! * [`vector_to_encrypt`]: encoded vectors of any length, for encryption throughput.
//!
//! Test data are synthetic (fixed patterns and a seeded generator): these workloads
//! measure cost, which does not depend on pixel values or update contents. Encryption
//! randomness still comes from the CSPRNG inside [`SecretKey::encrypt`].

use super::PerfError;
use crate::dp::{DpSgd, Sampling};
use crate::fl::{
    Client, Envelope, EnvelopeCost, PartyId, PlainSum, Published, Round, Server, ServerConfig,
    Strategy, Summable,
};
use crate::he::keys::SecretKey;
use crate::he::{EncryptedVector, Expected, SecureRng};
use crate::model::{DEFAULT_LAYERS, Mlp, OptimizerKind, param_count};
use crate::quant::FixedPoint;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::sync::Arc;
use std::time::Instant;

/// Batch size of the measured rounds (the demo's).
pub const BATCH: usize = 64;
/// Images in the client's shard (MNIST's 60,000 over the demo's three parties).
pub const SHARD: usize = 20_000;
/// Parties whose sum a client opens in the measured HE round (the demo's).
pub const DEMO_PARTIES: u32 = 3;
/// The party counts of the aggregation measurements.
pub const PARTY_COUNTS: [u32; 10] = [2, 3, 5, 10, 20, 50, 100, 200, 500, 1000];
/// Distinct messages cycled through in an aggregation round: enough bytes (about 40 MB
/// for `he`) to exceed a 32 MB last-level cache, so the server reads each from memory as it
/// would a fresh network buffer.
pub const DISTINCT_MESSAGES: usize = 24;

/// The default MLP's parameter count, the length of every measured update.
pub fn model_len() -> usize {
    param_count(&DEFAULT_LAYERS)
}

/// The DP-SGD settings of the measured DP step: σ = 1, C = 1, δ = 1e-5 (the cost does not
/// depend on σ or C).
pub fn dp_settings(sampling: Sampling) -> DpSgd {
    DpSgd {
        noise_multiplier: 1.0,
        max_grad_norm: 1.0,
        delta: 1e-5,
        sampling,
        accountant: crate::dp::Accountant::Pld,
    }
}

/// What one client does in one FedSGD round, in each privacy mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientWork {
    /// Batch gradient, then the optimizer step with it: the baseline every ratio divides by.
    PlaintextStep,
    /// DP-SGD: per-example gradients clipped to C, summed, Gaussian noise added from the
    /// secure generator, Poisson-sampled batch; then the optimizer step.
    DpSgdStep,
    /// The plaintext step's gradient sealed and opened in HE: encode, encrypt, decrypt the
    /// (here single-party) sum, decode; then the optimizer step with the opened mean.
    HeStep,
    /// Only the HE envelope of a fixed update: encode + encrypt + decrypt + decode.
    HeEnvelope,
    /// Only the plain envelope of a fixed update: fixed-point encode + decode, no
    /// encryption (what `--privacy plain` federation adds to the plaintext step).
    PlainEnvelope,
}

impl ClientWork {
    /// Every measured operation, baseline first.
    pub const ALL: [Self; 5] = [
        Self::PlaintextStep,
        Self::DpSgdStep,
        Self::HeStep,
        Self::HeEnvelope,
        Self::PlainEnvelope,
    ];

    /// A short identifier (criterion ids, CSV).
    pub fn id(self) -> &'static str {
        match self {
            Self::PlaintextStep => "plaintext_step",
            Self::DpSgdStep => "dp_sgd_step",
            Self::HeStep => "he_step",
            Self::HeEnvelope => "he_envelope",
            Self::PlainEnvelope => "plain_envelope",
        }
    }

    /// What the operation includes, for tables.
    pub fn describe(self) -> &'static str {
        match self {
            Self::PlaintextStep => "plaintext step (gradient + optimizer)",
            Self::DpSgdStep => "DP-SGD step (per-example clip + noise, Poisson batch)",
            Self::HeStep => "HE step (plaintext step + encode, encrypt, decrypt, decode)",
            Self::HeEnvelope => "HE envelope alone (encode, encrypt, decrypt, decode)",
            Self::PlainEnvelope => "plain envelope alone (encode, decode; no encryption)",
        }
    }
}

/// One client of the demo's shape, set up to run each [`ClientWork`] repeatedly.
///
/// ```no_run
/// use hefl::perf::workloads::{ClientRound, ClientWork};
///
/// let mut round = ClientRound::new()?;
/// for work in ClientWork::ALL {
///     round.run(work)?;
/// }
/// # Ok::<(), hefl::perf::PerfError>(())
/// ```
pub struct ClientRound {
    plain: Client,
    dp: Client,
    he: Envelope,
    clear: Envelope,
    rounding: ChaCha20Rng,
    fixed_update: Vec<f32>,
}

impl ClientRound {
    /// A plaintext client and a DP-SGD client (Poisson sampling) on identical synthetic
    /// shards, the demo's fixed-point encoding, and a fresh key.
    pub fn new() -> Result<Self, PerfError> {
        Self::with_sampling(Sampling::Poisson)
    }

    /// As [`ClientRound::new`] with the DP client's batches formed by `sampling`.
    pub fn with_sampling(sampling: Sampling) -> Result<Self, PerfError> {
        let client = || -> Result<Client, PerfError> {
            let model = Mlp::new(&DEFAULT_LAYERS, 42)?;
            Ok(Client::new(
                PartyId(0),
                crate::data::synthetic::separable(SHARD),
                model,
                OptimizerKind::Adam,
                1.5e-3,
                42,
            ))
        };
        let plain = client()?;
        let mut dp = client()?;
        dp.enable_dp(
            dp_settings(sampling),
            SecureRng::from_os().map_err(crate::he::HeError::from)?,
        );
        let key = Arc::new(crate::he::keys::KeyFile::generate()?.secret_key()?);
        let fp = FixedPoint::for_parties(DEMO_PARTIES)?;
        let len = model_len();
        let mut rounding = ChaCha20Rng::seed_from_u64(42);
        let fixed_update = (0..len)
            .map(|_| rounding.random_range(-0.01..0.01))
            .collect();
        Ok(Self {
            plain,
            dp,
            he: Envelope::he(fp, key, len),
            clear: Envelope::plain(fp, len),
            rounding,
            fixed_update,
        })
    }

    /// Runs `work` once.
    pub fn run(&mut self, work: ClientWork) -> Result<(), PerfError> {
        match work {
            ClientWork::PlaintextStep => {
                let update = self.plain.compute_update(Strategy::FedSgd, BATCH);
                self.plain.apply(Strategy::FedSgd, &update.values);
            }
            ClientWork::DpSgdStep => {
                let update = self.dp.compute_update(Strategy::FedSgd, BATCH);
                self.dp.apply(Strategy::FedSgd, &update.values);
            }
            ClientWork::HeStep => {
                let update = self.plain.compute_update(Strategy::FedSgd, BATCH);
                let mean = seal_and_open(&self.he, &update.values, &mut self.rounding)?;
                self.plain.apply(Strategy::FedSgd, &mean);
            }
            ClientWork::HeEnvelope => {
                seal_and_open(&self.he, &self.fixed_update, &mut self.rounding)?;
            }
            ClientWork::PlainEnvelope => {
                seal_and_open(&self.clear, &self.fixed_update, &mut self.rounding)?;
            }
        }
        Ok(())
    }
}

/// Seals one update with weight 1 and opens it as the demo's aggregate.
fn seal_and_open(
    envelope: &Envelope,
    values: &[f32],
    rng: &mut ChaCha20Rng,
) -> Result<Vec<f32>, PerfError> {
    let mut cost = EnvelopeCost::default();
    let sealed = envelope.seal(values, 1.0, rng, &mut cost)?;
    Ok(envelope.open(&sealed, DEMO_PARTIES, &mut cost)?)
}

/// One round's worth of submissions in one privacy mode: [`DISTINCT_MESSAGES`] sealed
/// updates of the default model's length (plus the weight slot), encoded for up to 1000
/// parties, which party i's submission cycles through.
pub struct Submissions<S: Summable> {
    expect: S::Expect,
    messages: Vec<Vec<u8>>,
}

/// Fixed-point words of `len` values uniform in [-0.1, 0.1), encoded for `parties`.
///
/// ```
/// let words = hefl::perf::workloads::vector_to_encrypt(10_000, 1000, 7)?;
/// assert_eq!(words.len(), 10_000);
/// # Ok::<(), hefl::quant::QuantError>(())
/// ```
pub fn vector_to_encrypt(
    len: usize,
    parties: u32,
    seed: u64,
) -> Result<Vec<u64>, crate::quant::QuantError> {
    let fp = FixedPoint::for_parties(parties)?;
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let values: Vec<f32> = (0..len).map(|_| rng.random_range(-0.1..0.1)).collect();
    fp.encode(&values, &mut rng)
}

/// Slots of every submission: the model's parameters and the weight.
pub fn submission_len() -> usize {
    model_len() + 1
}

/// [`DISTINCT_MESSAGES`] updates encoded for the largest party count, each sealed by `seal`.
fn sealed_messages(
    seal: impl Fn(Vec<u64>) -> Result<Vec<u8>, PerfError>,
) -> Result<Vec<Vec<u8>>, PerfError> {
    let parties = PARTY_COUNTS[PARTY_COUNTS.len() - 1];
    (0..DISTINCT_MESSAGES)
        .map(|i| seal(vector_to_encrypt(submission_len(), parties, i as u64)?))
        .collect()
}

impl Submissions<EncryptedVector> {
    /// Fresh encryptions under `key`, as a server in `he` mode receives them.
    pub fn he(key: &SecretKey) -> Result<Self, PerfError> {
        Ok(Self {
            expect: Expected::fresh(key.key_id(), submission_len()),
            messages: sealed_messages(|words| Ok(key.encrypt(&words)?.to_bytes()))?,
        })
    }
}

impl Submissions<PlainSum> {
    /// Fixed-point words in the clear, as a server in `plain` (or `dp`) mode receives them.
    pub fn plain() -> Result<Self, PerfError> {
        Ok(Self {
            expect: submission_len(),
            messages: sealed_messages(|words| Ok(PlainSum::fresh(words).to_bytes()))?,
        })
    }
}

impl<S: Summable> Submissions<S> {
    /// Bytes one party uploads.
    pub fn message_len(&self) -> usize {
        self.messages.first().map_or(0, Vec::len)
    }

    /// Bytes of all prepared messages (held by the fixture, not by the server).
    pub fn fixture_bytes(&self) -> usize {
        self.messages.iter().map(Vec::len).sum()
    }

    /// One server round with `parties` parties: a fresh [`Server`], every party's bytes
    /// submitted (parsed, validated against the key id and length, folded into the running
    /// sum), the round closed and its sum serialized for publication. The server holds the
    /// running sum and one parsed update at a time, never `parties` of them.
    pub fn round(&self, parties: u32) -> Result<Published, PerfError> {
        let now = Instant::now();
        let mut server = Server::<S>::new(ServerConfig::new(parties), self.expect.clone(), now)?;
        for (party, bytes) in (0..parties).zip(self.messages.iter().cycle()) {
            server.submit(PartyId(party), Round(0), bytes, now)?;
        }
        server
            .aggregate(Round(0))?
            .ok_or(PerfError::RoundOpen { parties })
    }
}
