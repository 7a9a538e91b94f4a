//! `hefl roster`: the coordinator assembles the roster of a secure-aggregation federation.

use anyhow::{Context, Result, bail};
use clap::Args;
use hefl::fl::PartyId;
use hefl::he::keys::{KeyFile, KeyId};
use hefl::secagg::{MAX_ROSTER_BYTES, Mode, PartyPublicKey, Policy, Roster};
use hefl::secret_file::{Access, read_limited, write_atomic};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A public line file is one line.
const MAX_PUBLIC_LINE_FILE: u64 = 4096;

/// `hefl roster` flags.
#[derive(Args)]
pub struct RosterArgs {
    /// The HE key's id (printed by `hefl keygen`)...
    #[arg(
        long,
        value_name = "HEX",
        required_unless_present = "key",
        conflicts_with = "key"
    )]
    pub key_id: Option<KeyId>,
    /// ... or the key file itself, whose id is read.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// One party: its id and the file holding its public line (what `hefl identity`
    /// printed), as ID=FILE. Give every party, ids 0 to P - 1.
    #[arg(long = "party", value_name = "ID=FILE", required = true)]
    pub parties: Vec<String>,
    /// The mode: `strict` (every member of a round's party set in its sum; a round with a
    /// member missing at its deadline is void, and the next set leaves it out until it
    /// rejoins).
    #[arg(long, default_value = "strict", value_name = "MODE")]
    pub secure_agg: Mode,
    /// The fewest parties a published sum, and a round's party set, may hold (default: all:
    /// a missing party stalls the run until it is back).
    #[arg(long, value_name = "N")]
    pub min_parties: Option<u32>,
    /// Where to write the roster (public; parent folders are created).
    #[arg(long, default_value = "keys/roster.json", value_name = "FILE")]
    pub out: PathBuf,
    /// Replace an existing roster.
    #[arg(long)]
    pub force: bool,
}

/// Reads and validates a roster file.
pub fn load(path: &Path) -> Result<Roster> {
    let bytes = read_limited(path, MAX_ROSTER_BYTES)
        .with_context(|| format!("reading the roster {}", path.display()))?;
    Roster::parse(&bytes).with_context(|| format!("the roster {}", path.display()))
}

/// Assembles the roster, writes it and prints its fingerprint.
pub fn run(args: &RosterArgs) -> Result<()> {
    let key_id = match (&args.key_id, &args.key) {
        (Some(id), _) => *id,
        (None, Some(path)) => KeyFile::load(path)?.key_id(),
        (None, None) => bail!("give the HE key's id (--key-id) or its file (--key)"),
    };
    let mut keys = BTreeMap::new();
    for entry in &args.parties {
        let (id, file) = entry
            .split_once('=')
            .with_context(|| format!("--party {entry:?}: expected ID=FILE"))?;
        let id: u32 = id
            .parse()
            .with_context(|| format!("--party {entry:?}: the id is not a number"))?;
        let line = read_limited(Path::new(file), MAX_PUBLIC_LINE_FILE)
            .with_context(|| format!("reading party {id}'s public line from {file}"))?;
        let key: PartyPublicKey = String::from_utf8_lossy(&line)
            .parse()
            .with_context(|| format!("party {id}'s public line in {file}"))?;
        if keys.insert(PartyId(id), key).is_some() {
            bail!("--party {id} is given twice");
        }
    }
    let parties = keys.len() as u32;
    if let Some(missing) = (0..parties).find(|&i| !keys.contains_key(&PartyId(i))) {
        bail!("{parties} parties given, but not party {missing}: give ids 0 to {parties} - 1");
    }
    let policy = Policy {
        mode: args.secure_agg,
        parties,
        min_parties: args.min_parties.unwrap_or(parties),
    };
    let roster = Roster::new(key_id, keys.into_values().collect(), policy)?;
    write_atomic(&args.out, &roster.to_json(), args.force, Access::Default)?;
    // Read back as a party will.
    let fingerprint = load(&args.out)?.fingerprint();
    println!("roster fingerprint: {fingerprint} (compare it with every party out of band)");
    Ok(())
}
