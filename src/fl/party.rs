//! A party's side of the round protocol as a state machine without I/O: the twin of
//! [`Server`](super::Server).
//!
//! [`Party`] holds what every party of a federation holds identically (the global model, and
//! with FedSGD the optimizer that applies the mean gradient to it), the round it is on, and
//! its envelope. It takes typed inputs and returns typed outputs; it never waits, sends or
//! reads a file:
//!
//! | input | output |
//! |---|---|
//! | [`Party::seal`]: this party's update for the round it is on | the bytes to upload ([`Sealed`]), with the count of clipped values |
//! | [`Party::receive`]: round r's published outcome (its sum and who is in it; with strict secure aggregation, or void, and the next round's party set) | [`Received::Applied`] (the model stepped), [`Received::Skipped`] (no valid updates add up to it: every party skips it alike; report it), [`Received::Void`] (no sum: nobody steps), or [`Received::Stale`] (applied before) |
//! | [`Party::is_member`] | whether this party is in its next round's party set (strict secure aggregation: if not, it asks to rejoin instead of sealing) |
//! | [`Party::left_out`]: round r closed without this party's update | nothing: its sum is still applied |
//! | [`Party::snapshot_due`] / [`Party::snapshot`] | a sealed model snapshot to upload |
//! | [`Party::resync`]: a model snapshot | the model and round it holds, when the sums since are gone |
//! | [`Party::state`] / [`Party::restore`] | a checkpoint and back |
//!
//! Sums are applied in order, each once: a sum for a later round than the next is refused
//! ([`PublishedError::Gap`]), one for an earlier round changes nothing. That is catch-up:
//! a party that missed rounds applies their sums in order, and one further behind than the
//! sums a server keeps resyncs from the latest snapshot and applies the sums after it.
//!
//! Two drivers run this machine and nothing else decides a round: [`run_party`](super::run_party)
//! over an [`Uplink`](super::Uplink) (the CLI's `hefl join`, and every in-process run), and
//! the Python binding's `hefl.Party`, which `hefl.flower` drives from Flower messages.
//!
//! # Model snapshots
//!
//! A snapshot is the party's global state (the model's f32 bits, and the FedSGD optimizer's
//! moments and step count) as 32-bit integers, one per plaintext slot, sealed as the plan's
//! privacy mode seals an update: encrypted under the shared key in `he` (the server keeps the
//! latest and sees only ciphertext, as for updates), in the clear in `plain` and `dp` (where
//! updates travel in the clear too). The integers are exact, so a resynced model is
//! bit-identical to the others'. A snapshot names, inside what is sealed, the run's
//! fingerprint and the round it is of; a party resyncs only from one that decrypts under its
//! key to this run's fingerprint, the round the server announced, and a state of this
//! model's shape. Like an update, a snapshot can be poisoned by a malicious key holder: a
//! party that resyncs from a snapshot trusts its uploader as every party trusts every
//! update's sender (see the threat model).

use super::config::Privacy;
use super::encoding::{DecodeError, Encoding};
use super::envelope::{Envelope, EnvelopeCost, EnvelopeError, Sealed};
use super::payload::{PayloadError, PlainShape, PlainSum, Summable};
use super::seeds::RngState;
use super::server::{PartyId, Published, Round};
pub use super::strategy::Step;
use crate::he::Context;
use crate::he::keys::{KeyId, SecretKey};
use crate::he::{
    CompactVector, DownloadForm, Expected, HeError, HeadroomError, PreparedEncryption, Widths,
};
use crate::model::{LrSchedule, Optimizer, OptimizerKind, OptimizerState};
use crate::secagg::{Attempt, Blinder, PartySet, RobustCheckpoint, RobustParty};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What every party of a federation holds identically: the model, and the optimizer that
/// applies mean gradients to it.
#[derive(Clone, Debug)]
pub struct GlobalModel {
    params: Vec<f32>,
    optimizer: Option<Optimizer>,
}

impl GlobalModel {
    /// `params` moved as `step` says.
    ///
    /// ```
    /// use hefl::fl::{GlobalModel, Step};
    ///
    /// let mut model = GlobalModel::new(vec![1.0, 2.0], Step::Delta);
    /// model.apply(&[0.5, -1.0]);
    /// assert_eq!(model.params(), [1.5, 1.0]);
    /// ```
    pub fn new(params: Vec<f32>, step: Step) -> Self {
        let optimizer = match step {
            Step::Gradient { optimizer, lr } => Some(Optimizer::new(optimizer, lr, params.len())),
            Step::Delta => None,
        };
        Self { params, optimizer }
    }

    /// This model with its FedSGD optimizer's learning rate following `schedule` over
    /// `total_steps` steps (one per round); nothing changes for deltas.
    pub fn with_schedule(mut self, schedule: LrSchedule, total_steps: u64) -> Self {
        self.optimizer = self
            .optimizer
            .map(|optimizer| optimizer.with_schedule(schedule, total_steps));
        self
    }

    /// The parameters.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// Moves the model by one round's mean update.
    ///
    /// Panics if `mean` does not have the model's length: means are decoded by this crate
    /// from updates of that length.
    pub fn apply(&mut self, mean: &[f32]) {
        assert_eq!(mean.len(), self.params.len(), "mean update length");
        match &mut self.optimizer {
            Some(optimizer) => optimizer.step(&mut self.params, mean),
            None => {
                for (p, d) in self.params.iter_mut().zip(mean) {
                    *p += d;
                }
            }
        }
    }

    /// The optimizer's state (FedSGD).
    fn optimizer_state(&self) -> Option<OptimizerState> {
        self.optimizer.as_ref().map(Optimizer::state)
    }

    /// Replaces parameters and optimizer state, checking their shapes.
    fn set(
        &mut self,
        params: Vec<f32>,
        optimizer: Option<OptimizerState>,
    ) -> Result<(), StateError> {
        if params.len() != self.params.len() {
            return Err(StateError::Length {
                what: "parameters",
                found: params.len(),
                expected: self.params.len(),
            });
        }
        match (&mut self.optimizer, optimizer) {
            (Some(opt), Some(state)) => opt.restore(state)?,
            (None, None) => {}
            (mine, _) => {
                return Err(StateError::Optimizer {
                    expected: mine.is_some(),
                });
            }
        }
        self.params = params;
        Ok(())
    }
}

/// What a party knows of its federation: who it is, the encoding and privacy of updates, how
/// the mean moves the model, and what every published sum must satisfy.
#[derive(Clone, Debug, PartialEq)]
pub struct Federation {
    /// This party.
    pub party: PartyId,
    /// The most parties a sum may hold.
    pub parties: u32,
    /// Party ids are below this (hefl's federations: `parties`; Flower's: any id).
    pub id_limit: u32,
    /// The fewest parties a published sum may hold.
    pub min_parties: u32,
    /// Values per update (the model's parameters).
    pub length: usize,
    /// How updates are encoded.
    pub encoding: Encoding,
    /// What the server sees of an update.
    pub privacy: Privacy,
    /// In `he`: the public id of the shared key, and how sums come back.
    pub he: Option<(KeyId, DownloadForm)>,
    /// How the mean moves the model.
    pub step: Step,
    /// Rounds between model snapshots (`None`: no snapshots).
    pub snapshot_every: Option<u64>,
    /// The run's fingerprint: checkpoints and snapshots of another run are refused.
    pub run: [u8; 32],
}

impl Federation {
    /// The compact widths of updates in `he` mode.
    pub fn widths(&self) -> Result<Option<Widths>, HeadroomError> {
        self.he
            .map(|(_, form)| Widths::new(self.encoding.total_bits(), self.parties, form))
            .transpose()
    }

    /// Slots of a model snapshot: a 12-word header (magic, version, round, run fingerprint),
    /// the parameters, the optimizer's step count and moments.
    pub fn snapshot_len(&self) -> usize {
        let moments = match self.step {
            Step::Gradient {
                optimizer: OptimizerKind::Adam,
                ..
            } => 2,
            Step::Gradient {
                optimizer: OptimizerKind::Momentum,
                ..
            } => 1,
            Step::Gradient {
                optimizer: OptimizerKind::Sgd,
                ..
            }
            | Step::Delta => 0,
        };
        SNAPSHOT_HEADER + 1 + self.length * (1 + moments)
    }

    /// What a server checks this federation's model snapshots against in the clear modes:
    /// [`Federation::snapshot_len`] words of 32 bits (one f32 or header word each).
    pub fn snapshot_expected_plain(&self) -> PlainShape {
        PlainShape {
            len: self.snapshot_len(),
            bits: SNAPSHOT_BITS,
        }
    }

    /// What a server checks this federation's `he` model snapshots against (`None` in the
    /// clear modes, where a snapshot is [`PlainSum`] words of
    /// [`Federation::snapshot_expected_plain`]).
    pub fn snapshot_expected_he(&self) -> Result<Option<Expected>, HeadroomError> {
        let Some((key_id, _)) = self.he else {
            return Ok(None);
        };
        Ok(Some(Expected {
            key_id,
            plaintext_len: self.snapshot_len(),
            widths: snapshot_widths()?,
        }))
    }
}

/// A snapshot's 32-bit integers ride in 32-bit slots of one party's plaintexts.
fn snapshot_widths() -> Result<Widths, HeadroomError> {
    Widths::new(SNAPSHOT_BITS, 1, DownloadForm::Seeds)
}

/// Bits per snapshot slot: one f32, or one u32 of the header.
const SNAPSHOT_BITS: u32 = 32;
/// "HFLS".
const SNAPSHOT_MAGIC: u32 = u32::from_be_bytes(*b"HFLS");
const SNAPSHOT_VERSION: u32 = 1;
/// Magic, version, round (2 words), run fingerprint (8 words).
const SNAPSHOT_HEADER: usize = 12;

/// The outcome of [`Party::receive`].
#[derive(Debug)]
pub enum Received {
    /// The round's mean update was applied.
    Applied {
        /// The round.
        round: Round,
    },
    /// The round's sum cannot be a sum of valid updates (some party in it sent garbage): the
    /// model stays where it was, as on every other party; report it (the server logs it).
    Skipped {
        /// The round.
        round: Round,
        /// Why the sum is not one of valid updates.
        reason: DecodeError,
    },
    /// Strict secure aggregation: the round is void (a member of its party set missed the
    /// deadline, or the server restarted): no step, this party's update for it is dropped.
    Void {
        /// The round.
        round: Round,
    },
    /// The round was applied (or skipped) before: nothing changed.
    Stale {
        /// The round.
        round: Round,
    },
}

/// A published sum a party refuses: the server broke the protocol, or this party lost its
/// place. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum PublishedError {
    /// A sum for a later round than the next to apply: a sum in between is missing.
    #[error(
        "the sum of {found} came before that of {expected}: sums are applied in order, each once"
    )]
    Gap {
        /// The next round to apply.
        expected: Round,
        /// The round of the sum given.
        found: Round,
    },
    /// A party list that is empty, unsorted, repeated or names a party not in the federation.
    #[error(
        "{round} names parties {parties:?}: expected distinct ids below {limit} in ascending order"
    )]
    Parties {
        /// The round.
        round: Round,
        /// The list, as given.
        parties: Vec<u32>,
        /// Ids are below this.
        limit: u32,
    },
    /// Fewer parties than the rules allow in a sum.
    #[error("{round} sums {found} updates, fewer than the {min} the rules require")]
    TooFew {
        /// The round.
        round: Round,
        /// Parties in the sum.
        found: usize,
        /// The rules' minimum.
        min: u32,
    },
    /// Strict secure aggregation: the next round's party set announced with this round is
    /// refused (a party outside the roster, fewer than its minimum).
    #[error("the party set announced with {round}: {source}")]
    NextSet {
        /// The round it came with.
        round: Round,
        /// Why it is refused.
        source: crate::secagg::SecAggError,
    },
    /// A void round in a run without strict secure aggregation (whose rounds are never void).
    #[error(
        "{round} is announced void, but this run has no secure aggregation: its rounds are never void"
    )]
    UnexpectedVoid {
        /// The round.
        round: Round,
    },
    /// The sum does not parse or decrypt as this federation's (wrong key id, length, format).
    #[error("{round}: {source}")]
    Open {
        /// The round.
        round: Round,
        /// What failed.
        source: EnvelopeError,
    },
}

/// Why a checkpoint's or a snapshot's state does not fit this party.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Not a hefl party state.
    #[error("not a hefl party state: {0}")]
    Decode(#[from] bincode::Error),
    /// A party state of another format version.
    #[error("party state format {found}, this hefl reads {expected}")]
    Version {
        /// The format this build reads.
        expected: u32,
        /// The state's.
        found: u32,
    },
    /// Another run's (another plan or federation).
    #[error("it belongs to another run (fingerprint {found}, this run's is {expected})")]
    Run {
        /// This run's fingerprint, first 8 bytes in hex.
        expected: String,
        /// The state's.
        found: String,
    },
    /// Another party's.
    #[error("it is {found}'s, expected {expected}'s")]
    Party {
        /// This party.
        expected: PartyId,
        /// The state's.
        found: PartyId,
    },
    /// Parameters or moments of another length.
    #[error("{found} {what}, expected {expected}")]
    Length {
        /// What has the wrong length.
        what: &'static str,
        /// Its length.
        found: usize,
        /// This model's.
        expected: usize,
    },
    /// An optimizer state where the federation steps by deltas, or none where it needs one.
    #[error("{}", if *expected { "no optimizer state where the run steps by gradients" } else { "an optimizer state where the run steps by deltas" })]
    Optimizer {
        /// Whether one was expected.
        expected: bool,
    },
    /// The optimizer refused its state.
    #[error(transparent)]
    Moments(#[from] crate::model::OptimizerStateError),
    /// A party set this roster refuses.
    #[error("its party set: {0}")]
    Sets(String),
    /// Robust secure aggregation's part does not restore.
    #[error("its robust secure aggregation state: {0}")]
    Robust(String),
}

/// Why a model snapshot could not be made or resynced from.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes do not parse or decrypt as a snapshot of this federation.
    #[error("the snapshot does not open: {0}")]
    Open(#[from] PayloadError),
    /// Decryption or encryption failed.
    #[error(transparent)]
    He(#[from] HeError),
    /// The widths of snapshots do not fit (a constant: a bug).
    #[error(transparent)]
    Widths(#[from] HeadroomError),
    /// The header is not a snapshot's (a key other than this run's decrypts to noise).
    #[error("not a hefl model snapshot: {0}")]
    Header(&'static str),
    /// Another run's snapshot.
    #[error("a snapshot of another run")]
    Run,
    /// A snapshot of another round than the server announced.
    #[error("a snapshot of {found}, announced as {announced}")]
    Round {
        /// What the server said.
        announced: Round,
        /// What the snapshot holds.
        found: Round,
    },
    /// A snapshot older than this party's state: resyncing would go back.
    #[error("a snapshot of {found}, but this party is on {current} already")]
    Behind {
        /// This party's next round.
        current: Round,
        /// The snapshot's.
        found: Round,
    },
    /// Its state does not fit the model.
    #[error(transparent)]
    State(#[from] StateError),
    /// A plan without snapshots.
    #[error("this run takes no model snapshots")]
    Disabled,
}

/// Why a party could not seal its update.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// An update for another round than the one the party is on.
    #[error("an update for {found}, but this party is on {expected}")]
    Round {
        /// The party's round.
        expected: Round,
        /// The round named.
        found: Round,
    },
    /// The envelope refused it.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

/// A party's checkpointed state ([`Party::state`]): what it holds beyond the federation's
/// description.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartyState {
    format: u32,
    run: [u8; 32],
    party: u32,
    next_round: u64,
    params: Vec<f32>,
    optimizer: Option<OptimizerState>,
    skipped: Vec<u64>,
    rounding: RngState,
    /// Secure aggregation: the last round sealed, and its bytes until its sum came.
    sealed: Option<SealedRecord>,
    /// Secure aggregation: the party set of the next round (`None`: not known).
    set: Option<Vec<u32>>,
    /// Secure aggregation: the rounds that were void.
    voided: Vec<u64>,
    /// Robust secure aggregation: the secrets and shares of the rounds not yet published
    /// or void (the checkpoint file is private; see [`RobustCheckpoint`]).
    robust: Option<RobustCheckpoint>,
}

/// The last update a blinded party sealed: the (round, attempt) it never seals again, and
/// the bytes it resends verbatim (after a restart) while the round is open. Kept in the
/// checkpoint, which the driver writes before sending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SealedRecord {
    round: u64,
    attempt: u32,
    /// The sealed upload; emptied once the round's sum came (or the round was given up).
    bytes: Vec<u8>,
}

/// The format of [`PartyState`] (4: with the party set and the void rounds of secure
/// aggregation; 5: with robust secure aggregation's round secrets).
const STATE_FORMAT: u32 = 5;

impl PartyState {
    /// The next round to run.
    pub fn next_round(&self) -> Round {
        Round(self.next_round)
    }

    /// The bytes of this state (bincode, fixed-width integers).
    pub fn to_bytes(&self) -> Vec<u8> {
        use bincode::Options;
        // A struct of numbers and vectors always serializes.
        bincode::options()
            .with_fixint_encoding()
            .serialize(self)
            .unwrap_or_default()
    }

    /// Parses [`PartyState::to_bytes`] (untrusted: at most `limit` bytes are allocated).
    pub fn from_bytes(bytes: &[u8], limit: u64) -> Result<Self, StateError> {
        use bincode::Options;
        let state: Self = bincode::options()
            .with_limit(limit)
            .with_fixint_encoding()
            .deserialize(bytes)?;
        if state.format != STATE_FORMAT {
            return Err(StateError::Version {
                expected: STATE_FORMAT,
                found: state.format,
            });
        }
        Ok(state)
    }
}

/// One party's side of a federation (see the [module docs](self)).
///
/// ```
/// use hefl::fl::{Encoding, Federation, Party, PartyId, Privacy, Received, Round, Step, Weighting};
/// use hefl::fl::{PlainSum, Summable};
/// use rand::SeedableRng;
///
/// let federation = Federation {
///     party: PartyId(0),
///     parties: 2,
///     id_limit: 2,
///     min_parties: 2,
///     length: 2,
///     encoding: Encoding::new(8.0, 16, 2, Weighting::Fraction { nominal: 1 })?,
///     privacy: Privacy::Plain,
///     he: None,
///     step: Step::Delta,
///     snapshot_every: None,
///     run: [0; 32],
/// };
/// let federation_run = federation.run;
/// let rng = || rand_chacha::ChaCha20Rng::seed_from_u64(1);
/// let mut me = Party::new(federation.clone(), vec![0.0, 0.0], None, rng())?;
/// let mut other = Party::new(Federation { party: PartyId(1), ..federation }, vec![0.0, 0.0], None, rng())?;
/// let mut cost = Default::default();
/// let a = me.seal(Round(0), &[1.0, 2.0], 1, None, &mut cost)?;
/// let b = other.seal(Round(0), &[3.0, 4.0], 1, None, &mut cost)?;
/// // The server's sum:
/// let shape = me.envelope().expected_plain(); // 2 values and the weight, packed
/// let mut sum = PlainSum::parse_submission(&a.bytes, &shape)?;
/// sum.add_submission(&b.bytes, &shape)?;
/// sum.set_context(hefl::he::Context::sum(federation_run, 0)); // the server stamps its sums
/// let published = hefl::fl::Published::sum(Round(0), vec![PartyId(0), PartyId(1)], sum.to_bytes().into());
/// let got = me.receive(&published, &mut cost)?;
/// assert!(matches!(got, Received::Applied { round: Round(0) }));
/// assert_eq!(me.model(), [2.0, 3.0]);
/// assert_eq!(me.next_round(), Round(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Party {
    federation: Federation,
    envelope: Envelope,
    key: Option<Arc<SecretKey>>,
    model: GlobalModel,
    next_round: Round,
    skipped: Vec<u64>,
    voided: Vec<u64>,
    rounding: ChaCha20Rng,
    sealed: Option<SealedRecord>,
}

/// Why a party could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `he` without the shared key.
    #[error("privacy he needs the shared key")]
    MissingKey,
    /// The key is not the one the federation names.
    #[error("key id mismatch: the federation expects {expected}, this key is {found}")]
    KeyMismatch {
        /// The federation's.
        expected: KeyId,
        /// This key's.
        found: KeyId,
    },
    /// An initial model of another length than updates.
    #[error("an initial model of {found} values, expected {expected}")]
    Length {
        /// The federation's update length.
        expected: usize,
        /// The model's.
        found: usize,
    },
    /// The widths of the federation's ciphertexts do not fit.
    #[error(transparent)]
    Headroom(#[from] HeadroomError),
    /// Secure aggregation without `he`.
    #[error("secure aggregation needs privacy he (the blinds live in the encrypted plaintext)")]
    SecureAggNeedsHe,
    /// A blinder made for another party.
    #[error("a secure-aggregation blinder for {found}, this party is {expected}")]
    BlinderParty {
        /// This party.
        expected: PartyId,
        /// The blinder's.
        found: PartyId,
    },
    /// Rules that cannot hold: a minimum above the most parties, no parties, ids below the
    /// party count.
    #[error(
        "a federation of at most {parties} parties per sum with a minimum of {min_parties} and ids below {id_limit}"
    )]
    Rules {
        /// Most parties per sum.
        parties: u32,
        /// Fewest parties per sum.
        min_parties: u32,
        /// Party ids are below this.
        id_limit: u32,
    },
}

impl Party {
    /// Party `federation.party` at round 0 with the global model `initial`, rounding its
    /// updates with `rounding` (a seeded generator makes runs reproducible: the rounding
    /// bits protect nothing, the values are sealed afterwards). `key` is the shared key in
    /// `he` (refused if it is not the one the federation names).
    pub fn new(
        federation: Federation,
        initial: Vec<f32>,
        key: Option<Arc<SecretKey>>,
        rounding: ChaCha20Rng,
    ) -> Result<Self, SetupError> {
        if initial.len() != federation.length {
            return Err(SetupError::Length {
                expected: federation.length,
                found: initial.len(),
            });
        }
        if federation.parties == 0
            || federation.min_parties == 0
            || federation.min_parties > federation.parties
            || federation.id_limit < federation.parties
        {
            return Err(SetupError::Rules {
                parties: federation.parties,
                min_parties: federation.min_parties,
                id_limit: federation.id_limit,
            });
        }
        let envelope = match (federation.he, &key) {
            (None, _) => Envelope::plain(federation.encoding, federation.length),
            (Some(_), None) => return Err(SetupError::MissingKey),
            (Some((expected, _)), Some(key)) => {
                if key.key_id() != expected {
                    return Err(SetupError::KeyMismatch {
                        expected,
                        found: key.key_id(),
                    });
                }
                let widths = federation.widths()?.ok_or(SetupError::MissingKey)?;
                Envelope::he(
                    federation.encoding,
                    Arc::clone(key),
                    federation.length,
                    widths,
                )
            }
        };
        Ok(Self {
            model: GlobalModel::new(initial, federation.step),
            federation,
            envelope,
            key,
            next_round: Round(0),
            skipped: Vec::new(),
            voided: Vec::new(),
            rounding,
            sealed: None,
        })
    }

    /// This party with its FedSGD optimizer's learning rate following `schedule` over
    /// `total_rounds` rounds (one optimizer step per round; see
    /// [`GlobalModel::with_schedule`]); nothing changes for deltas.
    pub fn with_lr_schedule(mut self, schedule: LrSchedule, total_rounds: u64) -> Self {
        self.model = self.model.with_schedule(schedule, total_rounds);
        self
    }

    /// This party with `strict` secure aggregation (see [`crate::secagg`]): its updates are
    /// blinded for the party set of every party of the federation and carry canaries, and it
    /// accepts only sums of that whole set whose canaries hold (any other is skipped, as every
    /// honest party skips it). Refuses a blinder of another party and a federation without
    /// `he`.
    pub fn with_secure_agg(mut self, blinder: Blinder) -> Result<Self, SetupError> {
        if self.federation.he.is_none() {
            return Err(SetupError::SecureAggNeedsHe);
        }
        if blinder.party() != self.id() {
            return Err(SetupError::BlinderParty {
                expected: self.id(),
                found: blinder.party(),
            });
        }
        let set = PartySet::new((0..self.federation.parties).map(PartyId));
        self.envelope = self.envelope.with_secure_agg(blinder, set);
        Ok(self)
    }

    /// This party with `robust` secure aggregation (see [`crate::secagg::RobustParty`]): its
    /// updates carry canaries, its self-blind and the pair blinds of each round's graph, for
    /// the round's set (every party in round 0, then the set announced with each outcome),
    /// once the driver has exchanged the round's keys and shares through
    /// [`Envelope::robust`]; it accepts only sums over the parties it answered the unmask
    /// step for, whose canaries hold. Refuses a robust party of another id and a federation
    /// without `he`.
    pub fn with_robust(mut self, robust: RobustParty) -> Result<Self, SetupError> {
        if self.federation.he.is_none() {
            return Err(SetupError::SecureAggNeedsHe);
        }
        if robust.party() != self.id() {
            return Err(SetupError::BlinderParty {
                expected: self.id(),
                found: robust.party(),
            });
        }
        let set = PartySet::new((0..self.federation.parties).map(PartyId));
        self.envelope = self.envelope.with_robust(robust, set);
        Ok(self)
    }

    /// The federation.
    pub fn federation(&self) -> &Federation {
        &self.federation
    }

    /// This party.
    pub fn id(&self) -> PartyId {
        self.federation.party
    }

    /// The envelope (to prepare encryptions ahead of [`Party::seal`]).
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The global model's parameters.
    pub fn model(&self) -> &[f32] {
        self.model.params()
    }

    /// The next round whose sum this party will apply (the round it is on).
    pub fn next_round(&self) -> Round {
        self.next_round
    }

    /// Rounds skipped so far (their sums were not sums of valid updates).
    pub fn skipped(&self) -> &[u64] {
        &self.skipped
    }

    /// Strict secure aggregation: rounds that were void so far.
    pub fn voided(&self) -> &[u64] {
        &self.voided
    }

    /// Whether this party is in the party set of its next round: always without secure
    /// aggregation; with it, only if the set announced with the round before holds it (a
    /// party left out after missing a deadline, or that resynced, asks to rejoin).
    pub fn is_member(&self) -> bool {
        !self.envelope.is_blinded()
            || self
                .envelope
                .party_set()
                .is_some_and(|set| set.contains(self.id()))
    }

    /// Seals this party's update for `round` (the round it is on), computed from `samples`
    /// samples (the weight; see [`Weighting`](super::Weighting)), into `prepared` (an encryption of zero made
    /// ahead of time) or one made now.
    pub fn seal(
        &mut self,
        round: Round,
        update: &[f32],
        samples: u64,
        prepared: Option<PreparedEncryption>,
        cost: &mut EnvelopeCost,
    ) -> Result<Sealed, SealError> {
        self.check_sealing(round)?;
        if let Some(record) = self.sealed.as_ref().filter(|r| r.round == round.0)
            && !record.bytes.is_empty()
        {
            // Sealed before a restart and still unanswered: the same bytes again, never a
            // second blind on another update.
            return Ok(Sealed {
                bytes: record.bytes.clone(),
                clipped: 0,
            });
        }
        let context = self.context(round);
        let sealed =
            self.envelope
                .seal(update, samples, context, prepared, &mut self.rounding, cost)?;
        self.record_sealed(round, &sealed);
        Ok(sealed)
    }

    /// Keeps a blinded upload for the checkpoint (see [`SealedRecord`]).
    fn record_sealed(&mut self, round: Round, sealed: &Sealed) {
        if self.envelope.is_blinded() {
            self.sealed = Some(SealedRecord {
                round: round.0,
                attempt: 0,
                bytes: sealed.bytes.clone(),
            });
        }
    }

    /// The bytes of this party's blinded upload for `round` when it sealed one and the round
    /// has not been answered: what a restarted party resends (`None` without secure
    /// aggregation).
    pub fn sealed_upload(&self, round: Round) -> Option<&[u8]> {
        self.sealed
            .as_ref()
            .filter(|r| r.round == round.0 && !r.bytes.is_empty())
            .map(|r| r.bytes.as_slice())
    }

    /// This party's update for `round` sealed again, the same plaintext in a fresh encryption:
    /// for a submission refused because its seed was already in the sum (someone submitted a
    /// copy of it first), which is not this party's fault.
    pub fn reseal(
        &mut self,
        round: Round,
        prepared: Option<PreparedEncryption>,
        cost: &mut EnvelopeCost,
    ) -> Result<Sealed, SealError> {
        self.check_sealing(round)?;
        let sealed = self.envelope.reseal(prepared, cost)?;
        self.record_sealed(round, &sealed);
        Ok(sealed)
    }

    /// Refuses to seal for another round than the one this party is on.
    fn check_sealing(&self, round: Round) -> Result<(), SealError> {
        if round != self.next_round {
            return Err(SealError::Round {
                expected: self.next_round,
                found: round,
            });
        }
        Ok(())
    }

    /// This party's messages' context for `round`.
    fn context(&self, round: Round) -> Context {
        Context {
            run: self.federation.run,
            round: round.0,
            party: self.id().0,
        }
    }

    /// Notes that `round` closed without this party's update (it was late). Its sum is still
    /// applied when it comes, as every party applies it.
    pub fn left_out(&mut self, _round: Round) {}

    /// Takes a round's published outcome: its sum of the updates of its parties, or (strict
    /// secure aggregation) a void round, with the next round's party set (see [`Received`]).
    /// A sum that does not parse, names parties this federation cannot have, holds fewer
    /// than the minimum, or comes out of order, and a next set the roster refuses, are
    /// refused ([`PublishedError`]) and change nothing.
    pub fn receive(
        &mut self,
        published: &Published,
        cost: &mut EnvelopeCost,
    ) -> Result<Received, PublishedError> {
        let Published {
            round,
            parties,
            bytes,
            void,
            next_set,
        } = published;
        let round = *round;
        if round < self.next_round {
            return Ok(Received::Stale { round });
        }
        if round > self.next_round {
            return Err(PublishedError::Gap {
                expected: self.next_round,
                found: round,
            });
        }
        let next_set = match next_set {
            Some(ids) if self.envelope.is_blinded() => {
                let set = PartySet::new(ids.iter().copied());
                self.envelope
                    .check_announced(Round(round.0 + 1), &set)
                    .map_err(|source| PublishedError::NextSet { round, source })?;
                Some(set)
            }
            _ => None,
        };
        if *void {
            if !self.envelope.is_blinded() {
                return Err(PublishedError::UnexpectedVoid { round });
            }
            self.voided.push(round.0);
            self.finish_round(round, next_set);
            return Ok(Received::Void { round });
        }
        let limit = self.federation.id_limit;
        let ordered = parties.windows(2).all(|w| w[0] < w[1]);
        if parties.is_empty() || !ordered || parties.iter().any(|p| p.0 >= limit) {
            return Err(PublishedError::Parties {
                round,
                parties: parties.iter().map(|p| p.0).collect(),
                limit,
            });
        }
        if parties.len() < self.federation.min_parties as usize {
            return Err(PublishedError::TooFew {
                round,
                found: parties.len(),
                min: self.federation.min_parties,
            });
        }
        let expected = Context::sum(self.federation.run, round.0);
        let received = match self.envelope.open(bytes, parties, expected, cost) {
            Ok(mean) => {
                self.model.apply(&mean);
                Received::Applied { round }
            }
            Err(EnvelopeError::Decode(reason)) => {
                self.skipped.push(round.0);
                Received::Skipped { round, reason }
            }
            Err(source) => return Err(PublishedError::Open { round, source }),
        };
        self.finish_round(round, next_set);
        Ok(received)
    }

    /// Moves past `round`: its sealed bytes are no longer resent, and (secure aggregation)
    /// the next round's set is `next_set` when one was announced.
    fn finish_round(&mut self, round: Round, next_set: Option<PartySet>) {
        self.next_round = Round(round.0 + 1);
        if let Some(record) = self.sealed.as_mut().filter(|r| r.round <= round.0) {
            record.bytes = Vec::new();
        }
        if next_set.is_some() {
            self.envelope.set_party_set(next_set);
        }
        // Robust: the round is published, void or skipped; its secrets are needed no more.
        self.envelope.robust(|robust| robust.forget_through(round));
    }

    /// The round of a snapshot this party should upload now, if any: when the rounds
    /// applied reach a multiple of the plan's `snapshot_every`, the lowest party of the last
    /// sum uploads (every party can tell who that is; the others do not).
    pub fn snapshot_due(&self, last_parties: &[PartyId]) -> Option<Round> {
        let every = self.federation.snapshot_every?;
        let round = self.next_round;
        (round.0 > 0 && round.0.is_multiple_of(every) && last_parties.first() == Some(&self.id()))
            .then_some(round)
    }

    /// The model snapshot of this party's state (before its next round): sealed as the
    /// federation's updates are (see the [module docs](self)).
    pub fn snapshot(&self) -> Result<(Round, Vec<u8>), SnapshotError> {
        if self.federation.snapshot_every.is_none() {
            return Err(SnapshotError::Disabled);
        }
        let words = self.snapshot_words();
        let context = self.context(self.next_round);
        let bytes = match (&self.key, self.federation.snapshot_expected_he()?) {
            (Some(key), Some(expect)) => {
                let mut sealed = key.prepare(words.len())?.seal(&words, &expect.widths)?;
                sealed.set_context(context);
                sealed.to_bytes()
            }
            _ => PlainSum::sealed(words, SNAPSHOT_BITS, context).to_bytes(),
        };
        Ok((self.next_round, bytes))
    }

    fn snapshot_words(&self) -> Vec<u64> {
        let word = |v: u32| u64::from(v) << (64 - SNAPSHOT_BITS);
        let round = self.next_round.0;
        let mut words = Vec::with_capacity(self.federation.snapshot_len());
        words.extend([
            SNAPSHOT_MAGIC,
            SNAPSHOT_VERSION,
            round as u32,
            (round >> 32) as u32,
        ]);
        words.extend(
            self.federation
                .run
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        let mut words: Vec<u64> = words.into_iter().map(word).collect();
        words.extend(self.model.params().iter().map(|v| word(v.to_bits())));
        let state = self.model.optimizer_state();
        let steps = state.as_ref().map_or(0, |s| s.steps.max(0) as u32);
        words.push(word(steps));
        if let Some(state) = &state {
            for moment in [&state.m, &state.v] {
                words.extend(moment.iter().map(|v| word(v.to_bits())));
            }
        }
        words
    }

    /// Resyncs from the model snapshot `bytes`, announced by the server as the snapshot of
    /// `round`: checks it opens under this party's key to this run's fingerprint and
    /// `announced`, and holds a state of this model's shape, then takes its model and round
    /// (the sums from there on are applied as they come). Refuses a snapshot older than this
    /// party's round.
    pub fn resync(&mut self, announced: Round, bytes: &[u8]) -> Result<(), SnapshotError> {
        if self.federation.snapshot_every.is_none() {
            return Err(SnapshotError::Disabled);
        }
        // The header's context, checked after the parse (another key or shape is the more
        // telling refusal) and before decryption.
        let check = |named: Context| {
            if named.run != self.federation.run {
                return Err(SnapshotError::Run);
            }
            if named.round != announced.0 {
                return Err(SnapshotError::Round {
                    announced,
                    found: Round(named.round),
                });
            }
            Ok(())
        };
        let words = match (&self.key, self.federation.snapshot_expected_he()?) {
            (Some(key), Some(expect)) => {
                let sum = CompactVector::parse_aggregate(bytes, &expect, 1)
                    .map_err(PayloadError::from)?;
                check(sum.context())?;
                key.decrypt_compact(sum, &expect.widths, None)?
            }
            _ => {
                let shape = self.federation.snapshot_expected_plain();
                let sum = PlainSum::parse_submission(bytes, &shape)?;
                check(sum.context())?;
                sum.into_words()
            }
        };
        let values: Vec<u32> = words
            .iter()
            .map(|&w| (w.wrapping_add(1 << (63 - SNAPSHOT_BITS)) >> (64 - SNAPSHOT_BITS)) as u32)
            .collect();
        let (header, body) = values.split_at(SNAPSHOT_HEADER.min(values.len()));
        if header.len() < SNAPSHOT_HEADER || header[0] != SNAPSHOT_MAGIC {
            return Err(SnapshotError::Header("its magic is wrong (another key?)"));
        }
        if header[1] != SNAPSHOT_VERSION {
            return Err(SnapshotError::Header("another version"));
        }
        let found = Round(u64::from(header[2]) | (u64::from(header[3]) << 32));
        let run: Vec<u8> = header[4..12].iter().flat_map(|w| w.to_le_bytes()).collect();
        if run != self.federation.run {
            return Err(SnapshotError::Run);
        }
        if found != announced {
            return Err(SnapshotError::Round { announced, found });
        }
        if found < self.next_round {
            return Err(SnapshotError::Behind {
                current: self.next_round,
                found,
            });
        }
        let n = self.federation.length;
        let floats = |s: &[u32]| s.iter().map(|&b| f32::from_bits(b)).collect::<Vec<f32>>();
        let (params, rest) = body.split_at(n.min(body.len()));
        let optimizer = self.model.optimizer_state().map(|mine| {
            let steps = rest.first().copied().unwrap_or(0);
            let m_len = mine.m.len();
            let moments = rest.get(1..).unwrap_or(&[]);
            OptimizerState {
                m: floats(&moments[..m_len.min(moments.len())]),
                v: floats(moments.get(m_len..).unwrap_or(&[])),
                steps: i32::try_from(steps).unwrap_or(-1),
            }
        });
        self.model.set(floats(params), optimizer)?;
        self.next_round = found;
        // The snapshot does not say who is in the next round's set: the party asks to rejoin.
        self.envelope.set_party_set(None);
        Ok(())
    }

    /// The checkpoint of this party: model, optimizer, round, skipped rounds, and the
    /// rounding generator's position.
    pub fn state(&self) -> PartyState {
        PartyState {
            format: STATE_FORMAT,
            run: self.federation.run,
            party: self.id().0,
            next_round: self.next_round.0,
            params: self.model.params().to_vec(),
            optimizer: self.model.optimizer_state(),
            skipped: self.skipped.clone(),
            rounding: RngState::of(&self.rounding),
            sealed: self.sealed.clone(),
            set: self
                .envelope
                .party_set()
                .map(|set| set.iter().map(|p| p.0).collect()),
            voided: self.voided.clone(),
            robust: self.envelope.robust(|robust| robust.checkpoint()),
        }
    }

    /// Continues from `state` (input: checked against this party's run, id and model shape).
    pub fn restore(&mut self, state: PartyState) -> Result<(), StateError> {
        if state.run != self.federation.run {
            return Err(StateError::Run {
                expected: hex::encode(&self.federation.run[..8]),
                found: hex::encode(&state.run[..8]),
            });
        }
        if state.party != self.id().0 {
            return Err(StateError::Party {
                expected: self.id(),
                found: PartyId(state.party),
            });
        }
        let set = state
            .set
            .map(|ids| PartySet::new(ids.into_iter().map(PartyId)));
        if let Some(set) = &set {
            self.envelope
                .check_announced(Round(state.next_round), set)
                .map_err(|e| StateError::Sets(e.to_string()))?;
        }
        match (&state.robust, self.envelope.is_robust()) {
            (Some(checkpoint), true) => {
                if let Some(restored) = self.envelope.robust(|robust| robust.restore(checkpoint)) {
                    restored.map_err(|e| StateError::Robust(e.to_string()))?;
                }
            }
            (Some(_), false) => {
                return Err(StateError::Robust(
                    "it holds robust secure aggregation's secrets, and this party runs without it"
                        .into(),
                ));
            }
            (None, _) => {}
        }
        self.model.set(state.params, state.optimizer)?;
        self.next_round = Round(state.next_round);
        if self.envelope.is_blinded() {
            self.envelope.set_party_set(set);
        }
        self.skipped = state.skipped;
        self.voided = state.voided;
        self.rounding = state.rounding.restore();
        if let Some(record) = &state.sealed {
            self.envelope
                .restore_last_sealed(Round(record.round), Attempt(record.attempt));
        }
        self.sealed = state.sealed;
        Ok(())
    }
}
