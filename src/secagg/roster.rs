//! The roster: the trust anchor of secure aggregation. It pins the HE key id, every party's
//! X25519 public key and the policy (mode, parties, the fewest parties in a sum), and is
//! compared out of band by its SHA-256 fingerprint. The server only relays it; a plan whose
//! policy is weaker than the roster's is refused by the parties, never the reverse.
//!
//! On disk (`hefl roster ... --out roster.json`):
//!
//! ```text
//! {"format":"hefl-roster","version":1,"key_id":"<64 hex>",
//!  "policy":{"mode":"strict","parties":3,"min_parties":3},
//!  "parties":{"0":"<64 hex>","1":"<64 hex>","2":"<64 hex>"}}
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::identity::PartyPublicKey;
use crate::fl::PartyId;
use crate::he::keys::KeyId;

/// Format tag of roster files.
const FILE_FORMAT: &str = "hefl-roster";
/// The roster version this release reads and writes.
pub const ROSTER_VERSION: u32 = 1;
/// The most parties a roster may list (hefl's encodings are sized for at most this many).
pub const MAX_ROSTER_PARTIES: u32 = 10_000;
/// A roster of 10,000 parties is about 800 KB.
pub const MAX_ROSTER_BYTES: u64 = 1 << 20;
/// Domain label of the fingerprint.
const FINGERPRINT_LABEL: &[u8] = b"hefl/v1/roster\0";

/// How secure aggregation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Pairwise blinds from the roster's static keys; a round with a member missing is void.
    Strict,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Strict => "strict",
        })
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "strict" => Ok(Self::Strict),
            other => Err(format!(
                "secure aggregation mode {other:?}: expected \"strict\""
            )),
        }
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
    /// drops parties from the set.
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
}

/// A validated roster: the HE key id, party ids 0 to P - 1 with distinct public keys, and a
/// policy that can hold (at least 2 parties in a sum, at most P).
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
    fingerprint: Fingerprint,
}

impl Roster {
    /// A roster of `keys` (party i's at index i) under `policy`, for the HE key `key_id`.
    pub fn new(
        key_id: KeyId,
        keys: Vec<PartyPublicKey>,
        policy: Policy,
    ) -> Result<Self, RosterError> {
        let found = keys.len();
        if u32::try_from(found).ok() != Some(policy.parties) {
            return Err(RosterError::PartyIds {
                expected: policy.parties,
                found: format!("{found} parties"),
            });
        }
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
        let mut seen = BTreeMap::new();
        for (i, key) in keys.iter().enumerate() {
            if let Some(first) = seen.insert(*key, i) {
                return Err(RosterError::DuplicateKey {
                    first: PartyId(first as u32),
                    second: PartyId(i as u32),
                    key: *key,
                });
            }
        }
        let mut roster = Self {
            key_id,
            policy,
            keys,
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
        }
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
    /// version, party ids 0 to P - 1 as the policy says, distinct keys, a policy that holds.
    /// Its fingerprint hashes the canonical form, so white space does not change it.
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
        let ids_in_order = on_disk
            .parties
            .keys()
            .copied()
            .eq(0..on_disk.policy.parties);
        if !ids_in_order {
            let ids: Vec<String> = on_disk
                .parties
                .keys()
                .take(20)
                .map(u32::to_string)
                .collect();
            return Err(RosterError::PartyIds {
                expected: on_disk.policy.parties,
                found: format!("ids {}", ids.join(", ")),
            });
        }
        let key_id: KeyId = on_disk.key_id.parse().map_err(|_| RosterError::Malformed {
            reason: "the key id is not 64 hex digits".to_owned(),
        })?;
        Self::new(
            key_id,
            on_disk.parties.into_values().collect(),
            on_disk.policy,
        )
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
    /// count, or fewer parties in a sum. A stricter `min_parties` is accepted.
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
        let weakened = |rule, expected: String, found: String| {
            Err(RosterError::PolicyWeakened {
                rule,
                expected,
                found,
            })
        };
        if plan.mode != ours.mode {
            return weakened("mode", ours.mode.to_string(), plan.mode.to_string());
        }
        if plan.parties != ours.parties {
            return weakened(
                "parties",
                ours.parties.to_string(),
                plan.parties.to_string(),
            );
        }
        if plan.min_parties < ours.min_parties {
            return weakened(
                "min_parties",
                ours.min_parties.to_string(),
                plan.min_parties.to_string(),
            );
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
