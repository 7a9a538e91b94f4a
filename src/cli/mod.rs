//! The commands: arguments ([`args`]), one file per command, progress and output helpers.

mod args;
mod bench;
mod demo;
mod dp;
mod evaluate;
mod identity;
mod join;
mod keygen;
mod output;
mod progress;
mod roster;
mod serve;
mod train;
mod tree;

use args::{DpEpsilonArgs, TrainArgs};
use clap::{Parser, Subcommand};
use hefl::fl::Mode;
use std::path::PathBuf;

pub use args::explain;

/// Federated learning of an MNIST classifier in which clients' gradients are
/// aggregated under homomorphic encryption.
///
/// Data: MNIST is read from --data-dir, else $MNIST_DIR, else a per-user cache
/// directory (downloaded there, checksum-verified, when missing).
#[derive(Parser)]
#[command(name = "hefl", version, about, long_about)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// One `hefl` command and its arguments.
#[derive(Subcommand)]
pub enum Command {
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
        /// Write the run's final model to this safetensors file (format in
        /// docs/formats.md; `hefl evaluate --model FILE` reports its test accuracy).
        #[arg(long, value_name = "FILE.safetensors")]
        model_out: Option<PathBuf>,
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
        /// Write each run's final model to DIR/RUN.safetensors, RUN being the run's name
        /// in the table: local, centralized, federated-plain, federated-he (format in
        /// docs/formats.md; `hefl evaluate --model FILE` reports its test accuracy).
        #[arg(long, value_name = "DIR")]
        model_out: Option<PathBuf>,
        /// Run federated-he as separate processes on loopback: one `hefl serve`
        /// (started from the run's plan file) and one `hefl join` per party (their
        /// files go to OUT_DIR/network).
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
    /// Create a party's identity for secure aggregation (--secure-agg): an X25519 key
    /// pair in a file of mode 0600, and the Ed25519 signing key derived from it.
    /// Prints the two public lines: save them to a file (`> party.pub`) and send it to
    /// the coordinator, who lists it in the roster (`hefl roster`). Keep the identity.
    Identity {
        /// Where to write the identity file (parent folders are created).
        #[arg(long, default_value = "keys/party.id", value_name = "FILE")]
        out: PathBuf,
        /// Replace an existing identity file.
        #[arg(long)]
        force: bool,
    },
    /// Assemble the roster of a secure-aggregation federation from the HE key id
    /// and every party's public lines, with the policy (robust: its parameters by
    /// rule (a), printed with why); prints its fingerprint, which every party
    /// compares out of band and gives to `hefl join`.
    Roster(roster::RosterArgs),
    /// Run a federation's server: it holds no key and no model, only sums what
    /// the parties send. Validates the whole run before it listens, then prints
    /// `listening on http://ADDR`, one line per epoch and per round closed without
    /// every party; exits after the last round.
    Serve(Box<serve::ServeArgs>),
    /// Accuracy against epsilon: federated DP-SGD calibrated to each target
    /// epsilon, beside the non-private (plain) and HE runs, same seed and epochs.
    /// Writes dp-sweep.md, dp-sweep.csv and dp-sweep.png.
    DpSweep {
        #[command(flatten)]
        train: TrainArgs,
        /// Target epsilons, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "0.5,1,2,4,8")]
        epsilons: Vec<f64>,
        /// Folder for the table, CSV and plot (with --tune: dp-tuned.json and dp-tuned.md).
        #[arg(long, default_value = "runs/dp-sweep", value_name = "DIR")]
        out_dir: PathBuf,
        /// Tune DP-SGD per target epsilon instead: search a small grid (expected batch,
        /// learning rate, epochs, DP-PCA, hidden width, activation, learning-rate schedule,
        /// EMA; see `hefl::fl::tuning_grid`) scored on a validation split of the training
        /// data, never the test set. Writes the best setting per epsilon to
        /// OUT_DIR/dp-tuned.json (OUT_DIR/dp-tuned-centralized.json with --mode
        /// centralized) for `hefl dp-compare`. The search itself spends privacy that the
        /// reported epsilon does not count.
        #[arg(long)]
        tune: bool,
        /// With --tune: tune the federated DP variant (--parties parties, each adding its
        /// own noise) or the centralized one (one trainer on all the training images).
        #[arg(
            long,
            default_value = "federated",
            value_name = "federated|centralized"
        )]
        mode: Mode,
        /// With --tune: training images held out to score the trials.
        #[arg(long, default_value_t = hefl::fl::DEFAULT_VALIDATION_SIZE, value_name = "N")]
        validation_size: usize,
    },
    /// The comparison users come for: federated plain and HE runs with the training
    /// flags, and DP-SGD with each tuned setting of a `dp-sweep --tune` file (its noise
    /// recalibrated to the target epsilon on the full training set), side by side:
    /// accuracy, wall time, time per round, client envelope cost, bytes per round, epsilon
    /// under both accountants. Writes compare.md, compare.csv and compare.png; re-run it
    /// without re-tuning.
    DpCompare {
        #[command(flatten)]
        train: TrainArgs,
        /// The settings `dp-sweep --tune` wrote, comma-separated: federated ones
        /// (dp-tuned.json) and centralized ones (dp-tuned-centralized.json) alike; with a
        /// centralized file the centralized non-private baseline runs too.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "runs/dp-sweep/dp-tuned.json",
            value_name = "FILE.json"
        )]
        dp_settings: Vec<PathBuf>,
        /// Folder for the table, CSV and plot.
        #[arg(long, default_value = "runs/compare", value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// Measure what privacy costs on this machine: one client's round in each mode
    /// (plaintext, DP-SGD, HE) as a multiple of the plaintext step, secure aggregation's
    /// costs (strict's blinds; robust's client CPU, extra bytes and server unmask at 10, 100
    /// and 1000 parties with 0, 1 and 10% dropouts, beside Flower's SecAgg+ measured under
    /// the Python named by HEFL_FLOWER_PYTHON, else python3, when it has flwr), server
    /// aggregation latency for 2 to 1000 parties with a fitted slope and peak memory, bytes
    /// per party per round, and encryption throughput against threads and vector length
    /// (10^4 to 10^7 values). Prints markdown tables; writes report.md, CSV files and PNG
    /// plots. Takes about 3 minutes on two cores, 2 of them robust's 1000-party rounds and
    /// Flower (--quick: about 20 s, without them). Build with --release: `cargo run
    /// --release -- bench-report`. The criterion benches (`cargo bench`) measure the same
    /// operations with full statistics.
    BenchReport {
        /// Fewer and shorter repetitions, robust secure aggregation up to 100 parties, Flower
        /// at 10: rough medians in about 20 seconds.
        #[arg(long)]
        quick: bool,
        /// Folder for report.md, the CSV files and the plots.
        #[arg(long, default_value = "runs/bench", value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// Time whole rounds over HTTP as parties grow: starts the real `hefl serve` on loopback
    /// and a load generator of P parties in this process (one thread each, every party with
    /// its own token and its own sealed upload, made before timing), runs rounds, and reports
    /// per P the round latency (first upload sent to every party holding the sum: median,
    /// p95, max), the server's CPU per round and peak memory (from /proc), the load
    /// generator's CPU, and bytes per party. Writes network.md and network.csv. Build with
    /// --release: `cargo run --release -- bench-network`.
    BenchNetwork {
        /// Party counts, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "3,10,30,100,300,1000",
            value_name = "P,..."
        )]
        parties: Vec<u32>,
        /// Modes, comma-separated: plain, he-seeds, he-switched.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "plain,he-seeds,he-switched",
            value_name = "MODE,..."
        )]
        modes: Vec<String>,
        /// Transports, comma-separated: http, https (a throwaway self-signed certificate
        /// made for the run, which every party verifies).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "http,https",
            value_name = "TRANSPORT,..."
        )]
        transports: Vec<String>,
        /// Rounds timed per federation, at least (after one that warms the connections;
        /// federations of P < 60 parties time 300 / P rounds, up to 100).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000), value_name = "R")]
        rounds: u64,
        /// About a minute: parties 3, 30 and 300, he-seeds only, over http and https, at
        /// least 3 rounds.
        #[arg(long)]
        quick: bool,
        /// Folder for network.md, network.csv and network.png.
        #[arg(long, default_value = "runs/bench", value_name = "DIR")]
        out_dir: PathBuf,
    },
    /// Print the epsilon of a DP-SGD run: the Poisson-subsampled Gaussian mechanism,
    /// add/remove adjacency, by privacy loss distribution (`--accountant pld`, the
    /// default, as Google's dp-accounting) or Rényi DP (`rdp`, Opacus's orders and
    /// conversion). The last line is the bare number, for scripts.
    DpEpsilon {
        #[command(flatten)]
        args: DpEpsilonArgs,
    },
    /// Join a federation as one party: fetch the server's plan, train on this
    /// party's shard, send sealed updates, apply the published sums.
    Join(join::JoinArgs),
    /// Report a saved model's test accuracy and loss, e.g.
    /// `test accuracy 97.83%, test loss 0.0712 (10,000 images)`: the numbers a run
    /// printed for its last epoch, when given the same test set.
    Evaluate(evaluate::EvaluateArgs),
    /// Print the command tree (subcommands, aliases, flags) as JSON, read through clap's
    /// introspection: the documentation test checks every `hefl ...` line against it.
    #[command(name = "__cli-tree", hide = true)]
    CliTree,
}

/// Runs one command.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Train {
            mode,
            train,
            metrics_out,
            model_out,
        } => train::run(mode, &train, metrics_out.as_deref(), model_out.as_deref()),
        Command::Demo {
            train,
            out_dir,
            metrics_out,
            model_out,
            network,
        } => demo::run(
            &train,
            &out_dir,
            metrics_out.as_deref(),
            model_out.as_deref(),
            network,
        ),
        Command::Keygen { out, force } => keygen::run(&out, force),
        Command::Identity { out, force } => identity::run(&out, force),
        Command::Roster(args) => roster::run(&args),
        Command::DpSweep {
            train,
            epsilons,
            out_dir,
            tune: false,
            ..
        } => dp::sweep(&train, &epsilons, &out_dir),
        Command::DpSweep {
            train,
            epsilons,
            out_dir,
            tune: true,
            validation_size,
            mode,
        } => dp::tune(&train, mode, &epsilons, validation_size, &out_dir),
        Command::DpCompare {
            train,
            dp_settings,
            out_dir,
        } => dp::compare(&train, &dp_settings, &out_dir),
        Command::BenchReport { quick, out_dir } => bench::run(quick, &out_dir),
        Command::BenchNetwork {
            parties,
            modes,
            transports,
            rounds,
            quick,
            out_dir,
        } => bench::network(&parties, &modes, &transports, rounds, quick, &out_dir),
        Command::DpEpsilon { args } => dp::epsilon(&args),
        Command::Serve(args) => serve::run(*args),
        Command::Join(args) => join::run(args),
        Command::Evaluate(args) => evaluate::run(&args),
        Command::CliTree => tree::run(),
    }
}
