//! Replays the fuzz targets' committed inputs on every `cargo test`: each seed in
//! `fuzz/seeds/<target>/` (valid examples, which must be accepted) and each input in
//! `fuzz/regressions/<target>/` (what fuzzing once found, which must now be handled cleanly)
//! goes through the same property checks the fuzz targets run (`fuzz/src/lib.rs`).
//!
//! The seeds are written by the ignored test [`write_seeds`]:
//! `cargo test --test suite fuzz_corpus::write_seeds -- --ignored`.

#[path = "../../fuzz/src/lib.rs"]
mod checks;

use hefl::dp::{DpSgd, Sampling};
use hefl::fl::{PlainSum, Privacy, Strategy, Summable, TrainConfig, plan_for};
use hefl::he::keys::KeyFile;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files in `dir` (none if it does not exist), sorted by name.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("read a fuzz input directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_seed_is_accepted_by_its_target() {
    for target in checks::TARGETS {
        let seeds = inputs(&fuzz_dir().join("seeds").join(target));
        assert!(!seeds.is_empty(), "no seeds for fuzz target {target}");
        for seed in seeds {
            let data = std::fs::read(&seed).expect("read a seed");
            let accepted = checks::check(target, &data).expect("a known target");
            assert!(accepted, "{target} refused its seed {}", seed.display());
        }
    }
}

#[test]
fn every_regression_input_is_handled_cleanly() {
    let dir = fuzz_dir().join("regressions");
    for entry in std::fs::read_dir(&dir).expect("fuzz/regressions exists") {
        let target_dir = entry.expect("read fuzz/regressions").path();
        let Some(target) = target_dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !target_dir.is_dir() {
            continue;
        }
        for input in inputs(&target_dir) {
            let data = std::fs::read(&input).expect("read a regression input");
            // Accepted or refused, but no panic: the check asserts the target's properties.
            checks::check(target, &data)
                .unwrap_or_else(|| panic!("{}: unknown fuzz target {target}", input.display()));
        }
    }
}

/// Plain messages of the old format (version 2: 64-bit words), truncated, padded, of another
/// width, length or count, or not plain at all: each refused by the plain target and by the
/// parser with an error naming what was expected.
#[test]
fn damaged_plain_messages_are_refused_naming_what_was_expected() {
    let shape = checks::plan(false).expected_plain();
    let read = |path: &str| std::fs::read(fuzz_dir().join(path)).expect("read a fuzz input");
    let fresh = read("seeds/plain/fresh");
    let body = fresh.len() - 68;
    let edited = |at: usize, bytes: &[u8]| {
        let mut edited = fresh.clone();
        edited[at..at + bytes.len()].copy_from_slice(bytes);
        edited
    };
    let mut padded = fresh.clone();
    *padded.last_mut().expect("a body") |= 0x80;
    let cases: [(&str, Vec<u8>, String); 9] = [
        (
            "version 2",
            read("regressions/plain/version-2-words-of-64-bits"),
            "plain message of wire format version '2', this hefl reads version '3' \
             (magic \"HEFLPLN3\")"
                .into(),
        ),
        (
            "not plain",
            b"HEFLGLWE and more than a header's worth of bytes after it, 68 in all.....".to_vec(),
            "not a hefl plain message".into(),
        ),
        (
            "a truncated header",
            fresh[..40].to_vec(),
            "40 bytes, shorter than the 68-byte header".into(),
        ),
        (
            "a truncated body",
            fresh[..fresh.len() - 1].to_vec(),
            format!(
                "body of {} bytes, expected {body} ({} values of {} bits, packed)",
                body - 1,
                shape.len,
                shape.bits
            ),
        ),
        (
            "a trailing byte",
            [fresh.as_slice(), &[0]].concat(),
            format!("body of {} bytes, expected {body}", body + 1),
        ),
        (
            "64-bit words",
            edited(20, &64u32.to_le_bytes()),
            format!("words of 64 bits, expected {}", shape.bits),
        ),
        (
            "another length",
            edited(8, &(shape.len as u64 + 1).to_le_bytes()),
            format!("{} values, expected {}", shape.len + 1, shape.len),
        ),
        (
            "no summand",
            edited(16, &0u32.to_le_bytes()),
            "sums 0 updates, expected between 1 and 1".into(),
        ),
        ("nonzero padding", padded, "nonzero padding".into()),
    ];
    assert!(checks::plain(&fresh), "the seed is valid");
    for (what, bytes, expected) in cases {
        assert!(!checks::plain(&bytes), "{what}: accepted");
        let error = PlainSum::parse_submission(&bytes, &shape)
            .expect_err(what)
            .to_string();
        assert!(error.contains(&expected), "{what}: {error}");
    }
}

/// Rewrites `fuzz/seeds/`: a few small valid inputs per target.
#[test]
#[ignore = "writes fuzz/seeds; run by hand when a format changes"]
fn write_seeds() {
    let root = fuzz_dir().join("seeds");
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("create a seed directory");
        std::fs::write(dir.join(name), data).expect("write a seed");
    };

    // Ciphertext messages: a fresh encryption and sums of two and of every party.
    let key = KeyFile::from_seed(checks::KEY_SEED)
        .secret_key()
        .expect("derive the fuzz key");
    let expect = checks::plan(true).expected_he().expect("he plan");
    let slots = expect.plaintext_len;
    let fresh: Vec<_> = (0..checks::PARTIES as u64)
        .map(|p| {
            let words: Vec<u64> = (0..slots as u64).map(|i| (p + i) << 42).collect();
            key.prepare(slots)
                .and_then(|prepared| prepared.seal(&words, &expect.widths))
                .expect("encrypt")
        })
        .collect();
    write("wire", "fresh", &fresh[0].to_bytes());
    let sum2 = hefl::he::CompactVector::sum(&fresh[..2]).expect("sum");
    write("wire", "sum2", &sum2.to_bytes());
    let sum_all = hefl::he::CompactVector::sum(&fresh).expect("sum");
    write("wire", "sum-all", &sum_all.to_bytes());

    // Plain messages: a submission and the sum of every party's.
    let shape = checks::plan(false).expected_plain();
    let words = (0..shape.len as u64)
        .map(|i| i << (64 - shape.bits))
        .collect();
    let submission = PlainSum::fresh(words, shape.bits).to_bytes();
    write("plain", "fresh", &submission);
    let mut sum = PlainSum::parse_submission(&submission, &shape).expect("parse");
    for _ in 1..checks::PARTIES {
        sum.add_submission(&submission, &shape).expect("add");
    }
    write("plain", "sum-all", &sum.to_bytes());

    // The hub: [mode | party << 1, round] then the update.
    for (name, prefix, mut message) in [
        ("plain-party0", [0u8, 0], submission.clone()),
        ("plain-party2", [4, 0], submission),
        ("he-party0", [1, 0], fresh[0].to_bytes()),
    ] {
        // Stamped as the party's round-0 update of the fuzz plan's run.
        let (he, party) = (prefix[0] & 1 == 1, u32::from(prefix[0] >> 1));
        checks::restamp(he, &mut message, checks::upload_context(he, party));
        write("hub", name, &[prefix.as_slice(), &message].concat());
    }

    // Plans as a server announces them, one per privacy mode and strategy.
    let json = |plan: &hefl::fl::Plan| serde_json::to_vec_pretty(plan).expect("serialize");
    write("plan", "plain", &json(checks::plan(false)));
    write("plan", "he", &json(checks::plan(true)));
    let dp = TrainConfig {
        privacy: Privacy::Dp,
        dp: Some(DpSgd {
            noise_multiplier: 1.1,
            max_grad_norm: 1.0,
            delta: 1e-5,
            sampling: Sampling::Poisson,
            accountant: hefl::dp::Accountant::Pld,
            pca: None,
        }),
        strategy: Strategy::FedAvg { local_steps: 5 },
        ..TrainConfig::default()
    };
    let dp = plan_for(&dp, 60_000, None, None, hefl::fl::RoundRules::default()).expect("dp plan");
    write("plan", "dp-fedavg", &json(&dp));

    // A key file as `hefl keygen` writes it.
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("hefl.key");
    KeyFile::from_seed(checks::KEY_SEED)
        .write_new(&path, false)
        .expect("write a key file");
    write(
        "keyfile",
        "hefl-key.json",
        &std::fs::read(&path).expect("read it"),
    );

    // A tokens file of three parties.
    let issued: Vec<String> = (0..3u8).map(|p| hex::encode([p; 32])).collect();
    let tokens = serde_json::to_vec_pretty(&issued).expect("serialize");
    write("tokens", "tokens.json", &tokens);

    // IDX files of two images and their labels, raw and gzip.
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28];
    images.extend((0..2 * 784).map(|i| (i % 256) as u8));
    let labels = vec![0, 0, 8, 1, 0, 0, 0, 2, 3, 9];
    write("idx", "images", &images);
    write("idx", "images.gz", &checks::gz(&images));
    write("idx", "labels", &labels);
    write("idx", "labels.gz", &checks::gz(&labels));
}
