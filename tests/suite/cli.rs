//! The `hefl` binary as a user runs it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use hefl::he::keys::KeyFile;

use crate::util::{hefl, write_tiny_mnist};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn keygen_writes_a_private_key_and_refuses_to_overwrite_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keys").join("hefl.key");

    // Default path is keys/hefl.key under the working directory.
    let first = hefl(&["keygen"], dir.path());
    assert!(first.status.success(), "{}", text(&first.stderr));
    let mode = std::fs::metadata(&path)
        .expect("key written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let key = KeyFile::load(&path).expect("a valid key file");
    let stdout = text(&first.stdout);
    assert!(
        stdout.starts_with(&key.key_id().to_string()),
        "keygen should print the key id first: {stdout}"
    );

    let again = hefl(&["keygen"], dir.path());
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("--force"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(
        KeyFile::load(&path).expect("still there").key_id(),
        key.key_id(),
        "a refused keygen must leave the existing key untouched"
    );

    let forced = hefl(&["keygen", "--out", "keys/hefl.key", "--force"], dir.path());
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert_ne!(
        KeyFile::load(&path).expect("replaced").key_id(),
        key.key_id()
    );
}

#[test]
fn dp_epsilon_prints_a_bare_number_last() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Opacus's test case, by each accountant: the bare number on the last line.
    let epsilon = |extra: &[&str]| -> f64 {
        let case = [
            "dp-epsilon",
            "--sampling-rate",
            "0.04",
            "--noise-multiplier",
            "1.5",
            "--steps",
            "2250",
            "--delta",
            "1e-5",
        ];
        let out = hefl(&[&case[..], extra].concat(), dir.path());
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        stdout
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("last line is not a number: {stdout}"))
    };
    // PLD by default (dp-accounting: 6.76878737701), RDP on request (Opacus's 7.32911117143).
    let pld = epsilon(&[]);
    assert!((pld - 6.76878737701).abs() < 1e-6, "{pld}");
    let rdp = epsilon(&["--accountant", "rdp"]);
    assert!((rdp - 7.32911117143).abs() < 1e-6, "{rdp}");

    let bad = hefl(
        &[
            "dp-epsilon",
            "--sampling-rate",
            "1.5",
            "--noise-multiplier",
            "1",
            "--steps",
            "1",
        ],
        dir.path(),
    );
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("not between 0 and 1"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn bench_report_quick_writes_tables_csv_and_plots() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = hefl(
        &["bench-report", "--quick", "--out-dir", "bench"],
        dir.path(),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, text(&out.stderr));
    for heading in [
        "One client's round",
        "Server aggregation latency",
        "Bytes per party per round",
        "Encryption throughput",
    ] {
        assert!(stdout.contains(heading), "missing {heading:?}:\n{stdout}");
    }
    assert!(
        stdout.contains("ms × parties"),
        "no fitted slope:\n{stdout}"
    );
    let bench = dir.path().join("bench");
    for file in [
        "report.md",
        "client_round.csv",
        "aggregation.csv",
        "bytes.csv",
        "he_throughput.csv",
        "aggregation.png",
        "client_round.png",
        "bytes.png",
        "he_threads.png",
        "he_sizes.png",
    ] {
        let len = std::fs::metadata(bench.join(file)).map_or(0, |m| m.len());
        assert!(len > 100, "{file} missing or empty");
    }
    // Every party count in the three sweeps; the bytes are the real message sizes.
    let aggregation = std::fs::read_to_string(bench.join("aggregation.csv")).unwrap();
    let rows: Vec<&str> = aggregation
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert_eq!(rows.len(), 1 + 3 * 10, "{aggregation}");
    for mode in ["he-seeds", "he-switched", "plain"] {
        assert!(rows.iter().any(|r| r.starts_with(&format!("{mode},1000,"))));
    }
    let bytes = std::fs::read_to_string(bench.join("bytes.csv")).unwrap();
    assert!(
        bytes.contains("mode,parties,direction,bytes,f32_update_bytes"),
        "{bytes}"
    );
    let size = |mode: &str, parties: u32, direction: &str| -> f64 {
        let prefix = format!("{mode},{parties},{direction},");
        let row = bytes
            .lines()
            .find(|l| l.starts_with(&prefix))
            .expect("a bytes row");
        let n: f64 = row.split(',').nth(3).unwrap().parse().unwrap();
        n / 407_080.0
    };
    assert_eq!(size("plain", 3, "upload"), 814_188.0 / 407_080.0);
    // The compact format's targets: uploads at most 1.0, 1.15 and 1.35 times the f32
    // update at 3, 100 and 1000 parties; the 3-party seeds download at most 1.0 plus 16
    // bytes per party.
    for (parties, most) in [(3, 1.0), (100, 1.15), (1000, 1.35)] {
        for mode in ["he-seeds", "he-switched"] {
            let upload = size(mode, parties, "upload");
            assert!(
                upload <= most,
                "{mode} P={parties}: upload {upload:.3} x f32"
            );
        }
    }
    let download = size("he-seeds", 3, "download");
    assert!(
        download <= 1.0 + 48.0 / 407_080.0,
        "download {download:.3} x f32"
    );
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// As the noise vanishes epsilon is infinite, not 0 (the accountant used to underflow below
/// a noise multiplier of about 1e-154): in `dp-epsilon` and in a DP-SGD training run.
#[test]
fn vanishing_noise_gives_an_infinite_epsilon() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = hefl(
        &[
            "dp-epsilon",
            "--sampling-rate",
            "0.01",
            "--noise-multiplier",
            "1e-160",
            "--steps",
            "100",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().last(), Some("inf"), "{stdout}");

    let data = dir.path().join("mnist");
    std::fs::create_dir(&data).expect("data folder");
    crate::util::write_tiny_mnist(&data);
    let data = data.to_string_lossy().into_owned();
    let out = hefl(
        &[
            "train",
            "--privacy",
            "dp",
            "--noise-multiplier",
            "1e-160",
            "--epochs",
            "1",
            "--hidden",
            "8",
            "--data-dir",
            &data,
        ],
        dir.path(),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("epsilon inf"), "{stdout}\n{stderr}");
}

/// Every setting `hefl serve` is given is checked before it binds: a bad one exits with
/// status 2 and a one-line reason at once, without `listening on`.
#[test]
fn serve_validates_before_it_listens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases: &[&[&str]] = &[
        &["--epochs", "0"],
        &["--batch-size", "0"],
        &["--lr", "NaN"],
        &["--lr=-1"],
        &["--lr", "inf"],
        &["--hidden", "0"],
        &["--hidden", "1,0,1"],
        &["--strategy", "fedavg", "--local-steps", "0"],
        &["--train-size", "0"],
        &["--train-subset", "0"],
        &["--privacy", "dp", "--noise-multiplier", "0"],
        &["--privacy", "dp", "--delta", "0"],
        &["--privacy", "dp", "--target-epsilon=-1"],
        &["--input-dp", "NaN"],
        &["--parties", "3", "--min-parties", "4"],
        &["--parties", "4294967295"],
        &["--parties", "1000000"],
    ];
    for case in cases {
        let mut args = owned(&["serve", "--bind", "127.0.0.1:0", "--tokens", "tokens.json"]);
        args.extend(owned(case));
        let run = crate::util::hefl_bounded(
            &args,
            dir.path(),
            std::time::Duration::from_secs(10),
            Some("listening on"),
        );
        assert!(
            !run.stopped,
            "{case:?}: the server listened: {}",
            run.stdout
        );
        assert_eq!(
            run.status.and_then(|s| s.code()),
            Some(2),
            "{case:?}: {}",
            run.stderr
        );
        let message = run.stderr.trim();
        assert!(
            message.starts_with("error: ") && message.lines().count() == 1,
            "{case:?}: {message}"
        );
        // Generous for a shared 2-core machine; the refusal itself takes milliseconds.
        assert!(
            run.elapsed < std::time::Duration::from_secs(3),
            "{case:?} took {:?}",
            run.elapsed
        );
        assert!(!dir.path().join("tokens.json").exists(), "{case:?}");
    }
}

/// `keygen --force` replaces a key file, never a device, a named pipe or a link.
#[test]
fn keygen_refuses_to_replace_what_is_not_a_regular_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("fifo");
    let made_fifo = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    let link = dir.path().join("link");
    std::os::unix::fs::symlink("/dev/null", &link).expect("symlink");
    let mut targets = vec![link.clone()];
    if made_fifo {
        targets.push(fifo);
    }
    if Path::new("/dev/full").exists() {
        targets.push("/dev/full".into());
    }
    for target in &targets {
        let target_text = target.to_string_lossy().into_owned();
        for force in [true, false] {
            let mut args = vec!["keygen", "--out", &target_text];
            if force {
                args.push("--force");
            }
            let out = hefl(&args, dir.path());
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{target_text}: {stderr}");
            assert!(
                stderr.contains("expected a regular file") && stderr.contains(&target_text),
                "{target_text}: {stderr}"
            );
        }
    }
    let still_a_link = std::fs::symlink_metadata(&link).expect("link kept");
    assert!(still_a_link.file_type().is_symlink());
    if let Ok(full) = std::fs::metadata("/dev/full") {
        use std::os::unix::fs::FileTypeExt;
        assert!(full.file_type().is_char_device());
    }
}

/// A tokens file nobody could join with is refused, naming the file and the party.
#[test]
fn serve_refuses_empty_short_and_shared_tokens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = "0123456789abcdef0123456789abcdef";
    let cases = [
        (
            r#"["", "", ""]"#.to_string(),
            "party 0's token has 0 characters",
        ),
        (
            format!(r#"["{good}", "short", "{good}x"]"#),
            "party 1's token has 5 characters",
        ),
        (
            format!(r#"["{good}", "{good}x", "{good}"]"#),
            "party 2's token is the same as party 0's",
        ),
    ];
    let path = dir.path().join("tokens.json");
    for (json, expected) in cases {
        std::fs::write(&path, &json).expect("write tokens");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let args = owned(&["serve", "--bind", "127.0.0.1:0", "--tokens", "tokens.json"]);
        let run = crate::util::hefl_bounded(
            &args,
            dir.path(),
            std::time::Duration::from_secs(10),
            Some("listening on"),
        );
        assert!(!run.stopped, "{json}: the server listened");
        assert!(
            run.status.is_some_and(|s| !s.success()),
            "{json}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains(expected) && run.stderr.contains("tokens.json"),
            "{json}: {}",
            run.stderr
        );
    }
}

/// The cells of the demo's table row that starts with `| {first} |`, by run name.
fn table_row(stdout: &str, first: &str) -> Vec<(String, String)> {
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let header = stdout
        .lines()
        .find(|l| l.starts_with("| epoch |"))
        .unwrap_or_else(|| panic!("no table in the demo's output:\n{stdout}"));
    let row = stdout
        .lines()
        .find(|l| l.starts_with(&format!("| {first} |")))
        .unwrap_or_else(|| panic!("no row {first:?} in the demo's output:\n{stdout}"));
    cells(header).into_iter().zip(cells(row)).skip(1).collect()
}

#[test]
fn evaluate_reports_what_the_demo_printed_for_each_saved_model() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_tiny_mnist(dir.path());
    let demo = hefl(
        &[
            "demo",
            "--data-dir",
            ".",
            "--hidden",
            "8",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--lr",
            "3e-4",
            "--out-dir",
            "demo",
            "--model-out",
            "models",
        ],
        dir.path(),
    );
    let stdout = text(&demo.stdout);
    assert!(demo.status.success(), "{stdout}\n{}", text(&demo.stderr));
    let accuracies = table_row(&stdout, "2");
    let losses: std::collections::HashMap<_, _> =
        table_row(&stdout, "final test loss").into_iter().collect();
    let names: Vec<&str> = accuracies.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["local", "centralized", "federated-plain", "federated-he"]
    );
    for (name, accuracy) in &accuracies {
        let model = format!("models/{name}.safetensors");
        let eval = hefl(
            &["evaluate", "--model", &model, "--data-dir", "."],
            dir.path(),
        );
        let line = text(&eval.stdout);
        assert!(eval.status.success(), "{name}: {}", text(&eval.stderr));
        let expected = format!(
            "test accuracy {accuracy}, test loss {} (200 images)",
            losses[name]
        );
        eprintln!(
            "{name}: demo printed {accuracy}, evaluate printed {}",
            line.trim()
        );
        assert_eq!(line.trim(), expected, "{name}");
    }

    let bad = hefl(
        &["evaluate", "--model", "demo/results.md", "--data-dir", "."],
        dir.path(),
    );
    let stderr = text(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        stderr.contains("demo/results.md") && stderr.contains("not a valid safetensors file"),
        "{stderr}"
    );
}

/// `dp-sweep --tune` writes its settings file and `dp-compare` re-runs them beside plain
/// and HE without tuning again: one table with epsilon under both accountants, one plot.
#[test]
fn tuned_dp_settings_feed_the_comparison() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("mnist");
    std::fs::create_dir(&data).expect("data folder");
    crate::util::write_tiny_mnist(&data);
    let data = data.to_string_lossy().into_owned();
    let common = ["--hidden", "8", "--data-dir", &data];
    let tune = hefl(
        &[
            &[
                "dp-sweep",
                "--tune",
                "--epsilons",
                "4",
                "--validation-size",
                "100",
            ],
            &common[..],
        ]
        .concat(),
        dir.path(),
    );
    assert!(tune.status.success(), "{}", text(&tune.stderr));
    assert!(
        text(&tune.stderr).contains("validation"),
        "{}",
        text(&tune.stderr)
    );
    let settings = dir.path().join("runs/dp-sweep/dp-tuned.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&settings).expect("settings")).expect("json");
    let grid = hefl::fl::tuning_grid(hefl::fl::Mode::Federated, 4.0).len();
    assert_eq!(json["trials"].as_array().map(Vec::len), Some(grid));
    assert_eq!(json["best"].as_array().map(Vec::len), Some(1));

    let compare = hefl(
        &[&["dp-compare", "--epochs", "1"], &common[..]].concat(),
        dir.path(),
    );
    assert!(compare.status.success(), "{}", text(&compare.stderr));
    let md = std::fs::read_to_string(dir.path().join("runs/compare/compare.md")).expect("table");
    for row in [
        "| federated-plain |",
        "| federated-he |",
        "| federated-dp eps=4 |",
    ] {
        assert!(md.contains(row), "{row} missing from\n{md}");
    }
    assert!(dir.path().join("runs/compare/compare.png").exists());

    let bad = hefl(
        &[
            "dp-compare",
            "--dp-settings",
            "missing.json",
            "--data-dir",
            &data,
        ],
        dir.path(),
    );
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("missing.json"),
        "{}",
        text(&bad.stderr)
    );
}
