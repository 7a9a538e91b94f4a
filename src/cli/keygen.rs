//! `hefl keygen`: the key all clients share.

use anyhow::Result;
use hefl::he::keys::KeyFile;
use std::path::Path;

/// Writes a fresh key file at `out` and prints its key id.
pub fn run(out: &Path, force: bool) -> Result<()> {
    let key = KeyFile::generate()?;
    key.write_new(out, force)?;
    // Loading back checks what a client will check: mode, format, key id.
    let written = KeyFile::load(out)?;
    println!("{} {}", written.key_id(), out.display());
    Ok(())
}
