//! Integration tests of hefl::he: exactness of encrypted sums, interoperability with tfhe's own
//! GLWE functions, key files, and the wire parser's refusals.

use std::os::unix::fs::PermissionsExt;
use std::sync::OnceLock;

use hefl::fl::Summable;
use hefl::he::keys::{KeyError, KeyFile, KeyId, SecretKey};
use hefl::he::params::PARAMS;
use hefl::he::{
    CompactVector, Context, DownloadForm, EncryptedVector, Expected, HeError, MAX_PLAINTEXT_LEN,
    Widths, WireError,
};
use hefl::quant::FixedPoint;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tfhe::core_crypto::prelude::*;

fn derived_key(cell: &'static OnceLock<SecretKey>, seed: u8) -> &'static SecretKey {
    cell.get_or_init(|| {
        KeyFile::from_seed([seed; 32])
            .secret_key()
            .expect("key derivation")
    })
}

fn key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    derived_key(&KEY, 0x5e)
}

fn other_key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    derived_key(&KEY, 0xa7)
}

/// Signed distance of a decrypted word from the plaintext (the decryption noise).
fn noise(decrypted: u64, plaintext: u64) -> i64 {
    decrypted.wrapping_sub(plaintext) as i64
}

// ---------------------------------------------------------------------------------------------
// Exactness

/// Values for one party: mostly random in [-1.5c, 1.5c] (so some get clipped), with the
/// clip edges forced at fixed positions shared by all parties (so the sum reaches ±P·M).
fn party_values(len: usize, clip: f32, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let mut values: Vec<f32> = (0..len)
        .map(|_| rng.random_range(-1.5 * clip..1.5 * clip))
        .collect();
    values[0] = clip;
    if len > 1 {
        values[1] = -clip;
    }
    if len > 3 {
        values[len - 1] = -clip;
        values[len - 2] = clip;
    }
    values
}

/// The federation of `fp` (t, P) downloading in `form`.
fn expected(fp: &FixedPoint, len: usize, form: DownloadForm) -> Expected {
    let p = fp.params();
    Expected {
        key_id: key().key_id(),
        plaintext_len: len,
        widths: Widths::new(p.total_bits, p.max_parties, form).expect("widths"),
    }
}

/// `parties` uploads of `len` values folded by a server, published, parsed by a client,
/// masks regenerated, decrypted: the decoded integers equal the sum of what was encoded.
fn check_exact_sum(fp: &FixedPoint, parties: u32, len: usize, form: DownloadForm, seed: u64) {
    let key = key();
    let expect = expected(fp, len, form);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut want = vec![0i64; len];
    let mut sum: Option<CompactVector> = None;
    let mut own = None;
    for _ in 0..parties {
        let values = party_values(len, fp.params().clip, &mut rng);
        let z = fp.quantize(&values, &mut rng).expect("finite values");
        for (e, z) in want.iter_mut().zip(&z) {
            *e += z;
        }
        let plaintext: Vec<u64> = z.iter().map(|&z| fp.to_plaintext(z)).collect();
        let (upload, mask) = key
            .prepare(len)
            .unwrap()
            .seal_keeping_mask(&plaintext, &expect.widths)
            .unwrap();
        own = Some(mask);
        let bytes = upload.to_bytes();
        match sum.as_mut() {
            None => {
                sum = Some(<CompactVector as Summable>::parse_submission(&bytes, &expect).unwrap())
            }
            Some(sum) => sum.add_submission(&bytes, &expect).unwrap(),
        }
    }
    let published = sum.expect("parties > 0").to_bytes();
    let received = CompactVector::parse_aggregate(&published, &expect, parties).unwrap();
    assert_eq!(received.summands(), parties);
    // Every decryption: the full ciphertexts (exact mask, a two-limb FFT product), and the
    // compact path that rounds the summed mask to k_down bits (one limb up to 33 bits, two
    // beyond), regenerating every mask or reading the last party's own (seeds form; the
    // switched form ignores it).
    let full = key.decrypt(&received.expand()).expect("decrypt");
    let compact = key
        .decrypt_compact(received.clone(), &expect.widths, None)
        .expect("decrypt");
    let with_own = key
        .decrypt_compact(received, &expect.widths, own.as_ref())
        .expect("decrypt");
    assert!(
        with_own == compact,
        "P = {parties}, {form}: own mask changes decryption"
    );
    for (path, decrypted) in [("full", full), ("compact", compact)] {
        let got = fp.decode_integers(&decrypted);
        assert_eq!(got.len(), len);
        let first_bad = got.iter().zip(&want).position(|(g, e)| g != e);
        assert_eq!(
            first_bad,
            None,
            "P = {parties}, len = {len}, {form}, {path} decryption (k_down {}): \
             decrypted sum differs from the sum of encoded integers",
            expect.widths.product_bits()
        );
    }
    // The clip edges were reached.
    let m = fp.max_magnitude();
    assert_eq!(want[0], i64::from(parties) * m);
    if len > 1 {
        assert_eq!(want[1], -i64::from(parties) * m);
    }
}

#[test]
fn exact_sum_for_all_party_counts_lengths_and_download_forms() {
    for form in [DownloadForm::Seeds, DownloadForm::Switched] {
        for (i, parties) in [1u32, 2, 3, 10, 100, 1000].into_iter().enumerate() {
            // The default encoding for P parties: the least t, so P·M is within a factor
            // of two of 2^(t-1), and the widths the check allows.
            let fp = FixedPoint::for_parties(parties).unwrap();
            let k_down = Widths::new(fp.params().total_bits, parties, form)
                .unwrap()
                .product_bits();
            // Both product paths are covered: one FFT limb for P <= 3 (k_down <= 33, the
            // demo's), two for P >= 10.
            assert_eq!(k_down <= 33, parties <= 3, "P = {parties}: k_down {k_down}");
            let lens: &[usize] = match parties {
                1000 => &[4099],
                100 => &[1, 2049],
                _ => &[1, 2047, 2048, 2049, 101_770],
            };
            for (j, &len) in lens.iter().enumerate() {
                check_exact_sum(&fp, parties, len, form, (i * 10 + j) as u64);
            }
        }
    }
}

#[test]
fn exact_sum_at_the_edge_of_headroom() {
    // For each P, the widest encoding hefl accepts (clip 1, the largest f whose least t still
    // fits the switched form's budget): P * M is within a factor of two of 2^(t-1), and the
    // noise, rounded bodies and rounded mask use most of the decoding budget.
    for parties in [1u32, 2, 3, 10, 100] {
        let fits = |f: u32| {
            let fp = FixedPoint::sized(1.0, f, parties).ok()?;
            let t = fp.params().total_bits;
            Widths::new(t, parties, DownloadForm::Switched).ok()?;
            Some(fp)
        };
        let fp = (0..=62).rev().find_map(fits).expect("some f fits");
        let p = fp.params();
        assert!(
            u128::from(parties) * fp.max_magnitude() as u128 * 2 >= 1u128 << (p.total_bits - 1),
            "{p}: not tight"
        );
        assert!(fits(p.frac_bits + 1).is_none(), "{p}: not the widest");
        // Decryption rounds the mask to more than 48 bits here: the widest two-limb products
        // of the compact path.
        let k_down = Widths::new(p.total_bits, parties, DownloadForm::Seeds)
            .unwrap()
            .product_bits();
        assert!(k_down > 48, "{p}: k_down {k_down}");
        for form in [DownloadForm::Seeds, DownloadForm::Switched] {
            check_exact_sum(&fp, parties, 4099, form, u64::from(parties));
        }
    }
}

#[test]
fn add_assign_matches_sum() {
    let key = key();
    let fp = FixedPoint::default();
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let vectors: Vec<EncryptedVector> = (0..5)
        .map(|_| {
            let values = party_values(3000, 8.0, &mut rng);
            key.encrypt(&fp.encode(&values, &mut rng).unwrap()).unwrap()
        })
        .collect();
    let mut running = vectors[0].clone();
    for v in &vectors[1..] {
        running.add_assign(v).unwrap();
    }
    assert_eq!(running, EncryptedVector::sum(&vectors).unwrap());

    let expect = expected(&fp, 3000, DownloadForm::Seeds);
    let uploads: Vec<CompactVector> = (0..5)
        .map(|_| {
            let words = fp
                .encode(&party_values(3000, 8.0, &mut rng), &mut rng)
                .unwrap();
            key.prepare(3000)
                .unwrap()
                .seal(&words, &expect.widths)
                .unwrap()
        })
        .collect();
    let mut running = uploads[4].clone();
    for v in uploads[..4].iter().rev() {
        running.add_assign(v).unwrap();
    }
    // Seeds are kept in order: the sum does not depend on the order of its summands.
    assert_eq!(running, CompactVector::sum(&uploads).unwrap());
    assert_eq!(
        running.to_bytes(),
        CompactVector::sum(&uploads).unwrap().to_bytes()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn prop_sum_decrypts_to_sum_of_encodings(
        parties in 1u32..=12,
        len in 1usize..6000,
        spread in 0.001f32..20.0,
        switched in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let fp = FixedPoint::for_parties(12).unwrap();
        let form = if switched { DownloadForm::Switched } else { DownloadForm::Seeds };
        let expect = expected(&fp, len, form);
        let key = key();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut want = vec![0i64; len];
        let mut sum: Option<CompactVector> = None;
        for _ in 0..parties {
            let values: Vec<f32> = (0..len).map(|_| rng.random_range(-spread..spread)).collect();
            let z = fp.quantize(&values, &mut rng).unwrap();
            want.iter_mut().zip(&z).for_each(|(e, z)| *e += z);
            let words: Vec<u64> = z.iter().map(|&z| fp.to_plaintext(z)).collect();
            let bytes = key.prepare(len).unwrap().seal(&words, &expect.widths).unwrap().to_bytes();
            match sum.as_mut() {
                None => sum = Some(<CompactVector as Summable>::parse_submission(&bytes, &expect).unwrap()),
                Some(s) => s.add_submission(&bytes, &expect).unwrap(),
            }
        }
        // Through the wire, as a client would receive it.
        let bytes = sum.unwrap().to_bytes();
        let received = CompactVector::parse_aggregate(&bytes, &expect, parties).unwrap();
        let decrypted = key.decrypt(&received.expand()).unwrap();
        prop_assert_eq!(fp.decode_integers(&decrypted), want);
    }
}

// ---------------------------------------------------------------------------------------------
// Real GLWE: noise bounds and interoperability with tfhe's own functions

#[test]
fn fresh_noise_is_tuniform_17_and_masks_are_fresh() {
    let key = key();
    let plaintext: Vec<u64> = (0..4096u64).map(|i| i << 40).collect();
    let a = key.encrypt(&plaintext).unwrap();
    let b = key.encrypt(&plaintext).unwrap();
    assert_ne!(a, b, "two encryptions of the same vector must differ");
    let bound = 1i64 << PARAMS.noise_bound_log2();
    let noises: Vec<i64> = key
        .decrypt(&a)
        .unwrap()
        .iter()
        .zip(&plaintext)
        .map(|(&d, &p)| noise(d, p))
        .collect();
    assert!(noises.iter().all(|e| e.abs() <= bound));
    // TUniform(17) has variance (2^35 + 1) / 6: check the sample is spread, not constant.
    let mean = noises.iter().sum::<i64>() as f64 / noises.len() as f64;
    let var = noises
        .iter()
        .map(|&e| (e as f64 - mean).powi(2))
        .sum::<f64>()
        / noises.len() as f64;
    let expected_var = (2f64.powi(35) + 1.0) / 6.0;
    assert!(mean.abs() < 5.0 * (expected_var / noises.len() as f64).sqrt());
    assert!(
        (var / expected_var - 1.0).abs() < 0.15,
        "variance ratio {}",
        var / expected_var
    );
}

#[test]
fn hefl_ciphertexts_decrypt_with_tfhe() {
    let key = key();
    for len in [1usize, 2048, 5000] {
        let plaintext: Vec<u64> = (0..len as u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) & !((1 << 30) - 1))
            .collect();
        let ct = key.encrypt(&plaintext).unwrap();
        let list = ct.as_glwe_list();
        let mut out = PlaintextList::new(
            0u64,
            PlaintextCount(list.glwe_ciphertext_count().0 * PARAMS.polynomial_size().0),
        );
        decrypt_glwe_ciphertext_list(&key.as_glwe_secret_key(), &list, &mut out);
        let bound = 1i64 << PARAMS.noise_bound_log2();
        let out = out.into_container();
        for (i, &p) in plaintext.iter().enumerate() {
            assert!(noise(out[i], p).abs() <= bound, "len {len}, index {i}");
        }
        // Padding coefficients encrypt zero.
        for &w in &out[len..] {
            assert!(noise(w, 0).abs() <= bound);
        }
    }
}

#[test]
fn regenerated_uploads_decrypt_with_tfhe() {
    let key = key();
    let widths = Widths::new(22, 3, DownloadForm::Seeds).unwrap();
    for len in [1usize, 2048, 5000] {
        let plaintext: Vec<u64> = (0..len as u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) & !((1 << 42) - 1))
            .collect();
        let upload = key.prepare(len).unwrap().seal(&plaintext, &widths).unwrap();
        // What a client receives: bytes; the mask regenerated from the seed.
        let expect = Expected {
            key_id: key.key_id(),
            plaintext_len: len,
            widths,
        };
        let received = CompactVector::parse_submission(&upload.to_bytes(), &expect).unwrap();
        let full = received.expand();
        let list = full.as_glwe_list();
        let mut out = PlaintextList::new(
            0u64,
            PlaintextCount(list.glwe_ciphertext_count().0 * PARAMS.polynomial_size().0),
        );
        decrypt_glwe_ciphertext_list(&key.as_glwe_secret_key(), &list, &mut out);
        // Noise plus the rounding of the body to 25 bits.
        let bound = (1i64 << PARAMS.noise_bound_log2()) + (1i64 << (63 - widths.body_bits()));
        let out = out.into_container();
        for (i, &p) in plaintext.iter().enumerate() {
            assert!(noise(out[i], p).abs() <= bound, "len {len}, index {i}");
        }
    }
}

#[test]
fn tfhe_ciphertexts_decrypt_with_hefl() {
    let key = key();
    let len = 5000;
    let plaintext: Vec<u64> = (0..len as u64).map(|i| (i % 97) << 45).collect();

    let mut seeder = new_seeder();
    let mut generator =
        EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), seeder.as_mut());
    let mut list = PARAMS.zeroed_glwe_list(PARAMS.ciphertexts_for(len));
    encrypt_glwe_ciphertext_list(
        &key.as_glwe_secret_key(),
        &mut list,
        &PARAMS.padded_plaintext_list(&plaintext),
        PARAMS.noise(),
        &mut generator,
    );
    let ct = EncryptedVector::from_glwe_list(&list, len, key.key_id()).unwrap();
    let decrypted = key.decrypt(&ct).unwrap();
    let bound = 1i64 << PARAMS.noise_bound_log2();
    for (i, (&d, &p)) in decrypted.iter().zip(&plaintext).enumerate() {
        assert!(noise(d, p).abs() <= bound, "index {i}");
    }
    // And a tfhe ciphertext sums with hefl ones.
    let ours = key.encrypt(&plaintext).unwrap();
    let sum = EncryptedVector::sum([&ct, &ours]).unwrap();
    for (&d, &p) in key.decrypt(&sum).unwrap().iter().zip(&plaintext) {
        assert!(noise(d, p.wrapping_mul(2)).abs() <= 2 * bound);
    }
}

#[test]
fn foreign_glwe_lists_of_the_wrong_shape_are_refused() {
    let list = GlweCiphertextList::new(
        0u64,
        GlweSize(2),
        PolynomialSize(1024),
        GlweCiphertextCount(1),
        CiphertextModulus::new_native(),
    );
    assert!(matches!(
        EncryptedVector::from_glwe_list(&list, 10, key().key_id()),
        Err(HeError::ForeignShape { .. })
    ));
}

#[test]
fn secret_key_is_binary_and_derived_deterministically() {
    let a = KeyFile::from_seed([3; 32]).secret_key().unwrap();
    let b = KeyFile::from_seed([3; 32]).secret_key().unwrap();
    let c = KeyFile::from_seed([4; 32]).secret_key().unwrap();
    let bits = a.as_glwe_secret_key().as_ref().to_vec();
    assert_eq!(bits.len(), PARAMS.polynomial_size().0);
    assert!(bits.iter().all(|&b| b <= 1));
    let weight = bits.iter().sum::<u64>();
    assert!((800..1250).contains(&weight), "hamming weight {weight}");
    assert_eq!(bits, b.as_glwe_secret_key().as_ref());
    assert_ne!(bits, c.as_glwe_secret_key().as_ref());
}

// ---------------------------------------------------------------------------------------------
// Refusals of operations

#[test]
fn operations_refuse_mismatched_inputs() {
    let key = key();
    let a = key.encrypt(&[1, 2, 3]).unwrap();
    let longer = key.encrypt(&[1, 2, 3, 4]).unwrap();
    let foreign = other_key().encrypt(&[1, 2, 3]).unwrap();

    let mut acc = a.clone();
    assert!(matches!(
        acc.add_assign(&longer),
        Err(HeError::LengthMismatch {
            expected: 3,
            found: 4
        })
    ));
    let err = acc.add_assign(&foreign).unwrap_err();
    assert!(matches!(err, HeError::KeyMismatch { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "ciphertext for key id {}, expected {}",
            other_key().key_id(),
            key.key_id()
        )
    );
    assert_eq!(
        acc, a,
        "a refused addition leaves the accumulator untouched"
    );
    assert!(EncryptedVector::sum([&a, &foreign]).is_err());
    assert!(EncryptedVector::sum([&a, &longer]).is_err());
    assert!(matches!(
        EncryptedVector::sum(Vec::<&EncryptedVector>::new()),
        Err(HeError::EmptySum)
    ));
    assert!(matches!(
        other_key().decrypt(&a),
        Err(HeError::KeyMismatch { .. })
    ));
    assert!(matches!(key.encrypt(&[]), Err(HeError::EmptyPlaintext)));
    assert!(matches!(
        key.encrypt(&vec![0; MAX_PLAINTEXT_LEN + 1]),
        Err(HeError::PlaintextTooLong { .. })
    ));
    assert!(matches!(key.prepare(0), Err(HeError::EmptyPlaintext)));

    // Compact vectors: another width, another key, a prepared encryption of another length.
    let narrow = Widths::new(22, 3, DownloadForm::Seeds).unwrap();
    let wide = Widths::new(27, 100, DownloadForm::Seeds).unwrap();
    let mut c = key.prepare(3).unwrap().seal(&[1, 2, 3], &narrow).unwrap();
    let before = c.clone();
    let other_width = key.prepare(3).unwrap().seal(&[1, 2, 3], &wide).unwrap();
    assert!(matches!(
        c.add_assign(&other_width),
        Err(HeError::WidthMismatch {
            expected: 25,
            found: 35
        })
    ));
    let other = other_key()
        .prepare(3)
        .unwrap()
        .seal(&[1, 2, 3], &narrow)
        .unwrap();
    assert!(matches!(
        c.add_assign(&other),
        Err(HeError::KeyMismatch { .. })
    ));
    assert_eq!(c, before);
    assert!(matches!(
        key.prepare(4).unwrap().seal(&[1, 2, 3], &narrow),
        Err(HeError::PreparedLength {
            prepared: 4,
            found: 3
        })
    ));
}

// ---------------------------------------------------------------------------------------------
// Wire format

const WIDTHS: (u32, u32) = (22, 3);

fn widths() -> Widths {
    Widths::new(WIDTHS.0, WIDTHS.1, DownloadForm::Seeds).unwrap()
}

fn expect(len: usize) -> Expected {
    Expected {
        key_id: key().key_id(),
        plaintext_len: len,
        widths: widths(),
    }
}

fn sample_message(len: usize) -> (CompactVector, Vec<u8>) {
    let ct = key()
        .prepare(len)
        .unwrap()
        .seal(&vec![7 << 42; len], &widths())
        .unwrap();
    let bytes = ct.to_bytes();
    (ct, bytes)
}

/// Offset of the first byte after the header (the seeds).
fn header_end(ct: &CompactVector, bytes: &[u8]) -> usize {
    let seeds = ct.seeds().map_or(0, |s| s.len() * 16);
    let bodies = ct.plaintext_len().div_ceil(64) * ct.body_bits() as usize * 8;
    bytes.len() - seeds - bodies
}

#[test]
fn wire_round_trip_and_size() {
    let (ct, bytes) = sample_message(101_770);
    assert_eq!(bytes.len(), ct.wire_len());
    // 25 bits per value (the last block of 64 zero-padded), a 16-byte seed and a header:
    // 0.78 of the f32 update.
    assert!(
        bytes.len() < 101_770 * 25 / 8 + 200 + 16 + 300,
        "{}",
        bytes.len()
    );
    let back = CompactVector::parse_submission(&bytes, &expect(101_770)).unwrap();
    assert_eq!(back, ct);
    assert!(bytes.len() <= CompactVector::max_wire_len(&expect(101_770)));
}

#[test]
fn wire_refuses_other_key_id() {
    let (_, bytes) = sample_message(10);
    let other = Expected {
        key_id: other_key().key_id(),
        ..expect(10)
    };
    let err = CompactVector::parse_submission(&bytes, &other).unwrap_err();
    assert!(matches!(err, WireError::KeyId { .. }));
    let text = err.to_string();
    assert!(text.contains(&key().key_id().to_string()), "{text}");
    assert!(text.contains(&other_key().key_id().to_string()), "{text}");
}

#[test]
fn wire_refuses_other_length() {
    let (_, bytes) = sample_message(10);
    for len in [1, 9, 11, 2048, 4096] {
        let err = CompactVector::parse_submission(&bytes, &expect(len)).unwrap_err();
        assert!(
            matches!(err, WireError::Length { expected, found: 10 } if expected == len),
            "{err}"
        );
    }
}

#[test]
fn wire_refuses_other_parameter_set() {
    let (_, mut bytes) = sample_message(10);
    let name = PARAMS.name().as_bytes();
    let at = bytes
        .windows(name.len())
        .position(|w| w == name)
        .expect("name in header");
    // Same length, another tfhe parameter set.
    bytes[at + 3] = b'7'; // V1_8_ -> V1_7_
    let err = CompactVector::parse_submission(&bytes, &expect(10)).unwrap_err();
    assert!(matches!(err, WireError::ParameterSet { .. }), "{err}");
    assert!(err.to_string().contains("V1_7_PARAM"), "{err}");
}

#[test]
fn wire_refuses_the_old_full_ciphertext_version() {
    let (_, mut bytes) = sample_message(10);
    bytes[8..10].copy_from_slice(&1u16.to_le_bytes());
    let err = CompactVector::parse_submission(&bytes, &expect(10)).unwrap_err();
    assert!(
        matches!(
            err,
            WireError::Version {
                expected: 3,
                found: 1
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "wire format version 1, this hefl reads version 3"
    );
}

#[test]
fn wire_refuses_too_many_summands_and_the_wrong_form() {
    let key = key();
    let three: Vec<CompactVector> = (0..3)
        .map(|_| key.prepare(10).unwrap().seal(&[1; 10], &widths()).unwrap())
        .collect();
    let sum = CompactVector::sum(&three).unwrap().to_bytes();
    assert!(matches!(
        CompactVector::parse_submission(&sum, &expect(10)),
        Err(WireError::Summands { max: 1, found: 3 })
    ));
    assert!(matches!(
        CompactVector::parse_aggregate(&sum, &expect(10), 2),
        Err(WireError::Summands { max: 2, found: 3 })
    ));
    assert!(CompactVector::parse_aggregate(&sum, &expect(10), 3).is_ok());
    // A seeds aggregate where the federation downloads switched sums, and back.
    let switched = Expected {
        widths: Widths::new(WIDTHS.0, WIDTHS.1, DownloadForm::Switched).unwrap(),
        ..expect(10)
    };
    assert!(matches!(
        CompactVector::parse_aggregate(&sum, &switched, 3),
        Err(WireError::Width {
            what: "switched mask",
            ..
        })
    ));
    let mask_bits = switched.widths.mask_bits().unwrap();
    let switched_sum = CompactVector::sum(&three)
        .unwrap()
        .into_switched(mask_bits)
        .to_bytes();
    assert!(CompactVector::parse_aggregate(&switched_sum, &switched, 3).is_ok());
    assert!(CompactVector::parse_aggregate(&switched_sum, &expect(10), 3).is_err());
}

/// Bytes of the header's context (run, round, party), its last field.
const CONTEXT_BYTES: usize = 32 + 8 + 4;

/// Offset of the three u32 fields before the context (body_bits, mask_bits, seed_count).
fn width_fields(ct: &CompactVector, bytes: &[u8]) -> usize {
    header_end(ct, bytes) - CONTEXT_BYTES - 12
}

#[test]
fn wire_refuses_tampered_widths_seeds_and_party_lists() {
    let key = key();
    let three: Vec<CompactVector> = (0..3)
        .map(|_| {
            key.prepare(100)
                .unwrap()
                .seal(&[1 << 42; 100], &widths())
                .unwrap()
        })
        .collect();
    let sum = CompactVector::sum(&three).unwrap();
    let bytes = sum.to_bytes();
    let at = width_fields(&sum, &bytes);
    let set = |offset: usize, value: u32| {
        let mut tampered = bytes.clone();
        tampered[at + offset..at + offset + 4].copy_from_slice(&value.to_le_bytes());
        CompactVector::parse_aggregate(&tampered, &expect(100), 3)
    };
    // Rounding width.
    assert!(matches!(
        set(0, 24),
        Err(WireError::Width {
            what: "bodies",
            expected: 25,
            found: 24
        })
    ));
    assert!(matches!(set(0, 64), Err(WireError::Width { .. })));
    assert!(matches!(
        set(4, 30),
        Err(WireError::Width {
            what: "switched mask",
            ..
        })
    ));
    // A party list (seed count) other than the summands.
    assert!(matches!(
        set(8, 2),
        Err(WireError::SeedCount {
            expected: 3,
            found: 2,
            ..
        })
    ));
    // A seed repeated or out of order.
    let seeds = header_end(&sum, &bytes);
    let mut repeated = bytes.clone();
    repeated.copy_within(seeds..seeds + 16, seeds + 16);
    assert!(matches!(
        CompactVector::parse_aggregate(&repeated, &expect(100), 3),
        Err(WireError::SeedOrder {
            index: 1,
            previous: 0
        })
    ));
    // Nonzero padding after the last body.
    let mut padded = bytes.clone();
    let last = padded.len() - 1;
    padded[last] |= 0x80;
    assert!(matches!(
        CompactVector::parse_aggregate(&padded, &expect(100), 3),
        Err(WireError::Padding { part: "bodies" })
    ));
    // A tampered seed parses (seeds are public randomness) but decrypts to garbage.
    let mut other_seed = bytes.clone();
    other_seed[seeds + 16] ^= 1;
    let garbage = CompactVector::parse_aggregate(&other_seed, &expect(100), 3).unwrap();
    let fp = FixedPoint::for_parties(3).unwrap();
    let words = key.decrypt(&garbage.expand()).unwrap();
    let right = fp.to_plaintext(3);
    assert!(
        words
            .iter()
            .filter(|&&w| fp.from_plaintext(w) == fp.from_plaintext(right))
            .count()
            < 5
    );
}

#[test]
fn wire_refuses_every_truncation() {
    let (ct, bytes) = sample_message(3000);
    let expected = expect(3000);
    let body = header_end(&ct, &bytes);
    // Every cut in the prefix and header, and a spread of cuts in the seed and bodies.
    let cuts = (0..body + 16).chain((body..bytes.len()).step_by(97));
    for cut in cuts {
        let err = CompactVector::parse_submission(&bytes[..cut], &expected).unwrap_err();
        assert!(
            matches!(err, WireError::Truncated { .. }),
            "cut at {cut}: {err}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        CompactVector::parse_submission(&longer, &expected),
        Err(WireError::TrailingBytes { found: 1, .. })
    ));
}

#[test]
fn wire_refuses_every_tampered_header_byte() {
    let (ct, bytes) = sample_message(3000);
    let expected = expect(3000);
    let context = header_end(&ct, &bytes) - CONTEXT_BYTES;
    for at in 0..header_end(&ct, &bytes) {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut tampered = bytes.clone();
            tampered[at] ^= flip;
            if at < context {
                assert!(
                    CompactVector::parse_submission(&tampered, &expected).is_err(),
                    "flipping {flip:#04x} at byte {at} went unnoticed"
                );
            } else {
                // The context parses whatever it names; the receiver compares it with the
                // context it expects, so an edited one names another party, round or run.
                assert_ne!(
                    CompactVector::context_of(&tampered).expect("parses"),
                    ct.context(),
                    "flipping {flip:#04x} at byte {at} went unnoticed"
                );
            }
        }
    }
    let mut magic = bytes.clone();
    magic[0] = b'X';
    assert!(matches!(
        CompactVector::parse_submission(&magic, &expected),
        Err(WireError::Magic { .. })
    ));
}

#[test]
fn wire_refuses_oversized_header_fields_without_allocating() {
    let (_, bytes) = sample_message(10);
    // The parameter-set string length is the u64 right after magic and version.
    let mut huge = bytes.clone();
    huge[10..18].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        CompactVector::parse_submission(&huge, &expect(10)),
        Err(WireError::Header(_))
    ));
    // A header claiming a huge vector, when the receiver expects it: refused before the body.
    let big = MAX_PLAINTEXT_LEN + 1;
    assert!(CompactVector::parse_submission(&bytes, &expect(big)).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn prop_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        prop_assert!(CompactVector::parse_submission(&bytes, &expect(10)).is_err());
        prop_assert!(CompactVector::parse_aggregate(&bytes, &expect(10), 3).is_err());
    }

    #[test]
    fn prop_random_tail_after_valid_prefix_never_panics(
        keep in 0usize..200,
        tail in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        static MESSAGE: OnceLock<Vec<u8>> = OnceLock::new();
        let message = MESSAGE.get_or_init(|| sample_message(10).1);
        let mut bytes = message[..keep.min(message.len())].to_vec();
        bytes.extend_from_slice(&tail);
        let _ = CompactVector::parse_submission(&bytes, &expect(10));
        let _ = CompactVector::parse_aggregate(&bytes, &expect(10), 3);
    }
}

// ---------------------------------------------------------------------------------------------
// Key files

#[test]
fn key_file_round_trip_with_private_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("hefl.key");
    let key = KeyFile::generate().unwrap();
    key.write_new(&path, false).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let loaded = KeyFile::load(&path).unwrap();
    assert_eq!(loaded.key_id(), key.key_id());
    // The derived keys agree: what one encrypts, the other decrypts.
    let ct = key.secret_key().unwrap().encrypt(&[5 << 40]).unwrap();
    let d = loaded.secret_key().unwrap().decrypt(&ct).unwrap();
    assert_eq!(d[0].wrapping_add(1 << 39) >> 40, 5);
    // The file names the parameter set and key id, and Debug never shows the seed.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(PARAMS.name()));
    assert!(text.contains(&key.key_id().to_string()));
    assert!(!format!("{key:?}").contains("seed\""));
    let seed_hex = serde_json::from_str::<serde_json::Value>(&text).unwrap()["seed"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!format!("{key:?}{loaded:?}").contains(&seed_hex));
    assert_eq!(KeyId::of_seed(&hex_seed(&seed_hex)), key.key_id());
}

fn hex_seed(text: &str) -> [u8; 32] {
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text, &mut seed).unwrap();
    seed
}

#[test]
fn key_file_refuses_overwrite_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hefl.key");
    let first = KeyFile::generate().unwrap();
    first.write_new(&path, false).unwrap();
    let second = KeyFile::generate().unwrap();
    let err = second.write_new(&path, false).unwrap_err();
    assert!(matches!(err, KeyError::AlreadyExists { .. }));
    assert!(err.to_string().contains("--force"));
    assert_eq!(KeyFile::load(&path).unwrap().key_id(), first.key_id());
    second.write_new(&path, true).unwrap();
    assert_eq!(KeyFile::load(&path).unwrap().key_id(), second.key_id());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // No temporary file left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn key_file_refuses_group_or_world_access() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hefl.key");
    KeyFile::generate()
        .unwrap()
        .write_new(&path, false)
        .unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660, 0o610] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = KeyFile::load(&path).unwrap_err();
        assert!(
            matches!(err, KeyError::InsecurePermissions { mode: m, .. } if m == mode),
            "{mode:o}: {err}"
        );
        let text = err.to_string();
        assert!(text.contains("chmod 600"), "{text}");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    assert!(KeyFile::load(&path).is_ok());
}

/// Writes `contents` as a private key file and loads it.
fn load_text(contents: &str) -> Result<KeyFile, KeyError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hefl.key");
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    KeyFile::load(&path)
}

fn valid_key_json() -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hefl.key");
    KeyFile::from_seed([8; 32]).write_new(&path, false).unwrap();
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn key_file_refuses_other_version_parameter_set_and_corruption() {
    let valid = valid_key_json();
    assert!(load_text(&valid.to_string()).is_ok());

    let mut v = valid.clone();
    v["version"] = 2.into();
    assert!(matches!(
        load_text(&v.to_string()),
        Err(KeyError::Version {
            expected: 1,
            found: 2,
            ..
        })
    ));

    let mut v = valid.clone();
    v["parameter_set"] = "V1_8_PARAM_MESSAGE_3_CARRY_3_KS_PBS_TUNIFORM_2M128".into();
    let err = load_text(&v.to_string()).unwrap_err();
    assert!(matches!(err, KeyError::ParameterSet { .. }), "{err}");

    let mut v = valid.clone();
    v["seed"] = hex::encode([9u8; 32]).into();
    assert!(matches!(
        load_text(&v.to_string()),
        Err(KeyError::KeyIdMismatch { .. })
    ));

    let mut v = valid.clone();
    v["seed"] = "abcd".into();
    assert!(matches!(
        load_text(&v.to_string()),
        Err(KeyError::Malformed { .. })
    ));

    let mut v = valid.clone();
    v["format"] = "something-else".into();
    assert!(matches!(
        load_text(&v.to_string()),
        Err(KeyError::Malformed { .. })
    ));

    assert!(matches!(
        load_text("not json"),
        Err(KeyError::Malformed { .. })
    ));
    assert!(matches!(
        load_text(&" ".repeat(5000)),
        Err(KeyError::TooLarge { .. })
    ));
    assert!(matches!(
        KeyFile::load(std::path::Path::new("/nonexistent/hefl.key")),
        Err(KeyError::Io { .. })
    ));
}

#[test]
fn key_id_parses_and_refuses_garbage() {
    let id = KeyFile::from_seed([1; 32]).key_id();
    assert_eq!(id.to_string().parse::<KeyId>().unwrap(), id);
    assert!("xyz".parse::<KeyId>().is_err());
    assert!(id.to_string()[..62].parse::<KeyId>().is_err());
}

// ---------------------------------------------------------------------------------------------
// The envelope: a tampered aggregate is refused, never applied

#[test]
fn envelope_refuses_aggregates_with_a_tampered_seed_or_party_count() {
    use hefl::fl::{Encoding, Envelope, EnvelopeCost, EnvelopeError, PartyId, Weighting};
    let key = std::sync::Arc::new(KeyFile::from_seed([0xa7; 32]).secret_key().unwrap());
    let encoding = Encoding::new(8.0, 16, 3, Weighting::Fraction { nominal: 1 }).unwrap();
    let widths = Widths::new(encoding.total_bits(), 3, DownloadForm::Seeds).unwrap();
    let envelope = Envelope::he(encoding, key, 500, widths);
    let three: Vec<PartyId> = (0..3).map(PartyId).collect();
    let expect = envelope.expected_he().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut cost = EnvelopeCost::default();
    let update: Vec<f32> = (0..500).map(|i| (i as f32 - 250.0) / 1000.0).collect();
    let run = [0x5a; 32];
    let uploads: Vec<Vec<u8>> = (0..3)
        .map(|party| {
            let context = Context {
                run,
                round: 7,
                party,
            };
            envelope
                .seal(&update, 1, context, None, &mut rng, &mut cost)
                .unwrap()
                .bytes
        })
        .collect();
    let mut sum = <CompactVector as Summable>::parse_submission(&uploads[0], &expect).unwrap();
    for upload in &uploads[1..] {
        sum.add_submission(upload, &expect).unwrap();
    }
    sum.set_context(Context::sum(run, 7));
    let bytes = sum.to_bytes();
    let context = Context::sum(run, 7);
    let mean = envelope.open(&bytes, &three, context, &mut cost).unwrap();
    assert!(mean.iter().zip(&update).all(|(m, u)| (m - u).abs() < 1e-4));

    // The sum of round 7 opened as round 8's, or as another run's: refused before decryption.
    for other in [Context::sum(run, 8), Context::sum([0xa5; 32], 7)] {
        let err = envelope.open(&bytes, &three, other, &mut cost).unwrap_err();
        assert!(
            matches!(err, EnvelopeError::Context { .. }),
            "{other}: {err}"
        );
    }

    // One bit of one seed: the masks no longer cancel; the sum decodes to garbage, which
    // the decoder's range checks refuse (the round is skipped, not applied).
    let seeds_at = bytes.len() - 3 * 16 - 500usize.div_ceil(64) * widths.body_bits() as usize * 8;
    for seed in 0..3 {
        let mut tampered = bytes.clone();
        tampered[seeds_at + 16 * seed + 5] ^= 0x10;
        let err = envelope
            .open(&tampered, &three, context, &mut cost)
            .unwrap_err();
        assert!(
            matches!(err, EnvelopeError::Decode(_)),
            "seed {seed}: {err}"
        );
    }
    // A sum of three opened as a sum of two: refused before decryption; as a sum of four,
    // more than the envelope's parties, refused before parsing.
    let err = envelope
        .open(&bytes, &three[..2], context, &mut cost)
        .unwrap_err();
    assert!(matches!(err, EnvelopeError::Payload(_)), "2: {err}");
    let four: Vec<PartyId> = (0..4).map(PartyId).collect();
    let err = envelope
        .open(&bytes, &four, context, &mut cost)
        .unwrap_err();
    assert!(matches!(err, EnvelopeError::Parties { .. }), "4: {err}");
}
