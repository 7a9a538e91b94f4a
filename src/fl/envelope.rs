//! A client's envelope for its updates in each privacy mode: quantize, encrypt (in `he`),
//! and open the round's aggregate back into a mean update.

use super::config::Privacy;
use super::payload::{DecodeError, PayloadError, PlainSum, Summable, weighted, weighted_mean};
use crate::he::keys::SecretKey;
use crate::he::{EncryptedVector, Expected, HeError};
use crate::quant::{FixedPoint, QuantError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

/// Time a client spends on its envelope, summed over rounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvelopeCost {
    /// Weighting and fixed-point encoding.
    pub encode_seconds: f64,
    /// Encryption (`he` only).
    pub encrypt_seconds: f64,
    /// Parsing and decryption of the aggregate (`he`), or parsing (`plain`).
    pub decrypt_seconds: f64,
    /// Decoding the aggregate to the mean update.
    pub decode_seconds: f64,
    /// Bytes sent per update.
    pub bytes_per_update: usize,
}

impl EnvelopeCost {
    /// Adds another client's (or round's) cost.
    pub fn add(&mut self, other: &Self) {
        self.encode_seconds += other.encode_seconds;
        self.encrypt_seconds += other.encrypt_seconds;
        self.decrypt_seconds += other.decrypt_seconds;
        self.decode_seconds += other.decode_seconds;
        self.bytes_per_update = self.bytes_per_update.max(other.bytes_per_update);
    }
}

/// Why an envelope could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Quantization refused a value (NaN or infinite gradient).
    #[error("cannot encode the update: {0}")]
    Quant(#[from] QuantError),
    /// Encryption or decryption failed.
    #[error(transparent)]
    He(#[from] HeError),
    /// The aggregate did not parse.
    #[error("aggregate refused: {0}")]
    Payload(#[from] PayloadError),
    /// The aggregate did not decode to a mean.
    #[error("aggregate does not decode: {0}")]
    Decode(#[from] DecodeError),
}

/// Seals a client's updates and opens aggregates (see [`crate::fl::payload`]).
///
/// ```
/// use hefl::fl::{Envelope, EnvelopeCost, PlainSum, Summable};
/// use hefl::he::keys::KeyFile;
/// use hefl::quant::FixedPoint;
/// use rand::SeedableRng;
/// use std::sync::Arc;
///
/// let key = Arc::new(KeyFile::from_seed([1; 32]).secret_key()?);
/// let fp = FixedPoint::for_parties(2)?;
/// let envelope = Envelope::he(fp, key, 2);
/// let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(0);
/// let mut cost = EnvelopeCost::default();
/// let a = envelope.seal(&[1.0, 2.0], 1.0, &mut rng, &mut cost)?;
/// let b = envelope.seal(&[3.0, 6.0], 1.0, &mut rng, &mut cost)?;
/// // What the server does, without a key:
/// let expect = envelope.expected_he().unwrap();
/// let mut sum = hefl::he::EncryptedVector::parse_submission(&a, &expect)?;
/// sum.add_assign(&hefl::he::EncryptedVector::parse_submission(&b, &expect)?)?;
/// let mean = envelope.open(&sum.to_bytes(), 2, &mut cost)?;
/// assert_eq!(mean, [2.0, 4.0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Envelope {
    fp: FixedPoint,
    key: Option<Arc<SecretKey>>,
    len: usize,
}

impl Envelope {
    /// Plain mode for updates of `len` values.
    pub fn plain(fp: FixedPoint, len: usize) -> Self {
        Self { fp, key: None, len }
    }

    /// HE mode for updates of `len` values under `key`.
    pub fn he(fp: FixedPoint, key: Arc<SecretKey>, len: usize) -> Self {
        Self {
            fp,
            key: Some(key),
            len,
        }
    }

    /// The privacy mode.
    pub fn privacy(&self) -> Privacy {
        if self.key.is_some() {
            Privacy::He
        } else {
            Privacy::Plain
        }
    }

    /// Slots on the wire: the update plus its weight.
    pub fn wire_len(&self) -> usize {
        self.len + 1
    }

    /// What a server checks `he` submissions against (key id, length); `None` in plain mode.
    pub fn expected_he(&self) -> Option<Expected> {
        self.key
            .as_ref()
            .map(|key| Expected::fresh(key.key_id(), self.wire_len()))
    }

    /// Weights, quantizes and (in `he`) encrypts one update; returns the bytes to send.
    pub fn seal<R: rand::Rng + ?Sized>(
        &self,
        values: &[f32],
        weight: f32,
        rng: &mut R,
        cost: &mut EnvelopeCost,
    ) -> Result<Vec<u8>, EnvelopeError> {
        let start = Instant::now();
        let words = self.fp.encode(&weighted(values, weight), rng)?;
        cost.encode_seconds += start.elapsed().as_secs_f64();
        let bytes = match &self.key {
            None => PlainSum::fresh(words).to_bytes(),
            Some(key) => {
                let start = Instant::now();
                let ciphertext = key.encrypt(&words)?;
                let bytes = ciphertext.to_bytes();
                cost.encrypt_seconds += start.elapsed().as_secs_f64();
                bytes
            }
        };
        cost.bytes_per_update = bytes.len();
        Ok(bytes)
    }

    /// Parses, (decrypts) and decodes the sum of `parties` sealed updates into the weighted
    /// mean update.
    pub fn open(
        &self,
        bytes: &[u8],
        parties: u32,
        cost: &mut EnvelopeCost,
    ) -> Result<Vec<f32>, EnvelopeError> {
        let start = Instant::now();
        let words = match &self.key {
            None => PlainSum::parse_aggregate(bytes, &self.wire_len(), parties)?
                .words()
                .to_vec(),
            Some(key) => {
                let expect = Expected::fresh(key.key_id(), self.wire_len());
                let sum = EncryptedVector::parse_aggregate(bytes, &expect, parties)?;
                key.decrypt(&sum)?
            }
        };
        let opened = Instant::now();
        cost.decrypt_seconds += (opened - start).as_secs_f64();
        let mean = weighted_mean(&self.fp, &words, parties)?;
        cost.decode_seconds += opened.elapsed().as_secs_f64();
        Ok(mean)
    }
}
