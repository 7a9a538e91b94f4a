//! The operations measured, set up once and run as often as a benchmark asks.
//!
//! * [`ClientRound`]: one client's round in each privacy mode (the plaintext step, the
//!   DP-SGD step, the HE step), with the default MLP at batch 64 on a 20,000-image shard
//!   (one of the demo's three parties);
//! * [`Submissions`]: what a server receives in one round from P parties, as wire bytes,
//!   and the round itself (parse, validate, fold, publish) through [`Server`], in `plain`
//!   and in `he` with either download form;
//! * [`vector_to_encrypt`]: encoded vectors of any length, for encryption throughput.
//!
//! Test data are synthetic (fixed patterns and a seeded generator): these workloads
//! measure cost, which does not depend on pixel values or update contents. Encryption
//! randomness still comes from the CSPRNG inside [`SecretKey::prepare`].

use super::PerfError;
use crate::dp::{DpSgd, Sampling};
use crate::fl::{
    Client, Encoding, Envelope, EnvelopeCost, GlobalModel, PartyId, PlainShape, PlainSum,
    Published, Round, RoundRules, Server, Step, Strategy, Summable, Weighting,
};
use crate::he::keys::SecretKey;
use crate::he::{CompactVector, Context, DownloadForm, Expected, SecureRng, Widths};
use crate::model::{DEFAULT_LAYERS, Mlp, OptimizerKind, param_count};
use crate::quant::FixedPoint;
use crate::secagg::{
    Advert, Attempt, Blinder, CANARY_SLOTS, Identity, Mode, PartySet, Policy, RobustError,
    RobustParty, RobustPolicy, Roster, RoundUnmask, SealedShares, SecAggError, UnmaskRequest,
    UnmaskResponse,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The context of the measured uploads (one run, round 0; the party field is not checked
/// outside a server).
const DEMO: Context = Context {
    run: [0; 32],
    round: 0,
    party: 0,
};

/// Batch size of the measured rounds (the demo's).
pub const BATCH: usize = 64;
/// Images in the client's shard (MNIST's 60,000 over the demo's three parties).
pub const SHARD: usize = 20_000;
/// Parties whose sum a client opens in the measured HE round (the demo's).
pub const DEMO_PARTIES: u32 = 3;
/// The party counts of the aggregation measurements.
pub const PARTY_COUNTS: [u32; 10] = [2, 3, 5, 10, 20, 50, 100, 200, 500, 1000];
/// Distinct plain messages cycled through in an aggregation round: enough bytes (about 20
/// MB) to exceed a 16 MB last-level cache, so the server reads each from memory as it
/// would a fresh network buffer. (`he` uploads are all distinct: a sum refuses a seed twice.)
pub const DISTINCT_MESSAGES: usize = 24;
/// Party counts of the bytes table.
pub const BYTES_PARTIES: [u32; 3] = [3, 100, 1000];

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
        pca: None,
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
    /// The plaintext step's gradient sealed and opened in HE: prepare, encode, seal, then
    /// regenerate the masks of the demo's 3-party sum, decrypt and decode; then the optimizer
    /// step with the opened mean. (The server's fold of the three uploads is not counted.)
    HeStep,
    /// Only the HE envelope of a fixed update: prepare + encode + seal + open (regenerate,
    /// decrypt, decode) the 3-party sum.
    HeEnvelope,
    /// The offline part of the HE envelope: preparing an encryption of zero (what a party
    /// does while it waits for the previous round's sum).
    HePrepare,
    /// The online part of the HE envelope: encode + seal into a prepared encryption + open.
    HeOnline,
    /// Only the plain envelope of a fixed update: fixed-point encode + decode, no
    /// encryption (what `--privacy plain` federation adds to the plaintext step).
    PlainEnvelope,
}

impl ClientWork {
    /// Every measured operation, baseline first.
    pub const ALL: [Self; 7] = [
        Self::PlaintextStep,
        Self::DpSgdStep,
        Self::HeStep,
        Self::HeEnvelope,
        Self::HePrepare,
        Self::HeOnline,
        Self::PlainEnvelope,
    ];

    /// A short identifier (criterion ids, CSV).
    pub fn id(self) -> &'static str {
        match self {
            Self::PlaintextStep => "plaintext_step",
            Self::DpSgdStep => "dp_sgd_step",
            Self::HeStep => "he_step",
            Self::HeEnvelope => "he_envelope",
            Self::HePrepare => "he_prepare",
            Self::HeOnline => "he_online",
            Self::PlainEnvelope => "plain_envelope",
        }
    }

    /// What the operation includes, for tables.
    pub fn describe(self) -> &'static str {
        match self {
            Self::PlaintextStep => "plaintext step (gradient + optimizer)",
            Self::DpSgdStep => "DP-SGD step (per-example clip + noise, Poisson batch)",
            Self::HeStep => "HE step (plaintext step + HE envelope)",
            Self::HeEnvelope => "HE envelope alone (prepare, encode, seal, open)",
            Self::HePrepare => "HE prepare: encryption of zero (offline, while waiting)",
            Self::HeOnline => "HE online: encode, seal into a prepared encryption, open",
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
    /// The global models the plain and DP clients step (as a party's machine holds one).
    plain_model: GlobalModel,
    dp_model: GlobalModel,
    he: Envelope,
    clear: Envelope,
    /// The other two demo parties' uploads, `he` and `plain`, added to ours before opening.
    he_others: Vec<Vec<u8>>,
    plain_others: Vec<Vec<u8>>,
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
        // Updates of full weight: one sample of one nominal.
        let encoding = Encoding::new(
            crate::quant::DEFAULT_CLIP,
            crate::quant::DEFAULT_FRAC_BITS,
            DEMO_PARTIES,
            Weighting::Fraction { nominal: 1 },
        )?;
        let widths = Widths::new(encoding.total_bits(), DEMO_PARTIES, DownloadForm::Seeds)?;
        let len = model_len();
        let mut rounding = ChaCha20Rng::seed_from_u64(42);
        let fixed_update: Vec<f32> = (0..len)
            .map(|_| rounding.random_range(-0.01..0.01))
            .collect();
        let he = Envelope::he(encoding, key, len, widths);
        let clear = Envelope::plain(encoding, len);
        let mut cost = EnvelopeCost::default();
        let mut others = |envelope: &Envelope| {
            (1..DEMO_PARTIES)
                .map(|_| {
                    envelope
                        .seal(&fixed_update, 1, DEMO, None, &mut rounding, &mut cost)
                        .map(|sealed| sealed.bytes)
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let step = Step::Gradient {
            optimizer: OptimizerKind::Adam,
            lr: 1.5e-3,
        };
        let plain_model = GlobalModel::new(plain.model().params().to_vec(), step);
        let dp_model = GlobalModel::new(dp.model().params().to_vec(), step);
        let he_others = others(&he)?;
        let plain_others = others(&clear)?;
        Ok(Self {
            plain,
            dp,
            plain_model,
            dp_model,
            he,
            clear,
            he_others,
            plain_others,
            rounding,
            fixed_update,
        })
    }

    /// Runs `work` once; returns the time of what it measures (all of it, but for
    /// [`ClientWork::HeOnline`], whose encryption of zero is prepared first, and the server's
    /// fold of the demo's other two uploads, which no operation counts).
    pub fn run(&mut self, work: ClientWork) -> Result<Duration, PerfError> {
        let start = Instant::now();
        match work {
            ClientWork::PlaintextStep => {
                self.plain.load(self.plain_model.params());
                let update = self.plain.compute_update(Strategy::FedSgd, BATCH);
                self.plain_model.apply(&update.values);
            }
            ClientWork::DpSgdStep => {
                self.dp.load(self.dp_model.params());
                let update = self.dp.compute_update(Strategy::FedSgd, BATCH);
                self.dp_model.apply(&update.values);
            }
            ClientWork::HeStep => {
                self.plain.load(self.plain_model.params());
                let update = self.plain.compute_update(Strategy::FedSgd, BATCH);
                let (mean, server) = round_trip(
                    &self.he,
                    &self.he_others,
                    &update.values,
                    None,
                    &mut self.rounding,
                )?;
                self.plain_model.apply(&mean);
                return Ok(start.elapsed() - server);
            }
            ClientWork::HeEnvelope | ClientWork::HeOnline | ClientWork::PlainEnvelope => {
                let (envelope, others) = match work {
                    ClientWork::PlainEnvelope => (&self.clear, &self.plain_others),
                    _ => (&self.he, &self.he_others),
                };
                let mut prepared = None;
                let mut offline = Duration::ZERO;
                if work == ClientWork::HeOnline {
                    prepared = envelope.prepare(&mut EnvelopeCost::default())?;
                    offline = start.elapsed();
                }
                let (_, server) = round_trip(
                    envelope,
                    others,
                    &self.fixed_update,
                    prepared,
                    &mut self.rounding,
                )?;
                return Ok(start.elapsed() - server - offline);
            }
            ClientWork::HePrepare => {
                std::hint::black_box(self.he.prepare(&mut EnvelopeCost::default())?);
            }
        }
        Ok(start.elapsed())
    }
}

/// Seals `values` with weight 1 (into `prepared`, or one made now), sums it with `others`
/// as the server would, and opens the demo's 3-party aggregate. Returns the mean and the
/// time the server's part took.
fn round_trip(
    envelope: &Envelope,
    others: &[Vec<u8>],
    values: &[f32],
    prepared: Option<crate::he::PreparedEncryption>,
    rng: &mut ChaCha20Rng,
) -> Result<(Vec<f32>, Duration), PerfError> {
    let mut cost = EnvelopeCost::default();
    let sealed = envelope.seal(values, 1, DEMO, prepared, rng, &mut cost)?;
    let server = Instant::now();
    let aggregate = match envelope.expected_he() {
        Some(expect) => fold::<CompactVector>(&sealed.bytes, others, &expect)?,
        None => fold::<PlainSum>(&sealed.bytes, others, &envelope.expected_plain())?,
    };
    let server = server.elapsed();
    let parties: Vec<PartyId> = (0..DEMO_PARTIES).map(PartyId).collect();
    let context = Context::sum(DEMO.run, DEMO.round);
    Ok((
        envelope.open(&aggregate, &parties, context, &mut cost)?,
        server,
    ))
}

/// The server's sum of `first` and `others`, serialized.
fn fold<S: Summable>(
    first: &[u8],
    others: &[Vec<u8>],
    expect: &S::Expect,
) -> Result<Vec<u8>, PerfError> {
    let mut sum = S::parse_submission(first, expect)?;
    for other in others {
        sum.add_submission(other, expect)?;
    }
    sum.set_context(Context::sum(DEMO.run, DEMO.round));
    Ok(sum.to_bytes())
}

/// One round's worth of submissions in one privacy mode, encoded for up to `parties`: in
/// `plain`, [`DISTINCT_MESSAGES`] sealed updates of the default model's length (plus the
/// weight slot) which party i's submission cycles through; in `he`, one upload per party.
pub struct Submissions<S: Summable> {
    expect: S::Expect,
    /// The messages, behind locks: a cycled plain message is stamped with the party that
    /// submits it (its header names its sender) before each submission.
    messages: Vec<std::sync::Mutex<Vec<u8>>>,
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

/// The parties of the secure-aggregation rows: the demo's, and two larger federations.
pub const BLIND_PARTIES: [u32; 3] = [3, 10, 100];

/// One client's blinds in a strict secure-aggregation federation of `parties`: its blinder
/// (pair secrets with every other party, computed once per run) and an encoded update of
/// the default MLP (values and weight); [`BlindRound::run`] seals it for the next round,
/// which is what `--secure-agg strict` adds to a client's round (P − 1 blind keys by HKDF,
/// P − 1 AES-CTR keystreams over the update, the canary slots).
pub struct BlindRound {
    blinder: Blinder,
    key: SecretKey,
    fp: FixedPoint,
    set: PartySet,
    words: Vec<u64>,
    round: u64,
}

impl BlindRound {
    /// Party 0 of a strict federation of `parties` (identities from fixed seeds).
    pub fn new(parties: u32) -> Result<Self, PerfError> {
        let key = bench_key()?;
        let identities = identities(parties);
        let policy = Policy {
            mode: Mode::Strict,
            parties,
            min_parties: parties,
        };
        let keys = identities.iter().map(Identity::public).collect();
        let roster = Roster::new(key.key_id(), keys, policy).map_err(SecAggError::from)?;
        let blinder = Blinder::new(&identities[0], PartyId(0), &roster, [7; 32])?;
        Ok(Self {
            blinder,
            key,
            fp: FixedPoint::for_parties(parties)?,
            set: PartySet::new(roster.parties()),
            words: vector_to_encrypt(submission_len(), parties, 11)?,
            round: 0,
        })
    }

    /// Seals the update for the next round (canaries and blinds) and returns the time it
    /// took (a copy of the update is made before the clock starts: a party's sealing moves
    /// its words in).
    pub fn run(&mut self) -> Result<Duration, PerfError> {
        let round = Round(self.round);
        self.round += 1;
        let words = self.words.clone();
        let start = Instant::now();
        let sealed = self
            .blinder
            .seal(words, &self.fp, &self.key, round, Attempt(0), &self.set)?;
        let elapsed = start.elapsed();
        drop(std::hint::black_box(sealed));
        Ok(elapsed)
    }
}

/// The HE key of the secure-aggregation fixtures (fixed seed).
fn bench_key() -> Result<SecretKey, PerfError> {
    Ok(crate::he::keys::KeyFile::from_seed([5; 32]).secret_key()?)
}

/// The roster identities of a federation of `parties`, from fixed seeds (party i's at i).
fn identities(parties: u32) -> Vec<Identity> {
    (0..parties)
        .map(|i| {
            let mut bytes = [0x42u8; 32];
            bytes[4..8].copy_from_slice(&i.to_le_bytes());
            Identity::from_secret_bytes(bytes)
        })
        .collect()
}

/// Slots of every submission: the model's parameters and the weight.
pub fn submission_len() -> usize {
    model_len() + 1
}

impl Submissions<CompactVector> {
    /// One upload under `key` per party of a federation of `parties` whose sums come back in
    /// `form`, as a server in `he` mode receives them. [`DISTINCT_MESSAGES`] are real
    /// encryptions; the others reuse their bodies under distinct seeds (the server cannot tell
    /// and does the same work; a sum refuses a seed twice).
    pub fn he(key: &SecretKey, parties: u32, form: DownloadForm) -> Result<Self, PerfError> {
        let fp = FixedPoint::for_parties(parties)?;
        let widths = Widths::new(fp.params().total_bits, parties, form)?;
        let expect = Expected {
            key_id: key.key_id(),
            plaintext_len: submission_len(),
            widths,
        };
        let distinct = (0..DISTINCT_MESSAGES.min(parties as usize))
            .map(|i| {
                let words = vector_to_encrypt(submission_len(), parties, i as u64)?;
                Ok(key.prepare(words.len())?.seal(&words, &widths)?)
            })
            .collect::<Result<Vec<CompactVector>, PerfError>>()?;
        let messages = (0..parties as usize)
            .map(|i| {
                let base = &distinct[i % distinct.len()];
                let mut upload = match i < distinct.len() {
                    true => base.clone(),
                    false => base.with_seed(0xBE7C_0000_0000_0000_u128 << 64 | i as u128),
                };
                upload.set_context(Context {
                    party: i as u32,
                    ..DEMO
                });
                std::sync::Mutex::new(upload.to_bytes())
            })
            .collect();
        Ok(Self { expect, messages })
    }
}

impl Submissions<PlainSum> {
    /// Fixed-point words in the clear, as a server in `plain` (or `dp`) mode of `parties`
    /// receives them (packed to the encoding's t bits for that many parties).
    pub fn plain(parties: u32) -> Result<Self, PerfError> {
        let expect = PlainShape {
            len: submission_len(),
            bits: FixedPoint::for_parties(parties)?.params().total_bits,
        };
        Ok(Self {
            expect,
            messages: (0..DISTINCT_MESSAGES)
                .map(|i| {
                    let words = vector_to_encrypt(expect.len, parties, i as u64)?;
                    Ok(std::sync::Mutex::new(
                        PlainSum::sealed(words, expect.bits, DEMO).to_bytes(),
                    ))
                })
                .collect::<Result<_, PerfError>>()?,
        })
    }
}

impl<S: Summable> Submissions<S> {
    /// What the server checks each submission against.
    pub fn expect(&self) -> &S::Expect {
        &self.expect
    }

    /// Bytes one party uploads.
    pub fn message_len(&self) -> usize {
        self.messages
            .first()
            .map_or(0, |m| m.lock().unwrap_or_else(|p| p.into_inner()).len())
    }

    /// Bytes of all prepared messages (held by the fixture, not by the server).
    pub fn fixture_bytes(&self) -> usize {
        self.messages
            .iter()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// One server round with `parties` parties: a fresh [`Server`], every party's bytes
    /// submitted (parsed, validated against the key id and length, folded into the running
    /// sum), the round closed and its sum serialized for publication. The server holds the
    /// running sum and one parsed update at a time, never `parties` of them.
    pub fn round(&self, parties: u32) -> Result<Published, PerfError> {
        let now = Instant::now();
        let mut server =
            Server::<S>::new(parties, RoundRules::default(), self.expect.clone(), now)?;
        // The whole round runs on a rayon worker, as a batch fold would: each fold's parallel
        // unpacking then starts from inside the pool. Called from an outside thread, as the
        // HTTP handler calls it, every submission also pays a thread handoff (about 8 µs on
        // the 2-core reference machine).
        rayon::scope(|_| {
            for (party, message) in (0..parties).zip(self.messages.iter().cycle()) {
                let mut bytes = message.lock().unwrap_or_else(|p| p.into_inner());
                let context = Context { party, ..DEMO };
                if S::context_of(&bytes).is_ok_and(|found| found != context) {
                    // A cycled plain message: its sender field, in place (four bytes).
                    S::restamp(&mut bytes, context)?;
                }
                server.submit(PartyId(party), Round(0), &bytes, now)?;
            }
            Ok::<(), PerfError>(())
        })?;
        server
            .aggregate(Round(0))?
            .ok_or(PerfError::RoundOpen { parties })
    }
}

/// The party counts of the robust secure-aggregation rows.
pub const ROBUST_PARTIES: [u32; 3] = [10, 100, 1000];
/// The dropout rates of the robust rows, in percent of the round's set.
pub const ROBUST_DROPOUT_PERCENTS: [u32; 3] = [0, 1, 10];

/// The colluders and dropouts the robust rows tolerate (rule (a), c = d = ⌈P/10⌉): with
/// [`RobustPolicy::rule_a`], k = 4 and T = 2 at P = 10, k = 22 and T = 11 at P = 100, k =
/// 202 and T = 101 at P = 1000 (within GF(256) Shamir's 255 shares).
///
/// ```
/// use hefl::perf::workloads::robust_tolerance;
/// use hefl::secagg::RobustPolicy;
///
/// let c = robust_tolerance(1000);
/// let (policy, _) = RobustPolicy::rule_a(1000, c, c, None, None, false)?;
/// assert_eq!((c, policy.neighbours, policy.threshold), (100, 202, 101));
/// # Ok::<(), hefl::secagg::RosterError>(())
/// ```
pub fn robust_tolerance(parties: u32) -> u32 {
    parties.div_ceil(10)
}

/// Parties that drop out of a round of `parties` at `percent` percent: ⌈P · percent / 100⌉
/// (at least one for any positive rate).
///
/// ```
/// use hefl::perf::workloads::dropouts_at;
///
/// assert_eq!([dropouts_at(10, 0), dropouts_at(10, 1), dropouts_at(100, 1)], [0, 1, 1]);
/// assert_eq!(dropouts_at(1000, 10), 100);
/// ```
pub fn dropouts_at(parties: u32, percent: u32) -> u32 {
    let dropped = (u64::from(parties) * u64::from(percent)).div_ceil(100);
    // At most `parties` for a rate up to 100%.
    u32::try_from(dropped).unwrap_or(parties)
}

/// Bytes one party sends and receives for `robust` secure aggregation in one round, beyond
/// its HE upload and the published sum: counted from the messages' wire bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RobustBytes {
    /// Up: its advert, its share message to each neighbour, its unmask response.
    pub up: usize,
    /// Down: the round's advertisers (4 bytes an id, and a count), its neighbours' adverts
    /// (the graph is a function of the ids: a party needs no other advert), each
    /// neighbour's share message to it, the unmask request.
    pub down: usize,
}

impl RobustBytes {
    /// What `party` sent and received in a round with these messages.
    fn of(
        party: PartyId,
        adverts: &[Advert],
        shares: &[SealedShares],
        request: &UnmaskRequest,
        response: &UnmaskResponse,
    ) -> Self {
        let (mut up, mut down) = (response.to_bytes().len(), request.to_bytes().len());
        // The advertisers' ids, as an unmask request lists parties: a count and 4 bytes each.
        down += 4 + 4 * adverts.len();
        let neighbours: Vec<PartyId> = shares
            .iter()
            .filter(|m| m.to == party)
            .map(|m| m.from)
            .collect();
        for advert in adverts {
            if advert.party == party {
                up += advert.to_bytes().len();
            } else if neighbours.contains(&advert.party) {
                down += advert.to_bytes().len();
            }
        }
        for message in shares {
            if message.from == party {
                up += message.to_bytes().len();
            }
            if message.to == party {
                down += message.to_bytes().len();
            }
        }
        Self { up, down }
    }
}

/// One client's round of `robust` secure aggregation, timed on one thread.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RobustClientCost {
    /// Advertising (two X25519 key pairs, an Ed25519 signature), sharing keys (its k
    /// neighbours' advert signatures checked, two Shamir splits, k X25519 agreements and AEAD
    /// encryptions), receiving shares (k agreements and AEAD decryptions) and answering the
    /// unmask request.
    pub keys_and_shares: Duration,
    /// Sealing the update: k pair keys (X25519 and HKDF), the canaries, and k + 1 AES-CTR
    /// keystreams added into the words.
    pub seal: Duration,
}

/// A federation of P parties in `robust` secure aggregation under rule (a) with c = d =
/// ⌈P/10⌉ ([`robust_tolerance`]), run in memory. [`RobustFederation::round`] runs one round
/// with some parties dropped: it times party 0's side (the client's cost) and leaves the
/// round ready for the server's unmask step, which [`RobustFederation::unmask`] times.
pub struct RobustFederation {
    key: SecretKey,
    roster: Arc<Roster>,
    policy: RobustPolicy,
    sides: Vec<RobustParty>,
    fp: FixedPoint,
    len: usize,
    /// Party 0's encoded update.
    words: Vec<u64>,
    /// The one-thread pool party 0's steps run in (their time is the client's CPU).
    client_pool: rayon::ThreadPool,
    next_round: u64,
}

/// The run fingerprint of the robust fixtures.
const ROBUST_RUN: [u8; 32] = [0x3c; 32];

impl RobustFederation {
    /// `parties` parties (identities from fixed seeds) whose updates have `len` slots.
    pub fn new(parties: u32, len: usize) -> Result<Self, PerfError> {
        let key = bench_key()?;
        let tolerance = robust_tolerance(parties);
        let (policy, min_parties) =
            RobustPolicy::rule_a(parties, tolerance, tolerance, None, None, false)
                .map_err(RobustError::from)?;
        let ids: Vec<Arc<Identity>> = identities(parties).into_iter().map(Arc::new).collect();
        let roster = Arc::new(
            Roster::new_signed(
                key.key_id(),
                ids.iter().map(|id| id.public()).collect(),
                ids.iter().map(|id| id.signing_public()).collect(),
                Policy {
                    mode: Mode::Robust(policy),
                    parties,
                    min_parties,
                },
            )
            .map_err(RobustError::from)?,
        );
        let sides = ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| RobustParty::new(id, PartyId(i as u32), Arc::clone(&roster), ROBUST_RUN))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            key,
            roster,
            policy,
            sides,
            fp: FixedPoint::for_parties(parties)?,
            len,
            words: vector_to_encrypt(len, parties, 11)?,
            client_pool: super::thread_pool(1)?,
            next_round: 0,
        })
    }

    /// The parameters of rule (a) in use (k, T, ...).
    pub fn policy(&self) -> RobustPolicy {
        self.policy
    }

    /// Parties in the federation.
    pub fn parties(&self) -> u32 {
        self.sides.len() as u32
    }

    /// One round in which `dropouts` parties other than party 0 (a seeded random choice)
    /// share their keys but never submit. Every party advertises and shares its keys; the
    /// alive ones take the shares addressed to them and answer the unmask request. Party 0's
    /// steps run first, alone, on one thread, and are timed; the others run in parallel
    /// outside the clock. With `check`, every alive party seals a distinct update, and their
    /// sealed sum is kept for [`RobustFederation::apply_correction`] to check; without, only
    /// party 0 seals (the others' blinds cost the fixture much time at large P).
    pub fn round(
        &mut self,
        dropouts: u32,
        check: bool,
    ) -> Result<(RobustClientCost, UnmaskRound), PerfError> {
        let round = Round(self.next_round);
        self.next_round += 1;
        let parties = self.parties();
        let set = PartySet::new(self.roster.parties());
        let mut rng = ChaCha20Rng::seed_from_u64(u64::from(parties) << 32 | round.0);
        let others_count = parties.saturating_sub(1) as usize;
        let dead: Vec<PartyId> = rand::seq::index::sample(
            &mut rng,
            others_count,
            (dropouts as usize).min(others_count),
        )
        .into_iter()
        .map(|i| PartyId(i as u32 + 1))
        .collect();
        let alive = PartySet::new(set.iter().filter(|p| !dead.contains(p)));
        let request = UnmaskRequest {
            round,
            alive: alive.clone(),
        };
        let (fp, key, len) = (self.fp, &self.key, self.len);
        let (me, others) = self.sides.split_at_mut(1);
        let (me, pool) = (&mut me[0], &self.client_pool);
        let mut cost = RobustClientCost {
            keys_and_shares: Duration::ZERO,
            seal: Duration::ZERO,
        };
        let mut adverts = vec![on_clock(pool, &mut cost.keys_and_shares, || {
            me.advertise(round)
        })?];
        adverts.extend(
            others
                .par_iter_mut()
                .map(|side| side.advertise(round))
                .collect::<Result<Vec<_>, _>>()?,
        );
        let advertisers = PartySet::new(adverts.iter().map(|a| a.party));
        let mut shares = on_clock(pool, &mut cost.keys_and_shares, || {
            me.share_keys(round, &advertisers, &adverts)
        })?;
        let theirs = others
            .par_iter_mut()
            .map(|side| side.share_keys(round, &advertisers, &adverts))
            .collect::<Result<Vec<_>, _>>()?;
        shares.extend(theirs.into_iter().flatten());
        let addressed = |party: PartyId| -> Vec<SealedShares> {
            shares.iter().filter(|m| m.to == party).cloned().collect()
        };
        let mine = addressed(me.party());
        on_clock(pool, &mut cost.keys_and_shares, || {
            me.receive_shares(round, &set, &mine)
        })?;
        let words = self.words.clone();
        let sealed = on_clock(pool, &mut cost.seal, || me.seal(words, &fp, key, round))?;
        let mut responses = vec![(
            me.party(),
            on_clock(pool, &mut cost.keys_and_shares, || me.unmask(&request))?,
        )];
        let mut expected = self.words.clone();
        expected.resize(len, 0);
        let mut sealed_sum = sealed;
        let answered: Vec<AliveAnswer> = others
            .par_iter_mut()
            .filter(|side| alive.contains(side.party()))
            .map(|side| {
                let party = side.party();
                side.receive_shares(round, &set, &addressed(party))?;
                let update = match check {
                    true => {
                        let words = vector_to_encrypt(len, parties, 1000 + u64::from(party.0))?;
                        let sealed = side.seal(words.clone(), &fp, key, round)?;
                        Some((words, sealed))
                    }
                    false => None,
                };
                Ok((party, update, side.unmask(&request)?))
            })
            .collect::<Result<_, PerfError>>()?;
        for (party, update, response) in answered {
            if let Some((words, sealed)) = update {
                wrapping_add_into(&mut expected, &words);
                wrapping_add_into(&mut sealed_sum, &sealed);
            }
            responses.push((party, response));
        }
        let mut bytes = RobustBytes::default();
        for (party, response) in &responses {
            let mine = RobustBytes::of(*party, &adverts, &shares, &request, response);
            bytes.up = bytes.up.max(mine.up);
            bytes.down = bytes.down.max(mine.down);
        }
        let salt = me.salt();
        let prepared = UnmaskRound {
            round,
            salt,
            adverts,
            set,
            alive,
            responses,
            bytes,
            expected: check.then_some(expected),
            sealed: sealed_sum,
        };
        Ok((cost, prepared))
    }

    /// Times the server's unmask step of `prepared`: [`RoundUnmask::new`] (every advert
    /// verified, the graph), one [`RoundUnmask::add_response`] per alive party, and the
    /// correction over the update's slots and canaries. Returns the correction and the time.
    pub fn unmask(&self, prepared: &UnmaskRound) -> Result<(Vec<u64>, Duration), PerfError> {
        let responses = prepared.responses.clone();
        let start = Instant::now();
        let mut unmask = RoundUnmask::new(
            &self.roster,
            prepared.salt,
            prepared.round,
            &prepared.adverts,
            prepared.set.clone(),
            prepared.alive.clone(),
        )?;
        for (party, response) in responses {
            unmask.add_response(party, response)?;
        }
        let correction = unmask.correction(self.len + CANARY_SLOTS, self.fp.params().total_bits)?;
        Ok((correction, start.elapsed()))
    }

    /// Adds `correction` without a key (timed) to an encryption of `prepared`'s sealed sum
    /// (of party 0's sealed update alone if the round was not checked) at this party count's
    /// widths. If the round was checked, decrypts and checks as an alive party does (the
    /// party list and the canaries) that the result is exactly the sum of the alive parties'
    /// updates.
    pub fn apply_correction(
        &self,
        prepared: &UnmaskRound,
        correction: &[u64],
    ) -> Result<AppliedCorrection, PerfError> {
        let widths = Widths::new(
            self.fp.params().total_bits,
            self.parties(),
            DownloadForm::Seeds,
        )?;
        let mut sum = self
            .key
            .prepare(prepared.sealed.len())?
            .seal(&prepared.sealed, &widths)?;
        let upload_bytes = sum.to_bytes().len();
        let start = Instant::now();
        Summable::add_public(&mut sum, correction)?;
        let add_public = start.elapsed();
        let Some(expected) = &prepared.expected else {
            return Ok(AppliedCorrection {
                add_public,
                upload_bytes,
                checked: false,
            });
        };
        let plain = self.key.decrypt_compact(sum, &widths, None)?;
        let opened =
            self.sides[0].open(&plain, &self.fp, &self.key, prepared.round, &prepared.alive)?;
        if self.fp.decode_integers(opened) != self.fp.decode_integers(expected) {
            return Err(PerfError::InexactSum {
                parties: self.parties(),
                dropouts: prepared.dropouts(),
            });
        }
        Ok(AppliedCorrection {
            add_public,
            upload_bytes,
            checked: true,
        })
    }
}

/// An alive party of a fixture round: its id, its update and sealed words (if the round is
/// checked), its unmask response.
type AliveAnswer = (PartyId, Option<(Vec<u64>, Vec<u64>)>, UnmaskResponse);

/// Runs `step` in `pool` and adds its time to `clock`.
fn on_clock<T: Send>(
    pool: &rayon::ThreadPool,
    clock: &mut Duration,
    step: impl FnOnce() -> Result<T, RobustError> + Send,
) -> Result<T, PerfError> {
    let start = Instant::now();
    let out = pool.install(step)?;
    *clock += start.elapsed();
    Ok(out)
}

/// `words` added into `sum`, word by word, mod 2^64.
fn wrapping_add_into(sum: &mut [u64], words: &[u64]) {
    sum.iter_mut()
        .zip(words)
        .for_each(|(s, w)| *s = s.wrapping_add(*w));
}

/// A round ready for the server's unmask step ([`RobustFederation::round`]).
pub struct UnmaskRound {
    round: Round,
    salt: [u8; 32],
    adverts: Vec<Advert>,
    set: PartySet,
    alive: PartySet,
    responses: Vec<(PartyId, UnmaskResponse)>,
    /// The most any alive party sent and received (each direction on its own).
    pub bytes: RobustBytes,
    /// The sum of the alive parties' sealed words, or party 0's alone if not checked.
    sealed: Vec<u64>,
    /// If checked: the plaintext sum of the alive parties' updates.
    expected: Option<Vec<u64>>,
}

impl UnmaskRound {
    /// Parties of the set that never submitted.
    pub fn dropouts(&self) -> u32 {
        self.set.len() - self.alive.len()
    }
}

/// The correction added to a sum ([`RobustFederation::apply_correction`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AppliedCorrection {
    /// [`Summable::add_public`] of the correction.
    pub add_public: Duration,
    /// Bytes of one party's HE upload at this party count (the encryption's wire size).
    pub upload_bytes: usize,
    /// Whether the corrected sum was decrypted and found exact.
    pub checked: bool,
}
