//! The `hefl` command line: parses arguments and wires the library together.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use hefl::data::{Mnist, Partition};
use hefl::dp::{DpSgd, InputDp, Sampling};
use hefl::fl::{
    EpochMetrics, Mode, Observer, PlainSum, Plan, Privacy, RunMetrics, Server, ServerConfig,
    Strategy, TrainConfig,
};
use hefl::he::keys::{KeyFile, KeyId, SecretKey};
use hefl::he::{EncryptedVector, Expected};
use hefl::model::OptimizerKind;
use hefl::transport::http::{self, HttpUplink, Tokens};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        /// Run federated-he as separate processes on loopback: one `hefl serve`
        /// and one `hefl join` per party (their files go to OUT_DIR/network).
        #[arg(long)]
        network: bool,
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
    /// Run a federation's server: it holds no key and no model, only sums what
    /// the parties send. Prints `listening on http://ADDR`, then one line per
    /// epoch and per round closed without every party; exits after the last round.
    Serve {
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR")]
        bind: String,
        /// A round closes at its deadline if at least this many parties sent an
        /// update (default: all parties).
        #[arg(long, value_name = "N")]
        min_parties: Option<u32>,
        /// Time each round waits for updates, e.g. 30s, 500ms, 2m.
        #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
        round_timeout: Duration,
        /// With --privacy he: the public id of the shared key (printed by
        /// `hefl keygen`). The server never needs the key itself.
        #[arg(long, value_name = "HEX")]
        key_id: Option<KeyId>,
        /// Per-party tokens: read from this JSON file, or created there (mode
        /// 0600) if missing. Give party i the i-th token.
        #[arg(long, default_value = "keys/tokens.json", value_name = "FILE")]
        tokens: PathBuf,
        /// Training images the parties hold in total, to size an epoch.
        #[arg(long, default_value_t = 60_000, value_name = "N")]
        train_size: usize,
        /// Rounds per epoch (default: one pass over the largest IID shard;
        /// required with dirichlet partitions).
        #[arg(long, value_name = "N")]
        rounds_per_epoch: Option<usize>,
        /// Serve over TLS with this PEM certificate chain (with --tls-key).
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        #[command(flatten)]
        train: TrainArgs,
    },
    /// Accuracy against epsilon: federated DP-SGD calibrated to each target
    /// epsilon, beside the non-private (plain) and HE runs, same seed and epochs.
    /// Writes dp-sweep.md, dp-sweep.csv and dp-sweep.png.
    DpSweep {
        #[command(flatten)]
        train: TrainArgs,
        /// Target epsilons, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "0.5,1,2,4,8")]
        epsilons: Vec<f64>,
        /// Folder for the table, CSV and plot.
        #[arg(long, default_value = "runs/dp-sweep", value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// Measure what privacy costs on this machine: one client's round in each mode
    /// (plaintext, DP-SGD, HE) as a multiple of the plaintext step, server aggregation
    /// latency for 2 to 1000 parties with a fitted slope and peak memory, bytes per
    /// party per round, and encryption throughput against threads and vector length
    /// (10^4 to 10^7 values). Prints markdown tables; writes report.md, CSV files and
    /// PNG plots. Takes under a minute on two cores (--quick: about 10 s). Build with --release:
    /// `cargo run --release -- bench-report`. The criterion benches (`cargo bench`)
    /// measure the same operations with full statistics.
    BenchReport {
        /// Fewer and shorter repetitions: rough medians in about 10 seconds.
        #[arg(long)]
        quick: bool,
        /// Folder for report.md, the CSV files and the plots.
        #[arg(long, default_value = "runs/bench", value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// Print the epsilon of a DP-SGD run (Rényi-DP accountant of the sampled
    /// Gaussian mechanism, Opacus's orders and conversion). The last line is the
    /// bare number, for scripts.
    DpEpsilon {
        #[command(flatten)]
        args: DpEpsilonArgs,
    },
    /// Join a federation as one party: fetch the server's plan, train on this
    /// party's shard, send sealed updates, apply the published sums.
    Join {
        /// The server's URL, e.g. http://127.0.0.1:7878.
        #[arg(long, value_name = "URL")]
        server: String,
        /// This party's id, 0 to parties - 1.
        #[arg(long, value_name = "ID")]
        party: u32,
        /// This party's token (or set HEFL_TOKEN, or give --tokens).
        #[arg(long, env = "HEFL_TOKEN", hide_env_values = true, value_name = "TOKEN")]
        token: Option<String>,
        /// Read this party's token from the server's tokens file.
        #[arg(long, value_name = "FILE", conflicts_with = "token")]
        tokens: Option<PathBuf>,
        /// The shared key file (needed when the server runs privacy he).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Folder with the MNIST IDX files (default: $MNIST_DIR, else the user cache).
        /// This party trains on its shard of the plan's partition.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Write this party's configuration and per-epoch metrics to this JSON file.
        #[arg(long, value_name = "FILE.json")]
        metrics_out: Option<PathBuf>,
        /// For an https:// server: trust only this PEM CA certificate (e.g. the
        /// server's self-signed certificate) instead of the usual web roots.
        #[arg(long, value_name = "FILE")]
        ca_cert: Option<PathBuf>,
    },
}

/// Checks a probability-like flag.
fn parse_rate(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) && v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 1"))
    }
}

/// Parses `30s`, `500ms`, `2m` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s or m"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// `hefl dp-epsilon` flags.
#[derive(Args)]
struct DpEpsilonArgs {
    /// Probability that a sample is in a batch: batch size / local dataset size.
    #[arg(long, value_parser = parse_rate, value_name = "Q")]
    sampling_rate: f64,
    /// Noise standard deviation as a multiple of the clipping norm.
    #[arg(long, value_name = "SIGMA")]
    noise_multiplier: f64,
    /// Number of DP-SGD steps.
    #[arg(long, value_name = "T")]
    steps: u64,
    /// The delta of the (epsilon, delta) guarantee.
    #[arg(long, default_value_t = 1e-5, value_parser = parse_rate, value_name = "D")]
    delta: f64,
}

/// DP-SGD batch formation.
#[derive(Clone, Copy, ValueEnum)]
enum SamplingArg {
    /// Each example independently with probability batch / local samples.
    Poisson,
    /// Shuffled fixed-size batches.
    Shuffle,
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
    /// the clear), `he` (the same updates encrypted; the server sums ciphertexts)
    /// or `dp` (DP-SGD on every client, noisy updates in the clear; also applies
    /// to local and centralized training).
    #[arg(long, default_value = "plain")]
    privacy: Privacy,
    /// DP-SGD: noise standard deviation as a multiple of --max-grad-norm.
    #[arg(long, default_value_t = 1.0, value_name = "SIGMA")]
    noise_multiplier: f64,
    /// DP-SGD: choose the noise multiplier so that the run ends at this epsilon
    /// (overrides --noise-multiplier).
    #[arg(long, value_name = "EPS")]
    target_epsilon: Option<f64>,
    /// DP-SGD: every example's gradient is clipped to this L2 norm.
    #[arg(long, default_value_t = 1.0, value_name = "C")]
    max_grad_norm: f32,
    /// DP-SGD: the delta of the reported (epsilon, delta) guarantee. The default
    /// 1e-5 is below 1/n for every party of a 3-party MNIST split (1/20,000).
    #[arg(long, default_value_t = 1e-5, value_parser = parse_rate, value_name = "D")]
    delta: f64,
    /// DP-SGD batches: `poisson` (each example with probability batch/n; what the
    /// accountant analyses) or `shuffle` (fixed-size shuffled batches; the
    /// accountant's epsilon is then an approximation).
    #[arg(long, default_value = "poisson", value_enum)]
    dp_sampling: SamplingArg,
    /// Input perturbation baseline: L2-normalise every training image and add
    /// Gaussian noise for (EPS, --delta)-DP per image, before any training.
    #[arg(long, value_name = "EPS")]
    input_dp: Option<f64>,
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
            dp: (self.privacy == Privacy::Dp).then_some(DpSgd {
                noise_multiplier: self.noise_multiplier,
                max_grad_norm: self.max_grad_norm,
                delta: self.delta,
                sampling: match self.dp_sampling {
                    SamplingArg::Poisson => Sampling::Poisson,
                    SamplingArg::Shuffle => Sampling::Shuffle,
                },
            }),
            input_dp: self.input_dp.map(|epsilon| InputDp {
                epsilon,
                delta: self.delta,
            }),
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

    /// The flags that define a run's plan, to start `hefl serve` with the same settings.
    fn plan_args(&self) -> Vec<String> {
        let hidden: Vec<String> = self.hidden.iter().map(usize::to_string).collect();
        let mut out: Vec<String> = [
            ("--parties", self.parties.to_string()),
            ("--partition", self.partition.to_string()),
            ("--local-steps", self.local_steps.to_string()),
            ("--epochs", self.epochs.to_string()),
            ("--lr", self.lr.to_string()),
            ("--batch-size", self.batch_size.to_string()),
            ("--optimizer", self.optimizer.to_string()),
            ("--seed", self.seed.to_string()),
            ("--hidden", hidden.join(",")),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_owned(), value])
        .collect();
        out.push("--strategy".into());
        out.push(match self.strategy {
            StrategyArg::Fedsgd => "fedsgd".into(),
            StrategyArg::Fedavg => "fedavg".into(),
        });
        for (flag, value) in [
            ("--train-subset", self.train_subset),
            ("--test-subset", self.test_subset),
        ] {
            if let Some(n) = value {
                out.push(flag.into());
                out.push(n.to_string());
            }
        }
        out
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

    /// The run's configuration for `mode` on `data`, with the noise multiplier
    /// calibrated to --target-epsilon when given.
    fn config_for(&self, mode: Mode, data: &Mnist) -> Result<TrainConfig> {
        let mut config = self.config(mode);
        if let Some(target) = self.target_epsilon {
            let sigma = hefl::fl::calibrate_noise(&mut config, data.train.len(), target)?;
            eprintln!(
                "{}: noise multiplier {sigma:.4} for epsilon {target} at delta {}",
                config.label(),
                self.delta
            );
        }
        Ok(config)
    }

    fn load(&self) -> Result<Mnist> {
        hefl::data::load_or_download(self.data_dir.as_deref()).context("loading MNIST")
    }
}

/// Shows a progress bar over rounds and prints one line per epoch.
struct Progress {
    bar: ProgressBar,
    /// Names the run in lines and on the bar (default: the run's label).
    prefix: String,
}

impl Progress {
    fn new() -> Self {
        Self {
            bar: ProgressBar::hidden(),
            prefix: String::new(),
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

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn write_file(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_dir(dir)?;
    }
    write_file(path, serde_json::to_string_pretty(value)? + "\n")
}

fn train(mode: Mode, args: &TrainArgs, metrics_out: Option<&Path>) -> Result<()> {
    let data = args.load()?;
    let config = args.config_for(mode, &data)?;
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

fn demo(args: &TrainArgs, out_dir: &Path, metrics_out: Option<&Path>, network: bool) -> Result<()> {
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
            dp: None,
            ..args.config(mode)
        };
        let metrics = if network && privacy == Privacy::He {
            network_run(args, &out_dir.join("network"))?
        } else {
            let run_key = (privacy == Privacy::He).then(|| Arc::clone(&key));
            hefl::fl::run(&config, &data, run_key, &mut Progress::new())?
        };
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
    create_dir(out_dir)?;
    let plot = out_dir.join("accuracy.png");
    hefl::report::plot_accuracy(
        &plot,
        &format!("MNIST test accuracy, {} parties", args.parties),
        &named,
    )?;
    let md = out_dir.join("results.md");
    write_file(
        &md,
        format!(
            "# local vs centralized vs federated (plain, he)\n\n{table}\n## Time in the privacy envelope\n\n{overheads}\n"
        ),
    )?;
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

/// Every round allocates and frees megabyte-sized vectors (updates, ciphertexts, wire
/// buffers). glibc's malloc hands such blocks back to the kernel and faults them in again
/// the next round: a two-party server round took 3.4 ms instead of 0.5 ms (`hefl
/// bench-report`). mimalloc keeps them for reuse.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            network,
        } => demo(&args, &out_dir, metrics_out.as_deref(), network),
        Command::Keygen { out, force } => keygen(&out, force),
        Command::DpSweep {
            train,
            epsilons,
            out_dir,
        } => dp_sweep(&train, &epsilons, &out_dir),
        Command::BenchReport { quick, out_dir } => bench_report(quick, &out_dir),
        Command::DpEpsilon { args } => {
            if !(args.noise_multiplier.is_finite() && args.noise_multiplier > 0.0) {
                bail!("--noise-multiplier must be a positive number");
            }
            let (eps, order) = hefl::dp::epsilon(
                args.sampling_rate,
                args.noise_multiplier,
                args.steps,
                args.delta,
            );
            println!(
                "epsilon for q = {}, sigma = {}, {} steps, delta = {} (best order {order}):",
                args.sampling_rate, args.noise_multiplier, args.steps, args.delta
            );
            println!("{eps}");
            Ok(())
        }
        Command::Serve {
            bind,
            min_parties,
            round_timeout,
            key_id,
            tokens,
            train_size,
            rounds_per_epoch,
            tls_cert,
            tls_key,
            train,
        } => {
            let plan = hefl::fl::plan_for(
                &train.config(Mode::Federated),
                train_size,
                rounds_per_epoch,
                key_id.map(|k| k.to_string()),
                round_timeout.as_millis() as u64,
            )?;
            if train.key.is_some() {
                bail!("the server never holds the key: give --key-id (printed by `hefl keygen`)");
            }
            let tls = tls_cert
                .zip(tls_key)
                .map(|(cert, key)| http::TlsFiles { cert, key });
            serve(&bind, plan, min_parties, &tokens, tls)
        }
        Command::Join {
            server,
            party,
            token,
            tokens,
            key,
            data_dir,
            metrics_out,
            ca_cert,
        } => {
            let token = match (token, tokens) {
                (Some(t), _) => t,
                (None, Some(path)) => Tokens::read_party(&path, party)?,
                (None, None) => {
                    bail!("give this party's token: --token, HEFL_TOKEN or --tokens FILE")
                }
            };
            let mut uplink = match ca_cert {
                None => HttpUplink::new(&server, party, &token),
                Some(path) => {
                    let pem = std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    HttpUplink::with_ca(&server, party, &token, &pem)?
                }
            };
            join(
                &mut uplink,
                party,
                key.as_deref(),
                data_dir.as_deref(),
                metrics_out.as_deref(),
            )
        }
    }
}

/// The federated-he run as processes on loopback: one server, one client per party.
/// Returns party 0's metrics.
fn network_run(args: &TrainArgs, dir: &Path) -> Result<RunMetrics> {
    create_dir(dir)?;
    let key_path = match &args.key {
        Some(path) => path.clone(),
        None => {
            let path = dir.join("hefl.key");
            KeyFile::generate()?.write_new(&path, true)?;
            path
        }
    };
    let key_id = KeyFile::load(&key_path)?.key_id().to_string();
    let tokens = dir.join("tokens.json");
    // Fresh tokens for this run.
    if tokens.exists() {
        std::fs::remove_file(&tokens).with_context(|| format!("removing {}", tokens.display()))?;
    }
    let exe = std::env::current_exe().context("locating the hefl binary")?;
    let mut server = std::process::Command::new(&exe)
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--key-id",
            &key_id,
            "--privacy",
            "he",
        ])
        .arg("--tokens")
        .arg(&tokens)
        .args(args.plan_args())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting hefl serve")?;
    let mut line = String::new();
    if let Some(out) = server.stdout.as_mut() {
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)?;
    }
    let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) else {
        let _ = server.kill();
        bail!("hefl serve did not start: {line:?}");
    };
    eprintln!(
        "network: server at {url}, {} client processes",
        args.parties
    );
    let mut parties = Vec::new();
    for party in 0..args.parties {
        let mut join = std::process::Command::new(&exe);
        join.args(["join", "--server", url, "--party", &party.to_string()])
            .arg("--tokens")
            .arg(&tokens)
            .arg("--key")
            .arg(&key_path)
            .arg("--metrics-out")
            .arg(dir.join(format!("party-{party}.json")));
        if let Some(data_dir) = &args.data_dir {
            join.arg("--data-dir").arg(data_dir);
        }
        if party > 0 {
            // Party 0 speaks for all: every party prints the same epoch lines.
            join.stdout(std::process::Stdio::null());
        }
        parties.push(join.spawn().context("starting hefl join")?);
    }
    let mut failed = Vec::new();
    for (party, mut child) in parties.into_iter().enumerate() {
        if !child.wait()?.success() {
            failed.push(party);
        }
    }
    let status = server.wait()?;
    if !failed.is_empty() || !status.success() {
        bail!("network run failed: parties {failed:?} exited with errors, server {status}");
    }
    let path = dir.join("party-0.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn serve(
    bind: &str,
    plan: Plan,
    min_parties: Option<u32>,
    tokens: &Path,
    tls: Option<http::TlsFiles>,
) -> Result<()> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let parties = u32::try_from(plan.config.parties).context("too many parties")?;
    let config = ServerConfig {
        min_parties: min_parties.unwrap_or(parties),
        round_timeout: Duration::from_millis(plan.round_timeout_ms),
        ..ServerConfig::new(parties)
    };
    let issued = Tokens::load_or_create(tokens, plan.config.parties)?;
    let listener = std::net::TcpListener::bind(bind).with_context(|| format!("binding {bind}"))?;
    let addr = listener.local_addr()?;
    let slots = hefl::model::param_count(&plan.config.layers) + 1;
    let now = Instant::now();
    let log = |line: &str| eprintln!("serve: {line}");
    let started = Instant::now();
    let announce = |privacy: Privacy| {
        println!(
            "listening on {scheme}://{addr} ({} parties, privacy {privacy}, {} rounds; tokens in {})",
            plan.config.parties,
            plan.total_rounds(),
            tokens.display()
        );
        // The demo and scripts read this line: make sure it is out.
        let _ = std::io::Write::flush(&mut std::io::stdout());
    };
    let tokens = Tokens::from_issued(&issued);
    let report = match (plan.config.privacy, &plan.key_id) {
        (privacy @ (Privacy::Plain | Privacy::Dp), _) => {
            announce(privacy);
            let server = Server::<PlainSum>::new(config, slots, now)?;
            http::serve(listener, server, plan, tokens, tls, log)?
        }
        (Privacy::He, Some(key_id)) => {
            let key_id: KeyId = key_id.parse()?;
            announce(Privacy::He);
            let server =
                Server::<EncryptedVector>::new(config, Expected::fresh(key_id, slots), now)?;
            http::serve(listener, server, plan, tokens, tls, log)?
        }
        (Privacy::He, None) => bail!("--privacy he needs --key-id (printed by `hefl keygen`)"),
    };
    println!(
        "done: {} rounds in {:.1} s, {} without every party",
        report.rounds,
        started.elapsed().as_secs_f64(),
        report.short_rounds
    );
    Ok(())
}

fn join(
    uplink: &mut HttpUplink,
    party: u32,
    key: Option<&Path>,
    data_dir: Option<&Path>,
    metrics_out: Option<&Path>,
) -> Result<()> {
    let plan = uplink.plan()?;
    let key = match (plan.config.privacy, key) {
        (Privacy::He, Some(path)) => Some(Arc::new(KeyFile::load(path)?.secret_key()?)),
        (Privacy::He, None) => bail!("the server runs privacy he: pass the shared key with --key"),
        (Privacy::Plain | Privacy::Dp, _) => None,
    };
    let data = hefl::data::load_or_download(data_dir).context("loading MNIST")?;
    let mut progress = Progress::new();
    progress.prefix = format!("party {party}");
    let metrics = hefl::fl::run_party(&plan, party as usize, &data, key, uplink, &mut progress)?;
    if let Some(path) = metrics_out {
        write_json(path, &metrics)?;
    }
    println!(
        "party {party}: final test accuracy {:.2}% after {} rounds",
        100.0 * metrics.final_accuracy().unwrap_or(0.0),
        plan.total_rounds()
    );
    Ok(())
}

fn bench_report(quick: bool, out_dir: &Path) -> Result<()> {
    create_dir(out_dir)?;
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this binary was built without --release; run `cargo run --release -- \
             bench-report` for representative times"
        );
    }
    let start = Instant::now();
    let report = hefl::perf::suite::run(hefl::perf::suite::Options { quick }, &mut |step| {
        eprintln!("[{:6.1} s] {step}", start.elapsed().as_secs_f64());
    })?;
    let markdown = report.markdown();
    let md_path = out_dir.join("report.md");
    let command = if quick {
        "hefl bench-report --quick"
    } else {
        "hefl bench-report"
    };
    write_file(
        &md_path,
        format!(
            "# Performance report\n\nMeasured by `{command}` in {:.0} s.\n\n{markdown}",
            start.elapsed().as_secs_f64()
        ),
    )?;
    let mut written = vec![md_path];
    for (name, contents) in report.csv() {
        let path = out_dir.join(name);
        write_file(&path, contents)?;
        written.push(path);
    }
    written.extend(report.plot(out_dir)?);
    println!("\n{markdown}");
    let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    println!("wrote {}", names.join(", "));
    Ok(())
}

fn dp_sweep(args: &TrainArgs, epsilons: &[f64], out_dir: &Path) -> Result<()> {
    let data = args.load()?;
    let key = args.key()?;
    let base = TrainConfig {
        dp: None,
        input_dp: None,
        ..args.config(Mode::Federated)
    };
    let mut runs: Vec<(String, RunMetrics)> = Vec::new();
    let mut rows = Vec::new();
    for privacy in [Privacy::Plain, Privacy::He] {
        let config = TrainConfig {
            privacy,
            ..base.clone()
        };
        let run_key = (privacy == Privacy::He).then(|| Arc::clone(&key));
        let m = hefl::fl::run(&config, &data, run_key, &mut Progress::new())?;
        rows.push(hefl::report::SweepRow {
            name: config.label(),
            epsilon: None,
            noise_multiplier: None,
            accuracy: m.final_accuracy().unwrap_or(0.0),
            seconds: m.total_seconds,
        });
        runs.push((config.label(), m));
    }
    for &target in epsilons {
        let mut config = TrainConfig {
            privacy: Privacy::Dp,
            dp: Some(DpSgd {
                noise_multiplier: args.noise_multiplier,
                max_grad_norm: args.max_grad_norm,
                delta: args.delta,
                sampling: Sampling::Poisson,
            }),
            ..base.clone()
        };
        let sigma = hefl::fl::calibrate_noise(&mut config, data.train.len(), target)?;
        let mut progress = Progress::new();
        progress.prefix = format!("dp eps {target}");
        let m = hefl::fl::run(&config, &data, None, &mut progress)?;
        let name = format!("federated-dp eps={target}");
        rows.push(hefl::report::SweepRow {
            name: name.clone(),
            epsilon: m.epochs.last().and_then(|e| e.epsilon),
            noise_multiplier: Some(sigma),
            accuracy: m.final_accuracy().unwrap_or(0.0),
            seconds: m.total_seconds,
        });
        runs.push((name, m));
    }
    let (md, csv) = hefl::report::sweep_tables(&rows);
    create_dir(out_dir)?;
    let named: Vec<(&str, &RunMetrics)> = runs.iter().map(|(n, m)| (n.as_str(), m)).collect();
    let plot = out_dir.join("dp-sweep.png");
    hefl::report::plot_accuracy(
        &plot,
        &format!(
            "Federated MNIST, {} parties: DP-SGD vs plain vs HE",
            args.parties
        ),
        &named,
    )?;
    let md_path = out_dir.join("dp-sweep.md");
    write_file(
        &md_path,
        format!(
            "# Accuracy against epsilon (delta = {}, C = {}, {} epochs)\n\n{md}\n{}",
            args.delta,
            args.max_grad_norm,
            args.epochs,
            hefl::report::accuracy_table(&named)
        ),
    )?;
    let csv_path = out_dir.join("dp-sweep.csv");
    write_file(&csv_path, csv)?;
    println!("\n{md}");
    println!(
        "wrote {}, {} and {}",
        md_path.display(),
        csv_path.display(),
        plot.display()
    );
    Ok(())
}

fn keygen(out: &Path, force: bool) -> Result<()> {
    let key = KeyFile::generate()?;
    key.write_new(out, force)?;
    // Loading back checks what a client will check: mode, format, key id.
    let written = KeyFile::load(out)?;
    println!("{} {}", written.key_id(), out.display());
    Ok(())
}
