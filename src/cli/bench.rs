//! `hefl bench-report`: what privacy costs on this machine.

use super::output::{create_dir, write_file};
use anyhow::{Context, Result, bail};
use hefl::perf::network::{NetMode, NetworkOptions, Transport};
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
    let options = hefl::perf::suite::Options {
        quick,
        flower_python: hefl::perf::flower::flower_python(),
    };
    let report = hefl::perf::suite::run(options, &mut |step| {
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

/// Every value of the list flag `flag` parsed by `parse`, or an error naming the first unknown
/// one and what was `expected`.
fn parse_each<T>(
    flag: &str,
    what: &str,
    values: &[String],
    parse: fn(&str) -> Option<T>,
    expected: &str,
) -> Result<Vec<T>> {
    values
        .iter()
        .map(|v| match parse(v) {
            Some(value) => Ok(value),
            None => bail!("{flag}: unknown {what} {v:?}, expected {expected}"),
        })
        .collect()
}

/// Runs `hefl bench-network`: federations of `parties` in each of `modes` over each of
/// `transports` on loopback.
pub fn network(
    parties: &[u32],
    modes: &[String],
    transports: &[String],
    rounds: u64,
    quick: bool,
    out_dir: &Path,
) -> Result<()> {
    // A thread per party, each freeing and allocating a download a round: no huge pages, and
    // freed pages kept (see the functions).
    hefl::alloc::avoid_huge_pages();
    hefl::alloc::never_return_freed_pages();
    let modes = parse_each(
        "--modes",
        "mode",
        modes,
        NetMode::parse,
        "plain, he-seeds or he-switched",
    )?;
    let transports = parse_each(
        "--transports",
        "transport",
        transports,
        Transport::parse,
        "http or https",
    )?;
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
        transports: if quick {
            vec![Transport::Http, Transport::Https]
        } else {
            transports
        },
        rounds: if quick { 3 } else { rounds },
    };
    let start = Instant::now();
    let rows = hefl::perf::network::run(&options, &mut |step| {
        eprintln!("[{:6.1} s] {step}", start.elapsed().as_secs_f64());
    })?;
    // The command as typed, so that the page says how to reproduce it.
    let command = std::iter::once("hefl".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let markdown = hefl::perf::network::markdown(&rows);
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
    hefl::perf::network::plot(&rows, &png_path)?;
    println!("\n{markdown}");
    println!(
        "wrote {}, {}, {}",
        md_path.display(),
        csv_path.display(),
        png_path.display()
    );
    Ok(())
}
