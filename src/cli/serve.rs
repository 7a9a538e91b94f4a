//! `hefl serve`: one federation's server over HTTP.

use super::args::{TrainArgs, check_wired, parse_byte_rate, parse_duration};
use anyhow::{Context, Result, bail};
use clap::Args;
use hefl::fl::{Hub, HubEvent, Mode, Plan, RoundRules, RunId, ValidPlan};
use hefl::he::keys::KeyId;
use hefl::transport::http::{self, TlsFiles};
use hefl::transport::{Limits, Tokens};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `hefl serve` flags.
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR")]
    pub bind: String,
    /// Keep the server's checkpoint here (written after every round), and
    /// continue from the one found here if it is of the same plan: a server
    /// killed and restarted with it loses nothing (the parties retry meanwhile).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// With --privacy he: the public id of the shared key (printed by
    /// `hefl keygen`). The server never needs the key itself.
    #[arg(long, value_name = "HEX")]
    pub key_id: Option<KeyId>,
    /// Per-party tokens: read from this JSON file, or created there (mode
    /// 0600) if missing. Give party i the i-th token.
    #[arg(long, default_value = "keys/tokens.json", value_name = "FILE")]
    pub tokens: PathBuf,
    /// Training images the parties hold in total, to size an epoch.
    #[arg(long, default_value_t = 60_000, value_name = "N")]
    pub train_size: usize,
    /// Rounds per epoch (default: one pass over the largest IID shard;
    /// required with dirichlet partitions).
    #[arg(long, value_name = "N")]
    pub rounds_per_epoch: Option<usize>,
    /// Serve the run described by this plan file (JSON, as `GET /v1/plan`
    /// returns it, round rules included) instead of the training flags, the
    /// round rules' flags, --key-id, --train-size and --rounds-per-epoch.
    #[arg(long, value_name = "FILE.json", conflicts_with_all = ["key_id", "rounds_per_epoch", "train_size", "RulesArgs", "TrainArgs"])]
    pub plan: Option<PathBuf>,
    /// Secure aggregation (with --secure-agg strict, or a plan that has it): the
    /// federation's roster (`hefl roster`). The server only relays; it checks that the
    /// plan is the roster's (key id, parties, policy), which the parties check again.
    #[arg(long, value_name = "FILE")]
    pub roster: Option<PathBuf>,
    /// Serve over TLS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub rules: RulesArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub train: TrainArgs,
}

/// How rounds run: they go into the plan, where the parties can check them.
#[derive(Args)]
#[command(next_help_heading = "Round rules (in the plan)")]
pub struct RulesArgs {
    /// Time each round waits for updates, e.g. 30s, 500ms, 2m.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub round_timeout: Duration,
    /// A round closes at its deadline if at least this many parties sent an
    /// update (default: all parties); parties refuse a sum of fewer. With
    /// `--secure-agg strict`: a round missing a member of its party set is void at
    /// its deadline if this many members submitted (the next set is them), else it
    /// waits; at least the roster's `min_parties`.
    #[arg(long, value_name = "N")]
    pub min_parties: Option<u32>,
    /// A party that missed this many rounds in a row is gone: rounds stop
    /// waiting for it until it submits on time again.
    #[arg(long, default_value_t = hefl::fl::DEFAULT_ABSENT_AFTER, value_name = "K")]
    pub absent_after: u32,
    /// Round 0's clock starts when every party is ready (has loaded its data), or
    /// after this long if --min-parties are.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub join_timeout: Duration,
    /// Give up when no party has been heard from (joined, sent an update, or
    /// fetched the last sum) for this long: exit 1, naming the parties missing.
    /// Longer than --round-timeout.
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Duration,
    /// Every this many rounds one party uploads its model, encrypted like an
    /// update: a party further behind than the sums the server keeps (64)
    /// resyncs from it. At most 64.
    #[arg(long, default_value_t = hefl::fl::DEFAULT_SNAPSHOT_EVERY, value_name = "ROUNDS")]
    pub snapshot_every: u64,
}

impl RulesArgs {
    /// The round rules these flags describe (validated with the plan).
    fn rules(&self) -> RoundRules {
        RoundRules {
            round_timeout: self.round_timeout,
            min_parties: self.min_parties,
            absent_after: self.absent_after,
            join_timeout: self.join_timeout,
            idle_timeout: self.idle_timeout,
            snapshot_every: self.snapshot_every,
            ..RoundRules::default()
        }
    }
}

/// What any peer, authenticated or not, may hold of the server.
#[derive(Args)]
#[command(next_help_heading = "Connection limits")]
pub struct LimitArgs {
    /// Time a connection has to send a request's headers (from when it opens, or from its
    /// previous answer: idle connections close after it too); also the TLS handshake's.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub header_timeout: Duration,
    /// Time a new connection has to carry a request with a valid token (in its first
    /// request's headers); closed after it otherwise, so strangers cannot hold connections.
    #[arg(long, default_value = "3s", value_parser = parse_duration, value_name = "DURATION")]
    pub auth_timeout: Duration,
    /// Longest pause within an upload's body.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub body_timeout: Duration,
    /// Slowest upload accepted (bytes per second; KiB and MiB suffixes): an update must
    /// arrive within --body-timeout plus its largest size at this rate.
    #[arg(long, default_value = "16KiB", value_parser = parse_byte_rate, value_name = "BYTES")]
    pub min_upload_rate: u64,
    /// Connections open at once, in total (raise it, and the open-file limit, for
    /// federations of more than a few hundred parties).
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_connections_per_peer: usize,
}

impl LimitArgs {
    /// The validated limits.
    fn limits(&self) -> Result<Limits> {
        let limits = Limits {
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            auth_timeout: self.auth_timeout,
            min_upload_rate: self.min_upload_rate,
            max_connections: self.max_connections,
            max_connections_per_peer: self.max_connections_per_peer,
        };
        limits.validate()?;
        Ok(limits)
    }
}

/// Largest plan file read.
const MAX_PLAN_FILE: u64 = 1 << 20;

/// The run the server will hand out, validated: from the plan file or from the flags (the
/// same gate: `Plan::validate`, which validates the configuration as the flags' path does).
fn plan(args: &ServeArgs) -> Result<ValidPlan> {
    if args.train.key.is_some() {
        bail!("the server never holds the key: give --key-id (printed by `hefl keygen`)");
    }
    let plan = match &args.plan {
        Some(path) => {
            // A regular file of bounded size (a plan is a few hundred bytes): not a device
            // or a pipe that never ends.
            let bytes = hefl::secret_file::read_limited(path, MAX_PLAN_FILE)
                .with_context(|| format!("reading the plan {}", path.display()))?;
            let plan: Plan = serde_json::from_slice(&bytes)
                .with_context(|| format!("the plan {} does not parse", path.display()))?;
            plan.validate()?
        }
        None => hefl::fl::plan_for(
            &*args
                .train
                .calibrated(args.train.validated(Mode::Federated)?, args.train_size)?,
            args.train_size,
            args.rounds_per_epoch,
            args.key_id,
            args.rules.rules(),
        )?,
    };
    if let Some(mode) = plan.config.secure_agg {
        check_wired(mode)?;
    }
    if plan.config.pca().is_some() {
        bail!(
            "--dp-pca needs every party's noisy covariance before the first round, which a \
             server does not collect: run DP-PCA in one process (train, dp-sweep, dp-compare)"
        );
    }
    Ok(plan)
}

/// With secure aggregation, the roster must be given and fit the plan: its key, its party
/// count, and its policy (the parties refuse a plan that weakens it; `--min-parties` is the
/// smallest party set a round may have: strict rounds with a member missing are void).
fn check_roster(plan: &ValidPlan, roster: Option<&std::path::Path>) -> Result<()> {
    let (mode, path) = match (plan.config.secure_agg, roster) {
        (None, None) => return Ok(()),
        (None, Some(_)) => bail!("--roster is for secure aggregation: give --secure-agg strict"),
        (Some(mode), None) => {
            bail!("secure aggregation ({mode}) needs the federation's roster: give --roster")
        }
        (Some(mode), Some(path)) => (mode, path),
    };
    let roster = super::roster::load(path)?;
    let parties = plan.config.parties as u32;
    let key_id = plan
        .key_id
        .context("secure aggregation needs --privacy he and --key-id")?;
    let policy = hefl::secagg::plan_policy(mode, parties, plan.rules.min_parties);
    roster.check_key(key_id)?;
    roster.check_policy(&policy)?;
    eprintln!(
        "serve: secure aggregation ({mode}) for the roster {}",
        roster.fingerprint()
    );
    Ok(())
}

/// Validates everything (plan, limits, tokens, TLS files), then listens and serves the run
/// until it is over.
pub fn run(args: ServeArgs) -> Result<()> {
    // A task per connection, up to thousands: no huge pages (see the function).
    hefl::alloc::avoid_huge_pages();
    let plan = plan(&args)?;
    check_roster(&plan, args.roster.as_deref())?;
    let limits = args.limits.limits()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }
            .load()?,
        ),
        _ => None,
    };
    let log = |event: &HubEvent| eprintln!("serve: {event}");
    let hub = match &args.state_dir {
        None => {
            let run_id = match plan.run_id {
                Some(id) => id,
                None => RunId::generate().context("drawing a run id")?,
            };
            Hub::new(plan.with_run_id(Some(run_id)), log)?
        }
        Some(dir) => {
            // A state directory that cannot be written is found now, not at round 1.
            hefl::secret_file::probe_writable(dir)
                .with_context(|| format!("--state-dir {} is not writable", dir.display()))?;
            let (hub, resumed) = Hub::with_state_dir(plan, dir, log)?;
            if resumed.is_some() && hub.is_finished() {
                // Every party fetched the last sum: nothing is left to serve.
                println!(
                    "the run in {} is over: all {} rounds were published and fetched; nothing to serve (use another --state-dir for a new run)",
                    dir.display(),
                    hub.plan().total_rounds()
                );
                return Ok(());
            }
            if let Some(round) = resumed {
                eprintln!(
                    "serve: resuming from the checkpoint in {} at {round}",
                    dir.display()
                );
            }
            hub
        }
    };
    let hub = Arc::new(hub);
    let plan = hub.plan();
    let issued = Tokens::load_or_create(&args.tokens, plan.config.parties)?;
    // The operator's token (GET /v1/status), beside the parties'; never a party's.
    let operator_path = Tokens::operator_path(&args.tokens);
    let operator = Tokens::load_or_create_operator(&operator_path)?;
    let listener = std::net::TcpListener::bind(&args.bind)
        .with_context(|| format!("binding {}", args.bind))?;
    let addr = listener.local_addr()?;
    let scheme = if args.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    println!(
        "listening on {scheme}://{addr} ({} parties, privacy {}, {} rounds; tokens in {}, the operator's in {})",
        plan.config.parties,
        plan.config.privacy,
        plan.total_rounds(),
        args.tokens.display(),
        operator_path.display()
    );
    // The demo and scripts read this line: make sure it is out.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let started = Instant::now();
    let report = http::serve(
        listener,
        Arc::clone(&hub),
        Tokens::from_issued(&issued).with_operator(&operator),
        tls,
        &limits,
        |line: &str| eprintln!("serve: {line}"),
    )?;
    if let Some(reason) = &report.store_failed {
        bail!(
            "stopped after {} rounds: the server's checkpoint could not be written ({reason}); the last good checkpoint is intact: free the disk and restart with the same --state-dir (the parties retry meanwhile)",
            report.rounds
        );
    }
    if !report.missing.is_empty() {
        let missing: Vec<String> = report.missing.iter().map(|m| m.to_string()).collect();
        bail!(
            "gave up after {} of {} rounds: no party heard from for {:?}; missing: {}",
            report.rounds,
            plan.total_rounds(),
            plan.rules.idle_timeout,
            missing.join(", ")
        );
    }
    let void = if plan.config.secure_agg.is_some() {
        format!(", {} void", report.void_rounds)
    } else {
        String::new()
    };
    println!(
        "done: {} rounds in {:.1} s, {} without every party{void}",
        report.rounds,
        started.elapsed().as_secs_f64(),
        report.short_rounds
    );
    Ok(())
}
