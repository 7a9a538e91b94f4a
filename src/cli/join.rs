//! `hefl join`: one party of a federation whose server runs elsewhere.

use super::output::write_json;
use super::progress::Progress;
use anyhow::{Context, Result, bail};
use hefl::fl::{PartyId, Privacy};
use hefl::he::keys::KeyFile;
use hefl::transport::Tokens;
use hefl::transport::http::HttpUplink;
use std::path::PathBuf;
use std::sync::Arc;

/// What `hefl join` was given.
pub struct JoinArgs {
    pub server: String,
    pub party: u32,
    pub token: Option<String>,
    pub tokens: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub metrics_out: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
}

/// Fetches the plan, trains this party's shard through the server, writes its metrics.
pub fn run(args: JoinArgs) -> Result<()> {
    let party = args.party;
    let token = match (args.token, &args.tokens) {
        (Some(t), _) => t,
        (None, Some(path)) => Tokens::read_party(path, party)?,
        (None, None) => bail!("give this party's token: --token, HEFL_TOKEN or --tokens FILE"),
    };
    let mut uplink = match &args.ca_cert {
        None => HttpUplink::new(&args.server, party, &token),
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            HttpUplink::with_ca(&args.server, party, &token, &pem)?
        }
    };
    let plan = uplink.plan()?;
    let key = match (plan.config.privacy, &args.key) {
        (Privacy::He, Some(path)) => Some(Arc::new(KeyFile::load(path)?.secret_key()?)),
        (Privacy::He, None) => bail!("the server runs privacy he: pass the shared key with --key"),
        (Privacy::Plain | Privacy::Dp, _) => None,
    };
    let data = hefl::data::load_or_download(args.data_dir.as_deref()).context("loading MNIST")?;
    let mut progress = Progress::named(&format!("party {party}"));
    let metrics = hefl::fl::run_party(
        &plan,
        PartyId(party),
        &data,
        key,
        &mut uplink,
        &mut progress,
    )?;
    if let Some(path) = &args.metrics_out {
        write_json(path, &metrics)?;
    }
    println!(
        "party {party}: final test accuracy {:.2}% after {} rounds",
        100.0 * metrics.final_accuracy().unwrap_or(0.0),
        plan.total_rounds()
    );
    Ok(())
}
