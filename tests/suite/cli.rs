//! The `hefl` binary as a user runs it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use hefl::he::keys::KeyFile;

use crate::util::{hefl, hefl_with_env, write_tiny_mnist};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that a run of `hefl` failed with `needle` in its error output.
fn assert_refused(out: &std::process::Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "should have failed: {stderr}");
    assert!(stderr.contains(needle), "{needle:?} missing from\n{stderr}");
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
    // No Flower here: the robust section says so instead of measuring it.
    let out = hefl_with_env(
        &["bench-report", "--quick", "--out-dir", "bench"],
        dir.path(),
        &[(
            hefl::perf::flower::FLOWER_PYTHON_ENV,
            "/nonexistent/python3",
        )],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, text(&out.stderr));
    for heading in [
        "One client's round",
        "Server aggregation latency",
        "Bytes per party per round",
        "Encryption throughput",
        "Secure aggregation (strict): blinds per client round",
        "Secure aggregation (robust): costs per round, beside Flower's SecAgg+",
        "Flower's SecAgg+ at P = 10: not measured: cannot run /nonexistent/python3",
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
        "secagg_blinds.csv",
        "secagg_robust.csv",
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
    // The quick robust rows: P = 10 with 0 and 1 dropouts, P = 100 with 0, 1 and 10, every
    // corrected sum checked; hefl's rows only (no Flower).
    let robust = std::fs::read_to_string(bench.join("secagg_robust.csv")).unwrap();
    let rows: Vec<Vec<&str>> = robust
        .lines()
        .filter(|l| l.starts_with("hefl,") || l.starts_with("flower,"))
        .map(|l| l.split(',').collect())
        .collect();
    let keys: Vec<(&str, &str, &str, &str, &str)> = rows
        .iter()
        .map(|r| (r[0], r[1], r[2], r[4], r[16]))
        .collect();
    assert_eq!(
        keys,
        [
            ("hefl", "10", "4", "0", "true"),
            ("hefl", "10", "4", "1", "true"),
            ("hefl", "100", "22", "0", "true"),
            ("hefl", "100", "22", "1", "true"),
            ("hefl", "100", "22", "10", "true"),
        ],
        "{robust}"
    );
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
    // Plain words packed to t = 22 bits at 3 parties (101,771 slots with the weight):
    // at most 0.75 times the f32 update.
    assert_eq!(size("plain", 3, "upload"), 280_084.0 / 407_080.0);
    assert!(size("plain", 3, "upload") <= 0.75);
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
/// A plan file passes the same gate as the flags: what a flag may not say, a plan file may
/// not either (each refused before listening, exit 2, one line naming the setting), and a
/// plan "file" that is a device is refused without reading it; so are the flags whose runs
/// could never finish (more layers than a model file holds, an idle timeout within a
/// round's) and tokens a header cannot carry.
#[test]
fn plan_files_flags_and_tokens_that_cannot_finish_are_refused_up_front() {
    use hefl::fl::{RoundRules, TrainConfig, plan_for};
    use serde_json::json;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = TrainConfig {
        parties: 3,
        ..TrainConfig::default()
    };
    let good = plan_for(&config, 60_000, None, None, RoundRules::default()).expect("plan");
    let good = serde_json::to_value(&*good).expect("json");
    let edited = |pointer: &str, value: serde_json::Value| {
        let mut plan = good.clone();
        *plan.pointer_mut(pointer).expect(pointer) = value;
        plan
    };
    let layers: Vec<usize> = std::iter::once(784)
        .chain(std::iter::repeat_n(2, 300))
        .chain([10])
        .collect();
    let dirichlet = |alpha: f64| json!({"kind": "dirichlet", "alpha": alpha});
    let plans = [
        (
            "alpha 0",
            edited("/config/partition", dirichlet(0.0)),
            "partition",
        ),
        (
            "alpha -1",
            edited("/config/partition", dirichlet(-1.0)),
            "partition",
        ),
        (
            "alpha 1e-300",
            edited("/config/partition", dirichlet(1e-300)),
            "partition",
        ),
        (
            "2 images, 3 parties",
            edited("/config/train_subset", json!(2)),
            "train",
        ),
        (
            "302 layers",
            edited("/config/layers", json!(layers)),
            "layers",
        ),
        (
            "idle within a round",
            edited("/idle_timeout_ms", json!(5_000)),
            "idle",
        ),
    ];
    std::fs::write(dir.path().join("good.json"), good.to_string()).expect("write");
    let mut cases: Vec<(String, Vec<String>, i32, &str)> = plans
        .into_iter()
        .map(|(what, plan, says)| {
            let path = dir.path().join(format!("{what}.json"));
            std::fs::write(&path, plan.to_string()).expect("write");
            let args = owned(&["--plan", path.to_str().expect("utf-8")]);
            (format!("plan file: {what}"), args, 2, says)
        })
        .collect();
    let many = vec!["2"; 300].join(",");
    for (what, flags, says) in [
        (
            "--hidden with 300 layers",
            vec!["--hidden", many.as_str()],
            "layers",
        ),
        (
            "--partition dirichlet:1e-300",
            vec!["--partition", "dirichlet:1e-300"],
            "partition",
        ),
        (
            "idle within a round",
            vec!["--idle-timeout", "5s", "--round-timeout", "20s"],
            "idle",
        ),
        (
            "subset below the parties",
            vec!["--parties", "3", "--train-subset", "2"],
            "train-subset",
        ),
    ] {
        cases.push((what.to_owned(), owned(&flags), 2, says));
    }
    cases.push((
        "--plan /dev/zero".to_owned(),
        owned(&["--plan", "/dev/zero"]),
        1,
        "/dev/zero",
    ));
    for (what, extra, code, says) in &cases {
        let mut args = owned(&["serve", "--bind", "127.0.0.1:0", "--tokens", "tokens.json"]);
        args.extend(extra.iter().cloned());
        let run = crate::util::hefl_bounded(
            &args,
            dir.path(),
            std::time::Duration::from_secs(10),
            Some("listening on"),
        );
        assert!(!run.stopped, "{what}: the server listened: {}", run.stdout);
        assert_eq!(
            run.status.and_then(|s| s.code()),
            Some(*code),
            "{what}: {}",
            run.stderr
        );
        let message = run.stderr.trim();
        assert!(
            message.starts_with("error: ") && message.lines().count() == 1,
            "{what}: {message}"
        );
        assert!(
            message.contains(says),
            "{what}: {message:?} should say {says:?}"
        );
    }
    // The untouched plan file is served (the negative control).
    let serve_good = ["serve", "--bind", "127.0.0.1:0", "--tokens", "tokens.json"];
    let run = crate::util::hefl_bounded(
        &owned(&[&serve_good[..], &["--plan", "good.json"]].concat()),
        dir.path(),
        std::time::Duration::from_secs(20),
        Some("listening on"),
    );
    assert!(run.stopped, "the good plan: {}", run.stderr);

    // Tokens a header cannot carry.
    for (what, token) in [
        ("CRLF", "0123456789abcdef0123\\r\\n"),
        ("a trailing space", "0123456789abcdef0123 "),
        ("non-ASCII", "0123456789abcdef0123\u{e9}"),
    ] {
        let json = format!(r#"["{token}", "1123456789abcdef0123", "2123456789abcdef0123"]"#);
        let path = dir.path().join("bad-tokens.json");
        std::fs::write(&path, json).expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let args = ["serve", "--bind", "127.0.0.1:0", "--parties", "3"];
        let run = crate::util::hefl_bounded(
            &owned(&[&args[..], &["--tokens", "bad-tokens.json"]].concat()),
            dir.path(),
            std::time::Duration::from_secs(10),
            Some("listening on"),
        );
        assert!(!run.stopped, "{what}: the server listened");
        assert!(
            run.stderr.contains("party 0's token has the character"),
            "{what}: {}",
            run.stderr
        );
    }
}

/// Each cause of an error is printed once: `evaluate` on a file that is not a model, a file
/// that is not there, and a model of another input width each fail with one line that says
/// its cause once.
#[test]
fn evaluate_errors_say_each_cause_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    crate::util::write_tiny_mnist(dir.path());
    std::fs::write(dir.path().join("garbage.safetensors"), b"not a model").expect("write");
    let narrow = hefl::model::Mlp::new(&[5, 3, 10], 1).expect("a model");
    hefl::model::write_model(&dir.path().join("narrow.safetensors"), &narrow).expect("write");
    for (file, cause) in [
        ("garbage.safetensors", "not a valid safetensors file"),
        ("missing.safetensors", "No such file or directory"),
        (
            "narrow.safetensors",
            "the model takes 5 inputs per example, the data has 784",
        ),
    ] {
        let out = crate::util::hefl(
            &["evaluate", "--model", file, "--data-dir", "."],
            dir.path(),
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{file}: {stderr}");
        assert!(stderr.starts_with("error: "), "{file}: {stderr}");
        assert_eq!(stderr.matches(cause).count(), 1, "{file}: {stderr}");
    }
}

/// `bench-network` runs federations over loopback, over HTTP and over HTTPS (its own
/// throwaway certificate, verified by every party), and writes its table, CSV and plot; an
/// unknown mode or transport is refused before anything starts.
#[test]
fn bench_network_writes_its_table_and_csv() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = [
        "bench-network",
        "--parties",
        "3,5",
        "--modes",
        "he-seeds,plain",
        "--rounds",
        "2",
        "--out-dir",
        "out",
    ];
    let out = crate::util::hefl(&args, dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = std::fs::read_to_string(dir.path().join("out/network.csv")).expect("csv");
    for mode in ["he-seeds", "plain"] {
        for transport in ["http", "https"] {
            for parties in [3, 5] {
                let row = format!("{mode},{transport},{parties},");
                assert!(csv.contains(&row), "{row}: {csv}");
            }
        }
    }
    let md = std::fs::read_to_string(dir.path().join("out/network.md")).expect("md");
    for part in [
        "ms per party",
        "fold in memory",
        "transfer over loopback",
        "he-seeds over https",
        "Measured by `hefl bench-network --parties 3,5",
    ] {
        assert!(md.contains(part), "{part}: {md}");
    }
    // No token file is left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .expect("out")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(dir.path().join("out/network.png").exists());
    for (flag, value, error) in [
        ("--modes", "ckks", "unknown mode \"ckks\""),
        ("--transports", "quic", "unknown transport \"quic\""),
    ] {
        let bad = crate::util::hefl(&["bench-network", flag, value], dir.path());
        assert!(!bad.status.success());
        assert!(text(&bad.stderr).contains(error), "{}", text(&bad.stderr));
    }
}

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

/// `hefl identity` writes a private identity and prints its public line; `hefl roster`
/// assembles the roster from public lines and prints its fingerprint, refusing a missing
/// party id; `hefl serve` refuses secure aggregation without a roster, with another key's,
/// and with `--min-parties` below the party count.
#[test]
fn identity_roster_and_serve_refuse_what_does_not_fit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = hefl(&["keygen"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key_id = KeyFile::load(&dir.path().join("keys/hefl.key"))
        .unwrap()
        .key_id()
        .to_string();
    for p in 0..3 {
        let id = format!("p{p}.id");
        let out = hefl(&["identity", "--out", &id], dir.path());
        assert!(out.status.success(), "{}", text(&out.stderr));
        let mode = std::fs::metadata(dir.path().join(&id))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join(format!("p{p}.pub")), &out.stdout).unwrap();
        let again = hefl(&["identity", "--out", &id], dir.path());
        assert!(
            !again.status.success(),
            "an identity is never replaced without --force"
        );
    }
    let missing = hefl(
        &[
            "roster", "--key-id", &key_id, "--party", "0=p0.pub", "--party", "2=p2.pub",
        ],
        dir.path(),
    );
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("not party 1"),
        "{}",
        text(&missing.stderr)
    );
    let out = hefl(
        &[
            "roster",
            "--key",
            "keys/hefl.key",
            "--party",
            "0=p0.pub",
            "--party",
            "1=p1.pub",
            "--party",
            "2=p2.pub",
            "--out",
            "roster.json",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("roster fingerprint: "),
        "{}",
        text(&out.stdout)
    );

    let serve = |extra: &[&str]| {
        let mut args = vec![
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--parties",
            "3",
            "--privacy",
            "he",
            "--secure-agg",
            "strict",
            "--tokens",
            "tokens.json",
        ];
        args.extend_from_slice(extra);
        let out = hefl(&args, dir.path());
        assert!(!out.status.success(), "serve {extra:?} should refuse");
        text(&out.stderr)
    };
    let other_key = KeyFile::from_seed([1; 32]).key_id().to_string();
    assert!(serve(&["--key-id", &key_id]).contains("--roster"));
    let log = serve(&["--key-id", &other_key, "--roster", "roster.json"]);
    assert!(log.contains(&other_key) && log.contains(&key_id), "{log}");
    let log = serve(&[
        "--key-id",
        &key_id,
        "--roster",
        "roster.json",
        "--min-parties",
        "2",
    ]);
    // A roster of min_parties 3 (every party): a plan of 2 would weaken it.
    assert!(
        log.contains("weakens the roster's policy")
            && log.contains("the roster says 3, the plan 2"),
        "{log}"
    );
}

/// `hefl identity` prints two public lines (X25519, Ed25519); `hefl roster --secure-agg
/// robust` reads them, prints rule (a)'s parameters with why and the fingerprint, and refuses
/// a policy that cannot hold (three parties with a colluder and a dropout: use strict), a
/// public file without its Ed25519 line, and robust's flags under strict. Commands that run
/// rounds refuse robust until its protocol is wired in.
#[test]
fn robust_roster_prints_rule_a_and_refuses_what_cannot_hold() {
    use hefl::secagg::{Identity, Mode, PublicLines, RobustPolicy, Roster};

    let dir = tempfile::tempdir().expect("temp dir");
    let key_id = KeyFile::from_seed([3; 32]).key_id().to_string();
    let out = hefl(&["identity", "--out", "p0.id"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let lines: Vec<&str> = printed.lines().collect();
    assert!(
        lines.len() == 2
            && lines[0].starts_with("hefl-x25519-v1 ")
            && lines[1].starts_with("hefl-ed25519-v1 "),
        "{printed}"
    );
    let id = Identity::load(&dir.path().join("p0.id")).unwrap();
    assert_eq!(
        PublicLines::parse(&printed).unwrap(),
        (id.public(), Some(id.signing_public()))
    );
    std::fs::write(dir.path().join("p0.pub"), &out.stdout).unwrap();
    // The other nine parties' public files, as `hefl identity` prints them.
    for p in 1..10u8 {
        let lines = Identity::from_secret_bytes([p; 32]).public_lines();
        std::fs::write(dir.path().join(format!("p{p}.pub")), lines + "\n").unwrap();
    }
    let roster = |parties: u32, extra: &[&str]| {
        let mut args = vec!["roster".to_owned(), "--key-id".into(), key_id.clone()];
        for p in 0..parties {
            args.extend(["--party".into(), format!("{p}=p{p}.pub")]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        hefl(&args, dir.path())
    };

    let robust = [
        "--secure-agg",
        "robust",
        "--max-colluders",
        "3",
        "--max-dropouts",
        "3",
        "--out",
        "robust.json",
    ];
    let out = roster(10, &robust);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "robust secure aggregation, 10 parties, up to 3 colluders and 3 dropouts per round:",
        "  threshold T = 4 (c + 1: 3 colluders never hold enough shares)",
        "  neighbours k = 8 (c + d + 1 rounded up to even; 5 share holders stay alive after 3 dropouts)",
        "  min parties 7 (P - d)",
        "  consistency check off",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line:?} missing from\n{stdout}"
        );
    }
    let written = Roster::parse(&std::fs::read(dir.path().join("robust.json")).unwrap()).unwrap();
    let (expected, _) = RobustPolicy::rule_a(10, 3, 3, None, None, false).unwrap();
    assert_eq!(written.policy().mode, Mode::Robust(expected));
    assert_eq!(written.policy().min_parties, 7);
    assert!(
        stdout.contains(&format!("roster fingerprint: {}", written.fingerprint())),
        "{stdout}"
    );

    // Overrides, named as such; a weaker one is refused.
    let out = roster(
        10,
        &[
            &robust[..],
            &[
                "--threshold",
                "5",
                "--min-parties",
                "8",
                "--consistency-check",
                "--force",
            ],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("threshold T = 5 (--threshold; rule (a) gives c + 1 = 4)")
            && stdout.contains("min parties 8 (--min-parties; rule (a) gives P - d = 7)")
            && stdout.contains("consistency check on"),
        "{stdout}"
    );
    let out = roster(
        10,
        &[&robust[..], &["--neighbours", "6", "--force"]].concat(),
    );
    assert_refused(&out, "only 3 share holders may be alive");

    // Three parties cannot withstand a colluder and a dropout: the message says strict.
    let out = roster(
        3,
        &[
            "--secure-agg",
            "robust",
            "--max-colluders",
            "1",
            "--max-dropouts",
            "1",
        ],
    );
    assert_refused(&out, "fewer than the threshold T = 2");
    assert_refused(&out, "use `--secure-agg strict`");
    // Robust without its numbers, and robust's flags under strict.
    let out = roster(3, &["--secure-agg", "robust", "--max-colluders", "1"]);
    assert_refused(&out, "--max-dropouts");
    let out = roster(3, &["--max-colluders", "1", "--out", "strict.json"]);
    assert_refused(&out, "are for --secure-agg robust");

    // An old one-line public file: strict takes it (no signing keys); robust names the party.
    let old = format!(
        "{}\n",
        Identity::from_secret_bytes([1; 32]).public().to_line()
    );
    std::fs::write(dir.path().join("p1.pub"), old).unwrap();
    let out = roster(3, &["--out", "strict.json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let strict = Roster::parse(&std::fs::read(dir.path().join("strict.json")).unwrap()).unwrap();
    assert_eq!(strict.signing_keys(), None);
    let out = roster(10, &[&robust[..], &["--force"]].concat());
    assert_refused(&out, "no Ed25519 key for party 1");
    assert_refused(&out, "`hefl-ed25519-v1` line");

    // Every flag is explained.
    let help = text(&hefl(&["roster", "--help"], dir.path()).stdout);
    for flag in [
        "--max-colluders",
        "--max-dropouts",
        "--neighbours",
        "--threshold",
        "--consistency-check",
    ] {
        assert!(help.contains(flag), "{flag} missing from\n{help}");
    }

    // Commands that run rounds refuse robust for now: its flag, and a party's robust roster.
    let not_wired =
        "secure aggregation mode robust: the protocol is not wired into this command yet";
    let out = hefl(
        &["train", "--privacy", "he", "--secure-agg", "robust"],
        dir.path(),
    );
    assert_refused(&out, not_wired);
    let current = Roster::parse(&std::fs::read(dir.path().join("robust.json")).unwrap()).unwrap();
    let fingerprint = current.fingerprint().to_string();
    let out = hefl(
        &[
            "join",
            "--server",
            "http://127.0.0.1:9",
            "--party",
            "0",
            "--token",
            "t",
            "--identity",
            "p0.id",
            "--roster",
            "robust.json",
            "--roster-fingerprint",
            &fingerprint,
            "--retry-for",
            "1s",
        ],
        dir.path(),
    );
    assert_refused(&out, not_wired);
}
