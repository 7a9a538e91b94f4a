//! `hefl demo`: local, centralized, federated-plain and federated-he with one seed.

use super::args::TrainArgs;
use super::output::{create_dir, write_file, write_json, write_model};
use super::progress::Progress;
use anyhow::{Context, Result, bail};
use hefl::data::Mnist;
use hefl::fl::{Mode, Privacy, RunMetrics, TrainConfig};
use hefl::he::keys::KeyFile;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

/// The demo's four runs, its table, plot and metrics; with `model_out`, each run's model as
/// `model_out/LABEL.safetensors`.
pub fn run(
    args: &TrainArgs,
    out_dir: &Path,
    metrics_out: Option<&Path>,
    model_out: Option<&Path>,
    network: bool,
) -> Result<()> {
    args.validated(Mode::Federated)?;
    let data = args.load()?;
    let key = args.key()?;
    let mut runs: Vec<(String, RunMetrics)> = Vec::new();
    let plans = [
        (Mode::Local, Privacy::Plain),
        (Mode::Centralized, Privacy::Plain),
        (Mode::Federated, Privacy::Plain),
        (Mode::Federated, Privacy::He),
    ];
    for (mode, privacy) in plans {
        let config = TrainConfig {
            privacy,
            dp: None,
            secure_agg: args.secure_agg.filter(|_| privacy == Privacy::He),
            ..args.config(mode)
        };
        let model_path = model_out.map(|dir| dir.join(format!("{}.safetensors", config.label())));
        let metrics = if network && privacy == Privacy::He {
            // Party 0's process writes the model: its metrics file holds no parameters.
            let dir = out_dir.join("network");
            network_run(args, &config, &data, &dir, model_path.as_deref())?
        } else {
            let run_key = (privacy == Privacy::He).then(|| Arc::clone(&key));
            let metrics = hefl::fl::run(&config, &data, run_key, &mut Progress::new())?;
            if let Some(path) = &model_path {
                write_model(path, &metrics)?;
            }
            metrics
        };
        runs.push((config.label(), metrics));
    }
    let named: Vec<(&str, &RunMetrics)> = runs.iter().map(|(n, m)| (n.as_str(), m)).collect();
    let table = hefl::report::accuracy_table(&named);
    let overheads: Vec<String> = runs
        .iter()
        .filter_map(|(name, m)| {
            m.overhead.as_ref().map(|o| {
                format!(
                    "- {name}: {}",
                    hefl::report::overhead_summary(o, m.total_seconds)
                )
            })
        })
        .collect();
    let overheads = overheads.join("\n");
    create_dir(out_dir)?;
    let plot = out_dir.join("accuracy.png");
    hefl::report::plot_accuracy(
        &plot,
        &format!("MNIST test accuracy, {} parties", args.parties),
        &named,
    )?;
    let md = out_dir.join("results.md");
    write_file(
        &md,
        format!(
            "# local vs centralized vs federated (plain, he)\n\n{table}\n## Time in the privacy envelope\n\n{overheads}\n"
        ),
    )?;
    let json: serde_json::Map<String, serde_json::Value> = runs
        .iter()
        .map(|(n, m)| Ok((n.clone(), serde_json::to_value(m)?)))
        .collect::<Result<_, serde_json::Error>>()?;
    let json_path = out_dir.join("metrics.json");
    write_json(&json_path, &json)?;
    if let Some(path) = metrics_out {
        write_json(path, &json)?;
    }
    println!("\n{table}\n{overheads}\n");
    println!(
        "wrote {}, {} and {}",
        md.display(),
        plot.display(),
        json_path.display()
    );
    Ok(())
}

/// Secure aggregation's files for a run on loopback: one identity per party
/// (`DIR/party-P.id`) and their roster (`DIR/roster.json`); returns the roster's path and
/// fingerprint.
fn secure_agg_files(
    dir: &Path,
    key_id: hefl::he::keys::KeyId,
    mode: hefl::secagg::Mode,
    parties: u32,
) -> Result<(std::ffi::OsString, String)> {
    let mut keys = Vec::new();
    for party in 0..parties {
        let identity = hefl::secagg::Identity::generate()?;
        identity.write_new(&dir.join(format!("party-{party}.id")), true)?;
        keys.push(identity.public());
    }
    let policy = hefl::secagg::Policy {
        mode,
        parties,
        min_parties: parties,
    };
    let roster = hefl::secagg::Roster::new(key_id, keys, policy)?;
    let path = dir.join("roster.json");
    hefl::secret_file::write_atomic(
        &path,
        &roster.to_json(),
        true,
        hefl::secret_file::Access::Default,
    )?;
    Ok((path.into_os_string(), roster.fingerprint().to_string()))
}

/// The federated-he run as processes on loopback: `hefl serve --plan` with the run's plan
/// file, and one `hefl join` per party (party 0's writing its model to `model_out`).
/// Returns party 0's metrics.
fn network_run(
    args: &TrainArgs,
    config: &TrainConfig,
    data: &Mnist,
    dir: &Path,
    model_out: Option<&Path>,
) -> Result<RunMetrics> {
    create_dir(dir)?;
    let key_path = match &args.key {
        Some(path) => path.clone(),
        None => {
            let path = dir.join("hefl.key");
            KeyFile::generate()?.write_new(&path, true)?;
            path
        }
    };
    let key_id = KeyFile::load(&key_path)?.key_id();
    let secure_agg = match config.secure_agg {
        Some(mode) => Some(secure_agg_files(dir, key_id, mode, args.parties as u32)?),
        None => None,
    };
    let plan = hefl::fl::plan_for(
        config,
        data.train.len(),
        None,
        Some(key_id),
        hefl::fl::RoundRules::default(),
    )?;
    let plan_path = dir.join("plan.json");
    write_json(&plan_path, &*plan)?;
    let tokens = dir.join("tokens.json");
    // Fresh tokens for this run.
    if tokens.exists() {
        std::fs::remove_file(&tokens).with_context(|| format!("removing {}", tokens.display()))?;
    }
    let exe = std::env::current_exe().context("locating the hefl binary")?;
    let mut server = Command::new(&exe)
        .args(["serve", "--bind", "127.0.0.1:0", "--plan"])
        .arg(&plan_path)
        .arg("--tokens")
        .arg(&tokens)
        .args(
            secure_agg
                .as_ref()
                .map(|(roster, _)| ["--roster".into(), roster.clone()])
                .into_iter()
                .flatten(),
        )
        .stdout(Stdio::piped())
        .spawn()
        .context("starting hefl serve")?;
    let mut line = String::new();
    if let Some(out) = server.stdout.as_mut() {
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)?;
    }
    let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) else {
        let _ = server.kill();
        bail!("hefl serve did not start: {line:?}");
    };
    eprintln!(
        "network: server at {url}, {} client processes",
        args.parties
    );
    let mut parties = Vec::new();
    for party in 0..args.parties {
        let mut join = Command::new(&exe);
        join.args(["join", "--server", url, "--party", &party.to_string()])
            .arg("--tokens")
            .arg(&tokens)
            .arg("--key")
            .arg(&key_path)
            .arg("--metrics-out")
            .arg(dir.join(format!("party-{party}.json")));
        if let Some(data_dir) = &args.data_dir {
            join.arg("--data-dir").arg(data_dir);
        }
        if let Some((roster, fingerprint)) = &secure_agg {
            join.arg("--identity")
                .arg(dir.join(format!("party-{party}.id")))
                .arg("--roster")
                .arg(roster)
                .args(["--roster-fingerprint", fingerprint]);
        }
        if party > 0 {
            // Party 0 speaks for all: every party prints the same epoch lines.
            join.stdout(Stdio::null());
        } else if let Some(path) = model_out {
            join.arg("--model-out").arg(path);
        }
        parties.push(join.spawn().context("starting hefl join")?);
    }
    let mut failed = Vec::new();
    for (party, mut child) in parties.into_iter().enumerate() {
        if !child.wait()?.success() {
            failed.push(party);
        }
    }
    let status = server.wait()?;
    if !failed.is_empty() || !status.success() {
        bail!("network run failed: parties {failed:?} exited with errors, server {status}");
    }
    let path = dir.join("party-0.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}
