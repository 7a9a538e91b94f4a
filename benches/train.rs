//! One centralized training epoch: 60,000 images, batch 64, Adam, default MLP.
//!
//! Uses real MNIST when `MNIST_DIR` points at it, otherwise random images of the
//! same shape (the cost of an epoch does not depend on pixel values).
//! Reference: a plain numpy implementation of the same MLP with Adam takes about
//! 5.5 s per epoch on the 2-core machine this project is developed on.

use criterion::{Criterion, criterion_group, criterion_main};
use hefl::data::Mnist;
use hefl::data::synthetic::separable;
use hefl::fl::{Mode, TrainConfig, run};
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn data() -> Mnist {
    if let Some(dir) = std::env::var_os("MNIST_DIR") {
        match hefl::data::load_mnist_dir(std::path::Path::new(&dir)) {
            Ok(m) => return m,
            Err(e) => eprintln!("MNIST_DIR unusable ({e}); timing random images instead"),
        }
    }
    Mnist {
        train: separable(60_000),
        test: separable(10_000),
    }
}

fn epoch(c: &mut Criterion) {
    let data = data();
    let config = TrainConfig {
        mode: Mode::Centralized,
        epochs: 1,
        // Evaluation is not part of the epoch being timed: keep it negligible.
        test_subset: Some(1_000),
        ..TrainConfig::default()
    };
    let mut group = c.benchmark_group("train");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("centralized_epoch_60k_batch64_adam", |b| {
        b.iter(|| run(&config, &data, None, &mut ()).expect("valid config"))
    });
    group.finish();
}

criterion_group!(benches, epoch);
criterion_main!(benches);
