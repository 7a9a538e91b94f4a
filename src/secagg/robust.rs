//! `--secure-agg robust`: secure aggregation that survives dropouts (Bonawitz et al. 2017,
//! with the sparse neighbour graph of Bell et al. 2020), inside the HE plaintext.
//!
//! Per round r, each party i of the round:
//!
//! 1. **Advertises** ([`RobustParty::advertise`]): two fresh X25519 pairs, c_i (the share
//!    channel) and s_i (the blinds), and a fresh 16-byte self-blind seed β_i, committed to as
//!    H_β = SHA-256("hefl/v1/self-seed" ‖ s ‖ r ‖ i ‖ β_i) (s the run's session salt). The
//!    [`Advert`] (172 bytes) is signed with i's roster Ed25519 key over "hefl/v1/adv" ‖ s ‖
//!    the advert, so a server that relays it cannot substitute a key.
//! 2. **Shares keys** ([`RobustParty::share_keys`]): from the round's advertisers it
//!    computes the round's [`MaskGraph`] (the same for every party; of the adverts it
//!    needs only its neighbours'), splits β_i and s_i
//!    T-of-k with Shamir over GF(256), one share of each per neighbour, and encrypts each
//!    neighbour's pair under ChaCha20-Poly1305 with the key HKDF(s, X25519(c_i, c_j),
//!    "hefl/v1/share" ‖ r ‖ i ‖ j) ([`SealedShares`], 82 bytes).
//! 3. **Seals** ([`RobustParty::seal`]), once the server has named the round's set S_r (the
//!    parties that shared) and forwarded the shares addressed to i
//!    ([`RobustParty::receive_shares`]): y_i = z_i + canaries + PRG(β_i) + Σ_{j ∈ N(i) ∩ S_r,
//!    j > i} PRG(k_ij) − Σ_{j < i} PRG(k_ij) mod 2^t, with k_ij = HKDF(s, X25519(s_i, s_j),
//!    "hefl/v1/blind/pair-robust" ‖ r ‖ min ‖ max ‖ SHA-256(S_r)) and the self key
//!    HKDF(s, β_i, "hefl/v1/blind/self" ‖ r ‖ i). Each round is sealed at most once.
//! 4. **Unmasks** ([`RobustParty::unmask`]): the server names the parties whose uploads it
//!    summed (A_r, [`UnmaskRequest`]); i refuses, with a typed error naming the round, the
//!    party and the rule, a request listing i itself dead, an id outside S_r, duplicates, a
//!    sum below the roster's minimum, fewer than T of its neighbours alive, a second
//!    different request for the round, or one that would make it reveal, for any neighbour,
//!    the other kind of share than it already revealed (the never-both rule). Otherwise it
//!    returns, per neighbour in S_r, the share of β_j if j is alive or of s_j if j is dead.
//!
//! The server ([`RoundUnmask`]) rebuilds β_j for every alive j (checked against H_β) and s_d
//! for every dead d (checked against its advertised public key), retrying other subsets of
//! shares when one is bad, and computes the public correction c = −Σ_{j ∈ A_r} PRG(β_j) ∓
//! Σ_{d ∈ D_r} Σ_{j ∈ N(d) ∩ A_r} PRG(k_dj). It adds c to the summed ciphertext's bodies
//! without a key ([`Summable::add_public`](crate::fl::Summable::add_public)): exact mod
//! 2^t, no noise added. Parties then open the sum as in `strict` (party list and canaries).
//!
//! # Why the public values leak nothing
//!
//! - Adverts hold public keys and H_β, a SHA-256 commitment to a 128-bit uniform secret: its
//!   preimage resistance is all that protects β_i, and 2^128 guesses are out of reach.
//! - The graph's permutation is a public function of public values (see [`MaskGraph`]).
//! - Share messages are AEAD ciphertexts under keys only the two endpoints can derive; an
//!   unmask response reveals, per neighbour, one share of one secret, and the never-both
//!   rule keeps a server from collecting both kinds for one party from honest holders.
//! - A late party's ciphertext stays hidden after its s_i was rebuilt: its self-blind, whose
//!   seed is revealed only when the party is listed alive, is still on it (the uniformity
//!   test `robust::a_late_partys_ciphertext_stays_uniform_after_its_pair_secrets_are_rebuilt`).
//!
//! Secrets (ephemeral keys, β, held shares) are wiped when dropped and when a round is
//! forgotten ([`RobustParty::forget_through`]), which gives forward secrecy for past rounds.

use std::collections::BTreeMap;
use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use super::blind::{
    AggregateRefused, BlindKey, CanaryTag, PartySet, SecAggError, apply_blinds, canary_words,
    check_announced, check_canaries, session_salt,
};
use super::graph::{GraphError, MaskGraph};
use super::identity::Identity;
use super::roster::{Mode, RobustPolicy, Roster, RosterError};
use super::shamir::{self, ShamirError, Share};
use crate::fl::{PartyId, Round};
use crate::he::csprng::{EntropyError, SecureRng};
use crate::he::keys::SecretKey;
use crate::quant::FixedPoint;

const ADVERT_LABEL: &[u8] = b"hefl/v1/adv";
const SELF_SEED_LABEL: &[u8] = b"hefl/v1/self-seed";
const SHARE_LABEL: &[u8] = b"hefl/v1/share";
const PAIR_LABEL: &[u8] = b"hefl/v1/blind/pair-robust";
const SELF_LABEL: &[u8] = b"hefl/v1/blind/self";

/// Bytes of the self-blind seed β.
const SEED_BYTES: usize = 16;
/// Bytes of an X25519 secret.
const SECRET_BYTES: usize = 32;
/// Bytes of an [`Advert`] on the wire: round, party, two public keys, H_β, signature.
pub const ADVERT_BYTES: usize = 8 + 4 + 32 + 32 + 32 + 64;
/// Bytes of the plaintext in a share message: a share of β, then a share of s.
const SHARES_PLAIN: usize = (SEED_BYTES + 1) + (SECRET_BYTES + 1);
/// Bytes of a [`SealedShares`] on the wire: round, sender, receiver, AEAD ciphertext and tag.
pub const SEALED_SHARES_BYTES: usize = 8 + 4 + 4 + SHARES_PLAIN + 16;
/// Subsets of shares the server tries per secret before it gives up on a round.
pub const MAX_RECOVERY_TRIES: usize = 64;

/// Which of a neighbour's secrets a share opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reveal {
    /// A share of the neighbour's self-blind seed β: asked when it is alive.
    SelfSeed,
    /// A share of the neighbour's blind secret s: asked when it dropped.
    BlindSecret,
}

impl fmt::Display for Reveal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SelfSeed => "a share of its self-blind seed (it is alive)",
            Self::BlindSecret => "a share of its blind secret (it dropped)",
        })
    }
}

impl Reveal {
    fn byte(self) -> u8 {
        match self {
            Self::SelfSeed => 1,
            Self::BlindSecret => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::SelfSeed),
            2 => Some(Self::BlindSecret),
            _ => None,
        }
    }

    fn secret_len(self) -> usize {
        match self {
            Self::SelfSeed => SEED_BYTES,
            Self::BlindSecret => SECRET_BYTES,
        }
    }
}

/// Why a robust-mode step was refused: each names the round, the party and the rule.
#[derive(Debug, thiserror::Error)]
pub enum RobustError {
    /// The roster refused (unknown party, no signing key, wrong identity, ...).
    #[error(transparent)]
    Roster(#[from] RosterError),
    /// Sealing or opening refused as in `strict`.
    #[error(transparent)]
    SecAgg(#[from] SecAggError),
    /// The roster asks for the consistency round, which this release does not run: a party
    /// refuses rather than run without the protection its roster pinned.
    #[error(
        "the roster's policy asks for the consistency check (--consistency-check), which this release does not run yet; make the roster without it"
    )]
    ConsistencyCheckUnsupported,
    /// The roster's policy is not `robust`.
    #[error("the roster's secure aggregation mode is {found}, not robust")]
    NotRobust {
        /// The roster's mode.
        found: Mode,
    },
    /// The operating system's random source failed.
    #[error(transparent)]
    Entropy(#[from] EntropyError),
    /// The neighbour graph could not be built.
    #[error("round {round}: {source}")]
    Graph {
        /// The round.
        round: Round,
        /// Why.
        source: GraphError,
    },
    /// Shamir sharing failed.
    #[error("round {round}: shares of {party}: {source}")]
    Shamir {
        /// The round.
        round: Round,
        /// Whose secret.
        party: PartyId,
        /// Why.
        source: ShamirError,
    },
    /// A message that does not parse.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which message.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A message for another round than the one expected.
    #[error("{what} of {party} is for {found}, expected {expected}")]
    WrongRound {
        /// Which message.
        what: &'static str,
        /// Its sender.
        party: PartyId,
        /// The round expected.
        expected: Round,
        /// The round it names.
        found: Round,
    },
    /// An advert whose signature does not verify under its party's roster key.
    #[error(
        "{round}: the advert of {party} does not verify under its roster Ed25519 key (rule: signed keys)"
    )]
    BadSignature {
        /// The round.
        round: Round,
        /// The party it claims to be from.
        party: PartyId,
    },
    /// A party named twice where each may appear once.
    #[error("{round}: {party} is listed twice (rule: no duplicates)")]
    DuplicateParty {
        /// The round.
        round: Round,
        /// The party.
        party: PartyId,
    },
    /// A party outside the round's set (or the roster).
    #[error("{round}: {party} is not in the round's set {set} (rule: known parties)")]
    UnknownParty {
        /// The round.
        round: Round,
        /// The party.
        party: PartyId,
        /// The set it should be in.
        set: PartySet,
    },
    /// This party's own advert is missing from, or differs in, the adverts it was handed.
    #[error(
        "{round}: the adverts handed to {party} do not carry its own advert unchanged (rule: own keys)"
    )]
    OwnAdvert {
        /// The round.
        round: Round,
        /// This party.
        party: PartyId,
    },
    /// A neighbour's advert is missing.
    #[error("{round}: no advert of {neighbour}, a neighbour of {party} in the set {set}")]
    MissingAdvert {
        /// The round.
        round: Round,
        /// This party.
        party: PartyId,
        /// The neighbour.
        neighbour: PartyId,
        /// The round's set.
        set: PartySet,
    },
    /// A step out of its order (sealing before the shares arrived, advertising after the
    /// adverts closed, ...).
    #[error("{round}: {party} cannot {step}: {needs}")]
    OutOfOrder {
        /// The round.
        round: Round,
        /// This party.
        party: PartyId,
        /// The step asked for.
        step: &'static str,
        /// What it needs first.
        needs: &'static str,
    },
    /// A server-side step before the phase it needs closed.
    #[error("{round}: cannot {step} before {needs}")]
    NotReady {
        /// The round.
        round: Round,
        /// The step asked for.
        step: &'static str,
        /// What it needs first.
        needs: &'static str,
    },
    /// The round's secrets were forgotten (published, void, or never drawn here).
    #[error(
        "{round}: {party} holds no secrets of this round (published, void, or before a restart)"
    )]
    RoundForgotten {
        /// The round.
        round: Round,
        /// This party.
        party: PartyId,
    },
    /// A round's secrets are drawn once: after it was sealed, it is never advertised again.
    #[error("{round}: {party} already sealed up to {last}; a round's keys are never drawn twice")]
    AlreadySealed {
        /// The round asked for.
        round: Round,
        /// This party.
        party: PartyId,
        /// The last round sealed.
        last: Round,
    },
    /// The set of parties is smaller than the roster's minimum.
    #[error(
        "{round}: {found} parties in the {what}, the roster requires at least {min} (rule: minimum parties)"
    )]
    BelowMinParties {
        /// The round.
        round: Round,
        /// Which set.
        what: &'static str,
        /// Its size.
        found: u32,
        /// The roster's minimum.
        min: u32,
    },
    /// Fewer neighbours than the threshold: this party's secrets could never be rebuilt.
    #[error(
        "{round}: {party} has {found} neighbours in the set, the threshold is {threshold} (rule: enough holders)"
    )]
    TooFewNeighbours {
        /// The round.
        round: Round,
        /// This party.
        party: PartyId,
        /// Its neighbours.
        found: u32,
        /// The threshold T.
        threshold: u32,
    },
    /// A share message that does not decrypt or does not fit.
    #[error("{round}: the shares {from} sent to {to} do not open: {reason}")]
    BadShares {
        /// The round.
        round: Round,
        /// The sender.
        from: PartyId,
        /// The receiver.
        to: PartyId,
        /// Why.
        reason: &'static str,
    },
    /// A neighbour in the round's set sent no shares to this party.
    #[error("{round}: {from}, a neighbour of {to} in the set, sent it no shares")]
    MissingShares {
        /// The round.
        round: Round,
        /// The neighbour.
        from: PartyId,
        /// This party.
        to: PartyId,
    },
    /// An X25519 result that is all zero: the other key is a low-order point.
    #[error(
        "{round}: the X25519 secret of {party} with {partner}'s advertised key is non-contributory, refused"
    )]
    NonContributory {
        /// The round.
        round: Round,
        /// This party.
        party: PartyId,
        /// The partner.
        partner: PartyId,
    },
    /// The round's set as announced with the previous round is not the set whose shares
    /// this party received.
    #[error(
        "{round}: the announced set {announced} is not the set {held} whose shares {party} holds"
    )]
    SetMismatch {
        /// The round.
        round: Round,
        /// This party.
        party: PartyId,
        /// The set announced.
        announced: PartySet,
        /// The set of the shares received.
        held: PartySet,
    },
    /// An unmask request that lists this party itself as dropped (FCP's check).
    #[error(
        "{round}: the unmask request lists {party} itself as dropped; it never reveals shares then (rule: listed dead)"
    )]
    ListedDead {
        /// The round.
        round: Round,
        /// This party.
        party: PartyId,
    },
    /// Fewer alive neighbours than the threshold (FCP's check).
    #[error(
        "{round}: {party} has {alive} alive neighbours in the unmask request, the threshold is {threshold} (rule: enough alive)"
    )]
    TooFewAlive {
        /// The round.
        round: Round,
        /// This party.
        party: PartyId,
        /// Alive neighbours listed.
        alive: u32,
        /// The threshold T.
        threshold: u32,
    },
    /// A second, different unmask request for a round already answered.
    #[error(
        "{round}: {party} already answered a different unmask request for this round (rule: answer once)"
    )]
    AlreadyAnswered {
        /// The round.
        round: Round,
        /// This party.
        party: PartyId,
    },
    /// A request that would reveal, for one neighbour, the other kind of share than before.
    #[error(
        "{round}: {party} already revealed {revealed} of {target}; asked now for {asked} (rule: never both)"
    )]
    ConflictingReveal {
        /// The round.
        round: Round,
        /// This party.
        party: PartyId,
        /// The neighbour whose share is asked.
        target: PartyId,
        /// What was revealed before.
        revealed: Reveal,
        /// What is asked now.
        asked: Reveal,
    },
    /// An unmask response that is not what its sender was asked.
    #[error("{round}: the unmask response of {from}: {reason}")]
    BadResponse {
        /// The round.
        round: Round,
        /// The responder.
        from: PartyId,
        /// What is wrong.
        reason: String,
    },
    /// Too few shares of a secret to rebuild it: the round is void.
    #[error("{round}: {found} shares of {target}'s {kind}, {threshold} needed: the round is void")]
    TooFewShares {
        /// The round.
        round: Round,
        /// Whose secret.
        target: PartyId,
        /// Which secret.
        kind: Reveal,
        /// Shares received.
        found: u32,
        /// The threshold T.
        threshold: u32,
    },
}

/// A short reader of little-endian fields, for the messages of this module.
struct Fields<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RobustError> {
        if self.bytes.len() < n {
            return Err(RobustError::Malformed {
                what: self.what,
                reason: format!("truncated: {} bytes left, {n} needed", self.bytes.len()),
            });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RobustError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn round(&mut self) -> Result<Round, RobustError> {
        Ok(Round(u64::from_le_bytes(self.array()?)))
    }

    fn party(&mut self) -> Result<PartyId, RobustError> {
        Ok(PartyId(u32::from_le_bytes(self.array()?)))
    }

    fn end(&self) -> Result<(), RobustError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(RobustError::Malformed {
                what: self.what,
                reason: format!("{} bytes after the end", self.bytes.len()),
            })
        }
    }
}

/// A party's signed advert of its round keys (R0): 172 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Advert {
    /// The round.
    pub round: Round,
    /// The party.
    pub party: PartyId,
    /// The X25519 public key of its share channel, c_i.
    pub channel: [u8; 32],
    /// The X25519 public key of its blinds, s_i.
    pub blind: [u8; 32],
    /// H_β, the commitment to its self-blind seed.
    pub self_digest: [u8; 32],
    /// Ed25519 signature over "hefl/v1/adv" ‖ session salt ‖ the fields above.
    pub signature: [u8; 64],
}

impl fmt::Debug for Advert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Advert")
            .field("round", &self.round.0)
            .field("party", &self.party.0)
            .finish_non_exhaustive()
    }
}

impl Advert {
    fn signed_message(&self, salt: &[u8; 32]) -> Vec<u8> {
        let mut m = Vec::with_capacity(ADVERT_LABEL.len() + 32 + ADVERT_BYTES - 64);
        m.extend_from_slice(ADVERT_LABEL);
        m.extend_from_slice(salt);
        m.extend_from_slice(&self.to_bytes()[..ADVERT_BYTES - 64]);
        m
    }

    /// The wire bytes.
    pub fn to_bytes(&self) -> [u8; ADVERT_BYTES] {
        let mut out = [0u8; ADVERT_BYTES];
        out[..8].copy_from_slice(&self.round.0.to_le_bytes());
        out[8..12].copy_from_slice(&self.party.0.to_le_bytes());
        out[12..44].copy_from_slice(&self.channel);
        out[44..76].copy_from_slice(&self.blind);
        out[76..108].copy_from_slice(&self.self_digest);
        out[108..].copy_from_slice(&self.signature);
        out
    }

    /// Parses an advert (its signature is checked by [`Advert::verify`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RobustError> {
        let mut f = Fields {
            bytes,
            what: "advert",
        };
        let advert = Self {
            round: f.round()?,
            party: f.party()?,
            channel: f.array()?,
            blind: f.array()?,
            self_digest: f.array()?,
            signature: f.array()?,
        };
        f.end()?;
        Ok(advert)
    }

    /// Checks that the advert is for `round` and signed by its party's roster key under the
    /// session `salt`.
    pub fn verify(
        &self,
        roster: &Roster,
        salt: &[u8; 32],
        round: Round,
    ) -> Result<(), RobustError> {
        if self.round != round {
            return Err(RobustError::WrongRound {
                what: "advert",
                party: self.party,
                expected: round,
                found: self.round,
            });
        }
        let key = roster.signing_key(self.party)?;
        if !key.verify(&self.signed_message(salt), &self.signature) {
            return Err(RobustError::BadSignature {
                round,
                party: self.party,
            });
        }
        Ok(())
    }
}

/// Verifies `adverts` for `round` (one per party, each signed) and returns them by party,
/// with their set; refuses a set below `min`.
pub(super) fn verified_adverts(
    adverts: &[Advert],
    roster: &Roster,
    salt: &[u8; 32],
    round: Round,
    min: u32,
) -> Result<(BTreeMap<PartyId, Advert>, PartySet), RobustError> {
    let mut by_party = BTreeMap::new();
    for advert in adverts {
        advert.verify(roster, salt, round)?;
        if by_party.insert(advert.party, *advert).is_some() {
            return Err(RobustError::DuplicateParty {
                round,
                party: advert.party,
            });
        }
    }
    let set = PartySet::new(by_party.keys().copied());
    if set.len() < min {
        return Err(RobustError::BelowMinParties {
            round,
            what: "adverts",
            found: set.len(),
            min,
        });
    }
    Ok((by_party, set))
}

/// The shares one party sends one neighbour (R1): a share of its β and of its s, encrypted
/// for that neighbour alone. 82 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedShares {
    /// The round.
    pub round: Round,
    /// The sender.
    pub from: PartyId,
    /// The receiver.
    pub to: PartyId,
    /// ChaCha20-Poly1305 ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for SealedShares {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedShares")
            .field("round", &self.round.0)
            .field("from", &self.from.0)
            .field("to", &self.to.0)
            .finish_non_exhaustive()
    }
}

impl SealedShares {
    /// The wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SEALED_SHARES_BYTES);
        out.extend_from_slice(&self.round.0.to_le_bytes());
        out.extend_from_slice(&self.from.0.to_le_bytes());
        out.extend_from_slice(&self.to.0.to_le_bytes());
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Parses one message of exactly [`SEALED_SHARES_BYTES`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RobustError> {
        let mut f = Fields {
            bytes,
            what: "share message",
        };
        let (round, from, to) = (f.round()?, f.party()?, f.party()?);
        let ciphertext = f.take(SHARES_PLAIN + 16)?.to_vec();
        f.end()?;
        Ok(Self {
            round,
            from,
            to,
            ciphertext,
        })
    }
}

/// The AEAD key and associated data of the share channel from `from` to `to` in `round`.
fn share_cipher(
    salt: &[u8; 32],
    secret: &StaticSecret,
    public: &[u8; 32],
    round: Round,
    (from, to): (PartyId, PartyId),
    me: PartyId,
) -> Result<(ChaCha20Poly1305, Vec<u8>), RobustError> {
    let partner = if me == from { to } else { from };
    let shared = secret.diffie_hellman(&PublicKey::from(*public));
    if !shared.was_contributory() {
        return Err(RobustError::NonContributory {
            round,
            party: me,
            partner,
        });
    }
    let mut key = Zeroizing::new([0u8; 32]);
    let hk = hkdf::Hkdf::<Sha256>::new(Some(salt), shared.as_bytes());
    let info: [&[u8]; 4] = [
        SHARE_LABEL,
        &round.0.to_be_bytes(),
        &from.0.to_be_bytes(),
        &to.0.to_be_bytes(),
    ];
    // 32 bytes is far below HKDF-SHA256's limit.
    let expanded = hk.expand_multi_info(&info, &mut key[..]);
    debug_assert!(expanded.is_ok());
    let mut ad = Vec::with_capacity(32 + 16);
    ad.extend_from_slice(salt);
    ad.extend_from_slice(&round.0.to_le_bytes());
    ad.extend_from_slice(&from.0.to_le_bytes());
    ad.extend_from_slice(&to.0.to_le_bytes());
    Ok((ChaCha20Poly1305::new(Key::from_slice(&key[..])), ad))
}

/// The key of the pair blind of `a` and `b` in `round` over the set of digest `set`, from
/// their X25519 blind secret.
fn pair_blind(
    salt: &[u8; 32],
    secret: &StaticSecret,
    public: &[u8; 32],
    round: Round,
    (me, partner): (PartyId, PartyId),
    set: &[u8; 32],
) -> Result<BlindKey, RobustError> {
    let shared = secret.diffie_hellman(&PublicKey::from(*public));
    if !shared.was_contributory() {
        return Err(RobustError::NonContributory {
            round,
            party: me,
            partner,
        });
    }
    let (low, high) = (me.min(partner), me.max(partner));
    let info: [&[u8]; 5] = [
        PAIR_LABEL,
        &round.0.to_be_bytes(),
        &low.0.to_be_bytes(),
        &high.0.to_be_bytes(),
        set,
    ];
    Ok(BlindKey::derive(salt, shared.as_bytes(), &info))
}

/// The key of `party`'s self-blind in `round`, from its seed β.
fn self_blind(salt: &[u8; 32], seed: &[u8], round: Round, party: PartyId) -> BlindKey {
    let info: [&[u8]; 3] = [SELF_LABEL, &round.0.to_be_bytes(), &party.0.to_be_bytes()];
    BlindKey::derive(salt, seed, &info)
}

/// H_β: the commitment to `party`'s seed β in `round`.
fn seed_digest(salt: &[u8; 32], round: Round, party: PartyId, seed: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(SELF_SEED_LABEL)
        .chain_update(salt)
        .chain_update(round.0.to_be_bytes())
        .chain_update(party.0.to_be_bytes())
        .chain_update(seed)
        .finalize()
        .into()
}

/// The round's parties as the server names them in an unmask request: those whose uploads
/// are in the sum (A_r). The rest of the round's set dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmaskRequest {
    /// The round.
    pub round: Round,
    /// The parties whose uploads were summed.
    pub alive: PartySet,
}

impl UnmaskRequest {
    /// The wire bytes: round, count, ids in increasing order.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + 4 * self.alive.len() as usize);
        out.extend_from_slice(&self.round.0.to_le_bytes());
        out.extend_from_slice(&self.alive.len().to_le_bytes());
        for p in self.alive.iter() {
            out.extend_from_slice(&p.0.to_le_bytes());
        }
        out
    }

    /// Parses a request: ids must be strictly increasing ([`RobustError::DuplicateParty`] for
    /// a repeated one).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RobustError> {
        let mut f = Fields {
            bytes,
            what: "unmask request",
        };
        let round = f.round()?;
        let count = u32::from_le_bytes(f.array()?) as usize;
        if count > f.bytes.len() / 4 {
            return Err(RobustError::Malformed {
                what: "unmask request",
                reason: format!("{count} parties announced, {} bytes follow", f.bytes.len()),
            });
        }
        let mut ids: Vec<PartyId> = Vec::with_capacity(count);
        for _ in 0..count {
            let id = f.party()?;
            match ids.last() {
                Some(&last) if last == id => {
                    return Err(RobustError::DuplicateParty { round, party: id });
                }
                Some(&last) if last > id => {
                    return Err(RobustError::Malformed {
                        what: "unmask request",
                        reason: format!("ids not increasing: {} after {}", id.0, last.0),
                    });
                }
                _ => ids.push(id),
            }
        }
        f.end()?;
        Ok(Self {
            round,
            alive: PartySet::new(ids),
        })
    }
}

/// One party's answer to an unmask request: per neighbour of the round's set, one share.
#[derive(Clone, PartialEq, Eq)]
pub struct UnmaskResponse {
    /// The round.
    pub round: Round,
    /// The responder.
    pub from: PartyId,
    /// (neighbour, which secret, the share), by neighbour.
    pub shares: Vec<(PartyId, Reveal, Share)>,
}

impl fmt::Debug for UnmaskResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnmaskResponse")
            .field("round", &self.round.0)
            .field("from", &self.from.0)
            .field("shares", &self.shares.len())
            .finish_non_exhaustive()
    }
}

impl UnmaskResponse {
    /// The wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 38 * self.shares.len());
        out.extend_from_slice(&self.round.0.to_le_bytes());
        out.extend_from_slice(&self.from.0.to_le_bytes());
        out.extend_from_slice(&(self.shares.len() as u32).to_le_bytes());
        for (target, kind, share) in &self.shares {
            out.extend_from_slice(&target.0.to_le_bytes());
            out.push(kind.byte());
            out.extend_from_slice(&share.to_bytes());
        }
        out
    }

    /// Parses a response.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RobustError> {
        let what = "unmask response";
        let mut f = Fields { bytes, what };
        let (round, from) = (f.round()?, f.party()?);
        let count = u32::from_le_bytes(f.array()?) as usize;
        if count > f.bytes.len() / (5 + SEED_BYTES + 1) {
            return Err(RobustError::Malformed {
                what,
                reason: format!("{count} shares announced, {} bytes follow", f.bytes.len()),
            });
        }
        let mut shares = Vec::with_capacity(count);
        for _ in 0..count {
            let target = f.party()?;
            let byte = f.array::<1>()?[0];
            let kind = Reveal::from_byte(byte).ok_or_else(|| RobustError::Malformed {
                what,
                reason: format!("share kind {byte}, expected 1 or 2"),
            })?;
            let len = kind.secret_len();
            let share =
                Share::from_bytes(f.take(len + 1)?, len).map_err(|e| RobustError::Malformed {
                    what,
                    reason: e.to_string(),
                })?;
            shares.push((target, kind, share));
        }
        f.end()?;
        Ok(Self {
            round,
            from,
            shares,
        })
    }
}

/// What a party keeps of a round once it shared its keys: the graph over the advertisers,
/// its neighbours' adverts, and the messages it sent (resent verbatim if asked again).
struct Shared {
    graph: MaskGraph,
    adverts: BTreeMap<PartyId, Advert>,
    sent: Vec<SealedShares>,
}

/// The round's set S_r and the shares this party holds, by neighbour (of β, of s).
struct Held {
    set: PartySet,
    shares: BTreeMap<PartyId, (Share, Share)>,
}

/// One round's secrets and what a party learnt in it.
struct RoundState {
    channel: StaticSecret,
    blind: StaticSecret,
    seed: Zeroizing<[u8; SEED_BYTES]>,
    advert: Advert,
    /// After [`RobustParty::share_keys`]: the graph over the advertisers, their adverts and
    /// the messages sent (resent verbatim if asked again).
    graph: Option<Shared>,
    /// After [`RobustParty::receive_shares`]: the set S_r and the shares held.
    held: Option<Held>,
    /// The unmask request answered, with the answer.
    answered: Option<(UnmaskRequest, UnmaskResponse)>,
    /// What was revealed of each neighbour.
    revealed: BTreeMap<PartyId, Reveal>,
}

/// A party's side of `robust` secure aggregation for one run: its roster identity and the
/// secrets of every round not yet forgotten. Secrets are wiped on drop and never printed.
pub struct RobustParty {
    party: PartyId,
    identity: std::sync::Arc<Identity>,
    roster: std::sync::Arc<Roster>,
    policy: RobustPolicy,
    min_parties: u32,
    run: [u8; 32],
    salt: [u8; 32],
    rounds: BTreeMap<Round, RoundState>,
    last_sealed: Option<Round>,
}

impl fmt::Debug for RobustParty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RobustParty")
            .field("party", &self.party)
            .field(
                "rounds",
                &self.rounds.keys().map(|r| r.0).collect::<Vec<_>>(),
            )
            .field("last_sealed", &self.last_sealed)
            .finish_non_exhaustive()
    }
}

/// The robust policy of a roster, or why there is none.
pub(super) fn robust_policy(roster: &Roster) -> Result<RobustPolicy, RobustError> {
    match roster.policy().mode {
        Mode::Robust(policy) => Ok(policy),
        found => Err(RobustError::NotRobust { found }),
    }
}

impl RobustParty {
    /// Party `party`'s side for the run of fingerprint `run`: refuses a roster whose policy
    /// is not robust and an identity that is not the roster's entry for `party`.
    pub fn new(
        identity: std::sync::Arc<Identity>,
        party: PartyId,
        roster: std::sync::Arc<Roster>,
        run: [u8; 32],
    ) -> Result<Self, RobustError> {
        let policy = robust_policy(&roster)?;
        if policy.consistency_check {
            return Err(RobustError::ConsistencyCheckUnsupported);
        }
        roster.check_identity(party, &identity)?;
        roster.signing_key(party)?;
        Ok(Self {
            party,
            min_parties: roster.policy().min_parties,
            salt: session_salt(run, roster.fingerprint()),
            identity,
            roster,
            policy,
            run,
            rounds: BTreeMap::new(),
            last_sealed: None,
        })
    }

    /// This party.
    pub fn party(&self) -> PartyId {
        self.party
    }

    /// The run's session salt (public): what [`RoundUnmask`] needs besides the roster.
    pub fn salt(&self) -> [u8; 32] {
        self.salt
    }

    /// The last round sealed.
    pub fn last_sealed(&self) -> Option<Round> {
        self.last_sealed
    }

    /// Refuses an announced party set of `round` with a party outside the roster or fewer
    /// than its minimum (as `strict`'s [`Blinder::check_announced`](super::Blinder::check_announced)).
    pub fn check_announced(&self, round: Round, set: &PartySet) -> Result<(), SecAggError> {
        check_announced(&self.roster.policy(), round, set)
    }

    /// Refuses to seal `round` for `set` unless `set` is the round's set whose shares this
    /// party received (the set announced and the shares must agree).
    pub fn check_set(&self, round: Round, set: &PartySet) -> Result<(), RobustError> {
        let state = self.state(round)?;
        match &state.held {
            Some(held) if held.set == *set => Ok(()),
            Some(held) => Err(RobustError::SetMismatch {
                round,
                party: self.party,
                announced: set.clone(),
                held: held.set.clone(),
            }),
            None => Err(RobustError::OutOfOrder {
                round,
                party: self.party,
                step: "seal",
                needs: "it has not received the round's set and shares",
            }),
        }
    }

    /// Rounds whose secrets this party still holds.
    pub fn held_rounds(&self) -> Vec<Round> {
        self.rounds.keys().copied().collect()
    }

    fn state(&self, round: Round) -> Result<&RoundState, RobustError> {
        self.rounds.get(&round).ok_or(RobustError::RoundForgotten {
            round,
            party: self.party,
        })
    }

    fn state_mut(&mut self, round: Round) -> Result<&mut RoundState, RobustError> {
        let party = self.party;
        self.rounds
            .get_mut(&round)
            .ok_or(RobustError::RoundForgotten { round, party })
    }

    /// R0: this party's signed advert for `round`, drawing the round's secrets from tfhe's
    /// CSPRNG (the same advert again if already drawn). Refuses a round at or below the last
    /// sealed one.
    pub fn advertise(&mut self, round: Round) -> Result<Advert, RobustError> {
        if let Some(state) = self.rounds.get(&round) {
            return Ok(state.advert);
        }
        if let Some(last) = self.last_sealed.filter(|&last| round <= last) {
            return Err(RobustError::AlreadySealed {
                round,
                party: self.party,
                last,
            });
        }
        let mut rng = SecureRng::from_os()?;
        let mut draw = |bytes: &mut [u8]| rng.fill_bytes(bytes);
        let mut channel = Zeroizing::new([0u8; 32]);
        let mut blind = Zeroizing::new([0u8; 32]);
        let mut seed = Zeroizing::new([0u8; SEED_BYTES]);
        draw(&mut channel[..]);
        draw(&mut blind[..]);
        draw(&mut seed[..]);
        let (channel, blind) = (StaticSecret::from(*channel), StaticSecret::from(*blind));
        let mut advert = Advert {
            round,
            party: self.party,
            channel: PublicKey::from(&channel).to_bytes(),
            blind: PublicKey::from(&blind).to_bytes(),
            self_digest: seed_digest(&self.salt, round, self.party, &seed[..]),
            signature: [0; 64],
        };
        advert.signature = self.identity.sign(&advert.signed_message(&self.salt));
        self.rounds.insert(
            round,
            RoundState {
                channel,
                blind,
                seed,
                advert,
                graph: None,
                held: None,
                answered: None,
                revealed: BTreeMap::new(),
            },
        );
        Ok(advert)
    }

    /// R1: given the round's advertisers `set` (this party among them; at least the roster's
    /// minimum, all in the roster) and the adverts of at least its neighbours in the round's
    /// graph over `set` (others are ignored; its own, if given, must be unchanged), checks
    /// each neighbour's signature against the roster and returns one [`SealedShares`] per
    /// neighbour (the same messages if asked again). A party needs only its k neighbours'
    /// adverts, not all P: the graph is a function of the ids alone.
    pub fn share_keys(
        &mut self,
        round: Round,
        set: &PartySet,
        adverts: &[Advert],
    ) -> Result<Vec<SealedShares>, RobustError> {
        let (party, salt, threshold) = (self.party, self.salt, self.policy.threshold);
        let (neighbours_k, min) = (self.policy.neighbours, self.min_parties);
        let parties = self.roster.policy().parties;
        let roster = std::sync::Arc::clone(&self.roster);
        let state = self.state_mut(round)?;
        if let Some(shared) = &state.graph {
            return Ok(shared.sent.clone());
        }
        if let Some(unknown) = set.iter().find(|p| p.0 >= parties) {
            return Err(RosterError::UnknownParty {
                party: unknown,
                last: parties.saturating_sub(1),
            }
            .into());
        }
        if set.len() < min {
            return Err(RobustError::BelowMinParties {
                round,
                what: "advertisers",
                found: set.len(),
                min,
            });
        }
        if !set.contains(party) {
            return Err(RobustError::OwnAdvert { round, party });
        }
        let graph = MaskGraph::harary(set, neighbours_k, &salt, round)
            .map_err(|source| RobustError::Graph { round, source })?;
        let mut by_party = BTreeMap::new();
        for advert in adverts {
            if advert.party == party && *advert != state.advert {
                return Err(RobustError::OwnAdvert { round, party });
            }
            if !graph.linked(party, advert.party) {
                continue;
            }
            advert.verify(&roster, &salt, round)?;
            if by_party.insert(advert.party, *advert).is_some() {
                return Err(RobustError::DuplicateParty {
                    round,
                    party: advert.party,
                });
            }
        }
        let neighbours = graph.neighbours(party).to_vec();
        let holders = neighbours.len() as u32;
        if holders < threshold {
            return Err(RobustError::TooFewNeighbours {
                round,
                party,
                found: holders,
                threshold,
            });
        }
        let shamir_err = |source| RobustError::Shamir {
            round,
            party,
            source,
        };
        let seed_shares = shamir::split(&state.seed[..], threshold, holders).map_err(shamir_err)?;
        let blind_shares =
            shamir::split(state.blind.as_bytes(), threshold, holders).map_err(shamir_err)?;
        let mut sent = Vec::with_capacity(neighbours.len());
        for ((to, q), s) in neighbours.iter().zip(&seed_shares).zip(&blind_shares) {
            let advert = by_party.get(to).ok_or(RobustError::MissingAdvert {
                round,
                party,
                neighbour: *to,
                set: set.clone(),
            })?;
            let (cipher, ad) = share_cipher(
                &salt,
                &state.channel,
                &advert.channel,
                round,
                (party, *to),
                party,
            )?;
            let mut plain = Zeroizing::new(Vec::with_capacity(SHARES_PLAIN));
            plain.extend_from_slice(&Zeroizing::new(q.to_bytes()));
            plain.extend_from_slice(&Zeroizing::new(s.to_bytes()));
            // One key per (run, round, sender, receiver), used once: a fixed nonce is safe.
            let ciphertext = cipher
                .encrypt(
                    Nonce::from_slice(&[0; 12]),
                    Payload {
                        msg: &plain,
                        aad: &ad,
                    },
                )
                .map_err(|_| RobustError::BadShares {
                    round,
                    from: party,
                    to: *to,
                    reason: "encryption failed",
                })?;
            sent.push(SealedShares {
                round,
                from: party,
                to: *to,
                ciphertext,
            });
        }
        state.graph = Some(Shared {
            graph,
            adverts: by_party,
            sent: sent.clone(),
        });
        Ok(sent)
    }

    /// Takes the round's set S_r as the server names it (the advertisers that shared keys:
    /// it must hold this party and at least the roster's minimum) and the share messages
    /// addressed to this party; opens one from every neighbour in S_r.
    pub fn receive_shares(
        &mut self,
        round: Round,
        set: &PartySet,
        shares: &[SealedShares],
    ) -> Result<(), RobustError> {
        let (party, salt, min) = (self.party, self.salt, self.min_parties);
        let state = self.state_mut(round)?;
        let Some(Shared { graph, adverts, .. }) = &state.graph else {
            return Err(RobustError::OutOfOrder {
                round,
                party,
                step: "receive shares",
                needs: "it has not shared its own keys",
            });
        };
        if state.held.is_some() {
            return Ok(());
        }
        if let Some(unknown) = set.iter().find(|p| !graph.set().contains(*p)) {
            return Err(RobustError::UnknownParty {
                round,
                party: unknown,
                set: graph.set().clone(),
            });
        }
        if !set.contains(party) {
            return Err(SecAggError::NotInSet {
                round,
                party,
                set: set.clone(),
            }
            .into());
        }
        if set.len() < min {
            return Err(RobustError::BelowMinParties {
                round,
                what: "round's set",
                found: set.len(),
                min,
            });
        }
        let mut by_sender: BTreeMap<PartyId, &SealedShares> = BTreeMap::new();
        for message in shares {
            if message.round != round {
                return Err(RobustError::WrongRound {
                    what: "share message",
                    party: message.from,
                    expected: round,
                    found: message.round,
                });
            }
            if message.to != party || !graph.linked(party, message.from) {
                return Err(RobustError::BadShares {
                    round,
                    from: message.from,
                    to: message.to,
                    reason: "not a neighbour's message to this party",
                });
            }
            if by_sender.insert(message.from, message).is_some() {
                return Err(RobustError::DuplicateParty {
                    round,
                    party: message.from,
                });
            }
        }
        let mut held = BTreeMap::new();
        for from in graph.neighbours(party).iter().filter(|p| set.contains(**p)) {
            let message = by_sender.get(from).ok_or(RobustError::MissingShares {
                round,
                from: *from,
                to: party,
            })?;
            let bad = |reason| RobustError::BadShares {
                round,
                from: *from,
                to: party,
                reason,
            };
            let advert = adverts.get(from).ok_or(bad("no advert of the sender"))?;
            let (cipher, ad) = share_cipher(
                &salt,
                &state.channel,
                &advert.channel,
                round,
                (*from, party),
                party,
            )?;
            let plain = Zeroizing::new(
                cipher
                    .decrypt(
                        Nonce::from_slice(&[0; 12]),
                        Payload {
                            msg: &message.ciphertext,
                            aad: &ad,
                        },
                    )
                    .map_err(|_| bad("authentication failed"))?,
            );
            if plain.len() != SHARES_PLAIN {
                return Err(bad("wrong length"));
            }
            let q = Share::from_bytes(&plain[..SEED_BYTES + 1], SEED_BYTES)
                .map_err(|_| bad("malformed seed share"))?;
            let s = Share::from_bytes(&plain[SEED_BYTES + 1..], SECRET_BYTES)
                .map_err(|_| bad("malformed secret share"))?;
            // The sender's shares go to its neighbours in increasing order, x = 1, 2, ...
            let expected_x = graph
                .neighbours(*from)
                .iter()
                .position(|p| *p == party)
                .map(|i| i + 1);
            if expected_x != Some(q.x() as usize) || q.x() != s.x() {
                return Err(bad("share coordinates do not match the graph"));
            }
            held.insert(*from, (q, s));
        }
        state.held = Some(Held {
            set: set.clone(),
            shares: held,
        });
        Ok(())
    }

    /// Seals an encoded update (`words`: values and weight) for `round`: appends the
    /// canaries, adds the self-blind and the pair blinds with every neighbour in the round's
    /// set, and records the round as sealed. Refuses a round at or below the last sealed one.
    pub fn seal(
        &mut self,
        mut words: Vec<u64>,
        fp: &FixedPoint,
        key: &SecretKey,
        round: Round,
    ) -> Result<Vec<u64>, RobustError> {
        if let Some(last) = self.last_sealed.filter(|&last| round <= last) {
            return Err(RobustError::AlreadySealed {
                round,
                party: self.party,
                last,
            });
        }
        let (party, salt, run) = (self.party, self.salt, self.run);
        let state = self.state(round)?;
        let (Some(Shared { graph, adverts, .. }), Some(Held { set, .. })) =
            (&state.graph, &state.held)
        else {
            return Err(RobustError::OutOfOrder {
                round,
                party,
                step: "seal",
                needs: "it has not received the round's set and shares",
            });
        };
        let digest = set.digest();
        let mut keys = vec![(self_blind(&salt, &state.seed[..], round, party), false)];
        for partner in graph.neighbours(party).iter().filter(|p| set.contains(**p)) {
            let advert = adverts.get(partner).ok_or(RobustError::MissingAdvert {
                round,
                party,
                neighbour: *partner,
                set: set.clone(),
            })?;
            let key = pair_blind(
                &salt,
                &state.blind,
                &advert.blind,
                round,
                (party, *partner),
                &digest,
            )?;
            // Added toward a larger id, subtracted toward a smaller one.
            keys.push((key, *partner < party));
        }
        words.extend(canary_words(fp, CanaryTag::derive(key, run, round, fp)));
        let blinds: Vec<(&BlindKey, bool)> = keys.iter().map(|(k, neg)| (k, *neg)).collect();
        apply_blinds(&mut words, fp.params().total_bits, &blinds);
        self.last_sealed = Some(round);
        Ok(words)
    }

    /// R3: answers the server's unmask request (see the [module docs](self) for the checks),
    /// the same bytes again for the same request.
    pub fn unmask(&mut self, request: &UnmaskRequest) -> Result<UnmaskResponse, RobustError> {
        let (party, min, threshold) = (self.party, self.min_parties, self.policy.threshold);
        let round = request.round;
        let state = self.state_mut(round)?;
        let (Some(Shared { graph, .. }), Some(Held { set, shares: held })) =
            (&state.graph, &state.held)
        else {
            return Err(RobustError::OutOfOrder {
                round,
                party,
                step: "unmask",
                needs: "it has not received the round's set and shares",
            });
        };
        let alive = &request.alive;
        if !alive.contains(party) {
            return Err(RobustError::ListedDead { round, party });
        }
        if let Some(unknown) = alive.iter().find(|p| !set.contains(*p)) {
            return Err(RobustError::UnknownParty {
                round,
                party: unknown,
                set: set.clone(),
            });
        }
        if alive.len() < min {
            return Err(RobustError::BelowMinParties {
                round,
                what: "unmask request's alive set",
                found: alive.len(),
                min,
            });
        }
        let neighbours: Vec<PartyId> = graph
            .neighbours(party)
            .iter()
            .copied()
            .filter(|p| set.contains(*p))
            .collect();
        let alive_neighbours = neighbours.iter().filter(|p| alive.contains(**p)).count() as u32;
        if alive_neighbours < threshold {
            return Err(RobustError::TooFewAlive {
                round,
                party,
                alive: alive_neighbours,
                threshold,
            });
        }
        let asked = |p: &PartyId| {
            if alive.contains(*p) {
                Reveal::SelfSeed
            } else {
                Reveal::BlindSecret
            }
        };
        for target in &neighbours {
            if let Some(&revealed) = state.revealed.get(target)
                && revealed != asked(target)
            {
                return Err(RobustError::ConflictingReveal {
                    round,
                    party,
                    target: *target,
                    revealed,
                    asked: asked(target),
                });
            }
        }
        if let Some((before, answer)) = &state.answered {
            return if before == request {
                Ok(answer.clone())
            } else {
                Err(RobustError::AlreadyAnswered { round, party })
            };
        }
        let mut shares = Vec::with_capacity(neighbours.len());
        for target in &neighbours {
            let (q, s) = held.get(target).ok_or(RobustError::MissingShares {
                round,
                from: *target,
                to: party,
            })?;
            let kind = asked(target);
            let share = match kind {
                Reveal::SelfSeed => q.clone(),
                Reveal::BlindSecret => s.clone(),
            };
            shares.push((*target, kind, share));
        }
        for (target, kind, _) in &shares {
            state.revealed.insert(*target, *kind);
        }
        let answer = UnmaskResponse {
            round,
            from: party,
            shares,
        };
        state.answered = Some((request.clone(), answer.clone()));
        Ok(answer)
    }

    /// Checks a decrypted, corrected sum of `round` as in `strict` (the party list and the
    /// canaries) and returns the slots before the canaries. The published parties must be
    /// the alive set this party answered for, if it answered; otherwise a subset of the
    /// round's set it knows (if any) of at least the roster's minimum.
    pub fn open<'s>(
        &self,
        sum: &'s [u64],
        fp: &FixedPoint,
        key: &SecretKey,
        round: Round,
        published: &PartySet,
    ) -> Result<&'s [u64], AggregateRefused> {
        let state = self.rounds.get(&round);
        let answered = state.and_then(|s| s.answered.as_ref().map(|(r, _)| &r.alive));
        let known = state.and_then(|s| s.held.as_ref().map(|held| &held.set));
        let refuse = |expected: &PartySet| AggregateRefused::PartyList {
            round,
            expected: expected.clone(),
            found: published.clone(),
        };
        if let Some(expected) = answered
            && expected != published
        {
            return Err(refuse(expected));
        }
        if let Some(set) = known
            && published.iter().any(|p| !set.contains(p))
        {
            return Err(refuse(set));
        }
        if published.len() < self.min_parties
            || published
                .iter()
                .any(|p| p.0 >= self.roster.policy().parties)
        {
            return Err(refuse(known.unwrap_or(published)));
        }
        check_canaries(
            fp,
            sum,
            published.len(),
            CanaryTag::derive(key, self.run, round, fp),
            round,
        )
    }

    /// Forgets (wipes) the secrets of every round up to `round`: once a round is published
    /// or void, nothing of it is needed again, and a later theft reveals nothing of it.
    pub fn forget_through(&mut self, round: Round) {
        self.rounds.retain(|r, _| *r > round);
    }
}

/// A checkpoint's [`Shared`]: the round's advertisers, the neighbours' adverts, and the
/// messages sent (wire bytes).
type SharedRecord = (Vec<u32>, Vec<Vec<u8>>, Vec<Vec<u8>>);

/// A checkpoint's [`Held`]: the round's set, and per neighbour its two shares (wire bytes).
type HeldRecord = (Vec<u32>, Vec<(u32, Vec<u8>, Vec<u8>)>);

/// One round of a [`RobustCheckpoint`]: the round's secrets and what the party learnt.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RoundRecord {
    round: u64,
    channel: [u8; 32],
    blind: [u8; 32],
    seed: [u8; SEED_BYTES],
    advert: Vec<u8>,
    /// After sharing keys: every advert of the round, and the messages sent.
    shared: Option<SharedRecord>,
    /// After receiving shares: the round's set, and per neighbour its two shares.
    held: Option<HeldRecord>,
    /// The unmask request answered and the answer.
    answered: Option<(Vec<u8>, Vec<u8>)>,
    /// Per neighbour, the kind revealed (1: seed share, 2: blind-secret share).
    revealed: Vec<(u32, u8)>,
}

impl Drop for RoundRecord {
    fn drop(&mut self) {
        self.channel.zeroize();
        self.blind.zeroize();
        self.seed.zeroize();
        if let Some((_, shares)) = &mut self.held {
            for (_, q, s) in shares.iter_mut() {
                q.zeroize();
                s.zeroize();
            }
        }
        if let Some((_, answer)) = &mut self.answered {
            answer.zeroize();
        }
    }
}

/// What a [`RobustParty`] keeps in its checkpoint: every secret and share a restart needs
/// for the rounds not yet published or void (ephemeral keys, self-blind seeds, the shares it
/// holds, what it revealed). It holds secrets: write it only to a private file (the party
/// checkpoint is one); its secret bytes are wiped when it is dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobustCheckpoint {
    party: u32,
    salt: [u8; 32],
    last_sealed: Option<u64>,
    rounds: Vec<RoundRecord>,
}

impl fmt::Debug for RobustCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RobustCheckpoint")
            .field("party", &self.party)
            .field("last_sealed", &self.last_sealed)
            .field(
                "rounds",
                &self.rounds.iter().map(|r| r.round).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl RobustParty {
    /// This party's checkpoint (see [`RobustCheckpoint`]).
    pub fn checkpoint(&self) -> RobustCheckpoint {
        let rounds = self
            .rounds
            .iter()
            .map(|(round, state)| RoundRecord {
                round: round.0,
                channel: state.channel.to_bytes(),
                blind: state.blind.to_bytes(),
                seed: *state.seed,
                advert: state.advert.to_bytes().to_vec(),
                shared: state.graph.as_ref().map(|shared| {
                    (
                        shared.graph.set().iter().map(|p| p.0).collect(),
                        shared
                            .adverts
                            .values()
                            .map(|a| a.to_bytes().to_vec())
                            .collect(),
                        shared.sent.iter().map(SealedShares::to_bytes).collect(),
                    )
                }),
                held: state.held.as_ref().map(|held| {
                    (
                        held.set.iter().map(|p| p.0).collect(),
                        held.shares
                            .iter()
                            .map(|(p, (q, s))| (p.0, q.to_bytes(), s.to_bytes()))
                            .collect(),
                    )
                }),
                answered: state
                    .answered
                    .as_ref()
                    .map(|(request, answer)| (request.to_bytes(), answer.to_bytes())),
                revealed: state
                    .revealed
                    .iter()
                    .map(|(p, k)| (p.0, k.byte()))
                    .collect(),
            })
            .collect();
        RobustCheckpoint {
            party: self.party.0,
            salt: self.salt,
            last_sealed: self.last_sealed.map(|r| r.0),
            rounds,
        }
    }

    /// Restores a checkpoint of this party in this run: everything is checked again (the
    /// adverts' signatures, that the secrets are the ones advertised, the shares' form), and
    /// a checkpoint of another party or run is refused. Nothing at or below its last sealed
    /// round is ever sealed again.
    pub fn restore(&mut self, checkpoint: &RobustCheckpoint) -> Result<(), RobustError> {
        let bad = |reason: String| RobustError::Malformed {
            what: "robust checkpoint",
            reason,
        };
        if checkpoint.party != self.party.0 || checkpoint.salt != self.salt {
            return Err(bad(format!(
                "it is party {}'s in another run or roster, this is {} of this run",
                checkpoint.party, self.party
            )));
        }
        let mut rounds = BTreeMap::new();
        for record in &checkpoint.rounds {
            let round = Round(record.round);
            let state = self.restore_round(round, record)?;
            rounds.insert(round, state);
        }
        self.rounds = rounds;
        self.last_sealed = self.last_sealed.max(checkpoint.last_sealed.map(Round));
        Ok(())
    }

    fn restore_round(&self, round: Round, record: &RoundRecord) -> Result<RoundState, RobustError> {
        let (party, salt) = (self.party, self.salt);
        let bad = |reason: &str| RobustError::Malformed {
            what: "robust checkpoint",
            reason: format!("{round}: {reason}"),
        };
        let channel = StaticSecret::from(record.channel);
        let blind = StaticSecret::from(record.blind);
        let seed = Zeroizing::new(record.seed);
        let advert = Advert::from_bytes(&record.advert)?;
        advert.verify(&self.roster, &salt, round)?;
        if advert.party != party
            || advert.channel != PublicKey::from(&channel).to_bytes()
            || advert.blind != PublicKey::from(&blind).to_bytes()
            || advert.self_digest != seed_digest(&salt, round, party, &seed[..])
        {
            return Err(bad("its secrets are not the ones its advert names"));
        }
        let graph = match &record.shared {
            None => None,
            Some((set, adverts, sent)) => {
                let adverts: Vec<Advert> = adverts
                    .iter()
                    .map(|a| Advert::from_bytes(a))
                    .collect::<Result<_, _>>()?;
                let (by_party, _) = verified_adverts(&adverts, &self.roster, &salt, round, 0)?;
                let set = PartySet::new(set.iter().copied().map(PartyId));
                let graph = MaskGraph::harary(&set, self.policy.neighbours, &salt, round)
                    .map_err(|source| RobustError::Graph { round, source })?;
                if by_party.keys().any(|p| !graph.linked(party, *p)) {
                    return Err(bad("an advert of a party that is not a neighbour"));
                }
                let sent = sent
                    .iter()
                    .map(|m| SealedShares::from_bytes(m))
                    .collect::<Result<_, _>>()?;
                Some(Shared {
                    graph,
                    adverts: by_party,
                    sent,
                })
            }
        };
        let held = match &record.held {
            None => None,
            Some((set, shares)) => {
                let mut held = BTreeMap::new();
                for (p, q, s) in shares {
                    let q = Share::from_bytes(q, SEED_BYTES).map_err(|_| bad("a seed share"))?;
                    let s =
                        Share::from_bytes(s, SECRET_BYTES).map_err(|_| bad("a secret share"))?;
                    held.insert(PartyId(*p), (q, s));
                }
                Some(Held {
                    set: PartySet::new(set.iter().copied().map(PartyId)),
                    shares: held,
                })
            }
        };
        let answered = match &record.answered {
            None => None,
            Some((request, answer)) => Some((
                UnmaskRequest::from_bytes(request)?,
                UnmaskResponse::from_bytes(answer)?,
            )),
        };
        let revealed = record
            .revealed
            .iter()
            .map(|(p, k)| {
                Reveal::from_byte(*k)
                    .map(|k| (PartyId(*p), k))
                    .ok_or_else(|| bad("a reveal kind"))
            })
            .collect::<Result<_, _>>()?;
        if graph.is_none() && (held.is_some() || answered.is_some()) {
            return Err(bad("shares held without keys shared"));
        }
        Ok(RoundState {
            channel,
            blind,
            seed,
            advert,
            graph,
            held,
            answered,
            revealed,
        })
    }
}

/// The server's unmask step of one round: the adverts, the graph, who is alive, and the
/// responses; it rebuilds the secrets it needs and computes the public correction.
pub struct RoundUnmask {
    round: Round,
    salt: [u8; 32],
    threshold: u32,
    adverts: BTreeMap<PartyId, Advert>,
    graph: MaskGraph,
    set: PartySet,
    alive: PartySet,
    responses: BTreeMap<PartyId, UnmaskResponse>,
}

impl fmt::Debug for RoundUnmask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoundUnmask")
            .field("round", &self.round.0)
            .field("set", &self.set.to_string())
            .field("alive", &self.alive.to_string())
            .field("responses", &self.responses.len())
            .finish_non_exhaustive()
    }
}

impl RoundUnmask {
    /// The unmask step of `round`: `adverts` are every advert of the round (verified here as
    /// the parties verify them), `set` the parties that shared keys (S_r), `alive` those whose
    /// uploads are in the sum (A_r, a subset of `set` of at least the roster's minimum).
    pub fn new(
        roster: &Roster,
        salt: [u8; 32],
        round: Round,
        adverts: &[Advert],
        set: PartySet,
        alive: PartySet,
    ) -> Result<Self, RobustError> {
        let policy = robust_policy(roster)?;
        let min = roster.policy().min_parties;
        let (adverts, advertisers) = verified_adverts(adverts, roster, &salt, round, min)?;
        let graph = MaskGraph::harary(&advertisers, policy.neighbours, &salt, round)
            .map_err(|source| RobustError::Graph { round, source })?;
        Self::from_verified((policy, min), salt, round, (adverts, graph), set, alive)
    }

    /// As [`RoundUnmask::new`], from adverts already verified and their graph.
    pub(super) fn from_verified(
        (policy, min): (RobustPolicy, u32),
        salt: [u8; 32],
        round: Round,
        (adverts, graph): (BTreeMap<PartyId, Advert>, MaskGraph),
        set: PartySet,
        alive: PartySet,
    ) -> Result<Self, RobustError> {
        let advertisers = graph.set().clone();
        for (what, inner, outer) in [("set", &set, &advertisers), ("alive", &alive, &set)] {
            if let Some(party) = inner.iter().find(|p| !outer.contains(*p)) {
                return Err(RobustError::UnknownParty {
                    round,
                    party,
                    set: outer.clone(),
                });
            }
            if inner.len() < min {
                return Err(RobustError::BelowMinParties {
                    round,
                    what,
                    found: inner.len(),
                    min,
                });
            }
        }
        Ok(Self {
            round,
            salt,
            threshold: policy.threshold,
            adverts,
            graph,
            set,
            alive,
            responses: BTreeMap::new(),
        })
    }

    /// The request every alive party is sent.
    pub fn request(&self) -> UnmaskRequest {
        UnmaskRequest {
            round: self.round,
            alive: self.alive.clone(),
        }
    }

    fn neighbours_in_set(&self, party: PartyId) -> impl Iterator<Item = PartyId> + '_ {
        self.graph
            .neighbours(party)
            .iter()
            .copied()
            .filter(|p| self.set.contains(*p))
    }

    /// Takes `from`'s response: it must be alive, answer for this round, and hold exactly one
    /// share per neighbour in the set, of the kind the request asked. A repeat is ignored.
    pub fn add_response(
        &mut self,
        from: PartyId,
        response: UnmaskResponse,
    ) -> Result<(), RobustError> {
        let round = self.round;
        let bad = |reason: String| RobustError::BadResponse {
            round,
            from,
            reason,
        };
        if !self.alive.contains(from) {
            return Err(bad(format!("{from} is not alive in this round")));
        }
        if response.round != round || response.from != from {
            return Err(bad(format!(
                "it answers for {} as {}",
                response.round, response.from
            )));
        }
        let expected: Vec<(PartyId, Reveal)> = self
            .neighbours_in_set(from)
            .map(|p| {
                let kind = if self.alive.contains(p) {
                    Reveal::SelfSeed
                } else {
                    Reveal::BlindSecret
                };
                (p, kind)
            })
            .collect();
        let found: Vec<(PartyId, Reveal)> =
            response.shares.iter().map(|(p, k, _)| (*p, *k)).collect();
        if found != expected {
            return Err(bad(format!(
                "it holds shares for {found:?}, expected {expected:?}"
            )));
        }
        // Each holder's share sits at its own x (its place among the target's neighbours,
        // from 1): a responder can spoil only its own share, which the rebuild routes around,
        // never take another holder's x and so void the round.
        for (target, _, share) in &response.shares {
            let x = self
                .graph
                .neighbours(*target)
                .iter()
                .position(|p| *p == from)
                .map(|i| i + 1);
            if x != Some(usize::from(share.x())) {
                return Err(bad(format!(
                    "its share of {target}'s secret has x = {}, its place is {x:?}",
                    share.x()
                )));
            }
        }
        self.responses.entry(from).or_insert(response);
        Ok(())
    }

    /// Whether every secret the correction needs has at least T shares.
    pub fn ready(&self) -> bool {
        self.needed()
            .iter()
            .all(|(target, kind)| self.shares_of(*target, *kind).len() as u32 >= self.threshold)
    }

    /// The responses taken, by responder.
    pub(super) fn responses(&self) -> &BTreeMap<PartyId, UnmaskResponse> {
        &self.responses
    }

    /// The parties that have answered.
    pub fn answered(&self) -> PartySet {
        PartySet::new(self.responses.keys().copied())
    }

    /// The alive set (A_r).
    pub fn alive(&self) -> &PartySet {
        &self.alive
    }

    /// Every (party, secret) the correction rebuilds: β of each alive party, s of each dead
    /// one with an alive neighbour.
    fn needed(&self) -> Vec<(PartyId, Reveal)> {
        let mut needed: Vec<(PartyId, Reveal)> =
            self.alive.iter().map(|p| (p, Reveal::SelfSeed)).collect();
        for dead in self.set.iter().filter(|p| !self.alive.contains(*p)) {
            if self.neighbours_in_set(dead).any(|p| self.alive.contains(p)) {
                needed.push((dead, Reveal::BlindSecret));
            }
        }
        needed
    }

    fn shares_of(&self, target: PartyId, kind: Reveal) -> Vec<Share> {
        self.responses
            .values()
            .flat_map(|r| r.shares.iter())
            .filter(|(p, k, _)| *p == target && *k == kind)
            .map(|(_, _, share)| share.clone())
            .collect()
    }

    /// Rebuilds one secret from its shares, checked against its advert.
    fn rebuild(&self, target: PartyId, kind: Reveal) -> Result<Zeroizing<Vec<u8>>, RobustError> {
        let shares = self.shares_of(target, kind);
        if (shares.len() as u32) < self.threshold {
            return Err(RobustError::TooFewShares {
                round: self.round,
                target,
                kind,
                found: shares.len() as u32,
                threshold: self.threshold,
            });
        }
        let advert = self.adverts.get(&target).ok_or(RobustError::UnknownParty {
            round: self.round,
            party: target,
            set: self.set.clone(),
        })?;
        let check = |secret: &[u8]| match kind {
            Reveal::SelfSeed => {
                seed_digest(&self.salt, self.round, target, secret) == advert.self_digest
            }
            Reveal::BlindSecret => <[u8; 32]>::try_from(secret).is_ok_and(|bytes| {
                PublicKey::from(&StaticSecret::from(bytes)).to_bytes() == advert.blind
            }),
        };
        shamir::recover_checked(&shares, self.threshold, MAX_RECOVERY_TRIES, check).map_err(
            |source| RobustError::Shamir {
                round: self.round,
                party: target,
                source,
            },
        )
    }

    /// The public correction for a sum of `len` words at `total_bits` (t): minus every alive
    /// party's self-blind, and minus each alive party's blind toward each dead neighbour.
    /// Added to the summed bodies without a key, it leaves exactly the sum of the alive
    /// parties' updates and canaries. Fails (the round is then void) when a secret cannot be
    /// rebuilt.
    pub fn correction(&self, len: usize, total_bits: u32) -> Result<Vec<u64>, RobustError> {
        let round = self.round;
        let digest = self.set.digest();
        let needed = self.needed();
        let rebuilt: Vec<(PartyId, Reveal, Zeroizing<Vec<u8>>)> = needed
            .par_iter()
            .map(|&(target, kind)| Ok((target, kind, self.rebuild(target, kind)?)))
            .collect::<Result<_, RobustError>>()?;
        let mut keys: Vec<(BlindKey, bool)> = Vec::new();
        for (target, kind, secret) in &rebuilt {
            match kind {
                // The alive party added its self-blind: subtract it.
                Reveal::SelfSeed => {
                    keys.push((self_blind(&self.salt, secret, round, *target), true))
                }
                Reveal::BlindSecret => {
                    let mut bytes = Zeroizing::new([0u8; 32]);
                    bytes.copy_from_slice(secret);
                    let dead = StaticSecret::from(*bytes);
                    for alive in self
                        .neighbours_in_set(*target)
                        .filter(|p| self.alive.contains(*p))
                    {
                        let advert = self.adverts.get(&alive).ok_or(RobustError::UnknownParty {
                            round,
                            party: alive,
                            set: self.set.clone(),
                        })?;
                        let key = pair_blind(
                            &self.salt,
                            &dead,
                            &advert.blind,
                            round,
                            (*target, alive),
                            &digest,
                        )?;
                        // The alive party added this blind if its id is the smaller: undo it.
                        keys.push((key, alive < *target));
                    }
                }
            }
        }
        let mut correction = vec![0u64; len];
        let blinds: Vec<(&BlindKey, bool)> = keys.iter().map(|(k, neg)| (k, *neg)).collect();
        apply_blinds(&mut correction, total_bits, &blinds);
        Ok(correction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fl::{Encoding, Weighting};
    use crate::he::keys::KeyFile;
    use crate::secagg::Policy;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::sync::Arc;

    /// χ² statistic of the top 8 of the t bits of each word, over 256 buckets: about 255 ±
    /// 23 for uniform words; 400 is a p-value near 10^-8.
    fn chi_square_top_bits(fp: &FixedPoint, words: &[u64]) -> f64 {
        let t = fp.params().total_bits;
        let mut buckets = [0u64; 256];
        for &w in words {
            let v = (fp.from_plaintext(w) as u64) & ((1 << t) - 1);
            buckets[(v >> (t - 8)) as usize] += 1;
        }
        let expected = words.len() as f64 / 256.0;
        buckets
            .iter()
            .map(|&o| (o as f64 - expected).powi(2) / expected)
            .sum()
    }

    #[test]
    fn every_blind_key_of_a_round_is_distinct_and_bound_to_round_pair_and_set() {
        use std::collections::HashSet;
        let salt = [5; 32];
        let secrets: Vec<StaticSecret> = (1..=6u8).map(|i| StaticSecret::from([i; 32])).collect();
        let publics: Vec<[u8; 32]> = secrets
            .iter()
            .map(|s| PublicKey::from(s).to_bytes())
            .collect();
        let full = PartySet::new((0..6).map(PartyId));
        let fewer = PartySet::new((0..5).map(PartyId));
        let mut seen = HashSet::new();
        let mut count = 0;
        for round in [Round(0), Round(1)] {
            for set in [&full, &fewer] {
                let digest = set.digest();
                for i in set.iter() {
                    // The self-blind: one per party and round (the set does not enter it).
                    if set == &full {
                        let key = self_blind(&salt, &[i.0 as u8; SEED_BYTES], round, i);
                        assert!(seen.insert(key.digest()), "self {i} {round}");
                        count += 1;
                    }
                    for j in set.iter().filter(|j| *j > i) {
                        let (a, b) = (i.0 as usize, j.0 as usize);
                        let key =
                            pair_blind(&salt, &secrets[a], &publics[b], round, (i, j), &digest)
                                .unwrap();
                        // Both ends derive the same key.
                        let other =
                            pair_blind(&salt, &secrets[b], &publics[a], round, (j, i), &digest)
                                .unwrap();
                        assert_eq!(key.digest(), other.digest());
                        assert!(seen.insert(key.digest()), "pair {i} {j} {round} {set}");
                        count += 1;
                    }
                }
            }
        }
        // 2 rounds x (6 self + 15 + 10 pairs): every (AES key, counter 0..) stream is used once.
        assert_eq!(count, 2 * (6 + 15 + 10));
    }

    #[test]
    fn a_late_partys_ciphertext_stays_uniform_after_its_pair_secrets_are_rebuilt() {
        let (parties, victim) = (10u32, PartyId(4));
        let key = KeyFile::from_seed([3; 32]).secret_key().unwrap();
        let ids: Vec<Arc<Identity>> = (1..=parties as u8)
            .map(|i| Arc::new(Identity::from_secret_bytes([i; 32])))
            .collect();
        let (robust, min_parties) = RobustPolicy::rule_a(parties, 3, 3, None, None, false).unwrap();
        let policy = Policy {
            mode: Mode::Robust(robust),
            parties,
            min_parties,
        };
        let roster = Arc::new(
            Roster::new_signed(
                key.key_id(),
                ids.iter().map(|i| i.public()).collect(),
                ids.iter().map(|i| i.signing_public()).collect(),
                policy,
            )
            .unwrap(),
        );
        let mut sides: Vec<RobustParty> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                RobustParty::new(
                    Arc::clone(id),
                    PartyId(i as u32),
                    Arc::clone(&roster),
                    [1; 32],
                )
                .unwrap()
            })
            .collect();
        let round = Round(2);
        let adverts: Vec<Advert> = sides
            .iter_mut()
            .map(|s| s.advertise(round).unwrap())
            .collect();
        let shares: Vec<SealedShares> = sides
            .iter_mut()
            .flat_map(|s| {
                let set = PartySet::new(adverts.iter().map(|a| a.party));
                s.share_keys(round, &set, &adverts).unwrap()
            })
            .collect();
        let set = PartySet::new((0..parties).map(PartyId));
        let encoding =
            Encoding::new(8.0, 16, parties, Weighting::Fraction { nominal: 64 }).unwrap();
        let fp = *encoding.fixed_point();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        // A realistic update: small values, far from uniform.
        let values: Vec<f32> = (0..102_400)
            .map(|_| rng.random_range(-0.05f32..0.05))
            .collect();
        let words = encoding.encode(&values, 64, &mut rng).unwrap().words;
        let mut late = Vec::new();
        for (i, side) in sides.iter_mut().enumerate() {
            let mine: Vec<SealedShares> = shares
                .iter()
                .filter(|m| m.to.0 == i as u32)
                .cloned()
                .collect();
            side.receive_shares(round, &set, &mine).unwrap();
            let sealed = side.seal(words.clone(), &fp, &key, round).unwrap();
            if PartyId(i as u32) == victim {
                late = sealed;
            }
        }
        // The victim's upload arrives after the round closed: it is dead, every alive
        // holder reveals a share of its blind secret, and the server rebuilds it.
        let alive = PartySet::new(set.iter().filter(|p| *p != victim));
        let mut unmask = RoundUnmask::new(
            &roster,
            sides[0].salt(),
            round,
            &adverts,
            set.clone(),
            alive.clone(),
        )
        .unwrap();
        for p in alive.iter() {
            let answer = sides[p.0 as usize].unmask(&unmask.request()).unwrap();
            unmask.add_response(p, answer).unwrap();
        }
        let secret = unmask.rebuild(victim, Reveal::BlindSecret).unwrap();
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&secret);
        let rebuilt = StaticSecret::from(bytes);
        // The server keeps the late ciphertext; a colluding key holder decrypts it and strips
        // every pair blind of the victim.
        let salt = sides[0].salt();
        let digest = set.digest();
        let t = fp.params().total_bits;
        let graph = MaskGraph::harary(&set, robust.neighbours, &salt, round).unwrap();
        let mut stripped = late.clone();
        for &j in graph.neighbours(victim) {
            let advert = adverts[j.0 as usize];
            let key =
                pair_blind(&salt, &rebuilt, &advert.blind, round, (victim, j), &digest).unwrap();
            // The victim added the blind toward a larger id: take it off.
            apply_blinds(&mut stripped, t, &[(&key, victim < j)]);
        }
        let chi2 = chi_square_top_bits(&fp, &stripped);
        assert!(
            chi2 < 400.0,
            "self-blind on, pair blinds stripped: χ² = {chi2}"
        );
        // Negative control: without its self-blind the coalition would hold the update.
        let seed = &sides[victim.0 as usize].state(round).unwrap().seed;
        let own = self_blind(&salt, &seed[..], round, victim);
        apply_blinds(&mut stripped, t, &[(&own, true)]);
        let chi2 = chi_square_top_bits(&fp, &stripped);
        assert!(chi2 > 1e5, "without the self-blind: χ² = {chi2}");
        assert_eq!(
            fp.decode_integers(&stripped[..words.len()]),
            fp.decode_integers(&words),
            "without the self-blind, the update is recovered"
        );
    }
}
