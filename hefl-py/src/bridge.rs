//! The binding's only contact with hefl's API: key files, the client's envelope, the server's
//! keyless sum, the party machine and secure aggregation's identities and rosters, in plain
//! Rust (no Python types), so that re-pointing the binding at a new library API touches this
//! file alone.
//!
//! Every function here may run with the GIL released: nothing borrows Python memory except
//! immutable byte strings, and nothing calls back into Python.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use hefl::fl::{
    Encoding, Envelope, EnvelopeCost, EnvelopeError, Federation, Party, PartyId, PartyState,
    PayloadError, Plan, PlanPartyError, Privacy, Published, PublishedError, Received, Round,
    Sealed, SetupError as PartySetupError, SnapshotError, StateError, Step, Summable, Weighting,
};
use hefl::he::csprng::EntropyError;
use hefl::he::keys::{KeyError, KeyFile, KeyId, SecretKey};
use hefl::he::{
    CompactVector, Context, DownloadForm, Expected, HeadroomError, MAX_PLAINTEXT_LEN, SecureRng,
    Widths,
};
use hefl::quant::{DEFAULT_CLIP, QuantError};
use hefl::secagg::{
    CANARY_SLOTS, Credentials, Fingerprint, Identity, IdentityError, MAX_ROSTER_BYTES, Mode,
    PartyPublicKey, Policy, Roster, RosterError, SecAggError, plan_policy,
};
use hefl::secret_file::{SecretFileError, read_limited};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

/// Slots a sealed update of `len` values occupies: the weighted values, then the weight (and
/// with `strict` secure aggregation, the canaries).
///
/// [`Envelope::expected_he`] knows this, but only for an envelope built from a secret key;
/// the server has a key id, not a key, so the binding mirrors it here (and a test checks
/// that the two agree).
pub fn wire_len(len: usize, secure_agg: bool) -> usize {
    len + 1 + if secure_agg { CANARY_SLOTS } else { 0 }
}

/// Writes a fresh key file at `path` (mode 0600; refuses to replace one unless `force`),
/// loads it back as a client will and returns its key id: what `hefl keygen` does.
pub fn generate_key(path: &Path, force: bool) -> Result<KeyId, KeyError> {
    KeyFile::generate()?.write_new(path, force)?;
    Ok(KeyFile::load(path)?.key_id())
}

/// The public key id of the key file at `path`, after every check of [`KeyFile::load`]
/// (mode, size, format, parameter set, key id against seed).
pub fn inspect_key(path: &Path) -> Result<KeyId, KeyError> {
    Ok(KeyFile::load(path)?.key_id())
}

/// Loads the key file at `path` and derives its GLWE secret key.
pub fn load_key(path: &Path) -> Result<Arc<SecretKey>, KeyError> {
    Ok(Arc::new(KeyFile::load(path)?.secret_key()?))
}

// --- secure aggregation: identities and rosters ---------------------------------------------

/// Why an identity or a roster could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The identity file was refused (mode, format, public key) or could not be written.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The roster was refused (malformed, another version, a bad policy, duplicate keys, a
    /// fingerprint other than the one compared out of band).
    #[error(transparent)]
    Roster(#[from] RosterError),
    /// The roster file could not be read.
    #[error("reading the roster {path}: {source}")]
    RosterFile {
        /// The file.
        path: String,
        /// Why.
        source: SecretFileError,
    },
    /// An identity the roster does not list.
    #[error(
        "this identity's public key {public} is not in the roster {roster} (parties 0 to {last}): \
         it is another federation's roster, or the coordinator left this party out"
    )]
    NotInRoster {
        /// The identity's public key.
        public: PartyPublicKey,
        /// The roster's fingerprint.
        roster: Fingerprint,
        /// The roster's last party id.
        last: u32,
    },
}

/// Writes a fresh identity file at `path` (mode 0600; refuses to replace one unless `force`),
/// loads it back as a party will and returns its public key: what `hefl identity` does.
pub fn generate_identity(path: &Path, force: bool) -> Result<PartyPublicKey, IdentityError> {
    Identity::generate()?.write_new(path, force)?;
    Ok(Identity::load(path)?.public())
}

/// Loads an identity file (refused unless mode 0600; see [`Identity::load`]).
pub fn load_identity(path: &Path) -> Result<Arc<Identity>, IdentityError> {
    Ok(Arc::new(Identity::load(path)?))
}

/// Reads and validates a roster file (at most [`MAX_ROSTER_BYTES`]), as `hefl join` does.
pub fn load_roster(path: &Path) -> Result<Roster, CredentialsError> {
    let bytes =
        read_limited(path, MAX_ROSTER_BYTES).map_err(|source| CredentialsError::RosterFile {
            path: path.display().to_string(),
            source,
        })?;
    Ok(Roster::parse(&bytes)?)
}

/// A roster of the parties whose public lines are `publics` (party i's at index i) for the
/// key `key_id`, in `mode`, each sum of at least `min_parties` (`None`: all): what
/// `hefl roster` assembles.
pub fn make_roster(
    key_id: &str,
    publics: &[String],
    mode: Mode,
    min_parties: Option<u32>,
) -> Result<Roster, SetupError> {
    let key_id: KeyId = key_id.parse()?;
    let keys = publics
        .iter()
        .map(|line| line.parse::<PartyPublicKey>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RosterError::Malformed {
            reason: e.to_string(),
        })?;
    let parties = u32::try_from(keys.len()).unwrap_or(u32::MAX);
    let policy: Policy = plan_policy(mode, parties, min_parties);
    Ok(Roster::new(key_id, keys, policy)?)
}

/// The party id the roster gives `identity`: the party-number mapping is the roster's, never
/// the server's.
pub fn party_of(roster: &Roster, identity: &Identity) -> Result<u32, CredentialsError> {
    let public = identity.public();
    roster
        .parties()
        .find(|&p| roster.public_key(p).ok() == Some(public))
        .map(|p| p.0)
        .ok_or(CredentialsError::NotInRoster {
            public,
            roster: roster.fingerprint(),
            last: roster.policy().parties.saturating_sub(1),
        })
}

/// `identity` and `roster`, refused unless the roster's fingerprint is `expected` (64 hex
/// digits, compared out of band).
pub fn credentials(
    identity: Arc<Identity>,
    roster: Arc<Roster>,
    expected: &str,
) -> Result<Credentials, RosterError> {
    Credentials::new_shared(identity, roster, expected.parse()?)
}

// --- a Flower-style federation's bounds -------------------------------------------------------

/// What sizes a Flower-style federation's encoding: updates of `length` values, sums of at
/// most `max_parties` of them, each weighted by an integer example count of at most
/// `max_examples` ([`Weighting::Examples`]), values clipped to hefl's default clip (8) and
/// rounded to multiples of 2^-`frac_bits`. Clients and the server build their encodings and
/// ciphertext widths from the same bounds, so they always agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Values per update.
    pub length: usize,
    /// The most updates a sum may hold.
    pub max_parties: u32,
    /// The largest example count a party may send.
    pub max_examples: u64,
    /// Fractional bits of the fixed point.
    pub frac_bits: u32,
}

/// Why a setting does not fit: the fixed point overflows a word, or sums of ciphertexts of
/// its width could fail to decode.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// No 63-bit fixed point holds the sum (or a bound of 0).
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// The GLWE noise budget does not hold sums of this width.
    #[error(transparent)]
    Headroom(#[from] HeadroomError),
}

/// Bounds that do not fit, why, and the nearest that do.
#[derive(Debug, thiserror::Error)]
#[error(
    "max_parties={}, max_examples={}, frac_bits={} do not fit: {source}; {fits}",
    .bounds.max_parties, .bounds.max_examples, .bounds.frac_bits
)]
pub struct NoFit {
    /// The bounds asked.
    pub bounds: Bounds,
    /// Nearby settings that fit.
    pub fits: Fits,
    /// Why not.
    pub source: FitError,
}

/// Settings near a refused one that fit: each changes one bound and keeps the others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fits {
    /// The largest `frac_bits` below the one asked that fits.
    pub frac_bits: Option<u32>,
    /// The largest `max_examples` below the one asked that fits.
    pub max_examples: Option<u64>,
    /// The largest `max_parties` below the one asked that fits.
    pub max_parties: Option<u32>,
}

impl fmt::Display for Fits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut fits = Vec::new();
        if let Some(bits) = self.frac_bits {
            fits.push(format!("frac_bits={bits}"));
        }
        if let Some(max) = self.max_examples {
            fits.push(format!("max_examples={max}"));
        }
        if let Some(parties) = self.max_parties {
            fits.push(format!("max_parties={parties}"));
        }
        if fits.is_empty() {
            return f.write_str("no setting that changes one of them fits");
        }
        write!(f, "the others kept, these fit: {}", fits.join(" or "))
    }
}

impl Bounds {
    /// The encoding and the ciphertext widths of these bounds, or why they do not fit,
    /// with the nearest settings that do ([`Fits`]).
    pub fn sized(&self) -> Result<(Encoding, Widths), SetupError> {
        check_len(self.length)?;
        self.try_sized().map_err(|source| {
            SetupError::NoFit(Box::new(NoFit {
                bounds: *self,
                fits: self.fits(),
                source,
            }))
        })
    }

    fn try_sized(&self) -> Result<(Encoding, Widths), FitError> {
        let encoding = Encoding::new(
            DEFAULT_CLIP,
            self.frac_bits,
            self.max_parties,
            Weighting::Examples {
                max: self.max_examples,
            },
        )?;
        let widths = Widths::new(encoding.total_bits(), self.max_parties, DownloadForm::Auto)?;
        Ok((encoding, widths))
    }

    fn fit(self) -> bool {
        self.try_sized().is_ok()
    }

    /// The nearest settings that fit, changing one bound at a time.
    fn fits(&self) -> Fits {
        let frac_bits = (0..self.frac_bits.min(63)).rev().find(|&f| {
            Bounds {
                frac_bits: f,
                ..*self
            }
            .fit()
        });
        let max_examples = largest_below(self.max_examples, |m| {
            Bounds {
                max_examples: m,
                ..*self
            }
            .fit()
        });
        let max_parties = largest_below(u64::from(self.max_parties), |p| {
            Bounds {
                max_parties: p as u32,
                ..*self
            }
            .fit()
        })
        .map(|p| p as u32);
        Fits {
            frac_bits,
            max_examples,
            max_parties,
        }
    }

    /// What a server checks this federation's submissions against (`secure_agg`: with the
    /// canaries of `strict` secure aggregation).
    pub fn expected(&self, key_id: KeyId, secure_agg: bool) -> Result<Expected, SetupError> {
        let (_, widths) = self.sized()?;
        Ok(Expected {
            key_id,
            plaintext_len: wire_len(self.length, secure_agg),
            widths,
        })
    }
}

/// The largest n in 1..below that `fits` (a property that holds up to some n and not above).
fn largest_below(below: u64, fits: impl Fn(u64) -> bool) -> Option<u64> {
    if below <= 1 || !fits(1) {
        return None;
    }
    let (mut lo, mut hi) = (1, below); // fits(lo), and nothing at or above hi is asked
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}

/// Why an envelope, a sum or a party could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A length of zero or above hefl's limit.
    #[error("length must be between 1 and {max} values, got {found}")]
    Length {
        /// Requested length.
        found: usize,
        /// The largest length a message may carry, less the weight slot.
        max: usize,
    },
    /// Bounds no encoding fits.
    #[error(transparent)]
    NoFit(Box<NoFit>),
    /// A key id that is not 64 hex digits.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The party machine refused the federation or the key.
    #[error(transparent)]
    Party(#[from] PartySetupError),
    /// The OS's random source failed.
    #[error("cannot seed the rounding generator: {0}")]
    Entropy(#[from] EntropyError),
    /// The server runs secure aggregation, and this party was given no identity and roster.
    #[error(
        "the server runs secure aggregation {mode}: this party needs its identity, the roster \
         and the roster's fingerprint"
    )]
    NoCredentials {
        /// The server's mode.
        mode: Mode,
    },
    /// The roster refused the server's settings or this identity (a weakened policy, another
    /// key, another party's entry).
    #[error(transparent)]
    Roster(#[from] RosterError),
    /// The blinder could not be made (a partner's key is refused).
    #[error(transparent)]
    SecAgg(#[from] SecAggError),
}

fn check_len(len: usize) -> Result<(), SetupError> {
    let max = MAX_PLAINTEXT_LEN - 1;
    if len == 0 || len > max {
        return Err(SetupError::Length { found: len, max });
    }
    Ok(())
}

// --- the envelope and the keyless sum ---------------------------------------------------------

/// Why an update could not be sealed by a [`Sealer`].
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The operating system's random source failed.
    #[error("cannot seed the rounding generator: {0}")]
    Entropy(#[from] EntropyError),
    /// Quantization or encryption refused the update.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

/// A client's envelope: seals updates of a fixed length weighted by example counts under a
/// shared key and opens aggregates into the example-weighted mean.
pub struct Sealer {
    envelope: Envelope,
    bounds: Bounds,
}

impl Sealer {
    /// An envelope for `bounds` under `key`.
    pub fn new(key: Arc<SecretKey>, bounds: Bounds) -> Result<Self, SetupError> {
        let (encoding, widths) = bounds.sized()?;
        Ok(Self {
            envelope: Envelope::he(encoding, key, bounds.length, widths),
            bounds,
        })
    }

    /// The bounds.
    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    /// What a server checks this envelope's submissions against.
    pub fn expected(&self) -> Option<Expected> {
        self.envelope.expected_he()
    }

    /// Clips, rounds (stochastically, from a fresh OS-seeded generator), weights by
    /// `examples` and encrypts `values`, for `context` (run, round, sender: in the header).
    pub fn seal(
        &self,
        values: &[f32],
        examples: u64,
        context: Context,
    ) -> Result<Sealed, SealError> {
        let mut rng = SecureRng::from_os()?;
        let mut cost = EnvelopeCost::default();
        Ok(self
            .envelope
            .seal(values, examples, context, None, &mut rng, &mut cost)?)
    }

    /// Decrypts and decodes the sum of the updates of `parties` into their weighted mean;
    /// refuses a sum that names another context than `context`.
    pub fn open(
        &self,
        bytes: &[u8],
        parties: &[u32],
        context: Context,
    ) -> Result<Vec<f32>, EnvelopeError> {
        let parties: Vec<PartyId> = parties.iter().copied().map(PartyId).collect();
        let mut cost = EnvelopeCost::default();
        self.envelope.open(bytes, &parties, context, &mut cost)
    }
}

/// Why a submission was not added to a [`KeylessSum`].
#[derive(Debug, thiserror::Error)]
pub enum SumError {
    /// The sum already holds `max` submissions.
    #[error("the sum already holds {max} submissions, the most its clients can decode")]
    Full {
        /// The limit.
        max: u32,
    },
    /// The message failed the validation `hefl serve` runs.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// A message for another run, round or party (a copy or a replay).
    #[error("a message for {found}, expected {expected}")]
    Context {
        /// What the sum takes.
        expected: Context,
        /// What the message names.
        found: Context,
    },
}

/// The server's side: a running homomorphic sum of sealed updates, validated exactly as
/// `hefl serve` validates them (through [`Summable`]), built from a public key id and the
/// federation's bounds, never from a key.
pub struct KeylessSum {
    expect: Expected,
    snapshot_expect: Expected,
    sum: Option<CompactVector>,
    count: u32,
    max_parties: u32,
    /// The run's fingerprint and the round this sum is for: every upload must name them.
    run: [u8; 32],
    round: u64,
}

impl KeylessSum {
    /// An empty sum of round `round` of the run `run` (its fingerprint) of updates under
    /// `key_id` of a federation of `bounds` (`secure_agg`: updates carry the canaries of
    /// `strict` secure aggregation).
    pub fn new(
        key_id: &str,
        bounds: Bounds,
        run: [u8; 32],
        round: u64,
        secure_agg: bool,
    ) -> Result<Self, SetupError> {
        let key_id: KeyId = key_id.parse()?;
        let expect = bounds.expected(key_id, secure_agg)?;
        let federation = flower_federation(key_id, bounds, 1, Some(1), PartyId(0), "", None)?;
        let snapshot_expect = federation
            .snapshot_expected_he()
            .map_err(PartySetupError::from)?
            .ok_or(PartySetupError::MissingKey)?;
        Ok(Self {
            expect,
            snapshot_expect,
            sum: None,
            count: 0,
            max_parties: bounds.max_parties,
            run,
            round,
        })
    }

    /// Submissions summed so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The key id submissions must be under.
    pub fn key_id(&self) -> KeyId {
        self.expect.key_id
    }

    /// An upper bound on a valid submission's size, before parsing it.
    pub fn max_message_len(&self) -> usize {
        CompactVector::max_wire_len(&self.expect)
    }

    /// Refuses a message that names another context than `party`'s in this run and `round`
    /// (as `hefl serve` does: one that fails the checks against `expect` too is refused for
    /// those, the more telling mismatch).
    fn check_context(
        &self,
        bytes: &[u8],
        round: u64,
        party: u32,
        expect: &Expected,
    ) -> Result<(), SumError> {
        let expected = Context {
            run: self.run,
            round,
            party,
        };
        let found = CompactVector::context_of(bytes).map_err(PayloadError::from)?;
        if found != expected {
            <CompactVector as Summable>::parse_submission(bytes, expect)?;
            return Err(SumError::Context { expected, found });
        }
        Ok(())
    }

    /// Validates `bytes` as party `party`'s upload for this sum's round and adds it; on any
    /// error the sum is unchanged.
    pub fn add(&mut self, bytes: &[u8], party: u32) -> Result<(), SumError> {
        if self.count >= self.max_parties {
            return Err(SumError::Full {
                max: self.max_parties,
            });
        }
        self.check_context(bytes, self.round, party, &self.expect)?;
        match self.sum.as_mut() {
            Some(sum) => Summable::add_submission(sum, bytes, &self.expect)?,
            None => {
                let mut sum = <CompactVector as Summable>::parse_submission(bytes, &self.expect)?;
                sum.set_context(Context::sum(self.run, self.round));
                self.sum = Some(sum);
            }
        }
        self.count += 1;
        Ok(())
    }

    /// Validates `bytes` as party `party`'s model snapshot of the model before `round`, of
    /// this federation (one party's encryption under the key, of a snapshot's length and
    /// widths), as `hefl serve` does.
    pub fn check_snapshot(&self, bytes: &[u8], round: u64, party: u32) -> Result<(), SumError> {
        self.check_context(bytes, round, party, &self.snapshot_expect)?;
        <CompactVector as Summable>::parse_submission(bytes, &self.snapshot_expect)?;
        Ok(())
    }

    /// The aggregate's wire bytes (naming this run's sum of this round); `None` before the
    /// first submission.
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        self.sum.as_ref().map(Summable::to_bytes)
    }
}

// --- the party machine ------------------------------------------------------------------------

/// The domain of a Flower-style run's fingerprint (see [`fingerprint`]).
const FINGERPRINT_DOMAIN: &[u8] = b"hefl.flower.run.v1\0";

/// A Flower-style run's fingerprint: SHA-256 over a domain label and a fixed-width encoding
/// of the run's public settings (key id, length, bounds, clip, minimum parties, snapshot
/// interval), `label` (a public run name, such as Flower's run id) and, with secure
/// aggregation, the roster's fingerprint. Every input is a value the server sends every node
/// in the clear (the key id and the roster fingerprint are hashes of public data), so the
/// fingerprint leaks nothing the server does not already know; it tells a party's
/// checkpoints and model snapshots from another run's, and salts its blinds.
pub fn fingerprint(
    key_id: KeyId,
    bounds: Bounds,
    min_parties: u32,
    snapshot_every: Option<u64>,
    label: &str,
    roster: Option<Fingerprint>,
) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(FINGERPRINT_DOMAIN);
    hash.update(key_id.0);
    hash.update((bounds.length as u64).to_le_bytes());
    hash.update(bounds.max_parties.to_le_bytes());
    hash.update(bounds.max_examples.to_le_bytes());
    hash.update(bounds.frac_bits.to_le_bytes());
    hash.update(DEFAULT_CLIP.to_bits().to_le_bytes());
    hash.update(min_parties.to_le_bytes());
    match snapshot_every {
        Some(every) => {
            hash.update([1]);
            hash.update(every.to_le_bytes());
        }
        None => hash.update([0; 9]),
    }
    hash.update((label.len() as u64).to_le_bytes());
    hash.update(label.as_bytes());
    // After the length-prefixed label, so that no run without a roster hashes as one with.
    if let Some(roster) = roster {
        hash.update([1]);
        hash.update(roster.0);
    }
    hash.finalize().into()
}

/// The [`Federation`] of party `party` in a Flower-style run: `he` under `key_id`, sums
/// weighted by example counts, the mean update added to the model ([`Step::Delta`]), any
/// party id below `u32::MAX` (the strategy assigns them; the roster, with secure
/// aggregation), the fingerprint of [`fingerprint`].
pub fn flower_federation(
    key_id: KeyId,
    bounds: Bounds,
    min_parties: u32,
    snapshot_every: Option<u64>,
    party: PartyId,
    label: &str,
    roster: Option<Fingerprint>,
) -> Result<Federation, SetupError> {
    let (encoding, _) = bounds.sized()?;
    Ok(Federation {
        party,
        parties: bounds.max_parties,
        id_limit: u32::MAX,
        min_parties,
        length: bounds.length,
        encoding,
        privacy: Privacy::He,
        he: Some((key_id, DownloadForm::Auto)),
        step: Step::Delta,
        snapshot_every,
        run: fingerprint(key_id, bounds, min_parties, snapshot_every, label, roster),
    })
}

/// A Flower-style party's settings besides its key and initial model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowerSettings {
    /// The federation's bounds (the length is the initial model's).
    pub bounds: Bounds,
    /// The fewest parties a published sum may hold.
    pub min_parties: u32,
    /// Rounds between model snapshots (`None`: none).
    pub snapshot_every: Option<u64>,
    /// This party's id (assigned by the strategy).
    pub party: u32,
    /// A public label of the run, part of its fingerprint.
    pub label: String,
    /// Seeds the rounding generator (reproducible runs); `None`: from the OS.
    pub seed: Option<u64>,
    /// The secure aggregation the server's strategy runs (`None`: none).
    pub secure_agg: Option<Mode>,
}

/// Why a party of a plan could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Not a plan's JSON.
    #[error("not a hefl plan: {0}")]
    Json(#[from] serde_json::Error),
    /// The plan does not validate.
    #[error("the plan is refused: {0}")]
    Config(#[from] hefl::fl::ConfigError),
    /// The party cannot be set up from it.
    #[error(transparent)]
    Party(#[from] PlanPartyError),
    /// A party id not in the plan's federation.
    #[error("party {party} is not in this plan's federation of {parties} parties")]
    NotInFederation {
        /// The id given.
        party: u32,
        /// The plan's party count.
        parties: usize,
    },
}

/// Why [`PartyMachine::seal_model`] or [`PartyMachine::seal`] refused.
#[derive(Debug, thiserror::Error)]
pub enum PartySealError {
    /// A trained model of another length than the global model.
    #[error("a trained model of {found} values, expected {expected} (the global model's)")]
    Length {
        /// The model's length.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// The machine refused.
    #[error(transparent)]
    Party(#[from] hefl::fl::SealError),
}

/// Why [`PartyMachine::restore`] refused a state.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// More bytes than a state of this model can take.
    #[error("{found} bytes, more than the {limit} a state of this model can take")]
    TooLarge {
        /// The bytes given.
        found: u64,
        /// The bound.
        limit: u64,
    },
    /// The state does not parse or fit this party.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Largest party state [`PartyMachine::restore`] reads beyond the model's own size: the
/// header, the generator and up to a million skipped rounds.
const STATE_SLACK: u64 = 4096 + 8 * (1 << 20);

/// One party's side of a federation: [`Party`], with the cost counters its calls need.
pub struct PartyMachine {
    party: Party,
    cost: EnvelopeCost,
}

impl PartyMachine {
    /// A Flower-style party with the global model `initial` under `key`; with `credentials`
    /// (its identity and the roster it compared out of band), a party of `strict` secure
    /// aggregation, which refuses settings weaker than the roster's (no secure aggregation,
    /// another party count, a smaller minimum), another key, and an identity that is not the
    /// roster's entry for `settings.party`.
    pub fn flower(
        key: Arc<SecretKey>,
        initial: Vec<f32>,
        settings: &FlowerSettings,
        credentials: Option<&Credentials>,
    ) -> Result<Self, SetupError> {
        let bounds = Bounds {
            length: initial.len(),
            ..settings.bounds
        };
        let party = PartyId(settings.party);
        match (settings.secure_agg, credentials) {
            (Some(mode), None) => return Err(SetupError::NoCredentials { mode }),
            (mode, Some(credentials)) => {
                let policy =
                    mode.map(|m| plan_policy(m, bounds.max_parties, Some(settings.min_parties)));
                credentials.check_plan(party, Some(key.key_id()), policy)?;
            }
            (None, None) => {}
        }
        let federation = flower_federation(
            key.key_id(),
            bounds,
            settings.min_parties,
            settings.snapshot_every,
            party,
            &settings.label,
            credentials.map(|c| c.roster().fingerprint()),
        )?;
        let rounding = match settings.seed {
            Some(seed) => ChaCha20Rng::seed_from_u64(seed),
            None => {
                let mut seed = [0u8; 32];
                SecureRng::from_os()?.fill_bytes(&mut seed);
                ChaCha20Rng::from_seed(seed)
            }
        };
        let mut machine = Party::new(federation, initial, Some(key), rounding)?;
        if let Some(credentials) = credentials {
            let blinder = credentials.blinder(party, machine.federation().run)?;
            machine = machine.with_secure_agg(blinder)?;
        }
        Ok(Self {
            party: machine,
            cost: EnvelopeCost::default(),
        })
    }

    /// Party `party` of the plan `json` (a [`Plan`]'s JSON, validated here), as `hefl join`
    /// runs it: the plan's initial model and rounding generator.
    pub fn from_plan(
        json: &str,
        party: u32,
        key: Option<Arc<SecretKey>>,
    ) -> Result<Self, PlanError> {
        let plan: Plan = serde_json::from_str(json)?;
        let plan = plan.validate()?;
        let parties = plan.config.parties;
        if party as usize >= parties {
            return Err(PlanError::NotInFederation { party, parties });
        }
        Ok(Self {
            party: Party::for_plan(&plan, PartyId(party), key)?,
            cost: EnvelopeCost::default(),
        })
    }

    /// The federation.
    pub fn federation(&self) -> &Federation {
        self.party.federation()
    }

    /// The global model.
    pub fn model(&self) -> &[f32] {
        self.party.model()
    }

    /// The round this party is on.
    pub fn next_round(&self) -> u64 {
        self.party.next_round().0
    }

    /// Rounds skipped so far.
    pub fn skipped(&self) -> &[u64] {
        self.party.skipped()
    }

    /// Rounds void so far (`strict` secure aggregation).
    pub fn voided(&self) -> &[u64] {
        self.party.voided()
    }

    /// Whether this party is in its next round's party set (always without secure
    /// aggregation): if not, it must not seal, and asks to rejoin.
    pub fn is_member(&self) -> bool {
        self.party.is_member()
    }

    /// Seals `update` (for the round the party is on) weighted by `examples`.
    pub fn seal(&mut self, update: &[f32], examples: u64) -> Result<Sealed, PartySealError> {
        let round = self.party.next_round();
        Ok(self
            .party
            .seal(round, update, examples, None, &mut self.cost)?)
    }

    /// Seals the update `trained` − model (computed in f32, value by value) weighted by
    /// `examples`.
    pub fn seal_model(&mut self, trained: &[f32], examples: u64) -> Result<Sealed, PartySealError> {
        let model = self.party.model();
        if trained.len() != model.len() {
            return Err(PartySealError::Length {
                expected: model.len(),
                found: trained.len(),
            });
        }
        let update: Vec<f32> = trained.iter().zip(model).map(|(t, m)| t - m).collect();
        self.seal(&update, examples)
    }

    /// Takes round `round`'s published outcome: the sum `bytes` of the updates of `parties`,
    /// or (`strict` secure aggregation, `void`) no sum; with secure aggregation, `next_set`
    /// is the next round's party set (`None`: unchanged).
    pub fn receive(
        &mut self,
        round: u64,
        parties: &[u32],
        bytes: &[u8],
        void: bool,
        next_set: Option<&[u32]>,
    ) -> Result<Received, Box<PublishedError>> {
        let ids = |list: &[u32]| list.iter().copied().map(PartyId).collect::<Vec<_>>();
        let published = Published {
            void,
            next_set: next_set.map(ids),
            ..Published::sum(Round(round), ids(parties), bytes.to_vec().into())
        };
        self.party
            .receive(&published, &mut self.cost)
            .map_err(Box::new)
    }

    /// The model snapshot of this party's state: its round and bytes.
    pub fn snapshot(&self) -> Result<(u64, Vec<u8>), SnapshotError> {
        let (round, bytes) = self.party.snapshot()?;
        Ok((round.0, bytes))
    }

    /// Resyncs from the snapshot `bytes` the server announced as of `round`.
    pub fn resync(&mut self, round: u64, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.party.resync(Round(round), bytes)
    }

    /// The party's checkpoint bytes.
    pub fn state(&self) -> Vec<u8> {
        self.party.state().to_bytes()
    }

    /// Continues from checkpoint bytes of [`PartyMachine::state`] (untrusted: parsed with a
    /// bound of the model's size plus [`STATE_SLACK`], checked against this party's run, id
    /// and model).
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), RestoreError> {
        let model = self.party.federation().snapshot_len() as u64;
        let limit = model * 4 + STATE_SLACK;
        let found = bytes.len() as u64;
        if found > limit {
            return Err(RestoreError::TooLarge { found, limit });
        }
        let state = PartyState::from_bytes(bytes, limit)?;
        Ok(self.party.restore(state)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Arc<SecretKey> {
        Arc::new(KeyFile::from_seed([3; 32]).secret_key().unwrap())
    }

    fn bounds(length: usize, max_parties: u32, max_examples: u64) -> Bounds {
        Bounds {
            length,
            max_parties,
            max_examples,
            frac_bits: 16,
        }
    }

    #[test]
    fn the_server_expects_what_the_envelope_sends() {
        let key = key();
        for b in [bounds(10, 3, 1), bounds(10, 3, 1000), bounds(7, 100, 2621)] {
            let sealer = Sealer::new(key.clone(), b).unwrap();
            let sum = KeylessSum::new(&key.key_id().to_string(), b, RUN, 0, false).unwrap();
            assert_eq!(sealer.expected(), Some(sum.expect));
        }
    }

    /// The run of these tests' sums.
    const RUN: [u8; 32] = [0x42; 32];

    fn upload(round: u64, party: u32) -> Context {
        Context {
            run: RUN,
            round,
            party,
        }
    }

    #[test]
    fn seal_sum_open_gives_the_example_weighted_mean() {
        let key = key();
        let b = bounds(3, 3, 10);
        let sealer = Sealer::new(key.clone(), b).unwrap();
        let mut sum = KeylessSum::new(&key.key_id().to_string(), b, RUN, 5, false).unwrap();
        let a = sealer.seal(&[1.0, 2.0, 3.0], 1, upload(5, 0)).unwrap();
        sum.add(&a.bytes, 0).unwrap();
        let b = sealer.seal(&[5.0, 6.0, -1.0], 3, upload(5, 1)).unwrap();
        sum.add(&b.bytes, 1).unwrap();
        let total = sum.to_bytes().unwrap();
        let mean = sealer.open(&total, &[0, 1], Context::sum(RUN, 5)).unwrap();
        assert_eq!(mean, [4.0, 5.0, 0.0]);
        // The sum names its run and round: opened as another round's, it is refused.
        assert!(matches!(
            sealer.open(&total, &[0, 1], Context::sum(RUN, 6)),
            Err(EnvelopeError::Context { .. })
        ));
    }

    #[test]
    fn refusals_leave_the_sum_unchanged() {
        let key = key();
        let b = bounds(4, 2, 1);
        let sealer = Sealer::new(key.clone(), b).unwrap();
        let mut sum = KeylessSum::new(&key.key_id().to_string(), b, RUN, 0, false).unwrap();
        let good = sealer.seal(&[1.0; 4], 1, upload(0, 0)).unwrap().bytes;
        sum.add(&good, 0).unwrap();
        let before = sum.to_bytes();
        assert!(sum.add(&good[..good.len() - 1], 1).is_err());
        let other = Sealer::new(
            Arc::new(KeyFile::from_seed([4; 32]).secret_key().unwrap()),
            b,
        )
        .unwrap();
        let foreign = other.seal(&[1.0; 4], 1, upload(0, 1)).unwrap().bytes;
        assert!(sum.add(&foreign, 1).is_err());
        // The same upload twice: one encryption cannot count twice.
        assert!(sum.add(&good, 0).is_err());
        // Party 0's upload handed in as party 1's, or one of another round or run: refused
        // by the context its header names.
        assert!(matches!(sum.add(&good, 1), Err(SumError::Context { .. })));
        for context in [
            upload(1, 1),
            Context {
                run: [0; 32],
                ..upload(0, 1)
            },
        ] {
            let stale = sealer.seal(&[1.0; 4], 1, context).unwrap().bytes;
            assert!(matches!(sum.add(&stale, 1), Err(SumError::Context { .. })));
        }
        assert_eq!(sum.to_bytes(), before);
        assert_eq!(sum.count(), 1);
        let second = sealer.seal(&[1.0; 4], 1, upload(0, 1)).unwrap().bytes;
        sum.add(&second, 1).unwrap();
        let third = sealer.seal(&[1.0; 4], 1, upload(0, 2)).unwrap().bytes;
        assert!(matches!(sum.add(&third, 2), Err(SumError::Full { max: 2 })));
    }

    #[test]
    fn seal_refuses_a_wrong_length_or_count() {
        let sealer = Sealer::new(key(), bounds(4, 2, 10)).unwrap();
        assert!(matches!(
            sealer.seal(&[1.0; 5], 1, upload(0, 0)),
            Err(SealError::Envelope(EnvelopeError::Length {
                expected: 4,
                found: 5
            }))
        ));
        for examples in [0, 11, u64::MAX] {
            assert!(matches!(
                sealer.seal(&[1.0; 4], examples, upload(0, 0)),
                Err(SealError::Envelope(EnvelopeError::Encode(_)))
            ));
        }
    }

    #[test]
    fn a_setting_that_does_not_fit_names_settings_that_do() {
        let b = bounds(10, 100, 10_000_000);
        let Err(SetupError::NoFit(no_fit)) = b.sized() else {
            panic!("{b:?} fits");
        };
        let fits = no_fit.fits;
        for (changed, what) in [
            (fits.frac_bits.map(|f| Bounds { frac_bits: f, ..b }), "f"),
            (
                fits.max_examples.map(|m| Bounds {
                    max_examples: m,
                    ..b
                }),
                "m",
            ),
            (
                fits.max_parties.map(|p| Bounds {
                    max_parties: p,
                    ..b
                }),
                "p",
            ),
        ] {
            let changed = changed.unwrap_or_else(|| panic!("no {what} for {b:?}"));
            assert!(changed.fit(), "{changed:?}");
        }
        // Each is the largest: one more does not fit.
        let m = fits.max_examples.unwrap();
        assert!(
            !Bounds {
                max_examples: m + 1,
                ..b
            }
            .fit()
        );
        let p = fits.max_parties.unwrap();
        assert!(
            !Bounds {
                max_parties: p + 1,
                ..b
            }
            .fit()
        );
        let f = fits.frac_bits.unwrap();
        assert!(
            !Bounds {
                frac_bits: f + 1,
                ..b
            }
            .fit()
        );
    }

    #[test]
    fn fingerprints_differ_by_every_setting() {
        let id = key().key_id();
        let b = bounds(10, 3, 100);
        let base = fingerprint(id, b, 1, Some(4), "run", None);
        assert_eq!(base, fingerprint(id, b, 1, Some(4), "run", None));
        let others = [
            fingerprint(KeyId([9; 32]), b, 1, Some(4), "run", None),
            fingerprint(id, Bounds { length: 11, ..b }, 1, Some(4), "run", None),
            fingerprint(
                id,
                Bounds {
                    max_parties: 4,
                    ..b
                },
                1,
                Some(4),
                "run",
                None,
            ),
            fingerprint(
                id,
                Bounds {
                    max_examples: 101,
                    ..b
                },
                1,
                Some(4),
                "run",
                None,
            ),
            fingerprint(id, Bounds { frac_bits: 15, ..b }, 1, Some(4), "run", None),
            fingerprint(id, b, 2, Some(4), "run", None),
            fingerprint(id, b, 1, Some(5), "run", None),
            fingerprint(id, b, 1, None, "run", None),
            fingerprint(id, b, 1, Some(4), "run2", None),
            fingerprint(id, b, 1, Some(4), "run", Some(Fingerprint([0; 32]))),
            fingerprint(id, b, 1, Some(4), "run", Some(Fingerprint([1; 32]))),
        ];
        for other in others {
            assert_ne!(base, other);
        }
    }

    fn flower_party(party: u32, seed: u64) -> PartyMachine {
        let settings = FlowerSettings {
            bounds: bounds(0, 3, 100),
            min_parties: 1,
            snapshot_every: Some(2),
            party,
            label: "test".into(),
            seed: Some(seed),
            secure_agg: None,
        };
        PartyMachine::flower(key(), vec![0.5; 5], &settings, None).unwrap()
    }

    #[test]
    fn flower_parties_apply_the_weighted_mean_and_resync() {
        let mut a = flower_party(0, 1);
        let mut b = flower_party(7, 2);
        let bounds = Bounds {
            length: 5,
            ..bounds(0, 3, 100)
        };
        let run = fingerprint(key().key_id(), bounds, 1, Some(2), "test", None);
        let mut sum = KeylessSum::new(&key().key_id().to_string(), bounds, run, 0, false).unwrap();
        sum.add(&a.seal_model(&[1.5; 5], 1).unwrap().bytes, 0)
            .unwrap();
        let from_b = b.seal_model(&[4.5; 5], 3).unwrap().bytes;
        // Party 7's upload handed in as party 0's: refused by the context in its header.
        assert!(matches!(sum.add(&from_b, 0), Err(SumError::Context { .. })));
        sum.add(&from_b, 7).unwrap();
        let bytes = sum.to_bytes().unwrap();
        for party in [&mut a, &mut b] {
            assert!(matches!(
                party.receive(0, &[0, 7], &bytes, false, None).unwrap(),
                Received::Applied { .. }
            ));
            assert_eq!(party.model(), [3.75; 5]);
        }
        let (round, snapshot) = a.snapshot().unwrap();
        sum.check_snapshot(&snapshot, round, 0).unwrap();
        assert!(sum.check_snapshot(&snapshot, round + 1, 0).is_err());
        assert!(sum.check_snapshot(&snapshot, round, 7).is_err());
        assert!(sum.check_snapshot(&bytes, round, 0).is_err());
        let mut late = flower_party(9, 3);
        late.resync(round, &snapshot).unwrap();
        assert_eq!((late.model(), late.next_round()), (a.model(), 1));
        // A checkpoint restores into a fresh machine, and not into another party's.
        let state = a.state();
        let mut again = flower_party(0, 4);
        again.restore(&state).unwrap();
        assert_eq!((again.model(), again.next_round()), (a.model(), 1));
        assert!(matches!(
            late.restore(&state),
            Err(RestoreError::State(StateError::Party { .. }))
        ));
        let mut huge = state.clone();
        huge.resize(9 << 20, 0);
        assert!(matches!(
            again.restore(&huge),
            Err(RestoreError::TooLarge { .. })
        ));
        assert!(again.restore(&state[..state.len() - 1]).is_err());
    }

    /// Three Flower-style parties of 5 values, with `strict` secure aggregation over a roster
    /// of fixed identities or without, their rounding seeded alike.
    fn three_parties(strict: bool) -> Vec<PartyMachine> {
        let ids: Vec<Arc<Identity>> = (1..=3u8)
            .map(|i| Arc::new(Identity::from_secret_bytes([i; 32])))
            .collect();
        let publics: Vec<String> = ids.iter().map(|id| id.public().to_line()).collect();
        let roster = Arc::new(
            make_roster(&key().key_id().to_string(), &publics, Mode::Strict, None).unwrap(),
        );
        (0..3u32)
            .map(|party| {
                let settings = FlowerSettings {
                    bounds: bounds(0, 3, 100),
                    min_parties: 3,
                    snapshot_every: None,
                    party,
                    label: "strict".into(),
                    seed: Some(u64::from(party) + 10),
                    secure_agg: strict.then_some(Mode::Strict),
                };
                let credentials = strict.then(|| {
                    let mine = Arc::clone(&ids[party as usize]);
                    assert_eq!(party_of(&roster, &mine).unwrap(), party);
                    let fingerprint = roster.fingerprint().to_string();
                    credentials(mine, Arc::clone(&roster), &fingerprint).unwrap()
                });
                PartyMachine::flower(key(), vec![0.25; 5], &settings, credentials.as_ref()).unwrap()
            })
            .collect()
    }

    /// Runs `rounds` rounds of the three parties, each sealing a different update each round;
    /// returns their models.
    fn run_three(mut parties: Vec<PartyMachine>, strict: bool, rounds: u64) -> Vec<Vec<f32>> {
        let b = Bounds {
            length: 5,
            ..bounds(0, 3, 100)
        };
        let run = parties[0].federation().run;
        for round in 0..rounds {
            let mut sum =
                KeylessSum::new(&key().key_id().to_string(), b, run, round, strict).unwrap();
            for (i, party) in (0u32..).zip(parties.iter_mut()) {
                let trained: Vec<f32> = (0..5)
                    .map(|v| 0.25 + (v as f32 - 2.0) * 0.1 * (i + 1) as f32 / (round + 1) as f32)
                    .collect();
                let sealed = party.seal_model(&trained, u64::from(10 * (i + 1))).unwrap();
                sum.add(&sealed.bytes, i).unwrap();
            }
            let bytes = sum.to_bytes().unwrap();
            for party in &mut parties {
                let received = party
                    .receive(round, &[0, 1, 2], &bytes, false, None)
                    .unwrap();
                assert!(matches!(received, Received::Applied { .. }), "{received:?}");
            }
        }
        parties.iter().map(|p| p.model().to_vec()).collect()
    }

    #[test]
    fn strict_parties_end_bit_identical_to_unblinded_ones() {
        let plain = run_three(three_parties(false), false, 3);
        let strict = run_three(three_parties(true), true, 3);
        let bits = |models: &[Vec<f32>]| -> Vec<Vec<u32>> {
            models
                .iter()
                .map(|m| m.iter().map(|v| v.to_bits()).collect())
                .collect()
        };
        assert_eq!(bits(&strict), bits(&plain));
        assert!(plain[0].iter().any(|&v| v != 0.25), "the model moved");
        // A strict sum opened by unblinded parties is refused by its length (the canaries).
        let mut plain_parties = three_parties(false);
        let mut strict_parties = three_parties(true);
        let b = Bounds {
            length: 5,
            ..bounds(0, 3, 100)
        };
        let run = strict_parties[0].federation().run;
        let mut sum = KeylessSum::new(&key().key_id().to_string(), b, run, 0, true).unwrap();
        for (i, party) in (0u32..).zip(strict_parties.iter_mut()) {
            sum.add(&party.seal_model(&[0.5; 5], 1).unwrap().bytes, i)
                .unwrap();
        }
        let bytes = sum.to_bytes().unwrap();
        assert!(
            plain_parties[0]
                .receive(0, &[0, 1, 2], &bytes, false, None)
                .is_err()
        );
    }

    /// What a key holder reads from one party's upload: the fixed-point integers of its
    /// plaintext (values, weight, and with secure aggregation the canaries).
    fn decrypt_lone(bytes: &[u8], len: usize, strict: bool) -> Vec<i64> {
        let b = Bounds {
            length: len,
            ..bounds(0, 3, 100)
        };
        let (encoding, widths) = b.sized().unwrap();
        let expect = b.expected(key().key_id(), strict).unwrap();
        let upload = <CompactVector as Summable>::parse_submission(bytes, &expect).unwrap();
        let words = key().decrypt_compact(upload, &widths, None).unwrap();
        encoding.fixed_point().decode_integers(&words)
    }

    #[test]
    fn a_lone_strict_upload_decrypts_to_noise_an_unblinded_one_to_the_update() {
        const LEN: usize = 2000;
        let update: Vec<f32> = (0..LEN).map(|i| (i as f32 / LEN as f32) - 0.5).collect();
        let scale = f64::from(1u32 << 16);
        let near_update = |ints: &[i64]| {
            ints.iter()
                .zip(&update)
                .filter(|&(&z, &u)| (z as f64 - f64::from(u) * scale).abs() <= 1.0)
                .count()
        };
        for strict in [false, true] {
            let mut party = {
                let ids: Vec<Arc<Identity>> = (1..=3u8)
                    .map(|i| Arc::new(Identity::from_secret_bytes([i; 32])))
                    .collect();
                let publics: Vec<String> = ids.iter().map(|id| id.public().to_line()).collect();
                let roster = Arc::new(
                    make_roster(&key().key_id().to_string(), &publics, Mode::Strict, None).unwrap(),
                );
                let fingerprint = roster.fingerprint().to_string();
                let credentials = credentials(Arc::clone(&ids[0]), roster, &fingerprint).unwrap();
                let settings = FlowerSettings {
                    bounds: bounds(0, 3, 100),
                    min_parties: 3,
                    snapshot_every: None,
                    party: 0,
                    label: "lone".into(),
                    seed: Some(1),
                    secure_agg: strict.then_some(Mode::Strict),
                };
                PartyMachine::flower(
                    key(),
                    vec![0.0; LEN],
                    &settings,
                    strict.then_some(&credentials),
                )
                .unwrap()
            };
            let sealed = party.seal(&update, 1).unwrap();
            let ints = decrypt_lone(&sealed.bytes, LEN, strict);
            if strict {
                // Blinded: about LEN * 3 / 2^t values land within 1 of the update by chance.
                assert!(
                    near_update(&ints[..LEN]) <= 2,
                    "{}",
                    near_update(&ints[..LEN])
                );
                assert_ne!(ints[LEN], 1, "the weight is blinded too");
            } else {
                // The negative control: without blinds, the key opens the update.
                assert_eq!(near_update(&ints[..LEN]), LEN);
                assert_eq!(ints[LEN], 1);
            }
        }
    }
}
