//! The ciphertext entity: [`EncryptedVector`], a packed list of GLWE ciphertexts with its key
//! id, length and summand count, its tfhe view and its homomorphic sums, and [`HeError`].
//!
//! Nothing here needs a secret key: encrypting and decrypting live one layer up, in
//! `encrypt.rs`, and (de)serialising in `wire.rs`.

use rayon::prelude::*;
use tfhe::core_crypto::prelude::{GlweCiphertextCount, GlweCiphertextList};

use super::csprng::EntropyError;
use super::keys::KeyId;
use super::params::PARAMS;

/// Longest plaintext vector hefl encrypts or accepts: 2^26 values (32,768 ciphertexts,
/// 1 GiB on the wire). A 101,770-parameter MLP uses 50 ciphertexts.
pub const MAX_PLAINTEXT_LEN: usize = 1 << 26;

/// Errors of encryption, decryption and homomorphic sums.
#[derive(Debug, thiserror::Error)]
pub enum HeError {
    /// Nothing to encrypt.
    #[error("cannot encrypt an empty vector")]
    EmptyPlaintext,
    /// The vector is longer than [`MAX_PLAINTEXT_LEN`].
    #[error("cannot encrypt {found} values: the limit is {limit}")]
    PlaintextTooLong {
        /// Requested length.
        found: usize,
        /// [`MAX_PLAINTEXT_LEN`].
        limit: usize,
    },
    /// A ciphertext made under another key.
    #[error("ciphertext for key id {found}, expected {expected}")]
    KeyMismatch {
        /// The key id this operation works under.
        expected: KeyId,
        /// The ciphertext's key id.
        found: KeyId,
    },
    /// Two ciphertexts of different plaintext lengths.
    #[error("ciphertext of {found} values, expected {expected}")]
    LengthMismatch {
        /// The length this operation works with.
        expected: usize,
        /// The other ciphertext's length.
        found: usize,
    },
    /// The number of summed encryptions no longer fits a u32.
    #[error("sum of {left} and {right} encryptions overflows the summand counter")]
    SummandOverflow {
        /// Summands on the left.
        left: u32,
        /// Summands on the right.
        right: u32,
    },
    /// Two compact vectors with bodies of different widths.
    #[error("bodies of {found} bits, expected {expected}")]
    WidthMismatch {
        /// The width this operation works with.
        expected: u32,
        /// The other vector's width.
        found: u32,
    },
    /// The same seeded encryption added twice.
    #[error("the same encryption (seed) is already in the sum")]
    DuplicateSeed,
    /// A public plaintext word that does not sit on the compact bodies' grid.
    #[error(
        "public plaintext word {index} is {word:#018x}: its low {free} bits must be zero (bodies keep {body_bits} bits)"
    )]
    OffGrid {
        /// The word's index.
        index: usize,
        /// The word.
        word: u64,
        /// Bits the bodies keep.
        body_bits: u32,
        /// 64 minus `body_bits`.
        free: u32,
    },
    /// A switched sum added into a sum of seeds (the server switches, clients do not add).
    #[error("cannot add a switched sum into a sum that keeps seeds")]
    FormMismatch,
    /// A plaintext of another length than the prepared encryption.
    #[error("prepared for {prepared} values, asked to seal {found}")]
    PreparedLength {
        /// Length prepared.
        prepared: usize,
        /// Length of the plaintext.
        found: usize,
    },
    /// `sum` of no vectors.
    #[error("cannot sum zero ciphertexts")]
    EmptySum,
    /// A tfhe ciphertext list whose shape does not fit [`PARAMS`] or the stated length.
    #[error("GLWE ciphertext list does not match: its {what} is {found}, expected {expected}")]
    ForeignShape {
        /// Which property.
        what: &'static str,
        /// This parameter set's (or length's) value.
        expected: String,
        /// The list's.
        found: String,
    },
    /// The operating system's random source failed.
    #[error("cannot seed the encryption CSPRNG: {0}")]
    Entropy(#[from] EntropyError),
}

/// A vector of u64 plaintexts encrypted under a shared key as a packed list of GLWE
/// ciphertexts: value `i` sits in coefficient `i mod N` of ciphertext `i / N`, the last
/// ciphertext zero-padded.
///
/// It carries the key id it was encrypted under, the plaintext length and the number of
/// fresh encryptions summed into it ("summands", 1 for a fresh one; with one vector per party
/// it is the party count, which bounds the accumulated noise). Summing and (de)serialising
/// need no key; decrypting takes a [`SecretKey`](super::keys::SecretKey).
///
/// The data layout is tfhe's `GlweCiphertextList` (per ciphertext: k mask polynomials, then
/// the body), so [`EncryptedVector::as_glwe_list`] hands it to tfhe's own functions.
///
/// ```
/// use hefl::he::{EncryptedVector, keys::KeyFile};
///
/// let key = KeyFile::from_seed([1; 32]).secret_key()?;
/// let a = key.encrypt(&[3 << 40, 5 << 40])?;
/// let b = key.encrypt(&[4 << 40, 0u64.wrapping_sub(6 << 40)])?;
/// // The server side: no key involved.
/// let sum = EncryptedVector::sum([&a, &b])?;
/// assert_eq!(sum.summands(), 2);
/// // A client rounds away the noise (|noise| <= 2 * 2^17 here) to the nearest 2^40.
/// let plain: Vec<i64> = key
///     .decrypt(&sum)?
///     .iter()
///     .map(|&w| (w.wrapping_add(1 << 39) as i64) >> 40)
///     .collect();
/// assert_eq!(plain, [7, -1]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptedVector {
    pub(crate) key_id: KeyId,
    pub(crate) plaintext_len: usize,
    pub(crate) summands: u32,
    pub(crate) data: Vec<u64>,
}

impl std::fmt::Debug for EncryptedVector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedVector")
            .field("key_id", &self.key_id)
            .field("plaintext_len", &self.plaintext_len)
            .field("ciphertexts", &self.ciphertext_count().0)
            .field("summands", &self.summands)
            .finish_non_exhaustive()
    }
}

impl EncryptedVector {
    /// The id of the key this vector is encrypted under.
    ///
    /// ```
    /// use hefl::he::keys::KeyFile;
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// assert_eq!(key.encrypt(&[0])?.key_id(), key.key_id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Number of plaintext values.
    ///
    /// ```
    /// use hefl::he::keys::KeyFile;
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// assert_eq!(key.encrypt(&[0; 5000])?.plaintext_len(), 5000);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn plaintext_len(&self) -> usize {
        self.plaintext_len
    }

    /// Number of GLWE ciphertexts, ceil(len / N).
    ///
    /// ```
    /// use hefl::he::keys::KeyFile;
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// assert_eq!(key.encrypt(&[0; 5000])?.ciphertext_count().0, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ciphertext_count(&self) -> GlweCiphertextCount {
        GlweCiphertextCount(self.data.len() / PARAMS.ciphertext_words())
    }

    /// Number of fresh encryptions summed into this vector (1 when fresh). Each adds at most
    /// 2^17 of noise, so decoders check it against their noise budget.
    ///
    /// ```
    /// use hefl::he::{EncryptedVector, keys::KeyFile};
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// let a = key.encrypt(&[1])?;
    /// assert_eq!(a.summands(), 1);
    /// assert_eq!(EncryptedVector::sum([&a, &a, &a])?.summands(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn summands(&self) -> u32 {
        self.summands
    }

    /// The ciphertexts as a tfhe `GlweCiphertextList` view (for tfhe's `core_crypto`
    /// functions, e.g. `decrypt_glwe_ciphertext_list`).
    ///
    /// ```
    /// use hefl::he::keys::KeyFile;
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// let list = key.encrypt(&[0; 3000])?;
    /// assert_eq!(list.as_glwe_list().glwe_ciphertext_count().0, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn as_glwe_list(&self) -> GlweCiphertextList<&[u64]> {
        GlweCiphertextList::from_container(
            self.data.as_slice(),
            PARAMS.glwe_size(),
            PARAMS.polynomial_size(),
            PARAMS.ciphertext_modulus(),
        )
    }

    /// Wraps a tfhe `GlweCiphertextList` holding one fresh encryption of `plaintext_len`
    /// values under the key `key_id` (e.g. made by tfhe's `encrypt_glwe_ciphertext_list`).
    /// Checks the list's GLWE size, polynomial size, modulus and ciphertext count.
    ///
    /// ```
    /// use hefl::he::{EncryptedVector, keys::KeyFile};
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// let ours = key.encrypt(&[7; 10])?;
    /// let list = ours.as_glwe_list();
    /// let copy = EncryptedVector::from_glwe_list(&list, 10, key.key_id())?;
    /// assert_eq!(copy, ours);
    /// assert!(EncryptedVector::from_glwe_list(&list, 4096, key.key_id()).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_glwe_list<C>(
        list: &GlweCiphertextList<C>,
        plaintext_len: usize,
        key_id: KeyId,
    ) -> Result<Self, HeError>
    where
        C: tfhe::core_crypto::prelude::Container<Element = u64>,
    {
        let mismatch =
            |what: &'static str, expected: String, found: String| HeError::ForeignShape {
                what,
                expected,
                found,
            };
        if list.glwe_size() != PARAMS.glwe_size() {
            return Err(mismatch(
                "GLWE size",
                PARAMS.glwe_size().0.to_string(),
                list.glwe_size().0.to_string(),
            ));
        }
        if list.polynomial_size() != PARAMS.polynomial_size() {
            return Err(mismatch(
                "polynomial size",
                PARAMS.polynomial_size().0.to_string(),
                list.polynomial_size().0.to_string(),
            ));
        }
        if list.ciphertext_modulus() != PARAMS.ciphertext_modulus() {
            return Err(mismatch(
                "ciphertext modulus",
                format!("{:?}", PARAMS.ciphertext_modulus()),
                format!("{:?}", list.ciphertext_modulus()),
            ));
        }
        check_plaintext_len(plaintext_len)?;
        let expected_count = PARAMS.ciphertexts_for(plaintext_len);
        if list.glwe_ciphertext_count().0 != expected_count {
            return Err(mismatch(
                "ciphertext count",
                format!("{expected_count} for {plaintext_len} values"),
                list.glwe_ciphertext_count().0.to_string(),
            ));
        }
        Ok(Self {
            key_id,
            plaintext_len,
            summands: 1,
            data: list.as_ref().to_vec(),
        })
    }

    fn check_compatible(&self, other: &Self) -> Result<(), HeError> {
        check_same_vector(
            (self.key_id, self.plaintext_len),
            (other.key_id, other.plaintext_len),
        )
    }

    /// Homomorphic addition: afterwards `self` encrypts the element-wise sum (modulo 2^64)
    /// of both plaintexts. Needs no key; parallel over ciphertexts.
    ///
    /// Refuses vectors under another key id or of another length.
    ///
    /// ```
    /// use hefl::he::keys::KeyFile;
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// let mut total = key.encrypt(&[1 << 50])?;
    /// total.add_assign(&key.encrypt(&[2 << 50])?)?;
    /// assert_eq!(key.decrypt(&total)?[0].wrapping_add(1 << 49) >> 50, 3);
    /// assert!(total.add_assign(&key.encrypt(&[1, 2])?).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_assign(&mut self, other: &Self) -> Result<(), HeError> {
        self.check_compatible(other)?;
        let summands = add_summands(self.summands, other.summands)?;
        let words = PARAMS.ciphertext_words();
        self.data
            .par_chunks_mut(words)
            .zip(other.data.par_chunks(words))
            .for_each(|(acc, add)| wrapping_add_assign(acc, add));
        self.summands = summands;
        Ok(())
    }

    /// Homomorphic sum of one or more vectors under the same key and of the same length.
    /// Needs no key; parallel over ciphertexts (each task adds one ciphertext position across
    /// all inputs, so it stays in cache).
    ///
    /// ```
    /// use hefl::he::{EncryptedVector, HeError, keys::KeyFile};
    ///
    /// let key = KeyFile::from_seed([1; 32]).secret_key()?;
    /// let parties: Vec<_> = (0..3).map(|_| key.encrypt(&[1 << 50; 4000])).collect::<Result<_, _>>()?;
    /// let sum = EncryptedVector::sum(&parties)?;
    /// assert_eq!(sum.summands(), 3);
    /// assert!(key.decrypt(&sum)?.iter().all(|w| w.wrapping_add(1 << 49) >> 50 == 3));
    /// assert!(matches!(EncryptedVector::sum(&[]), Err(HeError::EmptySum)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sum<'a, I>(vectors: I) -> Result<Self, HeError>
    where
        I: IntoIterator<Item = &'a Self>,
    {
        let vectors: Vec<&Self> = vectors.into_iter().collect();
        let (first, rest) = vectors.split_first().ok_or(HeError::EmptySum)?;
        let mut summands = first.summands;
        for v in rest {
            first.check_compatible(v)?;
            summands = add_summands(summands, v.summands)?;
        }
        let words = PARAMS.ciphertext_words();
        let mut data = vec![0u64; first.data.len()];
        data.par_chunks_mut(words)
            .enumerate()
            .for_each(|(index, acc)| {
                let range = index * words..(index + 1) * words;
                acc.copy_from_slice(&first.data[range.clone()]);
                for v in rest {
                    wrapping_add_assign(acc, &v.data[range.clone()]);
                }
            });
        Ok(Self {
            key_id: first.key_id,
            plaintext_len: first.plaintext_len,
            summands,
            data,
        })
    }
}

pub(crate) fn wrapping_add_assign(acc: &mut [u64], add: &[u64]) {
    acc.iter_mut()
        .zip(add)
        .for_each(|(a, b)| *a = a.wrapping_add(*b));
}

/// Adds public plaintext `words` to `acc`, words kept to their top `bits` bits (1 to 64):
/// refuses another length and any word with a low bit set; on error `acc` is unchanged.
pub(crate) fn add_public_words(acc: &mut [u64], words: &[u64], bits: u32) -> Result<(), HeError> {
    if words.len() != acc.len() {
        return Err(HeError::LengthMismatch {
            expected: acc.len(),
            found: words.len(),
        });
    }
    let free = 64 - bits.clamp(1, 64);
    let low = (1u64 << free) - 1;
    if let Some((index, &word)) = words.iter().enumerate().find(|(_, w)| *w & low != 0) {
        return Err(HeError::OffGrid {
            index,
            word,
            body_bits: bits,
            free,
        });
    }
    wrapping_add_assign(acc, words);
    Ok(())
}

/// The summand count of a sum of `left` and `right` summands, refused past u32.
pub(crate) fn add_summands(left: u32, right: u32) -> Result<u32, HeError> {
    left.checked_add(right)
        .ok_or(HeError::SummandOverflow { left, right })
}

/// Refuses adding vectors under different keys or of different lengths (`ours`, then
/// `theirs`: key id and plaintext length).
pub(crate) fn check_same_vector(
    ours: (KeyId, usize),
    theirs: (KeyId, usize),
) -> Result<(), HeError> {
    if theirs.0 != ours.0 {
        return Err(HeError::KeyMismatch {
            expected: ours.0,
            found: theirs.0,
        });
    }
    if theirs.1 != ours.1 {
        return Err(HeError::LengthMismatch {
            expected: ours.1,
            found: theirs.1,
        });
    }
    Ok(())
}

/// Ciphertexts per rayon task, at least, in the per-ciphertext loops over `count`
/// ciphertexts: each task sets up its own scratch (FFT and NTT buffers, a mask, keystreams:
/// about 100 KB zeroed), which costs more than it saves when tasks are single ciphertexts,
/// so up to 8, but no more than gives every thread two tasks (short vectors stay parallel).
pub(crate) fn task_ciphertexts(count: usize) -> usize {
    (count / (2 * rayon::current_num_threads())).clamp(1, 8)
}

/// Refuses an empty vector and one longer than [`MAX_PLAINTEXT_LEN`].
pub(crate) fn check_plaintext_len(len: usize) -> Result<(), HeError> {
    if len == 0 {
        return Err(HeError::EmptyPlaintext);
    }
    if len > MAX_PLAINTEXT_LEN {
        return Err(HeError::PlaintextTooLong {
            found: len,
            limit: MAX_PLAINTEXT_LEN,
        });
    }
    Ok(())
}
