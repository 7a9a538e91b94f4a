//! Encryption and decryption: the two operations that take a [`SecretKey`], as its methods.
//!
//! Built on the layers below: masks and noise from [`csprng`](super::csprng), the mask-key
//! product from `ntt.rs`, the result an [`EncryptedVector`] of `ciphertext.rs`.

use rayon::prelude::*;

use super::ciphertext::{EncryptedVector, HeError, check_plaintext_len};
use super::csprng::{KeyStream, fresh_key};
use super::keys::SecretKey;
use super::ntt::{Accumulate, Scratch};
use super::params::PARAMS;

impl SecretKey {
    /// Encrypts a vector of u64 plaintexts (already encoded, e.g. by
    /// [`FixedPoint::encode`](crate::quant::FixedPoint::encode)) as packed GLWE ciphertexts.
    ///
    /// Parallel over ciphertexts with rayon. Randomness: a tfhe AES-CTR CSPRNG
    /// (`tfhe::core_crypto::commons::math::random::RandomGenerator`) seeded from fresh OS
    /// entropy draws a fresh AES-128 key per call; each ciphertext's uniform mask and
    /// TUniform(17) noise come from that key's CTR keystream (tfhe-csprng's block cipher,
    /// sampled exactly as tfhe samples them) on a counter range of its own, so tasks share
    /// no generator and no keystream byte is used twice. Per ciphertext: body = plaintext +
    /// noise + mask * key (the negacyclic product through the precomputed NTT key), exactly as
    /// tfhe's `encrypt_glwe_ciphertext` would compute it.
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
        let k = PARAMS.glwe_dimension().0;
        let words = PARAMS.ciphertext_words();
        let count = PARAMS.ciphertexts_for(plaintext.len());
        let noise = PARAMS.noise();

        // One fresh AES key per call; ciphertext i reads its mask, then its noise bytes, from
        // its own counter range of the keystream.
        let mask_blocks = KeyStream::blocks_for(k * n * size_of::<u64>());
        let noise_blocks = KeyStream::blocks_for(n * KeyStream::tuniform_bytes(noise));
        let stream = KeyStream::new(fresh_key()?);

        let mut data = vec![0u64; count * words];
        data.par_chunks_exact_mut(words)
            .zip(plaintext.par_chunks(n))
            .enumerate()
            .for_each_init(
                || (Scratch::new(n), stream.clone()),
                |(scratch, stream), (index, (ciphertext, values))| {
                    let first_block = index as u128 * (mask_blocks + noise_blocks);
                    let (mask, body) = ciphertext.split_at_mut(k * n);
                    stream.fill_uniform(first_block, mask);
                    body[..values.len()].copy_from_slice(values);
                    stream.add_tuniform(first_block + mask_blocks, body, noise);
                    for (index, mask_poly) in mask.chunks_exact(n).enumerate() {
                        self.ntt.accumulate_product(
                            body,
                            mask_poly,
                            index,
                            scratch,
                            Accumulate::Add,
                        );
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
        if ciphertext.key_id != self.key_id() {
            return Err(HeError::KeyMismatch {
                expected: self.key_id(),
                found: ciphertext.key_id,
            });
        }
        let n = PARAMS.values_per_ciphertext();
        let k = PARAMS.glwe_dimension().0;
        let words = PARAMS.ciphertext_words();
        let mut out = vec![0u64; ciphertext.plaintext_len];
        out.par_chunks_mut(n)
            .zip(ciphertext.data.par_chunks_exact(words))
            .for_each_init(
                || Scratch::new(n),
                |scratch, (values, ciphertext)| {
                    let (mask, body) = ciphertext.split_at(k * n);
                    values.copy_from_slice(&body[..values.len()]);
                    for (index, mask_poly) in mask.chunks_exact(n).enumerate() {
                        self.ntt.accumulate_product(
                            values,
                            mask_poly,
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
