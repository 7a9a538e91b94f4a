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
///     skipped_rounds: vec![],
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
