//! The property checks behind hefl's fuzz targets, one function per target.
//!
//! Each function feeds untrusted bytes to one of hefl's parsers through its public API and
//! asserts what must hold whatever the bytes are: the parser returns a `Result` (never
//! panics, never overflows), and what it accepts is consistent (re-encoding gives the same
//! bytes, sizes are within the advertised bounds, a refused update leaves a sum unchanged).
//! A violated property panics, which the fuzzer reports as a crash.
//!
//! The fuzz targets in `fuzz_targets/` call these functions, and so does the replay test in
//! the main test suite (`tests/suite/fuzz_corpus.rs` includes this file), which runs every
//! committed seed and regression input on every `cargo test`. Each function returns whether
//! the input was accepted, so the replay test can also check that the seeds are valid.

use hefl::fl::{Hub, HubEvent, PartyId, PlainSum, Plan, Round, Summable, TrainConfig, ValidPlan};
use hefl::he::keys::{KeyFile, KeyId};
use hefl::he::{CompactVector, Context, Expected, MAX_PLAINTEXT_LEN};
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

/// The fuzz targets, in the order `tools/fuzz.sh` runs them.
pub const TARGETS: [&str; 7] = ["wire", "plain", "plan", "hub", "keyfile", "tokens", "idx"];

/// Seed of the key every `he` fuzz plan and seed message is made under.
pub const KEY_SEED: [u8; 32] = [7; 32];

/// Parties of the fuzz plans (an aggregate sums at most this many submissions).
pub const PARTIES: usize = 3;

/// The small plan every wire target checks messages against: a 784-1-10 model (806 values
/// on the wire, one GLWE ciphertext), `he` privacy when `he`, [`PARTIES`] parties.
pub fn plan(he: bool) -> &'static ValidPlan {
    static PLANS: OnceLock<[ValidPlan; 2]> = OnceLock::new();
    let plans = PLANS.get_or_init(|| {
        let make = |he: bool| {
            let config = TrainConfig {
                parties: PARTIES,
                epochs: 1,
                layers: vec![784, 1, 10],
                privacy: if he {
                    hefl::fl::Privacy::He
                } else {
                    hefl::fl::Privacy::Plain
                },
                ..TrainConfig::default()
            };
            let key_id = he.then(|| KeyFile::from_seed(KEY_SEED).key_id());
            hefl::fl::plan_for(&config, 100, Some(2), key_id, rules())
                .expect("the fuzz plan is valid")
        };
        [make(false), make(true)]
    });
    &plans[usize::from(he)]
}

/// The fuzz plans' round rules: an hour per round (fuzzing never waits for one).
fn rules() -> hefl::fl::RoundRules {
    hefl::fl::RoundRules {
        round_timeout: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(7200),
        ..hefl::fl::RoundRules::default()
    }
}

/// What the `he` plan's receivers expect: its key id, length and widths.
fn expected() -> Expected {
    plan(true).expected_he().expect("an he plan has a key id")
}

/// Valid uploads of zeros under the fuzz key, one per party: a running sum to add untrusted
/// messages into, and the other parties' updates in the hub target.
fn he_uploads() -> &'static [CompactVector] {
    static UPLOADS: OnceLock<Vec<CompactVector>> = OnceLock::new();
    UPLOADS.get_or_init(|| {
        let key = KeyFile::from_seed(KEY_SEED)
            .secret_key()
            .expect("derive the fuzz key");
        let expect = expected();
        (0..PARTIES)
            .map(|_| {
                key.prepare(expect.plaintext_len)
                    .and_then(|p| p.seal(&vec![0; expect.plaintext_len], &expect.widths))
                    .expect("seal zeros")
            })
            .collect()
    })
}

/// What party `party`'s round-0 update names in the `he` (or plain) plan's run.
pub fn upload_context(he: bool, party: u32) -> Context {
    Context {
        run: plan(he).fingerprint(),
        round: 0,
        party,
    }
}

/// Rewrites the context `bytes` (a well-formed message of the `he` or plain format) name.
pub fn restamp(he: bool, bytes: &mut [u8], context: Context) {
    let stamped = match he {
        true => <CompactVector as Summable>::restamp(bytes, context),
        false => PlainSum::restamp(bytes, context),
    };
    stamped.expect("a well-formed message");
}

/// The ciphertext wire format: [`CompactVector::parse_submission`],
/// [`CompactVector::add_submission`] and [`CompactVector::parse_aggregate`] against the `he`
/// plan's expectations.
///
/// Accepted messages re-encode to the same bytes and fit [`CompactVector::max_wire_len`] and
/// the plan's message bound; a submission adds into a sum, a refused one leaves the sum
/// unchanged, and both submission entry points agree on what they accept.
pub fn wire(data: &[u8]) -> bool {
    let expected = expected();
    let start = &he_uploads()[0];
    let parsed = CompactVector::parse_submission(data, &expected);
    let mut sum = start.clone();
    let added = sum.add_submission(data, &expected);
    let aggregate = CompactVector::parse_aggregate(data, &expected, PARTIES as u32);
    for accepted in [parsed.as_ref(), aggregate.as_ref()].into_iter().flatten() {
        assert_eq!(accepted.to_bytes(), data, "re-encoding changed the message");
        assert_eq!(accepted.wire_len(), data.len());
        assert!(data.len() <= CompactVector::max_wire_len(&expected));
        assert!(data.len() <= plan(true).max_message_len());
        assert_eq!(accepted.key_id(), expected.key_id);
        assert_eq!(accepted.plaintext_len(), expected.plaintext_len);
        assert!((1..=PARTIES as u32).contains(&accepted.summands()));
    }
    let Ok(ct) = parsed else {
        assert!(
            added.is_err(),
            "add_submission accepted what parse_submission refused"
        );
        assert_eq!(&sum, start, "a refused message changed the sum");
        return aggregate.is_ok();
    };
    if added.is_err() {
        // Only a message carrying the running sum's own seed may parse and not add.
        assert_eq!(
            ct.seeds(),
            start.seeds(),
            "parse and add disagree: {added:?}"
        );
        assert_eq!(&sum, start, "a refused message changed the sum");
        return true;
    }
    assert_eq!(ct.summands(), 1);
    assert_eq!(sum.summands(), 2);
    let mut by_value = start.clone();
    by_value
        .add_assign(&ct)
        .expect("add a ciphertext that parsed");
    assert_eq!(
        sum, by_value,
        "adding from bytes and adding the parsed value differ"
    );
    true
}

/// The plain wire format: [`PlainSum`] as a submission, as an aggregate and added into a
/// sum, for the plain plan's slot count and width.
pub fn plain(data: &[u8]) -> bool {
    let shape = plan(false).expected_plain();
    let submission = PlainSum::parse_submission(data, &shape);
    let aggregate = PlainSum::parse_aggregate(data, &shape, PARTIES as u32);
    let one = 1u64 << (64 - shape.bits);
    let start = PlainSum::fresh(vec![one; shape.len], shape.bits);
    let mut sum = start.clone();
    let added = sum.add_submission(data, &shape);
    assert_eq!(
        submission.is_ok(),
        added.is_ok(),
        "{submission:?} / {added:?}"
    );
    if submission.is_ok() {
        assert!(aggregate.is_ok(), "a valid submission is a valid aggregate");
    }
    if added.is_err() {
        assert_eq!(sum, start, "a refused update changed the sum");
    }
    let Ok(parsed) = aggregate else {
        return false;
    };
    assert_eq!(parsed.to_bytes(), data, "re-encoding changed the message");
    assert!(data.len() <= PlainSum::max_wire_len(&shape));
    assert!(data.len() <= plan(false).max_message_len());
    assert_eq!(parsed.words().len(), shape.len);
    assert_eq!(parsed.bits(), shape.bits);
    if let Ok(submitted) = submission {
        let expected: Vec<u64> = submitted
            .words()
            .iter()
            .map(|w| w.wrapping_add(one))
            .collect();
        assert_eq!(sum.words(), expected.as_slice());
    }
    true
}

/// The plan a client receives: JSON into [`Plan`], [`Plan::validate`], then every value a
/// client derives from it. A valid plan's derived sizes are within hefl's bounds, survive a
/// JSON round trip, and a hub can serve it.
pub fn plan_json(data: &[u8]) -> bool {
    let Ok(plan) = serde_json::from_slice::<Plan>(data) else {
        return false;
    };
    let total = plan.total_rounds();
    let Ok(valid) = plan.validate() else {
        return false;
    };
    assert!(
        (1..=hefl::fl::MAX_ROUNDS).contains(&total),
        "{total} rounds"
    );
    let slots = valid.wire_slots();
    assert!((2..=MAX_PLAINTEXT_LEN).contains(&slots), "{slots} slots");
    let expected = valid.expected_he();
    assert_eq!(
        expected.is_some(),
        valid.config().privacy == hefl::fl::Privacy::He
    );
    if let Some(e) = expected {
        assert_eq!(e.plaintext_len, slots);
        assert_eq!(e.widths.parties() as usize, valid.config().parties);
    }
    let max_len = valid.max_message_len();
    // At least the packed values: `he` bodies or plain words of the encoding's t bits.
    let bits = expected.map_or(valid.expected_plain().bits, |e| e.widths.body_bits());
    assert!(
        max_len >= slots * bits as usize / 8 && max_len < usize::MAX,
        "bound {max_len} for {slots} values of {bits} bits"
    );
    let json = serde_json::to_vec(&plan).expect("a plan serializes");
    let back: Plan = serde_json::from_slice(&json).expect("a serialized plan parses");
    let again = back
        .validate()
        .expect("a valid plan stays valid through JSON");
    assert_eq!(again.total_rounds(), total);
    assert_eq!(again.wire_slots(), slots);
    assert_eq!(again.expected_he(), expected);
    assert_eq!(again.max_message_len(), max_len);
    Hub::new(valid, |_: &HubEvent| {}).expect("a hub serves any valid plan");
    true
}

/// The server path an authenticated party reaches: [`Hub::submit`] with arbitrary bytes.
///
/// The first byte picks the plan (bit 0: `he`) and the submitting party (bits 1-2; parties
/// 3 is unknown), the second the round (0 is the open one); the rest is the update. An
/// accepted update fits [`Hub::max_submission_len`]; submitted by every party it closes the
/// round, and the published sum parses as an aggregate of the plan.
pub fn hub(data: &[u8]) -> bool {
    let [mode, round, message @ ..] = data else {
        return false;
    };
    let (mode, round) = (*mode, *round);
    let he = mode & 1 == 1;
    let party = u32::from((mode >> 1) & 3);
    let plan = plan(he).clone();
    let max_len = plan.max_message_len();
    let hub = Hub::new(plan, |_: &HubEvent| {}).expect("the fuzz plan is servable");
    assert_eq!(hub.max_submission_len(), max_len);
    if hub
        .submit(PartyId(party), Round(u64::from(round)), message)
        .is_err()
    {
        return false;
    }
    assert!(message.len() <= max_len, "accepted {} bytes", message.len());
    assert!((party as usize) < PARTIES && round == 0);
    for other in (0..PARTIES as u32).filter(|&p| p != party) {
        // Plain: the same update is valid from every party. He: each party sends its own
        // encryption (a sum refuses a seed twice).
        let mut update = match he {
            true => he_uploads()[other as usize].to_bytes(),
            false => message.to_vec(),
        };
        restamp(he, &mut update, upload_context(he, other));
        hub.submit(PartyId(other), Round(0), &update)
            .expect("every party's update is valid");
    }
    let published = hub
        .fetch(PartyId(0), Round(0), Duration::ZERO, None)
        .expect("round 0 is published")
        .expect("every party submitted");
    assert_eq!(published.parties.len(), PARTIES);
    let bytes = published.bytes.as_slice();
    assert!(bytes.len() <= max_len);
    let parties = PARTIES as u32;
    if he {
        let expect = hub.plan().expected_he().expect("he plan");
        let sum = <CompactVector as Summable>::parse_aggregate(bytes, &expect, parties)
            .expect("the published sum parses");
        assert_eq!(sum.summands(), parties);
    } else {
        let shape = hub.plan().expected_plain();
        PlainSum::parse_aggregate(bytes, &shape, parties).expect("the published sum parses");
    }
    true
}

/// The key file: [`KeyFile::parse`] (what [`KeyFile::load`] runs on a file's bytes), and
/// [`KeyId`]'s text form, which plans and key files carry.
pub fn keyfile(data: &[u8]) -> bool {
    let text = std::str::from_utf8(data).unwrap_or_default();
    if let Ok(id) = text.parse::<KeyId>() {
        assert_eq!(id.to_string(), text.to_ascii_lowercase());
    }
    let Ok(key) = KeyFile::parse(data, Path::new("fuzz.key")) else {
        return false;
    };
    assert!(
        data.len() <= 4096,
        "accepted a {}-byte key file",
        data.len()
    );
    let again = KeyFile::parse(data, Path::new("fuzz.key")).expect("parsing is deterministic");
    assert_eq!(again.key_id(), key.key_id());
    true
}

/// The tokens file: [`hefl::transport::parse_tokens`] (what the server and the parties run on
/// the file's bytes). Accepted tokens check against themselves and survive a JSON round trip.
pub fn tokens(data: &[u8]) -> bool {
    let path = Path::new("tokens.json");
    let Ok(tokens) = hefl::transport::parse_tokens(data, path) else {
        return false;
    };
    assert!(
        tokens.iter().all(|t| !t.is_empty()),
        "accepted an empty token"
    );
    let issued = hefl::transport::Tokens::from_issued(&tokens);
    for (party, token) in tokens.iter().enumerate().take(64) {
        let party = u32::try_from(party).expect("at most 64");
        assert!(issued.check(party, token));
    }
    let json = serde_json::to_vec(&tokens).expect("strings serialize");
    let back = hefl::transport::parse_tokens(&json, path).expect("written tokens parse");
    assert_eq!(back, tokens);
    true
}

/// The IDX reader: [`hefl::data::parse_idx_images`] and [`hefl::data::parse_idx_labels`]
/// (what the MNIST loader runs on a file's bytes, gzip or raw). Accepted images are 28x28
/// pixels in [0, 1], accepted labels are classes, and gzip-compressing an accepted raw file
/// gives the same result.
pub fn idx(data: &[u8]) -> bool {
    let images = hefl::data::parse_idx_images(data, "fuzz-images");
    let labels = hefl::data::parse_idx_labels(data, "fuzz-labels");
    let gzip = data.starts_with(&[0x1f, 0x8b]);
    if let Ok(images) = &images {
        assert_eq!(images.ncols(), hefl::data::IMAGE_PIXELS);
        assert!(images.iter().all(|p| (0.0..=1.0).contains(p)));
        if !gzip {
            let n = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
            assert_eq!(images.nrows(), n as usize);
            let again = hefl::data::parse_idx_images(&gz(data), "fuzz-images.gz");
            assert_eq!(again.ok().as_ref(), Some(images), "gzip changed the images");
        }
    }
    if let Ok(labels) = &labels {
        assert!(
            labels
                .iter()
                .all(|&l| usize::from(l) < hefl::data::NUM_CLASSES)
        );
        if !gzip {
            assert_eq!(labels.as_slice(), &data[8..]);
            let again = hefl::data::parse_idx_labels(&gz(data), "fuzz-labels.gz");
            assert_eq!(again.ok().as_ref(), Some(labels), "gzip changed the labels");
        }
    }
    images.is_ok() || labels.is_ok()
}

/// `data` gzip-compressed.
pub fn gz(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("write to a Vec");
    encoder.finish().expect("finish writing to a Vec")
}

/// Runs `target`'s check on `data`; `None` for an unknown target name.
pub fn check(target: &str, data: &[u8]) -> Option<bool> {
    Some(match target {
        "wire" => wire(data),
        "plain" => plain(data),
        "plan" => plan_json(data),
        "hub" => hub(data),
        "keyfile" => keyfile(data),
        "tokens" => tokens(data),
        "idx" => idx(data),
        _ => return None,
    })
}
