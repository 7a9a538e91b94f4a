//! Server-side latency of one round's aggregation for 2 to 1000 parties of 101,770-parameter
//! updates, in `he` (both download forms) and `plain` modes: a fresh server, every party's
//! bytes parsed, validated (key id, parameter set, length, widths, seeds) and folded into the
//! running sum, the round closed and its sum serialized. The server holds the running sum,
//! never P updates.
//!
//! ```text
//! cargo bench --bench aggregation
//! ```

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hefl::fl::{PlainSum, Summable};
use hefl::he::keys::KeyFile;
use hefl::he::{CompactVector, DownloadForm};
use hefl::perf::workloads::{PARTY_COUNTS, Submissions};
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn sweep<S: Summable>(c: &mut Criterion, name: &str, submissions: &Submissions<S>) {
    let mut group = c.benchmark_group(format!("aggregation_{name}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for parties in PARTY_COUNTS {
        group.throughput(Throughput::Elements(u64::from(parties)));
        group.bench_function(BenchmarkId::from_parameter(parties), |b| {
            b.iter(|| submissions.round(parties).expect("round"))
        });
    }
    group.finish();
}

fn aggregation(c: &mut Criterion) {
    let key = KeyFile::generate()
        .and_then(|k| k.secret_key())
        .expect("key");
    let largest = PARTY_COUNTS[PARTY_COUNTS.len() - 1];
    for (name, form) in [
        ("he_seeds", DownloadForm::Seeds),
        ("he_switched", DownloadForm::Switched),
    ] {
        let submissions =
            Submissions::<CompactVector>::he(&key, largest, form).expect("he submissions");
        sweep(c, name, &submissions);
    }
    sweep(
        c,
        "plain",
        &Submissions::<PlainSum>::plain(largest).expect("plain submissions"),
    );
}

criterion_group!(benches, aggregation);
criterion_main!(benches);
