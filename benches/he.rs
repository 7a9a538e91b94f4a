//! Encryption, decryption and homomorphic sums of a 101,770-value vector (the MNIST MLP's
//! parameter count), against tfhe's stock `encrypt_glwe_ciphertext_list` /
//! `decrypt_glwe_ciphertext_list` measured in the same run; the compact path (prepare, seal,
//! fold, mask regeneration, wire); then encryption and decryption of 10^4 to 10^7 values on
//! 1 and all threads (how cost grows with model size).
//!
//! ```text
//! cargo bench --bench he -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hefl::he::keys::{KeyFile, SecretKey};
use hefl::he::params::PARAMS;
use hefl::he::{CompactVector, DownloadForm, EncryptedVector, Expected, Widths};
use hefl::perf::suite::VECTOR_LENGTHS;
use hefl::perf::workloads::vector_to_encrypt;
use hefl::perf::{thread_counts, thread_pool};
use hefl::quant::FixedPoint;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tfhe::core_crypto::prelude::*;

const LEN: usize = 101_770;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn setup() -> (SecretKey, FixedPoint, Vec<u64>) {
    let key = KeyFile::generate()
        .and_then(|k| k.secret_key())
        .expect("key");
    let fp = FixedPoint::default();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let values: Vec<f32> = (0..LEN).map(|_| rng.random_range(-0.1..0.1)).collect();
    let plaintext = fp.encode(&values, &mut rng).expect("encode");
    (key, fp, plaintext)
}

/// Pools of 1 thread, powers of two, and all threads.
fn pools() -> Vec<(String, rayon::ThreadPool)> {
    thread_counts()
        .into_iter()
        .map(|threads| {
            let pool = thread_pool(threads).expect("thread pool");
            (format!("{threads}_threads"), pool)
        })
        .collect()
}

fn bench_encrypt_decrypt(c: &mut Criterion) {
    let (key, _, plaintext) = setup();
    let ciphertext = key.encrypt(&plaintext).expect("encrypt");
    let mut group = c.benchmark_group("101770_values");
    group.throughput(Throughput::Elements(LEN as u64));
    for (threads, pool) in pools() {
        group.bench_function(BenchmarkId::new("hefl_encrypt", &threads), |b| {
            pool.install(|| b.iter(|| key.encrypt(black_box(&plaintext)).expect("encrypt")))
        });
        group.bench_function(BenchmarkId::new("hefl_decrypt", &threads), |b| {
            pool.install(|| b.iter(|| key.decrypt(black_box(&ciphertext)).expect("decrypt")))
        });
    }

    // Baseline: tfhe's stock list encryption and decryption, one thread.
    let padded = PARAMS.padded_plaintext_list(&plaintext);
    let mut seeder = new_seeder();
    let mut generator =
        EncryptionRandomGenerator::<DefaultRandomGenerator>::new(seeder.seed(), seeder.as_mut());
    let mut list = PARAMS.zeroed_glwe_list(PARAMS.ciphertexts_for(LEN));
    let glwe_key = key.as_glwe_secret_key();
    group.bench_function(BenchmarkId::new("tfhe_encrypt", "1_threads"), |b| {
        b.iter(|| {
            encrypt_glwe_ciphertext_list(
                &glwe_key,
                &mut list,
                black_box(&padded),
                PARAMS.noise(),
                &mut generator,
            )
        })
    });
    let mut out = PlaintextList::new(0u64, padded.plaintext_count());
    group.bench_function(BenchmarkId::new("tfhe_decrypt", "1_threads"), |b| {
        b.iter(|| decrypt_glwe_ciphertext_list(&glwe_key, black_box(&list), &mut out))
    });
    group.finish();
}

fn bench_sum(c: &mut Criterion) {
    let (key, fp, plaintext) = setup();
    let widths = Widths::new(fp.params().total_bits, 100, DownloadForm::Seeds).expect("widths");
    let expected = Expected {
        key_id: key.key_id(),
        plaintext_len: LEN,
        widths,
    };
    let mut group = c.benchmark_group("compact_101770_values");
    group.bench_function("prepare", |b| b.iter(|| key.prepare(LEN).expect("prepare")));
    group.bench_function("seal_prepared", |b| {
        b.iter_batched(
            || key.prepare(LEN).expect("prepare"),
            |prepared| prepared.seal(black_box(&plaintext), &widths).expect("seal"),
            criterion::BatchSize::LargeInput,
        )
    });
    let uploads: Vec<CompactVector> = (0..3)
        .map(|_| key.prepare(LEN).and_then(|p| p.seal(&plaintext, &widths)))
        .collect::<Result<_, _>>()
        .expect("seal");
    let sum = CompactVector::sum(&uploads).expect("sum");
    group.bench_function("expand_3_seeds", |b| b.iter(|| black_box(&sum).expand()));
    let bytes = uploads[0].to_bytes();
    println!(
        "bytes per party: {} for {LEN} values ({} bits per value; {:.2} x the f32 vector)",
        bytes.len(),
        widths.body_bits(),
        bytes.len() as f64 / (LEN * 4) as f64
    );
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("to_bytes", |b| b.iter(|| black_box(&uploads[0]).to_bytes()));
    group.bench_function("parse_submission", |b| {
        b.iter(|| CompactVector::parse_submission(black_box(&bytes), &expected).expect("parse"))
    });
    let second = uploads[1].to_bytes();
    group.bench_function("add_submission", |b| {
        b.iter_batched(
            || uploads[0].clone(),
            |mut sum| {
                sum.add_submission(black_box(&second), &expected)
                    .expect("fold")
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();

    let one = key.encrypt(&plaintext).expect("encrypt");
    let mut group = c.benchmark_group("sum_101770_values");
    for parties in [2usize, 3, 10, 100] {
        // Sums do not depend on the ciphertexts' contents: clones of one fresh encryption
        // cost the same as distinct ones.
        let vectors = vec![one.clone(); parties];
        group.throughput(Throughput::Elements(parties as u64));
        for (threads, pool) in pools() {
            group.bench_function(BenchmarkId::new(format!("P={parties}"), &threads), |b| {
                pool.install(|| b.iter(|| EncryptedVector::sum(black_box(&vectors)).expect("sum")))
            });
        }
    }
    group.finish();
}

fn bench_quant(c: &mut Criterion) {
    let (_, fp, plaintext) = setup();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let values: Vec<f32> = (0..LEN).map(|_| rng.random_range(-0.1..0.1)).collect();
    let mut group = c.benchmark_group("quant_101770_values");
    group.bench_function("encode", |b| {
        b.iter(|| fp.encode(black_box(&values), &mut rng).expect("encode"))
    });
    group.bench_function("decode_mean", |b| {
        b.iter(|| {
            fp.decode_mean(black_box(&plaintext), 3, 3.0)
                .expect("decode")
        })
    });
    group.finish();
}

fn bench_sizes(c: &mut Criterion) {
    let key = KeyFile::generate()
        .and_then(|k| k.secret_key())
        .expect("key");
    let mut group = c.benchmark_group("he_vector_length");
    group.sample_size(10);
    for len in VECTOR_LENGTHS {
        let plaintext = vector_to_encrypt(len, 3, len as u64).expect("encode");
        let ciphertext = key.encrypt(&plaintext).expect("encrypt");
        group.throughput(Throughput::Elements(len as u64));
        for (threads, pool) in pools() {
            group.bench_function(BenchmarkId::new(format!("encrypt_{threads}"), len), |b| {
                pool.install(|| b.iter(|| key.encrypt(black_box(&plaintext)).expect("encrypt")))
            });
            group.bench_function(BenchmarkId::new(format!("decrypt_{threads}"), len), |b| {
                pool.install(|| b.iter(|| key.decrypt(black_box(&ciphertext)).expect("decrypt")))
            });
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_encrypt_decrypt,
    bench_sum,
    bench_quant,
    bench_sizes
);
criterion_main!(benches);
