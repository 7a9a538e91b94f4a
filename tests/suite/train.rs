//! The training loop end to end: configuration errors, determinism, and real
//! MNIST runs small enough for CI (skipped, with a printed reason, without MNIST).

use hefl::data::{IMAGE_PIXELS, Partition};
use hefl::fl::{Mode, Privacy, Strategy, TrainConfig, TrainError, run};
use hefl::he::keys::KeyFile;
use std::sync::Arc;

use crate::util::{real_mnist, tiny_mnist as tiny};

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
        let err = run(&config, &data, None, &mut ()).expect_err("invalid config must be refused");
        assert!(matches!(err, TrainError::Config(_)), "{err}");
    }
    let too_many = TrainConfig {
        parties: 601,
        ..quick(Mode::Federated)
    };
    assert!(
        run(&too_many, &data, None, &mut ()).is_err(),
        "more parties than samples"
    );
}

#[test]
fn runs_are_deterministic_by_seed() {
    let data = tiny();
    for mode in Mode::ALL {
        let a = run(&quick(mode), &data, None, &mut ()).unwrap();
        let b = run(&quick(mode), &data, None, &mut ()).unwrap();
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
            None,
            &mut (),
        )
        .unwrap();
        assert_ne!(acc(&a), acc(&c), "{mode}: another seed gives another run");
    }
}

#[test]
fn modes_split_the_data_as_documented() {
    let data = tiny();
    let local = run(&quick(Mode::Local), &data, None, &mut ()).unwrap();
    let central = run(&quick(Mode::Centralized), &data, None, &mut ()).unwrap();
    let fed = run(&quick(Mode::Federated), &data, None, &mut ()).unwrap();
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
    assert_eq!(
        run(&fedavg, &data, None, &mut ()).unwrap().epochs[0].rounds,
        3
    );
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
        let m = run(&config, &data, None, &mut ()).unwrap();
        assert!(
            m.final_accuracy().unwrap() > 0.95,
            "{config:?}: {:?}",
            m.epochs
        );
    }
}

fn shared_key() -> Arc<hefl::he::keys::SecretKey> {
    Arc::new(KeyFile::generate().unwrap().secret_key().unwrap())
}

/// The server's ciphertext sum is exact: fed the same quantized updates (same seed, same
/// stochastic rounding), federated-he and federated-plain end with bit-identical models.
#[test]
fn he_and_plain_federated_runs_give_bit_identical_models() {
    let data = tiny();
    for strategy in [Strategy::FedSgd, Strategy::FedAvg { local_steps: 2 }] {
        let plain = TrainConfig {
            strategy,
            privacy: Privacy::Plain,
            ..quick(Mode::Federated)
        };
        let he = TrainConfig {
            privacy: Privacy::He,
            ..plain.clone()
        };
        let plain_run = run(&plain, &data, None, &mut ()).unwrap();
        let he_run = run(&he, &data, Some(shared_key()), &mut ()).unwrap();
        assert_eq!(he_run.epochs.len(), 2);
        assert!(!he_run.final_params.is_empty());
        let same_bits = plain_run
            .final_params
            .iter()
            .zip(&he_run.final_params)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same_bits, "{strategy}: he and plain models differ");
        let overhead = he_run.overhead.expect("federated runs report overhead");
        assert_eq!(overhead.privacy, Privacy::He);
        assert!(overhead.client_cpu.encrypt_seconds > 0.0);
        // The parameters plus the weight slot, as a compact upload at the run's widths.
        let slots = hefl::model::param_count(&he.layers) + 1;
        assert_eq!(overhead.client_cpu.bytes_per_update, he_bytes(slots, &he));
        let plain_cpu = plain_run.overhead.unwrap().client_cpu;
        assert_eq!(plain_cpu.encrypt_seconds, 0.0);
        // Plain words packed to the encoding's t bits: a 68-byte header, then blocks of 64
        // values, each t u64 words.
        let t = plain.encoding().unwrap().total_bits() as usize;
        assert_eq!(plain_cpu.bytes_per_update, 68 + slots.div_ceil(64) * t * 8);
        assert!(plain_cpu.bytes_per_update < overhead.client_cpu.bytes_per_update);
    }
}

/// Wire bytes of an upload of `slots` values in the federation of `config`.
fn he_bytes(slots: usize, config: &TrainConfig) -> usize {
    let key = KeyFile::from_seed([1; 32]).secret_key().unwrap();
    let widths = config.widths().unwrap();
    let upload = key
        .prepare(slots)
        .unwrap()
        .seal(&vec![0; slots], &widths)
        .unwrap();
    upload.to_bytes().len()
}

#[test]
fn he_without_a_key_is_refused() {
    let config = TrainConfig {
        privacy: Privacy::He,
        ..quick(Mode::Federated)
    };
    let err = run(&config, &tiny(), None, &mut ()).unwrap_err();
    assert!(matches!(err, TrainError::MissingKey), "{err}");
}

/// The CI-sized real runs: centralized, 1 epoch on 10,000 images (157 steps);
/// federated plain and he, 2 epochs of 3 parties on the same 10,000 (105 rounds).
#[test]
fn real_mnist_on_10k_reaches_90_percent() {
    let Some(data) = real_mnist() else { return };
    for (mode, privacy, epochs) in [
        (Mode::Centralized, Privacy::Plain, 1),
        (Mode::Federated, Privacy::Plain, 2),
        (Mode::Federated, Privacy::He, 2),
    ] {
        let config = TrainConfig {
            mode,
            privacy,
            epochs,
            train_subset: Some(10_000),
            ..TrainConfig::default()
        };
        let key = (privacy == Privacy::He).then(shared_key);
        let m = run(&config, &data, key, &mut ()).unwrap();
        let acc = m.final_accuracy().unwrap();
        eprintln!(
            "{}: {epochs} epoch(s) on 10,000 images: {:.2}%",
            config.label(),
            100.0 * acc
        );
        assert!(acc >= 0.90, "{}: {acc}", config.label());
    }
}

/// A learning rate that blows the model up is reported as divergence, naming the party and
/// the learning rate, not as parties that differ (NaN != NaN) nor as a success.
#[test]
fn a_model_gone_non_finite_is_reported_as_divergence() {
    let data = tiny();
    for mode in [Mode::Local, Mode::Federated] {
        let config = TrainConfig {
            lr: f32::MAX,
            optimizer: hefl::model::OptimizerKind::Sgd,
            epochs: 3,
            ..quick(mode)
        };
        let err = run(&config, &data, None, &mut ()).expect_err("lr f32::MAX cannot train");
        let message = format!("{err:#}");
        assert!(
            !matches!(err, TrainError::Diverged { .. }) && !message.contains("differs from"),
            "{mode}: {message}"
        );
        assert!(
            message.contains("non-finite") || message.contains("not finite"),
            "{mode}: {message}"
        );
        assert!(message.contains("party 0"), "{mode}: {message}");
    }
}
