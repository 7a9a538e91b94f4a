//! The Rust side of `bench/bench_envelope.py`: the same seal, keyless sum and open of one
//! update that the Python binding runs, through the same `bridge` module, timed here without
//! Python. Prints one JSON object of median milliseconds.
//!
//! `cargo run -p hefl-py --example bench_envelope -- [VALUES] [REPEATS]`

use std::sync::Arc;
use std::time::Instant;

use _hefl::bridge::{Bounds, KeylessSum, Sealer};
use hefl::he::Context;
use hefl::he::keys::KeyFile;

fn median_ms(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2] * 1e3
}

fn time<T>(repeats: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut samples = Vec::with_capacity(repeats);
    let mut last = None;
    for _ in 0..repeats {
        let start = Instant::now();
        last = Some(f());
        samples.push(start.elapsed().as_secs_f64());
    }
    (median_ms(samples), last.expect("at least one repeat"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let values: usize = args.next().map_or(Ok(101_770), |a| a.parse())?;
    let repeats: usize = args.next().map_or(Ok(21), |a| a.parse())?;
    let key = Arc::new(KeyFile::from_seed([7; 32]).secret_key()?);
    let key_id = key.key_id().to_string();
    let frac_bits = hefl::quant::DEFAULT_FRAC_BITS;
    // Ten parties, every update weighted by one example (a plain mean).
    let bounds = Bounds {
        length: values,
        max_parties: 10,
        max_examples: 1,
        frac_bits,
    };
    let sealer = Sealer::new(key, bounds)?;
    let update: Vec<f32> = (0..values)
        .map(|i| ((i % 200) as f32 - 100.0) * 1e-3)
        .collect();

    let run = [0; 32];
    let context = |party| Context {
        run,
        round: 0,
        party,
    };
    let (seal, sealed) = time(repeats, || sealer.seal(&update, 1, context(0)));
    let sealed = sealed?;
    // Each party's own encryption: a sum refuses the same one twice.
    let uploads = (0..10)
        .map(|party| sealer.seal(&update, 1, context(party)))
        .collect::<Result<Vec<_>, _>>()?;
    let sum_of = |parties: usize| {
        time(repeats, || {
            let mut sum = KeylessSum::new(&key_id, bounds, run, 0, false)?;
            for (party, upload) in (0..).zip(&uploads[..parties]) {
                sum.add(&upload.bytes, party)?;
            }
            let bytes = sum.to_bytes().ok_or("empty sum")?;
            Ok::<_, Box<dyn std::error::Error>>(bytes)
        })
    };
    let (sum3, aggregate) = sum_of(3);
    let (sum10, _) = sum_of(10);
    let aggregate = aggregate?;
    let (open, mean) = time(repeats, || {
        sealer.open(&aggregate, &[0, 1, 2], Context::sum(run, 0))
    });
    mean?;
    println!(
        "{{\"values\": {values}, \"repeats\": {repeats}, \"seal_ms\": {seal:.3}, \
         \"sum3_ms\": {sum3:.3}, \"sum10_ms\": {sum10:.3}, \"open_ms\": {open:.3}, \
         \"bytes\": {}}}",
        sealed.bytes.len()
    );
    Ok(())
}
