//! `hefl identity`: a party's key pair for secure aggregation.

use anyhow::Result;
use hefl::secagg::Identity;
use std::path::Path;

/// Writes a fresh identity file at `out` and prints its public lines (for the coordinator's
/// roster): `hefl-x25519-v1 <hex>`, then `hefl-ed25519-v1 <hex>`.
pub fn run(out: &Path, force: bool) -> Result<()> {
    Identity::generate()?.write_new(out, force)?;
    // Loading back checks what a party will check: mode, format, public key.
    println!("{}", Identity::load(out)?.public_lines());
    Ok(())
}
