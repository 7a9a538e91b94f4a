//! The compact ciphertext entity: [`CompactVector`], what travels between clients and the
//! server. A fresh one (an upload) is one party's packed GLWE encryption with its mask given
//! by a public 128-bit seed and its bodies rounded to `body_bits`; a sum holds the summed
//! bodies and either every summand's seed or the summed mask switched to fewer bits (the two
//! [`DownloadForm`](super::DownloadForm)s). Nothing here needs a secret key.
//!
//! # Why publishing seeds and rounding bodies leaks nothing
//!
//! - A GLWE mask is uniformly random and public: it travels in the clear in every ordinary
//!   ciphertext. Generating it from a fresh public seed with AES-128-CTR (tfhe-csprng's block
//!   cipher) is what tfhe calls a seeded ciphertext; it is as secure as the ordinary one as
//!   long as AES is a pseudorandom function. The seed is its own fresh key: the noise, which
//!   must stay secret (with it and the mask, the body would give the key), comes from a second
//!   AES key that never leaves the client.
//! - Rounding the body b = a·s + m + e to its top bits is a public function of the
//!   ciphertext: anyone holding the ciphertext could compute it, so it cannot reveal anything
//!   the ciphertext did not. The same holds for the server's sum of masks and its switch to
//!   fewer bits. The rounding only adds decoding error, which [`Widths`](super::Widths) bounds.
//!
//! The same argument, for users, is in
//! `docs/security.md#why-publishing-seeds-and-rounding-bodies-is-safe`.

use rayon::prelude::*;

use super::ciphertext::{
    EncryptedVector, HeError, add_public_words, add_summands, check_same_vector, task_ciphertexts,
    wrapping_add_assign,
};
use super::csprng::KeyStream;
use super::keys::KeyId;
use super::pack::round_to;
use super::params::PARAMS;

/// A packed list of GLWE ciphertexts in compact form (see the [module docs](self)): the
/// protocol's upload and aggregate. Convert to full ciphertexts with
/// [`CompactVector::expand`] to decrypt.
///
/// ```
/// use hefl::he::{CompactVector, DownloadForm, Widths, keys::KeyFile};
///
/// let key = KeyFile::from_seed([1; 32]).secret_key()?;
/// let widths = Widths::new(22, 3, DownloadForm::Seeds)?;
/// let delta = 1u64 << (64 - 22);
/// let a = key.prepare(2)?.seal(&[3 * delta, 5 * delta], &widths)?;
/// let b = key.prepare(2)?.seal(&[4 * delta, delta.wrapping_neg()], &widths)?;
/// // The server side: no key involved, bodies and seeds only.
/// let sum = CompactVector::sum([&a, &b])?;
/// assert_eq!(sum.summands(), 2);
/// assert_eq!(sum.seeds().map(<[u128]>::len), Some(2));
/// // A client regenerates the masks and decrypts.
/// let plain: Vec<i64> = key
///     .decrypt(&sum.expand())?
///     .iter()
///     .map(|&w| (w.wrapping_add(delta / 2) as i64) >> (64 - 22))
///     .collect();
/// assert_eq!(plain, [7, 4]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct CompactVector {
    pub(crate) key_id: KeyId,
    pub(crate) plaintext_len: usize,
    pub(crate) summands: u32,
    pub(crate) body_bits: u32,
    /// One torus word per value: the (summed) rounded bodies, low 64 - `body_bits` bits zero.
    pub(crate) bodies: Vec<u64>,
    pub(crate) masks: Masks,
    /// What the message is for: run, round, sender (see [`Context`](super::Context)).
    pub(crate) context: super::context::Context,
}

/// How a [`CompactVector`] carries its masks.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Masks {
    /// Every summand's seed, strictly increasing (so a sum's bytes do not depend on the
    /// order of its summands, and no seed counts twice).
    Seeds(Vec<u128>),
    /// The summed masks, ciphertext by ciphertext (k·N words each), sent rounded to `bits`.
    Summed {
        /// Bits kept on the wire.
        bits: u32,
        /// Torus words.
        words: Vec<u64>,
    },
}

impl std::fmt::Debug for CompactVector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (seeds, mask_bits) = match &self.masks {
            Masks::Seeds(seeds) => (seeds.len(), None),
            Masks::Summed { bits, .. } => (0, Some(*bits)),
        };
        f.debug_struct("CompactVector")
            .field("key_id", &self.key_id)
            .field("plaintext_len", &self.plaintext_len)
            .field("summands", &self.summands)
            .field("body_bits", &self.body_bits)
            .field("seeds", &seeds)
            .field("mask_bits", &mask_bits)
            .finish_non_exhaustive()
    }
}

/// Keystream blocks of one ciphertext's mask (k·N uniform words).
pub(crate) fn mask_blocks() -> u128 {
    KeyStream::blocks_for(PARAMS.glwe_dimension().0 * PARAMS.values_per_ciphertext() * 8)
}

/// Fills `mask` with ciphertext `index`'s mask under `seed` (how encryption draws it).
pub(crate) fn fill_mask(stream: &mut KeyStream, index: usize, mask: &mut [u64]) {
    stream.fill_uniform(index as u128 * mask_blocks(), mask);
}

impl CompactVector {
    /// The id of the key this vector is encrypted under.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Number of plaintext values.
    pub fn plaintext_len(&self) -> usize {
        self.plaintext_len
    }

    /// Number of fresh encryptions summed into this vector (1 for an upload).
    pub fn summands(&self) -> u32 {
        self.summands
    }

    /// Bits kept of every body.
    pub fn body_bits(&self) -> u32 {
        self.body_bits
    }

    /// The summands' seeds (strictly increasing), or `None` when the masks were summed and
    /// switched.
    pub fn seeds(&self) -> Option<&[u128]> {
        match &self.masks {
            Masks::Seeds(seeds) => Some(seeds),
            Masks::Summed { .. } => None,
        }
    }

    /// Bits kept of the summed mask, or `None` in the seeds form.
    pub fn mask_bits(&self) -> Option<u32> {
        match &self.masks {
            Masks::Seeds(_) => None,
            Masks::Summed { bits, .. } => Some(*bits),
        }
    }

    /// Number of GLWE ciphertexts, ceil(len / N).
    pub fn ciphertext_count(&self) -> usize {
        PARAMS.ciphertexts_for(self.plaintext_len)
    }

    /// Replaces the seeds by the sum of the masks they generate, to be sent rounded to `bits`
    /// (the server's side of the switched form). Parallel over ciphertexts.
    ///
    /// ```
    /// use hefl::he::{CompactVector, DownloadForm, Widths, keys::KeyFile};
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// let widths = Widths::new(22, 3, DownloadForm::Switched)?;
    /// let delta = 1u64 << 42;
    /// let sum = CompactVector::sum([
    ///     &key.prepare(1)?.seal(&[2 * delta], &widths)?,
    ///     &key.prepare(1)?.seal(&[3 * delta], &widths)?,
    /// ])?
    /// .into_switched(widths.mask_bits().unwrap());
    /// assert_eq!(sum.seeds(), None);
    /// let word = key.decrypt(&sum.expand())?[0];
    /// assert_eq!(word.wrapping_add(delta / 2) >> 42, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_switched(mut self, bits: u32) -> Self {
        if let Masks::Seeds(seeds) = &self.masks {
            let mut words = vec![0u64; self.ciphertext_count() * mask_words()];
            add_masks(seeds, &mut words);
            self.masks = Masks::Summed { bits, words };
        }
        self
    }

    /// The full GLWE ciphertexts (masks regenerated from the seeds and summed, or the switched
    /// mask; bodies in place), for [`SecretKey::decrypt`](super::keys::SecretKey::decrypt) or
    /// tfhe's own functions. Parallel over ciphertexts.
    pub fn expand(&self) -> EncryptedVector {
        let n = PARAMS.values_per_ciphertext();
        let mask_len = mask_words();
        let words = PARAMS.ciphertext_words();
        let mut data = vec![0u64; self.ciphertext_count() * words];
        data.par_chunks_mut(words)
            .zip(self.bodies.par_chunks(n))
            .enumerate()
            .with_min_len(task_ciphertexts(self.ciphertext_count()))
            .for_each_init(
                || None,
                |streams, (index, (ciphertext, bodies))| {
                    let (mask, body) = ciphertext.split_at_mut(mask_len);
                    body[..bodies.len()].copy_from_slice(bodies);
                    self.summed_mask(index, streams, None, mask);
                },
            );
        EncryptedVector {
            key_id: self.key_id,
            plaintext_len: self.plaintext_len,
            summands: self.summands,
            data,
        }
    }

    /// Writes ciphertext `index`'s summed mask (k·N words) into `mask`: regenerated from the
    /// seeds (`streams` holds one keystream per seed, made on first use by this task), or the
    /// switched sum as sent (rounded to its bits). `known`: the masks of one of this vector's
    /// seeds, already at hand (k·N words per ciphertext), read instead of regenerated.
    pub(crate) fn summed_mask(
        &self,
        index: usize,
        streams: &mut Option<Vec<KeyStream>>,
        known: Option<(u128, &[u64])>,
        mask: &mut [u64],
    ) {
        match &self.masks {
            Masks::Seeds(seeds) => {
                let streams = streams
                    .get_or_insert_with(|| seeds.iter().map(|&s| KeyStream::new(s)).collect());
                // This ciphertext's known mask, if at hand: its seed's stream is then skipped.
                let known = known.and_then(|(seed, words)| {
                    Some((seed, words.chunks_exact(mask.len()).nth(index)?))
                });
                let mut regenerated = streams
                    .iter_mut()
                    .zip(seeds)
                    .filter(|&(_, seed)| known.is_none_or(|(known, _)| known != *seed))
                    .map(|(stream, _)| stream);
                match known {
                    Some((_, words)) => mask.copy_from_slice(words),
                    None => match regenerated.next() {
                        Some(first) => fill_mask(first, index, mask),
                        None => mask.fill(0),
                    },
                }
                add_masks_of(regenerated, index, mask);
            }
            Masks::Summed { bits, words } => {
                let first = index * mask.len();
                for (m, w) in mask.iter_mut().zip(&words[first..]) {
                    *m = round_to(*w, *bits);
                }
            }
        }
    }

    /// This upload's bodies under another seed: a message the server cannot tell from a real
    /// upload (it decrypts to garbage), for benchmark fixtures that need many distinct
    /// uploads without encrypting each.
    pub(crate) fn with_seed(&self, seed: u128) -> Self {
        Self {
            masks: Masks::Seeds(vec![seed]),
            ..self.clone()
        }
    }

    /// Checks that `other` can be added to `self`: same key, length and body width.
    fn check_compatible(&self, other: &Self) -> Result<(), HeError> {
        check_same_vector(
            (self.key_id, self.plaintext_len),
            (other.key_id, other.plaintext_len),
        )?;
        if other.body_bits != self.body_bits {
            return Err(HeError::WidthMismatch {
                expected: self.body_bits,
                found: other.body_bits,
            });
        }
        Ok(())
    }

    /// Homomorphic addition without a key: bodies add exactly (modulo 2^body_bits), seeds are
    /// merged (a seed already present is refused: the same encryption cannot count twice),
    /// and a switched sum regenerates `other`'s masks into its own. Refuses vectors under
    /// another key, of another length or body width; on any error `self` is unchanged.
    ///
    /// ```
    /// use hefl::he::{DownloadForm, HeError, Widths, keys::KeyFile};
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// let widths = Widths::new(22, 3, DownloadForm::Seeds)?;
    /// let a = key.prepare(4)?.seal(&[0; 4], &widths)?;
    /// let mut total = key.prepare(4)?.seal(&[0; 4], &widths)?;
    /// total.add_assign(&a)?;
    /// assert!(matches!(total.add_assign(&a), Err(HeError::DuplicateSeed)));
    /// assert_eq!(total.summands(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_assign(&mut self, other: &Self) -> Result<(), HeError> {
        self.check_compatible(other)?;
        let summands = add_summands(self.summands, other.summands)?;
        match (&mut self.masks, &other.masks) {
            (Masks::Seeds(ours), Masks::Seeds(theirs)) => {
                *ours = merge_seeds(ours, theirs)?;
            }
            (Masks::Summed { words, .. }, Masks::Seeds(theirs)) => add_masks(theirs, words),
            (Masks::Summed { words, .. }, Masks::Summed { words: theirs, .. }) => {
                wrapping_add_assign(words, theirs)
            }
            (Masks::Seeds(_), Masks::Summed { .. }) => {
                return Err(HeError::FormMismatch);
            }
        }
        wrapping_add_assign(&mut self.bodies, &other.bodies);
        self.summands = summands;
        Ok(())
    }

    /// Adds the public plaintext `words` (one torus word per value) without a key: the
    /// trivial GLWE encryption (mask 0, body `words`) added homomorphically, so the vector
    /// decrypts to its old plaintext plus `words`, exactly, with no noise added and the mask
    /// (seeds or summed words) untouched. This is how a server applies secure aggregation's
    /// public correction (`--secure-agg robust`). Every word must be on the bodies' grid (its
    /// low 64 − `body_bits` bits zero, as a plaintext of t < `body_bits` bits is); on any error
    /// `self` is unchanged.
    ///
    /// ```
    /// use hefl::he::{DownloadForm, Widths, keys::KeyFile};
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// let widths = Widths::new(22, 3, DownloadForm::Seeds)?;
    /// let delta = 1u64 << (64 - 22);
    /// let mut sum = key.prepare(2)?.seal(&[3 * delta, 5 * delta], &widths)?;
    /// sum.add_public(&[delta.wrapping_neg(), 2 * delta])?;
    /// let plain: Vec<i64> = key
    ///     .decrypt(&sum.expand())?
    ///     .iter()
    ///     .map(|&w| (w.wrapping_add(delta / 2) as i64) >> (64 - 22))
    ///     .collect();
    /// assert_eq!(plain, [2, 7]);
    /// assert!(sum.add_public(&[1, 0]).is_err()); // off the grid
    /// assert!(sum.add_public(&[0]).is_err()); // wrong length
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_public(&mut self, words: &[u64]) -> Result<(), HeError> {
        add_public_words(&mut self.bodies, words, self.body_bits)
    }

    /// Homomorphic sum of one or more vectors (see [`CompactVector::add_assign`]).
    pub fn sum<'a, I>(vectors: I) -> Result<Self, HeError>
    where
        I: IntoIterator<Item = &'a Self>,
    {
        let mut vectors = vectors.into_iter();
        let mut sum = vectors.next().ok_or(HeError::EmptySum)?.clone();
        for v in vectors {
            sum.add_assign(v)?;
        }
        Ok(sum)
    }
}

/// Words of one ciphertext's mask, k·N.
pub(crate) fn mask_words() -> usize {
    PARAMS.glwe_dimension().0 * PARAMS.values_per_ciphertext()
}

/// Adds the masks of every seed into `words` (ciphertext by ciphertext), in parallel.
pub(crate) fn add_masks(seeds: &[u128], words: &mut [u64]) {
    let count = words.len() / mask_words();
    words
        .par_chunks_mut(mask_words())
        .enumerate()
        .with_min_len(task_ciphertexts(count))
        .for_each_init(
            || seeds.iter().map(|&s| KeyStream::new(s)).collect::<Vec<_>>(),
            |streams, (index, mask)| add_masks_of(streams, index, mask),
        );
}

/// Adds ciphertext `index`'s mask under each stream's seed into `mask`.
fn add_masks_of<'a>(
    streams: impl IntoIterator<Item = &'a mut KeyStream>,
    index: usize,
    mask: &mut [u64],
) {
    for stream in streams {
        stream.add_uniform(index as u128 * mask_blocks(), mask);
    }
}

/// The union of two strictly increasing seed lists, refusing a seed in both.
pub(crate) fn merge_seeds(a: &[u128], b: &[u128]) -> Result<Vec<u128>, HeError> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => return Err(HeError::DuplicateSeed),
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_merge_in_order_and_refuse_repeats() {
        assert_eq!(merge_seeds(&[1, 5, 9], &[2, 6]).unwrap(), [1, 2, 5, 6, 9]);
        assert!(matches!(
            merge_seeds(&[1, 5], &[5]),
            Err(HeError::DuplicateSeed)
        ));
    }
}
