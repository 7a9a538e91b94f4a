//! Randomness, the bottom layer of `he`: OS seeding, tfhe's AES-CTR keystream read in batches,
//! and a CSPRNG for everything else that must not be predictable.
//!
//! Nothing here imports anything else of `he` (only tfhe, tfhe-csprng, getrandom, zeroize and
//! rand), so encryption above it and [`crate::dp`] beside it both draw from it: DP-SGD takes its
//! noise and its Poisson batches from [`SecureRng`].
//!
//! # Why a keystream of our own
//!
//! tfhe's `RandomGenerator` hands out the keystream of its AES-128-CTR generator one byte at
//! a time; for the 50 ciphertexts of a 101,770-value vector (800 KiB of masks, 300 KiB of
//! noise bytes) that bookkeeping costs more than the rest of encryption. `KeyStream` reads
//! the same keystream (tfhe-csprng's AES block cipher, AES-NI where the CPU has it, on
//! counters `first_block, first_block + 1, ...`) 128 bytes at a time, and turns it into
//! uniform words and TUniform noise exactly as tfhe does: unit tests check both byte for byte
//! against tfhe's `RandomGenerator` under the same key.
//!
//! Each encryption draws a fresh 128-bit AES key from an OS-seeded tfhe CSPRNG, and each
//! ciphertext of the vector reads its own disjoint counter range, so no keystream byte is
//! ever used twice.

use tfhe::core_crypto::commons::math::random::{
    DefaultRandomGenerator, RandomGenerator, TUniform, XofSeed,
};
use tfhe_csprng::generators::aes_ctr::{
    AES_CALLS_PER_BATCH, Aes128Key, AesBlockCipher, BYTES_PER_BATCH,
};
use tfhe_csprng::generators::default::DefaultAes128BlockCipher;
use zeroize::Zeroizing;

/// The operating system's random source failed, so nothing could be seeded.
///
/// ```
/// use hefl::he::csprng::{EntropyError, SecureRng};
///
/// let rng: Result<SecureRng, EntropyError> = SecureRng::from_os();
/// assert!(rng.is_ok());
/// ```
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct EntropyError(getrandom::Error);

/// A fresh 128-bit key drawn from an OS-seeded tfhe CSPRNG.
pub(crate) fn fresh_key() -> Result<u128, EntropyError> {
    Ok(os_seeded_generator()?.random_uniform::<u128>())
}

/// A fresh tfhe AES-CTR CSPRNG seeded through tfhe's XOF from 32 bytes of OS randomness.
fn os_seeded_generator() -> Result<RandomGenerator<DefaultRandomGenerator>, EntropyError> {
    let mut seed = Zeroizing::new(vec![0u8; 32]);
    getrandom::fill(&mut seed[..]).map_err(EntropyError)?;
    Ok(RandomGenerator::new(XofSeed::new(
        seed.to_vec(),
        *b"heflENCR",
    )))
}

/// The AES-128-CTR keystream under one key, read at arbitrary block offsets.
#[derive(Clone)]
pub(crate) struct KeyStream {
    cipher: DefaultAes128BlockCipher,
    bytes: Vec<u8>,
}

impl KeyStream {
    /// The keystream under `key` (the round keys are expanded once, here).
    pub(crate) fn new(key: u128) -> Self {
        Self {
            cipher: DefaultAes128BlockCipher::new(Aes128Key::new(key)),
            bytes: Vec::new(),
        }
    }

    /// AES blocks (16 bytes each) covering `bytes` bytes, rounded up to whole batches so
    /// that consecutive ranges never share a block.
    pub(crate) fn blocks_for(bytes: usize) -> u128 {
        (bytes.div_ceil(BYTES_PER_BATCH) * AES_CALLS_PER_BATCH) as u128
    }

    /// Keystream bytes per TUniform sample: tfhe draws b + 2 bits, rounded up to bytes.
    pub(crate) fn tuniform_bytes(noise: TUniform<u64>) -> usize {
        (noise.bound_log2() as usize + 2).div_ceil(8)
    }

    /// The batch of keystream blocks from `counter` on, and `counter` moved past it.
    #[inline(always)]
    fn next_batch(&mut self, counter: &mut u128) -> [u8; BYTES_PER_BATCH] {
        let inputs = std::array::from_fn(|i| counter.wrapping_add(i as u128).to_le());
        *counter = counter.wrapping_add(AES_CALLS_PER_BATCH as u128);
        self.cipher.generate_batch(inputs)
    }

    /// Fills `out` with the keystream starting at block `first_block`, whole batches first
    /// (copies of one constant size), then the tail.
    fn fill_bytes(&mut self, first_block: u128, out: &mut [u8]) {
        let mut counter = first_block;
        let mut batches = out.chunks_exact_mut(BYTES_PER_BATCH);
        for batch in &mut batches {
            batch.copy_from_slice(&self.next_batch(&mut counter));
        }
        let tail = batches.into_remainder();
        if !tail.is_empty() {
            let batch = self.next_batch(&mut counter);
            tail.copy_from_slice(&batch[..tail.len()]);
        }
    }

    /// Reads `len` bytes from `first_block` into the internal buffer.
    fn refill(&mut self, first_block: u128, len: usize) {
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.resize(len, 0);
        self.fill_bytes(first_block, &mut bytes);
        self.bytes = bytes;
    }

    /// Calls `f` on each element of `out` with its S keystream bytes, from block
    /// `first_block` on, straight from each batch of blocks (S divides a batch's 128 bytes).
    /// Every whole batch is a loop of a constant trip count (no `memcpy` call per batch).
    #[inline(always)]
    fn for_each_chunk<const S: usize, T>(
        &mut self,
        first_block: u128,
        out: &mut [T],
        mut f: impl FnMut(&mut T, [u8; S]),
    ) {
        const { assert!(BYTES_PER_BATCH.is_multiple_of(S)) };
        let per_batch = BYTES_PER_BATCH / S;
        let mut counter = first_block;
        let mut chunks = out.chunks_exact_mut(per_batch);
        for chunk in &mut chunks {
            let batch = self.next_batch(&mut counter);
            for (o, bytes) in chunk[..per_batch].iter_mut().zip(batch.chunks_exact(S)) {
                f(o, bytes_of(bytes));
            }
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let batch = self.next_batch(&mut counter);
            for (o, bytes) in tail.iter_mut().zip(batch.chunks_exact(S)) {
                f(o, bytes_of(bytes));
            }
        }
    }

    /// Calls `f` on each word of `out` with a 24-bit value from 3 keystream bytes
    /// (little-endian), from block `first_block` on: [`KeyStream::for_each_chunk`] for a size
    /// that does not divide a batch, read three batches (128 words) at a time.
    #[inline(always)]
    fn for_each_u24(
        &mut self,
        first_block: u128,
        out: &mut [u64],
        mut f: impl FnMut(&mut u64, u32),
    ) {
        const GROUP: usize = 3 * BYTES_PER_BATCH;
        let mut counter = first_block;
        let mut group = [0u8; GROUP];
        let mut fill = |group: &mut [u8; GROUP], batches: usize, counter: &mut u128| {
            for batch in group.chunks_exact_mut(BYTES_PER_BATCH).take(batches) {
                batch.copy_from_slice(&self.next_batch(counter));
            }
        };
        let mut chunks = out.chunks_exact_mut(GROUP / 3);
        for chunk in &mut chunks {
            fill(&mut group, 3, &mut counter);
            for (o, b) in chunk.iter_mut().zip(group.chunks_exact(3)) {
                f(o, u32::from_le_bytes([b[0], b[1], b[2], 0]));
            }
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            fill(
                &mut group,
                (tail.len() * 3).div_ceil(BYTES_PER_BATCH),
                &mut counter,
            );
            for (o, b) in tail.iter_mut().zip(group.chunks_exact(3)) {
                f(o, u32::from_le_bytes([b[0], b[1], b[2], 0]));
            }
        }
    }

    /// Fills `out` with uniform u64 words from the keystream at `first_block`, read as
    /// little-endian (tfhe's byte order for uniform integers).
    pub(crate) fn fill_uniform(&mut self, first_block: u128, out: &mut [u64]) {
        self.for_each_chunk(first_block, out, |w, le| *w = u64::from_le_bytes(le));
    }

    /// Adds (wrapping) uniform u64 words from the keystream at `first_block` to `out`: what
    /// [`KeyStream::fill_uniform`] would write, summed in place.
    pub(crate) fn add_uniform(&mut self, first_block: u128, out: &mut [u64]) {
        self.for_each_chunk(first_block, out, |w, le| {
            *w = w.wrapping_add(u64::from_le_bytes(le));
        });
    }

    /// Adds (or, with `negate`, subtracts) a uniform t-bit value from the keystream at
    /// `first_block` to the top `bits` = t bits of each word of `out`, modulo 2^64: a blind of
    /// secure aggregation ([`crate::secagg`]). Reads 3 bytes per word when t <= 24, 4 when
    /// t <= 32, else 8; [`KeyStream::blind_blocks`] is the counter range it covers.
    pub(crate) fn add_top_bits(
        &mut self,
        first_block: u128,
        out: &mut [u64],
        bits: u32,
        negate: bool,
    ) {
        debug_assert!((1..=64).contains(&bits));
        let shift = 64 - bits;
        // Shifting left by 64 - t keeps exactly the low t bits of the draw: uniform mod 2^t.
        if bits <= 24 {
            return if negate {
                self.for_each_u24(first_block, out, |w, r| {
                    *w = w.wrapping_sub(u64::from(r) << shift);
                })
            } else {
                self.for_each_u24(first_block, out, |w, r| {
                    *w = w.wrapping_add(u64::from(r) << shift);
                })
            };
        }
        match (bits <= 32, negate) {
            (true, false) => self.for_each_chunk(first_block, out, |w, le: [u8; 4]| {
                *w = w.wrapping_add(u64::from(u32::from_le_bytes(le)) << shift);
            }),
            (true, true) => self.for_each_chunk(first_block, out, |w, le: [u8; 4]| {
                *w = w.wrapping_sub(u64::from(u32::from_le_bytes(le)) << shift);
            }),
            (false, false) => self.for_each_chunk(first_block, out, |w, le: [u8; 8]| {
                *w = w.wrapping_add(u64::from_le_bytes(le) << shift);
            }),
            (false, true) => self.for_each_chunk(first_block, out, |w, le: [u8; 8]| {
                *w = w.wrapping_sub(u64::from_le_bytes(le) << shift);
            }),
        }
    }

    /// The AES blocks [`KeyStream::add_top_bits`] reads for `len` words of `bits` bits, from
    /// block 0: whole batches, as every read here.
    pub(crate) fn blind_blocks(len: usize, bits: u32) -> u128 {
        let per_word = match bits {
            ..=24 => 3,
            25..=32 => 4,
            _ => 8,
        };
        Self::blocks_for(len * per_word)
    }

    /// Fills `out` with the keystream read as little-endian u32 words, from block `first_block`
    /// on (the uniform bits of stochastic rounding: 4 bytes per value).
    pub(crate) fn fill_u32(&mut self, first_block: u128, out: &mut [u32]) {
        self.for_each_chunk(first_block, out, |w, le| *w = u32::from_le_bytes(le));
    }

    /// Writes one TUniform(b) sample (as a wrapping u64) to each word of `out`, drawn from the
    /// keystream at `first_block` as tfhe samples TUniform: take b + 2 random bits r
    /// (little-endian bytes, masked), then e = (r >> 1) + (r & 1) - 2^b, uniform on
    /// [-2^b, 2^b] with the two end points at half weight.
    pub(crate) fn fill_tuniform(
        &mut self,
        first_block: u128,
        out: &mut [u64],
        noise: TUniform<u64>,
    ) {
        let bound_log2 = noise.bound_log2();
        let per_sample = Self::tuniform_bytes(noise);
        let mod_mask = u64::MAX >> (u64::BITS - (bound_log2 + 2));
        // Eight bytes past the end, so that every sample is one unaligned 8-byte load (masked
        // to its b + 2 bits, which per_sample bytes hold).
        self.refill(first_block, out.len() * per_sample + 8);
        let samples = self.bytes.windows(8).step_by(per_sample);
        for (word, bytes) in out.iter_mut().zip(samples) {
            let mut le = [0u8; 8];
            le.copy_from_slice(bytes);
            let r = u64::from_le_bytes(le) & mod_mask;
            *word = (r >> 1).wrapping_add(r & 1).wrapping_sub(1 << bound_log2);
        }
    }
}

/// A chunk of exactly S keystream bytes as an array.
#[inline(always)]
fn bytes_of<const S: usize>(chunk: &[u8]) -> [u8; S] {
    let mut bytes = [0u8; S];
    bytes.copy_from_slice(chunk);
    bytes
}

/// A cryptographically secure `rand::RngCore`: tfhe-csprng's AES-128-CTR keystream under a
/// fresh key from an OS-seeded tfhe CSPRNG. DP-SGD draws its noise and its Poisson batches
/// from it, so neither is predictable from the run's seed.
///
/// ```
/// use hefl::he::csprng::SecureRng;
/// use rand::RngCore;
///
/// let mut a = SecureRng::from_os()?;
/// let mut b = SecureRng::from_os()?;
/// assert_ne!(a.next_u64(), b.next_u64());
/// # Ok::<(), hefl::he::csprng::EntropyError>(())
/// ```
pub struct SecureRng {
    stream: KeyStream,
    next_block: u128,
    words: Vec<u64>,
    used: usize,
}

impl SecureRng {
    /// Words drawn from the keystream per refill.
    const WORDS: usize = 1024;

    /// A generator keyed from fresh OS entropy through tfhe's CSPRNG.
    pub fn from_os() -> Result<Self, EntropyError> {
        Ok(Self::from_key(fresh_key()?))
    }

    /// A generator under a known key: reproducible, for tests and for public derivations
    /// (the mask graph's permutation, [`crate::secagg::MaskGraph`]), never for secrets. Its
    /// `next_u64` reads the keystream from counter 0 on as consecutive little-endian words.
    pub fn from_key(key: u128) -> Self {
        Self {
            stream: KeyStream::new(key),
            next_block: 0,
            words: vec![0; Self::WORDS],
            used: Self::WORDS,
        }
    }
}

impl rand::RngCore for SecureRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        if self.used == Self::WORDS {
            self.stream.fill_uniform(self.next_block, &mut self.words);
            self.next_block += KeyStream::blocks_for(Self::WORDS * size_of::<u64>());
            self.used = 0;
        }
        self.used += 1;
        self.words[self.used - 1]
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(size_of::<u64>()) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tfhe_csprng::seeders::Seed;

    const KEY: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;

    #[test]
    fn fresh_keys_differ() {
        let (a, b) = (fresh_key().unwrap(), fresh_key().unwrap());
        assert_ne!(a, b, "two OS-seeded keys: {a:#x} and {b:#x}");
    }

    #[test]
    fn same_uniform_words_as_tfhe_random_generator() {
        let mut tfhe = RandomGenerator::<DefaultRandomGenerator>::new(Seed(KEY));
        let mut expected = vec![0u64; 3 * 2048];
        tfhe.fill_slice_with_random_uniform(&mut expected);

        let mut ours = vec![0u64; 3 * 2048];
        KeyStream::new(KEY).fill_uniform(0, &mut ours);
        assert_eq!(ours, expected);

        // Reading from a block offset continues the same stream.
        let mut second = vec![0u64; 2048];
        KeyStream::new(KEY).fill_uniform(KeyStream::blocks_for(2048 * 8), &mut second);
        assert_eq!(second, expected[2048..2 * 2048]);
    }

    #[test]
    fn blinds_are_the_keystream_in_the_top_bits() {
        let start: Vec<u64> = (0..1000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        // The keystream's bytes, and the same read as 3-byte words (t <= 24).
        let mut bytes = vec![0u8; start.len() * 3];
        KeyStream::new(KEY).fill_bytes(0, &mut bytes);
        let raw24: Vec<u32> = bytes
            .chunks_exact(3)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], 0]))
            .collect();
        for bits in [22, 24, 25, 32, 40] {
            let mut raw = vec![0u64; start.len()];
            let mut raw32 = vec![0u32; start.len()];
            KeyStream::new(KEY).fill_uniform(0, &mut raw);
            KeyStream::new(KEY).fill_u32(0, &mut raw32);
            let mut added = start.clone();
            KeyStream::new(KEY).add_top_bits(0, &mut added, bits, false);
            let draws = added
                .iter()
                .zip(&start)
                .zip(raw.iter().zip(&raw32).zip(&raw24));
            for ((a, s), ((r64, r32), r24)) in draws {
                let r = match bits {
                    ..=24 => u64::from(*r24),
                    25..=32 => u64::from(*r32),
                    _ => *r64,
                };
                assert_eq!(*a, s.wrapping_add(r << (64 - bits)), "t = {bits}");
            }
            // Subtracting the same blind restores the words.
            KeyStream::new(KEY).add_top_bits(0, &mut added, bits, true);
            assert_eq!(added, start, "t = {bits}");
        }
        assert_eq!(
            KeyStream::blind_blocks(1000, 22),
            KeyStream::blocks_for(3000)
        );
        assert_eq!(
            KeyStream::blind_blocks(1000, 25),
            KeyStream::blocks_for(4000)
        );
        assert_eq!(
            KeyStream::blind_blocks(1000, 40),
            KeyStream::blocks_for(8000)
        );
    }

    #[test]
    fn same_tuniform_noise_as_tfhe_random_generator() {
        for bound_log2 in [17, 5, 30] {
            let noise = TUniform::<u64>::new(bound_log2);
            let start: Vec<u64> = (0..2048u64).map(|i| i << 40).collect();
            let mut tfhe = RandomGenerator::<DefaultRandomGenerator>::new(Seed(KEY));
            let mut expected = start.clone();
            tfhe.unsigned_integer_slice_wrapping_add_random_from_distribution_assign(
                &mut expected,
                noise,
            );
            let mut ours = vec![0u64; start.len()];
            KeyStream::new(KEY).fill_tuniform(0, &mut ours, noise);
            for (o, s) in ours.iter_mut().zip(&start) {
                *o = o.wrapping_add(*s);
            }
            assert_eq!(ours, expected, "TUniform({bound_log2})");
        }
    }
}
