//! Packed GLWE encryption of quantized vectors, homomorphic sums, and their wire format.
//!
//! # The scheme
//!
//! hefl encrypts with tfhe's low-level `core_crypto` GLWE (RLWE, as k = 1) under the GLWE part
//! of tfhe's 128-bit parameter set `V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128`
//! ([`params::PARAMS`]: N = 2048, q = 2^64, binary key, TUniform(17) noise). Only addition is
//! needed, so there is no bootstrapping and no server key.
//!
//! - **Packing**: a vector of d u64 plaintexts fills ceil(d / N) ciphertexts, one value per
//!   coefficient. Per ciphertext: mask A uniform, body B = A·S + M + E, products negacyclic
//!   (mod X^N + 1) and coefficients mod 2^64, exactly tfhe's convention; so hefl ciphertexts
//!   decrypt with tfhe's `decrypt_glwe_ciphertext_list` and tfhe's `encrypt_glwe_ciphertext_list`
//!   output decrypts with hefl (both are tested).
//! - **Fast path**: A·S is the only costly step. [`keys::SecretKey`] holds S in NTT form
//!   (tfhe-ntt's `native_binary64::Plan32` primes), computed once per key, so each product is
//!   one forward and one inverse transform instead of tfhe's Karatsuba product.
//! - **Randomness** ([`csprng`]): the key from tfhe's `SecretRandomGenerator` under a 32-byte
//!   OS seed; per call, a fresh AES key from an OS-seeded tfhe AES-CTR CSPRNG, whose keystream
//!   gives every ciphertext its mask and its TUniform noise, read a batch at a time on a
//!   counter range of its own (never a shared generator, never a reused keystream byte).
//! - **Sums**: wrapping addition of masks and bodies ([`EncryptedVector::add_assign`],
//!   [`EncryptedVector::sum`]), parallel over ciphertexts. The noise of a sum of P fresh
//!   ciphertexts is at most P·2^17; [`crate::quant::FixedPoint`] refuses settings whose decoding
//!   could be disturbed by it.
//!
//! # Layers
//!
//! The files read bottom-up, like tfhe's `core_crypto` (commons, entities, algorithms), and each
//! imports only the layers below it, never one above (so there is no import cycle):
//!
//! 1. [`params`] (the parameter set) and [`csprng`] (OS seeding, the AES-CTR keystream,
//!    [`SecureRng`], also used by [`crate::dp`]): the bottom, importing nothing of `he`;
//! 2. [`keys`] (key files, [`keys::KeyId`], [`keys::SecretKey`]) and `ntt.rs` (the mask-key
//!    product against the key in NTT form), on `params`; key files are written and read
//!    through [`crate::secret_file`];
//! 3. `ciphertext.rs`: the entity [`EncryptedVector`] (accessors, tfhe view, homomorphic sums)
//!    and [`HeError`];
//! 4. `encrypt.rs`: [`keys::SecretKey::encrypt`] and [`keys::SecretKey::decrypt`];
//! 5. [`wire`]: the message format, its validating parser and [`EncryptedVector::max_wire_len`].
//!
//! # Who holds what
//!
//! Encrypting and decrypting are methods of [`keys::SecretKey`]; an [`EncryptedVector`] cannot be
//! opened without one, and nothing here turns plaintext into a ciphertext without the key. The
//! server's side, [`EncryptedVector::from_bytes`], [`EncryptedVector::sum`] and
//! [`EncryptedVector::to_bytes`], needs only the public [`keys::KeyId`].
//!
//! ```
//! use hefl::he::{EncryptedVector, Expected, keys::KeyFile};
//!
//! // Clients share one key file (`hefl keygen`); here a fixed seed for the example.
//! let key = KeyFile::from_seed([42; 32]).secret_key()?;
//! let len = 3000;
//!
//! // Each client encrypts its (already encoded) vector and sends bytes.
//! let messages: Vec<Vec<u8>> = (1..=3u64)
//!     .map(|party| key.encrypt(&vec![party << 40; len]).map(|ct| ct.to_bytes()))
//!     .collect::<Result<_, _>>()?;
//!
//! // The server parses (validating key id, parameter set, length), sums, sends the sum back.
//! let expected = Expected::fresh(key.key_id(), len);
//! let parsed: Vec<EncryptedVector> = messages
//!     .iter()
//!     .map(|m| EncryptedVector::from_bytes(m, &expected))
//!     .collect::<Result<_, _>>()?;
//! let aggregate = EncryptedVector::sum(&parsed)?.to_bytes();
//!
//! // Each client decrypts the aggregate.
//! let received = EncryptedVector::from_bytes(
//!     &aggregate,
//!     &Expected { key_id: key.key_id(), plaintext_len: len, max_summands: 3 },
//! )?;
//! let sums = key.decrypt(&received)?;
//! assert!(sums.iter().all(|&w| w.wrapping_add(1 << 39) >> 40 == 6));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod ciphertext;
pub mod csprng;
mod encrypt;
pub mod keys;
mod ntt;
pub mod params;
pub mod wire;

pub use ciphertext::{EncryptedVector, HeError, MAX_PLAINTEXT_LEN};
pub use csprng::SecureRng;
pub use ntt::NttError;
pub use wire::{Expected, WIRE_VERSION, WireError};
