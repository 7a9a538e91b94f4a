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
//!
//! Every federation runs over plain HTTP and over HTTPS ([`Transport`]): for HTTPS the
//! benchmark makes a throwaway self-signed certificate for 127.0.0.1 ([`ThrowawayCert`],
//! rcgen; its key lives in a private temporary directory removed at the end, and none ships
//! with hefl), serves with it, and every party verifies the server against it.
//!
//! Beside each round's latency stand the two costs it cannot avoid: the server's fold of the
//! same P uploads in memory ([`fold_seconds`], no HTTP) and the time to move the round's bytes
//! (P uploads and P downloads) through one loopback TCP connection ([`loopback_seconds`], no
//! HTTP, no TLS). What is left is the protocol's own cost: HTTP, TLS, scheduling.

use super::PerfError;
use super::workloads::Submissions;
use crate::fl::{
    Observer, Party, PartyId, PlainSum, Privacy, Retry, Round, Summable, Uplink, UplinkError,
    ValidPlan,
};
use crate::he::keys::{KeyFile, SecretKey};
use crate::he::{CompactVector, Context, DownloadForm};
use crate::transport::http::HttpUplink;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
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

    /// How an `he` sum comes back (`None`: plain).
    fn form(self) -> Option<DownloadForm> {
        match self {
            Self::Plain => None,
            Self::HeSeeds => Some(DownloadForm::Seeds),
            Self::HeSwitched => Some(DownloadForm::Switched),
        }
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

/// How the parties' requests travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// HTTP/1.1 in clear text.
    Http,
    /// HTTP/1.1 over TLS (rustls on both sides), the server's certificate verified by every
    /// party.
    Https,
}

impl Transport {
    /// The transport's name in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    /// The transport named `name` ([`Transport::name`]).
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Http, Self::Https]
            .into_iter()
            .find(|t| t.name() == name)
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
    /// Transports, each for every mode and party count.
    pub transports: Vec<Transport>,
    /// Rounds timed per federation (after one round not timed, which warms connections), at
    /// least: see [`NetworkOptions::timed_rounds`].
    pub rounds: u64,
}

impl NetworkOptions {
    /// Rounds timed for a federation of `parties`: [`NetworkOptions::rounds`], or more for
    /// small federations (300 / P, at most 100), whose rounds take milliseconds and whose
    /// median would otherwise be one of a few noisy rounds on a shared machine.
    pub fn timed_rounds(&self, parties: u32) -> u64 {
        let small = u64::from(300 / parties.max(1)).min(100);
        self.rounds.max(small)
    }
}

/// One federation's rounds.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkRow {
    /// The mode.
    pub mode: NetMode,
    /// The transport.
    pub transport: Transport,
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
    /// Requests the parties had to retry while connecting (asking for the plan, saying they
    /// are ready): a burst of P connections from one address meets the server's cap on
    /// unauthenticated connections per address, and the refused ones come back.
    pub setup_retries: u64,
    /// Requests the parties had to retry during the rounds (refused or dropped connections).
    pub retries: u64,
    /// Seconds of the server's fold of the same P uploads in memory, per round
    /// ([`fold_seconds`]).
    pub fold: f64,
    /// Seconds to move the round's bytes (P uploads and P downloads) through one loopback TCP
    /// connection ([`loopback_seconds`]).
    pub transfer: f64,
}

impl NetworkRow {
    /// The median round's latency beyond the fold and the transfer: HTTP, TLS, scheduling.
    pub fn rest(&self) -> f64 {
        self.median - self.fold - self.transfer
    }
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
    /// The throwaway TLS certificate could not be made or written.
    #[error("making the benchmark's throwaway TLS certificate: {0}")]
    Certificate(String),
    /// The loopback transfer could not be timed.
    #[error("timing a transfer over loopback: {0}")]
    Loopback(#[from] std::io::Error),
    /// A party's connection could not be set up (its CA file).
    #[error(transparent)]
    Transport(#[from] crate::transport::http::TransportError),
}

/// A self-signed certificate for 127.0.0.1 and localhost, made for one benchmark run (rcgen,
/// ECDSA P-256), with its key in a private temporary directory (mode 0700, the key 0600)
/// removed when dropped.
pub struct ThrowawayCert {
    dir: PathBuf,
}

impl ThrowawayCert {
    /// Makes the certificate and writes `cert.pem` and `key.pem`.
    pub fn new() -> Result<Self, NetworkError> {
        use std::os::unix::fs::DirBuilderExt;
        let failed = |e: &dyn std::fmt::Display| NetworkError::Certificate(e.to_string());
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".into()])
                .map_err(|e| failed(&e))?;
        let dir = std::env::temp_dir().join(format!("hefl-bench-network-{}", std::process::id()));
        // A directory left by a killed run of the same process id holds nothing of ours.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| failed(&format_args!("{}: {e}", dir.display())))?;
        let this = Self { dir };
        std::fs::write(this.cert(), certified.cert.pem())
            .map_err(|e| failed(&format_args!("{}: {e}", this.cert().display())))?;
        let key = zeroize::Zeroizing::new(certified.signing_key.serialize_pem());
        crate::secret_file::create_private(&this.key())
            .and_then(|mut file| file.write_all(key.as_bytes()))
            .map_err(|e| failed(&format_args!("{}: {e}", this.key().display())))?;
        Ok(this)
    }

    /// The certificate (PEM): what the server presents and every party trusts.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// The private key (PEM).
    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
}

impl Drop for ThrowawayCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl From<PerfError> for NetworkError {
    fn from(e: PerfError) -> Self {
        Self::Setup(Box::new(e))
    }
}

/// What one party of the load generator saw: when each round started and ended for it, and
/// the requests it retried while connecting and during the rounds.
struct PartyTimes {
    starts: Vec<Instant>,
    ends: Vec<Instant>,
    setup_retries: u64,
    retries: u64,
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
        tls: Option<&ThrowawayCert>,
    ) -> Result<(Self, PathBuf), NetworkError> {
        let tokens = options
            .work_dir
            .join(format!("tokens-{}-{parties}.json", mode.name()));
        let tls_flags = tls.map_or(Vec::new(), |cert| {
            vec![
                "--tls-cert".into(),
                cert.cert().into_os_string(),
                "--tls-key".into(),
                cert.key().into_os_string(),
            ]
        });
        let _ = std::fs::remove_file(&tokens);
        // One round per epoch, one more than the warm-up and timed rounds, so that the server
        // is still up (its run not over) when its usage is read. A round deadline far beyond
        // any round here.
        let rounds = (options.timed_rounds(parties) + 2).to_string();
        let mut child = Command::new(&options.hefl)
            .args(["serve", "--bind", "127.0.0.1:0", "--parties"])
            .arg(parties.to_string())
            .args(["--rounds-per-epoch", "1", "--epochs", &rounds])
            .args(["--round-timeout", "10m", "--idle-timeout", "20m"])
            .args(mode.serve_flags(key_id))
            .args(tls_flags)
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
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
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

/// A party's connection to `url`: over HTTPS trusting only the certificate `ca`, if given.
fn connect(
    url: &str,
    party: u32,
    token: &str,
    ca: Option<&Path>,
) -> Result<HttpUplink, NetworkError> {
    Ok(match ca {
        None => HttpUplink::new(url, party, token),
        Some(ca) => HttpUplink::with_ca(url, party, token, ca)?,
    })
}

/// Runs one federation of `parties` in `mode` for [`NetworkOptions::timed_rounds`], over HTTPS
/// with the certificate `tls` if given (else HTTP). The row's `fold` and `transfer` are left
/// at zero ([`run`] measures them).
pub fn measure(
    options: &NetworkOptions,
    mode: NetMode,
    parties: u32,
    tls: Option<&ThrowawayCert>,
) -> Result<NetworkRow, NetworkError> {
    let key = KeyFile::generate().map_err(PerfError::from)?;
    let key_id = key.key_id().to_string();
    let key = Arc::new(key.secret_key().map_err(PerfError::from)?);
    let (server, tokens_path) = Server::start(options, mode, parties, &key_id, tls)?;
    let ca = tls.map(ThrowawayCert::cert);
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
    let mut first = connect(&server.url, 0, &tokens[0], ca.as_deref())?;
    let plan = retry
        .call("plan", &mut Retries::default(), || first.plan())
        .map_err(|source| NetworkError::Party { party: 0, source })?;
    let run = plan.fingerprint();
    let he_key = (plan.config.privacy == Privacy::He).then_some(key);
    let uploads: Vec<Vec<u8>> = (0..parties)
        .map(|p| sealed_upload(&plan, p, he_key.clone()))
        .collect::<Result<_, _>>()?;
    let upload_bytes = uploads.first().map_or(0, Vec::len);

    let rounds = options.timed_rounds(parties);
    let total = rounds as usize + 1;
    let barrier = Arc::new(Barrier::new(parties as usize + 1));
    let download = Arc::new(Mutex::new(0usize));
    let threads: Vec<_> = uploads
        .into_iter()
        .enumerate()
        .map(|(p, mut bytes)| {
            let (barrier, download, plan, ca) = (
                Arc::clone(&barrier),
                Arc::clone(&download),
                plan.clone(),
                ca.clone(),
            );
            let (url, token) = (server.url.clone(), tokens[p].clone());
            let party = p as u32;
            // Made here, so that a refused CA file stops the run before any thread waits.
            let mut uplink = connect(&url, party, &token, ca.as_deref())?;
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || -> Result<PartyTimes, NetworkError> {
                    let failed = |source| NetworkError::Party { party, source };
                    let mut retries = Retries::default();
                    retry
                        .call("plan", &mut retries, || uplink.plan())
                        .map_err(failed)?;
                    retry
                        .call("ready", &mut retries, || uplink.ready())
                        .map_err(failed)?;
                    let setup = retries.0;
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
                            *download.lock().unwrap_or_else(|p| p.into_inner()) = sum.bytes.len();
                        }
                        barrier.wait();
                    }
                    Ok(PartyTimes {
                        starts,
                        ends,
                        setup_retries: setup,
                        retries: retries.0 - setup,
                    })
                })
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
    let (mut setup_retries, mut retries) = (0, 0);
    for thread in threads {
        let party = thread
            .join()
            .map_err(|_| NetworkError::Serve("a party thread panicked".into()))??;
        starts.push(party.starts[1..].to_vec());
        ends.push(party.ends[1..].to_vec());
        setup_retries += party.setup_retries;
        retries += party.retries;
    }
    drop(server);
    // The tokens were this federation's only; nothing else will use them.
    let _ = std::fs::remove_file(&tokens_path);
    let _ = std::fs::remove_file(crate::transport::Tokens::operator_path(&tokens_path));
    let times = latencies(&starts, &ends, rounds as usize);
    let download_bytes = *download.lock().unwrap_or_else(|p| p.into_inner());
    Ok(NetworkRow {
        mode,
        transport: match tls {
            Some(_) => Transport::Https,
            None => Transport::Http,
        },
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
        setup_retries,
        retries,
        fold: 0.0,
        transfer: 0.0,
    })
}

/// Every federation of `options`, in order of mode, transport, then parties, each with the
/// in-memory fold of its mode and party count ([`fold_seconds`], measured first, while no
/// server runs) and the loopback transfer of its bytes ([`loopback_seconds`]); `progress`
/// hears of each step.
pub fn run(
    options: &NetworkOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<NetworkRow>, NetworkError> {
    progress("the in-memory fold of every mode and party count");
    let folds = fold_seconds(&options.modes, &options.parties)?;
    let cert = match options.transports.contains(&Transport::Https) {
        true => Some(ThrowawayCert::new()?),
        false => None,
    };
    let mut transfers: Vec<(usize, f64)> = Vec::new();
    let mut rows = Vec::new();
    for &mode in &options.modes {
        for &transport in &options.transports {
            for &parties in &options.parties {
                progress(&format!(
                    "{} over {} with {parties} parties",
                    mode.name(),
                    transport.name()
                ));
                let tls = cert.as_ref().filter(|_| transport == Transport::Https);
                let mut row = measure(options, mode, parties, tls)?;
                row.fold = folds
                    .iter()
                    .find(|f| f.0 == mode && f.1 == parties)
                    .map_or(0.0, |f| f.2);
                let bytes = parties as usize * (row.upload_bytes + row.download_bytes);
                row.transfer = match transfers.iter().find(|t| t.0 == bytes) {
                    Some(&(_, seconds)) => seconds,
                    None => {
                        let seconds = loopback_seconds(bytes)?;
                        transfers.push((bytes, seconds));
                        seconds
                    }
                };
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

/// The in-memory fold of each mode's round, for each of `parties`: seconds per round of the
/// server's fold of P distinct uploads of that mode (sealed for a federation of P, so at its
/// widths) in this process, no HTTP ([`Submissions`], as `bench-report` times it). Returns
/// (mode, parties, median seconds).
pub fn fold_seconds(
    modes: &[NetMode],
    parties: &[u32],
) -> Result<Vec<(NetMode, u32, f64)>, PerfError> {
    let key = KeyFile::generate()?.secret_key()?;
    let median = |round: &dyn Fn() -> Result<crate::fl::Published, PerfError>| {
        super::measure(Duration::from_millis(200), 3, 50, round).map(|t| t.median)
    };
    let mut folds = Vec::new();
    for &mode in modes {
        for &p in parties {
            let seconds = match mode.form() {
                None => {
                    let submissions = Submissions::<PlainSum>::plain(p)?;
                    median(&|| submissions.round(p))?
                }
                Some(form) => {
                    let submissions = Submissions::<CompactVector>::he(&key, p, form)?;
                    median(&|| submissions.round(p))?
                }
            };
            folds.push((mode, p, seconds));
        }
    }
    Ok(folds)
}

/// Seconds to move `bytes` through one loopback TCP connection (no HTTP, no TLS): the least of
/// a few transfers (what the bytes cost at the least; a busy machine only adds), each timed
/// from the first byte written to the reader's one-byte acknowledgement of the last (one
/// loopback round trip more than the bytes alone).
pub fn loopback_seconds(bytes: usize) -> std::io::Result<f64> {
    const CHUNK: usize = 1 << 20;
    let runs = if bytes > 256 << 20 { 3 } else { 7 };
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        let mut buffer = vec![0u8; CHUNK];
        // One warm-up transfer, then the timed ones.
        for _ in 0..=runs {
            let mut left = bytes;
            while left > 0 {
                let n = stream.read(&mut buffer[..left.min(CHUNK)])?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                left -= n;
            }
            stream.write_all(&[1])?;
        }
        Ok(())
    });
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    let chunk = vec![0x5Au8; CHUNK];
    let mut times = Vec::new();
    for run in 0..=runs {
        let start = Instant::now();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(CHUNK);
            stream.write_all(&chunk[..n])?;
            left -= n;
        }
        let mut ack = [0u8; 1];
        stream.read_exact(&mut ack)?;
        if run > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    reader
        .join()
        .map_err(|_| std::io::Error::other("the loopback reader panicked"))??;
    Ok(times.into_iter().fold(f64::INFINITY, f64::min))
}

/// The (mode, transport) pairs of `rows`, in order of first appearance.
fn groups(rows: &[NetworkRow]) -> Vec<(NetMode, Transport)> {
    let mut groups = Vec::new();
    for r in rows {
        if !groups.contains(&(r.mode, r.transport)) {
            groups.push((r.mode, r.transport));
        }
    }
    groups
}

/// Draws the median round latency of every mode and transport against parties (log-log),
/// with each mode's in-memory fold (a thin line) on the same axes, into a PNG at `path`.
#[cfg(feature = "plot")]
pub fn plot(rows: &[NetworkRow], path: &std::path::Path) -> Result<(), crate::report::PlotError> {
    use crate::report::{Axis, LinePlot, Scale, Series, SeriesStyle, plot_lines};
    let mut series: Vec<Series> = groups(rows)
        .into_iter()
        .map(|(mode, transport)| Series {
            name: format!("{} over {} (median)", mode.name(), transport.name()),
            points: rows
                .iter()
                .filter(|r| r.mode == mode && r.transport == transport)
                .map(|r| (f64::from(r.parties), r.median * 1e3))
                .collect(),
            style: SeriesStyle::LineAndMarkers,
            color: None,
        })
        .collect();
    let mut modes: Vec<NetMode> = rows.iter().map(|r| r.mode).collect();
    modes.dedup();
    for mode in modes {
        let mut points: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.mode == mode)
            .map(|r| (f64::from(r.parties), r.fold * 1e3))
            .collect();
        // One point per party count (every transport's rows carry the same fold).
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        points.dedup_by(|a, b| a.0 == b.0);
        series.push(Series {
            name: format!("{} fold in memory", mode.name()),
            points,
            style: SeriesStyle::Line,
            color: None,
        });
    }
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
        "mode,transport,parties,rounds,median_s,p95_s,max_s,fold_s,transfer_s,rest_s,server_cpu_s_per_round,server_peak_bytes,client_cpu_s_per_round,upload_bytes,download_bytes,setup_retries,retries\n",
    );
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{},{:.6},{},{},{},{}\n",
            r.mode.name(),
            r.transport.name(),
            r.parties,
            r.rounds,
            r.median,
            r.p95,
            r.max,
            r.fold,
            r.transfer,
            r.rest(),
            r.server_cpu_per_round,
            r.server_peak_bytes,
            r.client_cpu_per_round,
            r.upload_bytes,
            r.download_bytes,
            r.setup_retries,
            r.retries
        ));
    }
    out
}

/// Milliseconds, with two decimals below 10 ms.
fn ms(seconds: f64) -> String {
    let ms = seconds * 1e3;
    match ms.abs() < 10.0 {
        true => format!("{ms:.2} ms"),
        false => format!("{ms:.1} ms"),
    }
}

/// The rows as a markdown table (the median split into the fold in memory, the transfer of
/// the bytes over loopback and the rest), then per mode and transport the least-squares line
/// of the median latency against parties (ms per party) and the log-log slope above 30
/// parties.
pub fn markdown(rows: &[NetworkRow]) -> String {
    let mut md = String::from(
        "| mode | transport | parties | median | p95 | max | fold in memory | transfer over loopback | rest (HTTP, TLS, scheduling) | server CPU / round | server peak | load generator CPU / round | upload | download | retries (connecting / rounds) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3} s | {:.0} MiB | {:.3} s | {} | {} | {} / {} |\n",
            r.mode.name(),
            r.transport.name(),
            r.parties,
            ms(r.median),
            ms(r.p95),
            ms(r.max),
            ms(r.fold),
            ms(r.transfer),
            ms(r.rest()),
            r.server_cpu_per_round,
            r.server_peak_bytes as f64 / (1 << 20) as f64,
            r.client_cpu_per_round,
            r.upload_bytes,
            r.download_bytes,
            r.setup_retries,
            r.retries
        ));
    }
    for (mode, transport) in groups(rows) {
        let of_group: Vec<&NetworkRow> = rows
            .iter()
            .filter(|r| r.mode == mode && r.transport == transport)
            .collect();
        let linear: Vec<(f64, f64)> = of_group
            .iter()
            .map(|r| (f64::from(r.parties), r.median * 1e3))
            .collect();
        let log: Vec<(f64, f64)> = of_group
            .iter()
            .filter(|r| r.parties > 30)
            .map(|r| (f64::from(r.parties).ln(), (r.median * 1e3).ln()))
            .collect();
        if let Some(fit) = super::LinearFit::of(&linear) {
            md.push_str(&format!(
                "\n{} over {}: {:.3} ms per party + {:.1} ms (least squares, R² {:.3})",
                mode.name(),
                transport.name(),
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
