//! Secure aggregation inside the HE plaintext (`--secure-agg strict`): pairwise blinds, so
//! that no one key opens one party's update.
//!
//! Every client holds the shared HE key, so without this module any client that obtains
//! another's ciphertext (colluding with the server, from a leaked server disk, off the wire
//! without TLS) decrypts that party's update. Here each party adds, before encryption,
//! SecAgg-style pairwise blinds to its quantized words modulo 2^t (the top t bits of each
//! plaintext word, where [`crate::quant::FixedPoint`] puts values): they cancel exactly in the
//! sum of the round's whole party set, and one party's decrypted words are uniform mod 2^t to
//! anyone missing one of its pair secrets. The GLWE encryption stays, so the server still sees
//! only ciphertext. The design note is `shared/design/masked-he.md`; the user's guide is
//! `docs/security.md#secure-aggregation-strict`.
//!
//! Pieces, bottom-up:
//! - [`Identity`]: a party's X25519 static key pair and the Ed25519 signing key derived from
//!   it, in a file of mode 0600 (refused if group or others can read it), and its public
//!   lines;
//! - [`Policy`]: the mode (`strict`, or `robust` with its [`RobustPolicy`]: colluders,
//!   dropouts, neighbours, threshold), the parties and the fewest in a sum;
//! - [`Roster`]: the trust anchor, compared out of band by its [`Fingerprint`]: the HE key id,
//!   every party's public keys, and the policy, which a server's plan may tighten but never
//!   weaken;
//! - [`Blinder`]: the key schedule (pair secrets, per-round blind keys by HKDF-SHA256, the
//!   secret canary tag), sealing (canaries and blinds, each (round, attempt) at most once)
//!   and opening (party list and canaries checked, else [`AggregateRefused`]).
//!
//! Building blocks of `--secure-agg robust` (issue 27; design note §1.5), not yet wired in:
//! - [`MaskGraph`]: a round's Harary neighbour graph, its labels permuted by a public function
//!   of the session salt, the round and the set;
//! - [`split`] and [`recover_checked`]: T-of-k Shamir [`Share`]s of short secrets over
//!   GF(256) (vsss-rs), recovery retrying other subsets when a holder sent a bad share.
//!
//! # Threat model (`strict`)
//!
//! hefl defends against a server that may collude with a set C of clients.
//!
//! - **The server alone**, passive or active, learns nothing of any update or aggregate: every
//!   byte it holds is a GLWE ciphertext under a key it never sees. It sees metadata (party
//!   ids, timing, sizes, who dropped, void rounds) and can delay, void or withhold rounds.
//!   Clients refuse garbage, lone ciphertexts, subset sums and replays (the canaries).
//! - **Clients without the server** learn each round's aggregate, as without blinds. Another
//!   client's ciphertext decrypts to values uniform mod 2^t unless they hold all of that
//!   client's pair secrets.
//! - **Server + C** learn, per published round, the sum of the honest parties' updates (the
//!   aggregate minus their own) and nothing else, as long as every honest party has an honest
//!   partner (always, with at least 2 honest parties in the set: the blind graph is
//!   complete), provided the roster's fingerprint was compared out of band (so that the
//!   server cannot substitute keys). A server can shrink a sum to the roster's
//!   `min_parties`: that is the privacy floor, pinned in the roster.
//! - **Not provided**: integrity against the server plus one key holder (who can encrypt any
//!   plaintext, canaries included); hiding the aggregate from key holders; protection when
//!   all of a party's partners collude; forward secrecy (static keys: a stolen identity, the
//!   HE key and stored ciphertexts reveal that party's past updates); protection against
//!   leakage through the aggregate itself.

mod blind;
mod coordinator;
mod credentials;
mod graph;
mod identity;
mod reed_solomon;
mod robust;
mod roster;
mod shamir;

pub use blind::{
    AggregateRefused, Attempt, BlindKey, Blinder, CANARY_SLOTS, CanaryTag, PartySet, SecAggError,
    canary_words, check_canaries,
};
pub use coordinator::{Coordinator, CoordinatorCheckpoint};
pub use credentials::{Credentials, plan_policy};
pub use graph::{GraphError, MaskGraph};
pub use identity::{
    IDENTITY_FILE_VERSION, Identity, IdentityError, PartyPublicKey, PublicLines, SigningPublicKey,
};
pub use robust::{
    ADVERT_BYTES, Advert, MAX_RECOVERY_TRIES, Reveal, RobustCheckpoint, RobustError, RobustParty,
    RoundUnmask, SEALED_SHARES_BYTES, SealedShares, UnmaskRequest, UnmaskResponse,
};
pub use roster::{
    Fingerprint, MAX_ROSTER_BYTES, MAX_ROSTER_PARTIES, Mode, ModeName, Policy, ROSTER_VERSION,
    RobustPolicy, Roster, RosterError,
};
pub use shamir::{
    MAX_HOLDERS, MAX_SECRET_LEN, ShamirError, Share, recover_checked, split, split_with_rng,
};
