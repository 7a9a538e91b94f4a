//! The roster: the trust anchor of secure aggregation. It pins the HE key id, every party's
//! X25519 public key (and Ed25519 public key, which `robust` needs), and the policy (mode,
//! parties, the fewest parties in a sum), and is compared out of band by its SHA-256
//! fingerprint. The server only relays it; a plan whose policy is weaker than the roster's is
//! refused by the parties, never the reverse.
//!
//! On disk (`hefl roster ... --out roster.json`):
//!
//! ```text
//! {"format":"hefl-roster","version":1,"key_id":"<64 hex>",
//!  "policy":{"mode":"strict","parties":3,"min_parties":3},
//!  "parties":{"0":"<64 hex>","1":"<64 hex>","2":"<64 hex>"},
//!  "signing":{"0":"<64 hex>","1":"<64 hex>","2":"<64 hex>"}}
//! ```
//!
//! `signing` is there only when the roster has the parties' Ed25519 keys (so a roster
//! without them keeps the JSON, and the fingerprint, it had before they existed). A robust
//! policy reads `"mode":{"robust":{"colluders":10,"dropouts":10,"neighbours":22,
//! "threshold":11,"consistency_check":false}}`.

//!
//! The policy a roster pins: the mode of secure aggregation (`strict`, or `robust` with its
//! parameters), the party count and the fewest parties in a sum. A server's plan may tighten
//! it, never weaken it ([`Roster::check_policy`](super::Roster::check_policy)).
//!
//! `robust`'s parameters follow rule (a) of the design note (`shared/design/masked-he.md`
//! §1.5), which holds whatever graph the server picks: against `c` colluders and `d`
//! dropouts per round, a threshold T = c + 1 (the colluders never hold T shares of a party's
//! secrets), k = c + d + 1 neighbours rounded up to even and capped at P - 1 (k - d >= T
//! holders stay alive, and the honest alive parties stay connected), and at least P - d
//! parties in a sum.
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::identity::{PartyPublicKey, SigningPublicKey};
use crate::fl::PartyId;
use crate::he::keys::KeyId;

/// Format tag of roster files.
const FILE_FORMAT: &str = "hefl-roster";
/// The roster version this release reads and writes.
pub const ROSTER_VERSION: u32 = 1;
/// The most parties a roster may list (hefl's encodings are sized for at most this many).
pub const MAX_ROSTER_PARTIES: u32 = 10_000;
/// A roster of 10,000 parties is about 800 KB, 1.6 MB with their signing keys.
pub const MAX_ROSTER_BYTES: u64 = 2 << 20;
/// Domain label of the fingerprint.
const FINGERPRINT_LABEL: &[u8] = b"hefl/v1/roster\0";

/// A roster's SHA-256 fingerprint, 64 hex digits, to compare out of band.
///
/// It is a hash of public data only (the key id, public keys and policy), so it leaks
/// nothing; it names the roster so that a substituted key or policy cannot go unnoticed.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = RosterError;
    fn from_str(text: &str) -> Result<Self, RosterError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| RosterError::Malformed {
            reason: format!(
                "fingerprint {:?}: expected 64 hex digits",
                text.chars().take(100).collect::<String>()
            ),
        })?;
        Ok(Self(bytes))
    }
}

/// Why a roster was refused, or refused something: each names what was expected and what
/// was found.
#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    /// Not a parseable hefl roster.
    #[error("not a hefl roster: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// Another format version.
    #[error("roster format version {found}, this hefl reads version {expected}")]
    Version {
        /// The version this release reads.
        expected: u32,
        /// The version in the roster.
        found: u32,
    },
    /// The fingerprint compared out of band is not this roster's.
    #[error(
        "roster fingerprint {found} is not the expected {expected}: this is not the roster \
         your coordinator sent"
    )]
    WrongFingerprint {
        /// The fingerprint given (out of band).
        expected: Fingerprint,
        /// This roster's.
        found: Fingerprint,
    },
    /// A party id the roster does not list.
    #[error("{party} is not in the roster, which lists parties 0 to {last}")]
    UnknownParty {
        /// The party.
        party: PartyId,
        /// The roster's last party id.
        last: u32,
    },
    /// The roster lists other parties than its policy says.
    #[error(
        "the roster's policy has {expected} parties (ids 0 to {expected} - 1), it lists {found}"
    )]
    PartyIds {
        /// Parties the policy names.
        expected: u32,
        /// What the roster lists.
        found: String,
    },
    /// A policy that cannot hold.
    #[error("roster policy ({policy}): {reason}")]
    BadPolicy {
        /// The policy.
        policy: Policy,
        /// Why.
        reason: String,
    },
    /// Two parties share one public key.
    #[error(
        "{first} and {second} have the same public key {key}: every party needs its own identity"
    )]
    DuplicateKey {
        /// One party.
        first: PartyId,
        /// The other.
        second: PartyId,
        /// Their key.
        key: PartyPublicKey,
    },
    /// A plan (from the server) asks for a weaker policy than the roster's.
    #[error(
        "the plan weakens the roster's policy: {rule}: the roster says {expected}, the plan {found}"
    )]
    PolicyWeakened {
        /// What differs.
        rule: &'static str,
        /// The roster's value.
        expected: String,
        /// The plan's.
        found: String,
    },
    /// The HE key is not the roster's.
    #[error("the roster is for key {expected}, this key is {found}")]
    WrongKey {
        /// The roster's key id.
        expected: KeyId,
        /// The key given.
        found: KeyId,
    },
    /// The identity is not the roster's entry for the party.
    #[error("{party}'s public key in the roster is {expected}, this identity's is {found}")]
    WrongIdentity {
        /// The party.
        party: PartyId,
        /// The roster's key for it.
        expected: PartyPublicKey,
        /// The identity's.
        found: PartyPublicKey,
    },
    /// The roster has no signing key for a party (it has none for any, or the party's public
    /// file had none).
    #[error(
        "the roster has no Ed25519 key for {party}: robust mode needs rosters made from \
         `hefl identity` public files that carry the `hefl-ed25519-v1` line"
    )]
    NoSigningKey {
        /// The party.
        party: PartyId,
    },
    /// Two parties share one Ed25519 key.
    #[error(
        "{first} and {second} have the same Ed25519 key {key}: every party needs its own identity"
    )]
    DuplicateSigningKey {
        /// One party.
        first: PartyId,
        /// The other.
        second: PartyId,
        /// Their key.
        key: SigningPublicKey,
    },
    /// A party's Ed25519 key is not a point of the curve, or is one of small order (for which
    /// signatures can be forged).
    #[error(
        "{party}'s Ed25519 key {key} is not a valid public key (not a curve point, or of small order)"
    )]
    InvalidSigningKey {
        /// The party.
        party: PartyId,
        /// Its key.
        key: SigningPublicKey,
    },
}

/// The on-disk and canonical (fingerprinted) form of a roster.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RosterOnDisk {
    format: String,
    version: u32,
    key_id: String,
    policy: Policy,
    parties: BTreeMap<u32, PartyPublicKey>,
    /// Absent in rosters without signing keys, so that they keep their JSON and fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signing: Option<BTreeMap<u32, SigningPublicKey>>,
}

/// `map`'s values in id order, refused unless its ids are 0 to `parties` - 1 (`what` names
/// the map in the error).
fn by_id<T>(map: BTreeMap<u32, T>, parties: u32, what: &str) -> Result<Vec<T>, RosterError> {
    if !map.keys().copied().eq(0..parties) {
        let ids: Vec<String> = map.keys().take(20).map(u32::to_string).collect();
        return Err(RosterError::PartyIds {
            expected: parties,
            found: format!("{what} ids {}", ids.join(", ")),
        });
    }
    Ok(map.into_values().collect())
}

/// The first pair of indices of `items` that hold the same value, with the value.
fn first_duplicate<T: Ord + Copy>(items: &[T]) -> Option<(PartyId, PartyId, T)> {
    let mut seen = BTreeMap::new();
    items.iter().enumerate().find_map(|(i, item)| {
        seen.insert(*item, i)
            .map(|first| (PartyId(first as u32), PartyId(i as u32), *item))
    })
}

/// A validated roster: the HE key id, party ids 0 to P - 1 with distinct public keys (and,
/// optionally, distinct valid Ed25519 keys), and a policy that can hold (at least 2 parties
/// in a sum, at most P; `robust`'s parameters as [`RobustPolicy::check`](super::RobustPolicy::check)
/// says, and every party's Ed25519 key).
///
/// ```
/// use hefl::fl::PartyId;
/// use hefl::he::keys::KeyFile;
/// use hefl::secagg::{Identity, Mode, Policy, Roster};
///
/// let ids: Vec<Identity> = (1..=3u8).map(|i| Identity::from_secret_bytes([i; 32])).collect();
/// let policy = Policy { mode: Mode::Strict, parties: 3, min_parties: 3 };
/// let key_id = KeyFile::from_seed([0; 32]).key_id();
/// let roster = Roster::new(key_id, ids.iter().map(|id| id.public()).collect(), policy)?;
/// let parsed = Roster::parse(&roster.to_json())?;
/// assert_eq!(parsed.fingerprint(), roster.fingerprint());
/// assert!(roster.public_key(PartyId(3)).is_err());
/// # Ok::<(), hefl::secagg::RosterError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roster {
    key_id: KeyId,
    policy: Policy,
    keys: Vec<PartyPublicKey>,
    signing: Option<Vec<SigningPublicKey>>,
    fingerprint: Fingerprint,
}

/// Refuses `found` items for a roster of `policy.parties` (`what` names them).
fn check_count(found: usize, policy: &Policy, what: &str) -> Result<(), RosterError> {
    if u32::try_from(found).ok() == Some(policy.parties) {
        Ok(())
    } else {
        Err(RosterError::PartyIds {
            expected: policy.parties,
            found: format!("{found} {what}"),
        })
    }
}

impl Roster {
    /// A roster of `keys` (party i's at index i) under `policy`, for the HE key `key_id`,
    /// without signing keys (so refused for a robust policy: see [`Roster::new_signed`]).
    pub fn new(
        key_id: KeyId,
        keys: Vec<PartyPublicKey>,
        policy: Policy,
    ) -> Result<Self, RosterError> {
        Self::build(key_id, keys, None, policy)
    }

    /// A roster of `keys` and the Ed25519 keys `signing` (party i's at index i of each) under
    /// `policy`, for the HE key `key_id`. Refuses another count of signing keys than of
    /// parties, two parties with one key and a key that is not a valid Ed25519 public key.
    ///
    /// ```
    /// use hefl::fl::PartyId;
    /// use hefl::he::keys::KeyFile;
    /// use hefl::secagg::{Identity, Mode, Policy, RobustPolicy, Roster};
    ///
    /// let ids: Vec<Identity> = (1..=10u8).map(|i| Identity::from_secret_bytes([i; 32])).collect();
    /// let (robust, min_parties) = RobustPolicy::rule_a(10, 3, 3, None, None, false)?;
    /// let policy = Policy { mode: Mode::Robust(robust), parties: 10, min_parties };
    /// let key_id = KeyFile::from_seed([0; 32]).key_id();
    /// let x25519 = ids.iter().map(Identity::public).collect::<Vec<_>>();
    /// let ed25519 = ids.iter().map(Identity::signing_public).collect();
    /// let roster = Roster::new_signed(key_id, x25519.clone(), ed25519, policy)?;
    /// assert_eq!(roster.signing_key(PartyId(4))?, ids[4].signing_public());
    /// // Robust needs every party's signing key.
    /// assert!(Roster::new(key_id, x25519, policy).is_err());
    /// # Ok::<(), hefl::secagg::RosterError>(())
    /// ```
    pub fn new_signed(
        key_id: KeyId,
        keys: Vec<PartyPublicKey>,
        signing: Vec<SigningPublicKey>,
        policy: Policy,
    ) -> Result<Self, RosterError> {
        Self::build(key_id, keys, Some(signing), policy)
    }

    /// This roster with the Ed25519 keys `keys` (party i's at index i), checked and
    /// fingerprinted as [`Roster::new_signed`] does.
    pub fn with_signing_keys(self, keys: Vec<SigningPublicKey>) -> Result<Self, RosterError> {
        Self::new_signed(self.key_id, self.keys, keys, self.policy)
    }

    /// A roster of the parties' public lines as [`PublicLines::parse`](super::PublicLines::parse)
    /// reads them (party i's at index i): with signing keys when every party has one,
    /// otherwise without (refused for a robust policy, naming the first party without one).
    pub fn from_public_lines(
        key_id: KeyId,
        parties: Vec<(PartyPublicKey, Option<SigningPublicKey>)>,
        policy: Policy,
    ) -> Result<Self, RosterError> {
        let (keys, signing): (Vec<_>, Vec<_>) = parties.into_iter().unzip();
        match signing.iter().position(Option::is_none) {
            None => Self::new_signed(
                key_id,
                keys,
                signing.into_iter().flatten().collect(),
                policy,
            ),
            Some(party) if matches!(policy.mode, Mode::Robust(_)) => {
                Err(RosterError::NoSigningKey {
                    party: PartyId(party as u32),
                })
            }
            Some(_) => Self::new(key_id, keys, policy),
        }
    }

    fn build(
        key_id: KeyId,
        keys: Vec<PartyPublicKey>,
        signing: Option<Vec<SigningPublicKey>>,
        policy: Policy,
    ) -> Result<Self, RosterError> {
        check_count(keys.len(), &policy, "parties")?;
        if policy.parties > MAX_ROSTER_PARTIES {
            return Err(RosterError::BadPolicy {
                policy,
                reason: format!("at most {MAX_ROSTER_PARTIES} parties"),
            });
        }
        if policy.min_parties < 2 || policy.min_parties > policy.parties {
            return Err(RosterError::BadPolicy {
                policy,
                reason: format!(
                    "min_parties must be from 2 to {} (a sum of one party is that party's update)",
                    policy.parties
                ),
            });
        }
        if let Some((first, second, key)) = first_duplicate(&keys) {
            return Err(RosterError::DuplicateKey { first, second, key });
        }
        if let Some(signing) = &signing {
            check_count(signing.len(), &policy, "Ed25519 signing keys")?;
            if let Some((first, second, key)) = first_duplicate(signing) {
                return Err(RosterError::DuplicateSigningKey { first, second, key });
            }
            if let Some((party, key)) = (0u32..)
                .map(PartyId)
                .zip(signing.iter().copied())
                .find(|(_, key)| key.as_dalek().is_none())
            {
                return Err(RosterError::InvalidSigningKey { party, key });
            }
        }
        if let Mode::Robust(robust) = policy.mode {
            robust.check(policy.parties, policy.min_parties)?;
            if signing.is_none() {
                return Err(RosterError::NoSigningKey { party: PartyId(0) });
            }
        }
        let mut roster = Self {
            key_id,
            policy,
            keys,
            signing,
            fingerprint: Fingerprint([0; 32]),
        };
        roster.fingerprint = Fingerprint(
            Sha256::new()
                .chain_update(FINGERPRINT_LABEL)
                .chain_update(roster.canonical_json())
                .finalize()
                .into(),
        );
        Ok(roster)
    }

    fn on_disk(&self) -> RosterOnDisk {
        RosterOnDisk {
            format: FILE_FORMAT.to_owned(),
            version: ROSTER_VERSION,
            key_id: self.key_id.to_string(),
            policy: self.policy,
            parties: (0u32..).zip(self.keys.iter().copied()).collect(),
            signing: self
                .signing
                .as_ref()
                .map(|keys| (0u32..).zip(keys.iter().copied()).collect()),
        }
    }

    /// Refuses `identity` unless its public key is this roster's entry for `party`.
    pub fn check_identity(
        &self,
        party: PartyId,
        identity: &super::identity::Identity,
    ) -> Result<(), RosterError> {
        let expected = self.public_key(party)?;
        if expected != identity.public() {
            return Err(RosterError::WrongIdentity {
                party,
                expected,
                found: identity.public(),
            });
        }
        Ok(())
    }

    /// The compact JSON the fingerprint hashes: fields in a fixed order, parties by id.
    fn canonical_json(&self) -> Vec<u8> {
        // Serializing plain strings, integers and maps cannot fail.
        serde_json::to_vec(&self.on_disk()).unwrap_or_default()
    }

    /// The roster as the JSON of its file (pretty-printed, ending in a newline).
    pub fn to_json(&self) -> Vec<u8> {
        let mut text = serde_json::to_vec_pretty(&self.on_disk()).unwrap_or_default();
        text.push(b'\n');
        text
    }

    /// Parses and validates a roster file's contents (at most [`MAX_ROSTER_BYTES`]): format,
    /// version, party ids 0 to P - 1 as the policy says (for the signing keys too, if any),
    /// distinct keys, a policy that holds. Its fingerprint hashes the canonical form, so white
    /// space does not change it.
    pub fn parse(text: &[u8]) -> Result<Self, RosterError> {
        if text.len() as u64 > MAX_ROSTER_BYTES {
            return Err(RosterError::Malformed {
                reason: format!("{} bytes, at most {MAX_ROSTER_BYTES}", text.len()),
            });
        }
        let on_disk: RosterOnDisk =
            serde_json::from_slice(text).map_err(|e| RosterError::Malformed {
                reason: e.to_string(),
            })?;
        if on_disk.format != FILE_FORMAT {
            return Err(RosterError::Malformed {
                reason: format!(
                    "format tag is {:?}, expected {FILE_FORMAT:?}",
                    on_disk.format.chars().take(40).collect::<String>()
                ),
            });
        }
        if on_disk.version != ROSTER_VERSION {
            return Err(RosterError::Version {
                expected: ROSTER_VERSION,
                found: on_disk.version,
            });
        }
        let parties = on_disk.policy.parties;
        let keys = by_id(on_disk.parties, parties, "party")?;
        let signing = on_disk
            .signing
            .map(|map| by_id(map, parties, "signing key"))
            .transpose()?;
        let key_id: KeyId = on_disk.key_id.parse().map_err(|_| RosterError::Malformed {
            reason: "the key id is not 64 hex digits".to_owned(),
        })?;
        Self::build(key_id, keys, signing, on_disk.policy)
    }

    /// The SHA-256 fingerprint (over the label `hefl/v1/roster` and the canonical JSON). It
    /// hashes public data only (key id, public keys, policy), so printing or publishing it
    /// leaks nothing the roster does not.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Refuses the roster unless its fingerprint is `expected` (compared out of band).
    pub fn check_fingerprint(&self, expected: Fingerprint) -> Result<(), RosterError> {
        if self.fingerprint == expected {
            Ok(())
        } else {
            Err(RosterError::WrongFingerprint {
                expected,
                found: self.fingerprint,
            })
        }
    }

    /// Refuses an HE key other than the roster's.
    pub fn check_key(&self, found: KeyId) -> Result<(), RosterError> {
        if found == self.key_id {
            Ok(())
        } else {
            Err(RosterError::WrongKey {
                expected: self.key_id,
                found,
            })
        }
    }

    /// Refuses a plan's policy that is weaker than the roster's: another mode, another party
    /// count, or fewer parties in a sum; for `robust`, other colluders, dropouts, neighbours
    /// or threshold, or no consistency check where the roster has one. A stricter
    /// `min_parties`, or a consistency check the roster does not ask for, is accepted.
    ///
    /// ```
    /// # use hefl::he::keys::KeyFile;
    /// # use hefl::secagg::{Identity, Mode, Policy, Roster, RosterError};
    /// # let ids: Vec<_> = (1..=3u8).map(|i| Identity::from_secret_bytes([i; 32]).public()).collect();
    /// let policy = Policy { mode: Mode::Strict, parties: 3, min_parties: 2 };
    /// let roster = Roster::new(KeyFile::from_seed([0; 32]).key_id(), ids, policy)?;
    /// assert!(roster.check_policy(&Policy { min_parties: 3, ..policy }).is_ok());
    /// let err = roster.check_policy(&Policy { min_parties: 1, ..policy }).unwrap_err();
    /// assert_eq!(err.to_string(), "the plan weakens the roster's policy: min_parties: the roster says 2, the plan 1");
    /// # Ok::<(), RosterError>(())
    /// ```
    pub fn check_policy(&self, plan: &Policy) -> Result<(), RosterError> {
        let ours = &self.policy;
        match (ours.mode, plan.mode) {
            (Mode::Strict, Mode::Strict) => {}
            (Mode::Robust(ours), Mode::Robust(theirs)) => ours.check_plan(&theirs)?,
            (ours, theirs) => return Err(weakened("mode", ours, theirs)),
        }
        if plan.parties != ours.parties {
            return Err(weakened("parties", ours.parties, plan.parties));
        }
        if plan.min_parties < ours.min_parties {
            return Err(weakened("min_parties", ours.min_parties, plan.min_parties));
        }
        Ok(())
    }

    /// Party `party`'s public key, or [`RosterError::UnknownParty`].
    pub fn public_key(&self, party: PartyId) -> Result<PartyPublicKey, RosterError> {
        self.keys
            .get(party.0 as usize)
            .copied()
            .ok_or(RosterError::UnknownParty {
                party,
                last: self.policy.parties.saturating_sub(1),
            })
    }

    /// Party `party`'s Ed25519 public key: [`RosterError::UnknownParty`] for a party not in
    /// the roster, [`RosterError::NoSigningKey`] when the roster has no signing keys.
    pub fn signing_key(&self, party: PartyId) -> Result<SigningPublicKey, RosterError> {
        self.public_key(party)?;
        self.signing
            .as_ref()
            .and_then(|keys| keys.get(party.0 as usize))
            .copied()
            .ok_or(RosterError::NoSigningKey { party })
    }

    /// Every party's Ed25519 public key (party i's at index i), if the roster has them.
    pub fn signing_keys(&self) -> Option<&[SigningPublicKey]> {
        self.signing.as_deref()
    }

    /// The HE key id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The parties, by id.
    pub fn parties(&self) -> impl Iterator<Item = PartyId> + '_ {
        (0..self.policy.parties).map(PartyId)
    }
}

/// The most neighbours a robust party may have: GF(256) Shamir makes at most 255 shares.
const MAX_NEIGHBOURS: u32 = 255;

/// How secure aggregation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Pairwise blinds from the roster's static keys; a round with a member missing is void.
    Strict,
    /// Bonawitz et al.'s protocol on a neighbourhood graph (SecAgg+): signed per-round keys,
    /// blinds with a party's neighbours and a self-blind, Shamir shares of both, so that a
    /// round survives up to `dropouts` missing parties.
    Robust(RobustPolicy),
}

impl Mode {
    /// The mode's name, as `--secure-agg` takes it.
    pub fn name(&self) -> ModeName {
        match self {
            Self::Strict => ModeName::Strict,
            Self::Robust(_) => ModeName::Robust,
        }
    }
}

/// `strict`, or `robust (c colluders, d dropouts, k neighbours, threshold T[, consistency
/// check])`.
impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Strict => f.write_str("strict"),
            Self::Robust(robust) => write!(f, "robust ({robust})"),
        }
    }
}

/// Parses `strict`; `robust` needs its parameters, which a name does not carry (see
/// [`RobustPolicy::rule_a`]).
///
/// ```
/// use hefl::secagg::Mode;
///
/// assert_eq!("strict".parse::<Mode>(), Ok(Mode::Strict));
/// assert!("robust".parse::<Mode>().unwrap_err().contains("--max-colluders"));
/// ```
impl FromStr for Mode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.parse::<ModeName>()? {
            ModeName::Strict => Ok(Self::Strict),
            ModeName::Robust => Err(
                "secure aggregation mode \"robust\" takes its parameters from the roster \
                 (`hefl roster --secure-agg robust --max-colluders C --max-dropouts D`)"
                    .to_owned(),
            ),
        }
    }
}

/// A mode's name, without its parameters: what a `--secure-agg` flag takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModeName {
    /// [`Mode::Strict`].
    Strict,
    /// [`Mode::Robust`].
    Robust,
}

impl fmt::Display for ModeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Strict => "strict",
            Self::Robust => "robust",
        })
    }
}

impl FromStr for ModeName {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "strict" => Ok(Self::Strict),
            "robust" => Ok(Self::Robust),
            other => Err(format!(
                "secure aggregation mode {other:?}: expected \"strict\" or \"robust\""
            )),
        }
    }
}

/// `robust`'s parameters, pinned in the roster.
///
/// ```
/// use hefl::secagg::RobustPolicy;
///
/// // 100 parties, up to 10 colluders and 10 dropouts per round.
/// let (robust, min_parties) = RobustPolicy::rule_a(100, 10, 10, None, None, false)?;
/// assert_eq!((robust.threshold, robust.neighbours, min_parties), (11, 22, 90));
/// assert_eq!(robust.to_string(), "10 colluders, 10 dropouts, 22 neighbours, threshold 11");
/// # Ok::<(), hefl::secagg::RosterError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobustPolicy {
    /// c: the most clients colluding with the server that a round's privacy withstands.
    pub colluders: u32,
    /// d: the most parties a round may lose after it started and still publish a sum.
    pub dropouts: u32,
    /// k: each party's neighbours, who blind with it and hold shares of its secrets.
    pub neighbours: u32,
    /// T: the shares that reconstruct a party's secret (of its k).
    pub threshold: u32,
    /// Before unmasking, every alive party signs the round's alive set and refuses an unmask
    /// request without T of its neighbours' signatures on the same set (design §1.5, R2½).
    pub consistency_check: bool,
}

impl fmt::Display for RobustPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} colluders, {} dropouts, {} neighbours, threshold {}",
            self.colluders, self.dropouts, self.neighbours, self.threshold
        )?;
        if self.consistency_check {
            f.write_str(", consistency check")?;
        }
        Ok(())
    }
}

impl RobustPolicy {
    /// The parameters of rule (a) for `parties` parties against `colluders` colluders and
    /// `dropouts` dropouts per round, and the default `min_parties` (parties - dropouts):
    /// T = c + 1 and k = c + d + 1 rounded up to even, capped at P - 1, unless `neighbours`
    /// or `threshold` overrides them. Refused ([`RosterError::BadPolicy`], the reason naming
    /// the numbers) when the result cannot hold: see [`RobustPolicy::check`].
    ///
    /// ```
    /// use hefl::secagg::RobustPolicy;
    ///
    /// let (robust, min_parties) = RobustPolicy::rule_a(10, 3, 3, None, None, true)?;
    /// assert_eq!((robust.threshold, robust.neighbours, min_parties), (4, 8, 7));
    /// // Three parties cannot survive a dropout with a colluder among them.
    /// let err = RobustPolicy::rule_a(3, 1, 1, None, None, false).unwrap_err();
    /// assert!(err.to_string().contains("--secure-agg strict"), "{err}");
    /// // A threshold the colluders reach is refused.
    /// assert!(RobustPolicy::rule_a(10, 3, 3, None, Some(3), false).is_err());
    /// # Ok::<(), hefl::secagg::RosterError>(())
    /// ```
    pub fn rule_a(
        parties: u32,
        colluders: u32,
        dropouts: u32,
        neighbours: Option<u32>,
        threshold: Option<u32>,
        consistency_check: bool,
    ) -> Result<(RobustPolicy, u32), RosterError> {
        let robust = Self {
            colluders,
            dropouts,
            neighbours: neighbours
                .unwrap_or_else(|| Self::rule_a_neighbours(parties, colluders, dropouts)),
            threshold: threshold.unwrap_or(colluders.saturating_add(1)),
            consistency_check,
        };
        let min_parties = parties.saturating_sub(dropouts);
        robust.check(parties, min_parties)?;
        Ok((robust, min_parties))
    }

    /// Rule (a)'s neighbours for `parties` parties against `colluders` colluders and
    /// `dropouts` dropouts: c + d + 1 rounded up to even (a Harary graph of even degree),
    /// capped at P - 1 (everyone else).
    ///
    /// ```
    /// use hefl::secagg::RobustPolicy;
    ///
    /// assert_eq!(RobustPolicy::rule_a_neighbours(100, 10, 10), 22);
    /// assert_eq!(RobustPolicy::rule_a_neighbours(10, 3, 3), 8);
    /// assert_eq!(RobustPolicy::rule_a_neighbours(5, 3, 3), 4);
    /// ```
    pub fn rule_a_neighbours(parties: u32, colluders: u32, dropouts: u32) -> u32 {
        let wanted = u64::from(colluders) + u64::from(dropouts) + 1;
        let even = wanted + wanted % 2;
        let capped = even.min(u64::from(parties.saturating_sub(1)));
        // At most P - 1, a u32.
        u32::try_from(capped).unwrap_or(u32::MAX)
    }

    /// Refuses parameters that cannot hold for `parties` parties with at least `min_parties`
    /// in a sum: fewer than 1 or more than P - 1 neighbours, more than 255 (GF(256) Shamir's
    /// most shares), a threshold T <= c (the colluders could reconstruct), k - d < T (too
    /// few holders alive after d dropouts), `min_parties` below c + 2 (a sum must hold at
    /// least two honest parties) or above P.
    pub fn check(&self, parties: u32, min_parties: u32) -> Result<(), RosterError> {
        match self.refusal(parties, min_parties) {
            None => Ok(()),
            Some(reason) => Err(RosterError::BadPolicy {
                policy: Policy {
                    mode: Mode::Robust(*self),
                    parties,
                    min_parties,
                },
                reason,
            }),
        }
    }

    /// Why [`RobustPolicy::check`] refuses, if it does.
    fn refusal(&self, parties: u32, min_parties: u32) -> Option<String> {
        let Self {
            colluders: c,
            dropouts: d,
            neighbours: k,
            threshold: t,
            ..
        } = *self;
        let others = parties.saturating_sub(1);
        let honest_floor = u64::from(c) + 2;
        if k < 1 {
            return Some("neighbours k = 0: a party needs neighbours to hold its shares".into());
        }
        if k > others {
            return Some(format!(
                "neighbours k = {k}, but a party of {parties} has only {others} others"
            ));
        }
        if k > MAX_NEIGHBOURS {
            return Some(format!(
                "neighbours k = {k}: GF(256) Shamir holds at most {MAX_NEIGHBOURS} shares (one per \
                 neighbour); random-graph parameters for large federations are not built yet"
            ));
        }
        if t <= c {
            return Some(format!(
                "threshold T = {t} with c = {c} colluders: they could reconstruct a party's \
                 secrets together (T must be at least c + 1 = {})",
                u64::from(c) + 1
            ));
        }
        if k.saturating_sub(d) < t {
            let alive = k.saturating_sub(d);
            let advice = if u64::from(parties) < u64::from(c) + u64::from(d) + 2 {
                format!(
                    "{parties} parties cannot withstand {c} colluders and {d} dropouts at once \
                     (that takes at least c + d + 2 = {} parties): lower --max-dropouts or \
                     --max-colluders, or use `--secure-agg strict` (a round with a party \
                     missing is void)",
                    u64::from(c) + u64::from(d) + 2
                )
            } else {
                format!("k must be at least d + T = {}", u64::from(d) + u64::from(t))
            };
            return Some(format!(
                "with k = {k} neighbours and d = {d} dropouts only {alive} share holders may be \
                 alive, fewer than the threshold T = {t}: {advice}"
            ));
        }
        if u64::from(min_parties) < honest_floor {
            return Some(format!(
                "min_parties {min_parties} is below c + 2 = {honest_floor}: a sum must hold at \
                 least two honest parties besides the {c} colluders"
            ));
        }
        if min_parties > parties {
            return Some(format!(
                "min_parties {min_parties} is more than the {parties} parties"
            ));
        }
        None
    }

    /// Refuses `plan`'s parameters unless they are these: the same colluders, dropouts,
    /// neighbours and threshold, and the consistency check on if it is on here.
    pub(crate) fn check_plan(&self, plan: &RobustPolicy) -> Result<(), RosterError> {
        let same = [
            ("colluders", self.colluders, plan.colluders),
            ("dropouts", self.dropouts, plan.dropouts),
            ("neighbours", self.neighbours, plan.neighbours),
            ("threshold", self.threshold, plan.threshold),
        ];
        if let Some((rule, ours, theirs)) = same.into_iter().find(|(_, a, b)| a != b) {
            return Err(weakened(rule, ours, theirs));
        }
        if self.consistency_check && !plan.consistency_check {
            return Err(weakened("consistency_check", "on", "off"));
        }
        Ok(())
    }
}

/// A plan's `rule` is weaker than the roster's: the roster says `expected`, the plan `found`.
pub(crate) fn weakened(
    rule: &'static str,
    expected: impl fmt::Display,
    found: impl fmt::Display,
) -> RosterError {
    RosterError::PolicyWeakened {
        rule,
        expected: expected.to_string(),
        found: found.to_string(),
    }
}

/// What a federation's secure aggregation guarantees: pinned in the roster, so that the
/// server, which only relays, cannot weaken it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The mode.
    pub mode: Mode,
    /// Parties in the roster (ids 0 to parties - 1).
    pub parties: u32,
    /// The fewest parties a published sum may hold: the privacy floor against a server that
    /// drops parties from the set (`robust`: A_min).
    pub min_parties: u32,
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mode {}, {} parties, at least {} in a sum",
            self.mode, self.parties, self.min_parties
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::he::keys::KeyFile;
    use crate::secagg::{Identity, RobustPolicy};

    fn identities(parties: u8) -> Vec<Identity> {
        (1..=parties)
            .map(|i| Identity::from_secret_bytes([i; 32]))
            .collect()
    }

    fn key_id() -> KeyId {
        KeyFile::from_seed([0; 32]).key_id()
    }

    fn x25519(ids: &[Identity]) -> Vec<PartyPublicKey> {
        ids.iter().map(Identity::public).collect()
    }

    fn ed25519(ids: &[Identity]) -> Vec<SigningPublicKey> {
        ids.iter().map(Identity::signing_public).collect()
    }

    fn strict(parties: u32, min_parties: u32) -> Policy {
        Policy {
            mode: Mode::Strict,
            parties,
            min_parties,
        }
    }

    /// Rule (a)'s policy at `parties` parties with c colluders and d dropouts.
    fn robust(parties: u32, c: u32, d: u32) -> Policy {
        let (robust, min_parties) = RobustPolicy::rule_a(parties, c, d, None, None, false).unwrap();
        Policy {
            mode: Mode::Robust(robust),
            parties,
            min_parties,
        }
    }

    #[test]
    fn a_strict_roster_without_signing_keys_keeps_its_fingerprint() {
        let roster = Roster::new(key_id(), x25519(&identities(3)), strict(3, 3)).unwrap();
        // Computed with the code on main before signing keys existed (commit 299453c): a
        // strict roster's JSON, and so its fingerprint, must not change.
        assert_eq!(
            roster.fingerprint().to_string(),
            "048a02ad97c286a20d0eacfa6a4b0bf86ef90aaf2e3273de897e68a249d7aa74"
        );
        assert!(!String::from_utf8_lossy(&roster.to_json()).contains("signing"));
        assert_eq!(roster.signing_keys(), None);
        let err = roster.signing_key(PartyId(1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the roster has no Ed25519 key for party 1: robust mode needs rosters made from \
             `hefl identity` public files that carry the `hefl-ed25519-v1` line"
        );
        assert!(matches!(
            roster.signing_key(PartyId(3)),
            Err(RosterError::UnknownParty { .. })
        ));
    }

    #[test]
    fn a_roster_with_signing_keys_round_trips_and_fingerprints_them() {
        let ids = identities(3);
        let plain = Roster::new(key_id(), x25519(&ids), strict(3, 3)).unwrap();
        let signed =
            Roster::new_signed(key_id(), x25519(&ids), ed25519(&ids), strict(3, 3)).unwrap();
        assert_eq!(
            plain.clone().with_signing_keys(ed25519(&ids)).unwrap(),
            signed
        );
        assert_ne!(signed.fingerprint(), plain.fingerprint());
        let json = signed.to_json();
        assert!(String::from_utf8_lossy(&json).contains("\"signing\""));
        let parsed = Roster::parse(&json).unwrap();
        assert_eq!(parsed, signed);
        assert_eq!(
            parsed.signing_key(PartyId(2)).unwrap(),
            ids[2].signing_public()
        );
        // Another signing key changes the fingerprint.
        let mut other = ed25519(&ids);
        other[1] = Identity::from_secret_bytes([9; 32]).signing_public();
        let changed = plain.with_signing_keys(other).unwrap();
        assert_ne!(changed.fingerprint(), signed.fingerprint());
        // A file whose signing ids are not 0 to P - 1.
        let mut value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        value["signing"].as_object_mut().unwrap().remove("2");
        let err = Roster::parse(&serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert!(err.to_string().contains("signing key ids 0, 1"), "{err}");
    }

    #[test]
    fn the_largest_signed_roster_fits_in_its_file_limit() {
        let ids: Vec<Identity> = (0..MAX_ROSTER_PARTIES)
            .map(|i| {
                // Bytes X25519's clamping leaves alone.
                let mut secret = [1u8; 32];
                secret[8..12].copy_from_slice(&i.to_le_bytes());
                Identity::from_secret_bytes(secret)
            })
            .collect();
        let policy = strict(MAX_ROSTER_PARTIES, 2);
        let roster = Roster::new_signed(key_id(), x25519(&ids), ed25519(&ids), policy).unwrap();
        let json = roster.to_json();
        assert!(
            json.len() as u64 <= MAX_ROSTER_BYTES,
            "{} bytes, limit {MAX_ROSTER_BYTES}",
            json.len()
        );
        assert_eq!(
            Roster::parse(&json).unwrap().fingerprint(),
            roster.fingerprint()
        );
    }

    #[test]
    fn signing_keys_are_refused_when_miscounted_shared_or_not_points() {
        let ids = identities(3);
        let keys = x25519(&ids);
        let with = |signing: Vec<SigningPublicKey>| {
            Roster::new_signed(key_id(), keys.clone(), signing, strict(3, 3)).unwrap_err()
        };
        let err = with(ed25519(&ids[..2]));
        assert!(
            err.to_string().contains("it lists 2 Ed25519 signing keys"),
            "{err}"
        );
        let mut shared = ed25519(&ids);
        shared[2] = shared[0];
        assert!(matches!(
            with(shared),
            RosterError::DuplicateSigningKey {
                first: PartyId(0),
                second: PartyId(2),
                ..
            }
        ));
        let mut invalid = ed25519(&ids);
        // y = 2 is on no point of edwards25519.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        invalid[1] = SigningPublicKey(off_curve);
        assert!(matches!(
            with(invalid),
            RosterError::InvalidSigningKey {
                party: PartyId(1),
                ..
            }
        ));
    }

    #[test]
    fn a_robust_roster_needs_every_signing_key_and_a_policy_that_holds() {
        let ids = identities(10);
        let policy = robust(10, 3, 3);
        let err = Roster::new(key_id(), x25519(&ids), policy).unwrap_err();
        assert!(
            matches!(err, RosterError::NoSigningKey { party: PartyId(0) }),
            "{err}"
        );
        let roster = Roster::new_signed(key_id(), x25519(&ids), ed25519(&ids), policy).unwrap();
        assert_eq!(Roster::parse(&roster.to_json()).unwrap(), roster);
        // The file without its signing keys is refused.
        let mut value: serde_json::Value = serde_json::from_slice(&roster.to_json()).unwrap();
        value.as_object_mut().unwrap().remove("signing");
        let err = Roster::parse(&serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert!(matches!(err, RosterError::NoSigningKey { .. }), "{err}");
        // From public lines: one party without its Ed25519 line is named.
        let mut lines: Vec<_> = ids
            .iter()
            .map(|id| (id.public(), Some(id.signing_public())))
            .collect();
        lines[4].1 = None;
        let err = Roster::from_public_lines(key_id(), lines.clone(), policy).unwrap_err();
        assert!(
            matches!(err, RosterError::NoSigningKey { party: PartyId(4) }),
            "{err}"
        );
        // Strict takes them all or none.
        let strict_roster = Roster::from_public_lines(key_id(), lines, strict(10, 10)).unwrap();
        assert_eq!(strict_roster.signing_keys(), None);
        // Roster::new checks robust's parameters as rule (a) does: a sum of c + 1 parties.
        let Mode::Robust(params) = policy.mode else {
            unreachable!()
        };
        let low = Policy {
            min_parties: 4,
            ..policy
        };
        let err = Roster::new_signed(key_id(), x25519(&ids), ed25519(&ids), low).unwrap_err();
        assert!(err.to_string().contains("below c + 2 = 5"), "{err}");
        let weak_threshold = Policy {
            mode: Mode::Robust(RobustPolicy {
                threshold: 3,
                ..params
            }),
            ..policy
        };
        let err =
            Roster::new_signed(key_id(), x25519(&ids), ed25519(&ids), weak_threshold).unwrap_err();
        assert!(matches!(err, RosterError::BadPolicy { .. }), "{err}");
    }

    #[test]
    fn plans_may_tighten_a_robust_roster_never_weaken_it() {
        let ids = identities(10);
        let policy = robust(10, 3, 3);
        let Mode::Robust(params) = policy.mode else {
            unreachable!()
        };
        let roster = Roster::new_signed(key_id(), x25519(&ids), ed25519(&ids), policy).unwrap();
        roster.check_policy(&policy).unwrap();
        // Stricter: more parties in a sum, a consistency check the roster does not ask for.
        roster
            .check_policy(&Policy {
                min_parties: 9,
                ..policy
            })
            .unwrap();
        let checked = Mode::Robust(RobustPolicy {
            consistency_check: true,
            ..params
        });
        roster
            .check_policy(&Policy {
                mode: checked,
                ..policy
            })
            .unwrap();
        // Weaker: a strict plan, fewer in a sum, other k, T, c or d.
        let err = roster.check_policy(&strict(10, 10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the plan weakens the roster's policy: mode: the roster says robust (3 colluders, \
             3 dropouts, 8 neighbours, threshold 4), the plan strict"
        );
        let err = roster
            .check_policy(&Policy {
                min_parties: 6,
                ..policy
            })
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("min_parties: the roster says 7, the plan 6"),
            "{err}"
        );
        let changed = [
            (
                "neighbours",
                RobustPolicy {
                    neighbours: 6,
                    ..params
                },
            ),
            (
                "threshold",
                RobustPolicy {
                    threshold: 3,
                    ..params
                },
            ),
            (
                "colluders",
                RobustPolicy {
                    colluders: 2,
                    ..params
                },
            ),
            (
                "dropouts",
                RobustPolicy {
                    dropouts: 4,
                    ..params
                },
            ),
        ];
        for (rule, plan) in changed {
            let err = roster
                .check_policy(&Policy {
                    mode: Mode::Robust(plan),
                    ..policy
                })
                .unwrap_err();
            assert!(
                matches!(err, RosterError::PolicyWeakened { rule: r, .. } if r == rule),
                "{rule}: {err}"
            );
        }
        // A roster with the consistency check refuses a plan without it.
        let checked_roster = Roster::new_signed(
            key_id(),
            x25519(&ids),
            ed25519(&ids),
            Policy {
                mode: checked,
                ..policy
            },
        )
        .unwrap();
        let err = checked_roster.check_policy(&policy).unwrap_err();
        assert!(
            err.to_string()
                .contains("consistency_check: the roster says on, the plan off"),
            "{err}"
        );
        // A strict roster refuses a robust plan.
        let strict_roster =
            Roster::new_signed(key_id(), x25519(&ids), ed25519(&ids), strict(10, 10)).unwrap();
        let err = strict_roster.check_policy(&policy).unwrap_err();
        assert!(
            err.to_string()
                .contains("mode: the roster says strict, the plan robust (3 colluders"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    /// Rule (a) with no overrides, min_parties P - d.
    fn rule_a(parties: u32, c: u32, d: u32) -> Result<(RobustPolicy, u32), RosterError> {
        RobustPolicy::rule_a(parties, c, d, None, None, false)
    }

    #[test]
    fn rule_a_at_three_parties_refuses_a_colluder_and_a_dropout_and_says_strict() {
        let err = rule_a(3, 1, 1).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, RosterError::BadPolicy { .. }), "{text}");
        assert!(
            text.contains("only 1 share holders may be alive, fewer than the threshold T = 2")
                && text.contains("use `--secure-agg strict`"),
            "{text}"
        );
        // With no dropout, three parties withstand one colluder (k = 2 = T).
        let (robust, min_parties) = rule_a(3, 1, 0).unwrap();
        assert_eq!(
            (robust.neighbours, robust.threshold, min_parties),
            (2, 2, 3)
        );
    }

    #[test]
    fn rule_a_at_ten_and_a_hundred_parties() {
        let (robust, min_parties) = rule_a(10, 3, 3).unwrap();
        assert_eq!(
            (robust.threshold, robust.neighbours, min_parties),
            (4, 8, 7),
            "P = 10, c = d = 3: T = c + 1, k = c + d + 1 = 7 rounded up to 8"
        );
        let (robust, min_parties) = rule_a(100, 10, 10).unwrap();
        assert_eq!(
            (robust.threshold, robust.neighbours, min_parties),
            (11, 22, 90)
        );
        assert_eq!(
            Mode::Robust(robust).to_string(),
            "robust (10 colluders, 10 dropouts, 22 neighbours, threshold 11)"
        );
        let with_check = RobustPolicy {
            consistency_check: true,
            ..robust
        };
        assert_eq!(
            Mode::Robust(with_check).to_string(),
            "robust (10 colluders, 10 dropouts, 22 neighbours, threshold 11, consistency check)"
        );
    }

    #[test]
    fn rule_a_refuses_more_than_255_neighbours() {
        // c = d = 100 of 300 gives k = 202: within GF(256)'s 255 shares.
        let (robust, _) = rule_a(300, 100, 100).unwrap();
        assert_eq!((robust.neighbours, robust.threshold), (202, 101));
        // c = d = 130 of 300 would need k = 262.
        let text = rule_a(300, 130, 130).unwrap_err().to_string();
        assert!(
            text.contains("neighbours k = 262") && text.contains("at most 255 shares"),
            "{text}"
        );
        assert!(text.contains("random-graph parameters"), "{text}");
    }

    #[test]
    fn overrides_weaker_than_rule_a_are_refused() {
        // T = c: the colluders hold enough shares.
        let text = RobustPolicy::rule_a(100, 10, 10, None, Some(10), false)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("threshold T = 10 with c = 10 colluders"),
            "{text}"
        );
        // k - d < T: too few holders survive the dropouts.
        let text = RobustPolicy::rule_a(100, 10, 10, Some(20), None, false)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("only 10 share holders") && text.contains("at least d + T = 21"),
            "{text}"
        );
        // More neighbours than others, none at all.
        let text = RobustPolicy::rule_a(10, 1, 1, Some(10), None, false)
            .unwrap_err()
            .to_string();
        assert!(text.contains("has only 9 others"), "{text}");
        assert!(RobustPolicy::rule_a(10, 0, 0, Some(0), None, false).is_err());
        // Stronger overrides are accepted (an odd k too).
        let (robust, _) = RobustPolicy::rule_a(100, 10, 10, Some(31), Some(12), true).unwrap();
        assert_eq!((robust.neighbours, robust.threshold), (31, 12));
    }

    #[test]
    fn min_parties_must_keep_two_honest_parties_in_a_sum() {
        let (robust, _) = rule_a(10, 3, 3).unwrap();
        let text = robust.check(10, 4).unwrap_err().to_string();
        assert!(text.contains("min_parties 4 is below c + 2 = 5"), "{text}");
        robust.check(10, 5).unwrap();
        assert!(robust.check(10, 11).is_err());
    }

    #[test]
    fn mode_names_parse_and_strict_serializes_as_before() {
        assert_eq!("robust".parse::<ModeName>(), Ok(ModeName::Robust));
        assert!(
            "lenient"
                .parse::<ModeName>()
                .unwrap_err()
                .contains("\"robust\"")
        );
        assert_eq!(serde_json::to_string(&Mode::Strict).unwrap(), "\"strict\"");
        let (robust, _) = rule_a(10, 3, 3).unwrap();
        let text = serde_json::to_string(&Mode::Robust(robust)).unwrap();
        assert_eq!(
            serde_json::from_str::<Mode>(&text).unwrap(),
            Mode::Robust(robust)
        );
        assert_eq!(Mode::Robust(robust).name(), ModeName::Robust);
    }
}
