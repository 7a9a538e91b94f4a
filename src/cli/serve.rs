//! `hefl serve`: one federation's server over HTTP.

use super::args::TrainArgs;
use anyhow::{Context, Result, bail};
use hefl::fl::{Hub, HubEvent, Mode, Plan, ValidPlan};
use hefl::he::keys::KeyId;
use hefl::transport::Tokens;
use hefl::transport::http::{self, TlsFiles};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `hefl serve` was given.
pub struct ServeArgs {
    pub bind: String,
    pub min_parties: Option<u32>,
    pub round_timeout: Duration,
    pub key_id: Option<KeyId>,
    pub tokens: PathBuf,
    pub train_size: usize,
    pub rounds_per_epoch: Option<usize>,
    pub plan: Option<PathBuf>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub train: TrainArgs,
}

/// The run the server will hand out, validated: from the plan file or from the flags.
fn plan(args: &ServeArgs) -> Result<ValidPlan> {
    if args.train.key.is_some() {
        bail!("the server never holds the key: give --key-id (printed by `hefl keygen`)");
    }
    match &args.plan {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the plan {}", path.display()))?;
            let plan: Plan = serde_json::from_str(&text)
                .with_context(|| format!("the plan {} does not parse", path.display()))?;
            Ok(plan.validate()?)
        }
        None => Ok(hefl::fl::plan_for(
            &args.train.config(Mode::Federated),
            args.train_size,
            args.rounds_per_epoch,
            args.key_id,
            args.round_timeout,
        )?),
    }
}

/// Validates everything, then listens and serves the run until it is over.
pub fn run(args: ServeArgs) -> Result<()> {
    let plan = plan(&args)?;
    let hub = Arc::new(Hub::new(plan, args.min_parties, |event: &HubEvent| {
        eprintln!("serve: {event}")
    })?);
    let plan = hub.plan();
    let issued = Tokens::load_or_create(&args.tokens, plan.config.parties)?;
    let listener = std::net::TcpListener::bind(&args.bind)
        .with_context(|| format!("binding {}", args.bind))?;
    let addr = listener.local_addr()?;
    let scheme = if args.tls.is_some() { "https" } else { "http" };
    println!(
        "listening on {scheme}://{addr} ({} parties, privacy {}, {} rounds; tokens in {})",
        plan.config.parties,
        plan.config.privacy,
        plan.total_rounds(),
        args.tokens.display()
    );
    // The demo and scripts read this line: make sure it is out.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let started = Instant::now();
    let tls = args.tls.map(|(cert, key)| TlsFiles { cert, key });
    let report = http::serve(
        listener,
        Arc::clone(&hub),
        Tokens::from_issued(&issued),
        tls,
    )?;
    println!(
        "done: {} rounds in {:.1} s, {} without every party",
        report.rounds,
        started.elapsed().as_secs_f64(),
        report.short_rounds
    );
    Ok(())
}
