//! Performance measurements: the workloads behind the criterion benches (`benches/`) and
//! `hefl bench-report`, and the small tools to time them and describe the machine.
//!
//! Both front ends measure the same closures built here ([`workloads`]): criterion with its
//! statistics, `bench-report` ([`suite`]) with a short timing loop ([`measure`]) so that
//! every answer users come for (HE's and DP's cost per round against the plaintext step,
//! aggregation latency as parties grow, bytes on the wire, encryption throughput against
//! threads and model size) comes out of one command in minutes. Absolute times depend on
//! the machine ([`Machine`] goes with every table); ratios are measured in the same run.
//! The measured tables, and how to reproduce each, are in the guide `docs/performance.md`.

pub mod flower;
#[cfg(feature = "net")]
pub mod network;
pub mod suite;
pub mod workloads;

use std::time::{Duration, Instant};

/// Why a measurement could not run.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    /// The key could not be generated.
    #[error(transparent)]
    Key(#[from] crate::he::keys::KeyError),
    /// Encryption, decryption or the secure generator failed.
    #[error(transparent)]
    He(#[from] crate::he::HeError),
    /// The compact ciphertext widths refused the setting.
    #[error(transparent)]
    Headroom(#[from] crate::he::HeadroomError),
    /// A sealed message did not fold (a benchmark fixture bug).
    #[error(transparent)]
    Payload(#[from] crate::fl::PayloadError),
    /// The fixed-point encoding refused its settings or a value.
    #[error(transparent)]
    Quant(#[from] crate::quant::QuantError),
    /// The model could not be built.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// Secure aggregation's fixture (roster, blinder) or its sealing failed.
    #[error(transparent)]
    SecAgg(#[from] crate::secagg::SecAggError),
    /// Sealing or opening an update failed.
    #[error(transparent)]
    Envelope(#[from] crate::fl::EnvelopeError),
    /// The server refused its configuration.
    #[error(transparent)]
    ServerConfig(#[from] crate::fl::ConfigError),
    /// The server refused a submission.
    #[error(transparent)]
    Refusal(#[from] crate::fl::Refusal),
    /// Every party submitted, yet the round did not close.
    #[error("the round with {parties} parties did not close after every party submitted")]
    RoundOpen {
        /// Parties in the round.
        parties: u32,
    },
    /// A thread pool could not be built.
    #[error("cannot build a thread pool: {0}")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),
    /// A party of the plan could not be set up.
    #[error(transparent)]
    Party(#[from] crate::fl::PlanPartyError),
    /// A party could not seal its update.
    #[error(transparent)]
    Seal(#[from] crate::fl::SealError),
    /// A step of `robust` secure aggregation failed (a fixture bug).
    #[error(transparent)]
    Robust(#[from] crate::secagg::RobustError),
    /// A party refused the corrected sum of a robust round.
    #[error(transparent)]
    Aggregate(#[from] crate::secagg::AggregateRefused),
    /// The corrected sum of a robust round is not the sum of the alive parties' updates.
    #[error(
        "the corrected sum of {parties} parties with {dropouts} dropouts is not the sum of \
         the alive parties' updates"
    )]
    InexactSum {
        /// Parties in the round's set.
        parties: u32,
        /// Parties that never submitted.
        dropouts: u32,
    },
}

/// The machine a measurement ran on: absolute times mean little without it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// CPU model name as the kernel reports it.
    pub cpu: String,
    /// Threads available to this process (rayon's default pool size).
    pub cores: usize,
    /// Total memory in MiB, when known.
    pub memory_mib: Option<u64>,
    /// The UTC date, YYYY-MM-DD.
    pub date: String,
}

impl Machine {
    /// Reads the CPU model and memory from `/proc` (Linux; "unknown" elsewhere), the
    /// thread count and today's date.
    ///
    /// ```
    /// let m = hefl::perf::Machine::detect();
    /// assert!(m.cores >= 1);
    /// assert_eq!(m.date.len(), 10);
    /// ```
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = proc_field(&cpuinfo, "model name").unwrap_or_else(|| "unknown CPU".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_mib = proc_kib(&meminfo, "MemTotal").map(|kib| kib / 1024);
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            cpu,
            cores: rayon::current_num_threads(),
            memory_mib,
            date: utc_date(since_epoch.as_secs() / 86_400),
        }
    }
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, {} threads", self.cpu, self.cores)?;
        if let Some(mib) = self.memory_mib {
            write!(f, ", {:.1} GiB RAM", mib as f64 / 1024.0)?;
        }
        write!(f, ", {}", self.date)
    }
}

/// The value of `field` in a `/proc`-style `name : value` text.
fn proc_field(text: &str, field: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name.trim() == field).then(|| value.trim().to_owned())
    })
}

/// A `/proc` field given in kB (`VmHWM:  1234 kB`).
fn proc_kib(text: &str, field: &str) -> Option<u64> {
    proc_field(text, field)?
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// YYYY-MM-DD of a day count since 1970-01-01 (proleptic Gregorian calendar).
///
/// ```
/// assert_eq!(hefl::perf::utc_date(0), "1970-01-01");
/// assert_eq!(hefl::perf::utc_date(20_780), "2026-11-23");
/// assert_eq!(hefl::perf::utc_date(11_016), "2000-02-29");
/// ```
pub fn utc_date(days: u64) -> String {
    // Howard Hinnant's days_from_civil, inverted; eras of 400 years from 0000-03-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The process's peak resident memory in bytes since it started or since the last
/// [`reset_peak_memory`] (`VmHWM` in `/proc/self/status`); `None` where unavailable.
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    proc_kib(&status, "VmHWM").map(|kib| kib * 1024)
}

/// The process's resident memory in bytes now (`VmRSS`); `None` where unavailable.
pub fn current_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    proc_kib(&status, "VmRSS").map(|kib| kib * 1024)
}

/// Resets the peak resident memory to the current resident memory (Linux: writes 5 to
/// `/proc/self/clear_refs`). Returns whether it could.
pub fn reset_peak_memory() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The median and spread of repeated timings of one operation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// Median seconds per run.
    pub median: f64,
    /// Fastest run, seconds.
    pub min: f64,
    /// Slowest run, seconds.
    pub max: f64,
    /// Runs timed (after one untimed warm-up run).
    pub runs: usize,
}

/// Times `f`: one untimed warm-up run, then runs until `budget` is spent, at least
/// `min_runs` and at most `max_runs` of them. The first error stops the measurement.
///
/// ```
/// use std::time::Duration;
///
/// let t = hefl::perf::measure(Duration::from_millis(20), 3, 50, || {
///     std::thread::sleep(Duration::from_millis(1));
///     Ok::<_, std::convert::Infallible>(())
/// })?;
/// assert!(t.runs >= 3 && t.runs <= 50);
/// assert!(t.min >= 0.001 && t.min <= t.median && t.median <= t.max);
/// # Ok::<(), std::convert::Infallible>(())
/// ```
pub fn measure<T, E>(
    budget: Duration,
    min_runs: usize,
    max_runs: usize,
    mut f: impl FnMut() -> Result<T, E>,
) -> Result<Timing, E> {
    measure_parts(budget, min_runs, max_runs, || {
        let run = Instant::now();
        std::hint::black_box(f()?);
        Ok(run.elapsed())
    })
}

/// Like [`measure`] for an operation that times its own measured part: `f` runs once and
/// returns the time of the part that counts (a setup it needs fresh each run, such as a
/// prepared encryption, stays outside).
///
/// ```
/// use std::time::{Duration, Instant};
///
/// let t = hefl::perf::measure_parts(Duration::from_millis(20), 3, 50, || {
///     std::thread::sleep(Duration::from_millis(2)); // setup, not counted
///     let start = Instant::now();
///     std::thread::sleep(Duration::from_millis(1));
///     Ok::<_, std::convert::Infallible>(start.elapsed())
/// })?;
/// assert!(t.min >= 0.001 && t.median < 0.002);
/// # Ok::<(), std::convert::Infallible>(())
/// ```
pub fn measure_parts<E>(
    budget: Duration,
    min_runs: usize,
    max_runs: usize,
    mut f: impl FnMut() -> Result<Duration, E>,
) -> Result<Timing, E> {
    f()?;
    let mut seconds = Vec::new();
    let start = Instant::now();
    while seconds.len() < max_runs.max(1)
        && (seconds.len() < min_runs.max(1) || start.elapsed() < budget)
    {
        seconds.push(f()?.as_secs_f64());
    }
    Ok(Timing::of(seconds).expect("the loop times at least one run"))
}

impl Timing {
    /// The median and spread of `seconds` (one entry per run); `None` if empty.
    ///
    /// ```
    /// let t = hefl::perf::Timing::of(vec![3.0, 1.0, 2.0, 10.0]).unwrap();
    /// assert_eq!((t.median, t.min, t.max, t.runs), (2.5, 1.0, 10.0, 4));
    /// assert!(hefl::perf::Timing::of(Vec::new()).is_none());
    /// ```
    pub fn of(mut seconds: Vec<f64>) -> Option<Self> {
        seconds.sort_by(f64::total_cmp);
        let n = seconds.len();
        let (&min, &max) = (seconds.first()?, seconds.last()?);
        Some(Self {
            median: if n % 2 == 1 {
                seconds[n / 2]
            } else {
                (seconds[n / 2 - 1] + seconds[n / 2]) / 2.0
            },
            min,
            max,
            runs: n,
        })
    }
}

/// A least-squares line y = intercept + slope * x.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearFit {
    /// Change in y per unit of x.
    pub slope: f64,
    /// y at x = 0.
    pub intercept: f64,
    /// Coefficient of determination (1 = every point on the line).
    pub r_squared: f64,
}

impl LinearFit {
    /// Ordinary least squares through `points`; `None` with fewer than two distinct x.
    ///
    /// ```
    /// use hefl::perf::LinearFit;
    ///
    /// let fit = LinearFit::of(&[(1.0, 5.0), (2.0, 7.0), (4.0, 11.0)]).unwrap();
    /// assert!((fit.slope - 2.0).abs() < 1e-12 && (fit.intercept - 3.0).abs() < 1e-12);
    /// assert!((fit.r_squared - 1.0).abs() < 1e-12);
    /// assert!(LinearFit::of(&[(1.0, 1.0), (1.0, 2.0)]).is_none());
    /// ```
    pub fn of(points: &[(f64, f64)]) -> Option<Self> {
        let n = points.len() as f64;
        let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
        let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
        let syy: f64 = points.iter().map(|p| (p.1 - mean_y).powi(2)).sum();
        if points.len() < 2 || sxx <= 0.0 {
            return None;
        }
        let slope = sxy / sxx;
        let r_squared = if syy > 0.0 {
            sxy * sxy / (sxx * syy)
        } else {
            1.0
        };
        Some(Self {
            slope,
            intercept: mean_y - slope * mean_x,
            r_squared,
        })
    }

    /// The fitted y at `x`.
    pub fn at(&self, x: f64) -> f64 {
        self.intercept + self.slope * x
    }
}

/// A rayon pool of `threads` threads, for measuring one operation at several thread counts.
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build()
}

/// The thread counts worth measuring on this machine: 1, then powers of two, then all.
///
/// ```
/// let counts = hefl::perf::thread_counts();
/// assert_eq!(counts[0], 1);
/// assert_eq!(*counts.last().unwrap(), rayon::current_num_threads());
/// ```
pub fn thread_counts() -> Vec<usize> {
    let all = rayon::current_num_threads().max(1);
    let mut counts: Vec<usize> = std::iter::successors(Some(1usize), |n| Some(n * 2))
        .take_while(|&n| n < all)
        .collect();
    counts.push(all);
    counts
}
