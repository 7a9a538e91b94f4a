//! `hefl dp-epsilon`, `hefl dp-sweep [--tune]` and `hefl dp-compare`: the DP variant's
//! accountants, its accuracy-against-epsilon table, its tuning and the HE-versus-DP
//! comparison.

use super::args::{DpEpsilonArgs, TrainArgs};
use super::output::{create_dir, write_file, write_json};
use super::progress::Progress;
use anyhow::{Context, Result};
use hefl::data::Mnist;
use hefl::dp::{Accountant, DpSgd, Sampling};
use hefl::fl::{
    DpTrial, Field, Mode, Privacy, RunMetrics, TrainConfig, TrialResult, TuneObserver, TunedDp,
    check_positive,
};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
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
    let (base, mut runs) = plain_and_he(args, &data)?;
    let mut rows: Vec<_> = runs
        .iter()
        .map(|(name, m)| hefl::report::SweepRow {
            name: name.clone(),
            epsilon: None,
            noise_multiplier: None,
            accuracy: m.final_accuracy().unwrap_or(0.0),
            seconds: m.total_seconds,
        })
        .collect();
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
    write_report(
        out_dir,
        "dp-sweep",
        &format!(
            "Federated MNIST, {} parties: DP-SGD vs plain vs HE",
            base.parties
        ),
        &format!(
            "Accuracy against epsilon (delta = {}, C = {}, {} epochs)",
            args.delta, args.max_grad_norm, args.epochs
        ),
        (&md, &csv),
        &runs,
    )
}

/// Federated plain and HE runs with the training flags, the baselines every DP table sits
/// beside; returns their configuration (without DP) and the named runs.
fn plain_and_he(
    args: &TrainArgs,
    data: &Mnist,
) -> Result<(TrainConfig, Vec<(String, RunMetrics)>)> {
    let key = args.key()?;
    let base = TrainConfig {
        dp: None,
        input_dp: None,
        ..args.config(Mode::Federated)
    };
    let mut runs = Vec::new();
    for privacy in [Privacy::Plain, Privacy::He] {
        let config = TrainConfig {
            privacy,
            ..base.clone()
        };
        let run_key = (privacy == Privacy::He).then(|| Arc::clone(&key));
        let m = hefl::fl::run(&config, data, run_key, &mut Progress::new())?;
        runs.push((config.label(), m));
    }
    Ok((base, runs))
}

/// Writes OUT_DIR/STEM.{md,csv,png}: the table (markdown and CSV) with the per-epoch
/// accuracy table under it, and the accuracy plot of `runs`; prints the table.
fn write_report(
    out_dir: &Path,
    stem: &str,
    plot_title: &str,
    heading: &str,
    (md, csv): (&str, &str),
    runs: &[(String, RunMetrics)],
) -> Result<()> {
    create_dir(out_dir)?;
    let named: Vec<(&str, &RunMetrics)> = runs.iter().map(|(n, m)| (n.as_str(), m)).collect();
    let plot = out_dir.join(format!("{stem}.png"));
    hefl::report::plot_accuracy(&plot, plot_title, &named)?;
    let md_path = out_dir.join(format!("{stem}.md"));
    write_file(
        &md_path,
        format!(
            "# {heading}\n\n{md}\n{}",
            hefl::report::accuracy_table(&named)
        ),
    )?;
    let csv_path = out_dir.join(format!("{stem}.csv"));
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

/// The progress of a tuned sweep: a bar over trials and one line per finished trial.
struct TuneProgress {
    bar: ProgressBar,
}

impl TuneProgress {
    fn new(trials: usize) -> Self {
        let bar = ProgressBar::new(trials as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "tune [{bar:30}] {pos}/{len} trials  {elapsed_precise} (eta {eta})  {msg}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        Self { bar }
    }
}

impl TuneObserver for TuneProgress {
    fn trial_start(&mut self, target_epsilon: f64, trial: &DpTrial) {
        self.bar
            .set_message(format!("eps {target_epsilon}: {trial}"));
    }

    fn trial_end(&mut self, r: &TrialResult) {
        let line = format!(
            "eps {:<4} {:<45} sigma {:.3}  validation {:6.2}%  {:.1} s",
            r.target_epsilon,
            r.trial.to_string(),
            r.noise_multiplier,
            100.0 * r.validation_accuracy,
            r.seconds
        );
        // Printed even when stderr is not a terminal (the bar is then hidden).
        self.bar.suspend(|| eprintln!("{line}"));
        self.bar.inc(1);
    }
}

/// `dp-sweep --tune`: searches the grid per target epsilon on a validation split, writes the
/// chosen settings (dp-tuned.json, or dp-tuned-centralized.json for the centralized
/// variant: what `dp-compare` reads) and the tables (dp-tuned.md, dp-tuned-centralized.md).
pub fn tune(
    args: &TrainArgs,
    mode: Mode,
    epsilons: &[f64],
    validation_size: usize,
    out_dir: &Path,
) -> Result<()> {
    if mode == Mode::Local {
        anyhow::bail!("--mode local is not tuned: use federated or centralized");
    }
    args.validated(mode)?;
    for &target in epsilons {
        check_positive(Field::TargetEpsilon, target)?;
    }
    let data = args.load()?;
    let base = TrainConfig {
        privacy: Privacy::Dp,
        dp: Some(DpSgd {
            sampling: Sampling::Poisson,
            ..args.dp_sgd()
        }),
        input_dp: None,
        ..args.config(mode)
    };
    hefl::fl::validation_split(&data.train, validation_size, base.seed)?;
    let grid = |target| hefl::fl::tuning_grid(mode, target);
    let trials: usize = epsilons.iter().map(|&e| grid(e).len()).sum();
    let mut progress = TuneProgress::new(trials);
    let started = std::time::Instant::now();
    let tuned = hefl::fl::tune(
        &base,
        &data,
        epsilons,
        &grid,
        validation_size,
        &mut progress,
    )?;
    progress.bar.finish_and_clear();
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    create_dir(out_dir)?;
    let stem = match mode {
        Mode::Centralized => "dp-tuned-centralized",
        _ => "dp-tuned",
    };
    let json_path = out_dir.join(format!("{stem}.json"));
    write_json(&json_path, &tuned)?;
    let (best, all) = (trial_table(&tuned.best), trial_table(&tuned.trials));
    let md_path = out_dir.join(format!("{stem}.md"));
    let who = match mode {
        Mode::Centralized => {
            "centralized DP-SGD (one trainer on all the training images".to_owned()
        }
        _ => format!(
            "federated DP-SGD ({} parties, each adding its own noise",
            base.parties
        ),
    };
    let trial_seconds: f64 = tuned.trials.iter().map(|t| t.seconds).sum();
    write_file(
        &md_path,
        format!(
            "# Tuned {who}, delta = {}, {} accountant)\n\n\
             Scored on {} training images held out for validation; the whole search took \
             {minutes:.1} minutes ({} trials, {:.0} s of training on average).\n\n\
             ## Best per target epsilon\n\n{best}\n## Every trial\n\n{all}",
            args.delta,
            tuned.accountant,
            validation_size,
            tuned.trials.len(),
            trial_seconds / tuned.trials.len().max(1) as f64
        ),
    )?;
    println!("\n{best}");
    println!(
        "tuned in {minutes:.1} minutes; wrote {} and {}\n\
         compare with HE and plain: hefl dp-compare --dp-settings {}",
        json_path.display(),
        md_path.display(),
        json_path.display()
    );
    Ok(())
}

/// Trials as a markdown table.
fn trial_table(trials: &[TrialResult]) -> String {
    let mut md = String::from(
        "| target epsilon | batch | optimizer | lr | C | epochs | model | noise multiplier | validation accuracy | test accuracy | time |\n\
         |---:|---:|---|---:|---:|---:|---|---:|---:|---:|---:|\n",
    );
    for r in trials {
        let t = &r.trial;
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.3} | {:.2}% | {:.2}% | {:.1} s |\n",
            r.target_epsilon,
            t.batch_size,
            t.optimizer,
            t.lr,
            t.max_grad_norm,
            t.epochs,
            model_settings(t),
            r.noise_multiplier,
            100.0 * r.validation_accuracy,
            100.0 * r.test_accuracy,
            r.seconds
        ));
    }
    md
}

/// A trial's model-side settings in a few words: `pca 60 (σp 16), 1000 tanh, cosine, ema 0.99`.
fn model_settings(t: &DpTrial) -> String {
    let mut parts = Vec::new();
    if let Some(pca) = t.pca {
        parts.push(format!(
            "pca {} (σp {})",
            pca.components, pca.noise_multiplier
        ));
    }
    parts.push(format!(
        "{} {}",
        t.hidden.map_or("base".to_owned(), |h| h.to_string()),
        t.activation
    ));
    if t.lr_schedule != hefl::model::LrSchedule::Constant {
        parts.push(t.lr_schedule.to_string());
    }
    if let Some(decay) = t.ema {
        parts.push(format!("ema {decay}"));
    }
    parts.join(", ")
}

/// `hefl dp-compare`: plain and HE with the training flags (and the centralized
/// non-private baseline when a centralized settings file is given), and DP-SGD with each
/// setting of the `dp-sweep --tune` files (recalibrated to its target epsilon on the full
/// training set); writes compare.md, compare.csv and compare.png.
pub fn compare(args: &TrainArgs, settings: &[PathBuf], out_dir: &Path) -> Result<()> {
    args.validated(Mode::Federated)?;
    let mut files = Vec::new();
    for path in settings {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let tuned: TunedDp = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a dp-sweep --tune settings file (dp-tuned.json)",
                path.display()
            )
        })?;
        tuned.base.validate()?;
        files.push(tuned);
    }
    let data = args.load()?;
    let (base, mut runs) = plain_and_he(args, &data)?;
    if files.iter().any(|t| t.base.mode == Mode::Centralized) {
        let config = TrainConfig {
            mode: Mode::Centralized,
            privacy: Privacy::Plain,
            ..base.clone()
        };
        let m = hefl::fl::run(&config, &data, None, &mut Progress::new())?;
        runs.push((config.label(), m));
    }
    let mut rows: Vec<_> = runs
        .iter()
        .map(|(name, m)| {
            let c = &m.config;
            let settings = format!(
                "batch {}, {} lr {}, {} epochs",
                c.batch_size, c.optimizer, c.lr, c.epochs
            );
            comparison_row(name, settings, m, data.train.len())
        })
        .collect();
    for (tuned, best) in files
        .iter()
        .flat_map(|tuned| tuned.best.iter().map(move |best| (tuned, best)))
    {
        let name = format!("{}-dp eps={}", tuned.base.mode, best.target_epsilon);
        eprintln!("{name}: {}", best.trial);
        let (_, m) = hefl::fl::run_trial(
            &tuned.base,
            &best.trial,
            best.target_epsilon,
            &data,
            &data.test,
        )?;
        let sigma = m.config.dp.map_or(0.0, |dp| dp.noise_multiplier);
        let settings = format!("{}, sigma {sigma:.3}", best.trial);
        rows.push(comparison_row(&name, settings, &m, data.train.len()));
        runs.push((name, m));
    }
    let (md, csv) = hefl::report::comparison_tables(&rows);
    write_report(
        out_dir,
        "compare",
        &format!(
            "Federated MNIST, {} parties: HE vs plain vs tuned DP-SGD",
            base.parties
        ),
        &format!(
            "HE vs plain vs tuned DP-SGD ({} parties, delta = {})",
            base.parties,
            files
                .first()
                .and_then(|t| t.base.dp)
                .map_or(args.delta, |dp| dp.delta)
        ),
        (&md, &csv),
        &runs,
    )
}

/// A run's row of the comparison; DP runs get their epsilon under both accountants.
fn comparison_row(
    name: &str,
    settings: String,
    m: &RunMetrics,
    train_size: usize,
) -> hefl::report::ComparisonRow {
    let epsilons = m.config.dp.map(|dp| {
        let (q, steps) = hefl::fl::sampling_rate_and_steps(&m.config, train_size);
        Accountant::ALL.map(|accountant| DpSgd { accountant, ..dp }.epsilon(q, steps))
    });
    let cpu = m.overhead.as_ref().map(|o| &o.client_cpu);
    hefl::report::ComparisonRow {
        name: name.to_owned(),
        settings,
        epsilon_pld: epsilons.map(|e| e[0]),
        epsilon_rdp: epsilons.map(|e| e[1]),
        accuracy: m.final_accuracy().unwrap_or(0.0),
        seconds: m.total_seconds,
        rounds: m.epochs.iter().map(|e| e.rounds).sum(),
        envelope_cpu_seconds: cpu.map_or(0.0, |c| c.cpu_seconds()),
        parties: m.config.parties,
        bytes_per_round: cpu.map_or(0, |c| c.bytes_per_update),
    }
}
