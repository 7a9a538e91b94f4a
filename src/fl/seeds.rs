//! The generators that make a run reproducible: each party's rounding generator, seeded by
//! the run's seed and the party, and the exact position of a ChaCha20 generator, which
//! checkpoints save.

use super::server::PartyId;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// The generator of a party's stochastic rounding: seeded by the run's seed and the party,
/// so that the same run quantizes the same way in every privacy mode and every transport.
pub(crate) fn rounding_rng(seed: u64, party: PartyId) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed ^ 0x0F1D_ED00 ^ (u64::from(party.0) << 32))
}

/// A ChaCha20 generator's exact position.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct RngState {
    seed: [u8; 32],
    stream: u64,
    word_pos: u128,
}

impl RngState {
    pub(crate) fn of(rng: &ChaCha20Rng) -> Self {
        Self {
            seed: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos(),
        }
    }

    pub(crate) fn restore(&self) -> ChaCha20Rng {
        let mut rng = <ChaCha20Rng as rand::SeedableRng>::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos);
        rng
    }
}
