//! What a party brings to a federation with secure aggregation: its identity and the roster
//! it compared out of band, and the checks it runs on the plan a server hands it.

use std::fmt;
use std::sync::Arc;

use super::blind::{Blinder, SecAggError};
use super::identity::Identity;
use super::roster::{Fingerprint, Mode, Policy, Roster, RosterError};
use crate::fl::PartyId;
use crate::he::keys::KeyId;

/// A party's identity and its roster, whose fingerprint matched the one compared out of band.
/// Cloning shares them; equal when the public key and the roster are.
///
/// ```
/// use hefl::fl::PartyId;
/// use hefl::he::keys::KeyFile;
/// use hefl::secagg::{Credentials, Identity, Mode, Policy, Roster};
///
/// let key_id = KeyFile::from_seed([0; 32]).key_id();
/// let ids: Vec<Identity> = (1..=3u8).map(|i| Identity::from_secret_bytes([i; 32])).collect();
/// let policy = Policy { mode: Mode::Strict, parties: 3, min_parties: 3 };
/// let roster = Roster::new(key_id, ids.iter().map(Identity::public).collect(), policy)?;
/// let fingerprint = roster.fingerprint();
/// let mine = Credentials::new(ids.into_iter().next().unwrap(), roster, fingerprint)?;
/// // The server's plan must be the roster's, or stricter.
/// mine.check_plan(PartyId(0), Some(key_id), Some(policy))?;
/// assert!(mine.check_plan(PartyId(0), Some(key_id), None).is_err());
/// assert!(mine.check_plan(PartyId(1), Some(key_id), Some(policy)).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Credentials {
    identity: Arc<Identity>,
    roster: Arc<Roster>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("public", &self.identity.public())
            .field("roster", &self.roster.fingerprint())
            .finish_non_exhaustive()
    }
}

impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        self.identity.public() == other.identity.public() && self.roster == other.roster
    }
}

impl Eq for Credentials {}

impl Credentials {
    /// `identity` and `roster`, refused unless the roster's fingerprint is `expected` (the one
    /// compared out of band).
    pub fn new(
        identity: Identity,
        roster: Roster,
        expected: Fingerprint,
    ) -> Result<Self, RosterError> {
        Self::new_shared(Arc::new(identity), Arc::new(roster), expected)
    }

    /// As [`Credentials::new`], for an identity and a roster already shared (the Python
    /// binding keeps them in Python objects that outlive one party).
    pub fn new_shared(
        identity: Arc<Identity>,
        roster: Arc<Roster>,
        expected: Fingerprint,
    ) -> Result<Self, RosterError> {
        roster.check_fingerprint(expected)?;
        Ok(Self::shared(identity, roster))
    }

    /// Credentials over a roster made in this process (no fingerprint to compare).
    pub(crate) fn shared(identity: Arc<Identity>, roster: Arc<Roster>) -> Self {
        Self { identity, roster }
    }

    /// The roster.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// Checks a plan before its first round: `he` under the roster's key, the roster's
    /// policy or a stricter one (`None`: the plan has no secure aggregation, a weakening),
    /// and this identity as the roster's entry for `party`.
    pub fn check_plan(
        &self,
        party: PartyId,
        key_id: Option<KeyId>,
        policy: Option<Policy>,
    ) -> Result<(), RosterError> {
        let roster_mode = self.roster.policy().mode;
        let Some(policy) = policy else {
            return Err(RosterError::PolicyWeakened {
                rule: "mode",
                expected: roster_mode.to_string(),
                found: "no secure aggregation".into(),
            });
        };
        let Some(key_id) = key_id else {
            return Err(RosterError::PolicyWeakened {
                rule: "privacy",
                expected: "he".into(),
                found: "updates in the clear".into(),
            });
        };
        self.roster.check_key(key_id)?;
        self.roster.check_policy(&policy)?;
        self.roster.check_identity(party, &self.identity)
    }

    /// Party `party`'s blinder for the run of fingerprint `run`.
    pub fn blinder(&self, party: PartyId, run: [u8; 32]) -> Result<Blinder, SecAggError> {
        Blinder::new(&self.identity, party, &self.roster, run)
    }
}

/// The policy a plan asks for: `mode` over `parties`, each sum of at least `min_parties`
/// (`None`: all).
pub fn plan_policy(mode: Mode, parties: u32, min_parties: Option<u32>) -> Policy {
    Policy {
        mode,
        parties,
        min_parties: min_parties.unwrap_or(parties),
    }
}
