//! Helpers shared by the test modules.

use hefl::data::Mnist;
use std::path::{Path, PathBuf};

/// The synthetic task most tests train on: 600 training and 200 test examples of ten
/// well-separated classes.
pub fn tiny_mnist() -> Mnist {
    hefl::data::synthetic::separable_mnist(600, 200)
}

/// Writes [`tiny_mnist`] as IDX files into `dir`, for the `hefl` binary to read.
pub fn write_tiny_mnist(dir: &Path) {
    hefl::data::synthetic::write_idx_dir(dir, 600, 200).expect("write the synthetic IDX files");
}

/// Real MNIST from `$MNIST_DIR`, or `None` with the reason printed (the test then skips).
pub fn real_mnist() -> Option<Mnist> {
    let Some(dir) = std::env::var_os("MNIST_DIR").map(PathBuf::from) else {
        eprintln!("skipped: MNIST_DIR is not set (CI sets MNIST_DIR=../shared/mnist)");
        return None;
    };
    match hefl::data::load_mnist_dir(&dir) {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("skipped: no MNIST in {}: {e}", dir.display());
            None
        }
    }
}

/// Runs `hefl args` in `cwd` to the end and returns what it printed and its status.
pub fn hefl(args: &[&str], cwd: &Path) -> std::process::Output {
    hefl_with_env(args, cwd, &[])
}

/// Runs `hefl args` in `cwd` with the environment variables `env` set.
pub fn hefl_with_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hefl"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(cwd)
        .output()
        .expect("run hefl")
}

/// How a bounded run of the `hefl` binary ended.
pub struct Bounded {
    /// The exit status; `None` when it was killed at the time limit or at `stop_at`.
    pub status: Option<std::process::ExitStatus>,
    /// Killed because it ran past the time limit.
    pub timed_out: bool,
    /// Killed because stdout printed a line starting with `stop_at`.
    pub stopped: bool,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
    /// Wall time until it exited or was killed.
    pub elapsed: std::time::Duration,
}

/// Runs `hefl args` in `cwd`, killing it after `limit`, or as soon as a line of its stdout
/// starts with `stop_at` (e.g. a server's `listening on`).
pub fn hefl_bounded(
    args: &[String],
    cwd: &Path,
    limit: std::time::Duration,
    stop_at: Option<&str>,
) -> Bounded {
    use std::io::{BufRead, Read};
    use std::process::{Command, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hefl"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hefl");
    let seen = Arc::new(AtomicBool::new(false));
    let stdout = child.stdout.take().expect("piped stdout");
    let marker = stop_at.map(str::to_owned);
    let out_reader = {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut text = String::new();
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if marker.as_deref().is_some_and(|m| line.starts_with(m)) {
                    seen.store(true, Ordering::SeqCst);
                }
                text.push_str(&line);
                text.push('\n');
            }
            text
        })
    };
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let (mut timed_out, mut stopped) = (false, false);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for hefl") {
            break Some(status);
        }
        if seen.load(Ordering::SeqCst) || started.elapsed() > limit {
            stopped = seen.load(Ordering::SeqCst);
            timed_out = !stopped;
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    Bounded {
        status,
        timed_out,
        stopped,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
        elapsed,
    }
}
