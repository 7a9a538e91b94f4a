//! One client's cost per FedSGD round in each privacy mode, as a multiple of the plaintext
//! step measured in the same run: the DP-SGD step (per-example clipping and noise) and the
//! HE step (the plaintext step plus encode, encrypt, decrypt, decode), with the HE and plain
//! envelopes alone for reference. Default MLP, batch 64, a 20,000-image synthetic shard.
//!
//! ```text
//! cargo bench --bench he_vs_dp
//! ```
//!
//! After criterion's own report, prints each operation's mean over criterion's measured
//! samples and its ratio to the plaintext step.

use criterion::Criterion;
use hefl::perf::workloads::{ClientRound, ClientWork};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SAMPLES: usize = 50;

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(SAMPLES)
        .configure_from_args();
    let mut round = ClientRound::new().expect("client round setup");
    // Every timed batch, per operation; criterion's warm-up batches come first.
    let mut batches: BTreeMap<&'static str, Vec<(u64, Duration)>> = BTreeMap::new();
    let mut group = criterion.benchmark_group("client_round_fedsgd_batch64");
    for work in ClientWork::ALL {
        group.bench_function(work.id(), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    round.run(work).expect("client round");
                }
                let elapsed = start.elapsed();
                batches.entry(work.id()).or_default().push((iters, elapsed));
                elapsed
            })
        });
    }
    group.finish();
    criterion.final_summary();

    // Criterion's measurement is the last SAMPLES batches of each operation.
    let mean = |id: &str| {
        let measured = batches.get(id)?;
        let measured = &measured[measured.len().saturating_sub(SAMPLES)..];
        let iters: u64 = measured.iter().map(|b| b.0).sum();
        let total: f64 = measured.iter().map(|b| b.1.as_secs_f64()).sum();
        (iters > 0).then(|| total / iters as f64)
    };
    let Some(base) = mean(ClientWork::PlaintextStep.id()) else {
        return; // filtered out on the command line
    };
    println!("\n| operation | mean per round | x plaintext step |\n|---|---:|---:|");
    for work in ClientWork::ALL {
        if let Some(t) = mean(work.id()) {
            println!(
                "| {} | {:.3} ms | {:.2} |",
                work.describe(),
                t * 1e3,
                t / base
            );
        }
    }
}
