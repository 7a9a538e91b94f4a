//! Human-readable results: markdown tables of training runs and, with the `plot` feature,
//! PNG plots (`plot_accuracy`, `plot_lines`, `plot_bars`).

use crate::fl::RunMetrics;
use std::fmt::Write as _;

#[cfg(feature = "plot")]
mod plot;
#[cfg(feature = "plot")]
pub use plot::{
    Axis, LinePlot, PlotError, Scale, Series, SeriesStyle, plot_accuracy, plot_bars, plot_lines,
};

/// A markdown table with one row per epoch and one accuracy column per run,
/// then the final loss and the run time of each.
///
/// ```
/// let table = hefl::report::accuracy_table(&[]);
/// assert!(table.starts_with("| epoch |"));
/// ```
pub fn accuracy_table(runs: &[(&str, &RunMetrics)]) -> String {
    let mut out = String::from("| epoch |");
    for (name, _) in runs {
        let _ = write!(out, " {name} |");
    }
    out.push_str("\n|---:|");
    out.push_str(&"---:|".repeat(runs.len()));
    out.push('\n');
    let epochs = runs.iter().map(|(_, r)| r.epochs.len()).max().unwrap_or(0);
    for e in 0..epochs {
        let _ = write!(out, "| {} |", e + 1);
        for (_, run) in runs {
            match run.epochs.get(e) {
                Some(m) => {
                    let _ = write!(out, " {:.2}% |", 100.0 * m.test_accuracy);
                }
                None => out.push_str(" |"),
            }
        }
        out.push('\n');
    }
    out.push_str("| final test loss |");
    for (_, run) in runs {
        let loss = run.epochs.last().map_or(f64::NAN, |m| m.test_loss);
        let _ = write!(out, " {loss:.4} |");
    }
    out.push_str("\n| wall time |");
    for (_, run) in runs {
        let _ = write!(out, " {:.1} s |", run.total_seconds);
    }
    out.push('\n');
    out
}

/// One line on where a federated run's envelope time went, as a share of the run.
///
/// ```
/// use hefl::fl::{EnvelopeCost, Overhead, Privacy};
///
/// let o = Overhead {
///     privacy: Privacy::He,
///     seal_seconds: 6.0,
///     server_seconds: 1.0,
///     open_seconds: 3.0,
///     client_cpu: EnvelopeCost {
///         encode_seconds: 2.0,
///         encrypt_seconds: 8.0,
///         decrypt_seconds: 5.0,
///         decode_seconds: 1.0,
///         bytes_per_update: 318_356,
///         ..EnvelopeCost::default()
///     },
///     ..Overhead::default()
/// };
/// let line = hefl::report::overhead_summary(&o, 100.0);
/// assert!(line.starts_with("he envelope 10.0 s of 100.0 s (10.0%)"));
/// ```
pub fn overhead_summary(o: &crate::fl::Overhead, total_seconds: f64) -> String {
    let c = &o.client_cpu;
    format!(
        "{} envelope {:.1} s of {:.1} s ({:.1}%): seal {:.1} s, server sum {:.1} s, open {:.1} s \
         (client CPU: encode {:.1} s, prepare {:.1} s while waiting, seal {:.1} s, decrypt {:.1} s, \
         decode {:.1} s); {} bytes per update, {} per aggregate",
        o.privacy,
        o.total_seconds(),
        total_seconds,
        100.0 * o.total_seconds() / total_seconds.max(f64::MIN_POSITIVE),
        o.seal_seconds,
        o.server_seconds,
        o.open_seconds,
        c.encode_seconds,
        c.prepare_seconds,
        c.encrypt_seconds,
        c.decrypt_seconds,
        c.decode_seconds,
        c.bytes_per_update,
        c.bytes_per_aggregate,
    )
}

/// One row of the accuracy-versus-epsilon table.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepRow {
    /// The run's name.
    pub name: String,
    /// Epsilon spent (`None` for the non-private and HE runs).
    pub epsilon: Option<f64>,
    /// Noise multiplier used (DP runs).
    pub noise_multiplier: Option<f64>,
    /// Final test accuracy, 0..=1.
    pub accuracy: f64,
    /// Wall-clock seconds of the run.
    pub seconds: f64,
}

/// The sweep as a markdown table and as CSV.
///
/// ```
/// use hefl::report::{SweepRow, sweep_tables};
///
/// let rows = [SweepRow { name: "federated-dp".into(), epsilon: Some(1.0), noise_multiplier: Some(1.2),
///     accuracy: 0.9, seconds: 30.0 }];
/// let (md, csv) = sweep_tables(&rows);
/// assert!(md.contains("| federated-dp | 1.00 | 1.200 | 90.00% | 30.0 s |"));
/// assert_eq!(csv.lines().nth(1), Some("federated-dp,1,1.2,0.9,30"));
/// ```
pub fn sweep_tables(rows: &[SweepRow]) -> (String, String) {
    let mut md = String::from(
        "| run | epsilon | noise multiplier | final test accuracy | wall time |\n|---|---:|---:|---:|---:|\n",
    );
    let mut csv = String::from("run,epsilon,noise_multiplier,test_accuracy,seconds\n");
    for r in rows {
        let eps = r.epsilon.map_or("∞ (none)".into(), |e| format!("{e:.2}"));
        let sigma = r.noise_multiplier.map_or("-".into(), |s| format!("{s:.3}"));
        let _ = writeln!(
            md,
            "| {} | {eps} | {sigma} | {:.2}% | {:.1} s |",
            r.name,
            100.0 * r.accuracy,
            r.seconds
        );
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
        let _ = writeln!(
            csv,
            "{},{},{},{},{}",
            r.name,
            opt(r.epsilon),
            opt(r.noise_multiplier),
            r.accuracy,
            r.seconds
        );
    }
    (md, csv)
}

/// One row of the HE-versus-plain-versus-DP comparison (`hefl dp-compare`).
#[derive(Clone, Debug, PartialEq)]
pub struct ComparisonRow {
    /// The run's name.
    pub name: String,
    /// Its settings in a few words (batch, optimizer, C, epochs, σ).
    pub settings: String,
    /// ε by the PLD and by the RDP accountant (`None`: no DP).
    pub epsilon_pld: Option<f64>,
    /// ε by the RDP accountant.
    pub epsilon_rdp: Option<f64>,
    /// Final test accuracy, 0..=1.
    pub accuracy: f64,
    /// Wall-clock seconds of the run (all parties in one process).
    pub seconds: f64,
    /// Rounds run.
    pub rounds: usize,
    /// Envelope CPU seconds (encode, encrypt, decrypt, decode) summed over the parties.
    pub envelope_cpu_seconds: f64,
    /// Parties.
    pub parties: usize,
    /// Bytes one party uploads per round.
    pub bytes_per_round: usize,
}

/// The comparison as a markdown table and as CSV: per run its accuracy, wall time, wall
/// time per round, one client's envelope CPU per round, bytes per party per round and ε
/// under both accountants.
///
/// ```
/// use hefl::report::{ComparisonRow, comparison_tables};
///
/// let row = ComparisonRow { name: "federated-he".into(), settings: "batch 64".into(),
///     epsilon_pld: None, epsilon_rdp: None, accuracy: 0.9783, seconds: 60.0, rounds: 3130,
///     envelope_cpu_seconds: 313.0, parties: 3, bytes_per_round: 1_638_536 };
/// let (md, csv) = comparison_tables(&[row]);
/// assert!(md.contains("| federated-he | batch 64 | ∞ | ∞ | 97.83% | 60.0 s | 3130 | 19.2 ms | 33.3 ms | 1,638,536 |"), "{md}");
/// assert_eq!(csv.lines().nth(1), Some("federated-he,batch 64,,,0.9783,60,3130,0.019169,0.033333,1638536"));
/// ```
pub fn comparison_tables(rows: &[ComparisonRow]) -> (String, String) {
    let mut md = String::from(
        "| run | settings | ε (PLD) | ε (RDP) | final test accuracy | wall time | rounds | wall per round | client envelope CPU per round | bytes per party per round |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut csv = String::from(
        "run,settings,epsilon_pld,epsilon_rdp,test_accuracy,seconds,rounds,seconds_per_round,client_envelope_seconds_per_round,bytes_per_round\n",
    );
    for r in rows {
        let per_round = r.seconds / r.rounds.max(1) as f64;
        let client = r.envelope_cpu_seconds / (r.rounds.max(1) * r.parties.max(1)) as f64;
        let eps = |e: Option<f64>| e.map_or("∞".into(), |e| format!("{e:.2}"));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.2}% | {:.1} s | {} | {:.1} ms | {:.1} ms | {} |",
            r.name,
            r.settings,
            eps(r.epsilon_pld),
            eps(r.epsilon_rdp),
            100.0 * r.accuracy,
            r.seconds,
            r.rounds,
            1e3 * per_round,
            1e3 * client,
            thousands(r.bytes_per_round)
        );
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{:.6},{:.6},{}",
            r.name,
            r.settings,
            opt(r.epsilon_pld),
            opt(r.epsilon_rdp),
            r.accuracy,
            r.seconds,
            r.rounds,
            per_round,
            client,
            r.bytes_per_round
        );
    }
    (md, csv)
}

/// `n` with commas between thousands: `10,000`.
///
/// ```
/// assert_eq!(hefl::report::thousands(1_638_536), "1,638,536");
/// assert_eq!(hefl::report::thousands(999), "999");
/// ```
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
