//! `hefl identity`: a party's key pair for secure aggregation.

use anyhow::Result;
use hefl::secagg::Identity;
use std::path::Path;

/// Writes a fresh identity file at `out` and prints its public line (for the coordinator's
/// roster).
pub fn run(out: &Path, force: bool) -> Result<()> {
    Identity::generate()?.write_new(out, force)?;
    // Loading back checks what a party will check: mode, format, public key.
    println!("{}", Identity::load(out)?.public().to_line());
    Ok(())
}
