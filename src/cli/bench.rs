//! `hefl bench-report`: what privacy costs on this machine.

use super::output::{create_dir, write_file};
use anyhow::{Context, Result, bail};
use hefl::perf::network::{NetMode, NetworkOptions};
use std::path::Path;
use std::time::Instant;

/// Runs the measurement suite; prints and writes its tables, CSV files and plots.
pub fn run(quick: bool, out_dir: &Path) -> Result<()> {
    create_dir(out_dir)?;
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this binary was built without --release; run `cargo run --release -- \
             bench-report` for representative times"
        );
    }
    let start = Instant::now();
    let report = hefl::perf::suite::run(hefl::perf::suite::Options { quick }, &mut |step| {
        eprintln!("[{:6.1} s] {step}", start.elapsed().as_secs_f64());
    })?;
    let markdown = report.markdown();
    let md_path = out_dir.join("report.md");
    let command = if quick {
        "hefl bench-report --quick"
    } else {
        "hefl bench-report"
    };
    write_file(
        &md_path,
        format!(
            "# Performance report\n\nMeasured by `{command}` in {:.0} s.\n\n{markdown}",
            start.elapsed().as_secs_f64()
        ),
    )?;
    let mut written = vec![md_path];
    for (name, contents) in report.csv() {
        let path = out_dir.join(name);
        write_file(&path, contents)?;
        written.push(path);
    }
    written.extend(report.plot(out_dir)?);
    println!("\n{markdown}");
    let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    println!("wrote {}", names.join(", "));
    Ok(())
}

/// Runs `hefl bench-network`: federations of `parties` in each of `modes` over loopback.
pub fn network(
    parties: &[u32],
    modes: &[String],
    rounds: u64,
    quick: bool,
    out_dir: &Path,
) -> Result<()> {
    let modes = modes
        .iter()
        .map(|m| match NetMode::parse(m) {
            Some(mode) => Ok(mode),
            None => bail!("--modes: unknown mode {m:?}, expected plain, he-seeds or he-switched"),
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(p) = parties.iter().find(|&&p| !(1..=10_000).contains(&p)) {
        bail!("--parties: {p} parties, expected 1 to 10000");
    }
    create_dir(out_dir)?;
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this binary was built without --release; run `cargo run --release -- \
             bench-network` for representative times"
        );
    }
    let options = NetworkOptions {
        hefl: std::env::current_exe().context("locating the hefl binary")?,
        work_dir: out_dir.to_path_buf(),
        parties: if quick {
            vec![3, 30, 300]
        } else {
            parties.to_vec()
        },
        modes: if quick { vec![NetMode::HeSeeds] } else { modes },
        rounds: if quick { 3 } else { rounds },
    };
    let start = Instant::now();
    let rows = hefl::perf::network::run(&options, &mut |step| {
        eprintln!("[{:6.1} s] {step}", start.elapsed().as_secs_f64());
    })?;
    let command = if quick {
        "hefl bench-network --quick".to_owned()
    } else {
        "hefl bench-network".to_owned()
    };
    eprintln!(
        "[{:6.1} s] the in-memory fold at the same party counts",
        start.elapsed().as_secs_f64()
    );
    let fold = hefl::perf::network::fold_seconds(&options.parties)?;
    let markdown = hefl::perf::network::markdown(&rows, &fold);
    let machine = hefl::perf::Machine::detect();
    let md_path = out_dir.join("network.md");
    write_file(
        &md_path,
        format!(
            "# Rounds over HTTP\n\nMeasured by `{command}` in {:.0} s on {machine}.\n\n{markdown}",
            start.elapsed().as_secs_f64()
        ),
    )?;
    let csv_path = out_dir.join("network.csv");
    write_file(&csv_path, hefl::perf::network::csv(&rows))?;
    let png_path = out_dir.join("network.png");
    hefl::perf::network::plot(&rows, &fold, &png_path)?;
    println!("\n{markdown}");
    println!(
        "wrote {}, {}, {}",
        md_path.display(),
        csv_path.display(),
        png_path.display()
    );
    Ok(())
}
