//! The `hefl` binary as a user runs it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use hefl::he::keys::KeyFile;

use crate::util::write_tiny_mnist;

fn hefl(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hefl"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run hefl")
}

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
    let out = hefl(
        &[
            "dp-epsilon",
            "--sampling-rate",
            "0.04",
            "--noise-multiplier",
            "1.5",
            "--steps",
            "2250",
            "--delta",
            "1e-5",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let last: f64 = stdout
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("last line is not a number: {stdout}"));
    assert!((last - 7.32911117143).abs() < 1e-6, "{last}");

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
    // Every party count in both modes; the bytes are the real message sizes.
    let aggregation = std::fs::read_to_string(bench.join("aggregation.csv")).unwrap();
    let rows: Vec<&str> = aggregation
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert_eq!(rows.len(), 1 + 2 * 10, "{aggregation}");
    assert!(rows.iter().any(|r| r.starts_with("he,1000,")));
    let bytes = std::fs::read_to_string(bench.join("bytes.csv")).unwrap();
    assert!(bytes.contains("he,1638536,1638536,407080"), "{bytes}");
    assert!(bytes.contains("plain,814188,814188,407080"), "{bytes}");
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
