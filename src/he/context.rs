//! What a message is for ([`Context`]): the run, round and sender every upload, sum and model
//! snapshot names in its header.

use serde::{Deserialize, Serialize};

/// What a message is for: its run (the plan's fingerprint), its round and its sender (or
/// [`Context::SUM`] for a round's published sum). Every upload, sum and model snapshot
/// carries it in its header, and a receiver refuses one of another run, round or party, naming
/// both: a message copied from another round, another run or another party is refused as
/// what it is. (The header is not authenticated, like the rest of a GLWE message: whoever
/// edits it to pass makes a ciphertext the others still decrypt as its sender's update, which
/// a key holder can make anyway; the check is against replays, not against key holders.)
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Context {
    /// The run's plan fingerprint.
    pub run: [u8; 32],
    /// The round (a snapshot: the first round whose sum it does not hold).
    pub round: u64,
    /// The sender's party id, or [`Context::SUM`].
    pub party: u32,
}

impl Context {
    /// The party field of a round's sum.
    pub const SUM: u32 = u32::MAX;

    /// The context of `run`'s published sum of `round`.
    pub fn sum(run: [u8; 32], round: u64) -> Self {
        Self {
            run,
            round,
            party: Self::SUM,
        }
    }
}

impl std::fmt::Display for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let run = hex::encode(&self.run[..6]);
        match self.party {
            Self::SUM => write!(f, "the sum of round {}, run {run}", self.round),
            party => write!(f, "party {party}, round {}, run {run}", self.round),
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Context({self})")
    }
}
