//! The `hefl` command line: parses the arguments, dispatches to one command in [`cli`], and
//! sets the exit code. Every command's work lives in the library.

mod cli;

use clap::Parser;
use std::process::ExitCode;

/// Every round allocates and frees megabyte-sized vectors (updates, ciphertexts, wire
/// buffers). glibc's malloc hands such blocks back to the kernel and faults them in again
/// the next round: a two-party server round took 3.4 ms instead of 0.5 ms (`hefl
/// bench-report`). mimalloc keeps them for reuse, for a second with [`hefl::alloc`]'s setting.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    hefl::alloc::keep_freed_pages();
    let args = cli::Cli::parse();
    match cli::run(args.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let (message, code) = cli::explain(&error);
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}
