//! `hefl bench-report`: every measurement of the criterion benches, timed with a short
//! loop ([`measure`]), then written as markdown tables, CSV and PNG plots.

use super::flower::{self, FlowerError, FlowerRow, FlowerShape};
use super::workloads::{
    self, BLIND_PARTIES, BYTES_PARTIES, BlindRound, ClientRound, ClientWork, PARTY_COUNTS,
    ROBUST_DROPOUT_PERCENTS, ROBUST_PARTIES, RobustBytes, RobustFederation, Submissions,
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
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

/// Vector lengths of the encryption throughput measurements: 10^4 to 10^7 values, with the
/// default MLP's 101,770 in place of 10^5.
pub const VECTOR_LENGTHS: [usize; 4] = [10_000, 101_770, 1_000_000, 10_000_000];

/// How long to measure, and with what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Fewer and shorter repetitions (about 10 seconds on two cores).
    pub quick: bool,
    /// The Python interpreter to measure Flower's SecAgg+ with ([`flower::flower_python`]).
    pub flower_python: PathBuf,
}

impl Options {
    /// The party counts of the robust rows: without P = 1000 in a quick run (its fixture,
    /// every party's keys and shares, takes minutes).
    fn robust_parties(&self) -> &'static [u32] {
        match self.quick {
            true => &ROBUST_PARTIES[..2],
            false => &ROBUST_PARTIES,
        }
    }

    /// One client's robust rounds to time at `parties`: every round of the dropout rows,
    /// and more while they are cheap.
    fn robust_client_rounds(&self, parties: u32) -> usize {
        match (self.quick, parties <= ROBUST_CHECKED_UP_TO) {
            (true, _) => 3,
            (false, true) => 7,
            (false, false) => 3,
        }
    }

    /// The party counts at which Flower's SecAgg+ runs, and its repetitions.
    fn flower_runs(&self) -> (&'static [u32], usize) {
        match self.quick {
            true => (&FLOWER_PARTIES[..1], 1),
            false => (&FLOWER_PARTIES, 3),
        }
    }

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

/// `robust` secure aggregation's client side at one party count (rule (a), c = d = ⌈P/10⌉).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RobustClientRow {
    /// Parties in the federation.
    pub parties: u32,
    /// k: neighbours per party.
    pub neighbours: u32,
    /// T: shares that rebuild a secret.
    pub threshold: u32,
    /// One client's round on one thread: keys, shares, seal, unmask answer.
    pub total: Timing,
    /// Of it: advertising, sharing and receiving keys, answering the unmask request.
    pub keys_and_shares: Timing,
    /// Of it: sealing (the pair keys and the k + 1 blinds).
    pub seal: Timing,
    /// `strict`'s blinds against the P − 1 others, on one thread too.
    pub strict_blinds: Timing,
    /// Bytes of one HE upload at this party count.
    pub upload_bytes: usize,
}

/// `robust` secure aggregation at one party count and dropout count: bytes and the server's
/// unmask step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RobustRow {
    /// Parties in the round's set.
    pub parties: u32,
    /// Parties that shared their keys but never submitted.
    pub dropouts: u32,
    /// The most any alive party sent and received beyond its upload and the sum.
    pub bytes: RobustBytes,
    /// The server's unmask step (both cores).
    pub unmask: Timing,
    /// Adding the correction to the sum without a key.
    pub add_public: Duration,
    /// Whether the corrected sum was decrypted and found exact.
    pub checked: bool,
}

/// The robust rows check the corrected sum up to this party count (every alive party seals);
/// above it, only the measured client seals.
pub const ROBUST_CHECKED_UP_TO: u32 = 100;
/// The party counts at which Flower's SecAgg+ is measured (its pure-Python Shamir makes
/// P = 1000 take many minutes).
pub const FLOWER_PARTIES: [u32; 2] = [10, 100];

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
    /// Secure aggregation (robust): one client's round per party count.
    pub robust_clients: Vec<RobustClientRow>,
    /// Secure aggregation (robust): bytes and the server's unmask per party and dropout count.
    pub robust: Vec<RobustRow>,
    /// Flower's SecAgg+ at the same sizes, where it ran.
    pub flower: Vec<FlowerRow>,
    /// The party counts at which Flower was not measured, and why.
    pub flower_missing: Vec<(u32, String)>,
    /// Seconds the robust rows (hefl's and Flower's) took to measure.
    pub robust_seconds: f64,
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

    let robust_start = std::time::Instant::now();
    let (robust_clients, robust) = robust_rows(&options, progress)?;
    let (flower, flower_missing) = flower_rows(&options, &robust_clients, &robust, progress);
    let robust_seconds = robust_start.elapsed().as_secs_f64();

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
        aggregate_sweep(mode, &he, &options, &mut aggregation, progress)?;
    }
    let plain = Submissions::<PlainSum>::plain(largest)?;
    aggregate_sweep("plain", &plain, &options, &mut aggregation, progress)?;

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
        robust_clients,
        robust,
        flower,
        flower_missing,
        robust_seconds,
    })
}

/// The robust rows: per party count, one round per dropout count (party 0's side timed on
/// one thread, the server's unmask step timed on all cores, the correction applied and, up
/// to [`ROBUST_CHECKED_UP_TO`], checked), more client rounds while cheap, and `strict`'s
/// blinds at the same P on one thread.
fn robust_rows(
    options: &Options,
    progress: &mut dyn FnMut(&str),
) -> Result<(Vec<RobustClientRow>, Vec<RobustRow>), PerfError> {
    let (mut clients, mut rows) = (Vec::new(), Vec::new());
    let one_thread = thread_pool(1)?;
    for &parties in options.robust_parties() {
        progress(&format!(
            "secure aggregation (robust): P={parties}: setting up"
        ));
        let mut federation = RobustFederation::new(parties, workloads::submission_len())?;
        let check = parties <= ROBUST_CHECKED_UP_TO;
        let mut dropouts: Vec<u32> = ROBUST_DROPOUT_PERCENTS
            .iter()
            .map(|&percent| workloads::dropouts_at(parties, percent))
            .collect();
        dropouts.dedup();
        let (mut keys, mut seals, mut totals) = (Vec::new(), Vec::new(), Vec::new());
        let mut upload_bytes = 0;
        let mut client_rounds = 0;
        while client_rounds < options.robust_client_rounds(parties).max(dropouts.len()) {
            let dropped = dropouts.get(client_rounds).copied();
            let (cost, prepared) =
                federation.round(dropped.unwrap_or(0), check && dropped.is_some())?;
            client_rounds += 1;
            keys.push(cost.keys_and_shares.as_secs_f64());
            seals.push(cost.seal.as_secs_f64());
            totals.push((cost.keys_and_shares + cost.seal).as_secs_f64());
            let Some(dropped) = dropped else { continue };
            let (budget, min, max) = options.runs(Duration::from_micros(500) * parties);
            let mut correction = Vec::new();
            let unmask = measure_parts(budget, min, max, || {
                let (words, time) = federation.unmask(&prepared)?;
                correction = words;
                Ok::<_, PerfError>(time)
            })?;
            let applied = federation.apply_correction(&prepared, &correction)?;
            upload_bytes = applied.upload_bytes;
            progress(&format!(
                "secure aggregation (robust): P={parties}, dropouts {dropped}: client {:.2} ms, \
                 server unmask {:.2} ms{}",
                totals[totals.len() - 1] * 1e3,
                unmask.median * 1e3,
                if applied.checked { ", sum exact" } else { "" }
            ));
            rows.push(RobustRow {
                parties,
                dropouts: dropped,
                bytes: prepared.bytes,
                unmask,
                add_public: applied.add_public,
                checked: applied.checked,
            });
        }
        let policy = federation.policy();
        drop(federation);
        let mut strict = BlindRound::new(parties)?;
        let (budget, min, max) = options.runs(Duration::from_micros(200) * parties);
        let strict_blinds =
            one_thread.install(|| measure_parts(budget, min, max, || strict.run()))?;
        let timing = |samples| Timing::of(samples).expect("at least one round per party count");
        clients.push(RobustClientRow {
            parties,
            neighbours: policy.neighbours,
            threshold: policy.threshold,
            total: timing(totals),
            keys_and_shares: timing(keys),
            seal: timing(seals),
            strict_blinds,
            upload_bytes,
        });
    }
    Ok((clients, rows))
}

/// Flower's SecAgg+ at the robust rows' shapes where it runs ([`FLOWER_PARTIES`]), and the
/// party counts it was not measured at, with the reason (every one if Flower cannot run).
fn flower_rows(
    options: &Options,
    clients: &[RobustClientRow],
    rows: &[RobustRow],
    progress: &mut dyn FnMut(&str),
) -> (Vec<FlowerRow>, Vec<(u32, String)>) {
    let (parties_run, repeats) = options.flower_runs();
    let (mut measured, mut missing) = (Vec::new(), Vec::new());
    // Set when the interpreter cannot run Flower at all: the same reason for every row.
    let mut unavailable: Option<String> = None;
    for client in clients {
        let parties = client.parties;
        if let Some(why) = &unavailable {
            missing.push((parties, why.clone()));
            continue;
        }
        if !parties_run.contains(&parties) {
            let why = match FLOWER_PARTIES.contains(&parties) {
                true => "not run with --quick",
                false => {
                    "not run: Flower's Shamir sharing (PyCryptodome, pure Python) takes \
                     seconds per secret at this T, and its server rebuilds one per node"
                }
            };
            missing.push((parties, why.to_owned()));
            continue;
        }
        let shape = FlowerShape {
            parties,
            neighbours: client.neighbours,
            threshold: client.threshold,
            dropouts: rows
                .iter()
                .filter(|r| r.parties == parties)
                .map(|r| r.dropouts)
                .collect(),
        };
        progress(&format!(
            "Flower SecAgg+: P={parties} under {}",
            options.flower_python.display()
        ));
        match flower::measure(
            &options.flower_python,
            &shape,
            workloads::model_len(),
            repeats,
        ) {
            Ok(row) => {
                progress(&format!(
                    "Flower SecAgg+: P={parties}: client {:.2} ms",
                    row.client.total() * 1e3
                ));
                measured.push(row);
            }
            Err(e) => {
                let why = format!("not measured: {e}");
                if matches!(e, FlowerError::Spawn { .. } | FlowerError::NoFlower { .. }) {
                    unavailable = Some(why.clone());
                }
                progress(&format!("Flower SecAgg+: P={parties}: {why}"));
                missing.push((parties, why));
            }
        }
    }
    (measured, missing)
}

fn aggregate_sweep<S: Summable>(
    mode: &'static str,
    submissions: &Submissions<S>,
    options: &Options,
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
        md.push_str(&self.robust_markdown());
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

    /// The robust rows at `parties`, by dropout count.
    fn robust_at(&self, parties: u32) -> impl Iterator<Item = &RobustRow> {
        self.robust.iter().filter(move |r| r.parties == parties)
    }

    /// Flower's row at `parties`, if measured.
    fn flower_at(&self, parties: u32) -> Option<&FlowerRow> {
        self.flower.iter().find(|f| f.parties == parties)
    }

    fn robust_markdown(&self) -> String {
        let values = workloads::model_len();
        let listed = |items: Vec<String>| items.join(", ");
        let rounds = listed(
            self.robust_clients
                .iter()
                .map(|c| format!("{} at P = {}", c.total.runs, c.parties))
                .collect(),
        );
        let mut md = format!(
            "\n### Secure aggregation (robust): costs per round, beside Flower's SecAgg+\n\n\
             Rule (a) with c = d = ⌈P/10⌉ colluders and dropouts tolerated: k neighbours, \
             threshold T. The default MLP's update ({} slots with the weight, plus 2 \
             canaries). **Client**: one party's round on one thread (its CPU time), medians of \
             rounds ({rounds}): advertise, share keys (its k neighbours' Ed25519 signatures \
             checked, two Shamir splits, k X25519 and ChaCha20-Poly1305), receive shares, seal \
             (k pair keys and k + 1 AES-CTR blinds; the HE encryption is not counted) and \
             answer the unmask request; *seal* is the blinds' part; *strict* is \
             `--secure-agg strict`'s blinds against all P − 1 others, also on one thread. \
             **Extra bytes**, from the messages' wire bytes, the most any alive party sent and \
             received: up its advert, k share messages and unmask response; down the round's \
             advertisers' ids (the graph is a function of them), its k neighbours' adverts, \
             k share messages and the unmask request. **Bytes per value**: (HE upload + extra up) / \
             {values}. **Server unmask**: `RoundUnmask::new` (every advert verified), \
             `add_response` per alive party and the correction, on all {} threads, medians; \
             the dropped parties shared their keys and never submitted, so their blind \
             secrets are rebuilt.\n\n\
             | P | k | T | dropouts | client CPU | of it seal | strict | extra up | extra down | \
             bytes / value | server unmask | Flower client CPU | Flower bytes / value | \
             Flower server unmask |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            workloads::submission_len(),
            self.machine.cores,
        );
        let ms = |seconds: f64| format!("{:.2} ms", seconds * 1e3);
        let kb = |bytes: usize| format!("{:.1} KB", bytes as f64 / 1e3);
        for client in &self.robust_clients {
            let flower = self.flower_at(client.parties);
            for (i, row) in self.robust_at(client.parties).enumerate() {
                // Per party count: on its first row only.
                let first = |cell: String| if i == 0 { cell } else { String::new() };
                let per_value = (client.upload_bytes + row.bytes.up) as f64 / values as f64;
                let flower_unmask = flower.map_or("–".into(), |f| {
                    f.server
                        .iter()
                        .find(|s| s.dropouts == row.dropouts)
                        .map_or("–".into(), |s| ms(s.unmask))
                });
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {per_value:.2} | {} | {} | \
                     {} | {flower_unmask} |",
                    first(client.parties.to_string()),
                    first(client.neighbours.to_string()),
                    first(client.threshold.to_string()),
                    row.dropouts,
                    first(ms(client.total.median)),
                    first(ms(client.seal.median)),
                    first(ms(client.strict_blinds.median)),
                    kb(row.bytes.up),
                    kb(row.bytes.down),
                    ms(row.unmask.median),
                    first(flower.map_or("–".into(), |f| ms(f.client.total()))),
                    first(flower.map_or("–".into(), |f| format!("{:.2}", f.bytes_per_value()))),
                );
            }
        }
        md.push('\n');
        let (checked, unchecked): (Vec<u32>, Vec<u32>) = self
            .robust_clients
            .iter()
            .map(|c| c.parties)
            .partition(|&p| self.robust_at(p).all(|r| r.checked));
        let parties = |list: Vec<u32>| listed(list.iter().map(u32::to_string).collect());
        let add_public = self
            .robust
            .iter()
            .map(|r| r.add_public.as_secs_f64())
            .fold(0.0, f64::max);
        let _ = writeln!(
            md,
            "- The corrected sums were decrypted and found exact (party list and canaries \
             checked as a party does) in every row at P = {}{}. Adding a correction to the \
             summed ciphertext without a key (`Summable::add_public`) took at most {}.",
            parties(checked),
            match unchecked.is_empty() {
                true => String::new(),
                false => format!(
                    "; not at P = {} (there only the measured client seals: the others' blinds \
                     would add minutes to the fixture)",
                    parties(unchecked)
                ),
            },
            ms(add_public)
        );
        if let Some(f) = self.flower.first() {
            let encode = listed(
                self.flower
                    .iter()
                    .map(|f| format!("{} at P = {}", ms(f.client.encode), f.parties))
                    .collect(),
            );
            let runs: Vec<usize> = self
                .flower
                .iter()
                .flat_map(|f| f.server.iter().map(|s| s.runs))
                .collect();
            let (fewest, most) = (runs.iter().min(), runs.iter().max());
            let server_runs = match (fewest, most) {
                (Some(a), Some(b)) if a != b => format!("{a} to {b}"),
                _ => most.map_or("no".into(), usize::to_string),
            };
            let _ = writeln!(
                md,
                "- Flower {} (Python {}, numpy {}), measured in this run by \
                 `benches/flower_secaggplus.py`: its client mod's stages and its server's \
                 unmask with its own functions (`flwr.common.secure_aggregation`), \
                 `num_shares` = k + 1 (its neighbourhood counts the node), threshold T, on the \
                 same {values} values. Client: process CPU time, median of {} rounds after a \
                 warm-up; its encoding (weighting and quantization: {encode}) is left out as \
                 hefl's is. Server: wall time, median of {server_runs} runs (fewer once a \
                 dropout count has taken 3 s). Bytes per value: the masked int64 vector and the \
                 extra messages' payloads (PEM keys, Fernet tokens, shares), without framing.",
                f.flower, f.python, f.numpy, f.client_runs,
            );
        }
        for (parties, why) in &self.flower_missing {
            let _ = writeln!(md, "- Flower's SecAgg+ at P = {parties}: {why}.");
        }
        let _ = writeln!(
            md,
            "- These rows took {:.0} s to measure (hefl's fixtures and Flower's).",
            self.robust_seconds
        );
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

    /// The robust rows and Flower's, one line per system, party count and dropout count
    /// (client columns repeat per party count), after the `machine` comment line.
    fn robust_csv(&self, machine: &str) -> String {
        let mut csv = format!(
            "{machine}system,parties,neighbours,threshold,dropouts,client_seconds,\
             client_keys_and_shares_seconds,client_seal_seconds,client_runs,strict_blinds_seconds,\
             extra_up_bytes,extra_down_bytes,upload_bytes,bytes_per_value,\
             server_unmask_seconds,server_runs,sum_checked\n"
        );
        let values = workloads::model_len() as f64;
        for c in &self.robust_clients {
            for r in self.robust_at(c.parties) {
                let _ = writeln!(
                    csv,
                    "hefl,{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    c.parties,
                    c.neighbours,
                    c.threshold,
                    r.dropouts,
                    c.total.median,
                    c.keys_and_shares.median,
                    c.seal.median,
                    c.total.runs,
                    c.strict_blinds.median,
                    r.bytes.up,
                    r.bytes.down,
                    c.upload_bytes,
                    (c.upload_bytes + r.bytes.up) as f64 / values,
                    r.unmask.median,
                    r.unmask.runs,
                    r.checked
                );
            }
        }
        for f in &self.flower {
            for s in &f.server {
                let _ = writeln!(
                    csv,
                    "flower,{},{},{},{},{},{},{},{},,{},{},{},{},{},{},",
                    f.parties,
                    f.neighbours,
                    f.threshold,
                    s.dropouts,
                    f.client.total(),
                    f.client.keys_and_shares,
                    f.client.mask,
                    f.client_runs,
                    f.bytes.extra_up,
                    f.bytes.extra_down,
                    f.bytes.masked_vector,
                    f.bytes_per_value(),
                    s.unmask,
                    s.runs
                );
            }
        }
        csv
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
            ("secagg_robust.csv", self.robust_csv(&machine)),
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
