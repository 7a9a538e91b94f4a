//! The binding's only contact with hefl's API: key files, the client's envelope and the
//! server's keyless sum, in plain Rust (no Python types), so that re-pointing the binding at
//! a new library API (a new wire format, a `seal` without an rng) touches this file alone.
//!
//! Every function here may run with the GIL released: nothing borrows Python memory except
//! immutable byte strings, and nothing calls back into Python.

use std::path::Path;
use std::sync::Arc;

use hefl::fl::{Envelope, EnvelopeCost, EnvelopeError, PayloadError, Summable};
use hefl::he::keys::{KeyError, KeyFile, KeyId, SecretKey};
use hefl::he::{
    CompactVector, DownloadForm, Expected, HeadroomError, MAX_PLAINTEXT_LEN, SecureRng, Widths,
};
use hefl::quant::{DEFAULT_CLIP, FixedPoint, QuantError};

/// Slots a sealed update of `len` values occupies: the weighted values, then the weight.
///
/// [`Envelope::expected_he`] knows this, but only for an envelope built from a secret key;
/// the server has a key id, not a key, so the binding mirrors it here (and a test checks
/// that the two agree).
pub fn wire_len(len: usize) -> usize {
    len + 1
}

/// Writes a fresh key file at `path` (mode 0600; refuses to replace one unless `force`),
/// loads it back as a client will and returns its key id: what `hefl keygen` does.
pub fn generate_key(path: &Path, force: bool) -> Result<KeyId, KeyError> {
    KeyFile::generate()?.write_new(path, force)?;
    Ok(KeyFile::load(path)?.key_id())
}

/// The public key id of the key file at `path`, after every check of [`KeyFile::load`]
/// (mode, size, format, parameter set, key id against seed).
pub fn inspect_key(path: &Path) -> Result<KeyId, KeyError> {
    Ok(KeyFile::load(path)?.key_id())
}

/// Loads the key file at `path` and derives its GLWE secret key.
pub fn load_key(path: &Path) -> Result<Arc<SecretKey>, KeyError> {
    Ok(Arc::new(KeyFile::load(path)?.secret_key()?))
}

/// Why an update could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The operating system's random source failed.
    #[error("cannot seed the rounding generator: {0}")]
    Entropy(String),
    /// Quantization or encryption refused the update.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

/// A client's envelope: seals weighted updates of a fixed length under a shared key and
/// opens aggregates into the weighted mean.
pub struct Sealer {
    envelope: Envelope,
    len: usize,
    max_parties: u32,
}

/// The fixed-point encoding (clip 8, `frac_bits`, the least total bits) and compact
/// ciphertext widths (the download form chosen by party count) of a federation of up to
/// `max_parties`, as `hefl serve` makes them; the same on clients and on the server.
fn federation(max_parties: u32, frac_bits: u32) -> Result<(FixedPoint, Widths), SetupError> {
    let fp = FixedPoint::sized(DEFAULT_CLIP, frac_bits, max_parties)?;
    let widths = Widths::new(fp.params().total_bits, max_parties, DownloadForm::Auto)?;
    Ok((fp, widths))
}

impl Sealer {
    /// An envelope for updates of `len` values, quantized to `frac_bits` fractional bits,
    /// whose sums over up to `max_parties` parties decode exactly.
    pub fn new(
        key: Arc<SecretKey>,
        len: usize,
        max_parties: u32,
        frac_bits: u32,
    ) -> Result<Self, SetupError> {
        check_len(len)?;
        let (fp, widths) = federation(max_parties, frac_bits)?;
        Ok(Self {
            envelope: Envelope::he(fp, key, len, widths),
            len,
            max_parties,
        })
    }

    /// Values per update.
    pub fn values(&self) -> usize {
        self.len
    }

    /// The largest party count an aggregate may sum.
    pub fn max_parties(&self) -> u32 {
        self.max_parties
    }

    /// What a server checks this envelope's submissions against.
    pub fn expected(&self) -> Option<Expected> {
        self.envelope.expected_he()
    }

    /// Weights, quantizes (stochastic rounding from a fresh OS-seeded generator) and encrypts
    /// `values`; returns the message bytes.
    pub fn seal(&self, values: &[f32], weight: f32) -> Result<Vec<u8>, SealError> {
        let mut rng = SecureRng::from_os().map_err(|e| SealError::Entropy(e.to_string()))?;
        let mut cost = EnvelopeCost::default();
        Ok(self
            .envelope
            .seal(values, weight, None, &mut rng, &mut cost)?)
    }

    /// Decrypts and decodes the sum of `parties` sealed updates into their weighted mean.
    pub fn open(&self, bytes: &[u8], parties: u32) -> Result<Vec<f32>, OpenError> {
        if parties == 0 || parties > self.max_parties {
            return Err(OpenError::Parties {
                found: parties,
                max: self.max_parties,
            });
        }
        let mut cost = EnvelopeCost::default();
        Ok(self.envelope.open(bytes, parties, &mut cost)?)
    }
}

/// Why an aggregate could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A party count outside 1..=max_parties.
    #[error("an aggregate sums between 1 and {max} updates (max_parties), got parties={found}")]
    Parties {
        /// Parties claimed.
        found: u32,
        /// The envelope's max_parties.
        max: u32,
    },
    /// Parsing, decryption or decoding refused the aggregate.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

/// Why an envelope or a sum could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A length of zero or above hefl's limit.
    #[error("length must be between 1 and {max} values, got {found}")]
    Length {
        /// Requested length.
        found: usize,
        /// The largest length a message may carry, less the weight slot.
        max: usize,
    },
    /// A fixed-point setting that cannot hold the sum (e.g. `max_parties` = 0).
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// A party count whose encrypted sums could fail to decode.
    #[error(transparent)]
    Headroom(#[from] HeadroomError),
    /// A key id that is not 64 hex digits.
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn check_len(len: usize) -> Result<(), SetupError> {
    let max = MAX_PLAINTEXT_LEN - 1;
    if len == 0 || len > max {
        return Err(SetupError::Length { found: len, max });
    }
    Ok(())
}

/// Why a submission was not added to a [`KeylessSum`].
#[derive(Debug, thiserror::Error)]
pub enum SumError {
    /// The sum already holds `max` submissions.
    #[error("the sum already holds {max} submissions, the most its clients can decode")]
    Full {
        /// The limit.
        max: u32,
    },
    /// The message failed the validation `hefl serve` runs.
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

/// The server's side: a running homomorphic sum of sealed updates, validated exactly as
/// `hefl serve` validates them (through [`Summable`]), built from a public key id and a length,
/// never from a key.
pub struct KeylessSum {
    expect: Expected,
    sum: Option<CompactVector>,
    count: u32,
    max_parties: u32,
}

impl KeylessSum {
    /// An empty sum of updates of `len` values under `key_id` quantized to `frac_bits`,
    /// holding at most `max_parties`.
    pub fn new(
        key_id: &str,
        len: usize,
        max_parties: u32,
        frac_bits: u32,
    ) -> Result<Self, SetupError> {
        check_len(len)?;
        let key_id: KeyId = key_id.parse()?;
        // The same widths a client's envelope uses: refuse a party count no encoding fits.
        let (_, widths) = federation(max_parties, frac_bits)?;
        Ok(Self {
            expect: Expected {
                key_id,
                plaintext_len: wire_len(len),
                widths,
            },
            sum: None,
            count: 0,
            max_parties,
        })
    }

    /// Submissions summed so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The key id submissions must be under.
    pub fn key_id(&self) -> KeyId {
        self.expect.key_id
    }

    /// An upper bound on a valid submission's size, before parsing it.
    pub fn max_message_len(&self) -> usize {
        CompactVector::max_wire_len(&self.expect)
    }

    /// Validates `bytes` as one fresh submission and adds it; on any error the sum is
    /// unchanged.
    pub fn add(&mut self, bytes: &[u8]) -> Result<(), SumError> {
        if self.count >= self.max_parties {
            return Err(SumError::Full {
                max: self.max_parties,
            });
        }
        match self.sum.as_mut() {
            Some(sum) => Summable::add_submission(sum, bytes, &self.expect)?,
            None => {
                self.sum = Some(<CompactVector as Summable>::parse_submission(
                    bytes,
                    &self.expect,
                )?)
            }
        }
        self.count += 1;
        Ok(())
    }

    /// The aggregate's wire bytes; `None` before the first submission.
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        self.sum.as_ref().map(Summable::to_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Arc<SecretKey> {
        Arc::new(KeyFile::from_seed([3; 32]).secret_key().unwrap())
    }

    #[test]
    fn the_server_expects_what_the_envelope_sends() {
        let key = key();
        let sealer = Sealer::new(key.clone(), 10, 3, 16).unwrap();
        let sum = KeylessSum::new(&key.key_id().to_string(), 10, 3, 16).unwrap();
        assert_eq!(sealer.expected(), Some(sum.expect));
    }

    #[test]
    fn seal_sum_open_gives_the_weighted_mean() {
        let key = key();
        let sealer = Sealer::new(key.clone(), 3, 3, 16).unwrap();
        let mut sum = KeylessSum::new(&key.key_id().to_string(), 3, 3, 16).unwrap();
        sum.add(&sealer.seal(&[1.0, 2.0, 3.0], 0.25).unwrap())
            .unwrap();
        sum.add(&sealer.seal(&[5.0, 6.0, -1.0], 0.75).unwrap())
            .unwrap();
        let mean = sealer.open(&sum.to_bytes().unwrap(), 2).unwrap();
        assert_eq!(mean, [4.0, 5.0, 0.0]);
    }

    #[test]
    fn refusals_leave_the_sum_unchanged() {
        let key = key();
        let sealer = Sealer::new(key.clone(), 4, 2, 16).unwrap();
        let mut sum = KeylessSum::new(&key.key_id().to_string(), 4, 2, 16).unwrap();
        let good = sealer.seal(&[1.0; 4], 1.0).unwrap();
        sum.add(&good).unwrap();
        let before = sum.to_bytes();
        assert!(sum.add(&good[..good.len() - 1]).is_err());
        let other = Sealer::new(
            Arc::new(KeyFile::from_seed([4; 32]).secret_key().unwrap()),
            4,
            2,
            16,
        )
        .unwrap();
        assert!(sum.add(&other.seal(&[1.0; 4], 1.0).unwrap()).is_err());
        // The same upload twice: one encryption cannot count twice.
        assert!(sum.add(&good).is_err());
        assert_eq!(sum.to_bytes(), before);
        assert_eq!(sum.count(), 1);
        sum.add(&sealer.seal(&[1.0; 4], 1.0).unwrap()).unwrap();
        let third = sealer.seal(&[1.0; 4], 1.0).unwrap();
        assert!(matches!(sum.add(&third), Err(SumError::Full { max: 2 })));
    }

    #[test]
    fn seal_refuses_a_wrong_length_or_weight() {
        let sealer = Sealer::new(key(), 4, 2, 16).unwrap();
        assert!(matches!(
            sealer.seal(&[1.0; 5], 1.0),
            Err(SealError::Envelope(EnvelopeError::Length {
                expected: 4,
                found: 5
            }))
        ));
        for weight in [0.0, -1.0, 1.5, f32::NAN] {
            assert!(matches!(
                sealer.seal(&[1.0; 4], weight),
                Err(SealError::Envelope(EnvelopeError::Weight(_)))
            ));
        }
    }
}
