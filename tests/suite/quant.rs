//! Tests of hefl::quant: encoding bounds, unbiased rounding, exact sums, refusals.

use hefl::quant::{FixedPoint, FixedPointParams, QuantError};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn sum_words(vectors: &[Vec<u64>]) -> Vec<u64> {
    let mut sum = vec![0u64; vectors[0].len()];
    for v in vectors {
        for (s, w) in sum.iter_mut().zip(v) {
            *s = s.wrapping_add(*w);
        }
    }
    sum
}

#[test]
fn overflow_configuration_is_refused_with_numbers_and_a_working_suggestion() {
    let params = FixedPointParams {
        clip: 8.0,
        frac_bits: 40,
        total_bits: 39,
        max_parties: 100,
    };
    let err = FixedPoint::new(params).unwrap_err();
    let QuantError::Overflow {
        worst,
        limit,
        suggestion,
        ..
    } = &err
    else {
        panic!("expected an overflow error, got {err}");
    };
    assert_eq!(*worst, 100 * 8 * (1u128 << 40));
    assert_eq!(*limit, 1u128 << 38);
    let text = err.to_string();
    assert!(text.contains(&worst.to_string()), "{text}");
    assert!(text.contains("274877906944"), "{text}");
    let suggestion = suggestion.expect("a suggestion");
    assert!(text.contains(&suggestion.to_string()), "{text}");
    assert!(FixedPoint::new(suggestion).is_ok());
    assert_eq!(suggestion.clip, 8.0);
    assert_eq!(suggestion.max_parties, 100);
}

#[test]
fn hopeless_configuration_says_so() {
    let err = FixedPoint::new(FixedPointParams {
        clip: 1e30,
        frac_bits: 10,
        total_bits: 39,
        max_parties: 100,
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            QuantError::Overflow {
                suggestion: None,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("lower clip or max_parties"));
}

#[test]
fn invalid_parameters_are_refused() {
    let d = FixedPointParams::DEFAULT;
    for bad in [
        FixedPointParams { clip: 0.0, ..d },
        FixedPointParams { clip: -1.0, ..d },
        FixedPointParams {
            clip: f32::NAN,
            ..d
        },
        FixedPointParams {
            clip: f32::INFINITY,
            ..d
        },
        FixedPointParams {
            max_parties: 0,
            ..d
        },
        FixedPointParams { frac_bits: 63, ..d },
        FixedPointParams {
            total_bits: 64,
            ..d
        },
        FixedPointParams { total_bits: 1, ..d },
    ] {
        assert!(
            matches!(FixedPoint::new(bad), Err(QuantError::Invalid { .. })),
            "{bad}"
        );
    }
}

#[test]
fn non_finite_values_parties_and_divisors_are_refused() {
    let fp = FixedPoint::default();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        assert!(matches!(
            fp.encode(&[0.0, bad], &mut rng),
            Err(QuantError::NonFinite { index: 1, .. })
        ));
    }
    let sum = [0u64; 4];
    assert!(matches!(
        fp.decode_sum(&sum, 0),
        Err(QuantError::Parties { .. })
    ));
    assert!(matches!(
        fp.decode_sum(&sum, 101),
        Err(QuantError::Parties {
            parties: 101,
            max_parties: 100
        })
    ));
    for divisor in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            fp.decode_mean(&sum, 3, divisor),
            Err(QuantError::Divisor(_))
        ));
    }
}

#[test]
fn stochastic_rounding_is_unbiased() {
    // f = 2: x = 0.3 scales to 1.2, so z is 1 with probability 0.8 and 2 with 0.2.
    let fp = FixedPoint::new(FixedPointParams {
        clip: 1.0,
        frac_bits: 2,
        total_bits: 20,
        max_parties: 1,
    })
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let n = 200_000;
    let z = fp.quantize(&vec![0.3; n], &mut rng).unwrap();
    assert!(z.iter().all(|&z| z == 1 || z == 2));
    let mean = z.iter().sum::<i64>() as f64 / n as f64;
    // Standard deviation of the mean: sqrt(0.16 / n) ~ 0.0009.
    assert!((mean - 1.2).abs() < 0.005, "mean {mean}");
    // Negative values too: -0.3 scales to -1.2, floor -2.
    let z = fp.quantize(&vec![-0.3; n], &mut rng).unwrap();
    let mean = z.iter().sum::<i64>() as f64 / n as f64;
    assert!((mean + 1.2).abs() < 0.005, "mean {mean}");
}

#[test]
fn decode_averages() {
    let fp = FixedPoint::default();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let parts: Vec<Vec<u64>> = [[1.0f32, -2.0], [2.0, -4.0], [3.0, 0.0]]
        .iter()
        .map(|v| fp.encode(v, &mut rng).unwrap())
        .collect();
    let sum = sum_words(&parts);
    assert_eq!(fp.decode_sum(&sum, 3).unwrap(), [6.0, -6.0]);
    assert_eq!(fp.decode_mean(&sum, 3, 3.0).unwrap(), [2.0, -2.0]);
    assert_eq!(fp.decode_mean(&sum, 3, 12.0).unwrap(), [0.5, -0.5]);
}

proptest! {
    #[test]
    fn prop_encode_decode_within_one_step(
        values in proptest::collection::vec(-20.0f32..20.0, 1..200),
        seed in any::<u64>(),
    ) {
        let fp = FixedPoint::default();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let words = fp.encode(&values, &mut rng).unwrap();
        let decoded = fp.decode_sum(&words, 1).unwrap();
        let step = 1.0 / (1u64 << fp.params().frac_bits) as f64;
        for (x, y) in values.iter().zip(&decoded) {
            let clipped = f64::from(x.clamp(-8.0, 8.0));
            // One quantization step, plus the f32 rounding of the decoded value.
            prop_assert!((f64::from(*y) - clipped).abs() <= step + 1e-6, "{x} -> {y}");
        }
    }

    #[test]
    fn prop_plaintext_round_trip_survives_noise(
        z in -(1i64 << 26)..(1i64 << 26),
        noise in -(1i64 << 36) + 1..(1i64 << 36),
    ) {
        let fp = FixedPoint::default(); // t = 27: delta/2 = 2^36
        let word = fp.to_plaintext(z).wrapping_add(noise as u64);
        prop_assert_eq!(fp.from_plaintext(word), z);
    }

    #[test]
    fn prop_plaintext_sum_of_parties_decodes_exactly(
        parties in 1usize..=100,
        len in 1usize..50,
        seed in any::<u64>(),
    ) {
        let fp = FixedPoint::default();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut expected = vec![0i64; len];
        let mut words = Vec::new();
        for p in 0..parties {
            // Alternate full-scale and random values to hit the clip edges.
            let values: Vec<f32> = (0..len)
                .map(|i| match (p + i) % 3 {
                    0 => 8.0,
                    1 => -8.0,
                    _ => ((seed >> (i % 60)) & 0xff) as f32 / 16.0 - 8.0,
                })
                .collect();
            let z = fp.quantize(&values, &mut rng).unwrap();
            expected.iter_mut().zip(&z).for_each(|(e, z)| *e += z);
            words.push(z.iter().map(|&z| fp.to_plaintext(z)).collect::<Vec<u64>>());
        }
        let sum = sum_words(&words);
        prop_assert_eq!(fp.decode_integers(&sum), expected);
    }

    #[test]
    fn prop_accepted_configurations_satisfy_both_bounds(
        clip in 0.001f32..1000.0,
        frac_bits in 0u32..=62,
        total_bits in 2u32..=63,
        max_parties in 1u32..100_000,
    ) {
        let params = FixedPointParams { clip, frac_bits, total_bits, max_parties };
        match FixedPoint::new(params) {
            Ok(fp) => {
                let p = u128::from(max_parties);
                prop_assert!((p * fp.max_magnitude() as u128) < (1u128 << (total_bits - 1)));
            }
            Err(QuantError::Overflow { suggestion, .. }) => {
                if let Some(s) = suggestion {
                    prop_assert!(FixedPoint::new(s).is_ok(), "{}", s);
                }
            }
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }
}

/// Stochastic rounding from the AES keystream is unbiased, with the variance p(1 - p) of a
/// Bernoulli choice between the two neighbouring steps (p the fractional part).
#[test]
fn keystream_rounding_is_unbiased_with_bernoulli_variance() {
    let fp = FixedPoint::default();
    let scale = (1u64 << fp.params().frac_bits) as f64;
    let n = 200_000;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for fraction in [0.0, 0.3, 0.5, 0.9, 1.0 / 1024.0] {
        let x = ((5.0 + fraction) / scale) as f32;
        let exact = f64::from(x) * scale;
        let z = fp.quantize(&vec![x; n], &mut rng).unwrap();
        let errors: Vec<f64> = z.iter().map(|&z| z as f64 - exact).collect();
        let mean = errors.iter().sum::<f64>() / n as f64;
        let var = errors.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / n as f64;
        let p = exact - exact.floor();
        let want_var = p * (1.0 - p);
        // Five standard errors of the mean; the variance within 3% (or exact when p = 0).
        assert!(
            mean.abs() <= 5.0 * (want_var / n as f64).sqrt() + 1e-12,
            "fraction {fraction}: mean error {mean}"
        );
        assert!(
            (var - want_var).abs() <= 0.03 * want_var + 1e-12,
            "fraction {fraction}: variance {var}, expected {want_var}"
        );
        // Only the two neighbours occur.
        assert!(
            z.iter()
                .all(|&z| z == exact.floor() as i64 || z == exact.ceil() as i64)
        );
    }
    // Random values: the mean error over many values is zero, whatever their fractions.
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(-0.01..0.01)).collect();
    let z = fp.quantize(&values, &mut rng).unwrap();
    let (sum, var) = values.iter().zip(&z).fold((0.0, 0.0), |(s, v), (&x, &z)| {
        let exact = f64::from(x) * scale;
        let p = exact - exact.floor();
        (s + (z as f64 - exact), v + p * (1.0 - p))
    });
    assert!(
        sum.abs() <= 5.0 * var.sqrt(),
        "summed error {sum}, sd {}",
        var.sqrt()
    );
    // Different keys (draws from the generator) round differently; the same key the same.
    let twice = |seed| {
        fp.quantize(&values, &mut ChaCha8Rng::seed_from_u64(seed))
            .unwrap()
    };
    assert_eq!(twice(1), twice(1));
    assert_ne!(twice(1), twice(2));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The vectorized decoding equals `from_plaintext(w) as f64 * 1 / (2^f · divisor)`, and
    /// `first_beyond` equals the plain search, for any words (noise included) and widths.
    #[test]
    fn prop_decode_and_range_check_match_the_scalar_definitions(
        frac_bits in 0u32..46,
        divisor in 0.5f64..5.0,
        bound_bits in 0u32..50,
        seed in any::<u64>(),
    ) {
        let fp = FixedPoint::sized(1.0, frac_bits, 3).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let t = fp.params().total_bits;
        // Uniform words, and words near small integers (noise below Δ/2).
        let words: Vec<u64> = (0..3000)
            .map(|i| match i % 2 {
                0 => rng.random::<u64>(),
                _ => fp
                    .to_plaintext(rng.random_range(-40..40))
                    .wrapping_add(rng.random::<u64>() >> (t + 1)),
            })
            .collect();
        let factor = 1.0 / (f64::from(frac_bits).exp2() * divisor);
        let got = fp.decode_mean(&words, 3, divisor).unwrap();
        for (w, g) in words.iter().zip(&got) {
            let want = (fp.from_plaintext(*w) as f64 * factor) as f32;
            prop_assert_eq!(want.to_bits(), g.to_bits(), "word {:#x}", w);
        }
        let bound = rng.random::<u64>() >> (64 - bound_bits).min(63);
        let want = words.iter().position(|w| fp.from_plaintext(*w).unsigned_abs() > bound);
        prop_assert_eq!(fp.first_beyond(&words, bound), want);
        prop_assert_eq!(fp.first_beyond(&words[1..][..0], bound), None);
    }
}
