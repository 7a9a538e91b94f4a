//! `hefl roster`: the coordinator assembles the roster of a secure-aggregation federation.

use anyhow::{Context, Result, bail};
use clap::Args;
use hefl::fl::PartyId;
use hefl::he::keys::{KeyFile, KeyId};
use hefl::secagg::{MAX_ROSTER_BYTES, Mode, ModeName, Policy, PublicLines, RobustPolicy, Roster};
use hefl::secret_file::{Access, read_limited, write_atomic};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A public file is two lines of about 80 bytes.
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
    /// One party: its id and the file holding its public lines (what `hefl identity`
    /// printed), as ID=FILE. Give every party, ids 0 to P - 1. The roster carries the
    /// parties' Ed25519 keys when every file has its `hefl-ed25519-v1` line.
    #[arg(long = "party", value_name = "ID=FILE", required = true)]
    pub parties: Vec<String>,
    /// The mode: `strict` (every member of a round's party set in its sum; a round with a
    /// member missing at its deadline is void, and the next set leaves it out until it
    /// rejoins) or `robust` (a round survives up to --max-dropouts missing parties, against
    /// up to --max-colluders colluding with the server; needs every party's Ed25519 key).
    #[arg(long, default_value = "strict", value_name = "strict|robust")]
    pub secure_agg: ModeName,
    /// The fewest parties a published sum, and a round's party set, may hold (default: all
    /// with strict: a missing party stalls the run until it is back; P - D with robust).
    #[arg(long, value_name = "N")]
    pub min_parties: Option<u32>,
    /// Robust: the most clients colluding with the server that a round's privacy withstands.
    /// The threshold is C + 1, so that they never hold enough shares of a party's secrets.
    #[arg(long, value_name = "C", required_if_eq("secure_agg", "robust"))]
    pub max_colluders: Option<u32>,
    /// Robust: the most parties a round may lose after it started and still publish its sum
    /// (the others reveal the shares that unmask it).
    #[arg(long, value_name = "D", required_if_eq("secure_agg", "robust"))]
    pub max_dropouts: Option<u32>,
    /// Robust: each party's neighbours, who blind with it and hold shares of its secrets
    /// (default: C + D + 1 rounded up to even, at most P - 1; at most 255).
    #[arg(long, value_name = "K")]
    pub neighbours: Option<u32>,
    /// Robust: the shares that reconstruct a party's secret (default: C + 1; at least C + 1
    /// and at most K - D).
    #[arg(long, value_name = "T")]
    pub threshold: Option<u32>,
    /// Robust: before unmasking a round, every alive party signs the set of alive parties,
    /// and refuses to unmask without T of its neighbours' signatures on the same set (one
    /// more round trip; stops a server that shows parties different sets). Recorded in the
    /// policy, but not run yet: parties of this release refuse a roster that asks for it.
    #[arg(long)]
    pub consistency_check: bool,
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

/// Assembles the roster, writes it and prints its fingerprint (and, with robust, the chosen
/// parameters and why).
pub fn run(args: &RosterArgs) -> Result<()> {
    let key_id = match (&args.key_id, &args.key) {
        (Some(id), _) => *id,
        (None, Some(path)) => KeyFile::load(path)?.key_id(),
        (None, None) => bail!("give the HE key's id (--key-id) or its file (--key)"),
    };
    let mut lines = BTreeMap::new();
    for entry in &args.parties {
        let (id, file) = entry
            .split_once('=')
            .with_context(|| format!("--party {entry:?}: expected ID=FILE"))?;
        let id: u32 = id
            .parse()
            .with_context(|| format!("--party {entry:?}: the id is not a number"))?;
        let text = read_limited(Path::new(file), MAX_PUBLIC_LINE_FILE)
            .with_context(|| format!("reading party {id}'s public lines from {file}"))?;
        let keys = PublicLines::parse(&String::from_utf8_lossy(&text))
            .with_context(|| format!("party {id}'s public lines in {file}"))?;
        if lines.insert(PartyId(id), keys).is_some() {
            bail!("--party {id} is given twice");
        }
    }
    let parties = lines.len() as u32;
    if let Some(missing) = (0..parties).find(|&i| !lines.contains_key(&PartyId(i))) {
        bail!("{parties} parties given, but not party {missing}: give ids 0 to {parties} - 1");
    }
    let policy = policy(args, parties)?;
    let roster = Roster::from_public_lines(key_id, lines.into_values().collect(), policy)?;
    write_atomic(&args.out, &roster.to_json(), args.force, Access::Default)?;
    // Read back as a party will.
    let fingerprint = load(&args.out)?.fingerprint();
    if let Mode::Robust(robust) = policy.mode {
        println!("{}", explain(&robust, args, policy));
    }
    println!("roster fingerprint: {fingerprint} (compare it with every party out of band)");
    Ok(())
}

/// The policy of the flags for `parties` parties: robust's from rule (a), with the flags'
/// overrides; refused when it cannot hold (with robust's flags given for strict).
fn policy(args: &RosterArgs, parties: u32) -> Result<Policy> {
    let (mode, default_min) = match (args.secure_agg, args.max_colluders, args.max_dropouts) {
        (ModeName::Robust, Some(colluders), Some(dropouts)) => {
            let (robust, min_parties) = RobustPolicy::rule_a(
                parties,
                colluders,
                dropouts,
                args.neighbours,
                args.threshold,
                args.consistency_check,
            )?;
            (Mode::Robust(robust), min_parties)
        }
        (ModeName::Robust, _, _) => {
            bail!("--secure-agg robust needs --max-colluders and --max-dropouts")
        }
        (ModeName::Strict, None, None)
            if args.neighbours.is_none() && args.threshold.is_none() && !args.consistency_check =>
        {
            (Mode::Strict, parties)
        }
        (ModeName::Strict, _, _) => bail!(
            "--max-colluders, --max-dropouts, --neighbours, --threshold and --consistency-check \
             are for --secure-agg robust"
        ),
    };
    Ok(Policy {
        mode,
        parties,
        min_parties: args.min_parties.unwrap_or(default_min),
    })
}

/// Robust's parameters, one line each with why (rule (a), or the flag that set it).
fn explain(robust: &RobustPolicy, args: &RosterArgs, policy: Policy) -> String {
    let RobustPolicy {
        colluders: c,
        dropouts: d,
        neighbours: k,
        threshold: t,
        consistency_check,
    } = *robust;
    let parties = policy.parties;
    let threshold = match args.threshold {
        None => format!("c + 1: {c} colluders never hold enough shares"),
        Some(_) => format!("--threshold; rule (a) gives c + 1 = {}", u64::from(c) + 1),
    };
    let neighbours = match args.neighbours {
        None if k == parties.saturating_sub(1) => {
            "c + d + 1 rounded up to even, at most P - 1".to_owned()
        }
        None => "c + d + 1 rounded up to even".to_owned(),
        Some(_) => format!(
            "--neighbours; rule (a) gives {}",
            RobustPolicy::rule_a_neighbours(parties, c, d)
        ),
    };
    let min = match args.min_parties {
        None => "P - d".to_owned(),
        Some(_) => format!(
            "--min-parties; rule (a) gives P - d = {}",
            parties.saturating_sub(d)
        ),
    };
    let check = if consistency_check { "on" } else { "off" };
    let alive = k.saturating_sub(d);
    [
        format!(
            "robust secure aggregation, {parties} parties, up to {c} colluders and {d} dropouts \
             per round:"
        ),
        format!("  threshold T = {t} ({threshold})"),
        format!(
            "  neighbours k = {k} ({neighbours}; {alive} share holders stay alive after {d} \
             dropouts)"
        ),
        format!("  min parties {} ({min})", policy.min_parties),
        format!("  consistency check {check}"),
    ]
    .join("\n")
}
