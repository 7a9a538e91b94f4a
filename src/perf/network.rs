//! Whole rounds over HTTP as parties grow (`hefl bench-network`): the real `hefl serve`
//! binary on loopback, and a load generator of P parties in this process, one thread each,
//! every party with its own token and its own sealed upload, made before any timing.
//!
//! A round's latency runs from the first upload sent to the moment every party holds the
//! complete sum (each party submits, then long-polls for the sum, as `hefl join` does). The
//! server's CPU time and peak resident memory come from `/proc/PID`; the load generator's
//! CPU time from `/proc/self`, so a reader knows how much of the two cores it took.
//!
//! Each party's upload is sealed once, for round 0 of the server's run, and restamped for
//! each later round ([`Summable::restamp`]: the header's context, nothing else): the server
//! folds exactly what it folds in a real run, and the benchmark does not spend P x R
//! encryptions before it starts.

use super::PerfError;
use crate::fl::{
    Observer, Party, PartyId, Privacy, Retry, Round, Summable, Uplink, UplinkError, ValidPlan,
};
use crate::he::keys::{KeyFile, SecretKey};
use crate::he::{CompactVector, Context};
use crate::transport::http::HttpUplink;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// What the server sums, and how an `he` sum comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetMode {
    /// Fixed-point words in the clear.
    Plain,
    /// `he`, the sum's seeds sent back (each client regenerates the masks).
    HeSeeds,
    /// `he`, the server's switched mask sent back.
    HeSwitched,
}

impl NetMode {
    /// The mode's name in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::HeSeeds => "he-seeds",
            Self::HeSwitched => "he-switched",
        }
    }

    /// The mode named `name` ([`NetMode::name`]).
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Plain, Self::HeSeeds, Self::HeSwitched]
            .into_iter()
            .find(|m| m.name() == name)
    }

    fn serve_flags(self, key_id: &str) -> Vec<String> {
        let he = |form: &str| {
            ["--privacy", "he", "--key-id", key_id, "--download", form]
                .map(String::from)
                .to_vec()
        };
        match self {
            Self::Plain => vec!["--privacy".into(), "plain".into()],
            Self::HeSeeds => he("seeds"),
            Self::HeSwitched => he("switched"),
        }
    }
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct NetworkOptions {
    /// The `hefl` binary to run as the server.
    pub hefl: PathBuf,
    /// A directory for the servers' token files.
    pub work_dir: PathBuf,
    /// Party counts, each a federation of its own.
    pub parties: Vec<u32>,
    /// Modes, each at every party count.
    pub modes: Vec<NetMode>,
    /// Rounds timed per federation (after one round not timed, which warms connections).
    pub rounds: u64,
}

/// One federation's rounds.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkRow {
    /// The mode.
    pub mode: NetMode,
    /// Parties.
    pub parties: u32,
    /// Rounds timed.
    pub rounds: u64,
    /// Round latency, seconds: median, 95th percentile (nearest rank) and maximum.
    pub median: f64,
    /// 95th percentile of the round latencies, seconds.
    pub p95: f64,
    /// Slowest round, seconds.
    pub max: f64,
    /// Server CPU seconds (user + system) per timed round.
    pub server_cpu_per_round: f64,
    /// Server peak resident memory, bytes (`VmHWM`).
    pub server_peak_bytes: u64,
    /// Load generator CPU seconds per timed round (all P parties).
    pub client_cpu_per_round: f64,
    /// Bytes one party uploads per round (the message; HTTP headers not counted).
    pub upload_bytes: usize,
    /// Bytes one party downloads per round (the sum).
    pub download_bytes: usize,
    /// Requests the parties had to retry (refused or dropped connections).
    pub retries: u64,
}

/// Why a network measurement could not run.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The server could not be started or did not say where it listens.
    #[error("starting hefl serve: {0}")]
    Serve(String),
    /// A party's request failed for good.
    #[error("party {party}: {source}")]
    Party {
        /// The party.
        party: u32,
        /// What failed.
        source: UplinkError,
    },
    /// The plan, key or sealing failed.
    #[error(transparent)]
    Setup(Box<PerfError>),
    /// Reading the server's tokens.
    #[error("reading the tokens {path}: {reason}")]
    Tokens {
        /// The tokens file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl From<PerfError> for NetworkError {
    fn from(e: PerfError) -> Self {
        Self::Setup(Box::new(e))
    }
}

/// Counts the retries a party's requests needed.
#[derive(Default)]
struct Retries(u64);

impl Observer for Retries {
    fn note(&mut self, _message: &str) {
        self.0 += 1;
    }
}

/// A running `hefl serve`, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(
        options: &NetworkOptions,
        mode: NetMode,
        parties: u32,
        key_id: &str,
    ) -> Result<(Self, PathBuf), NetworkError> {
        let tokens = options
            .work_dir
            .join(format!("tokens-{}-{parties}.json", mode.name()));
        let _ = std::fs::remove_file(&tokens);
        // One round per epoch, one more than the warm-up and timed rounds, so that the server
        // is still up (its run not over) when its usage is read. A round deadline far beyond
        // any round here.
        let rounds = (options.rounds + 2).to_string();
        let mut child = Command::new(&options.hefl)
            .args(["serve", "--bind", "127.0.0.1:0", "--parties"])
            .arg(parties.to_string())
            .args(["--rounds-per-epoch", "1", "--epochs", &rounds])
            .args(["--round-timeout", "10m", "--idle-timeout", "20m"])
            .args(mode.serve_flags(key_id))
            .arg("--tokens")
            .arg(&tokens)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| NetworkError::Serve(e.to_string()))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.as_mut() {
            std::io::BufReader::new(out)
                .read_line(&mut line)
                .map_err(|e| NetworkError::Serve(e.to_string()))?;
        }
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .map(str::to_owned);
        let server = Self {
            child,
            url: url.unwrap_or_default(),
        };
        if server.url.is_empty() {
            return Err(NetworkError::Serve(format!(
                "no address in its first line: {line:?}"
            )));
        }
        Ok((server, tokens))
    }

    /// (user + system CPU seconds, peak resident bytes) of the server process.
    fn usage(&self) -> (f64, u64) {
        process_usage(&format!("/proc/{}", self.child.id()))
    }
}

/// (user + system CPU seconds, peak resident bytes) of the process at `proc_dir`
/// (`/proc/PID` or `/proc/self`); zeros where `/proc` is unavailable.
fn process_usage(proc_dir: &str) -> (f64, u64) {
    let cpu = std::fs::read_to_string(format!("{proc_dir}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces) end at its ')'.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks: u64 =
                fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            // Linux reports in clock ticks of 1/100 s (USER_HZ) on every architecture hefl
            // builds for.
            Some(ticks as f64 / 100.0)
        })
        .unwrap_or(0.0);
    let peak = std::fs::read_to_string(format!("{proc_dir}/status"))
        .ok()
        .and_then(|s| super::proc_kib(&s, "VmHWM"))
        .map_or(0, |kib| kib * 1024);
    (cpu, peak)
}

/// Party `party`'s upload for round 0 of `plan`: a real update (a gradient-sized vector of
/// small values, different for every party) sealed by the party state machine.
fn sealed_upload(
    plan: &ValidPlan,
    party: u32,
    key: Option<Arc<SecretKey>>,
) -> Result<Vec<u8>, PerfError> {
    let mut machine = Party::for_plan(plan, PartyId(party), key)?;
    let len = machine.model().len();
    let update: Vec<f32> = (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ party) as f32 / u32::MAX as f32 - 0.5)
        .map(|v| v * 1e-3)
        .collect();
    let mut cost = Default::default();
    let sealed = machine.seal(Round(0), &update, 1, None, &mut cost)?;
    Ok(sealed.bytes)
}

/// `bytes` (an upload of `plan`'s mode) restamped as `context`.
fn restamp(plan: &ValidPlan, bytes: &mut [u8], context: Context) -> Result<(), PerfError> {
    match plan.config.privacy {
        Privacy::He => <CompactVector as Summable>::restamp(bytes, context)?,
        Privacy::Plain | Privacy::Dp => crate::fl::PlainSum::restamp(bytes, context)?,
    }
    Ok(())
}

/// The latency of each round: from the earliest upload sent to the latest sum received.
fn latencies(starts: &[Vec<Instant>], ends: &[Vec<Instant>], rounds: usize) -> Vec<f64> {
    (0..rounds)
        .map(|r| {
            let first = starts.iter().map(|s| s[r]).min();
            let last = ends.iter().map(|e| e[r]).max();
            match (first, last) {
                (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
                _ => 0.0,
            }
        })
        .collect()
}

/// The `q`-quantile of `values` by nearest rank (`values` non-empty).
fn nearest_rank(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Runs one federation of `parties` in `mode` for `options.rounds` timed rounds.
pub fn measure(
    options: &NetworkOptions,
    mode: NetMode,
    parties: u32,
) -> Result<NetworkRow, NetworkError> {
    let key = KeyFile::generate().map_err(PerfError::from)?;
    let key_id = key.key_id().to_string();
    let key = Arc::new(key.secret_key().map_err(PerfError::from)?);
    let (server, tokens_path) = Server::start(options, mode, parties, &key_id)?;
    let tokens: Vec<String> = std::fs::read(&tokens_path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
        .map_err(|reason| NetworkError::Tokens {
            path: tokens_path.clone(),
            reason,
        })?;
    let retry = Retry {
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_secs(1),
        give_up_after: Duration::from_secs(120),
    };
    let mut first = HttpUplink::new(&server.url, 0, &tokens[0]);
    let plan = retry
        .call("plan", &mut Retries::default(), || first.plan())
        .map_err(|source| NetworkError::Party { party: 0, source })?;
    let run = plan.fingerprint();
    let he_key = (plan.config.privacy == Privacy::He).then_some(key);
    let uploads: Vec<Vec<u8>> = (0..parties)
        .map(|p| sealed_upload(&plan, p, he_key.clone()))
        .collect::<Result<_, _>>()?;
    let upload_bytes = uploads.first().map_or(0, Vec::len);

    let total = options.rounds as usize + 1;
    let barrier = Arc::new(Barrier::new(parties as usize + 1));
    let download = Arc::new(Mutex::new(0usize));
    let threads: Vec<_> = uploads
        .into_iter()
        .enumerate()
        .map(|(p, mut bytes)| {
            let (barrier, download, plan) =
                (Arc::clone(&barrier), Arc::clone(&download), plan.clone());
            let (url, token) = (server.url.clone(), tokens[p].clone());
            let party = p as u32;
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(
                    move || -> Result<(Vec<Instant>, Vec<Instant>, u64), NetworkError> {
                        let failed = |source| NetworkError::Party { party, source };
                        let mut uplink = HttpUplink::new(&url, party, &token);
                        let mut retries = Retries::default();
                        retry
                            .call("plan", &mut retries, || uplink.plan())
                            .map_err(failed)?;
                        retry
                            .call("ready", &mut retries, || uplink.ready())
                            .map_err(failed)?;
                        let (mut starts, mut ends) = (Vec::new(), Vec::new());
                        for r in 0..total as u64 {
                            let context = Context {
                                run,
                                round: r,
                                party,
                            };
                            restamp(&plan, &mut bytes, context).map_err(NetworkError::from)?;
                            barrier.wait();
                            starts.push(Instant::now());
                            retry
                                .call("submit", &mut retries, || uplink.submit(Round(r), &bytes))
                                .map_err(failed)?;
                            let sum = retry
                                .call("fetch", &mut retries, || uplink.fetch(Round(r), None))
                                .map_err(failed)?;
                            ends.push(Instant::now());
                            if party == 0 {
                                *download.lock().unwrap_or_else(|p| p.into_inner()) =
                                    sum.bytes.len();
                            }
                            barrier.wait();
                        }
                        Ok((starts, ends, retries.0))
                    },
                )
                .map_err(|e| NetworkError::Serve(format!("spawning a party thread: {e}")))
        })
        .collect::<Result<_, _>>()?;
    // Round 0 warms the connections; the timed rounds follow. The CPU clocks are read
    // while every party waits at the barrier between two rounds.
    let (mut server_before, mut client_before) = (0.0, 0.0);
    for r in 0..total {
        if r == 1 {
            (server_before, client_before) = (server.usage().0, process_usage("/proc/self").0);
        }
        barrier.wait(); // the round starts
        barrier.wait(); // every party holds the sum
    }
    let (server_after, server_peak) = server.usage();
    let client_after = process_usage("/proc/self").0;
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    let mut retries = 0;
    for thread in threads {
        let (s, e, n) = thread
            .join()
            .map_err(|_| NetworkError::Serve("a party thread panicked".into()))??;
        starts.push(s[1..].to_vec());
        ends.push(e[1..].to_vec());
        retries += n;
    }
    drop(server);
    // The tokens were this federation's only; nothing else will use them.
    let _ = std::fs::remove_file(&tokens_path);
    let _ = std::fs::remove_file(crate::transport::Tokens::operator_path(&tokens_path));
    let rounds = options.rounds;
    let times = latencies(&starts, &ends, rounds as usize);
    let download_bytes = *download.lock().unwrap_or_else(|p| p.into_inner());
    Ok(NetworkRow {
        mode,
        parties,
        rounds,
        median: nearest_rank(&times, 0.5),
        p95: nearest_rank(&times, 0.95),
        max: nearest_rank(&times, 1.0),
        server_cpu_per_round: (server_after - server_before) / rounds as f64,
        server_peak_bytes: server_peak,
        client_cpu_per_round: (client_after - client_before) / rounds as f64,
        upload_bytes,
        download_bytes,
        retries,
    })
}

/// Every federation of `options`, in order of mode then parties; `progress` hears of each.
pub fn run(
    options: &NetworkOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<NetworkRow>, NetworkError> {
    let mut rows = Vec::new();
    for &mode in &options.modes {
        for &parties in &options.parties {
            progress(&format!("{} with {parties} parties", mode.name()));
            rows.push(measure(options, mode, parties)?);
        }
    }
    Ok(rows)
}

/// The in-memory fold of the same round, for each of `parties`: seconds per round of the
/// server's fold of P distinct `he` uploads (seeds form) in this process, no HTTP
/// ([`super::workloads::Submissions`], as `bench-report` times it).
pub fn fold_seconds(parties: &[u32]) -> Result<Vec<(u32, f64)>, PerfError> {
    let Some(&most) = parties.iter().max() else {
        return Ok(Vec::new());
    };
    let key = KeyFile::generate()?.secret_key()?;
    let submissions =
        super::workloads::Submissions::he(&key, most.max(2), crate::he::DownloadForm::Seeds)?;
    parties
        .iter()
        .map(|&p| {
            let timing = super::measure(Duration::from_millis(200), 3, 50, || {
                submissions.round(p.max(1))
            })?;
            Ok((p, timing.median))
        })
        .collect()
}

/// Draws the median round latency of every mode against parties (log-log), with the
/// in-memory `fold` (seconds per round, [`fold_seconds`]) on the same axes, into a PNG at
/// `path`.
#[cfg(feature = "plot")]
pub fn plot(
    rows: &[NetworkRow],
    fold: &[(u32, f64)],
    path: &std::path::Path,
) -> Result<(), crate::report::PlotError> {
    use crate::report::{Axis, LinePlot, Scale, Series, SeriesStyle, plot_lines};
    let mut modes: Vec<NetMode> = rows.iter().map(|r| r.mode).collect();
    modes.dedup();
    let mut series: Vec<Series> = modes
        .iter()
        .map(|&mode| Series {
            name: format!("{} over HTTP (median)", mode.name()),
            points: rows
                .iter()
                .filter(|r| r.mode == mode)
                .map(|r| (f64::from(r.parties), r.median * 1e3))
                .collect(),
            style: SeriesStyle::LineAndMarkers,
            color: None,
        })
        .collect();
    series.push(Series {
        name: "he-seeds fold in memory".into(),
        points: fold.iter().map(|&(p, s)| (f64::from(p), s * 1e3)).collect(),
        style: SeriesStyle::LineAndMarkers,
        color: None,
    });
    plot_lines(
        path,
        &LinePlot {
            title: "Round latency against parties, loopback".into(),
            x: Axis::fitted("parties", Scale::Log),
            y: Axis::fitted("round latency (ms)", Scale::Log),
            series,
            legend: plotters::prelude::SeriesLabelPosition::UpperLeft,
        },
    )
}

/// The rows as CSV.
pub fn csv(rows: &[NetworkRow]) -> String {
    let mut out = String::from(
        "mode,parties,rounds,median_s,p95_s,max_s,server_cpu_s_per_round,server_peak_bytes,client_cpu_s_per_round,upload_bytes,download_bytes,retries\n",
    );
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{:.6},{:.6},{:.6},{:.6},{},{:.6},{},{},{}\n",
            r.mode.name(),
            r.parties,
            r.rounds,
            r.median,
            r.p95,
            r.max,
            r.server_cpu_per_round,
            r.server_peak_bytes,
            r.client_cpu_per_round,
            r.upload_bytes,
            r.download_bytes,
            r.retries
        ));
    }
    out
}

/// The rows as a markdown table (with the in-memory `fold` of the same P, where measured),
/// then per mode the least-squares line of the median latency against parties (ms per
/// party) and the log-log slope above 30 parties.
pub fn markdown(rows: &[NetworkRow], fold: &[(u32, f64)]) -> String {
    let mut md = String::from(
        "| mode | parties | median | p95 | max | he-seeds fold in memory | server CPU / round | server peak | load generator CPU / round | upload | download | retries |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let folded = fold
            .iter()
            .find(|(p, _)| *p == r.parties)
            .map_or("".to_owned(), |(_, s)| format!("{:.2} ms", s * 1e3));
        md.push_str(&format!(
            "| {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {folded} | {:.3} s | {:.0} MiB | {:.3} s | {} | {} | {} |\n",
            r.mode.name(),
            r.parties,
            r.median * 1e3,
            r.p95 * 1e3,
            r.max * 1e3,
            r.server_cpu_per_round,
            r.server_peak_bytes as f64 / (1 << 20) as f64,
            r.client_cpu_per_round,
            r.upload_bytes,
            r.download_bytes,
            r.retries
        ));
    }
    let mut modes: Vec<NetMode> = rows.iter().map(|r| r.mode).collect();
    modes.dedup();
    for mode in modes {
        let of_mode: Vec<&NetworkRow> = rows.iter().filter(|r| r.mode == mode).collect();
        let linear: Vec<(f64, f64)> = of_mode
            .iter()
            .map(|r| (f64::from(r.parties), r.median * 1e3))
            .collect();
        let log: Vec<(f64, f64)> = of_mode
            .iter()
            .filter(|r| r.parties > 30)
            .map(|r| (f64::from(r.parties).ln(), (r.median * 1e3).ln()))
            .collect();
        if let Some(fit) = super::LinearFit::of(&linear) {
            md.push_str(&format!(
                "\n{}: {:.3} ms per party + {:.1} ms (least squares, R² {:.3})",
                mode.name(),
                fit.slope,
                fit.intercept,
                fit.r_squared
            ));
            if let Some(log_fit) = super::LinearFit::of(&log) {
                md.push_str(&format!(
                    "; log-log slope above 30 parties {:.2}",
                    log_fit.slope
                ));
            }
            md.push('\n');
        }
    }
    md
}
