//! The key schedule, the blinds and the seal rule of `strict` secure aggregation.
//!
//! - **Session**: s = SHA-256("hefl/v1/run" ‖ 0 ‖ run fingerprint ‖ roster fingerprint), the
//!   HKDF salt of every blind key. The run fingerprint is the SHA-256 of the run's plan, which
//!   holds the run id `hefl serve` draws at its first start: a new run or a new roster never
//!   reuses a blind, even with the same static keys.
//! - **Pair secret**: K_ij = X25519(sk_i, pk_j), once per run for every other party j of the
//!   roster; a non-contributory result (a low-order public key) is refused.
//! - **Blind key** of pair {i, j} in round r, attempt a, over the party set S:
//!   HKDF-SHA256(salt = s, ikm = K_ij, info = "hefl/v1/blind/pair" ‖ r ‖ a ‖ min(i, j) ‖
//!   max(i, j) ‖ SHA-256(S))\[..16\] (integers big-endian: r as 8 bytes, the rest as 4).
//! - **Blind**: that key's AES-128-CTR keystream (hefl's [`KeyStream`]) from counter 0, 3 bytes
//!   per word when t <= 24, 4 when t <= 32, 8 beyond, shifted into the top t bits of each plaintext word and
//!   added by the smaller id, subtracted by the larger: y_i = z_i + Σ_{j>i} p_ij − Σ_{j<i} p_ij
//!   mod 2^t. The blinds of a complete set cancel exactly in the sum; one party's words, to
//!   anyone missing one of its pair secrets, are uniform mod 2^t.
//! - **Canaries**: two more slots, a public count (each party adds 1) and a secret tag
//!   τ_r = 1 + (HKDF(HE key seed, "hefl/v1/canary" ‖ run fingerprint ‖ r) mod M), M the largest
//!   magnitude of one party's value, so P·τ_r fits wherever P values do. A sum is accepted
//!   only if the count is the number of published parties and the tag is their number times
//!   τ_r: a lone ciphertext, a subset sum (blinds left in) and a replayed older sum (another
//!   τ) fail, the last even with its count fixed by a server adding a public constant.
//! - **Seal rule**: a blind is never applied to two inputs (y − y' would reveal z − z'), so a
//!   [`Blinder`] seals each (round, attempt) at most once, in increasing order.

use std::collections::BTreeMap;
use std::fmt;

use rayon::prelude::*;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::identity::Identity;
use super::roster::{Fingerprint, Mode, Policy, Roster, RosterError};
use crate::fl::{PartyId, Round};
use crate::he::csprng::KeyStream;
use crate::he::keys::SecretKey;
use crate::quant::FixedPoint;

/// Slots the canaries add after the encoded update (count, then tag).
pub const CANARY_SLOTS: usize = 2;

const SESSION_LABEL: &[u8] = b"hefl/v1/run\0";
const PARTY_SET_LABEL: &[u8] = b"hefl/v1/party-set\0";
const PAIR_LABEL: &[u8] = b"hefl/v1/blind/pair";
const CANARY_LABEL: &[u8] = b"hefl/v1/canary";

/// The attempt of a round: 0 unless a round is run again under the same number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Attempt(pub u32);

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A round's party set: distinct ids in increasing order.
///
/// ```
/// use hefl::fl::PartyId;
/// use hefl::secagg::PartySet;
///
/// let set = PartySet::new([PartyId(2), PartyId(0), PartyId(2)]);
/// assert_eq!(set.iter().collect::<Vec<_>>(), [PartyId(0), PartyId(2)]);
/// assert_eq!(set.to_string(), "{0, 2}");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartySet(Vec<PartyId>);

impl PartySet {
    /// The set of `parties` (sorted, duplicates dropped).
    pub fn new(parties: impl IntoIterator<Item = PartyId>) -> Self {
        let mut ids: Vec<PartyId> = parties.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        Self(ids)
    }

    /// The parties, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = PartyId> + '_ {
        self.0.iter().copied()
    }

    /// Parties in the set.
    pub fn len(&self) -> u32 {
        self.0.len() as u32
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `party` is in the set.
    pub fn contains(&self, party: PartyId) -> bool {
        self.0.binary_search(&party).is_ok()
    }

    /// The parties, in increasing order, as a slice (to find a party's position).
    pub(super) fn ids(&self) -> &[PartyId] {
        &self.0
    }

    /// SHA-256("hefl/v1/party-set" ‖ 0 ‖ ids as 4-byte big-endian), bound into every blind key
    /// and into the mask graph's permutation.
    pub(super) fn digest(&self) -> [u8; 32] {
        let mut hash = Sha256::new().chain_update(PARTY_SET_LABEL);
        for id in &self.0 {
            hash.update(id.0.to_be_bytes());
        }
        hash.finalize().into()
    }
}

impl fmt::Display for PartySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.0.iter().map(|p| p.0.to_string()).collect();
        write!(f, "{{{}}}", ids.join(", "))
    }
}

/// Why a blinder could not be made, or refused to seal.
#[derive(Debug, thiserror::Error)]
pub enum SecAggError {
    /// The roster refused (unknown party, wrong identity, ...).
    #[error(transparent)]
    Roster(#[from] RosterError),
    /// X25519 with a partner's key gave a non-contributory (all-zero) secret.
    #[error(
        "the X25519 secret of {party} with {partner} is non-contributory: {partner}'s public \
         key in the roster is a low-order point, refused"
    )]
    NonContributory {
        /// This party.
        party: PartyId,
        /// The partner whose key is refused.
        partner: PartyId,
    },
    /// A strict blinder asked of a roster of another mode (robust runs its own protocol,
    /// [`RobustParty`](super::RobustParty)).
    #[error("the roster's secure aggregation mode is {found}; strict blinds need a strict roster")]
    NotStrict {
        /// The roster's mode.
        found: Mode,
    },
    /// This party is not in the round's set.
    #[error("round {round}: {party} is not in the round's party set {set}")]
    NotInSet {
        /// The round.
        round: Round,
        /// This party.
        party: PartyId,
        /// The set.
        set: PartySet,
    },
    /// The round's set has fewer parties than the roster's policy allows.
    #[error(
        "round {round}: the party set {set} has {found} parties, the roster requires at least {min}"
    )]
    BelowMinParties {
        /// The round.
        round: Round,
        /// The set.
        set: PartySet,
        /// Its size.
        found: u32,
        /// The roster's `min_parties`.
        min: u32,
    },
    /// The round's party set is not known (after a resync from a model snapshot): the party
    /// asks to rejoin, and learns it from the next round's announcement.
    #[error(
        "round {round}: the round's party set is not known to this party (it resynced); it asks to rejoin"
    )]
    SetUnknown {
        /// The round.
        round: Round,
    },
    /// A (round, attempt) at or below the last sealed one: a blind is never applied twice.
    #[error(
        "round {round} attempt {attempt}: already sealed up to round {last_round} attempt \
         {last_attempt}; a party never reseals a round (resend the sealed bytes instead)"
    )]
    RoundAlreadySealed {
        /// The round asked for.
        round: Round,
        /// Its attempt.
        attempt: Attempt,
        /// The last round sealed.
        last_round: Round,
        /// Its attempt.
        last_attempt: Attempt,
    },
}

/// Why a published sum was refused: it is not the sum of the round's party set under this
/// run's key. Handled like the skip rule: every honest party alike takes no step.
#[derive(Debug, thiserror::Error)]
pub enum AggregateRefused {
    /// The published party list is not the round's set.
    #[error(
        "round {round}: the sum lists parties {found}, the round's set is {expected} (rule: party list)"
    )]
    PartyList {
        /// The round.
        round: Round,
        /// The round's set.
        expected: PartySet,
        /// The published list.
        found: PartySet,
    },
    /// The sum has no room for the canaries.
    #[error(
        "round {round}: the sum has {found} slots, expected {expected} (values, weight and canaries)"
    )]
    Length {
        /// The round.
        round: Round,
        /// Slots expected.
        expected: usize,
        /// Slots found.
        found: usize,
    },
    /// The count canary is not the number of published parties.
    #[error(
        "round {round}: the count canary reads {found}, expected {expected} (rule: count canary)"
    )]
    Count {
        /// The round.
        round: Round,
        /// Parties published.
        expected: i64,
        /// What the slot decodes to.
        found: i64,
    },
    /// The tag canary is not the parties' number times this round's secret tag (the value is
    /// secret, so not named).
    #[error(
        "round {round}: the tag canary does not match {parties} parties' tags of this round \
         (rule: tag canary; a lone ciphertext, a subset sum or another round's sum)"
    )]
    Tag {
        /// The round.
        round: Round,
        /// Parties published.
        parties: u32,
    },
}

/// One pair's blind key for one round and attempt (16 bytes, wiped on drop, never printed).
pub struct BlindKey(Zeroizing<[u8; 16]>);

impl fmt::Debug for BlindKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlindKey(..)")
    }
}

/// Words per chunk when blinds are applied: a multiple of every keystream read (128 words
/// per three batches at 3 bytes each, 32 per batch at 4, 16 at 8), so that chunk c reads exactly the blocks a single pass would
/// (from c times the chunk's blocks on), and small enough (64 KiB) to stay in cache while
/// every blind of the round is added to it.
const BLIND_CHUNK: usize = 8192;

/// Adds (or, marked `true`, subtracts) every blind of `blinds` to the top `total_bits` bits
/// of `words`: the chunks in parallel, each chunk once through every blind. The result is
/// that of one pass per blind over the whole vector (the additions commute, and each word
/// meets the same keystream bytes).
pub(super) fn apply_blinds(words: &mut [u64], total_bits: u32, blinds: &[(&BlindKey, bool)]) {
    let blocks = KeyStream::blind_blocks(BLIND_CHUNK, total_bits);
    words
        .par_chunks_mut(BLIND_CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            for (key, negate) in blinds {
                let first = c as u128 * blocks;
                key.stream().add_top_bits(first, chunk, total_bits, *negate);
            }
        });
}

impl BlindKey {
    /// HKDF-SHA256(salt, ikm, info = the concatenation of `info`), its first 16 bytes.
    pub(super) fn derive(salt: &[u8; 32], ikm: &[u8], info: &[&[u8]]) -> Self {
        let mut key = Zeroizing::new([0u8; 16]);
        let hk = hkdf::Hkdf::<Sha256>::new(Some(salt), ikm);
        // 16 bytes is far below HKDF-SHA256's limit of 8160.
        let expanded = hk.expand_multi_info(info, &mut key[..]);
        debug_assert!(expanded.is_ok());
        Self(key)
    }

    fn stream(&self) -> KeyStream {
        KeyStream::new(u128::from_le_bytes(*self.0))
    }

    /// Adds this key's blind to the top `total_bits` bits of each of `words`.
    pub fn add_to(&self, words: &mut [u64], total_bits: u32) {
        apply_blinds(words, total_bits, &[(self, false)]);
    }

    /// Subtracts this key's blind (undoes [`BlindKey::add_to`]).
    pub fn subtract_from(&self, words: &mut [u64], total_bits: u32) {
        apply_blinds(words, total_bits, &[(self, true)]);
    }

    /// SHA-256 of the key: tells keys apart (for tests of uniqueness) and, being a hash of a
    /// 128-bit random key, reveals nothing of it.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(&self.0[..]).into()
    }

    /// The AES-CTR counters (blocks) a blind of `len` words of `total_bits` bits reads: 0 to
    /// this value, exclusive.
    pub fn blocks_used(len: usize, total_bits: u32) -> u128 {
        KeyStream::blind_blocks(len, total_bits)
    }
}

/// A round's secret canary tag τ_r (never printed).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CanaryTag(i64);

impl fmt::Debug for CanaryTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CanaryTag(..)")
    }
}

impl CanaryTag {
    /// τ_r for the run of fingerprint `run` and `round` under the HE key, in [1, M] for `fp`'s largest magnitude M.
    pub fn derive(key: &SecretKey, run: [u8; 32], round: Round, fp: &FixedPoint) -> Self {
        let mut bytes = Zeroizing::new([0u8; 8]);
        key.derive_secret(
            &[CANARY_LABEL, &run, &round.0.to_be_bytes()],
            &mut bytes[..],
        );
        let m = fp.max_magnitude().max(1) as u64;
        Self(1 + (u64::from_be_bytes(*bytes) % m) as i64)
    }
}

/// The two canary words one party appends: count 1, then τ_r.
pub fn canary_words(fp: &FixedPoint, tag: CanaryTag) -> [u64; CANARY_SLOTS] {
    [fp.to_plaintext(1), fp.to_plaintext(tag.0)]
}

/// Checks the canaries of a decrypted sum of `parties` parties (`sum` ending in the two canary
/// slots, as noisy words) and returns the slots before them (the update and its weight).
pub fn check_canaries<'s>(
    fp: &FixedPoint,
    sum: &'s [u64],
    parties: u32,
    tag: CanaryTag,
    round: Round,
) -> Result<&'s [u64], AggregateRefused> {
    let split = sum
        .len()
        .checked_sub(CANARY_SLOTS)
        .filter(|&n| n > 0)
        .ok_or(AggregateRefused::Length {
            round,
            expected: CANARY_SLOTS + 1,
            found: sum.len(),
        })?;
    let (values, canaries) = sum.split_at(split);
    let count = fp.from_plaintext(canaries[0]);
    if count != i64::from(parties) {
        return Err(AggregateRefused::Count {
            round,
            expected: i64::from(parties),
            found: count,
        });
    }
    // Compared mod 2^t, as the slot holds it: P·τ < 2^(t-1) decodes as is.
    if canaries[1]
        .wrapping_sub(fp.to_plaintext(i64::from(parties).wrapping_mul(tag.0)))
        .wrapping_add(fp.delta() / 2)
        >= fp.delta()
    {
        return Err(AggregateRefused::Tag { round, parties });
    }
    Ok(values)
}

/// Refuses a party set of `round` with a party outside `policy`'s roster or fewer parties
/// than its minimum: the check every mode runs on an announced set.
pub(super) fn check_announced(
    policy: &Policy,
    round: Round,
    set: &PartySet,
) -> Result<(), SecAggError> {
    if let Some(party) = set.iter().find(|p| p.0 >= policy.parties) {
        return Err(RosterError::UnknownParty {
            party,
            last: policy.parties.saturating_sub(1),
        }
        .into());
    }
    if set.len() < policy.min_parties {
        return Err(SecAggError::BelowMinParties {
            round,
            set: set.clone(),
            found: set.len(),
            min: policy.min_parties,
        });
    }
    Ok(())
}

/// A party's side of `strict` secure aggregation for one run: its pair secrets with every
/// other party of the roster, the session salt, and the last (round, attempt) it sealed.
/// Secrets are wiped on drop and never printed.
///
/// ```
/// use hefl::fl::{PartyId, Round};
/// use hefl::he::keys::KeyFile;
/// use hefl::quant::FixedPoint;
/// use hefl::secagg::{Attempt, Blinder, Identity, Mode, PartySet, Policy, Roster, SecAggError};
///
/// let key = KeyFile::from_seed([1; 32]).secret_key()?;
/// let ids: Vec<Identity> = (1..=3u8).map(|i| Identity::from_secret_bytes([i; 32])).collect();
/// let policy = Policy { mode: Mode::Strict, parties: 3, min_parties: 3 };
/// let roster = Roster::new(key.key_id(), ids.iter().map(Identity::public).collect(), policy)?;
/// let run = [9; 32]; // the run's fingerprint
/// let fp = FixedPoint::for_parties(3)?;
/// let set = PartySet::new(roster.parties());
/// let mut sum = vec![0u64; 4 + 2];
/// for (i, id) in ids.iter().enumerate() {
///     let mut blinder = Blinder::new(id, PartyId(i as u32), &roster, run)?;
///     let words = vec![fp.to_plaintext(i as i64); 4];
///     let sealed = blinder.seal(words, &fp, &key, Round(0), Attempt(0), &set)?;
///     // A second seal of the same round is refused.
///     let again = blinder.seal(vec![0; 4], &fp, &key, Round(0), Attempt(0), &set);
///     assert!(matches!(again, Err(SecAggError::RoundAlreadySealed { .. })));
///     sum.iter_mut().zip(&sealed).for_each(|(s, w)| *s = s.wrapping_add(*w));
/// }
/// let blinder = Blinder::new(&ids[0], PartyId(0), &roster, run)?;
/// let values = blinder.open(&sum, &fp, &key, Round(0), Some(&set), &set)?;
/// assert_eq!(fp.decode_integers(values), [3, 3, 3, 3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Blinder {
    party: PartyId,
    run: [u8; 32],
    policy: Policy,
    salt: [u8; 32],
    pairs: BTreeMap<PartyId, Zeroizing<[u8; 32]>>,
    last_sealed: Option<(Round, Attempt)>,
}

impl fmt::Debug for Blinder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blinder")
            .field("party", &self.party)
            .field("run", &hex::encode(&self.run[..8]))
            .field("partners", &self.pairs.len())
            .field("last_sealed", &self.last_sealed)
            .finish_non_exhaustive()
    }
}

/// The session salt of the run of fingerprint `run` under the roster `fingerprint`.
pub(super) fn session_salt(run: [u8; 32], fingerprint: Fingerprint) -> [u8; 32] {
    Sha256::new()
        .chain_update(SESSION_LABEL)
        .chain_update(run)
        .chain_update(fingerprint.0)
        .finalize()
        .into()
}

impl Blinder {
    /// Party `party`'s blinder for the run of fingerprint `run` (the SHA-256 of its plan,
    /// [`Federation::run`](crate::fl::Federation)): refuses an identity that is not the roster's entry
    /// for `party`, and any partner key whose X25519 secret is non-contributory.
    pub fn new(
        identity: &Identity,
        party: PartyId,
        roster: &Roster,
        run: [u8; 32],
    ) -> Result<Self, SecAggError> {
        let found = roster.policy().mode;
        if found != Mode::Strict {
            return Err(SecAggError::NotStrict { found });
        }
        roster.check_identity(party, identity)?;
        let mut pairs = BTreeMap::new();
        for partner in roster.parties().filter(|&p| p != party) {
            let public = roster.public_key(partner)?.as_dalek();
            let shared = identity.secret().diffie_hellman(&public);
            if !shared.was_contributory() {
                return Err(SecAggError::NonContributory { party, partner });
            }
            pairs.insert(partner, Zeroizing::new(shared.to_bytes()));
        }
        Ok(Self {
            party,
            run,
            policy: roster.policy(),
            salt: session_salt(run, roster.fingerprint()),
            pairs,
            last_sealed: None,
        })
    }

    /// This blinder's party.
    pub fn party(&self) -> PartyId {
        self.party
    }

    /// The last (round, attempt) sealed, to keep in the party's checkpoint.
    pub fn last_sealed(&self) -> Option<(Round, Attempt)> {
        self.last_sealed
    }

    /// Restores the last sealed (round, attempt) from a checkpoint: nothing at or below it is
    /// ever sealed again.
    pub fn restore_last_sealed(&mut self, last: Option<(Round, Attempt)>) {
        self.last_sealed = self.last_sealed.max(last);
    }

    /// Refuses a round's set without this party or with fewer parties than the roster allows,
    /// and a party outside the roster.
    pub fn check_set(&self, round: Round, set: &PartySet) -> Result<(), SecAggError> {
        if !set.contains(self.party) {
            return Err(SecAggError::NotInSet {
                round,
                party: self.party,
                set: set.clone(),
            });
        }
        self.check_announced(round, set)
    }

    /// Refuses an announced party set (of a round this party may be left out of) with a
    /// party outside the roster or fewer parties than the roster allows.
    pub fn check_announced(&self, round: Round, set: &PartySet) -> Result<(), SecAggError> {
        check_announced(&self.policy, round, set)
    }

    /// The blind key this party shares with `partner` for (`round`, `attempt`) over `set`.
    pub fn pair_key(
        &self,
        partner: PartyId,
        round: Round,
        attempt: Attempt,
        set: &PartySet,
    ) -> Result<BlindKey, SecAggError> {
        let secret = self.pairs.get(&partner).ok_or(RosterError::UnknownParty {
            party: partner,
            last: self.policy.parties.saturating_sub(1),
        })?;
        let (low, high) = (self.party.min(partner), self.party.max(partner));
        let info: [&[u8]; 6] = [
            PAIR_LABEL,
            &round.0.to_be_bytes(),
            &attempt.0.to_be_bytes(),
            &low.0.to_be_bytes(),
            &high.0.to_be_bytes(),
            &set.digest(),
        ];
        Ok(BlindKey::derive(&self.salt, &secret[..], &info))
    }

    /// Every blind key this party uses in (`round`, `attempt`) over `set`, with its partner
    /// and whether it is added (partner's id larger) or subtracted.
    pub fn round_keys(
        &self,
        round: Round,
        attempt: Attempt,
        set: &PartySet,
    ) -> Result<Vec<(PartyId, BlindKey)>, SecAggError> {
        self.check_set(round, set)?;
        set.iter()
            .filter(|&p| p != self.party)
            .map(|p| Ok((p, self.pair_key(p, round, attempt, set)?)))
            .collect()
    }

    /// Seals an encoded update (`words`: values and weight, from
    /// [`Encoding::encode`](crate::fl::Encoding::encode)) for (`round`, `attempt`) over `set`:
    /// appends the canaries, adds this party's blinds, and records the round as sealed.
    /// Refuses a (round, attempt) at or below the last sealed one
    /// ([`SecAggError::RoundAlreadySealed`]) and a set [`Blinder::check_set`] refuses.
    pub fn seal(
        &mut self,
        mut words: Vec<u64>,
        fp: &FixedPoint,
        key: &SecretKey,
        round: Round,
        attempt: Attempt,
        set: &PartySet,
    ) -> Result<Vec<u64>, SecAggError> {
        if let Some((last_round, last_attempt)) = self.last_sealed
            && (round, attempt) <= (last_round, last_attempt)
        {
            return Err(SecAggError::RoundAlreadySealed {
                round,
                attempt,
                last_round,
                last_attempt,
            });
        }
        let keys = self.round_keys(round, attempt, set)?;
        words.extend(canary_words(
            fp,
            CanaryTag::derive(key, self.run, round, fp),
        ));
        // Added toward a larger id, subtracted toward a smaller one.
        let blinds: Vec<(&BlindKey, bool)> = keys
            .iter()
            .map(|(partner, key)| (key, *partner < self.party))
            .collect();
        apply_blinds(&mut words, fp.params().total_bits, &blinds);
        self.last_sealed = Some((round, attempt));
        Ok(words)
    }

    /// Checks a decrypted sum of round `round`: the published parties must be the round's
    /// `set` as this party knows it (`None`: not known, after a resync from a model snapshot),
    /// within the roster and at least its minimum; the canaries must hold. Returns the slots
    /// before the canaries (values and weight), to decode. This party need not be in the set
    /// (a party left out still applies the sum).
    pub fn open<'s>(
        &self,
        sum: &'s [u64],
        fp: &FixedPoint,
        key: &SecretKey,
        round: Round,
        set: Option<&PartySet>,
        published: &PartySet,
    ) -> Result<&'s [u64], AggregateRefused> {
        let expected = set.unwrap_or(published);
        if published != expected || self.check_announced(round, published).is_err() {
            return Err(AggregateRefused::PartyList {
                round,
                expected: expected.clone(),
                found: published.clone(),
            });
        }
        let tag = CanaryTag::derive(key, self.run, round, fp);
        check_canaries(fp, sum, published.len(), tag, round)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_blinds_equal_one_pass_per_blind() {
        let keys = [
            BlindKey(Zeroizing::new([3; 16])),
            BlindKey(Zeroizing::new([4; 16])),
        ];
        for (len, bits) in [(3 * BLIND_CHUNK + 77, 22), (BLIND_CHUNK - 5, 40), (10, 27)] {
            let start: Vec<u64> = (0..len as u64)
                .map(|i| i.wrapping_mul(0x9e37_79b9))
                .collect();
            let mut chunked = start.clone();
            apply_blinds(&mut chunked, bits, &[(&keys[0], false), (&keys[1], true)]);
            let mut single = start.clone();
            keys[0].stream().add_top_bits(0, &mut single, bits, false);
            keys[1].stream().add_top_bits(0, &mut single, bits, true);
            assert_eq!(chunked, single, "len {len}, t = {bits}");
            assert_ne!(chunked, start);
        }
    }
}
