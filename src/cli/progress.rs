//! Progress on the terminal: a bar over rounds and one line per epoch.

use hefl::fl::{EpochMetrics, Observer, TrainConfig};
use indicatif::{ProgressBar, ProgressStyle};

/// Shows a progress bar over rounds and prints one line per epoch.
pub struct Progress {
    bar: ProgressBar,
    /// Names the run in lines and on the bar (default: the run's label).
    prefix: String,
}

impl Progress {
    /// A progress display named after each run's label.
    pub fn new() -> Self {
        Self::named("")
    }

    /// A progress display named `prefix` (e.g. `party 2`).
    pub fn named(prefix: &str) -> Self {
        Self {
            bar: ProgressBar::hidden(),
            prefix: prefix.to_owned(),
        }
    }

    fn name(&self, config: &TrainConfig) -> String {
        if self.prefix.is_empty() {
            config.label()
        } else {
            self.prefix.clone()
        }
    }
}

impl Observer for Progress {
    fn start(&mut self, config: &TrainConfig, total_rounds: usize) {
        self.bar = ProgressBar::new(total_rounds as u64);
        self.bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>15} [{bar:30}] {pos}/{len} rounds  {elapsed_precise} (eta {eta})",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        self.bar.set_prefix(self.name(config));
    }

    fn round(&mut self, _round: usize) {
        self.bar.inc(1);
    }

    fn note(&mut self, message: &str) {
        let line = format!("{:>15} {message}", self.prefix);
        self.bar.suspend(|| eprintln!("{line}"));
    }

    fn epoch(&mut self, config: &TrainConfig, m: &EpochMetrics) {
        let epsilon = m
            .epsilon
            .map_or(String::new(), |e| format!("  epsilon {e:.2}"));
        let line = format!(
            "{:>15} epoch {:>3}/{}: test accuracy {:6.2}%  test loss {:.4}  train loss {:.4}  {:.1} s{epsilon}",
            self.name(config),
            m.epoch,
            config.epochs,
            100.0 * m.test_accuracy,
            m.test_loss,
            m.train_loss,
            m.wall_seconds
        );
        self.bar.suspend(|| println!("{line}"));
        if m.epoch == config.epochs {
            self.bar.finish_and_clear();
        }
    }
}
