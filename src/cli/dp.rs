//! `hefl dp-epsilon` and `hefl dp-sweep`: the DP variant's accountant and its
//! accuracy-against-epsilon table.

use super::args::{DpEpsilonArgs, TrainArgs};
use super::output::{create_dir, write_file};
use super::progress::Progress;
use anyhow::Result;
use hefl::dp::{Accountant, DpSgd, Sampling};
use hefl::fl::{Field, Mode, Privacy, RunMetrics, TrainConfig, check_positive};
use std::path::Path;
use std::sync::Arc;

/// Prints the epsilon of a DP-SGD run; the bare number last (`inf` when the noise is too
/// small for any finite guarantee).
pub fn epsilon(args: &DpEpsilonArgs) -> Result<()> {
    args.check()?;
    let detail = match args.accountant {
        Accountant::Rdp => {
            let (_, order) = hefl::dp::epsilon(
                args.sampling_rate,
                args.noise_multiplier,
                args.steps,
                args.delta,
            );
            if order.is_finite() {
                format!("rdp, best order {order}")
            } else {
                "rdp, infinite at every order".to_owned()
            }
        }
        Accountant::Pld => "pld".to_owned(),
    };
    let eps = args.accountant.epsilon(
        args.sampling_rate,
        args.noise_multiplier,
        args.steps,
        args.delta,
    );
    println!(
        "epsilon for q = {}, sigma = {}, {} steps, delta = {} ({detail}):",
        readable(args.sampling_rate),
        readable(args.noise_multiplier),
        args.steps,
        readable(args.delta)
    );
    println!("{}", readable(eps));
    Ok(())
}

/// A number as people read it: `1e-160`, not 160 zeros.
fn readable(x: f64) -> String {
    if x != 0.0 && x.is_finite() && !(1e-4..1e9).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        x.to_string()
    }
}

/// Runs plain, HE and DP-SGD at each target epsilon; writes the table, CSV and plot.
pub fn sweep(args: &TrainArgs, epsilons: &[f64], out_dir: &Path) -> Result<()> {
    args.validated(Mode::Federated)?;
    for &target in epsilons {
        check_positive(Field::TargetEpsilon, target)?;
    }
    let data = args.load()?;
    let key = args.key()?;
    let base = TrainConfig {
        dp: None,
        input_dp: None,
        ..args.config(Mode::Federated)
    };
    let mut runs: Vec<(String, RunMetrics)> = Vec::new();
    let mut rows = Vec::new();
    for privacy in [Privacy::Plain, Privacy::He] {
        let config = TrainConfig {
            privacy,
            ..base.clone()
        };
        let run_key = (privacy == Privacy::He).then(|| Arc::clone(&key));
        let m = hefl::fl::run(&config, &data, run_key, &mut Progress::new())?;
        rows.push(hefl::report::SweepRow {
            name: config.label(),
            epsilon: None,
            noise_multiplier: None,
            accuracy: m.final_accuracy().unwrap_or(0.0),
            seconds: m.total_seconds,
        });
        runs.push((config.label(), m));
    }
    for &target in epsilons {
        let mut config = TrainConfig {
            privacy: Privacy::Dp,
            dp: Some(DpSgd {
                sampling: Sampling::Poisson,
                ..args.dp_sgd()
            }),
            ..base.clone()
        };
        let sigma = hefl::fl::calibrate_noise(&mut config, data.train.len(), target)?;
        let mut progress = Progress::named(&format!("dp eps {target}"));
        let m = hefl::fl::run(&config, &data, None, &mut progress)?;
        let name = format!("federated-dp eps={target}");
        rows.push(hefl::report::SweepRow {
            name: name.clone(),
            epsilon: m.epochs.last().and_then(|e| e.epsilon),
            noise_multiplier: Some(sigma),
            accuracy: m.final_accuracy().unwrap_or(0.0),
            seconds: m.total_seconds,
        });
        runs.push((name, m));
    }
    let (md, csv) = hefl::report::sweep_tables(&rows);
    create_dir(out_dir)?;
    let named: Vec<(&str, &RunMetrics)> = runs.iter().map(|(n, m)| (n.as_str(), m)).collect();
    let plot = out_dir.join("dp-sweep.png");
    hefl::report::plot_accuracy(
        &plot,
        &format!(
            "Federated MNIST, {} parties: DP-SGD vs plain vs HE",
            args.parties
        ),
        &named,
    )?;
    let md_path = out_dir.join("dp-sweep.md");
    write_file(
        &md_path,
        format!(
            "# Accuracy against epsilon (delta = {}, C = {}, {} epochs)\n\n{md}\n{}",
            args.delta,
            args.max_grad_norm,
            args.epochs,
            hefl::report::accuracy_table(&named)
        ),
    )?;
    let csv_path = out_dir.join("dp-sweep.csv");
    write_file(&csv_path, csv)?;
    println!("\n{md}");
    println!(
        "wrote {}, {} and {}",
        md_path.display(),
        csv_path.display(),
        plot.display()
    );
    Ok(())
}
