//! `hefl bench-report`: what privacy costs on this machine.

use super::output::{create_dir, write_file};
use anyhow::Result;
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
