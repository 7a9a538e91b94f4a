//! Writing the commands' output files, with the path in every error.

use anyhow::{Context, Result};
use hefl::fl::RunMetrics;
use std::path::Path;

/// Creates `dir` and its parents.
pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Writes `contents` to `path`.
pub fn write_file(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// Writes `value` as pretty JSON to `path`, creating its folder.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_dir(dir)?;
    }
    write_file(path, serde_json::to_string_pretty(value)? + "\n")
}

/// Writes a run's final model to `path` as a safetensors file and says so on stderr.
pub fn write_model(path: &Path, run: &RunMetrics) -> Result<()> {
    let model = run.final_model().context("the run holds no final model")?;
    hefl::model::write_model(path, &model)?;
    eprintln!("model written to {}", path.display());
    Ok(())
}
