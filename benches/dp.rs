//! One client's per-round cost in FedSGD (default MLP, batch 64, a 20,000-image shard):
//! the plaintext step beside the DP-SGD step (Poisson sampling, per-example clipping,
//! Gaussian noise from the secure generator), measured in the same run.
//!
//! ```text
//! cargo bench --bench dp
//! ```

use criterion::{Criterion, criterion_group, criterion_main};
use hefl::data::{Dataset, IMAGE_PIXELS};
use hefl::dp::{DpSgd, Sampling};
use hefl::fl::{Client, Strategy};
use hefl::he::SecureRng;
use hefl::model::{DEFAULT_LAYERS, Mlp, OptimizerKind};
use ndarray::Array2;
use std::hint::black_box;

fn client(dp: Option<Sampling>) -> Client {
    let n = 20_000;
    let shard = Dataset {
        images: Array2::from_shape_fn((n, IMAGE_PIXELS), |(r, c)| {
            ((r * 7 + c * 13) % 256) as f32 / 255.0
        }),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
    };
    let model = Mlp::new(&DEFAULT_LAYERS, 42).expect("default layers");
    let mut client = Client::new(0, shard, model, OptimizerKind::Adam, 1.5e-3, 42);
    if let Some(sampling) = dp {
        let config = DpSgd {
            noise_multiplier: 1.0,
            max_grad_norm: 1.0,
            delta: 1e-5,
            sampling,
        };
        client.enable_dp(config, SecureRng::from_os().expect("OS entropy"));
    }
    client
}

fn step(c: &mut Criterion) {
    let mut group = c.benchmark_group("client_round_fedsgd_batch64");
    for (name, dp) in [
        ("plain", None),
        ("dp_sgd_poisson", Some(Sampling::Poisson)),
        ("dp_sgd_shuffle", Some(Sampling::Shuffle)),
    ] {
        let mut client = client(dp);
        group.bench_function(name, |b| {
            b.iter(|| black_box(client.compute_update(Strategy::FedSgd, 64)))
        });
    }
    group.finish();
}

criterion_group!(benches, step);
criterion_main!(benches);
