//! The training loop end to end: configuration errors, determinism, and real
//! MNIST runs small enough for CI (skipped, with a printed reason, without MNIST).

use hefl::data::{Dataset, IMAGE_PIXELS, Mnist, Partition};
use hefl::fl::{Mode, Strategy, TrainConfig, TrainError, run};
use ndarray::Array2;
use std::path::PathBuf;

fn real_mnist() -> Option<Mnist> {
    let Some(dir) = std::env::var_os("MNIST_DIR").map(PathBuf::from) else {
        eprintln!("skipped: MNIST_DIR is not set (CI sets MNIST_DIR=../shared/mnist)");
        return None;
    };
    match hefl::data::load_mnist_dir(&dir) {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("skipped: no MNIST in {}: {e}", dir.display());
            None
        }
    }
}

/// Ten well-separated synthetic classes: class c lights up pixel block c.
fn synthetic(n: usize) -> Dataset {
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let images = Array2::from_shape_fn((n, IMAGE_PIXELS), |(r, c)| {
        let noise = ((r * 31 + c * 17) % 13) as f32 / 100.0;
        if c / 78 == usize::from(labels[r]) {
            0.9
        } else {
            noise
        }
    });
    Dataset { images, labels }
}

fn tiny() -> Mnist {
    Mnist {
        train: synthetic(600),
        test: synthetic(200),
    }
}

fn quick(mode: Mode) -> TrainConfig {
    TrainConfig {
        mode,
        epochs: 2,
        batch_size: 32,
        lr: 1e-2,
        layers: vec![IMAGE_PIXELS, 16, 10],
        ..TrainConfig::default()
    }
}

#[test]
fn rejects_bad_configurations() {
    let data = tiny();
    let cases = [
        TrainConfig {
            epochs: 0,
            ..quick(Mode::Federated)
        },
        TrainConfig {
            batch_size: 0,
            ..quick(Mode::Federated)
        },
        TrainConfig {
            parties: 0,
            ..quick(Mode::Federated)
        },
        TrainConfig {
            lr: f32::NAN,
            ..quick(Mode::Federated)
        },
        TrainConfig {
            strategy: Strategy::FedAvg { local_steps: 0 },
            ..quick(Mode::Federated)
        },
        TrainConfig {
            layers: vec![10, 10],
            ..quick(Mode::Federated)
        },
    ];
    for config in cases {
        let err = run(&config, &data, &mut ()).expect_err("invalid config must be refused");
        assert!(matches!(err, TrainError::Config(_)), "{err}");
    }
    let too_many = TrainConfig {
        parties: 601,
        ..quick(Mode::Federated)
    };
    assert!(
        run(&too_many, &data, &mut ()).is_err(),
        "more parties than samples"
    );
}

#[test]
fn runs_are_deterministic_by_seed() {
    let data = tiny();
    for mode in Mode::ALL {
        let a = run(&quick(mode), &data, &mut ()).unwrap();
        let b = run(&quick(mode), &data, &mut ()).unwrap();
        let acc = |m: &hefl::fl::RunMetrics| {
            m.epochs
                .iter()
                .map(|e| (e.test_accuracy, e.test_loss))
                .collect::<Vec<_>>()
        };
        assert_eq!(acc(&a), acc(&b), "{mode}");
        let c = run(
            &TrainConfig {
                seed: 7,
                ..quick(mode)
            },
            &data,
            &mut (),
        )
        .unwrap();
        assert_ne!(acc(&a), acc(&c), "{mode}: another seed gives another run");
    }
}

#[test]
fn modes_split_the_data_as_documented() {
    let data = tiny();
    let local = run(&quick(Mode::Local), &data, &mut ()).unwrap();
    let central = run(&quick(Mode::Centralized), &data, &mut ()).unwrap();
    let fed = run(&quick(Mode::Federated), &data, &mut ()).unwrap();
    assert_eq!(central.party_samples, vec![600]);
    assert_eq!(fed.party_samples, vec![200, 200, 200]);
    assert_eq!(local.party_samples, vec![200]);
    // One epoch = one pass over a shard: 200 / 32 rounds, rounded up.
    assert_eq!(fed.epochs[0].rounds, 7);
    assert_eq!(central.epochs[0].rounds, 19);
    let fedavg = TrainConfig {
        strategy: Strategy::FedAvg { local_steps: 3 },
        ..quick(Mode::Federated)
    };
    assert_eq!(run(&fedavg, &data, &mut ()).unwrap().epochs[0].rounds, 3);
}

#[test]
fn every_mode_learns_separable_data() {
    let data = tiny();
    for config in [
        quick(Mode::Local),
        quick(Mode::Centralized),
        quick(Mode::Federated),
        TrainConfig {
            strategy: Strategy::FedAvg { local_steps: 2 },
            ..quick(Mode::Federated)
        },
        TrainConfig {
            partition: Partition::Dirichlet { alpha: 1.0 },
            ..quick(Mode::Federated)
        },
    ] {
        let m = run(&config, &data, &mut ()).unwrap();
        assert!(
            m.final_accuracy().unwrap() > 0.95,
            "{config:?}: {:?}",
            m.epochs
        );
    }
}

/// The CI-sized real runs: centralized, 1 epoch on 10,000 images (157 steps);
/// federated, 2 epochs of 3 parties on the same 10,000 (105 rounds).
#[test]
fn real_mnist_on_10k_reaches_90_percent() {
    let Some(data) = real_mnist() else { return };
    for (mode, epochs) in [(Mode::Centralized, 1), (Mode::Federated, 2)] {
        let config = TrainConfig {
            mode,
            epochs,
            train_subset: Some(10_000),
            ..TrainConfig::default()
        };
        let m = run(&config, &data, &mut ()).unwrap();
        let acc = m.final_accuracy().unwrap();
        eprintln!(
            "{mode}: {epochs} epoch(s) on 10,000 images: {:.2}%",
            100.0 * acc
        );
        assert!(acc >= 0.90, "{mode}: {acc}");
    }
}
