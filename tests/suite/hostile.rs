//! Hostile values for every value-taking flag of every command: the binary refuses them with
//! a short error or accepts them, and never panics (exit code 101) or aborts (a signal).
//!
//! The flags are read from `hefl <command> --help`, so flags added later are covered too.
//! Every invocation runs in a fresh folder, on a tiny synthetic MNIST, and is killed after
//! [`LIMIT`] (or as soon as a server says `listening on`): a value that is legitimately
//! accepted may start real work, and only its start is under test here.

use crate::util::{Bounded, hefl_bounded, write_tiny_mnist};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Every subcommand (an explicit list: a new command must be added here).
const COMMANDS: [&str; 8] = [
    "train",
    "demo",
    "keygen",
    "serve",
    "dp-sweep",
    "bench-report",
    "dp-epsilon",
    "join",
];

/// Flags left out, with the reason.
const SKIP: [(&str, &str, &str); 2] = [
    (
        "*",
        "--data-dir",
        "pinned to the tiny synthetic MNIST: any other folder would download MNIST",
    ),
    (
        "bench-report",
        "--out-dir",
        "an accepted folder runs the whole benchmark (tens of seconds); the bench-report \
         test covers it",
    ),
];

/// Time one invocation may take before it is killed (and logged).
const LIMIT: Duration = Duration::from_secs(5);
/// Invocations run at once.
const PARALLEL: usize = 4;
/// Entries of the huge list, given as two occurrences of half as many (one argument may
/// hold at most 128 KiB on Linux; list flags append occurrences).
const HUGE_LIST: usize = 100_000;

/// The values every flag gets.
fn hostile_values() -> Vec<(String, Vec<String>)> {
    let mut values: Vec<(String, Vec<String>)> = [
        "0",
        "-1",
        "NaN",
        "inf",
        "-inf",
        "1e400",
        "18446744073709551615",
        "18446744073709551616",
        "",
    ]
    .iter()
    .map(|v| (format!("{v:?}"), vec![v.to_string()]))
    .collect();
    let half = vec!["1"; HUGE_LIST / 2].join(",");
    values.push((format!("{HUGE_LIST} entries"), vec![half.clone(), half]));
    values
}

/// The value-taking long flags of `hefl command`, from its `--help`.
fn value_flags(command: &str, cwd: &Path) -> Vec<String> {
    let help = hefl_bounded(
        &[command.to_string(), "--help".to_string()],
        cwd,
        LIMIT,
        None,
    );
    assert!(
        help.status.is_some_and(|s| s.success()),
        "{command} --help: {}",
        help.stderr
    );
    let flags: Vec<String> = help
        .stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let mut word = words.next()?;
            if word.starts_with('-') && !word.starts_with("--") {
                word = words.next()?; // "-h," before "--help"
            }
            let flag = word.strip_prefix("--")?;
            let takes_value = words.next().is_some_and(|w| w.starts_with('<'));
            (takes_value && !flag.is_empty()).then(|| format!("--{flag}"))
        })
        .collect();
    flags
}

/// Arguments that keep an accepted run small, by flag (a fuzzed flag replaces its own).
fn base_args(command: &str, data: &str) -> Vec<(&'static str, String)> {
    let train = || {
        vec![
            ("--data-dir", data.to_string()),
            ("--epochs", "1".into()),
            ("--hidden", "4".into()),
            ("--parties", "2".into()),
            ("--train-subset", "60".into()),
            ("--test-subset", "20".into()),
        ]
    };
    match command {
        "train" => train(),
        "demo" => [train(), vec![("--out-dir", "out".into())]].concat(),
        "dp-sweep" => [
            train(),
            vec![("--epsilons", "1".into()), ("--out-dir", "out".into())],
        ]
        .concat(),
        "serve" => vec![
            ("--bind", "127.0.0.1:0".into()),
            ("--tokens", "tokens.json".into()),
            ("--epochs", "1".into()),
            ("--train-size", "60".into()),
        ],
        "join" => vec![
            // Nothing listens on the discard port: the join fails at once.
            ("--server", "http://127.0.0.1:9".into()),
            ("--party", "0".into()),
            ("--token", "0123456789abcdef0123".into()),
            ("--data-dir", data.to_string()),
        ],
        "dp-epsilon" => vec![
            ("--sampling-rate", "0.01".into()),
            ("--noise-multiplier", "1".into()),
            ("--steps", "10".into()),
        ],
        "bench-report" => vec![("--quick", String::new())],
        _ => vec![],
    }
}

struct Case {
    label: String,
    args: Vec<String>,
    value_len: usize,
}

fn cases(root: &Path, data: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    for command in COMMANDS {
        for flag in value_flags(command, root) {
            if SKIP
                .iter()
                .any(|(c, f, _)| (*c == "*" || *c == command) && *f == flag)
            {
                continue;
            }
            // --token and --tokens exclude each other: fuzzing one drops the other.
            let replaced = |base: &str| base == flag || (flag == "--tokens" && base == "--token");
            let base: Vec<String> = base_args(command, data)
                .into_iter()
                .filter(|(f, _)| !replaced(f))
                .flat_map(|(f, v)| {
                    if v.is_empty() {
                        vec![f.to_string()]
                    } else {
                        vec![f.to_string(), v]
                    }
                })
                .collect();
            for (name, values) in hostile_values() {
                let mut args = vec![command.to_string()];
                args.extend(base.iter().cloned());
                // --flag=VALUE, so that "-1" is a value and not a flag.
                args.extend(values.iter().map(|v| format!("{flag}={v}")));
                cases.push(Case {
                    label: format!("{command} {flag}={name}"),
                    args,
                    value_len: values.iter().map(String::len).sum(),
                });
            }
        }
    }
    cases
}

/// What is wrong with an outcome, if anything.
fn problem(case: &Case, run: &Bounded) -> Option<String> {
    let status = run.status?; // killed by us: not a panic (logged by the caller)
    if let Some(signal) = status.signal() {
        return Some(format!("killed by signal {signal}: {}", run.stderr));
    }
    match status.code() {
        Some(101) => Some(format!("panicked: {}", run.stderr)),
        Some(0) => None,
        _ => {
            let limit = 2000 + 2 * case.value_len;
            if !run.stderr.contains("error") {
                Some(format!(
                    "refused without an error message: {:?}",
                    run.stderr
                ))
            } else if run.stderr.len() > limit {
                Some(format!(
                    "an error of {} bytes (more than {limit})",
                    run.stderr.len()
                ))
            } else {
                None
            }
        }
    }
}

#[test]
fn hostile_flag_values_never_panic() {
    let root = tempfile::tempdir().expect("temp dir");
    let data_dir = root.path().join("mnist");
    std::fs::create_dir(&data_dir).expect("data folder");
    write_tiny_mnist(&data_dir);
    let data = data_dir.to_string_lossy().into_owned();
    let cases = cases(root.path(), &data);
    // bench-report's one value flag is skipped (see SKIP).
    for command in COMMANDS.into_iter().filter(|c| *c != "bench-report") {
        assert!(
            cases.iter().any(|c| c.args[0] == command),
            "no flags found for {command}"
        );
    }
    let started = Instant::now();
    // The base arguments alone work (a server listens): a refusal below is the value's.
    for command in ["train", "demo", "keygen", "serve", "dp-sweep", "dp-epsilon"] {
        let cwd = root.path().join(format!("base-{command}"));
        std::fs::create_dir(&cwd).expect("run folder");
        let mut args = vec![command.to_string()];
        for (flag, value) in base_args(command, &data) {
            args.push(flag.to_string());
            args.push(value);
        }
        let run = hefl_bounded(&args, &cwd, 4 * LIMIT, Some("listening on"));
        assert!(
            run.stopped || run.status.is_some_and(|s| s.success()),
            "{args:?}: {}",
            run.stderr
        );
    }
    let queue = Mutex::new(cases.iter().enumerate());
    let problems = Mutex::new(Vec::new());
    let killed = Mutex::new(Vec::new());
    let accepted = Mutex::new(0usize);
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                    let Some((i, case)) = next else { break };
                    let cwd = root.path().join(format!("run-{i}"));
                    std::fs::create_dir(&cwd).expect("run folder");
                    let run = hefl_bounded(&case.args, &cwd, LIMIT, Some("listening on"));
                    if run.timed_out {
                        killed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(case.label.clone());
                    }
                    if run.stopped || run.status.is_some_and(|s| s.success()) {
                        *accepted.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                    }
                    if let Some(p) = problem(case, &run) {
                        problems
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("{}: {p}", case.label));
                    }
                    let _ = std::fs::remove_dir_all(&cwd);
                }
            });
        }
    });
    let killed = killed.into_inner().unwrap_or_else(|p| p.into_inner());
    eprintln!(
        "{} invocations in {:.1} s, {} accepted; {} killed at the {LIMIT:?} limit (accepted \
         and still working): {killed:?}; skipped: {SKIP:?}",
        cases.len(),
        started.elapsed().as_secs_f64(),
        accepted.into_inner().unwrap_or_else(|p| p.into_inner()),
        killed.len()
    );
    let problems = problems.into_inner().unwrap_or_else(|p| p.into_inner());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
