//! Packed GLWE encryption of quantized vectors, homomorphic sums, and their wire format.
//!
//! # The scheme
//!
//! hefl encrypts with tfhe's low-level `core_crypto` GLWE (RLWE, as k = 1) under the GLWE part
//! of tfhe's 128-bit parameter set `V1_8_PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128`
//! ([`params::PARAMS`]: N = 2048, q = 2^64, binary key, TUniform(17) noise). Only addition is
//! needed, so there is no bootstrapping and no server key. For users, the guides
//! `docs/security.md#the-scheme` and `docs/formats.md` say the same without the API.
//!
//! - **Packing**: a vector of d u64 plaintexts fills ceil(d / N) ciphertexts, one value per
//!   coefficient. Per ciphertext: mask A uniform, body B = A·S + M + E, products negacyclic
//!   (mod X^N + 1) and coefficients mod 2^64, exactly tfhe's convention; so hefl ciphertexts
//!   decrypt with tfhe's `decrypt_glwe_ciphertext_list` and tfhe's `encrypt_glwe_ciphertext_list`
//!   output decrypts with hefl (both are tested).
//! - **Fast path**: A·S is the only costly step. [`keys::SecretKey`] holds S transformed once
//!   by tfhe-fft (the f64 FFT tfhe bootstraps with), so each product is one forward and one
//!   inverse FFT per 32-bit limb of the mask, rounded to the exact integers (an error bound
//!   and a per-coefficient check, with tfhe-ntt's exact `Plan32` as the fallback; `ntt.rs`),
//!   instead of tfhe's Karatsuba product.
//! - **Randomness** ([`csprng`]): the key from tfhe's `SecretRandomGenerator` under a 32-byte
//!   OS seed; per encryption, two fresh AES keys from an OS-seeded tfhe AES-CTR CSPRNG: the
//!   public mask seed, whose keystream gives every ciphertext its mask, and the secret noise
//!   key, whose keystream gives its TUniform noise; each read a batch at a time on a counter
//!   range of its own (never a shared generator, never a reused keystream byte).
//! - **Compact messages** ([`CompactVector`]): what travels. An upload sends its mask as a
//!   public 128-bit seed (the noise comes from a second, secret AES key) and its bodies
//!   rounded to `body_bits` and bit-packed; the server adds bodies modulo 2^body_bits and keeps
//!   the seeds, without any mask work, and sends the sum back either with the seeds (clients
//!   regenerate the masks) or with the summed mask switched to `mask_bits`
//!   ([`DownloadForm`]). [`Widths`] sizes both from the fixed-point t and the party count
//!   and refuses, with the numbers, any setting whose sums could fail to decode; `compact.rs`
//!   says why publishing seeds and rounding bodies leaks nothing.
//! - **Prepared encryptions** ([`PreparedEncryption`]): an encryption of zero made ahead of
//!   time; sealing a plaintext into it is one pass of additions and rounding, and it can be
//!   used once only.
//! - **Full ciphertexts** ([`EncryptedVector`]): tfhe's `GlweCiphertextList` layout, what
//!   [`keys::SecretKey::decrypt`] opens ([`CompactVector::expand`] makes one) and what tfhe's
//!   own functions read and write.
//!
//! # Layers
//!
//! The files read bottom-up, like tfhe's `core_crypto` (commons, entities, algorithms), and each
//! imports only the layers below it, never one above (so there is no import cycle):
//!
//! 1. [`params`] (the parameter set) and [`csprng`] (OS seeding, the AES-CTR keystream,
//!    [`SecureRng`], also used by [`crate::dp`] and by fixed-point rounding): the bottom,
//!    importing nothing of `he`; `widths.rs` ([`Widths`], the decoding budget) on `params`;
//! 2. [`keys`] (key files, [`keys::KeyId`], [`keys::SecretKey`]) and `ntt.rs` (the exact
//!    mask-key product against the transformed key), on `params`; key files are written and read
//!    through [`crate::secret_file`];
//! 3. `ciphertext.rs` and `compact.rs`: the entities [`EncryptedVector`] and
//!    [`CompactVector`] (accessors, tfhe view, homomorphic sums, mask regeneration) and
//!    [`HeError`]; `pack.rs` (bit packing) beside them;
//! 4. `encrypt.rs`: [`keys::SecretKey::prepare`], [`PreparedEncryption::seal`],
//!    [`keys::SecretKey::encrypt`] and [`keys::SecretKey::decrypt`];
//! 5. [`wire`]: the message format, its validating parsers and the server's fold.

//! # Who holds what
//!
//! Encrypting and decrypting are methods of [`keys::SecretKey`]; nothing here turns
//! plaintext into a ciphertext or back without one. The server's side,
//! [`CompactVector::parse_submission`], [`CompactVector::add_submission`] and
//! [`CompactVector::to_bytes`], needs only the public [`keys::KeyId`] and [`Widths`].
//!
//! ```
//! use hefl::he::{CompactVector, DownloadForm, Expected, Widths, keys::KeyFile};
//!
//! // Clients share one key file (`hefl keygen`); here a fixed seed for the example.
//! let key = KeyFile::from_seed([42; 32]).secret_key()?;
//! let len = 3000;
//! // Three parties, t = 22 bits (c = 8, f = 16): 25-bit bodies.
//! let widths = Widths::new(22, 3, DownloadForm::Seeds)?;
//! let expected = Expected { key_id: key.key_id(), plaintext_len: len, widths };
//!
//! // Each client prepares an encryption of zero ahead of time, seals its (already encoded)
//! // vector into it and sends bytes.
//! let messages: Vec<Vec<u8>> = (1..=3u64)
//!     .map(|party| key.prepare(len)?.seal(&vec![party << 42; len], &widths).map(|ct| ct.to_bytes()))
//!     .collect::<Result<_, _>>()?;
//!
//! // The server validates (key id, parameter set, length, widths) and folds bodies and seeds.
//! let mut sum = CompactVector::parse_submission(&messages[0], &expected)?;
//! for message in &messages[1..] {
//!     sum.add_submission(message, &expected)?;
//! }
//! let aggregate = sum.to_bytes();
//!
//! // Each client parses the aggregate, regenerates the masks and decrypts.
//! let received = CompactVector::parse_aggregate(&aggregate, &expected, 3)?;
//! let sums = key.decrypt(&received.expand())?;
//! assert!(sums.iter().all(|&w| w.wrapping_add(1 << 41) >> 42 == 6));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod ciphertext;
mod compact;
mod context;
pub mod csprng;
mod encrypt;
pub mod keys;
mod ntt;
pub(crate) mod pack;
pub mod params;
mod widths;
pub mod wire;

pub(crate) use ciphertext::add_public_words;
pub use ciphertext::{EncryptedVector, HeError, MAX_PLAINTEXT_LEN};
pub use compact::CompactVector;
pub use context::Context;
pub use csprng::SecureRng;
pub use encrypt::{OwnMask, PreparedEncryption};
pub use ntt::NttError;
pub use widths::{DownloadForm, ErrorBudget, HeadroomError, SEEDS_UP_TO, Widths};
pub use wire::{Expected, HeaderError, WIRE_VERSION, WireError};
