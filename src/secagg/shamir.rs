//! T-of-k Shamir shares of short secrets over GF(2^8), with vsss-rs 6: how `robust` secure
//! aggregation hands a party's self-blind seed β and blind secret s to its neighbours (design
//! note §1.5, R1 and R3).
//!
//! Each byte of a secret is the constant term of its own random polynomial of degree T − 1
//! over GF(2^8); holder x (1 to 255) gets x and the polynomials' values at x, one byte per
//! secret byte. Any T shares give the secret back by Lagrange interpolation at 0; T − 1 shares
//! say nothing of it (for every candidate secret, exactly one polynomial fits them and the
//! secret). Splitting and combining are vsss-rs's
//! (`Gf256::split_bytes_with_participant_ids_iter`, `Gf256::combine_bytes`: constant-time
//! field arithmetic, fixes of its audit's findings in 6.0); the coefficients come from hefl's
//! CSPRNG ([`SecureRng`]: tfhe's AES-CTR under a fresh OS-seeded key), never from `rand`'s
//! generators.
//!
//! What this module does *not* do: authenticate shares. A holder can send a wrong share, and
//! interpolation gives a wrong secret without noticing. The protocol commits to each secret
//! beforehand (H_β for β, the public key s_pk for s), so [`recover_checked`] takes that
//! check and, when a subset of shares fails it, tries others (design note §7, item 13).

use std::fmt;

use vsss_rs::{Gf256, IdentifierGf256};
use zeroize::{Zeroize, Zeroizing};

use super::reed_solomon::{Interpolator, evaluate};
use crate::he::csprng::{EntropyError, SecureRng};

/// The longest secret shared here, in bytes (a 32-byte X25519 secret fits, twice over).
pub const MAX_SECRET_LEN: usize = 64;

/// The most holders of one secret: GF(2^8) has 255 non-zero x coordinates.
pub const MAX_HOLDERS: u32 = 255;

/// Why shares could not be made, parsed or combined.
#[derive(Debug, thiserror::Error)]
pub enum ShamirError {
    /// Fewer shares than the threshold.
    #[error("{found} shares given, {threshold} needed to recover the secret")]
    TooFewShares {
        /// Shares given.
        found: usize,
        /// Shares needed.
        threshold: u32,
    },
    /// Two shares with one x coordinate.
    #[error("two shares have x = {x}: duplicates are refused")]
    DuplicateX {
        /// The repeated coordinate.
        x: u8,
    },
    /// A share whose x coordinate is 0, where the secret itself sits.
    #[error("a share has x = 0, the secret's coordinate: shares have x from 1 to 255")]
    ZeroX,
    /// A share of the wrong length.
    #[error(
        "a share of {found} bytes where {expected} were expected (x, then one byte per secret byte)"
    )]
    BadLength {
        /// Bytes expected: the secret's length plus one.
        expected: usize,
        /// Bytes found.
        found: usize,
    },
    /// A threshold outside 1..=holders, or more than 255 holders.
    #[error(
        "threshold {threshold} of {holders} holders is out of range: need 1 <= threshold <= \
         holders <= 255"
    )]
    ThresholdOutOfRange {
        /// The threshold asked for.
        threshold: u32,
        /// The holders asked for (or, when recovering, the shares given).
        holders: u32,
    },
    /// A secret of 0 or more than [`MAX_SECRET_LEN`] bytes.
    #[error("a secret of {found} bytes: shares here hold secrets of 1 to 64 bytes")]
    SecretLength {
        /// The secret's length.
        found: usize,
    },
    /// Every subset tried gave a secret that failed the check.
    #[error(
        "no subset of the shares gave a secret that passed the check ({tried} subsets tried): \
         too many holders sent bad shares, or the check is wrong"
    )]
    NoConsistentSubset {
        /// Subsets tried (calls of the check).
        tried: usize,
    },
    /// The operating system's random source failed, so no coefficient could be drawn.
    #[error(transparent)]
    Entropy(#[from] EntropyError),
    /// vsss-rs refused parameters this module had already checked (a bug here).
    #[error("vsss-rs refused: {0}")]
    Backend(vsss_rs::Error),
}

/// One holder's share of a secret: its x coordinate (1..=255) and one byte per secret byte.
///
/// Its bytes are secret: `Debug` prints only x and the length, and they are zeroized on drop.
///
/// ```
/// use hefl::secagg::{Share, split};
///
/// let shares = split(b"sixteen byte key", 2, 3)?;
/// let wire = shares[1].to_bytes();
/// assert_eq!(wire.len(), 17);
/// assert_eq!(Share::from_bytes(&wire, 16)?, shares[1]);
/// assert_eq!(format!("{:?}", shares[1]), "Share { x: 2, bytes: 17, .. }");
/// # Ok::<(), hefl::secagg::ShamirError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Share {
    x: u8,
    y: Zeroizing<Vec<u8>>,
}

impl Share {
    /// The x coordinate (1..=255): which holder this share is for.
    pub fn x(&self) -> u8 {
        self.x
    }

    /// x then y: secret_len + 1 bytes. They are secret: encrypt them at once and zeroize the
    /// copy.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.y.len() + 1);
        bytes.push(self.x);
        bytes.extend_from_slice(&self.y);
        bytes
    }

    /// Parses a share of a secret of `secret_len` bytes: refuses another length and x = 0.
    pub fn from_bytes(bytes: &[u8], secret_len: usize) -> Result<Self, ShamirError> {
        check_secret_len(secret_len)?;
        let expected = secret_len + 1;
        match bytes.split_first() {
            Some((_, y)) if y.len() != secret_len => Err(ShamirError::BadLength {
                expected,
                found: bytes.len(),
            }),
            None => Err(ShamirError::BadLength { expected, found: 0 }),
            Some((0, _)) => Err(ShamirError::ZeroX),
            Some((&x, y)) => Ok(Self {
                x,
                y: Zeroizing::new(y.to_vec()),
            }),
        }
    }
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Share")
            .field("x", &self.x)
            .field("bytes", &(self.y.len() + 1))
            .finish_non_exhaustive()
    }
}

fn check_secret_len(len: usize) -> Result<(), ShamirError> {
    if (1..=MAX_SECRET_LEN).contains(&len) {
        Ok(())
    } else {
        Err(ShamirError::SecretLength { found: len })
    }
}

/// Splits `secret` (1..=64 bytes) into shares for x = 1..=holders, any `threshold` of which
/// recover it. Coefficients from hefl's CSPRNG (`SecureRng`), never `rand`'s generators.
///
/// Share i of the result (from 0) is for x = i + 1; which neighbour is which x is the
/// caller's convention. A threshold of 1 gives every holder the secret itself (a polynomial of
/// degree 0; vsss-rs starts at 2).
///
/// ```
/// use hefl::secagg::{recover_checked, split};
///
/// let secret = [42u8; 32];
/// let shares = split(&secret, 3, 5)?;
/// assert_eq!(shares.len(), 5);
/// let recovered = recover_checked(&shares[2..], 3, 1, |s| s == secret)?;
/// assert_eq!(&recovered[..], &secret);
/// # Ok::<(), hefl::secagg::ShamirError>(())
/// ```
pub fn split(secret: &[u8], threshold: u32, holders: u32) -> Result<Vec<Share>, ShamirError> {
    check_split(secret, threshold, holders)?;
    split_with_rng(secret, threshold, holders, &mut SecureRng::from_os()?)
}

/// [`split`] with the coefficients drawn from `rng`: one OS seeding for several secrets, or
/// [`SecureRng::from_key`] for reproducible shares in tests.
pub fn split_with_rng(
    secret: &[u8],
    threshold: u32,
    holders: u32,
    rng: &mut SecureRng,
) -> Result<Vec<Share>, ShamirError> {
    check_split(secret, threshold, holders)?;
    if threshold == 1 {
        return Ok((1..=holders as u8)
            .map(|x| Share {
                x,
                y: Zeroizing::new(secret.to_vec()),
            })
            .collect());
    }
    let ids = (1..=holders as u8).map(|x| IdentifierGf256::from(Gf256::from(x)));
    let mut raw = Gf256::split_bytes_with_participant_ids_iter(
        threshold as usize,
        holders as usize,
        secret,
        CoefficientRng(rng),
        ids,
    )
    .map_err(ShamirError::Backend)?;
    let shares = raw
        .iter()
        .map(|bytes| Share::from_bytes(bytes, secret.len()))
        .collect();
    raw.zeroize();
    shares
}

fn check_split(secret: &[u8], threshold: u32, holders: u32) -> Result<(), ShamirError> {
    check_secret_len(secret.len())?;
    if threshold == 0 || threshold > holders || holders > MAX_HOLDERS {
        return Err(ShamirError::ThresholdOutOfRange { threshold, holders });
    }
    Ok(())
}

/// Recovers the secret from `shares` (at least `threshold`, distinct x; duplicates refused),
/// accepting it only if `check(secret)` holds; when the first `threshold` shares fail the
/// check (a holder sent a bad share), retries over other `threshold`-subsets, at most
/// `max_tries` in all.
///
/// The order of the subsets, each combined by vsss-rs and passed to `check` (one try each):
/// 1. the first `threshold` shares, as given;
/// 2. when there are more shares than the threshold: the first `threshold` of the shares
///    that Gao's Reed–Solomon decoder finds on one polynomial. With m shares of which at most
///    ⌊(m − T)/2⌋ are bad, this subset is all good, so one bad holder costs one extra try;
/// 3. then every T-subset of the shares in lexicographic order of their positions (skipping
///    those already tried), until `max_tries`.
///
/// Cost: step 2 is O(m² · L) field multiplications for L-byte secrets (0.8 ms at 50-of-99,
/// 4.7 ms at 128-of-255, L = 32, measured once in a test build); each try is one
/// interpolation, O(T² + T · L), plus one `check`. Beyond ⌊(m − T)/2⌋ bad shares only step 3
/// is left, and lexicographic order reaches the first all-good subset late when a bad share
/// comes early (a bad first share: after C(m − 1, T − 1) tries), so `max_tries` bounds the
/// work; past it the answer is
/// [`ShamirError::NoConsistentSubset`].
///
/// ```
/// use hefl::secagg::{recover_checked, split};
///
/// let secret = *b"a 16-byte secret";
/// let shares = split(&secret, 2, 4)?;
/// // Holder 1 lies: its share gives a wrong secret, which the check refuses.
/// let mut bad = shares[0].to_bytes();
/// bad[1] ^= 0xff;
/// let given = [hefl::secagg::Share::from_bytes(&bad, 16)?, shares[1].clone(), shares[2].clone()];
/// let recovered = recover_checked(&given, 2, 10, |s| s == secret)?;
/// assert_eq!(&recovered[..], &secret);
/// # Ok::<(), hefl::secagg::ShamirError>(())
/// ```
pub fn recover_checked(
    shares: &[Share],
    threshold: u32,
    max_tries: usize,
    check: impl Fn(&[u8]) -> bool,
) -> Result<Zeroizing<Vec<u8>>, ShamirError> {
    check_shares(shares, threshold)?;
    let t = threshold as usize;
    let mut tried = 0;
    let mut attempt = |subset: &[usize]| -> Result<Option<Zeroizing<Vec<u8>>>, ShamirError> {
        tried += 1;
        let secret = combine(shares, subset)?;
        Ok(check(&secret).then_some(secret))
    };
    let first: Vec<usize> = (0..t).collect();
    if max_tries > 0
        && let Some(secret) = attempt(&first)?
    {
        return Ok(secret);
    }
    // The decoder only once the first subset has failed: no cost when no holder lies.
    let decoded = (shares.len() > t && max_tries > 1)
        .then(|| decoded_subset(shares, t))
        .flatten()
        .filter(|subset| *subset != first);
    let others = decoded.clone().into_iter().chain(
        Subsets::new(t, shares.len())
            .skip(1)
            .filter(|subset| Some(subset) != decoded.as_ref()),
    );
    for subset in others.take(max_tries.saturating_sub(1)) {
        if let Some(secret) = attempt(&subset)? {
            return Ok(secret);
        }
    }
    Err(ShamirError::NoConsistentSubset { tried })
}

/// Refuses a threshold outside 1..=255, shares of mixed lengths, a repeated x, and fewer
/// shares than the threshold.
fn check_shares(shares: &[Share], threshold: u32) -> Result<(), ShamirError> {
    if threshold == 0 || threshold > MAX_HOLDERS {
        return Err(ShamirError::ThresholdOutOfRange {
            threshold,
            holders: u32::try_from(shares.len()).unwrap_or(u32::MAX),
        });
    }
    let mut seen = [false; 256];
    let len = shares.first().map_or(0, |share| share.y.len());
    for share in shares {
        if share.y.len() != len {
            return Err(ShamirError::BadLength {
                expected: len + 1,
                found: share.y.len() + 1,
            });
        }
        if std::mem::replace(&mut seen[usize::from(share.x)], true) {
            return Err(ShamirError::DuplicateX { x: share.x });
        }
    }
    if shares.len() < threshold as usize {
        return Err(ShamirError::TooFewShares {
            found: shares.len(),
            threshold,
        });
    }
    Ok(())
}

/// The secret that the shares at positions `subset` give (vsss-rs's Lagrange interpolation
/// at 0; one share of a 1-of-k split is the secret).
fn combine(shares: &[Share], subset: &[usize]) -> Result<Zeroizing<Vec<u8>>, ShamirError> {
    if let [only] = subset {
        return Ok(shares[*only].y.clone());
    }
    let rows = Zeroizing::new(
        subset
            .iter()
            .map(|&i| shares[i].to_bytes())
            .collect::<Vec<_>>(),
    );
    Gf256::combine_bytes(&*rows)
        .map(Zeroizing::new)
        .map_err(ShamirError::Backend)
}

/// Whether every byte of `share` is its column's polynomial at the share's x.
fn on_polynomials(columns: &[impl AsRef<[Gf256]>], share: &Share) -> bool {
    let x = Gf256::from(share.x);
    columns
        .iter()
        .zip(share.y.iter())
        .all(|(column, &y)| evaluate(column.as_ref(), x) == Gf256::from(y))
}

/// The first `threshold` positions of the shares on the polynomials Gao's decoder finds (one
/// per secret byte), or `None` when some byte does not decode or fewer shares agree.
fn decoded_subset(shares: &[Share], threshold: usize) -> Option<Vec<usize>> {
    let xs: Vec<u8> = shares.iter().map(|share| share.x).collect();
    let interpolator = Interpolator::new(&xs);
    let len = shares.first()?.y.len();
    let columns = (0..len)
        .map(|b| interpolator.decode(shares.iter().map(|share| share.y[b]), threshold))
        .collect::<Option<Vec<_>>>()?;
    let agreeing: Vec<usize> = (0..shares.len())
        .filter(|&i| on_polynomials(&columns, &shares[i]))
        .take(threshold)
        .collect();
    (agreeing.len() == threshold).then_some(agreeing)
}

/// The `size`-subsets of the positions 0..`items`, in lexicographic order.
struct Subsets {
    next: Option<Vec<usize>>,
    items: usize,
}

impl Subsets {
    fn new(size: usize, items: usize) -> Self {
        Self {
            next: (size <= items).then(|| (0..size).collect()),
            items,
        }
    }
}

impl Iterator for Subsets {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        let current = self.next.take()?;
        let size = current.len();
        // The last position that can still move up; then the ones after it follow it.
        if let Some(i) = (0..size)
            .rev()
            .find(|&i| current[i] < self.items - size + i)
        {
            let mut following = current.clone();
            following[i] += 1;
            for j in i + 1..size {
                following[j] = following[j - 1] + 1;
            }
            self.next = Some(following);
        }
        Some(current)
    }
}

/// hefl's [`SecureRng`] seen through rand_core 0.10's traits, which vsss-rs 6 asks of the
/// generator of its coefficients (hefl's `rand` 0.9 implements rand_core 0.9's). Each call is
/// forwarded unchanged, so the coefficients are tfhe's AES-CTR keystream under the
/// generator's key (vsss-rs takes the low byte of each `next_u32`).
struct CoefficientRng<'r>(&'r mut SecureRng);

impl rand_core::TryRng for CoefficientRng<'_> {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(rand::RngCore::next_u32(self.0))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(rand::RngCore::next_u64(self.0))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        rand::RngCore::fill_bytes(self.0, dst);
        Ok(())
    }
}

/// [`SecureRng`] is a CSPRNG (AES-128-CTR under a fresh OS-seeded key), so is this.
impl rand_core::TryCryptoRng for CoefficientRng<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const KEY: u128 = 0x5eed_0000_0000_0000_0000_0000_0000_0001;

    fn secret(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 29 + 3) as u8).collect()
    }

    fn shares_of(secret: &[u8], threshold: u32, holders: u32) -> Vec<Share> {
        split_with_rng(secret, threshold, holders, &mut SecureRng::from_key(KEY)).unwrap()
    }

    /// A 32-byte secret and the first `keep` of its `holders` shares (`threshold` of which
    /// recover it), the share at each position of `bad` with that byte flipped: what lying
    /// holders send.
    fn with_bad_shares(
        threshold: u32,
        holders: u32,
        keep: usize,
        bad: impl IntoIterator<Item = (usize, usize)>,
    ) -> (Vec<u8>, Vec<Share>) {
        let secret = secret(32);
        let mut shares = shares_of(&secret, threshold, holders);
        shares.truncate(keep);
        for (position, byte) in bad {
            shares[position].y[byte] ^= 0x5a;
        }
        (secret, shares)
    }

    /// recover_checked that also counts the calls of the check.
    fn recover_counting(
        shares: &[Share],
        threshold: u32,
        max_tries: usize,
        secret: &[u8],
    ) -> (Result<Zeroizing<Vec<u8>>, ShamirError>, usize) {
        let calls = Cell::new(0);
        let result = recover_checked(shares, threshold, max_tries, |s| {
            calls.set(calls.get() + 1);
            s == secret
        });
        (result, calls.get())
    }

    #[test]
    fn round_trip_for_each_threshold_and_length() {
        for (threshold, holders) in [(1, 1), (2, 2), (2, 3), (8, 14), (50, 99), (128, 255)] {
            for len in [16, 32] {
                let secret = secret(len);
                let shares = split(&secret, threshold, holders).unwrap();
                assert_eq!(shares.len(), holders as usize);
                for (i, share) in shares.iter().enumerate() {
                    assert_eq!(usize::from(share.x()), i + 1);
                    let bytes = share.to_bytes();
                    assert_eq!(bytes.len(), len + 1);
                    assert_eq!(&Share::from_bytes(&bytes, len).unwrap(), share);
                }
                // The last `threshold` shares, not only the first.
                let last = &shares[(holders - threshold) as usize..];
                let recovered = recover_checked(last, threshold, 1, |s| s == secret).unwrap();
                assert_eq!(
                    &recovered[..],
                    &secret[..],
                    "{threshold}-of-{holders}, {len} B"
                );
            }
        }
    }

    #[test]
    fn any_threshold_distinct_shares_recover() {
        let secret = secret(32);
        for (threshold, holders) in [(2, 3), (3, 5), (8, 14)] {
            let shares = shares_of(&secret, threshold, holders);
            for subset in Subsets::new(threshold as usize, holders as usize).step_by(7) {
                let recovered = combine(&shares, &subset).unwrap();
                assert_eq!(&recovered[..], &secret[..], "{subset:?} of {holders}");
            }
        }
    }

    #[test]
    fn fewer_than_threshold_shares_do_not_recover() {
        let secret = secret(16);
        for (threshold, holders) in [(3, 5), (8, 14), (50, 99)] {
            let shares = shares_of(&secret, threshold, holders);
            let fewer = &shares[..threshold as usize - 1];
            // Interpolating T − 1 shares gives another polynomial, and another secret.
            let wrong = combine(fewer, &(0..fewer.len()).collect::<Vec<_>>()).unwrap();
            assert_ne!(&wrong[..], &secret[..], "{threshold}-of-{holders}");
            let refused = recover_checked(fewer, threshold, 10, |_| true).unwrap_err();
            assert!(matches!(
                refused,
                ShamirError::TooFewShares { found, threshold: t } if found + 1 == t as usize
            ));
            assert!(
                refused
                    .to_string()
                    .contains(&format!("{} needed", threshold))
            );
        }
    }

    #[test]
    fn one_share_of_two_is_uniform_over_splits() {
        // With T − 1 = 1 share, each byte is the secret plus a uniform coefficient times x.
        let secret = [0u8; 16];
        let mut seen = [false; 256];
        for key in 0..2000 {
            let shares = split_with_rng(&secret, 2, 2, &mut SecureRng::from_key(key)).unwrap();
            seen[usize::from(shares[0].y[0])] = true;
        }
        let distinct = seen.iter().filter(|&&s| s).count();
        assert!(
            distinct > 240,
            "{distinct} distinct first bytes over 2000 splits"
        );
    }

    #[test]
    fn one_bad_share_among_t_plus_2_costs_one_retry() {
        for bad in [0, 3, 7] {
            let (secret, given) = with_bad_shares(8, 14, 10, [(bad, 5)]);
            let (recovered, calls) = recover_counting(&given, 8, 100, &secret);
            assert_eq!(&recovered.unwrap()[..], &secret[..]);
            // The first 8 shares hold the bad one; the decoder's subset is the next try.
            assert_eq!(calls, 2, "bad share at {bad}");
        }
    }

    #[test]
    fn two_bad_shares_among_t_plus_2_are_found_by_subset_retries() {
        // Two bad shares among T + 2, both in byte 3, are past the decoder's reach (one per
        // byte); only the subset without both is right, and with both bad shares first it
        // comes last of C(10, 8) = 45. Share 1 is bad in byte 4 too: with equal errors in one
        // byte only, a subset holding both can give the right secret (when their Lagrange
        // weights at 0 are equal), and would rightly be accepted.
        let (secret, given) = with_bad_shares(8, 14, 10, [(0, 3), (1, 3), (1, 4)]);
        let (recovered, calls) = recover_counting(&given, 8, 100, &secret);
        assert_eq!(&recovered.unwrap()[..], &secret[..]);
        assert_eq!(calls, 45);
        // One try fewer is not enough.
        let (refused, calls) = recover_counting(&given, 8, 44, &secret);
        assert!(matches!(
            refused,
            Err(ShamirError::NoConsistentSubset { tried: 44 })
        ));
        assert_eq!(calls, 44);
    }

    #[test]
    fn one_bad_share_among_t_plus_1_needs_the_last_subset() {
        // T + 1 shares leave the decoder nothing to correct: lexicographic retries alone.
        let (secret, given) = with_bad_shares(5, 9, 6, [(0, 9)]);
        let (recovered, calls) = recover_counting(&given, 5, 100, &secret);
        assert_eq!(&recovered.unwrap()[..], &secret[..]);
        // {0..4}, {0,1,2,3,5}, ..., {1,2,3,4,5}: the sixth.
        assert_eq!(calls, 6);
    }

    #[test]
    fn the_decoder_survives_many_bad_shares() {
        // ⌊(99 − 50)/2⌋ = 24 correctable per byte: 20 bad in byte 0, the first ten among
        // them, and 5 more, each in a byte of its own.
        let in_byte_0 = (0..10).chain((60..99).step_by(4)).map(|i| (i, 0));
        let elsewhere = [11, 20, 30, 40, 50].map(|i| (i, i % 32));
        let (secret, given) = with_bad_shares(50, 99, 99, in_byte_0.chain(elsewhere));
        let (recovered, calls) = recover_counting(&given, 50, 3, &secret);
        assert_eq!(&recovered.unwrap()[..], &secret[..]);
        assert_eq!(calls, 2);
    }

    #[test]
    fn too_many_bad_shares_leave_no_consistent_subset() {
        // Each bad share alone in its own byte: every subset holding one gives a wrong byte.
        let (secret, given) = with_bad_shares(8, 14, 10, [(0, 0), (4, 4), (9, 9)]);
        let threshold = 8;
        let (refused, calls) = recover_counting(&given, threshold, 1000, &secret);
        let err = refused.unwrap_err();
        // Every one of the C(10, 8) = 45 subsets holds a bad share.
        assert!(matches!(err, ShamirError::NoConsistentSubset { tried: 45 }));
        assert_eq!(calls, 45);
        assert!(err.to_string().contains("45 subsets tried"), "{err}");
    }

    #[test]
    fn malformed_inputs_are_refused() {
        let shares = shares_of(&secret(16), 2, 3);
        let twice = [shares[0].clone(), shares[1].clone(), shares[0].clone()];
        let err = recover_checked(&twice, 2, 5, |_| true).unwrap_err();
        assert!(matches!(err, ShamirError::DuplicateX { x: 1 }), "{err}");
        assert!(err.to_string().contains("x = 1"));

        let longer = split_with_rng(&secret(32), 2, 3, &mut SecureRng::from_key(KEY)).unwrap();
        let mixed = [shares[0].clone(), longer[1].clone()];
        let err = recover_checked(&mixed, 2, 5, |_| true).unwrap_err();
        assert!(matches!(
            err,
            ShamirError::BadLength {
                expected: 17,
                found: 33
            }
        ));
        assert!(err.to_string().contains("33 bytes where 17"), "{err}");

        for (bytes, len) in [(&[1u8; 16][..], 16), (&[1u8; 18][..], 16), (&[][..], 16)] {
            let err = Share::from_bytes(bytes, len).unwrap_err();
            assert!(
                matches!(err, ShamirError::BadLength { expected: 17, .. }),
                "{err}"
            );
        }
        let mut zero_x = shares[0].to_bytes();
        zero_x[0] = 0;
        assert!(matches!(
            Share::from_bytes(&zero_x, 16),
            Err(ShamirError::ZeroX)
        ));
        assert!(matches!(
            Share::from_bytes(&[1; 66], 65),
            Err(ShamirError::SecretLength { found: 65 })
        ));

        for (threshold, holders) in [(0, 3), (4, 3), (2, 256), (0, 0)] {
            let err = split(&secret(16), threshold, holders).unwrap_err();
            assert!(
                matches!(err, ShamirError::ThresholdOutOfRange { threshold: t, holders: h }
                    if (t, h) == (threshold, holders)),
                "{err}"
            );
            assert!(
                err.to_string()
                    .contains(&format!("threshold {threshold} of {holders}"))
            );
        }
        for len in [0, 65] {
            let err = split(&secret(len), 2, 3).unwrap_err();
            assert!(matches!(err, ShamirError::SecretLength { found } if found == len));
            assert!(err.to_string().contains(&format!("{len} bytes")));
        }
        assert!(matches!(
            recover_checked(&shares, 0, 5, |_| true),
            Err(ShamirError::ThresholdOutOfRange {
                threshold: 0,
                holders: 3
            })
        ));
        assert!(matches!(
            recover_checked(&shares, 2, 0, |_| true),
            Err(ShamirError::NoConsistentSubset { tried: 0 })
        ));
    }

    #[test]
    fn debug_prints_no_secret_bytes() {
        let mut bytes = [0xabu8; 17];
        bytes[0] = 3;
        let printed = format!("{:?}", Share::from_bytes(&bytes, 16).unwrap());
        assert_eq!(printed, "Share { x: 3, bytes: 17, .. }");
        for share in shares_of(&[0xab; 32], 3, 5) {
            let printed = format!("{share:?}");
            assert!(
                !printed.contains("171") && !printed.contains("ab"),
                "{printed}"
            );
        }
    }

    #[test]
    fn coefficient_rng_forwards_secure_rng() {
        use rand::RngCore as _;
        use rand_core::Rng as _;

        fn assert_crypto_rng<R: rand_core::CryptoRng>(_: &R) {}
        let mut inner = SecureRng::from_key(KEY);
        let mut adapter = CoefficientRng(&mut inner);
        assert_crypto_rng(&adapter);
        let (a32, a64) = (adapter.next_u32(), adapter.next_u64());
        let mut a_bytes = [0u8; 13];
        adapter.fill_bytes(&mut a_bytes);

        let mut direct = SecureRng::from_key(KEY);
        let (d32, d64) = (direct.next_u32(), direct.next_u64());
        let mut d_bytes = [0u8; 13];
        direct.fill_bytes(&mut d_bytes);
        assert_eq!((a32, a64, a_bytes), (d32, d64, d_bytes));
    }

    #[test]
    fn coefficients_come_from_the_given_generator() {
        let secret = secret(32);
        let again = |key| split_with_rng(&secret, 3, 5, &mut SecureRng::from_key(key)).unwrap();
        assert_eq!(again(KEY), again(KEY));
        assert_ne!(again(KEY), again(KEY + 1));
        // Fresh OS-seeded generators: two splits differ.
        assert_ne!(split(&secret, 3, 5).unwrap(), split(&secret, 3, 5).unwrap());
    }

    #[test]
    fn subsets_are_lexicographic() {
        let all: Vec<Vec<usize>> = Subsets::new(2, 4).collect();
        assert_eq!(
            all,
            [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]].map(Vec::from)
        );
        assert_eq!(Subsets::new(3, 3).count(), 1);
        assert_eq!(Subsets::new(4, 3).count(), 0);
        assert_eq!(Subsets::new(8, 10).count(), 45);
    }
}
