//! `strict` secure aggregation (`hefl::secagg`): blinds cancel exactly in the sum, one
//! party's ciphertext decrypts to uniform noise (and, as negative controls, does not without
//! blinds, and does not resist the coalition of all its partners), every blind key is used
//! once, canaries refuse what is not the round's sum, and files and rosters refuse what they
//! must, naming expected and found values.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::OnceLock;

use hefl::fl::{Encoding, PartyId, Published, Round, Weighting};
use hefl::he::keys::{KeyFile, SecretKey};
use hefl::quant::FixedPoint;
use hefl::secagg::{
    AggregateRefused, Attempt, BlindKey, Blinder, CANARY_SLOTS, Fingerprint, Identity,
    IdentityError, Mode, PartyPublicKey, PartySet, Policy, Roster, RosterError, SecAggError,
};
use hefl::secret_file::SecretFileError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The run's fingerprint.
const RUN: [u8; 32] = [0x5a; 32];

fn key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| KeyFile::from_seed([11; 32]).secret_key().expect("key"))
}

/// `parties` identities from fixed seeds, their roster (all parties in every sum) and one
/// blinder each.
fn federation(parties: u32) -> (Roster, Vec<Blinder>) {
    let ids: Vec<Identity> = (0..parties)
        .map(|i| {
            let mut bytes = [0u8; 32];
            bytes[4..8].copy_from_slice(&i.to_le_bytes());
            bytes[31] = 0x77;
            Identity::from_secret_bytes(bytes)
        })
        .collect();
    let policy = Policy {
        mode: Mode::Strict,
        parties,
        min_parties: 2,
    };
    let roster = Roster::new(
        key().key_id(),
        ids.iter().map(Identity::public).collect(),
        policy,
    )
    .expect("roster");
    let blinders = ids
        .iter()
        .enumerate()
        .map(|(i, id)| Blinder::new(id, PartyId(i as u32), &roster, RUN).expect("blinder"))
        .collect();
    (roster, blinders)
}

fn add_into(sum: &mut [u64], words: &[u64]) {
    assert_eq!(sum.len(), words.len());
    for (s, w) in sum.iter_mut().zip(words) {
        *s = s.wrapping_add(*w);
    }
}

/// Values over the whole range: both clip edges, beyond them, zero, and random values.
fn extreme_values(len: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let mut values: Vec<f32> = (0..len).map(|_| rng.random_range(-8.0f32..8.0)).collect();
    values[..6].copy_from_slice(&[8.0, -8.0, 100.0, -100.0, 0.0, 7.999]);
    values
}

#[test]
fn blinds_cancel_exactly_in_the_sum() {
    let len = 3000;
    for parties in [2u32, 3, 10] {
        let (_, mut blinders) = federation(parties);
        let encoding =
            Encoding::new(8.0, 16, parties, Weighting::Fraction { nominal: 64 }).expect("encoding");
        let fp = *encoding.fixed_point();
        let set = PartySet::new((0..parties).map(PartyId));
        let mut rng = ChaCha8Rng::seed_from_u64(u64::from(parties));
        let mut plain = vec![0u64; len + 1];
        let mut blinded = vec![0u64; len + 1 + CANARY_SLOTS];
        for (i, blinder) in blinders.iter_mut().enumerate() {
            let samples = if i == 0 { 64 } else { rng.random_range(1..=64) };
            let words = encoding
                .encode(&extreme_values(len, &mut rng), samples, &mut rng)
                .expect("encode")
                .words;
            add_into(&mut plain, &words);
            let sealed = blinder
                .seal(words.clone(), &fp, key(), Round(4), Attempt(0), &set)
                .expect("seal");
            assert_eq!(sealed.len(), len + 1 + CANARY_SLOTS);
            assert_ne!(
                sealed[..len + 1],
                words[..],
                "P = {parties}: no blind applied"
            );
            add_into(&mut blinded, &sealed);
        }
        // Bit for bit: the blinds cancel in the values, the weight and the canaries.
        assert_eq!(
            blinded[..len + 1],
            plain[..],
            "P = {parties}: blinds left in the sum"
        );
        assert_eq!(fp.from_plaintext(blinded[len + 1]), i64::from(parties));
        let opened = blinders[0]
            .open(&blinded, &fp, key(), Round(4), Some(&set), &set)
            .expect("the round's sum is accepted");
        assert_eq!(
            encoding.decode(opened, parties).expect("decode"),
            encoding.decode(&plain, parties).expect("decode")
        );
    }
}

#[test]
fn blinded_ciphertexts_sum_to_the_unblinded_sum_under_he() {
    let (len, parties) = (5000, 3u32);
    let (_, mut blinders) = federation(parties);
    let encoding = Encoding::new(8.0, 16, parties, Weighting::Fraction { nominal: 64 }).unwrap();
    let fp = *encoding.fixed_point();
    let set = PartySet::new((0..parties).map(PartyId));
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut plain = vec![0u64; len + 1];
    let mut sum: Option<hefl::he::EncryptedVector> = None;
    for blinder in &mut blinders {
        let words = encoding
            .encode(&extreme_values(len, &mut rng), 64, &mut rng)
            .unwrap()
            .words;
        add_into(&mut plain, &words);
        let sealed = blinder
            .seal(words, &fp, key(), Round(0), Attempt(0), &set)
            .unwrap();
        let ct = key().encrypt(&sealed).unwrap();
        match sum.as_mut() {
            None => sum = Some(ct),
            Some(sum) => sum.add_assign(&ct).unwrap(),
        }
    }
    let decrypted = key().decrypt(&sum.unwrap()).unwrap();
    let opened = blinders[1]
        .open(&decrypted, &fp, key(), Round(0), Some(&set), &set)
        .expect("accepted");
    assert_eq!(fp.decode_integers(opened), fp.decode_integers(&plain));
}

/// The upper tail Q(a, x) of the regularized incomplete gamma function (Numerical Recipes'
/// series and continued fraction), for χ² p-values: p = Q(df / 2, χ² / 2).
fn gamma_q(a: f64, x: f64) -> f64 {
    let ln_prefix = -x + a * x.ln() - libm::lgamma(a);
    if x < a + 1.0 {
        let (mut sum, mut term, mut n) = (1.0 / a, 1.0 / a, a);
        for _ in 0..10_000 {
            n += 1.0;
            term *= x / n;
            sum += term;
            if term.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        1.0 - sum * ln_prefix.exp()
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-15 {
                break;
            }
        }
        ln_prefix.exp() * h
    }
}

/// The χ² p-value of 256 buckets (uniform expected).
fn chi_square_p(buckets: &[u64; 256]) -> (f64, f64) {
    let n: u64 = buckets.iter().sum();
    let expected = n as f64 / 256.0;
    let chi2: f64 = buckets
        .iter()
        .map(|&o| (o as f64 - expected).powi(2) / expected)
        .sum();
    (chi2, gamma_q(255.0 / 2.0, chi2 / 2.0))
}

/// χ² p-values of the top and of the bottom 8 of the t bits of each decoded word.
fn uniformity(fp: &FixedPoint, words: &[u64]) -> (f64, f64) {
    let t = fp.params().total_bits;
    let (mut top, mut bottom) = ([0u64; 256], [0u64; 256]);
    for &w in words {
        let v = (fp.from_plaintext(w) as u64) & ((1 << t) - 1);
        top[(v >> (t - 8)) as usize] += 1;
        bottom[(v & 0xff) as usize] += 1;
    }
    (chi_square_p(&top).1, chi_square_p(&bottom).1)
}

#[test]
fn chi_square_p_values_are_right() {
    // Known values: P(χ²_255 > 255) ≈ 0.49, P(χ²_255 > 330) ≈ 0.0011, tiny far out.
    assert!((gamma_q(127.5, 127.5) - 0.488).abs() < 0.01);
    assert!((gamma_q(127.5, 165.0) - 0.0011).abs() < 0.0003);
    assert!(gamma_q(127.5, 1000.0) < 1e-100);
    assert!((gamma_q(127.5, 50.0) - 1.0).abs() < 1e-9);
}

#[test]
fn lone_ciphertext_is_uniform_unless_every_partner_colludes() {
    let (len, parties, victim) = (102_400, 10u32, 4usize);
    let (_, mut blinders) = federation(parties);
    let encoding = Encoding::new(8.0, 16, parties, Weighting::Fraction { nominal: 64 }).unwrap();
    let fp = *encoding.fixed_point();
    let t = fp.params().total_bits;
    let set = PartySet::new((0..parties).map(PartyId));
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // A realistic update: small values, far from uniform.
    let values: Vec<f32> = (0..len).map(|_| rng.random_range(-0.05f32..0.05)).collect();
    let words = encoding.encode(&values, 64, &mut rng).unwrap().words;
    let sealed = blinders[victim]
        .seal(words.clone(), &fp, key(), Round(7), Attempt(0), &set)
        .unwrap();
    // What any key holder sees of the victim's lone ciphertext.
    let decrypted = key().decrypt(&key().encrypt(&sealed).unwrap()).unwrap();
    let (top, bottom) = uniformity(&fp, &decrypted);
    eprintln!("blinded lone ciphertext: p = {top:.3e} (top 8 bits), {bottom:.3e} (bottom 8)");
    assert!(
        top > 1e-4 && bottom > 1e-4,
        "blinded: p = {top:e} (top 8 bits), {bottom:e} (bottom)"
    );

    // Negative control: without blinds, the same update is nowhere near uniform.
    let mut unblinded = words.clone();
    unblinded.extend(hefl::secagg::canary_words(
        &fp,
        hefl::secagg::CanaryTag::derive(key(), RUN, Round(7), &fp),
    ));
    let plain = key().decrypt(&key().encrypt(&unblinded).unwrap()).unwrap();
    let (top, bottom) = uniformity(&fp, &plain);
    eprintln!("unblinded (negative control): p = {top:.3e} (top 8 bits), {bottom:.3e} (bottom 8)");
    assert!(top < 1e-12, "unblinded: p = {top:e} (top 8 bits)");

    // All but one partner collude: they strip the blinds they share with the victim.
    let partners: Vec<usize> = (0..parties as usize).filter(|&p| p != victim).collect();
    let strip = |colluders: &[usize]| {
        let mut words = decrypted.clone();
        for &c in colluders {
            let key = blinders[c]
                .pair_key(PartyId(victim as u32), Round(7), Attempt(0), &set)
                .unwrap();
            // The victim added the blind of a larger partner, subtracted a smaller one's.
            if victim < c {
                key.subtract_from(&mut words, t);
            } else {
                key.add_to(&mut words, t);
            }
        }
        words
    };
    for honest in [partners[0], partners[partners.len() - 1]] {
        let colluders: Vec<usize> = partners.iter().copied().filter(|&p| p != honest).collect();
        let (top, bottom) = uniformity(&fp, &strip(&colluders));
        eprintln!("all partners but {honest} colluding: p = {top:.3e}, {bottom:.3e}");
        assert!(
            top > 1e-4 && bottom > 1e-4,
            "all partners but {honest} colluding: p = {top:e}, {bottom:e}"
        );
    }
    // The coalition of every partner recovers the input: the threshold is all partners.
    let recovered = strip(&partners);
    assert_eq!(
        fp.decode_integers(&recovered[..len + 1]),
        fp.decode_integers(&words),
        "all partners together recover the update"
    );
}

#[test]
fn every_key_and_counter_is_used_once_per_round() {
    let parties = 5u32;
    let (_, blinders) = federation(parties);
    let set = PartySet::new((0..parties).map(PartyId));
    let (len, t) = (101_773, 22);
    let blocks = BlindKey::blocks_used(len, t);
    assert_eq!(
        blocks,
        (len as u128 * 3).div_ceil(128) * 8,
        "3 bytes per word at t <= 24"
    );
    let mut used = HashSet::new();
    let mut keys = HashSet::new();
    for (i, blinder) in blinders.iter().enumerate() {
        for (partner, key) in blinder.round_keys(Round(3), Attempt(0), &set).unwrap() {
            // Both ends of a pair derive the same key.
            let other = blinders[partner.0 as usize]
                .pair_key(PartyId(i as u32), Round(3), Attempt(0), &set)
                .unwrap();
            assert_eq!(key.digest(), other.digest());
            if (i as u32) < partner.0 {
                keys.insert(key.digest());
                for counter in 0..blocks {
                    assert!(
                        used.insert((key.digest(), counter)),
                        "({i}, {partner}) counter {counter} reused"
                    );
                }
            }
        }
    }
    assert_eq!(keys.len(), 10, "5 parties: 10 distinct pair keys");
    assert_eq!(used.len() as u128, 10 * blocks);

    // Another attempt, another round, another set, another run: other keys.
    let digest = |b: &Blinder, r: u64, a: u32, set: &PartySet| {
        b.pair_key(PartyId(1), Round(r), Attempt(a), set)
            .unwrap()
            .digest()
    };
    let base = digest(&blinders[0], 3, 0, &set);
    let smaller = PartySet::new([PartyId(0), PartyId(1), PartyId(2)]);
    for other in [
        digest(&blinders[0], 3, 1, &set),
        digest(&blinders[0], 4, 0, &set),
        digest(&blinders[0], 3, 0, &smaller),
    ] {
        assert_ne!(base, other);
    }
    let (roster, _) = federation(parties);
    let ids_again = Identity::from_secret_bytes({
        let mut bytes = [0u8; 32];
        bytes[31] = 0x77;
        bytes
    });
    let other_run = Blinder::new(&ids_again, PartyId(0), &roster, [1; 32]).unwrap();
    assert_ne!(base, digest(&other_run, 3, 0, &set));
}

#[test]
fn a_round_is_sealed_once() {
    let (_, mut blinders) = federation(3);
    let fp = FixedPoint::for_parties(3).unwrap();
    let set = PartySet::new((0..3).map(PartyId));
    let b = &mut blinders[0];
    b.seal(vec![0; 8], &fp, key(), Round(2), Attempt(0), &set)
        .unwrap();
    for (round, attempt) in [(2, 0), (1, 5)] {
        let err = b
            .seal(vec![1; 8], &fp, key(), Round(round), Attempt(attempt), &set)
            .unwrap_err();
        assert!(
            matches!(err, SecAggError::RoundAlreadySealed { .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains(&format!("round {round} attempt {attempt}")),
            "{err}"
        );
        assert!(err.to_string().contains("round 2 attempt 0"), "{err}");
    }
    b.seal(vec![0; 8], &fp, key(), Round(2), Attempt(1), &set)
        .unwrap();
    // After a restart, the checkpoint's record keeps the rule.
    let (_, mut restarted) = federation(3);
    restarted[0].restore_last_sealed(Some((Round(2), Attempt(1))));
    assert!(matches!(
        restarted[0].seal(vec![0; 8], &fp, key(), Round(2), Attempt(1), &set),
        Err(SecAggError::RoundAlreadySealed { .. })
    ));
    restarted[0]
        .seal(vec![0; 8], &fp, key(), Round(3), Attempt(0), &set)
        .unwrap();
    // A set without this party, or below the roster's minimum, is refused.
    let err = restarted[0]
        .seal(
            vec![0; 8],
            &fp,
            key(),
            Round(4),
            Attempt(0),
            &PartySet::new([PartyId(1), PartyId(2)]),
        )
        .unwrap_err();
    assert!(matches!(err, SecAggError::NotInSet { .. }), "{err}");
    let err = restarted[0]
        .seal(
            vec![0; 8],
            &fp,
            key(),
            Round(4),
            Attempt(0),
            &PartySet::new([PartyId(0)]),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            SecAggError::BelowMinParties {
                found: 1,
                min: 2,
                ..
            }
        ),
        "{err}"
    );
}

/// Round `round`'s three uploads (blinded, encrypted) and the plain sum.
fn uploads(
    blinders: &mut [Blinder],
    fp: &FixedPoint,
    round: u64,
) -> Vec<hefl::he::EncryptedVector> {
    let set = PartySet::new((0..blinders.len() as u32).map(PartyId));
    blinders
        .iter_mut()
        .enumerate()
        .map(|(i, b)| {
            let words = vec![fp.to_plaintext(i as i64 + 1); 64];
            let sealed = b
                .seal(words, fp, key(), Round(round), Attempt(0), &set)
                .unwrap();
            key().encrypt(&sealed).unwrap()
        })
        .collect()
}

fn sum_of(cts: &[&hefl::he::EncryptedVector]) -> Vec<u64> {
    let mut sum = cts[0].clone();
    for ct in &cts[1..] {
        sum.add_assign(ct).unwrap();
    }
    key().decrypt(&sum).unwrap()
}

#[test]
fn canaries_refuse_what_is_not_the_rounds_sum() {
    let (_, mut blinders) = federation(3);
    let fp = FixedPoint::for_parties(3).unwrap();
    let all = PartySet::new((0..3).map(PartyId));
    let round0 = uploads(&mut blinders, &fp, 0);
    let round1 = uploads(&mut blinders, &fp, 1);
    let opener = &blinders[0];
    let open = |sum: &[u64], round: u64, published: &PartySet| {
        opener
            .open(sum, &fp, key(), Round(round), Some(&all), published)
            .map(<[u64]>::to_vec)
    };
    // Control: the round's sum is accepted.
    let valid0 = sum_of(&[&round0[0], &round0[1], &round0[2]]);
    assert_eq!(
        fp.decode_integers(&open(&valid0, 0, &all).unwrap()),
        vec![6; 64]
    );

    // A lone ciphertext forwarded as the sum: blinds left in, canaries garbage.
    for (i, lone) in round1.iter().enumerate() {
        let err = open(&key().decrypt(lone).unwrap(), 1, &all).unwrap_err();
        assert!(
            matches!(
                err,
                AggregateRefused::Count { .. } | AggregateRefused::Tag { .. }
            ),
            "lone ciphertext of party {i}: {err}"
        );
    }
    // A subset sum, listed as the whole set: blinds toward party 2 remain.
    let subset = sum_of(&[&round1[0], &round1[1]]);
    let err = open(&subset, 1, &all).unwrap_err();
    assert!(
        matches!(
            err,
            AggregateRefused::Count { .. } | AggregateRefused::Tag { .. }
        ),
        "{err}"
    );
    // ... and listed honestly, its list is not the round's set.
    let two = PartySet::new([PartyId(0), PartyId(1)]);
    let err = open(&subset, 1, &two).unwrap_err();
    assert!(matches!(err, AggregateRefused::PartyList { .. }), "{err}");
    assert!(
        err.to_string().contains("{0, 1}") && err.to_string().contains("{0, 1, 2}"),
        "{err}"
    );
    // A replayed older sum: its count is right (3 parties), its tag is round 0's.
    let err = open(&valid0, 1, &all).unwrap_err();
    assert!(
        matches!(err, AggregateRefused::Tag { parties: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("round 1"), "{err}");
    // A replayed sum of two parties with its count slot fixed (a server adds the public
    // constant Δ to the slot, no key needed): the tag still catches it.
    let mut two_parties = sum_of(&[&round0[0], &round0[1], &round0[2]]);
    two_parties[64] = two_parties[64].wrapping_sub(fp.to_plaintext(1));
    let err = open(&two_parties, 0, &all).unwrap_err();
    assert!(
        matches!(
            err,
            AggregateRefused::Count {
                expected: 3,
                found: 2,
                ..
            }
        ),
        "{err}"
    );
    two_parties[64] = two_parties[64].wrapping_add(fp.to_plaintext(1));
    two_parties[65] = two_parties[65].wrapping_add(fp.to_plaintext(1));
    let err = open(&two_parties, 0, &all).unwrap_err();
    assert!(matches!(err, AggregateRefused::Tag { .. }), "{err}");
}

fn roster_of(parties: u32, min_parties: u32) -> Roster {
    let keys = (0..parties)
        .map(|i| Identity::from_secret_bytes([i as u8 + 1; 32]).public())
        .collect();
    let policy = Policy {
        mode: Mode::Strict,
        parties,
        min_parties,
    };
    Roster::new(key().key_id(), keys, policy).unwrap()
}

#[test]
fn rosters_refuse_naming_expected_and_found() {
    let roster = roster_of(3, 3);
    let reparsed = Roster::parse(&roster.to_json()).unwrap();
    assert_eq!(reparsed, roster);
    // White space does not change the fingerprint; any key or policy does.
    let compact = serde_json::to_vec(
        &serde_json::from_slice::<serde_json::Value>(&roster.to_json()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        Roster::parse(&compact).unwrap().fingerprint(),
        roster.fingerprint()
    );
    assert_ne!(roster_of(3, 2).fingerprint(), roster.fingerprint());

    let wrong: Fingerprint = roster_of(3, 2).fingerprint();
    let err = roster.check_fingerprint(wrong).unwrap_err();
    assert!(matches!(err, RosterError::WrongFingerprint { .. }));
    let text = err.to_string();
    assert!(
        text.contains(&wrong.to_string()) && text.contains(&roster.fingerprint().to_string()),
        "{text}"
    );
    roster.check_fingerprint(roster.fingerprint()).unwrap();

    let err = roster.public_key(PartyId(7)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "party 7 is not in the roster, which lists parties 0 to 2"
    );

    let weaker = Policy {
        mode: Mode::Strict,
        parties: 3,
        min_parties: 2,
    };
    let err = roster.check_policy(&weaker).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the plan weakens the roster's policy: min_parties: the roster says 3, the plan 2"
    );
    let err = roster
        .check_policy(&Policy {
            parties: 4,
            ..roster.policy()
        })
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("parties: the roster says 3, the plan 4"),
        "{err}"
    );

    let other_key = KeyFile::from_seed([12; 32]).key_id();
    let err = roster.check_key(other_key).unwrap_err();
    assert!(err.to_string().contains(&other_key.to_string()), "{err}");

    // An identity that is not the roster's entry for its party.
    let stranger = Identity::from_secret_bytes([99; 32]);
    let err = Blinder::new(&stranger, PartyId(1), &roster, RUN).unwrap_err();
    assert!(
        matches!(err, SecAggError::Roster(RosterError::WrongIdentity { .. })),
        "{err}"
    );
    assert!(
        err.to_string().contains(&stranger.public().to_string()),
        "{err}"
    );

    // Malformed rosters: missing ids, duplicate keys, a policy that cannot hold.
    let mut value: serde_json::Value = serde_json::from_slice(&roster.to_json()).unwrap();
    value["parties"].as_object_mut().unwrap().remove("1");
    let err = Roster::parse(&serde_json::to_vec(&value).unwrap()).unwrap_err();
    assert!(
        matches!(err, RosterError::PartyIds { expected: 3, .. }),
        "{err}"
    );
    let same = Identity::from_secret_bytes([1; 32]).public();
    let err = Roster::new(
        key().key_id(),
        vec![same, same],
        Policy {
            mode: Mode::Strict,
            parties: 2,
            min_parties: 2,
        },
    )
    .unwrap_err();
    assert!(matches!(err, RosterError::DuplicateKey { .. }), "{err}");
    let keys = (0..3)
        .map(|i| Identity::from_secret_bytes([i + 1; 32]).public())
        .collect();
    let err = Roster::new(
        key().key_id(),
        keys,
        Policy {
            mode: Mode::Strict,
            parties: 3,
            min_parties: 1,
        },
    )
    .unwrap_err();
    assert!(matches!(err, RosterError::BadPolicy { .. }), "{err}");
}

#[test]
fn a_low_order_public_key_is_refused() {
    // The all-zero point has order 4 on Curve25519's Montgomery form: its X25519 secret is 0.
    let ours = Identity::from_secret_bytes([1; 32]);
    let keys = vec![ours.public(), PartyPublicKey([0; 32])];
    let roster = Roster::new(
        key().key_id(),
        keys,
        Policy {
            mode: Mode::Strict,
            parties: 2,
            min_parties: 2,
        },
    )
    .unwrap();
    let err = Blinder::new(&ours, PartyId(0), &roster, RUN).unwrap_err();
    assert!(
        matches!(
            err,
            SecAggError::NonContributory {
                partner: PartyId(1),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn identity_files_are_private_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("party-0.id");
    let id = Identity::generate().unwrap();
    id.write_new(&path, false).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(matches!(
        id.write_new(&path, false),
        Err(IdentityError::File(SecretFileError::AlreadyExists { .. }))
    ));
    assert_eq!(Identity::load(&path).unwrap().public(), id.public());
    assert_ne!(Identity::generate().unwrap().public(), id.public());

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Identity::load(&path).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A public key edited in the file is caught.
    let text = std::fs::read_to_string(&path).unwrap();
    let other = Identity::from_secret_bytes([5; 32]).public().to_string();
    let edited = text.replace(&id.public().to_string(), &other);
    let err = Identity::parse(edited.as_bytes(), &path).unwrap_err();
    assert!(matches!(err, IdentityError::PublicMismatch { .. }), "{err}");

    // Public lines.
    let line = id.public().to_line();
    assert_eq!(line.parse::<PartyPublicKey>().unwrap(), id.public());
    let err = "hefl-x25519-v1 nothex"
        .parse::<PartyPublicKey>()
        .unwrap_err();
    assert!(err.to_string().contains("nothex"), "{err}");
    // Debug never prints the secret.
    assert!(!format!("{id:?}").contains(&hex::encode([5u8; 4])));
}

/// A quick federated run on the tiny data set.
fn quick_run(privacy: hefl::fl::Privacy, strategy: hefl::fl::Strategy) -> hefl::fl::TrainConfig {
    hefl::fl::TrainConfig {
        mode: hefl::fl::Mode::Federated,
        privacy,
        strategy,
        epochs: 2,
        batch_size: 32,
        lr: 1e-2,
        layers: vec![hefl::data::IMAGE_PIXELS, 16, 10],
        ..hefl::fl::TrainConfig::default()
    }
}

/// Wire bytes of an `he` upload of `slots` values in the federation of `config`.
fn upload_bytes(slots: usize, config: &hefl::fl::TrainConfig) -> usize {
    let widths = config.widths().unwrap();
    let upload = key()
        .prepare(slots)
        .unwrap()
        .seal(&vec![0; slots], &widths)
        .unwrap();
    upload.to_bytes().len()
}

/// With no dropouts, strict secure aggregation changes nothing the parties compute: the
/// blinds cancel exactly, so the final model is bit-identical to `he`'s with the same seeds.
#[test]
fn strict_runs_give_the_models_of_he_runs_bit_for_bit() {
    use hefl::fl::{Privacy, Strategy, run};
    let data = crate::util::tiny_mnist();
    let key = || {
        Some(std::sync::Arc::new(
            KeyFile::from_seed([13; 32]).secret_key().unwrap(),
        ))
    };
    for strategy in [Strategy::FedSgd, Strategy::FedAvg { local_steps: 2 }] {
        let he = quick_run(Privacy::He, strategy);
        let strict = hefl::fl::TrainConfig {
            secure_agg: Some(Mode::Strict),
            ..he.clone()
        };
        let he_run = run(&he, &data, key(), &mut ()).unwrap();
        let strict_run = run(&strict, &data, key(), &mut ()).unwrap();
        let bits = |p: &[f32]| p.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(strict_run.epochs.len(), 2);
        assert_eq!(
            bits(&strict_run.final_params),
            bits(&he_run.final_params),
            "{strategy}: strict and he models differ"
        );
        // The blinded uploads carry the two canary slots (so the blinded path ran).
        let slots = hefl::model::param_count(&he.layers) + 1;
        let strict_bytes = strict_run.overhead.unwrap().client_cpu.bytes_per_update;
        assert_eq!(strict_bytes, upload_bytes(slots + CANARY_SLOTS, &strict));
        eprintln!(
            "{strategy}: upload {strict_bytes} bytes with canaries, {} without",
            he_run.overhead.unwrap().client_cpu.bytes_per_update
        );
    }
    // Secure aggregation needs he.
    let plain = hefl::fl::TrainConfig {
        secure_agg: Some(Mode::Strict),
        ..quick_run(Privacy::Plain, Strategy::FedSgd)
    };
    let err = run(&plain, &data, None, &mut ()).unwrap_err();
    assert!(err.to_string().contains("only with --privacy he"), "{err}");
}

/// Party `i` of a 3-party `he` federation of 4 values, blinded by `blinders[i]`.
fn blinded_party(i: u32, blinder: Blinder) -> hefl::fl::Party {
    he_party(i).with_secure_agg(blinder).unwrap()
}

/// Party `i` of a 3-party `he` federation of 4 values (at least 2 in a sum), unblinded.
fn he_party(i: u32) -> hefl::fl::Party {
    use hefl::fl::{Federation, Party, Privacy, Step};
    use rand::SeedableRng;
    let federation = Federation {
        party: PartyId(i),
        parties: 3,
        id_limit: 3,
        min_parties: 2,
        length: 4,
        encoding: Encoding::new(8.0, 16, 3, Weighting::Fraction { nominal: 1 }).unwrap(),
        privacy: Privacy::He,
        he: Some((key().key_id(), hefl::he::DownloadForm::Seeds)),
        step: Step::Delta,
        snapshot_every: None,
        run: RUN,
    };
    let key = std::sync::Arc::new(KeyFile::from_seed([11; 32]).secret_key().unwrap());
    let rounding = rand_chacha::ChaCha20Rng::seed_from_u64(u64::from(i));
    Party::new(federation, vec![0.0; 4], Some(key), rounding).unwrap()
}

/// What the server publishes for `round`: the sum of `uploads`, stamped.
fn server_sum(party: &hefl::fl::Party, uploads: &[&[u8]], round: u64) -> Vec<u8> {
    use hefl::fl::Summable;
    let expect = party.envelope().expected_he().unwrap();
    let mut sum =
        <hefl::he::CompactVector as Summable>::parse_submission(uploads[0], &expect).unwrap();
    for upload in &uploads[1..] {
        sum.add_submission(upload, &expect).unwrap();
    }
    sum.set_context(hefl::he::Context::sum(RUN, round));
    sum.to_bytes()
}

#[test]
fn a_blinded_party_resends_its_sealed_bytes_after_a_restart_and_skips_refused_sums() {
    use hefl::fl::{PartyState, Received};
    let mut cost = Default::default();
    let (_, blinders) = federation(3);
    let mut parties: Vec<_> = blinders
        .into_iter()
        .enumerate()
        .map(|(i, b)| blinded_party(i as u32, b))
        .collect();
    let all: Vec<PartyId> = (0..3).map(PartyId).collect();
    // Round 0: every party's update; the mean comes back exactly.
    let uploads: Vec<Vec<u8>> = parties
        .iter_mut()
        .enumerate()
        .map(|(i, p)| {
            p.seal(Round(0), &[i as f32; 4], 1, None, &mut cost)
                .unwrap()
                .bytes
        })
        .collect();
    let refs: Vec<&[u8]> = uploads.iter().map(Vec::as_slice).collect();
    let sum = server_sum(&parties[0], &refs, 0);
    for p in &mut parties {
        let got = p
            .receive(
                &Published::sum(Round(0), all.to_vec(), sum.to_vec().into()),
                &mut cost,
            )
            .unwrap();
        assert!(matches!(got, Received::Applied { .. }), "{got:?}");
        assert_eq!(p.model(), [1.0; 4]);
        assert!(
            p.sealed_upload(Round(0)).is_none(),
            "answered: bytes dropped"
        );
    }
    // Round 1: party 0 seals, checkpoints and restarts before its upload is answered.
    let sealed = parties[0]
        .seal(Round(1), &[0.5; 4], 1, None, &mut cost)
        .unwrap()
        .bytes;
    let state = parties[0].state().to_bytes();
    let (_, mut fresh) = federation(3);
    let mut restarted = blinded_party(0, fresh.remove(0));
    restarted
        .restore(PartyState::from_bytes(&state, 1 << 20).unwrap())
        .unwrap();
    assert_eq!(restarted.sealed_upload(Round(1)), Some(sealed.as_slice()));
    // Sealing round 1 again (another update: its training restarted) resends the same bytes.
    let again = restarted
        .seal(Round(1), &[-3.0; 4], 1, None, &mut cost)
        .unwrap()
        .bytes;
    assert_eq!(
        again, sealed,
        "a restarted party resends its sealed upload verbatim"
    );

    // The server forwards party 1's lone upload as the sum of all three: every party skips
    // it alike, with the canary named.
    let lone = parties[1]
        .seal(Round(1), &[2.0; 4], 1, None, &mut cost)
        .unwrap()
        .bytes;
    // Three copies of one upload do not fold (same seed): the count is made up with the two
    // other parties' round-0 uploads (another round's blinds), stamped as round 1's sum.
    let three = server_sum(&parties[1], &[&lone, &uploads[0], &uploads[2]], 1);
    for p in [&mut restarted, &mut parties[1]] {
        let got = p
            .receive(
                &Published::sum(Round(1), all.to_vec(), three.to_vec().into()),
                &mut cost,
            )
            .unwrap();
        match got {
            Received::Skipped { reason, .. } => {
                assert!(reason.to_string().contains("canary"), "{reason}");
            }
            other => panic!("a forged sum was not skipped: {other:?}"),
        }
        assert_eq!(p.model(), [1.0; 4], "no step on a refused sum");
        assert_eq!(p.next_round(), Round(2));
    }
}

/// A void round: no step on any party, every party moves on, and the next round's set (two
/// parties) is the one the members seal for and the one its sum must list; the party left
/// out applies that sum too, is back in the set announced with it, and all three models stay
/// equal. A next set the roster refuses, and a void round in a run without secure
/// aggregation, are refused and change nothing.
#[test]
fn a_void_round_moves_every_party_on_and_the_next_set_is_sealed_for() {
    use hefl::fl::{PartyState, PublishedError, Received};
    let mut cost = Default::default();
    let (_, blinders) = federation(3);
    let mut parties: Vec<_> = blinders
        .into_iter()
        .enumerate()
        .map(|(i, b)| blinded_party(i as u32, b))
        .collect();
    let ids = |ids: &[u32]| ids.iter().map(|&p| PartyId(p)).collect::<Vec<_>>();
    let outcome = |round: u64, parties: &[u32], bytes: Vec<u8>, next: &[u32]| Published {
        void: bytes.is_empty(),
        next_set: Some(ids(next)),
        ..Published::sum(Round(round), ids(parties), bytes.into())
    };
    let seal = |p: &mut hefl::fl::Party, round: u64, value: f32, cost: &mut _| {
        p.seal(Round(round), &[value; 4], 1, None, cost)
            .map(|s| s.bytes)
    };

    // Round 0, all three: applied; the next set announced is all three.
    let uploads: Vec<Vec<u8>> = (0..3)
        .map(|i| seal(&mut parties[i], 0, i as f32, &mut cost).unwrap())
        .collect();
    let refs: Vec<&[u8]> = uploads.iter().map(Vec::as_slice).collect();
    let sum = server_sum(&parties[0], &refs, 0);
    for p in &mut parties {
        let got = p.receive(&outcome(0, &[0, 1, 2], sum.clone(), &[0, 1, 2]), &mut cost);
        assert!(matches!(got, Ok(Received::Applied { .. })), "{got:?}");
    }

    // Round 1: parties 0 and 1 seal, party 2 never does: void, next set {0, 1}.
    for p in &mut parties[..2] {
        seal(p, 1, 5.0, &mut cost).unwrap();
    }
    // Refused next sets first: a party outside the roster, a set below its minimum.
    for (next, named) in [(&[0u32, 7][..], "party 7"), (&[0u32][..], "at least 2")] {
        let err = parties[0]
            .receive(&outcome(1, &[0, 1], Vec::new(), next), &mut cost)
            .expect_err("refused");
        assert!(matches!(err, PublishedError::NextSet { .. }), "{err}");
        assert!(err.to_string().contains(named), "{err}");
        assert_eq!(parties[0].next_round(), Round(1), "nothing changed");
    }
    for p in &mut parties {
        let got = p.receive(&outcome(1, &[0, 1], Vec::new(), &[0, 1]), &mut cost);
        assert!(matches!(got, Ok(Received::Void { .. })), "{got:?}");
        assert_eq!(p.model(), [1.0; 4], "no step on a void round");
        assert_eq!(p.next_round(), Round(2));
        assert_eq!(p.voided(), [1]);
        assert!(p.sealed_upload(Round(1)).is_none(), "its update is dropped");
    }
    assert!(parties[0].is_member() && parties[1].is_member());
    assert!(!parties[2].is_member(), "left out of round 2");
    let err = seal(&mut parties[2], 2, 9.0, &mut cost).expect_err("not in the set");
    assert!(
        err.to_string().contains("not in the round's party set"),
        "{err}"
    );
    // The left-out party's checkpoint keeps the set.
    let state = PartyState::from_bytes(&parties[2].state().to_bytes(), 1 << 20).unwrap();
    let (_, mut fresh) = federation(3);
    let mut restarted = blinded_party(2, fresh.remove(2));
    restarted.restore(state).unwrap();
    assert!(!restarted.is_member());
    assert_eq!(restarted.voided(), [1]);

    // Round 2 over {0, 1}: their blinds cancel in their sum; all three apply it, and party
    // 2 is in the set announced with it.
    let uploads: Vec<Vec<u8>> = (0..2)
        .map(|i| seal(&mut parties[i], 2, 3.0 + i as f32, &mut cost).unwrap())
        .collect();
    let refs: Vec<&[u8]> = uploads.iter().map(Vec::as_slice).collect();
    let sum = server_sum(&parties[0], &refs, 2);
    for p in &mut parties {
        let got = p.receive(&outcome(2, &[0, 1], sum.clone(), &[0, 1, 2]), &mut cost);
        assert!(matches!(got, Ok(Received::Applied { .. })), "{got:?}");
        assert_eq!(p.model(), [4.5; 4], "1 + the mean of 3 and 4");
        assert!(p.is_member());
    }

    // Round 3, all three again.
    let uploads: Vec<Vec<u8>> = (0..3)
        .map(|i| seal(&mut parties[i], 3, 1.0, &mut cost).unwrap())
        .collect();
    let refs: Vec<&[u8]> = uploads.iter().map(Vec::as_slice).collect();
    let sum = server_sum(&parties[0], &refs, 3);
    for p in &mut parties {
        let got = p.receive(&outcome(3, &[0, 1, 2], sum.clone(), &[0, 1, 2]), &mut cost);
        assert!(matches!(got, Ok(Received::Applied { .. })), "{got:?}");
        assert_eq!(p.model(), [5.5; 4]);
    }

    // Without secure aggregation no round is ever void.
    let mut unblinded = he_party(0);
    let err = unblinded
        .receive(&outcome(0, &[0, 1], Vec::new(), &[0, 1]), &mut cost)
        .expect_err("refused");
    assert!(
        matches!(err, PublishedError::UnexpectedVoid { .. }),
        "{err}"
    );
    assert_eq!(unblinded.next_round(), Round(0));
}
