//! The `hefl` command line: parses arguments and wires the library together.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use hefl::data::{Mnist, Partition};
use hefl::fl::{EpochMetrics, Mode, Observer, Privacy, RunMetrics, Strategy, TrainConfig};
use hefl::he::keys::{KeyFile, SecretKey};
use hefl::model::OptimizerKind;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Federated learning of an MNIST classifier in which clients' gradients are
/// aggregated under homomorphic encryption.
///
/// Data: MNIST is read from --data-dir, else $MNIST_DIR, else a per-user cache
/// directory (downloaded there, checksum-verified, when missing).
#[derive(Parser)]
#[command(name = "hefl", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train one model (local, centralized or federated) and report test accuracy per epoch.
    Train {
        /// Who trains on what: `local` (party 0 alone on its shard), `centralized`
        /// (all data in one place) or `federated` (P parties, aggregated updates).
        #[arg(long, default_value = "federated")]
        mode: Mode,
        #[command(flatten)]
        train: TrainArgs,
        /// Write the configuration and per-epoch metrics to this JSON file.
        #[arg(long, value_name = "FILE.json")]
        metrics_out: Option<PathBuf>,
    },
    /// The three-party experiment: local, centralized, federated-plain and
    /// federated-he with the same seed and settings. Prints a per-epoch table and
    /// the HE overhead; writes results.md, accuracy.png and metrics.json.
    #[command(alias = "compare")]
    Demo {
        #[command(flatten)]
        train: TrainArgs,
        /// Folder for results.md, accuracy.png and metrics.json.
        #[arg(long, default_value = "runs/demo", value_name = "DIR")]
        out_dir: PathBuf,
        /// Also write the metrics (an object keyed by run name) to this file.
        #[arg(long, value_name = "FILE.json")]
        metrics_out: Option<PathBuf>,
    },
    /// Create the key that all clients of a federation share, for --privacy he.
    ///
    /// Draws a fresh 32-byte seed from the operating system's CSPRNG and writes it,
    /// with its public key id and the tfhe parameter set, to a file of mode 0600.
    /// Copy the file to every client over a secure channel; never give it to the
    /// server (it needs only the key id, which each ciphertext carries).
    Keygen {
        /// Where to write the key file (parent folders are created).
        #[arg(long, default_value = "keys/hefl.key", value_name = "FILE")]
        out: PathBuf,
        /// Replace an existing key file. Clients holding the old key can no
        /// longer decrypt anything encrypted under the new one.
        #[arg(long)]
        force: bool,
    },
}

/// How updates are combined in federated mode.
#[derive(Clone, Copy, ValueEnum)]
enum StrategyArg {
    /// Each round every party sends one batch gradient; the mean is applied.
    Fedsgd,
    /// Each round every party takes --local-steps steps and sends its model
    /// delta; deltas are averaged weighted by sample count.
    Fedavg,
}

/// Settings shared by every training command.
#[derive(Args)]
struct TrainArgs {
    /// Number of parties the training set is split into.
    #[arg(long, default_value_t = 3)]
    parties: usize,
    /// How the data is split: `iid` (shuffled, equal shares) or `dirichlet:ALPHA`
    /// (label skew; smaller ALPHA = more skewed, e.g. dirichlet:0.5).
    #[arg(long, default_value = "iid")]
    partition: Partition,
    /// Aggregation strategy for federated mode.
    #[arg(long, value_enum, default_value = "fedsgd")]
    strategy: StrategyArg,
    /// Local optimizer steps per round with --strategy fedavg.
    #[arg(long, default_value_t = 5)]
    local_steps: usize,
    /// Passes over each party's data.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 1.5e-3)]
    lr: f32,
    /// Samples per batch (per party, per step).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Optimizer: sgd, momentum (0.9) or adam.
    #[arg(long, default_value = "adam")]
    optimizer: OptimizerKind,
    /// Seed for the initial model, the partition and batch orders.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Hidden layer widths, comma-separated (input 784 and output 10 are implied).
    #[arg(long, value_delimiter = ',', default_value = "128")]
    hidden: Vec<usize>,
    /// Use only the first N training images (quick experiments).
    #[arg(long, value_name = "N")]
    train_subset: Option<usize>,
    /// Evaluate on only the first N test images.
    #[arg(long, value_name = "N")]
    test_subset: Option<usize>,
    /// Folder with the MNIST IDX files (default: $MNIST_DIR, else the user cache).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// What the server sees in federated mode: `plain` (fixed-point updates in
    /// the clear) or `he` (the same updates encrypted; the server sums ciphertexts).
    #[arg(long, default_value = "plain")]
    privacy: Privacy,
    /// The shared key file for --privacy he (see `hefl keygen`). Without it, a
    /// fresh key is generated in memory for this run only.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

impl TrainArgs {
    fn config(&self, mode: Mode) -> TrainConfig {
        let mut layers = vec![hefl::data::IMAGE_PIXELS];
        layers.extend(&self.hidden);
        layers.push(hefl::data::NUM_CLASSES);
        TrainConfig {
            mode,
            parties: self.parties,
            partition: self.partition,
            privacy: self.privacy,
            strategy: match self.strategy {
                StrategyArg::Fedsgd => Strategy::FedSgd,
                StrategyArg::Fedavg => Strategy::FedAvg {
                    local_steps: self.local_steps,
                },
            },
            epochs: self.epochs,
            lr: self.lr,
            batch_size: self.batch_size,
            optimizer: self.optimizer,
            seed: self.seed,
            layers,
            train_subset: self.train_subset,
            test_subset: self.test_subset,
        }
    }

    /// The shared key: from --key, else a fresh in-memory key for this run.
    fn key(&self) -> Result<Arc<SecretKey>> {
        let file = match &self.key {
            Some(path) => KeyFile::load(path)?,
            None => {
                eprintln!("no --key given: using a fresh in-memory key for this run");
                KeyFile::generate()?
            }
        };
        Ok(Arc::new(file.secret_key()?))
    }

    fn load(&self) -> Result<Mnist> {
        hefl::data::load_or_download(self.data_dir.as_deref()).context("loading MNIST")
    }
}

/// Shows a progress bar over rounds and prints one line per epoch.
struct Progress {
    bar: ProgressBar,
}

impl Progress {
    fn new() -> Self {
        Self {
            bar: ProgressBar::hidden(),
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
        self.bar.set_prefix(config.label());
    }

    fn round(&mut self, _round: usize) {
        self.bar.inc(1);
    }

    fn epoch(&mut self, config: &TrainConfig, m: &EpochMetrics) {
        let line = format!(
            "{:>15} epoch {:>3}/{}: test accuracy {:6.2}%  test loss {:.4}  train loss {:.4}  {:.1} s",
            config.label(),
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

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(value)?;
    std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
}

fn train(mode: Mode, args: &TrainArgs, metrics_out: Option<&Path>) -> Result<()> {
    let data = args.load()?;
    let config = args.config(mode);
    let key = match (config.mode, config.privacy) {
        (Mode::Federated, Privacy::He) => Some(args.key()?),
        _ => None,
    };
    let metrics = hefl::fl::run(&config, &data, key, &mut Progress::new())?;
    if let Some(overhead) = &metrics.overhead {
        println!(
            "{}",
            hefl::report::overhead_summary(overhead, metrics.total_seconds)
        );
    }
    if let Some(path) = metrics_out {
        write_json(path, &metrics)?;
        eprintln!("metrics written to {}", path.display());
    }
    Ok(())
}

fn demo(args: &TrainArgs, out_dir: &Path, metrics_out: Option<&Path>) -> Result<()> {
    let data = args.load()?;
    let key = args.key()?;
    let mut runs: Vec<(String, RunMetrics)> = Vec::new();
    let plans = [
        (Mode::Local, Privacy::Plain),
        (Mode::Centralized, Privacy::Plain),
        (Mode::Federated, Privacy::Plain),
        (Mode::Federated, Privacy::He),
    ];
    for (mode, privacy) in plans {
        let config = TrainConfig {
            privacy,
            ..args.config(mode)
        };
        let run_key = (privacy == Privacy::He).then(|| Arc::clone(&key));
        let metrics = hefl::fl::run(&config, &data, run_key, &mut Progress::new())?;
        runs.push((config.label(), metrics));
    }
    let named: Vec<(&str, &RunMetrics)> = runs.iter().map(|(n, m)| (n.as_str(), m)).collect();
    let table = hefl::report::accuracy_table(&named);
    let overheads: Vec<String> = runs
        .iter()
        .filter_map(|(name, m)| {
            m.overhead.as_ref().map(|o| {
                format!(
                    "- {name}: {}",
                    hefl::report::overhead_summary(o, m.total_seconds)
                )
            })
        })
        .collect();
    let overheads = overheads.join("\n");
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let plot = out_dir.join("accuracy.png");
    hefl::report::plot_accuracy(
        &plot,
        &format!("MNIST test accuracy, {} parties", args.parties),
        &named,
    )?;
    let md = out_dir.join("results.md");
    std::fs::write(
        &md,
        format!(
            "# local vs centralized vs federated (plain, he)\n\n{table}\n## Time in the privacy envelope\n\n{overheads}\n"
        ),
    )
    .with_context(|| format!("writing {}", md.display()))?;
    let json: serde_json::Map<String, serde_json::Value> = runs
        .iter()
        .map(|(n, m)| Ok((n.clone(), serde_json::to_value(m)?)))
        .collect::<Result<_, serde_json::Error>>()?;
    let json_path = out_dir.join("metrics.json");
    write_json(&json_path, &json)?;
    if let Some(path) = metrics_out {
        write_json(path, &json)?;
    }
    println!("\n{table}\n{overheads}\n");
    println!(
        "wrote {}, {} and {}",
        md.display(),
        plot.display(),
        json_path.display()
    );
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Train {
            mode,
            train: args,
            metrics_out,
        } => train(mode, &args, metrics_out.as_deref()),
        Command::Demo {
            train: args,
            out_dir,
            metrics_out,
        } => demo(&args, &out_dir, metrics_out.as_deref()),
        Command::Keygen { out, force } => keygen(&out, force),
    }
}

fn keygen(out: &Path, force: bool) -> Result<()> {
    let key = KeyFile::generate()?;
    key.write_new(out, force)?;
    // Loading back checks what a client will check: mode, format, key id.
    let written = KeyFile::load(out)?;
    println!("{} {}", written.key_id(), out.display());
    Ok(())
}
