//! `hefl train`: one run, one mode.

use super::args::TrainArgs;
use super::output::{write_json, write_model};
use super::progress::Progress;
use anyhow::Result;
use hefl::fl::{Mode, Privacy};
use std::path::Path;

/// Trains as the flags say and prints progress; writes the metrics and model files if asked.
pub fn run(
    mode: Mode,
    args: &TrainArgs,
    metrics_out: Option<&Path>,
    model_out: Option<&Path>,
) -> Result<()> {
    let config = args.validated(mode)?;
    let data = args.load()?;
    let config = args.calibrated(config, data.train.len())?;
    let key = match (config.mode, config.privacy) {
        (Mode::Federated, Privacy::He) => Some(args.key()?),
        _ => None,
    };
    let metrics = hefl::fl::run_with(
        &config,
        hefl::fl::RoundRules::default(),
        &data,
        key,
        &mut Progress::new(),
    )?;
    if let Some(overhead) = &metrics.overhead {
        println!(
            "{}",
            hefl::report::overhead_summary(overhead, metrics.total_seconds)
        );
    }
    if let Some(path) = metrics_out {
        write_json(path, &metrics)?;
        eprintln!("metrics written to {}", path.display());
    }
    if let Some(path) = model_out {
        write_model(path, &metrics)?;
    }
    Ok(())
}
