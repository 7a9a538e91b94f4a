//! `hefl bench-report`: every measurement of the criterion benches, timed with a short
//! loop ([`measure`]), then written as markdown tables, CSV and PNG plots.

use super::workloads::{
    self, BLIND_PARTIES, BYTES_PARTIES, BlindRound, ClientRound, ClientWork, PARTY_COUNTS,
    Submissions,
};
use super::{
    LinearFit, Machine, PerfError, Timing, current_memory_bytes, measure, measure_parts,
    peak_memory_bytes, reset_peak_memory, thread_counts, thread_pool,
};
use crate::fl::{PlainSum, Summable};
use crate::he::keys::KeyFile;
use crate::he::{CompactVector, DownloadForm};
#[cfg(feature = "plot")]
use crate::report::{Axis, LinePlot, PlotError, Scale, Series, SeriesStyle, plot_bars, plot_lines};
#[cfg(feature = "plot")]
use plotters::prelude::SeriesLabelPosition;
use std::fmt::Write as _;
#[cfg(feature = "plot")]
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Vector lengths of the encryption throughput measurements: 10^4 to 10^7 values, with the
/// default MLP's 101,770 in place of 10^5.
pub const VECTOR_LENGTHS: [usize; 4] = [10_000, 101_770, 1_000_000, 10_000_000];

/// How long to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Fewer and shorter repetitions (about 10 seconds on two cores).
    pub quick: bool,
}

impl Options {
    /// Time budget, minimum and maximum runs for an operation that takes about `expected`.
    fn runs(&self, expected: Duration) -> (Duration, usize, usize) {
        if self.quick {
            (Duration::from_millis(300), 1, 20)
        } else if expected > Duration::from_millis(200) {
            (Duration::from_secs(2), 3, 10)
        } else {
            (Duration::from_secs(1), 5, 500)
        }
    }
}

/// One client operation's timing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClientRow {
    /// The operation.
    pub work: ClientWork,
    /// Its timing.
    pub timing: Timing,
}

/// One aggregation round's timing and memory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AggregationRow {
    /// `he-seeds`, `he-switched` or `plain` (the `dp` mode sends `plain` payloads).
    pub mode: &'static str,
    /// Parties in the round.
    pub parties: u32,
    /// Server time for the whole round (parse, validate, fold, publish).
    pub timing: Timing,
    /// Resident memory before the round's runs, bytes.
    pub memory_before: Option<u64>,
    /// Peak resident memory during the round's runs, bytes.
    pub memory_peak: Option<u64>,
}

/// What one party sends and receives per round in one mode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BytesRow {
    /// The privacy mode (`he-seeds` and `he-switched` for the two download forms).
    pub mode: &'static str,
    /// Parties in the federation.
    pub parties: u32,
    /// Bytes uploaded (the sealed update).
    pub upload: usize,
    /// Bytes downloaded (the published sum).
    pub download: usize,
    /// `he`: a client's time to open that sum (parse, regenerate or unpack the masks,
    /// decrypt), all threads; `None` for the clear modes.
    pub open: Option<Timing>,
}

/// One client's blinds per round in a strict secure-aggregation federation of `parties`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlindRow {
    /// Parties in the federation (the client blinds against the P − 1 others).
    pub parties: u32,
    /// Sealing the default MLP's update with canaries and blinds.
    pub timing: Timing,
}

/// Encryption or decryption of one vector length at one thread count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThroughputRow {
    /// Values in the vector.
    pub values: usize,
    /// rayon threads.
    pub threads: usize,
    /// Encryption timing.
    pub encrypt: Timing,
    /// Decryption timing.
    pub decrypt: Timing,
}

/// Everything `bench-report` measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// Whether `--quick` was given.
    pub quick: bool,
    /// One client's round in each mode.
    pub client: Vec<ClientRow>,
    /// Server rounds against the number of parties, both modes.
    pub aggregation: Vec<AggregationRow>,
    /// Bytes per party per round.
    pub bytes: Vec<BytesRow>,
    /// Size of the update as f32 values, bytes.
    pub f32_update_bytes: usize,
    /// Bytes of prepared messages the `he` aggregation fixtures hold (counted in its memory).
    pub aggregation_fixture_bytes: usize,
    /// Encryption throughput.
    pub throughput: Vec<ThroughputRow>,
    /// Secure aggregation (strict): one client's blinds per round, at P = 3, 10, 100.
    pub blinds: Vec<BlindRow>,
}

/// Runs every measurement, reporting each step through `progress`.
pub fn run(options: Options, progress: &mut dyn FnMut(&str)) -> Result<Report, PerfError> {
    let machine = Machine::detect();
    progress(&format!("machine: {machine}"));

    progress("client round: setting up a 20,000-image shard, DP client and key");
    let mut round = ClientRound::new()?;
    let mut client = Vec::new();
    for work in ClientWork::ALL {
        let (budget, min, max) = options.runs(Duration::from_millis(10));
        let timing = measure_parts(budget, min, max, || round.run(work))?;
        progress(&format!(
            "client round: {} {:.2} ms",
            work.id(),
            timing.median * 1e3
        ));
        client.push(ClientRow { work, timing });
    }
    drop(round);

    let mut blinds = Vec::new();
    for parties in BLIND_PARTIES {
        let mut work = BlindRound::new(parties)?;
        let (budget, min, max) = options.runs(Duration::from_micros(200) * parties);
        let timing = measure_parts(budget, min, max, || work.run())?;
        progress(&format!(
            "secure aggregation: blinds at P={parties} {:.2} ms",
            timing.median * 1e3
        ));
        blinds.push(BlindRow { parties, timing });
    }

    let key = KeyFile::generate()?.secret_key()?;
    let largest = PARTY_COUNTS[PARTY_COUNTS.len() - 1];
    let mut aggregation = Vec::new();
    let mut aggregation_fixture_bytes = 0;
    for (mode, form) in [
        ("he-seeds", DownloadForm::Seeds),
        ("he-switched", DownloadForm::Switched),
    ] {
        progress(&format!("aggregation: sealing {largest} {mode} uploads"));
        let he = Submissions::<CompactVector>::he(&key, largest, form)?;
        aggregation_fixture_bytes = aggregation_fixture_bytes.max(he.fixture_bytes());
        aggregate_sweep(mode, &he, options, &mut aggregation, progress)?;
    }
    let plain = Submissions::<PlainSum>::plain(largest)?;
    aggregate_sweep("plain", &plain, options, &mut aggregation, progress)?;

    progress("bytes: sealing uploads for 3, 100 and 1000 parties");
    let mut bytes = Vec::new();
    for parties in BYTES_PARTIES {
        let plain = Submissions::<PlainSum>::plain(parties)?;
        let plain_download = plain.round(parties)?.bytes.len();
        for mode in ["plain", "dp"] {
            bytes.push(BytesRow {
                mode,
                parties,
                upload: plain.message_len(),
                download: plain_download,
                open: None,
            });
        }
        for (mode, form) in [
            ("he-seeds", DownloadForm::Seeds),
            ("he-switched", DownloadForm::Switched),
        ] {
            let he = Submissions::<CompactVector>::he(&key, parties, form)?;
            let download = he.round(parties)?.bytes;
            let (budget, min, max) = options.runs(Duration::from_millis(2) * parties);
            let open = measure(budget, min, max, || {
                let sum = CompactVector::parse_aggregate(&download, he.expect(), parties)
                    .map_err(crate::fl::PayloadError::from)?;
                Ok::<_, PerfError>(key.decrypt(&sum.expand())?)
            })?;
            progress(&format!(
                "bytes: {mode} P={parties}: download {} bytes, client open {:.2} ms",
                download.len(),
                open.median * 1e3
            ));
            bytes.push(BytesRow {
                mode,
                parties,
                upload: he.message_len(),
                download: download.len(),
                open: Some(open),
            });
        }
    }
    drop(plain);

    let mut throughput = Vec::new();
    for values in VECTOR_LENGTHS {
        let words = workloads::vector_to_encrypt(values, 3, values as u64)?;
        let ciphertext = key.encrypt(&words)?;
        for threads in thread_counts() {
            let pool = thread_pool(threads)?;
            let expected = Duration::from_secs_f64(values as f64 * 40e-9);
            let (budget, min, max) = options.runs(expected);
            let (encrypt, decrypt) = pool.install(|| {
                Ok::<_, PerfError>((
                    measure(budget, min, max, || key.encrypt(&words))?,
                    measure(budget, min, max, || key.decrypt(&ciphertext))?,
                ))
            })?;
            progress(&format!(
                "encryption: {values} values, {threads} threads: encrypt {:.2} ms, decrypt {:.2} ms",
                encrypt.median * 1e3,
                decrypt.median * 1e3
            ));
            throughput.push(ThroughputRow {
                values,
                threads,
                encrypt,
                decrypt,
            });
        }
    }

    Ok(Report {
        machine,
        quick: options.quick,
        client,
        aggregation,
        bytes,
        f32_update_bytes: workloads::model_len() * 4,
        aggregation_fixture_bytes,
        throughput,
        blinds,
    })
}

fn aggregate_sweep<S: Summable>(
    mode: &'static str,
    submissions: &Submissions<S>,
    options: Options,
    rows: &mut Vec<AggregationRow>,
    progress: &mut dyn FnMut(&str),
) -> Result<(), PerfError> {
    for parties in PARTY_COUNTS {
        let expected = Duration::from_micros(300) * parties;
        let (budget, min, max) = options.runs(expected);
        let memory_before = current_memory_bytes();
        let can_reset = reset_peak_memory();
        let timing = measure(budget, min, max, || submissions.round(parties))?;
        let memory_peak = peak_memory_bytes().filter(|_| can_reset);
        progress(&format!(
            "aggregation: {mode} P={parties}: {:.2} ms",
            timing.median * 1e3
        ));
        rows.push(AggregationRow {
            mode,
            parties,
            timing,
            memory_before,
            memory_peak,
        });
    }
    Ok(())
}

/// The aggregation sweeps, in table order.
const AGGREGATION_MODES: [&str; 3] = ["he-seeds", "he-switched", "plain"];

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl Report {
    /// The baseline every client ratio divides by.
    pub fn plaintext_step(&self) -> Option<Timing> {
        self.client
            .iter()
            .find(|r| r.work == ClientWork::PlaintextStep)
            .map(|r| r.timing)
    }

    /// `timing` as a multiple of the plaintext step (NaN if that was not measured).
    pub fn times_plaintext_step(&self, timing: Timing) -> f64 {
        timing.median / self.plaintext_step().map_or(f64::NAN, |t| t.median)
    }

    /// The aggregation rows of one mode, in party order.
    pub fn aggregation_of(&self, mode: &str) -> Vec<AggregationRow> {
        self.aggregation
            .iter()
            .filter(|r| r.mode == mode)
            .copied()
            .collect()
    }

    /// Least-squares latency (seconds) against parties for one mode, and the exponent of
    /// the log-log fit (1 = linear growth).
    pub fn aggregation_fit(&self, mode: &str) -> Option<(LinearFit, f64)> {
        let rows = self.aggregation_of(mode);
        let points: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| (f64::from(r.parties), r.timing.median))
            .collect();
        let logs: Vec<(f64, f64)> = points.iter().map(|(p, t)| (p.ln(), t.ln())).collect();
        Some((LinearFit::of(&points)?, LinearFit::of(&logs)?.slope))
    }

    /// The report as markdown: machine, then one table per question.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "Machine: {}.", self.machine);
        if cfg!(debug_assertions) {
            md.push_str("\n**Built without `--release`: these times are not representative.**\n");
        }
        if self.quick {
            md.push_str("\nQuick run (`--quick`): few repetitions, medians are rough.\n");
        }
        md.push_str(&self.client_markdown());
        md.push_str(&self.blinds_markdown());
        md.push_str(&self.aggregation_markdown());
        md.push_str(&self.bytes_markdown());
        md.push_str(&self.throughput_markdown());
        md
    }

    fn blinds_markdown(&self) -> String {
        let envelope = self
            .client
            .iter()
            .find(|r| r.work == ClientWork::HeEnvelope)
            .map(|r| r.timing.median);
        let mut md = format!(
            "\n### Secure aggregation (strict): blinds per client round\n\n\
             Sealing the default MLP's update ({} slots with the weight, plus 2 canaries) with \
             the blinds against every other party: P − 1 HKDF keys and AES-CTR keystreams; \
             medians. Bytes and round trips are unchanged (the canaries sit in the last \
             ciphertext's padding).\n\n\
             | parties | blinds per round | vs the HE envelope (P = 3) |\n|---:|---:|---:|\n",
            workloads::submission_len()
        );
        for row in &self.blinds {
            let share = envelope.map_or("–".to_owned(), |e| {
                format!("{:.1}%", 100.0 * row.timing.median / e)
            });
            let _ = writeln!(
                md,
                "| {} | {:.2} ms | {share} |",
                row.parties,
                row.timing.median * 1e3
            );
        }
        md
    }

    fn client_markdown(&self) -> String {
        let mut md = format!(
            "\n### One client's round: cost against the plaintext step\n\n\
             Default MLP ({} parameters), FedSGD, batch {}, a {}-image shard; medians.\n\n\
             | operation | time per round | × plaintext step |\n|---|---:|---:|\n",
            workloads::model_len(),
            workloads::BATCH,
            workloads::SHARD
        );
        for row in &self.client {
            let _ = writeln!(
                md,
                "| {} | {:.2} ms | {:.2} |",
                row.work.describe(),
                row.timing.median * 1e3,
                self.times_plaintext_step(row.timing)
            );
        }
        md
    }

    fn aggregation_markdown(&self) -> String {
        let seeds = self.aggregation_of("he-seeds");
        let switched = self.aggregation_of("he-switched");
        let plain = self.aggregation_of("plain");
        let mut md = format!(
            "\n### Server aggregation latency against parties\n\n\
             One round: every party's {}-slot update parsed and validated (key id, parameter \
             set, length, widths, seeds), folded into the running sum, the sum serialized, all \
             on a rayon worker (a batch fold; an HTTP handler, outside the pool, adds a thread \
             handoff of a few µs per submission); \
             `he` uploads encoded for up to {} parties. `he-seeds` folds bodies and keeps the \
             seeds; `he-switched` also regenerates every upload's mask and sends the summed \
             mask switched. The peak is the whole process's resident memory during the \
             `he-seeds` round, including {:.0} MiB of prepared messages.\n\n\
             | parties | he-seeds | he-switched | plain | he-seeds peak memory | he-seeds memory growth |\n\
             |---:|---:|---:|---:|---:|---:|\n",
            workloads::submission_len(),
            PARTY_COUNTS[PARTY_COUNTS.len() - 1],
            mib(self.aggregation_fixture_bytes as u64)
        );
        for ((h, s), p) in seeds.iter().zip(&switched).zip(&plain) {
            let peak = h
                .memory_peak
                .map_or("n/a".into(), |b| format!("{:.0} MiB", mib(b)));
            let growth = match (h.memory_peak, h.memory_before) {
                (Some(peak), Some(before)) => {
                    format!("{:.1} MiB", mib(peak.saturating_sub(before)))
                }
                _ => "n/a".into(),
            };
            let _ = writeln!(
                md,
                "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {peak} | {growth} |",
                h.parties,
                h.timing.median * 1e3,
                s.timing.median * 1e3,
                p.timing.median * 1e3
            );
        }
        md.push('\n');
        for mode in AGGREGATION_MODES {
            if let Some((fit, exponent)) = self.aggregation_fit(mode) {
                let _ = writeln!(
                    md,
                    "- {mode}: latency ≈ {:.3} ms + {:.4} ms × parties (least squares, R² = \
                     {:.4}); log-log slope {:.2}",
                    fit.intercept * 1e3,
                    fit.slope * 1e3,
                    fit.r_squared,
                    exponent
                );
            }
        }
        md
    }

    fn bytes_markdown(&self) -> String {
        let mut md = format!(
            "\n### Bytes per party per round\n\n\
             The f32 update is {} bytes ({} values × 4). `he` uploads are compact (a 16-byte \
             seed and bodies rounded to the widths the party count needs); the download is the \
             round's sum in each form.\n\n\
             | mode | parties | upload | download | upload × f32 update | download × f32 update | client open |\n\
             |---|---:|---:|---:|---:|---:|---:|\n",
            self.f32_update_bytes,
            workloads::model_len()
        );
        let f32_bytes = self.f32_update_bytes as f64;
        for row in &self.bytes {
            let open = row
                .open
                .map_or("".into(), |t| format!("{:.2} ms", t.median * 1e3));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.3} | {:.3} | {open} |",
                row.mode,
                row.parties,
                row.upload,
                row.download,
                row.upload as f64 / f32_bytes,
                row.download as f64 / f32_bytes
            );
        }
        md.push_str(&self.crossover_markdown());
        md
    }

    /// Where the seeds download stops paying: every client regenerating P masks against
    /// downloading the switched mask, at the measured open times and a few link speeds.
    fn crossover_markdown(&self) -> String {
        let row = |mode: &str, parties: u32| {
            self.bytes
                .iter()
                .find(|r| r.mode == mode && r.parties == parties)
        };
        let mut md = String::from(
            "\nDownload form crossover: a client opening the seeds form regenerates P masks; the \
             switched form costs extra bytes instead. Seeds win while P × (extra open time per \
             party) stays below (extra switched bytes) / link speed:\n\n\
             | parties | extra open time of seeds | extra bytes of switched | break-even link |\n\
             |---:|---:|---:|---:|\n",
        );
        for parties in BYTES_PARTIES {
            let (Some(seeds), Some(switched)) =
                (row("he-seeds", parties), row("he-switched", parties))
            else {
                continue;
            };
            let (Some(a), Some(b)) = (seeds.open, switched.open) else {
                continue;
            };
            let extra_time = a.median - b.median;
            let extra_bytes = switched.download as f64 - seeds.download as f64;
            let link = if extra_time > 0.0 {
                format!("{:.0} Mbit/s", extra_bytes * 8.0 / extra_time / 1e6)
            } else {
                "seeds always".into()
            };
            let _ = writeln!(
                md,
                "| {parties} | {:.2} ms | {:.0} | {link} |",
                extra_time * 1e3,
                extra_bytes
            );
        }
        md
    }

    fn throughput_markdown(&self) -> String {
        let mut md = String::from(
            "\n### Encryption throughput against vector length and threads\n\n\
             | values | threads | encrypt | decrypt | encrypt M values/s | decrypt M values/s |\n\
             |---:|---:|---:|---:|---:|---:|\n",
        );
        for row in &self.throughput {
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} ms | {:.2} ms | {:.1} | {:.1} |",
                row.values,
                row.threads,
                row.encrypt.median * 1e3,
                row.decrypt.median * 1e3,
                row.values as f64 / row.encrypt.median / 1e6,
                row.values as f64 / row.decrypt.median / 1e6
            );
        }
        md
    }

    /// The measurements as CSV files: (file name, contents).
    pub fn csv(&self) -> Vec<(&'static str, String)> {
        let machine = format!(
            "# {}\n",
            self.machine.to_string().replace(['\n', '\r'], " ")
        );
        let mut client = format!("{machine}operation,median_seconds,min_seconds,runs,ratio\n");
        for r in &self.client {
            let _ = writeln!(
                client,
                "{},{},{},{},{}",
                r.work.id(),
                r.timing.median,
                r.timing.min,
                r.timing.runs,
                self.times_plaintext_step(r.timing)
            );
        }
        let mut aggregation = format!(
            "{machine}mode,parties,median_seconds,min_seconds,runs,memory_before_bytes,memory_peak_bytes\n"
        );
        for r in &self.aggregation {
            let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
            let _ = writeln!(
                aggregation,
                "{},{},{},{},{},{},{}",
                r.mode,
                r.parties,
                r.timing.median,
                r.timing.min,
                r.timing.runs,
                opt(r.memory_before),
                opt(r.memory_peak)
            );
        }
        let mut bytes = format!("{machine}mode,parties,direction,bytes,f32_update_bytes\n");
        for r in &self.bytes {
            for (direction, n) in [("upload", r.upload), ("download", r.download)] {
                let _ = writeln!(
                    bytes,
                    "{},{},{direction},{n},{}",
                    r.mode, r.parties, self.f32_update_bytes
                );
            }
        }
        let mut throughput = format!(
            "{machine}values,threads,encrypt_median_seconds,decrypt_median_seconds,encrypt_runs,decrypt_runs\n"
        );
        for r in &self.throughput {
            let _ = writeln!(
                throughput,
                "{},{},{},{},{},{}",
                r.values,
                r.threads,
                r.encrypt.median,
                r.decrypt.median,
                r.encrypt.runs,
                r.decrypt.runs
            );
        }
        let mut blinds = format!("{machine}parties,median_seconds,min_seconds,runs\n");
        for r in &self.blinds {
            let _ = writeln!(
                blinds,
                "{},{},{},{}",
                r.parties, r.timing.median, r.timing.min, r.timing.runs
            );
        }
        vec![
            ("client_round.csv", client),
            ("secagg_blinds.csv", blinds),
            ("aggregation.csv", aggregation),
            ("bytes.csv", bytes),
            ("he_throughput.csv", throughput),
        ]
    }

    /// Draws the plots into `dir`; returns the files written.
    #[cfg(feature = "plot")]
    pub fn plot(&self, dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
        let machine = format!("{} threads, {}", self.machine.cores, self.machine.date);
        let mut written = Vec::new();

        let mut series = Vec::new();
        for (color, mode) in AGGREGATION_MODES.into_iter().enumerate() {
            let rows = self.aggregation_of(mode);
            series.push(Series {
                name: format!("{mode} (measured)"),
                points: rows
                    .iter()
                    .map(|r| (f64::from(r.parties), r.timing.median * 1e3))
                    .collect(),
                style: SeriesStyle::Markers,
                color: Some(color),
            });
            let (Some((fit, _)), Some(first), Some(last)) =
                (self.aggregation_fit(mode), rows.first(), rows.last())
            else {
                continue;
            };
            // The fitted line, sampled evenly on the log axis.
            let (lo, hi) = (f64::from(first.parties).ln(), f64::from(last.parties).ln());
            series.push(Series {
                name: format!(
                    "{mode} fit: {:.2} ms + {:.3} ms × P",
                    fit.intercept * 1e3,
                    fit.slope * 1e3
                ),
                points: (0..=60)
                    .map(|i| (lo + (hi - lo) * f64::from(i) / 60.0).exp())
                    .map(|p| (p, fit.at(p) * 1e3))
                    .filter(|(_, ms)| *ms > 0.0)
                    .collect(),
                style: SeriesStyle::Line,
                color: Some(color),
            });
        }
        let path = dir.join("aggregation.png");
        plot_lines(
            &path,
            &LinePlot {
                title: format!("Server aggregation latency per round ({machine})"),
                x: Axis::fitted("parties", Scale::Log),
                y: Axis::fitted("latency per round (ms)", Scale::Log),
                series,
                legend: SeriesLabelPosition::UpperLeft,
            },
        )?;
        written.push(path);

        let bars: Vec<(String, f64)> = self
            .client
            .iter()
            .map(|r| {
                (
                    r.work.id().replace('_', " "),
                    self.times_plaintext_step(r.timing),
                )
            })
            .collect();
        let path = dir.join("client_round.png");
        plot_bars(
            &path,
            &format!("One client's round as a multiple of the plaintext step ({machine})"),
            "× plaintext step",
            &bars,
        )?;
        written.push(path);

        let mut bars: Vec<(String, f64)> =
            vec![("f32 update".into(), self.f32_update_bytes as f64 / 1024.0)];
        for row in self.bytes.iter().filter(|r| r.mode != "dp") {
            let name = format!("{} P={}", row.mode, row.parties);
            bars.push((format!("{name} up"), row.upload as f64 / 1024.0));
            bars.push((format!("{name} down"), row.download as f64 / 1024.0));
        }
        let path = dir.join("bytes.png");
        plot_bars(
            &path,
            "Bytes each party sends per round (KiB)",
            "KiB per party per round",
            &bars,
        )?;
        written.push(path);

        let per_length = |values: usize, f: &dyn Fn(&ThroughputRow) -> (f64, f64)| {
            self.throughput
                .iter()
                .filter(|r| r.values == values)
                .map(f)
                .collect::<Vec<_>>()
        };
        let series = VECTOR_LENGTHS
            .iter()
            .map(|&values| Series {
                name: format!("encrypt, {values} values"),
                points: per_length(values, &|r| {
                    (r.threads as f64, r.values as f64 / r.encrypt.median / 1e6)
                }),
                style: SeriesStyle::LineAndMarkers,
                color: None,
            })
            .collect();
        let path = dir.join("he_threads.png");
        plot_lines(
            &path,
            &LinePlot {
                title: format!("Encryption throughput against threads ({machine})"),
                x: Axis {
                    ticks: self.machine.cores.min(16),
                    ..Axis::fitted("rayon threads", Scale::Linear)
                },
                y: Axis::fitted("million values encrypted per second", Scale::Linear),
                series,
                legend: SeriesLabelPosition::LowerRight,
            },
        )?;
        written.push(path);

        let mut series = Vec::new();
        for threads in thread_counts_in(&self.throughput) {
            for (op, pick) in [
                (
                    "encrypt",
                    (|r: &ThroughputRow| r.encrypt) as fn(&ThroughputRow) -> Timing,
                ),
                ("decrypt", |r: &ThroughputRow| r.decrypt),
            ] {
                series.push(Series {
                    name: format!("{op}, {threads} threads"),
                    points: self
                        .throughput
                        .iter()
                        .filter(|r| r.threads == threads)
                        .map(|r| (r.values as f64, pick(r).median * 1e3))
                        .collect(),
                    style: SeriesStyle::LineAndMarkers,
                    color: None,
                });
            }
        }
        let path = dir.join("he_sizes.png");
        plot_lines(
            &path,
            &LinePlot {
                title: format!("Encryption time against vector length ({machine})"),
                x: Axis::fitted("values in the vector", Scale::Log),
                y: Axis::fitted("time (ms)", Scale::Log),
                series,
                legend: SeriesLabelPosition::UpperLeft,
            },
        )?;
        written.push(path);
        Ok(written)
    }
}

#[cfg(feature = "plot")]
fn thread_counts_in(rows: &[ThroughputRow]) -> Vec<usize> {
    let mut counts: Vec<usize> = rows.iter().map(|r| r.threads).collect();
    counts.sort_unstable();
    counts.dedup();
    counts
}
