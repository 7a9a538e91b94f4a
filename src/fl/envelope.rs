//! A client's envelope for its updates in each privacy mode: encode ([`Encoding`]), encrypt
//! (in `he`), and open the round's aggregate back into a mean update.

use super::config::Privacy;
use super::encoding::{DecodeError, EncodeError, Encoding};
use super::payload::{PayloadError, PlainShape, PlainSum, Summable};
use super::server::{PartyId, Round};
use crate::he::keys::SecretKey;
use crate::he::{
    CompactVector, Context, Expected, HeError, OwnMask, PreparedEncryption, Widths, WireError,
};
use crate::secagg::{
    Attempt, Blinder, CANARY_SLOTS, PartySet, RobustError, RobustParty, SecAggError,
};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Time a client spends on its envelope, summed over rounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvelopeCost {
    /// Weighting and fixed-point encoding.
    pub encode_seconds: f64,
    /// Preparing encryptions of zero (`he` only): the offline part, done while waiting.
    #[serde(default)]
    pub prepare_seconds: f64,
    /// Sealing into a prepared encryption and serializing (`he` only): the online part.
    pub encrypt_seconds: f64,
    /// Parsing, mask regeneration and decryption of the aggregate (`he`), or parsing
    /// (`plain`).
    pub decrypt_seconds: f64,
    /// Decoding the aggregate to the mean update.
    pub decode_seconds: f64,
    /// Bytes sent per update.
    pub bytes_per_update: usize,
    /// Bytes of the last aggregate received.
    #[serde(default)]
    pub bytes_per_aggregate: usize,
}

impl EnvelopeCost {
    /// All the envelope's CPU seconds: encoding, preparing (offline), sealing, opening and
    /// decoding.
    ///
    /// ```
    /// use hefl::fl::EnvelopeCost;
    ///
    /// let cost = EnvelopeCost { encode_seconds: 1.0, prepare_seconds: 2.0, ..EnvelopeCost::default() };
    /// assert_eq!(cost.cpu_seconds(), 3.0);
    /// ```
    pub fn cpu_seconds(&self) -> f64 {
        self.encode_seconds
            + self.prepare_seconds
            + self.encrypt_seconds
            + self.decrypt_seconds
            + self.decode_seconds
    }

    /// Adds another client's (or round's) cost.
    pub fn add(&mut self, other: &Self) {
        self.encode_seconds += other.encode_seconds;
        self.prepare_seconds += other.prepare_seconds;
        self.encrypt_seconds += other.encrypt_seconds;
        self.decrypt_seconds += other.decrypt_seconds;
        self.decode_seconds += other.decode_seconds;
        self.bytes_per_update = self.bytes_per_update.max(other.bytes_per_update);
        self.bytes_per_aggregate = self.bytes_per_aggregate.max(other.bytes_per_aggregate);
    }
}

/// Why an envelope could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The encoding refused the update (a NaN or infinite value, a sample count the
    /// weighting cannot carry).
    #[error("cannot encode the update: {0}")]
    Encode(#[from] EncodeError),
    /// Encryption or decryption failed.
    #[error(transparent)]
    He(#[from] HeError),
    /// An update of another length than the envelope's.
    #[error("an update of {found} values, expected {expected}")]
    Length {
        /// The envelope's length.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// The aggregate did not parse.
    #[error("aggregate refused: {0}")]
    Payload(#[from] PayloadError),
    /// The aggregate did not decode to a mean.
    #[error("aggregate does not decode: {0}")]
    Decode(#[from] DecodeError),
    /// An aggregate of another context (another round's or run's sum).
    #[error("an aggregate for {found}, expected {expected}")]
    Context {
        /// The sum asked for.
        expected: Context,
        /// What the aggregate names.
        found: Context,
    },
    /// Nothing was sealed to seal again.
    #[error("no update was sealed to seal again")]
    NothingSealed,
    /// Secure aggregation refused to seal (a round sealed before, a set without this party).
    #[error(transparent)]
    SecAgg(#[from] SecAggError),
    /// Robust secure aggregation refused to seal (the round's shares not received, a round
    /// sealed before).
    #[error(transparent)]
    Robust(#[from] RobustError),
    /// A party list that does not fit the envelope: empty, unsorted, repeated, or longer
    /// than the encoding's party count.
    #[error(
        "a sum of parties {parties:?}, expected 1 to {max} distinct parties in ascending order"
    )]
    Parties {
        /// The list given.
        parties: Vec<u32>,
        /// The most parties a sum may hold.
        max: u32,
    },
}

/// One sealed update: the bytes to send, and how many of its values were clipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The message.
    pub bytes: Vec<u8>,
    /// Values beyond the clip bound, clipped to it ([`Encoded::clipped`](super::Encoded)).
    pub clipped: usize,
}

/// Seals a client's updates and opens aggregates (see [`crate::fl::payload`]).
///
/// In `he` mode an update is sealed into a [`PreparedEncryption`]: pass one made ahead of
/// time by [`Envelope::prepare`] (the party loop prepares the next round's between submitting
/// this round's update and sealing the next), or `None` to prepare it on the spot.
///
/// ```
/// use hefl::fl::{Encoding, Envelope, EnvelopeCost, PartyId, Summable, Weighting};
/// use hefl::he::{CompactVector, Context, DownloadForm, Widths, keys::KeyFile};
/// use rand::SeedableRng;
/// use std::sync::Arc;
///
/// let key = Arc::new(KeyFile::from_seed([1; 32]).secret_key()?);
/// let encoding = Encoding::new(8.0, 16, 2, Weighting::Fraction { nominal: 64 })?;
/// let widths = Widths::new(encoding.total_bits(), 2, DownloadForm::Seeds)?;
/// let envelope = Envelope::he(encoding, key, 2, widths);
/// let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(0);
/// let mut cost = EnvelopeCost::default();
/// let run = [7; 32]; // the run's fingerprint
/// let upload = |party| Context { run, round: 0, party };
/// let prepared = envelope.prepare(&mut cost)?; // ahead of time
/// let a = envelope.seal(&[1.0, 2.0], 64, upload(0), prepared, &mut rng, &mut cost)?;
/// let b = envelope.seal(&[3.0, 6.0], 64, upload(1), None, &mut rng, &mut cost)?;
/// // What the server does, without a key:
/// let expect = envelope.expected_he().unwrap();
/// let mut sum = <CompactVector as Summable>::parse_submission(&a.bytes, &expect)?;
/// sum.add_submission(&b.bytes, &expect)?;
/// sum.set_context(Context::sum(run, 0));
/// let parties = [PartyId(0), PartyId(1)];
/// let mean = envelope.open(&sum.to_bytes(), &parties, Context::sum(run, 0), &mut cost)?;
/// // The same sum offered as another round's is refused.
/// assert!(envelope.open(&sum.to_bytes(), &parties, Context::sum(run, 1), &mut cost).is_err());
/// assert_eq!(mean, [2.0, 4.0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Envelope {
    encoding: Encoding,
    he: Option<(Arc<SecretKey>, Widths)>,
    len: usize,
    /// The masks of the last update this envelope sealed (`he`), which the next `open` reads
    /// instead of regenerating them if they are one of its summands' (see [`OwnMask`]).
    own_mask: Mutex<Option<OwnMask>>,
    /// The words and context of the update sealed last ([`Envelope::reseal`]).
    last: Mutex<Option<(Vec<u64>, Context)>>,
    /// Secure aggregation (`he` only): the blinder and the round's party set. Shared by
    /// clones, so that no copy ever seals a round twice.
    secure_agg: Option<Arc<Mutex<SecureAgg>>>,
}

/// An envelope's secure aggregation: the party's blinds and the party set of the round it
/// seals and opens next (`None`: not known, after a resync from a model snapshot).
struct SecureAgg {
    blinds: Blinds,
    set: Option<PartySet>,
}

/// Whose blinds an envelope adds.
enum Blinds {
    /// `strict`: pairwise blinds from the roster's static keys.
    Strict(Blinder),
    /// `robust`: the self-blind and the pair blinds of the round's graph; its round keys and
    /// shares come through the driver ([`Envelope::robust`]).
    Robust(Box<RobustParty>),
}

impl Clone for Envelope {
    /// The same settings; the copy has sealed nothing yet.
    fn clone(&self) -> Self {
        Self {
            encoding: self.encoding,
            he: self.he.clone(),
            len: self.len,
            own_mask: Mutex::default(),
            last: Mutex::default(),
            secure_agg: self.secure_agg.clone(),
        }
    }
}

impl Envelope {
    /// Plain mode for updates of `len` values.
    pub fn plain(encoding: Encoding, len: usize) -> Self {
        Self {
            encoding,
            he: None,
            len,
            own_mask: Mutex::default(),
            last: Mutex::default(),
            secure_agg: None,
        }
    }

    /// HE mode for updates of `len` values under `key`, in compact ciphertexts of `widths`
    /// (made from the encoding's total bits and party count, e.g. by
    /// [`TrainConfig::widths`](super::TrainConfig::widths)).
    pub fn he(encoding: Encoding, key: Arc<SecretKey>, len: usize, widths: Widths) -> Self {
        Self {
            encoding,
            he: Some((key, widths)),
            len,
            own_mask: Mutex::default(),
            last: Mutex::default(),
            secure_agg: None,
        }
    }

    /// This `he` envelope with `strict` secure aggregation: every update sealed gets the
    /// canary slots and `blinder`'s blinds for the rounds' party set `set` (a set without the
    /// blinder's party is refused when sealing); every sum opened must list exactly `set` and
    /// carry the canaries of the round. A plain envelope stays as it is (secure aggregation
    /// needs the key: [`TrainConfig::validate`](super::TrainConfig::validate) refuses it
    /// without `he`).
    pub fn with_secure_agg(mut self, blinder: Blinder, set: PartySet) -> Self {
        if self.he.is_some() {
            self.secure_agg = Some(Arc::new(Mutex::new(SecureAgg {
                blinds: Blinds::Strict(blinder),
                set: Some(set),
            })));
        }
        self
    }

    /// This `he` envelope with `robust` secure aggregation: every update sealed gets the
    /// canary slots, `party`'s self-blind and its pair blinds over the round's set (whose keys
    /// and shares the driver exchanges first, through [`Envelope::robust`]); every sum opened
    /// must list the parties `party` answered the unmask step for and carry the canaries. A
    /// plain envelope stays as it is.
    pub fn with_robust(mut self, party: RobustParty, set: PartySet) -> Self {
        if self.he.is_some() {
            self.secure_agg = Some(Arc::new(Mutex::new(SecureAgg {
                blinds: Blinds::Robust(Box::new(party)),
                set: Some(set),
            })));
        }
        self
    }

    /// Robust secure aggregation: runs `step` on this party's [`RobustParty`] (its adverts,
    /// shares, unmask answers and checkpoint); `None` without robust secure aggregation.
    pub fn robust<T>(&self, step: impl FnOnce(&mut RobustParty) -> T) -> Option<T> {
        let mut secure = self.secure_agg()?;
        match &mut secure.blinds {
            Blinds::Robust(party) => Some(step(party)),
            Blinds::Strict(_) => None,
        }
    }

    /// Secure aggregation: the party set of the round this envelope seals and opens next
    /// (`None`: without secure aggregation, or not known).
    pub fn party_set(&self) -> Option<PartySet> {
        self.secure_agg().and_then(|s| s.set.clone())
    }

    /// Secure aggregation: the party set of the next round, as announced with the round
    /// before (checked first with [`Envelope::check_announced`]); `None`: not known.
    pub fn set_party_set(&self, set: Option<PartySet>) {
        if let Some(mut secure) = self.secure_agg() {
            secure.set = set;
        }
    }

    /// Secure aggregation: refuses an announced party set of `round` with a party outside the
    /// roster or fewer than its minimum (nothing to check without secure aggregation).
    pub fn check_announced(&self, round: Round, set: &PartySet) -> Result<(), SecAggError> {
        match self.secure_agg().as_deref() {
            Some(SecureAgg {
                blinds: Blinds::Strict(blinder),
                ..
            }) => blinder.check_announced(round, set),
            Some(SecureAgg {
                blinds: Blinds::Robust(party),
                ..
            }) => party.check_announced(round, set),
            None => Ok(()),
        }
    }

    /// Whether updates are blinded by robust secure aggregation.
    pub fn is_robust(&self) -> bool {
        self.robust(|_| ()).is_some()
    }

    /// Whether updates are blinded (`strict` secure aggregation).
    pub fn is_blinded(&self) -> bool {
        self.secure_agg.is_some()
    }

    /// Restores the last (round, attempt) the blinder sealed, from a checkpoint: nothing at
    /// or below it is sealed again (nothing happens without secure aggregation).
    pub fn restore_last_sealed(&self, round: Round, attempt: Attempt) {
        if let Some(mut secure) = self.secure_agg()
            && let Blinds::Strict(blinder) = &mut secure.blinds
        {
            blinder.restore_last_sealed(Some((round, attempt)));
        }
    }

    /// The secure aggregation state, if any (a panic while it was held left it whole: the
    /// blinder records a round as sealed only once its words are).
    fn secure_agg(&self) -> Option<MutexGuard<'_, SecureAgg>> {
        self.secure_agg
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The encoding of updates.
    pub fn encoding(&self) -> &Encoding {
        &self.encoding
    }

    /// Values per update.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether updates have no values (never: constructors take lengths from validated
    /// plans).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The privacy mode.
    pub fn privacy(&self) -> Privacy {
        if self.he.is_some() {
            Privacy::He
        } else {
            Privacy::Plain
        }
    }

    /// Slots on the wire: the update plus its weight (and, blinded, the two canaries).
    pub fn wire_len(&self) -> usize {
        self.len + 1 + if self.is_blinded() { CANARY_SLOTS } else { 0 }
    }

    /// What a server checks `he` submissions against (key id, length, widths); `None` in
    /// plain mode.
    pub fn expected_he(&self) -> Option<Expected> {
        self.he.as_ref().map(|(key, widths)| Expected {
            key_id: key.key_id(),
            plaintext_len: self.wire_len(),
            widths: *widths,
        })
    }

    /// What a server checks plain (and `dp`) submissions against: the wire length, each word
    /// kept to the encoding's t bits.
    pub fn expected_plain(&self) -> PlainShape {
        PlainShape {
            len: self.wire_len(),
            bits: self.encoding.total_bits(),
        }
    }

    /// An encryption of zero for the next update (`he`; `None` in plain mode): the offline
    /// part of sealing, counted in `cost.prepare_seconds`.
    pub fn prepare(
        &self,
        cost: &mut EnvelopeCost,
    ) -> Result<Option<PreparedEncryption>, EnvelopeError> {
        match &self.he {
            None => Ok(None),
            Some((key, _)) => Ok(Some(self.prepare_with(key, cost)?)),
        }
    }

    fn prepare_with(
        &self,
        key: &SecretKey,
        cost: &mut EnvelopeCost,
    ) -> Result<PreparedEncryption, HeError> {
        let start = Instant::now();
        let prepared = key.prepare(self.wire_len())?;
        cost.prepare_seconds += start.elapsed().as_secs_f64();
        Ok(prepared)
    }

    /// Encodes (weighted by `samples`, see [`Encoding::encode`]) and, in `he`, seals one
    /// update for `context` (its run, round and sender, in its header) into `prepared` (or
    /// into one made now); returns the bytes to send and the count of clipped values. Refuses
    /// an update of another length.
    pub fn seal<R: rand::Rng + Send + ?Sized>(
        &self,
        values: &[f32],
        samples: u64,
        context: Context,
        prepared: Option<PreparedEncryption>,
        rng: &mut R,
        cost: &mut EnvelopeCost,
    ) -> Result<Sealed, EnvelopeError> {
        if values.len() != self.len {
            return Err(EnvelopeError::Length {
                expected: self.len,
                found: values.len(),
            });
        }
        // On a rayon worker: the parallel steps below then start from inside the pool, one
        // thread handoff for the whole sealing instead of one per step (about 8 µs each on
        // two cores). `open` does the same.
        rayon::scope(|_| {
            let start = Instant::now();
            let mut encoded = self.encoding.encode(values, samples, rng)?;
            if let (Some(mut secure), Some((key, _))) = (self.secure_agg(), &self.he) {
                let SecureAgg { blinds, set } = &mut *secure;
                let round = Round(context.round);
                let fp = self.encoding.fixed_point();
                let set = set.as_ref().ok_or(SecAggError::SetUnknown { round })?;
                encoded.words = match blinds {
                    Blinds::Strict(blinder) => {
                        blinder.seal(encoded.words, fp, key, round, Attempt(0), set)?
                    }
                    Blinds::Robust(party) => {
                        party.check_set(round, set)?;
                        party.seal(encoded.words, fp, key, round)?
                    }
                };
            }
            cost.encode_seconds += start.elapsed().as_secs_f64();
            let bytes = self.encrypt(&encoded.words, context, prepared, cost)?;
            *self.last() = Some((encoded.words, context));
            Ok(Sealed {
                bytes,
                clipped: encoded.clipped,
            })
        })
    }

    /// The update sealed last, encrypted again into `prepared` (or one made now), with the
    /// same words and context: a fresh encryption of the same plaintext (new seed, new noise),
    /// for a submission refused because its seed was already in the sum (someone sent a copy
    /// first). Refuses when nothing was sealed. A blinded update keeps its blinds and
    /// canaries: the plaintext is the same, so no blind ever meets a second input.
    pub fn reseal(
        &self,
        prepared: Option<PreparedEncryption>,
        cost: &mut EnvelopeCost,
    ) -> Result<Sealed, EnvelopeError> {
        let (words, context) = self.last().clone().ok_or(EnvelopeError::NothingSealed)?;
        rayon::scope(|_| {
            let bytes = self.encrypt(&words, context, prepared, cost)?;
            Ok(Sealed { bytes, clipped: 0 })
        })
    }

    /// Encrypts (in `he`) or wraps encoded `words` for `context`; keeps the masks for `open`.
    fn encrypt(
        &self,
        words: &[u64],
        context: Context,
        prepared: Option<PreparedEncryption>,
        cost: &mut EnvelopeCost,
    ) -> Result<Vec<u8>, EnvelopeError> {
        let bytes = match &self.he {
            None => {
                PlainSum::sealed(words.to_vec(), self.encoding.total_bits(), context).to_bytes()
            }
            Some((key, widths)) => {
                let prepared = match prepared {
                    Some(prepared) => prepared,
                    None => self.prepare_with(key, cost)?,
                };
                let start = Instant::now();
                let (mut upload, own) = prepared.seal_keeping_mask(words, widths)?;
                upload.set_context(context);
                let bytes = upload.to_bytes();
                cost.encrypt_seconds += start.elapsed().as_secs_f64();
                *self.own_mask() = Some(own);
                bytes
            }
        };
        cost.bytes_per_update = bytes.len();
        Ok(bytes)
    }

    /// The words and context of the update sealed last.
    fn last(&self) -> MutexGuard<'_, Option<(Vec<u64>, Context)>> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The last sealed update's masks (a cache: a panic while it was held left it whole).
    fn own_mask(&self) -> MutexGuard<'_, Option<OwnMask>> {
        self.own_mask.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Parses, (regenerates masks and decrypts) and decodes the sum of the sealed updates
    /// of `parties` (ascending, distinct) into the weighted mean update. Refuses an aggregate
    /// that names another context than `context` (another round's or run's sum), and one that
    /// holds another number of updates than the list names. The masks of the update this
    /// envelope sealed last are read from memory instead of regenerated, if they are among
    /// the sum's.
    pub fn open(
        &self,
        bytes: &[u8],
        parties: &[PartyId],
        context: Context,
        cost: &mut EnvelopeCost,
    ) -> Result<Vec<f32>, EnvelopeError> {
        let max = self.encoding.max_parties();
        let count = u32::try_from(parties.len())
            .ok()
            .filter(|&n| n >= 1 && n <= max && parties.windows(2).all(|w| w[0] < w[1]))
            .ok_or_else(|| EnvelopeError::Parties {
                parties: parties.iter().map(|p| p.0).collect(),
                max,
            })?;
        // On a rayon worker, as `seal`.
        rayon::scope(|_| {
            let start = Instant::now();
            cost.bytes_per_aggregate = bytes.len();
            // Parsed before its context is compared: another key or shape is the more
            // telling refusal.
            let wrong_context = |found: Context| {
                (found != context).then_some(EnvelopeError::Context {
                    expected: context,
                    found,
                })
            };
            let (words, summands) = match self.he.as_ref().zip(self.expected_he()) {
                None => {
                    let sum = PlainSum::parse_aggregate(bytes, &self.expected_plain(), count)?;
                    if let Some(error) = wrong_context(sum.context()) {
                        return Err(error);
                    }
                    let summands = sum.summands();
                    (sum.into_words(), summands)
                }
                Some(((key, widths), expect)) => {
                    let sum = CompactVector::parse_aggregate(bytes, &expect, count)
                        .map_err(PayloadError::from)?;
                    if let Some(error) = wrong_context(sum.context()) {
                        return Err(error);
                    }
                    let summands = sum.summands();
                    if summands != count {
                        (Vec::new(), summands)
                    } else {
                        let own = self.own_mask().take();
                        (key.decrypt_compact(sum, widths, own.as_ref())?, summands)
                    }
                }
            };
            if summands != count {
                return Err(PayloadError::from(WireError::Summands {
                    max: count,
                    found: summands,
                })
                .into());
            }
            let opened = Instant::now();
            cost.decrypt_seconds += (opened - start).as_secs_f64();
            let mean = match (self.secure_agg(), &self.he) {
                (Some(mut secure), Some((key, _))) => {
                    let (fp, round) = (self.encoding.fixed_point(), Round(context.round));
                    let published = PartySet::new(parties.iter().copied());
                    let SecureAgg { blinds, set } = &mut *secure;
                    let values = match blinds {
                        Blinds::Strict(blinder) => {
                            blinder.open(&words, fp, key, round, set.as_ref(), &published)
                        }
                        Blinds::Robust(party) => party.open(&words, fp, key, round, &published),
                    }
                    .map_err(DecodeError::from)?;
                    self.encoding.decode(values, count)?
                }
                _ => self.encoding.decode(&words, count)?,
            };
            cost.decode_seconds += opened.elapsed().as_secs_f64();
            Ok(mean)
        })
    }
}
