//! `hefl join`: one party of a federation whose server runs elsewhere.

use super::args::{check_wired, load_mnist, parse_duration};
use super::output::{write_json, write_model};
use super::progress::Progress;
use anyhow::{Context, Result, bail};
use clap::Args;
use hefl::fl::{PartyId, PartyOptions, Privacy, Retry};
use hefl::he::keys::KeyFile;
use hefl::secagg::{Credentials, Identity};
use hefl::transport::Tokens;
use hefl::transport::http::HttpUplink;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `hefl join` flags.
#[derive(Args)]
pub struct JoinArgs {
    /// The server's URL, e.g. http://127.0.0.1:7878.
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// This party's id, 0 to parties - 1.
    #[arg(long, value_name = "ID")]
    pub party: u32,
    /// This party's token (or set HEFL_TOKEN, or give --tokens).
    #[arg(long, env = "HEFL_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Read this party's token from the server's tokens file.
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub tokens: Option<PathBuf>,
    /// The shared key file (needed when the server runs privacy he).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Folder with the MNIST IDX files (default: $MNIST_DIR, else the user cache).
    /// This party trains on its shard of the plan's partition.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Write this party's configuration and per-epoch metrics to this JSON file.
    #[arg(long, value_name = "FILE.json")]
    pub metrics_out: Option<PathBuf>,
    /// Write this party's final model to this safetensors file (format in
    /// docs/formats.md; `hefl evaluate --model FILE` reports its test accuracy).
    #[arg(long, value_name = "FILE.safetensors")]
    pub model_out: Option<PathBuf>,
    /// For an https:// server: trust only this PEM CA certificate (e.g. the
    /// server's self-signed certificate) instead of the usual web roots.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Keep checkpoints here (every epoch and every --checkpoint-every rounds),
    /// and continue from the one found here, if it is of this federation.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Rounds between checkpoints (with --state-dir). At most 32: the server
    /// keeps a sum for a party's restart only as far back as 64 rounds.
    #[arg(long, default_value_t = 16, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=32))]
    pub checkpoint_every: u64,
    /// Secure aggregation: this party's identity file (`hefl identity`). Needed
    /// when the server runs --secure-agg; give --roster and --roster-fingerprint with it.
    #[arg(long, value_name = "FILE", requires_all = ["roster", "roster_fingerprint"])]
    pub identity: Option<PathBuf>,
    /// Secure aggregation: the roster the coordinator sent (`hefl roster`).
    #[arg(long, value_name = "FILE", requires = "identity")]
    pub roster: Option<PathBuf>,
    /// Secure aggregation: the roster's fingerprint as compared out of band (64 hex
    /// digits, printed by `hefl roster`); a roster with another is refused.
    #[arg(long, value_name = "HEX", requires = "identity")]
    pub roster_fingerprint: Option<String>,
    /// How long to keep retrying a server that cannot be reached (backoff from
    /// 0.5 s doubling to 15 s), e.g. while it restarts.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub retry_for: Duration,
}

/// The directory an output file goes in.
fn output_dir(file: &std::path::Path) -> PathBuf {
    match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The identity and roster of --identity, --roster and --roster-fingerprint, checked.
fn credentials(args: &JoinArgs) -> Result<Option<Credentials>> {
    let (Some(identity), Some(roster), Some(fingerprint)) =
        (&args.identity, &args.roster, &args.roster_fingerprint)
    else {
        return Ok(None);
    };
    let identity = Identity::load(identity)?;
    let roster = super::roster::load(roster)?;
    check_wired(roster.policy().mode)?;
    Ok(Some(Credentials::new(
        identity,
        roster,
        fingerprint.parse()?,
    )?))
}

/// Fetches the plan, trains this party's shard through the server, writes its metrics.
pub fn run(args: JoinArgs) -> Result<()> {
    let party = args.party;
    let token = match (args.token.clone(), &args.tokens) {
        (Some(t), _) => t,
        (None, Some(path)) => Tokens::read_party(path, party)?,
        (None, None) => bail!("give this party's token: --token, HEFL_TOKEN or --tokens FILE"),
    };
    let mut uplink = match &args.ca_cert {
        None => HttpUplink::new(&args.server, party, &token),
        Some(path) => HttpUplink::with_ca(&args.server, party, &token, path)?,
    };
    let options = PartyOptions {
        retry: Retry {
            give_up_after: args.retry_for,
            ..Retry::default()
        },
        state_dir: args.state_dir.clone(),
        checkpoint_every: args.checkpoint_every,
        secure_agg: credentials(&args)?,
    };
    let mut progress = Progress::named(&format!("party {party}"));
    let plan = options
        .retry
        .call("fetching the plan", &mut progress, || uplink.plan())?;
    if let Some(mode) = plan.config.secure_agg {
        check_wired(mode)?;
    }
    let key = match (plan.config.privacy, &args.key) {
        (Privacy::He, Some(path)) => Some(Arc::new(KeyFile::load(path)?.secret_key()?)),
        (Privacy::He, None) => bail!("the server runs privacy he: pass the shared key with --key"),
        (Privacy::Plain | Privacy::Dp, _) => None,
    };
    // Every path this party writes is proved writable before its first round, not after it.
    let dirs = [
        args.state_dir.clone(),
        args.metrics_out.as_deref().map(output_dir),
        args.model_out.as_deref().map(output_dir),
    ];
    for dir in dirs.into_iter().flatten() {
        hefl::secret_file::probe_writable(&dir)
            .with_context(|| format!("{} is not writable", dir.display()))?;
    }
    let data = load_mnist(args.data_dir.as_deref())?;
    let metrics = hefl::fl::run_party(
        &plan,
        PartyId(party),
        &data,
        key,
        &mut uplink,
        &mut progress,
        &options,
    )?;
    if let Some(path) = &args.metrics_out {
        write_json(path, &metrics)?;
    }
    if let Some(path) = &args.model_out {
        write_model(path, &metrics)?;
    }
    println!(
        "party {party}: final test accuracy {:.2}% after {} rounds",
        100.0 * metrics.final_accuracy().unwrap_or(0.0),
        plan.total_rounds()
    );
    Ok(())
}
