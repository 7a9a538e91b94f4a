//! Encryption and decryption: the operations that take a [`SecretKey`], as its methods, and
//! the prepared encryptions of zero that make sealing a compact upload one pass.
//!
//! Built on the layers below: masks and noise from [`csprng`](super::csprng), the mask-key
//! product from `ntt.rs`, the results an [`EncryptedVector`] of `ciphertext.rs` or a
//! [`CompactVector`] of `compact.rs`.
//!
//! # Randomness of one encryption
//!
//! Each encryption (or prepared encryption) draws two fresh 128-bit AES keys from an
//! OS-seeded tfhe CSPRNG: the **mask seed**, whose keystream gives every ciphertext's uniform
//! mask and which travels in compact messages, and the **noise key**, whose keystream gives
//! the TUniform(17) noise and which never leaves the call. Ciphertext i reads its own counter
//! range of each keystream, so tasks share no generator and no keystream byte is used twice.

use rayon::prelude::*;
use zeroize::Zeroize;

use super::ciphertext::{EncryptedVector, HeError, check_plaintext_len, task_ciphertexts};
use super::compact::{CompactVector, Masks, fill_mask, mask_words};
use super::csprng::{KeyStream, fresh_key};
use super::keys::SecretKey;
use super::ntt::{Accumulate, Scratch};
use super::pack::round_to;
use super::params::PARAMS;
use super::widths::Widths;

/// An encryption of zero prepared for one plaintext of a fixed length: the public mask seed
/// and, per value, a·s + e (the body before the message is added). Made by
/// [`SecretKey::prepare`] while nothing else is waiting (a client prepares the next round's
/// while this round's sum is on its way); [`PreparedEncryption::seal`] then costs one pass
/// of additions and rounding.
///
/// It is used once: `seal` consumes it and the type is not `Clone`, because two messages
/// sealed into the same prepared encryption would reveal the difference of their plaintexts.
/// The bodies are zeroized when it is dropped.
///
/// ```
/// use hefl::he::{DownloadForm, Widths, keys::KeyFile};
///
/// let key = KeyFile::from_seed([1; 32]).secret_key()?;
/// let widths = Widths::new(22, 3, DownloadForm::Seeds)?;
/// let prepared = key.prepare(3)?; // offline
/// let upload = prepared.seal(&[1 << 42, 2 << 42, 3 << 42], &widths)?; // online
/// let words = key.decrypt(&upload.expand())?;
/// assert_eq!(words[2].wrapping_add(1 << 41) >> 42, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Sealing twice does not compile (`prepared` has moved), nor does cloning:
///
/// ```compile_fail
/// # use hefl::he::{DownloadForm, Widths, keys::KeyFile};
/// # let key = KeyFile::from_seed([1; 32]).secret_key().unwrap();
/// # let widths = Widths::new(22, 3, DownloadForm::Seeds).unwrap();
/// let prepared = key.prepare(1).unwrap();
/// let first = prepared.seal(&[1], &widths);
/// let second = prepared.seal(&[2], &widths); // error[E0382]: use of moved value
/// ```
///
/// ```compile_fail
/// # use hefl::he::keys::KeyFile;
/// # let key = KeyFile::from_seed([1; 32]).secret_key().unwrap();
/// let prepared = key.prepare(1).unwrap();
/// let copy = prepared.clone(); // error[E0599]: no method named `clone`
/// ```
pub struct PreparedEncryption {
    key_id: super::keys::KeyId,
    seed: u128,
    /// a·s + e for the first `len` coefficients.
    bodies: Vec<u64>,
    /// The masks a, k·N words per ciphertext (public: the seed regenerates them).
    masks: Vec<u64>,
}

/// The masks of one's own sealed upload, kept from its [`PreparedEncryption`]
/// ([`PreparedEncryption::seal_keeping_mask`]) so that opening the round's sum regenerates
/// only the other parties' masks ([`SecretKey::decrypt_compact`]): one keystream pass fewer
/// per open. Nothing secret: the masks are what anyone regenerates from the seed the upload
/// carries, so keeping them changes neither what is sent nor what decryption returns.
pub struct OwnMask {
    seed: u128,
    words: Vec<u64>,
}

impl OwnMask {
    /// Whether these are the masks of one of `vector`'s summands: its seed among the
    /// vector's, and one mask per ciphertext of the vector.
    fn for_vector(&self, vector: &CompactVector) -> bool {
        vector
            .seeds()
            .is_some_and(|seeds| seeds.binary_search(&self.seed).is_ok())
            && self.words.len() == vector.ciphertext_count() * mask_words()
    }
}

impl std::fmt::Debug for OwnMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnMask")
            .field("words", &self.words.len())
            .finish_non_exhaustive()
    }
}

impl Drop for PreparedEncryption {
    fn drop(&mut self) {
        self.bodies.zeroize();
    }
}

impl std::fmt::Debug for PreparedEncryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedEncryption")
            .field("key_id", &self.key_id)
            .field("plaintext_len", &self.bodies.len())
            .finish_non_exhaustive()
    }
}

impl PreparedEncryption {
    /// The plaintext length it was prepared for.
    pub fn plaintext_len(&self) -> usize {
        self.bodies.len()
    }

    /// Adds `plaintext` (encoded words, exactly the prepared length) and rounds every body to
    /// `widths.body_bits()`: the compact upload. Consumes the preparation.
    pub fn seal(self, plaintext: &[u64], widths: &Widths) -> Result<CompactVector, HeError> {
        self.seal_keeping_mask(plaintext, widths)
            .map(|(upload, _)| upload)
    }

    /// [`PreparedEncryption::seal`], also returning the upload's masks for opening the
    /// round's sum ([`OwnMask`]).
    ///
    /// ```
    /// use hefl::he::{CompactVector, DownloadForm, Widths, keys::KeyFile};
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// let widths = Widths::new(22, 2, DownloadForm::Seeds)?;
    /// let delta = 1u64 << 42;
    /// let (mine, own) = key.prepare(1)?.seal_keeping_mask(&[2 * delta], &widths)?;
    /// let theirs = key.prepare(1)?.seal(&[3 * delta], &widths)?;
    /// let sum = CompactVector::sum([&mine, &theirs])?;
    /// let word = key.decrypt_compact(sum.clone(), &widths, Some(&own))?[0];
    /// assert_eq!(word.wrapping_add(delta / 2) / delta, 5);
    /// assert_eq!(key.decrypt_compact(sum, &widths, None)?[0], word);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn seal_keeping_mask(
        mut self,
        plaintext: &[u64],
        widths: &Widths,
    ) -> Result<(CompactVector, OwnMask), HeError> {
        if plaintext.len() != self.bodies.len() {
            return Err(HeError::PreparedLength {
                prepared: self.bodies.len(),
                found: plaintext.len(),
            });
        }
        let bits = widths.body_bits();
        // In place: once the message is added and the sum rounded, a body is ciphertext, no
        // longer the secret a·s + e, so the buffer moves into the upload (leaving nothing to
        // zeroize).
        let mut bodies = std::mem::take(&mut self.bodies);
        bodies
            .par_chunks_mut(4096)
            .zip(plaintext.par_chunks(4096))
            .for_each(|(bodies, plaintext)| {
                for (b, m) in bodies.iter_mut().zip(plaintext) {
                    *b = round_to(b.wrapping_add(*m), bits);
                }
            });
        let upload = CompactVector {
            key_id: self.key_id,
            plaintext_len: plaintext.len(),
            summands: 1,
            body_bits: bits,
            bodies,
            masks: Masks::Seeds(vec![self.seed]),
            context: super::context::Context::default(),
        };
        let own = OwnMask {
            seed: self.seed,
            words: std::mem::take(&mut self.masks),
        };
        Ok((upload, own))
    }
}

/// The two keystreams of one encryption (see the [module docs](self)).
#[derive(Clone)]
struct Streams {
    mask: KeyStream,
    noise: KeyStream,
}

impl Streams {
    fn fresh() -> Result<(u128, Self), HeError> {
        let seed = fresh_key()?;
        let streams = Self {
            mask: KeyStream::new(seed),
            noise: KeyStream::new(fresh_key()?),
        };
        Ok((seed, streams))
    }
}

impl SecretKey {
    /// Fills one ciphertext with an encryption of zero: `mask` from the mask stream, `body`
    /// (N words, or fewer for the last, partly filled ciphertext of a vector) = e + mask·s.
    fn encrypt_zero(
        &self,
        index: usize,
        streams: &mut Streams,
        scratch: &mut Scratch,
        mask: &mut [u64],
        body: &mut [u64],
    ) {
        let n = PARAMS.values_per_ciphertext();
        let noise = PARAMS.noise();
        let noise_blocks = KeyStream::blocks_for(n * KeyStream::tuniform_bytes(noise));
        fill_mask(&mut streams.mask, index, mask);
        streams
            .noise
            .fill_tuniform(index as u128 * noise_blocks, body, noise);
        for (poly, mask_poly) in mask.chunks_exact(n).enumerate() {
            self.ntt
                .accumulate_product(body, mask_poly, 64, poly, scratch, Accumulate::Add);
        }
    }

    /// Prepares an encryption of zero for a plaintext of `len` values (see
    /// [`PreparedEncryption`]). Parallel over ciphertexts.
    ///
    /// ```
    /// use hefl::he::keys::KeyFile;
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// assert_eq!(key.prepare(101_770)?.plaintext_len(), 101_770);
    /// assert!(key.prepare(0).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prepare(&self, len: usize) -> Result<PreparedEncryption, HeError> {
        check_plaintext_len(len)?;
        let n = PARAMS.values_per_ciphertext();
        let (seed, streams) = Streams::fresh()?;
        let count = PARAMS.ciphertexts_for(len);
        let mut bodies = vec![0u64; len];
        let mut masks = vec![0u64; count * mask_words()];
        bodies
            .par_chunks_mut(n)
            .zip(masks.par_chunks_mut(mask_words()))
            .enumerate()
            .with_min_len(task_ciphertexts(count))
            .for_each_init(
                || (streams.clone(), self.ntt.scratch()),
                |(streams, scratch), (index, (body, mask))| {
                    self.encrypt_zero(index, streams, scratch, mask, body);
                },
            );
        Ok(PreparedEncryption {
            key_id: self.key_id(),
            seed,
            bodies,
            masks,
        })
    }

    /// Encrypts a vector of u64 plaintexts (already encoded, e.g. by
    /// [`FixedPoint::encode`](crate::quant::FixedPoint::encode)) as full packed GLWE
    /// ciphertexts (masks included), for tfhe interoperability and benchmarks; the protocol
    /// sends [`CompactVector`]s ([`SecretKey::prepare`]).
    ///
    /// Parallel over ciphertexts with rayon; randomness as in the [module docs](self). Per
    /// ciphertext: body = plaintext + noise + mask * key (the exact negacyclic product against
    /// the transformed key), exactly as tfhe's `encrypt_glwe_ciphertext` would compute it.
    ///
    /// ```
    /// use hefl::he::keys::KeyFile;
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// let ct = key.encrypt(&vec![42 << 40; 101_770])?;
    /// assert_eq!(ct.ciphertext_count().0, 50);
    /// assert!(key.encrypt(&[]).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encrypt(&self, plaintext: &[u64]) -> Result<EncryptedVector, HeError> {
        check_plaintext_len(plaintext.len())?;
        let n = PARAMS.values_per_ciphertext();
        let words = PARAMS.ciphertext_words();
        let count = PARAMS.ciphertexts_for(plaintext.len());
        let (_, streams) = Streams::fresh()?;
        let mut data = vec![0u64; count * words];
        data.par_chunks_exact_mut(words)
            .zip(plaintext.par_chunks(n))
            .enumerate()
            .with_min_len(task_ciphertexts(count))
            .for_each_init(
                || (streams.clone(), self.ntt.scratch()),
                |(streams, scratch), (index, (ciphertext, values))| {
                    let (mask, body) = ciphertext.split_at_mut(mask_words());
                    self.encrypt_zero(index, streams, scratch, mask, body);
                    for (b, m) in body.iter_mut().zip(values) {
                        *b = b.wrapping_add(*m);
                    }
                },
            );
        Ok(EncryptedVector {
            key_id: self.key_id(),
            plaintext_len: plaintext.len(),
            summands: 1,
            data,
        })
    }

    /// Decrypts a compact vector (a round's sum, or an upload; consumed, decrypted in place)
    /// to the u64 plaintexts plus error, without expanding it: per ciphertext, the summed
    /// mask (regenerated from the seeds, or the switched one) rounded to
    /// `widths.product_bits()`, times the key, subtracted from the bodies. [`Widths`] budgets
    /// that rounding, which makes the product one FFT limb instead of two when k_down ≤ 33
    /// (the defaults up to 3 parties). With `own`, the masks of one of the summands (the
    /// caller's own upload), that summand's masks are read from it instead of regenerated;
    /// the result is the same (a mask that is not one of the vector's is ignored). Parallel
    /// over ciphertexts. Refuses a vector under another key id.
    ///
    /// ```
    /// use hefl::he::{CompactVector, DownloadForm, Widths, keys::KeyFile};
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// let widths = Widths::new(22, 2, DownloadForm::Seeds)?;
    /// let delta = 1u64 << 42;
    /// let sum = CompactVector::sum([
    ///     &key.prepare(1)?.seal(&[2 * delta], &widths)?,
    ///     &key.prepare(1)?.seal(&[3 * delta], &widths)?,
    /// ])?;
    /// let word = key.decrypt_compact(sum, &widths, None)?[0];
    /// assert_eq!(word.wrapping_add(delta / 2) >> 42, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decrypt_compact(
        &self,
        mut vector: CompactVector,
        widths: &Widths,
        own: Option<&OwnMask>,
    ) -> Result<Vec<u64>, HeError> {
        self.check_key(vector.key_id)?;
        let n = PARAMS.values_per_ciphertext();
        let bits = widths.product_bits();
        let own = own
            .filter(|own| own.for_vector(&vector))
            .map(|own| (own.seed, own.words.as_slice()));
        // Decrypted in place: the bodies become the plaintexts.
        let mut out = std::mem::take(&mut vector.bodies);
        out.par_chunks_mut(n)
            .enumerate()
            .with_min_len(task_ciphertexts(vector.ciphertext_count()))
            .for_each_init(
                || (None, self.ntt.scratch(), vec![0u64; mask_words()]),
                |(streams, scratch, mask), (index, values)| {
                    vector.summed_mask(index, streams, own, mask);
                    for (poly, mask_poly) in mask.chunks_exact(n).enumerate() {
                        self.ntt.accumulate_product(
                            values,
                            mask_poly,
                            bits,
                            poly,
                            scratch,
                            Accumulate::Sub,
                        );
                    }
                },
            );
        Ok(out)
    }

    /// Refuses a ciphertext under another key id.
    fn check_key(&self, found: super::keys::KeyId) -> Result<(), HeError> {
        if found != self.key_id() {
            return Err(HeError::KeyMismatch {
                expected: self.key_id(),
                found,
            });
        }
        Ok(())
    }

    /// Decrypts to the u64 plaintexts plus noise (body - mask * key per ciphertext);
    /// [`FixedPoint::decode_sum`](crate::quant::FixedPoint::decode_sum) rounds the noise away.
    /// Parallel over ciphertexts. Refuses a vector under another key id.
    ///
    /// ```
    /// use hefl::he::{HeError, keys::KeyFile};
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// let other = KeyFile::from_seed([2; 32]).secret_key()?;
    /// let ct = key.encrypt(&[9 << 40])?;
    /// assert_eq!(key.decrypt(&ct)?[0].wrapping_add(1 << 39) >> 40, 9);
    /// assert!(matches!(other.decrypt(&ct), Err(HeError::KeyMismatch { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decrypt(&self, ciphertext: &EncryptedVector) -> Result<Vec<u64>, HeError> {
        self.check_key(ciphertext.key_id)?;
        let n = PARAMS.values_per_ciphertext();
        let k = PARAMS.glwe_dimension().0;
        let words = PARAMS.ciphertext_words();
        let mut out = vec![0u64; ciphertext.plaintext_len];
        out.par_chunks_mut(n)
            .zip(ciphertext.data.par_chunks_exact(words))
            .with_min_len(task_ciphertexts(ciphertext.data.len() / words))
            .for_each_init(
                || self.ntt.scratch(),
                |scratch, (values, ciphertext)| {
                    let (mask, body) = ciphertext.split_at(k * n);
                    values.copy_from_slice(&body[..values.len()]);
                    for (index, mask_poly) in mask.chunks_exact(n).enumerate() {
                        self.ntt.accumulate_product(
                            values,
                            mask_poly,
                            64,
                            index,
                            scratch,
                            Accumulate::Sub,
                        );
                    }
                },
            );
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::he::DownloadForm;
    use crate::he::keys::KeyFile;

    /// Decryption reads a summand's kept masks instead of regenerating them (a tampered copy
    /// changes the result), and ignores masks of an upload that is not in the sum.
    #[test]
    fn own_masks_are_read_when_they_are_a_summands() {
        let key = KeyFile::from_seed([3; 32]).secret_key().expect("key");
        let widths = Widths::new(22, 2, DownloadForm::Seeds).expect("widths");
        let len = 3000;
        let seal = |v: u64| {
            key.prepare(len)
                .and_then(|p| p.seal_keeping_mask(&vec![v << 42; len], &widths))
                .expect("sealed")
        };
        let ((a, mut own), (b, _), (_, stranger)) = (seal(1), seal(2), seal(3));
        let sum = CompactVector::sum([&a, &b]).expect("sum");
        let decrypt = |own: Option<&OwnMask>| {
            key.decrypt_compact(sum.clone(), &widths, own)
                .expect("decrypts")
        };
        let regenerated = decrypt(None);
        assert!(
            regenerated
                .iter()
                .all(|w| w.wrapping_add(1 << 41) >> 42 == 3)
        );
        assert!(decrypt(Some(&own)) == regenerated);
        assert!(decrypt(Some(&stranger)) == regenerated);
        own.words[0] ^= 1 << 63;
        assert!(
            decrypt(Some(&own)) != regenerated,
            "the kept masks were not read"
        );
    }
}
