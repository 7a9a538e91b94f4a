//! The round protocol's server: every refusal, deadlines, absent parties, and that a
//! refused request leaves the round's other submissions intact.

use hefl::fl::Uplink as _;
use hefl::fl::{
    PartyId, PayloadError, PlainShape, PlainSum, Refusal, Round, RoundRules, Server, Summable,
};
use hefl::he::keys::KeyFile;
use hefl::he::keys::SecretKey;
use hefl::he::{CompactVector, Context, DownloadForm, Expected, Widths, WireError};
use std::time::{Duration, Instant};

const LEN: usize = 5;
/// The server tests' plain messages: [`LEN`] whole 64-bit words (small integers).
const SHAPE: PlainShape = PlainShape { len: LEN, bits: 64 };

/// Party `party`'s plain update of `words` for `round` (of the run with id zero, what
/// [`Server::new`] serves).
fn plain(party: u32, round: u64, words: [u64; LEN]) -> Vec<u8> {
    PlainSum::sealed(words.to_vec(), SHAPE.bits, stamp(party, round)).to_bytes()
}

/// What party `party`'s message for `round` names (run zero).
fn stamp(party: u32, round: u64) -> Context {
    Context {
        run: [0; 32],
        round,
        party,
    }
}

/// `bytes` restamped as party `party`'s message for `round`.
fn restamped<S: Summable>(mut bytes: Vec<u8>, party: u32, round: u64) -> Vec<u8> {
    S::restamp(&mut bytes, stamp(party, round)).expect("a well-formed message");
    bytes
}

fn config(parties: u32, min_parties: u32) -> (u32, RoundRules) {
    (
        parties,
        RoundRules {
            min_parties: Some(min_parties),
            round_timeout: Duration::from_secs(10),
            ..RoundRules::default()
        },
    )
}

fn server(
    (parties, rules): (u32, RoundRules),
    now: Instant,
) -> Result<Server<PlainSum>, hefl::fl::ConfigError> {
    Server::<PlainSum>::new(parties, rules, SHAPE, now)
}

fn sum_of(server: &Server<PlainSum>, round: u64, parties: u32) -> (Vec<PartyId>, Vec<u64>) {
    let published = server
        .aggregate(Round(round))
        .expect("kept")
        .expect("closed");
    let sum = PlainSum::parse_aggregate(&published.bytes, &SHAPE, parties).expect("valid sum");
    (published.parties, sum.words().to_vec())
}

#[test]
fn refusals_leave_the_round_intact() {
    let t0 = Instant::now();
    let mut server = server(config(3, 3), t0).unwrap();
    server
        .submit(PartyId(0), Round(0), &plain(0, 0, [1; LEN]), t0)
        .unwrap();

    let refusals = [
        server.submit(PartyId(7), Round(0), &plain(7, 0, [1; LEN]), t0),
        server.submit(PartyId(1), Round(1), &plain(1, 1, [1; LEN]), t0),
        server.submit(PartyId(0), Round(0), &plain(0, 0, [1; LEN]), t0),
        server.submit(PartyId(1), Round(0), &plain(1, 0, [1; LEN])[..30], t0),
        server.submit(
            PartyId(1),
            Round(0),
            &PlainSum::fresh(vec![1; 4], 64).to_bytes(),
            t0,
        ),
        server.submit(PartyId(1), Round(0), b"not an update at all", t0),
        // Party 0's update, copied and sent as party 1's.
        server.submit(PartyId(1), Round(0), &plain(0, 0, [1; LEN]), t0),
        // Party 1's update for another run.
        server.submit(
            PartyId(1),
            Round(0),
            &{
                let mut other_run = plain(1, 0, [1; LEN]);
                other_run[8 + 8 + 4 + 4] ^= 1; // the run id's first byte
                other_run
            },
            t0,
        ),
    ];
    let texts: Vec<String> = refusals
        .iter()
        .map(|r| r.as_ref().expect_err("refused").to_string())
        .collect();
    assert!(matches!(refusals[0], Err(Refusal::UnknownParty { .. })));
    assert!(texts[0].contains("parties 0 to 2"), "{}", texts[0]);
    assert!(matches!(refusals[1], Err(Refusal::WrongRound { .. })));
    assert_eq!(texts[1], "update for round 1, server is on round 0");
    assert!(matches!(refusals[2], Err(Refusal::Duplicate { .. })));
    for (i, text) in texts.iter().enumerate().skip(3).take(3) {
        assert!(
            matches!(refusals[i], Err(Refusal::Payload { .. })),
            "{text}"
        );
    }
    assert!(texts[4].contains("4 values, expected 5"), "{}", texts[4]);
    for (i, text) in texts.iter().enumerate().skip(6) {
        assert!(
            matches!(refusals[i], Err(Refusal::Context { .. })),
            "{text}"
        );
    }
    assert_eq!(
        texts[6],
        "a message for party 0, round 0, run 000000000000, expected party 1, round 0, run 000000000000"
    );
    assert!(
        texts[7].contains("run 010000000000, expected"),
        "{}",
        texts[7]
    );

    // None of that disturbed the round: the two honest submissions still close it.
    assert_eq!(server.submitted().collect::<Vec<_>>(), [PartyId(0)]);
    server
        .submit(PartyId(1), Round(0), &plain(1, 0, [2; LEN]), t0)
        .unwrap();
    server
        .submit(PartyId(2), Round(0), &plain(2, 0, [3; LEN]), t0)
        .unwrap();
    let (parties, sum) = sum_of(&server, 0, 3);
    assert_eq!(parties, [PartyId(0), PartyId(1), PartyId(2)]);
    assert_eq!(sum, [6; LEN]);
}

#[test]
fn deadline_closes_with_min_parties_and_absent_party_rejoins() {
    let t0 = Instant::now();
    let (parties, rules) = config(3, 2);
    let cfg = (
        parties,
        RoundRules {
            absent_after: 1,
            ..rules
        },
    );
    let mut server = server(cfg, t0).unwrap();
    server
        .submit(PartyId(0), Round(0), &plain(0, 0, [1; LEN]), t0)
        .unwrap();
    // Before the deadline, or with too few parties, nothing closes.
    assert!(!server.tick(t0 + Duration::from_secs(5)));
    assert!(!server.tick(t0 + Duration::from_secs(11)));
    assert!(server.aggregate(Round(0)).unwrap().is_none());
    let t1 = t0 + Duration::from_secs(12);
    server
        .submit(PartyId(1), Round(0), &plain(1, 0, [2; LEN]), t1)
        .unwrap();
    // Past the deadline with min_parties: closes without party 2.
    let (parties, sum) = sum_of(&server, 0, 2);
    assert_eq!(parties, [PartyId(0), PartyId(1)]);
    assert_eq!(sum, [3; LEN]);

    // Party 2's late update is refused as late, and it can still fetch round 0's sum.
    let late = server
        .submit(PartyId(2), Round(0), &plain(2, 0, [9; LEN]), t1)
        .unwrap_err();
    assert!(late.is_late(), "{late}");

    // Round 1 does not wait for the absent party 2...
    server
        .submit(PartyId(0), Round(1), &plain(0, 1, [1; LEN]), t1)
        .unwrap();
    server
        .submit(PartyId(1), Round(1), &plain(1, 1, [1; LEN]), t1)
        .unwrap();
    assert_eq!(sum_of(&server, 1, 2).0, [PartyId(0), PartyId(1)]);
    // ...but includes it when it submits in time.
    server
        .submit(PartyId(2), Round(2), &plain(2, 2, [5; LEN]), t1)
        .unwrap();
    server
        .submit(PartyId(0), Round(2), &plain(0, 2, [1; LEN]), t1)
        .unwrap();
    server
        .submit(PartyId(1), Round(2), &plain(1, 2, [1; LEN]), t1)
        .unwrap();
    let (parties, sum) = sum_of(&server, 2, 3);
    assert_eq!(parties, [PartyId(0), PartyId(1), PartyId(2)]);
    assert_eq!(sum, [7; LEN]);
}

#[test]
fn old_aggregates_are_dropped_after_keep_rounds() {
    let t0 = Instant::now();
    let (parties, rules) = config(1, 1);
    let cfg = (
        parties,
        RoundRules {
            keep_rounds: 2,
            snapshot_every: 2,
            ..rules
        },
    );
    let mut server = server(cfg, t0).unwrap();
    for r in 0..4 {
        server
            .submit(PartyId(0), Round(r), &plain(0, r, [r; LEN]), t0)
            .unwrap();
    }
    assert!(matches!(
        server.aggregate(Round(0)),
        Err(Refusal::NoSuchAggregate { .. })
    ));
    assert_eq!(sum_of(&server, 3, 1).1, [3; LEN]);
    assert!(server.aggregate(Round(9)).is_err());
}

#[test]
fn bad_configurations_are_refused() {
    let t0 = Instant::now();
    for cfg in [config(0, 0), config(3, 0), config(3, 4)] {
        assert!(server(cfg, t0).is_err(), "{cfg:?}");
    }
}

/// The federation of these tests: t = 24 bits (words `z << 40`), `parties`, `form`.
fn he_expect(key: &SecretKey, len: usize, parties: u32, form: DownloadForm) -> Expected {
    Expected {
        key_id: key.key_id(),
        plaintext_len: len,
        widths: Widths::new(24, parties, form).unwrap(),
    }
}

/// One upload of `words` under `key` at `expect`'s widths.
fn upload(key: &SecretKey, words: &[u64], expect: &Expected) -> CompactVector {
    key.prepare(words.len())
        .unwrap()
        .seal(words, &expect.widths)
        .unwrap()
}

#[test]
fn he_server_refuses_other_key_parameter_set_length_and_width() {
    let key = KeyFile::from_seed([3; 32]).secret_key().unwrap();
    let other = KeyFile::from_seed([4; 32]).secret_key().unwrap();
    let t0 = Instant::now();
    let expect = he_expect(&key, LEN, 2, DownloadForm::Seeds);
    let mut server = {
        let (p, r) = config(2, 2);
        Server::<CompactVector>::new(p, r, expect, t0).unwrap()
    };
    let good = restamped::<CompactVector>(upload(&key, &[1 << 40; LEN], &expect).to_bytes(), 0, 0);

    let wire = |r: Result<(), Refusal>| match r {
        Err(Refusal::Payload {
            source: PayloadError::Wire(e),
            ..
        }) => e,
        other => panic!("expected a wire refusal, got {other:?}"),
    };
    let other_key = upload(&other, &[1 << 40; LEN], &expect).to_bytes();
    assert!(matches!(
        wire(server.submit(PartyId(0), Round(0), &other_key, t0)),
        WireError::KeyId { .. }
    ));
    let other_len = upload(&key, &[1 << 40; LEN + 1], &expect).to_bytes();
    assert!(matches!(
        wire(server.submit(PartyId(0), Round(0), &other_len, t0)),
        WireError::Length { .. }
    ));
    let wider = he_expect(&key, LEN, 100, DownloadForm::Seeds);
    let other_width = upload(&key, &[1 << 40; LEN], &wider).to_bytes();
    assert!(matches!(
        wire(server.submit(PartyId(0), Round(0), &other_width, t0)),
        WireError::Width { .. }
    ));
    // The parameter-set name sits right after magic, version and its length prefix.
    let mut other_params = good.clone();
    other_params[18] ^= 1;
    assert!(matches!(
        wire(server.submit(PartyId(0), Round(0), &other_params, t0)),
        WireError::ParameterSet { .. }
    ));
    // A sum posing as a fresh update is refused too.
    let two = CompactVector::sum([
        &upload(&key, &[1 << 40; LEN], &expect),
        &upload(&key, &[1 << 40; LEN], &expect),
    ])
    .unwrap()
    .to_bytes();
    assert!(matches!(
        wire(server.submit(PartyId(0), Round(0), &two, t0)),
        WireError::Summands { .. }
    ));

    server.submit(PartyId(0), Round(0), &good, t0).unwrap();
    // The same upload again, from another party: refused as party 0's; and with its header
    // edited to name party 1, refused too: one encryption cannot count twice.
    assert!(matches!(
        server.submit(PartyId(1), Round(0), &good, t0),
        Err(Refusal::Context { .. })
    ));
    assert!(matches!(
        wire(server.submit(
            PartyId(1),
            Round(0),
            &restamped::<CompactVector>(good.clone(), 1, 0),
            t0
        )),
        WireError::RepeatedSeed
    ));
    let second =
        restamped::<CompactVector>(upload(&key, &[1 << 40; LEN], &expect).to_bytes(), 1, 0);
    server.submit(PartyId(1), Round(0), &second, t0).unwrap();
    let published = server.aggregate(Round(0)).unwrap().unwrap();
    let sum = CompactVector::parse_aggregate(&published.bytes, &expect, 2).unwrap();
    let words = key.decrypt(&sum.expand()).unwrap();
    assert!(words.iter().all(|w| w.wrapping_add(1 << 39) >> 40 == 2));
}

#[test]
fn folded_he_submissions_decrypt_to_the_sum_and_refused_ones_change_nothing() {
    let key = KeyFile::from_seed([5; 32]).secret_key().unwrap();
    let other = KeyFile::from_seed([6; 32]).secret_key().unwrap();
    let len = 3000; // two ciphertexts, the second partly filled
    let parties = 5u32;
    for form in [DownloadForm::Seeds, DownloadForm::Switched] {
        let t0 = Instant::now();
        let expect = he_expect(&key, len, parties, form);
        let mut server = {
            let (p, r) = config(parties, parties);
            Server::<CompactVector>::new(p, r, expect, t0).unwrap()
        };
        let words = |p: u64| -> Vec<u64> { (0..len as u64).map(|i| (i * 7 + p) << 40).collect() };
        let fresh = |p: u64| {
            restamped::<CompactVector>(upload(&key, &words(p), &expect).to_bytes(), p as u32, 0)
        };
        server.submit(PartyId(0), Round(0), &fresh(0), t0).unwrap();
        let one = fresh(1);
        let bad = [
            upload(&other, &words(1), &expect).to_bytes(),
            one[..one.len() - 8].to_vec(),
            upload(&key, &words(1)[..len - 1], &expect).to_bytes(),
            CompactVector::sum([
                &upload(&key, &words(1), &expect),
                &upload(&key, &words(1), &expect),
            ])
            .unwrap()
            .to_bytes(),
        ];
        for bytes in &bad {
            assert!(matches!(
                server.submit(PartyId(1), Round(0), bytes, t0),
                Err(Refusal::Payload {
                    source: PayloadError::Wire(_),
                    ..
                })
            ));
        }
        for p in 1..parties {
            server
                .submit(PartyId(p), Round(0), &fresh(u64::from(p)), t0)
                .unwrap();
        }
        let published = server.aggregate(Round(0)).unwrap().expect("closed");
        let sum = CompactVector::parse_aggregate(&published.bytes, &expect, parties).unwrap();
        assert_eq!(sum.summands(), parties);
        assert_eq!(sum.mask_bits().is_some(), form == DownloadForm::Switched);
        let decrypted: Vec<u64> = key
            .decrypt(&sum.expand())
            .unwrap()
            .iter()
            .map(|w| w.wrapping_add(1 << 39) >> 40)
            .collect();
        let expected: Vec<u64> = (0..len as u64)
            .map(|i| (0..u64::from(parties)).map(|p| i * 7 + p).sum::<u64>() & ((1 << 24) - 1))
            .collect();
        assert_eq!(decrypted, expected, "{form}");
    }
}

#[test]
fn folded_plain_submissions_sum_exactly() {
    let t0 = Instant::now();
    // Words of 31 bits (multiples of 2^33), packed.
    let shape = PlainShape {
        len: 10_000,
        bits: 31,
    };
    let mut server = {
        let (p, r) = config(3, 3);
        Server::<PlainSum>::new(p, r, shape, t0).unwrap()
    };
    let words = |p: u64| -> Vec<u64> {
        (0..10_000u64)
            .map(|i| i.wrapping_mul(p + 3) << 33)
            .collect()
    };
    for p in 0..3u64 {
        let bytes = PlainSum::sealed(words(p), shape.bits, stamp(p as u32, 0)).to_bytes();
        if p == 1 {
            // A sum posing as one update, and a truncated one, are refused mid-fold.
            let mut two = PlainSum::parse_submission(&bytes, &shape).unwrap();
            two.add_submission(&bytes, &shape).unwrap();
            assert!(
                server
                    .submit(PartyId(1), Round(0), &two.to_bytes(), t0)
                    .is_err()
            );
            assert!(
                server
                    .submit(PartyId(1), Round(0), &bytes[..bytes.len() - 1], t0)
                    .is_err()
            );
        }
        server
            .submit(PartyId(p as u32), Round(0), &bytes, t0)
            .unwrap();
    }
    let published = server.aggregate(Round(0)).unwrap().expect("closed");
    let sum = PlainSum::parse_aggregate(&published.bytes, &shape, 3).unwrap();
    let expected: Vec<u64> = (0..10_000)
        .map(|i| (0..3).fold(0u64, |acc, p| acc.wrapping_add(words(p)[i])))
        .collect();
    assert_eq!(sum.words(), expected);
}

/// An uplink to the hub for one party's thread, made from its [`hefl::fl::HubUplink`].
type Wrap = Box<dyn FnOnce(hefl::fl::HubUplink) -> Box<dyn hefl::fl::Uplink + Send> + Send>;

/// Runs parties 0, 1 and 2 of `plan` against `hub`, each on its own thread, party 2 through
/// `wrap` of its uplink; returns each party's metrics and the notes it was given.
fn run_three(
    plan: &hefl::fl::ValidPlan,
    hub: &std::sync::Arc<hefl::fl::Hub>,
    data: &hefl::data::Mnist,
    key: Option<std::sync::Arc<hefl::he::keys::SecretKey>>,
    wrap: impl Fn(hefl::fl::HubUplink) -> Box<dyn hefl::fl::Uplink + Send> + Copy + Send + 'static,
) -> Vec<(hefl::fl::RunMetrics, Vec<String>)> {
    let direct = || -> Wrap { Box::new(|inner| Box::new(inner)) };
    run_parties(plan, hub, data, key, [direct(), direct(), Box::new(wrap)])
}

/// Runs one party of `plan` per element of `wraps` against `hub`, each on its own thread
/// through its wrap of its uplink; returns each party's metrics and the notes it was given.
fn run_parties<const N: usize>(
    plan: &hefl::fl::ValidPlan,
    hub: &std::sync::Arc<hefl::fl::Hub>,
    data: &hefl::data::Mnist,
    key: Option<std::sync::Arc<hefl::he::keys::SecretKey>>,
    wraps: [Wrap; N],
) -> Vec<(hefl::fl::RunMetrics, Vec<String>)> {
    let runs: Vec<_> = (0u32..)
        .zip(wraps)
        .map(|(p, wrap)| {
            let (hub, plan, data, key) = (hub.clone(), plan.clone(), data.clone(), key.clone());
            std::thread::spawn(move || {
                let mut uplink = wrap(hefl::fl::HubUplink::new(hub, PartyId(p)));
                let mut notes = Notes::default();
                let metrics = hefl::fl::run_party(
                    &plan,
                    PartyId(p),
                    &data,
                    key,
                    uplink.as_mut(),
                    &mut notes,
                    &hefl::fl::PartyOptions::default(),
                )
                .unwrap_or_else(|e| panic!("party {p}: {e}"));
                (metrics, notes.0)
            })
        })
        .collect();
    runs.into_iter().map(|r| r.join().expect("party")).collect()
}

/// What a party's uplink does with its submissions (the rest goes straight to the hub).
type OnSubmit = Box<
    dyn FnMut(
            &mut hefl::fl::HubUplink,
            Round,
            &[u8],
        ) -> Result<hefl::fl::Submitted, hefl::fl::UplinkError>
        + Send,
>;

/// A party's uplink whose submissions go through `on_submit`.
struct Intercepted {
    inner: hefl::fl::HubUplink,
    on_submit: OnSubmit,
}

impl hefl::fl::Uplink for Intercepted {
    fn submit(
        &mut self,
        round: Round,
        bytes: &[u8],
    ) -> Result<hefl::fl::Submitted, hefl::fl::UplinkError> {
        (self.on_submit)(&mut self.inner, round, bytes)
    }
    fn fetch(
        &mut self,
        round: Round,
        keep_from: Option<Round>,
    ) -> Result<hefl::fl::Published, hefl::fl::UplinkError> {
        self.inner.fetch(round, keep_from)
    }
    fn skipped(&mut self, round: Round, reason: &str) -> Result<(), hefl::fl::UplinkError> {
        self.inner.skipped(round, reason)
    }
    fn rejoin(&mut self, round: Round) -> Result<Round, hefl::fl::UplinkError> {
        self.inner.rejoin(round)
    }
    fn put_snapshot(&mut self, round: Round, bytes: &[u8]) -> Result<(), hefl::fl::UplinkError> {
        self.inner.put_snapshot(round, bytes)
    }
    fn snapshot(&mut self) -> Result<hefl::fl::ModelSnapshot, hefl::fl::UplinkError> {
        self.inner.snapshot()
    }
    fn ready(&mut self) -> Result<(), hefl::fl::UplinkError> {
        self.inner.ready()
    }
}

/// Notes the parties' observers receive.
#[derive(Default)]
struct Notes(Vec<String>);

impl hefl::fl::Observer for Notes {
    fn note(&mut self, message: &str) {
        self.0.push(message.to_owned());
    }
}

/// One party sending garbage ciphertext costs the federation one round: every party skips
/// it alike (models stay bit-identical), the run goes on and learns, and the server logs
/// which parties' round was skipped.
#[test]
fn a_garbage_update_costs_one_round_not_the_run() {
    use hefl::fl::{Hub, HubEvent, Mode, Privacy, TrainConfig, plan_for};
    use std::sync::{Arc, Mutex};
    let data = crate::util::tiny_mnist();
    let key = Arc::new(KeyFile::from_seed([3; 32]).secret_key().expect("key"));
    let config = TrainConfig {
        mode: Mode::Federated,
        privacy: Privacy::He,
        epochs: 2,
        batch_size: 32,
        lr: 1e-2,
        layers: vec![hefl::data::IMAGE_PIXELS, 16, 10],
        ..TrainConfig::default()
    };
    let plan = plan_for(
        &config,
        data.train.len(),
        None,
        Some(key.key_id()),
        hefl::fl::RoundRules {
            round_timeout: Duration::from_secs(60),
            ..Default::default()
        },
    )
    .expect("plan");
    let log = Arc::new(Mutex::new(Vec::<HubEvent>::new()));
    let hub = {
        let log = Arc::clone(&log);
        Arc::new(
            Hub::new(plan.clone(), move |e: &HubEvent| {
                log.lock().expect("log").push(e.clone())
            })
            .expect("hub"),
        )
    };
    let bad_round = Round(3);
    let results = run_three(&plan, &hub, &data, Some(key), move |inner| {
        // In round `bad_round` party 2 sends a well-formed header over random words.
        Box::new(Intercepted {
            inner,
            on_submit: Box::new(move |inner, round, bytes| {
                let mut bytes = bytes.to_vec();
                if round == bad_round {
                    // The header (magic, version, bincode) and the seed are under 600 bytes;
                    // the bodies are values modulo 2^body_bits, so any bytes there pass the
                    // server's checks (but for the zero padding of the last block, left
                    // alone here).
                    let mut rng = <rand_chacha::ChaCha20Rng as rand::SeedableRng>::seed_from_u64(7);
                    let end = bytes.len() - 512;
                    rand::RngCore::fill_bytes(&mut rng, &mut bytes[600..end]);
                }
                inner.submit(round, &bytes)
            }),
        })
    });
    for (metrics, notes) in &results {
        assert_eq!(metrics.final_params, results[0].0.final_params);
        let overhead = metrics.overhead.as_ref().expect("federated");
        assert_eq!(overhead.skipped_rounds, [bad_round.0]);
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("skipped round 3 (parties 0, 1, 2)")),
            "{notes:?}"
        );
        assert!(
            metrics.final_accuracy().expect("epochs") > 0.9,
            "training went on"
        );
    }
    let skipped: Vec<_> = log
        .lock()
        .expect("log")
        .iter()
        .filter_map(|e| match e {
            HubEvent::Skipped {
                round,
                party,
                parties,
                ..
            } => Some((*round, *party, parties.len())),
            _ => None,
        })
        .collect();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert!(skipped.iter().all(|&(r, _, n)| r == bad_round && n == 3));
}

/// A copy of party 2's upload, overheard and sent by party 1 as its own with the header
/// edited to name party 1, gets in first: the server refuses party 2's own upload as a
/// repeat of that encryption, and party 2 seals the same update again in a fresh one, which
/// is taken. Nobody is locked out: every party ends with the same model and the run
/// completes (the copy counts in that round's sum as party 1's update, which a key holder
/// could have made anyway).
#[test]
fn an_owner_whose_upload_was_copied_first_seals_it_again() {
    use hefl::fl::{Hub, HubEvent, Mode, Privacy, TrainConfig, plan_for};
    use std::sync::{Arc, Condvar, Mutex};
    let data = crate::util::tiny_mnist();
    let key = Arc::new(KeyFile::from_seed([3; 32]).secret_key().expect("key"));
    let config = TrainConfig {
        mode: Mode::Federated,
        privacy: Privacy::He,
        epochs: 1,
        batch_size: 32,
        lr: 1e-2,
        layers: vec![hefl::data::IMAGE_PIXELS, 16, 10],
        ..TrainConfig::default()
    };
    let rules = hefl::fl::RoundRules {
        round_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let plan = plan_for(&config, data.train.len(), None, Some(key.key_id()), rules).expect("plan");
    let hub = Arc::new(Hub::new(plan.clone(), |_: &HubEvent| {}).expect("hub"));
    let attacked = Round(2);
    // Party 2's first upload of the attacked round, and whether party 1 has sent its copy.
    let overheard = Arc::new((Mutex::new((None::<Vec<u8>>, false)), Condvar::new()));
    let copier: Wrap = {
        let overheard = Arc::clone(&overheard);
        Box::new(move |inner| {
            Box::new(Intercepted {
                inner,
                on_submit: Box::new(move |inner, round, bytes| {
                    if round != attacked {
                        return inner.submit(round, bytes);
                    }
                    let (lock, changed) = &*overheard;
                    let mut state = changed
                        .wait_while(lock.lock().expect("lock"), |(b, _)| b.is_none())
                        .expect("lock");
                    let mut copy = state.0.clone().expect("overheard");
                    let named = CompactVector::context_of(&copy).expect("an upload");
                    assert_eq!(named.party, 2);
                    CompactVector::restamp(&mut copy, Context { party: 1, ..named })
                        .expect("restamped");
                    let sent = inner.submit(round, &copy);
                    state.1 = true;
                    changed.notify_all();
                    sent
                }),
            })
        })
    };
    let owner: Wrap = {
        let overheard = Arc::clone(&overheard);
        Box::new(move |inner| {
            Box::new(Intercepted {
                inner,
                on_submit: Box::new(move |inner, round, bytes| {
                    let (lock, changed) = &*overheard;
                    let mut state = lock.lock().expect("lock");
                    if round == attacked && state.0.is_none() {
                        state.0 = Some(bytes.to_vec());
                        changed.notify_all();
                        let state = changed.wait_while(state, |(_, sent)| !*sent).expect("lock");
                        drop(state);
                    } else {
                        drop(state);
                    }
                    inner.submit(round, bytes)
                }),
            })
        })
    };
    let direct: Wrap = Box::new(|inner| Box::new(inner));
    let results = run_parties(&plan, &hub, &data, Some(key), [direct, copier, owner]);
    let (_, notes) = &results[2];
    assert!(
        notes.iter().any(|n| n.starts_with(&format!(
            "{attacked}: a copy of this party's upload reached the server first"
        ))),
        "{notes:?}"
    );
    for (metrics, notes) in &results {
        assert!(metrics.final_params == results[0].0.final_params);
        let overhead = metrics.overhead.as_ref().expect("federated");
        assert!(overhead.skipped_rounds.is_empty(), "{notes:?}");
    }
    assert!(hub.is_finished());
}

/// A party that misses the last round's deadline is left out of that sum but still
/// fetches it (the server keeps it until every party not gone has): it ends with the
/// others' model and its metrics, and only then is the run over.
#[test]
fn a_party_late_in_the_last_round_still_ends_with_the_model() {
    use hefl::fl::{Hub, HubEvent, Mode, Privacy, TrainConfig, plan_for};
    use std::sync::Arc;
    let data = crate::util::tiny_mnist();
    let config = TrainConfig {
        mode: Mode::Federated,
        privacy: Privacy::Plain,
        epochs: 1,
        batch_size: 32,
        lr: 1e-2,
        layers: vec![hefl::data::IMAGE_PIXELS, 16, 10],
        ..TrainConfig::default()
    };
    let plan = plan_for(
        &config,
        data.train.len(),
        None,
        None,
        hefl::fl::RoundRules {
            round_timeout: Duration::from_millis(500),
            min_parties: Some(2),
            ..Default::default()
        },
    )
    .expect("plan");
    let last = Round(plan.total_rounds() - 1);
    let hub = Arc::new(Hub::new(plan.clone(), |_: &HubEvent| {}).expect("hub"));
    let results = run_three(&plan, &hub, &data, None, move |inner| {
        // Party 2 sends its update for the last round only after 1.5 s.
        Box::new(Intercepted {
            inner,
            on_submit: Box::new(move |inner, round, bytes| {
                if round == last {
                    std::thread::sleep(Duration::from_millis(1500));
                }
                inner.submit(round, bytes)
            }),
        })
    });
    let (late, notes) = &results[2];
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with(&format!("left out of {last}"))),
        "{notes:?}"
    );
    assert_eq!(late.epochs.len(), 1, "the late party reports its epoch");
    for (metrics, _) in &results {
        assert!(metrics.final_params == results[0].0.final_params);
    }
    assert!(hub.is_finished());
}

/// A party's `--state-dir` holds its checkpoint: resumed when it is of the same plan (a
/// finished run resumes at its end), refused when it is of another federation.
#[test]
fn a_checkpoint_of_another_federation_is_refused() {
    use hefl::fl::{
        Hub, HubEvent, HubUplink, Mode, PartyOptions, Privacy, TrainConfig, plan_for, run_party,
    };
    use std::sync::Arc;
    let data = crate::util::tiny_mnist();
    let dir = tempfile::tempdir().expect("temp dir");
    let options = PartyOptions {
        state_dir: Some(dir.path().to_path_buf()),
        ..PartyOptions::default()
    };
    let run = |lr: f32| {
        let config = TrainConfig {
            mode: Mode::Federated,
            privacy: Privacy::Plain,
            parties: 1,
            epochs: 1,
            lr,
            layers: vec![hefl::data::IMAGE_PIXELS, 8, 10],
            ..TrainConfig::default()
        };
        let plan = plan_for(
            &config,
            data.train.len(),
            None,
            None,
            hefl::fl::RoundRules::default(),
        )
        .expect("plan");
        let hub = Arc::new(Hub::new(plan.clone(), |_: &HubEvent| {}).expect("hub"));
        let mut uplink = HubUplink::new(hub, PartyId(0));
        run_party(
            &plan,
            PartyId(0),
            &data,
            None,
            &mut uplink,
            &mut (),
            &options,
        )
        .map_err(|e| e.to_string())
    };
    let first = run(1e-2).expect("a fresh run");
    assert!(dir.path().join("party-0.checkpoint").exists());
    // The same plan again: resumed at its end, the same model and metrics.
    let again = run(1e-2).expect("resumed");
    assert!(again.final_params == first.final_params);
    assert_eq!(again.epochs, first.epochs);
    let err = run(2e-2).expect_err("another plan");
    assert!(err.contains("another federation"), "{err}");
}

/// A damaged or edited state file is refused, naming the file, and nothing is trained or
/// served from it: a party's checkpoint with one byte flipped (plain: its SHA-256 checksum
/// fails; `he`: its MAC under the shared key), an `he` checkpoint edited and re-checksummed
/// by someone without the key, the server's state or one of its kept sums with a byte
/// flipped, and a server state that names a round beyond the plan under a valid checksum.
/// The same files, untouched, are resumed from (the negative control).
#[test]
fn damaged_or_edited_state_files_are_refused_naming_them() {
    use hefl::fl::{
        Hub, HubEvent, HubUplink, Mode, PartyOptions, Privacy, TrainConfig, plan_for, run_party,
    };
    use hefl::secret_file::{Integrity, with_integrity};
    use std::sync::Arc;
    // The header of a state file: magic, kind of check, checksum or MAC.
    const HEADER: usize = 8 + 1 + 32;
    let data = crate::util::tiny_mnist();
    let key = Arc::new(KeyFile::from_seed([9; 32]).secret_key().expect("key"));
    for privacy in [Privacy::Plain, Privacy::He] {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = TrainConfig {
            mode: Mode::Federated,
            privacy,
            parties: 1,
            epochs: 1,
            lr: 1e-2,
            layers: vec![hefl::data::IMAGE_PIXELS, 8, 10],
            ..TrainConfig::default()
        };
        let key = (privacy == Privacy::He).then(|| Arc::clone(&key));
        let key_id = key.as_ref().map(|k| k.key_id());
        let plan =
            plan_for(&config, data.train.len(), None, key_id, Default::default()).expect("plan");
        let options = PartyOptions {
            state_dir: Some(dir.path().to_path_buf()),
            ..PartyOptions::default()
        };
        let run = || {
            let hub = Arc::new(Hub::new(plan.clone(), |_: &HubEvent| {}).expect("hub"));
            let mut uplink = HubUplink::new(hub, PartyId(0));
            let (key, data) = (key.clone(), &data);
            run_party(&plan, PartyId(0), data, key, &mut uplink, &mut (), &options)
                .map_err(|e| e.to_string())
        };
        let first = run().expect("a fresh run");
        let path = dir.path().join("party-0.checkpoint");
        let original = std::fs::read(&path).expect("a checkpoint");
        let check = match privacy {
            Privacy::He => "MAC",
            _ => "SHA-256 checksum",
        };
        let refused = |bytes: &[u8], what: &str| {
            std::fs::write(&path, bytes).expect("write");
            let err = run().expect_err(what);
            assert!(
                err.contains(&format!(
                    "{} is damaged or was edited: its {check} does not match",
                    path.display()
                )),
                "{what}: {err}"
            );
        };
        let mut flipped = original.clone();
        flipped[original.len() / 2] ^= 1;
        refused(&flipped, "one byte flipped");
        if privacy == Privacy::He {
            // Edited, with a checksum recomputed by someone who has no key.
            let mut payload = original[HEADER..].to_vec();
            let at = payload.len() / 2;
            payload[at] ^= 1;
            refused(
                &with_integrity(&payload, Integrity::Checksum),
                "re-checksummed",
            );
        }
        std::fs::write(&path, &original).expect("restore");
        let again = run().expect("the untouched checkpoint resumes");
        assert!(again.final_params == first.final_params);
    }

    // The server's state directory.
    let dir = tempfile::tempdir().expect("temp dir");
    let config = TrainConfig {
        parties: 1,
        epochs: 1,
        layers: vec![hefl::data::IMAGE_PIXELS, 1, 10],
        ..TrainConfig::default()
    };
    let plan = plan_for(&config, 100, Some(3), None, Default::default()).expect("plan");
    let log = |_: &HubEvent| {};
    let (hub, _) = Hub::with_state_dir(plan.clone(), dir.path(), log).expect("fresh");
    let (run, shape) = (hub.plan().fingerprint(), hub.plan().expected_plain());
    let update = PlainSum::sealed(
        vec![1 << 50; shape.len],
        shape.bits,
        Context {
            run,
            round: 0,
            party: 0,
        },
    );
    hub.submit(PartyId(0), Round(0), &update.to_bytes())
        .expect("submit");
    drop(hub);
    let resume = || Hub::with_state_dir(plan.clone(), dir.path(), log).map(|(_, r)| r);
    assert_eq!(resume().expect("untouched"), Some(Round(1)));
    for file in ["server.state", "sums/0.sum"] {
        let path = dir.path().join(file);
        let original = std::fs::read(&path).expect("a state file");
        let mut flipped = original.clone();
        flipped[original.len() - 3] ^= 0x10;
        std::fs::write(&path, &flipped).expect("write");
        let err = resume().expect_err("a flipped byte").to_string();
        assert!(
            err.contains(&format!("{} is damaged or was edited", path.display())),
            "{file}: {err}"
        );
        std::fs::write(&path, &original).expect("restore");
    }
    // The open round set to 5,000 of a 3-round run, under a valid checksum: the state file
    // is bincode (format u32, the plan's fingerprint, the run id the hub drew as an option
    // of 32 hex digits, then the round).
    let path = dir.path().join("server.state");
    let mut payload = std::fs::read(&path).expect("state")[HEADER..].to_vec();
    let round_at = 4 + 32 + 1 + 8 + 32;
    assert_eq!(payload[round_at..round_at + 8], 1u64.to_le_bytes());
    payload[round_at..round_at + 8].copy_from_slice(&5000u64.to_le_bytes());
    std::fs::write(&path, with_integrity(&payload, Integrity::Checksum)).expect("write");
    let err = resume().expect_err("beyond the plan").to_string();
    assert!(err.contains("beyond the run's"), "{err}");
}

/// A server's `--state-dir`: written after every round, resumed from by a server of the
/// same plan (at the open round, with the kept sums), refused by a server of another.
#[test]
fn a_server_resumes_its_own_state_and_refuses_another_federations() {
    use hefl::fl::{Hub, HubEvent, TrainConfig, plan_for};
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = |lr: f32| {
        let config = TrainConfig {
            parties: 2,
            epochs: 1,
            lr,
            layers: vec![hefl::data::IMAGE_PIXELS, 1, 10],
            ..TrainConfig::default()
        };
        plan_for(&config, 100, Some(3), None, hefl::fl::RoundRules::default()).expect("plan")
    };
    let log = |_: &HubEvent| {};
    let (hub, resumed) = Hub::with_state_dir(plan(0.1), dir.path(), log).expect("fresh");
    let (run, shape) = (hub.plan().fingerprint(), hub.plan().expected_plain());
    let update = |party: u32, round: u64| {
        PlainSum::sealed(
            vec![1 << 50; shape.len],
            shape.bits,
            Context { run, round, party },
        )
        .to_bytes()
    };
    assert_eq!(resumed, None);
    for p in 0..2 {
        hub.submit(PartyId(p), Round(0), &update(p, 0))
            .expect("submit");
    }
    hub.submit(PartyId(0), Round(1), &update(0, 1))
        .expect("submit");
    drop(hub);

    let (hub, resumed) = Hub::with_state_dir(plan(0.1), dir.path(), log).expect("resumed");
    assert_eq!(resumed, Some(Round(1)));
    let sum = hub
        .fetch(PartyId(1), Round(0), Duration::ZERO, None)
        .expect("kept")
        .expect("published");
    assert_eq!(sum.parties, [PartyId(0), PartyId(1)]);
    // Round 1's submission was not saved: party 0 sends it again.
    hub.submit(PartyId(0), Round(1), &update(0, 1))
        .expect("resent");
    drop(hub);

    let err = Hub::with_state_dir(plan(0.2), dir.path(), log)
        .err()
        .expect("another plan");
    assert!(err.to_string().contains("another federation"), "{err}");
}

/// Round 0's clock waits for every party to be ready (its data loaded), not for it to
/// join: a party that joined and then took longer than a round to load its data is still in
/// round 0's sum. With a join timeout shorter than its loading, the clock starts without it
/// at that timeout (`min_parties` being ready), and round 0 closes without it: the control
/// that shows the wait is what keeps it in.
#[test]
fn round_zero_waits_for_every_party_to_be_ready() {
    use hefl::fl::{Hub, HubEvent, TrainConfig, plan_for};
    let config = TrainConfig {
        parties: 3,
        epochs: 1,
        layers: vec![hefl::data::IMAGE_PIXELS, 1, 10],
        ..TrainConfig::default()
    };
    let round_zero = |join_timeout: Duration| {
        let rules = RoundRules {
            round_timeout: Duration::from_millis(300),
            min_parties: Some(2),
            join_timeout,
            ..RoundRules::default()
        };
        let plan = plan_for(&config, 300, Some(3), None, rules).expect("plan");
        let hub = Hub::new(plan, |_: &HubEvent| {}).expect("hub");
        let (run, shape) = (hub.plan().fingerprint(), hub.plan().expected_plain());
        let update = |party| {
            let context = Context {
                run,
                round: 0,
                party,
            };
            PlainSum::sealed(vec![1 << 50; shape.len], shape.bits, context).to_bytes()
        };
        for p in 0..3 {
            hub.join(PartyId(p));
        }
        for p in 0..2 {
            hub.ready(PartyId(p));
            hub.submit(PartyId(p), Round(0), &update(p))
                .expect("submit");
        }
        // Party 2 loads its data for longer than two rounds' deadlines, while party 0 waits
        // for the sum (its long poll lets the hub's time pass).
        let _ = hub.fetch(PartyId(0), Round(0), Duration::from_millis(800), None);
        hub.ready(PartyId(2));
        let _ = hub.submit(PartyId(2), Round(0), &update(2));
        hub.fetch(PartyId(0), Round(0), Duration::from_secs(5), None)
            .expect("kept")
            .expect("published")
            .parties
    };
    assert_eq!(
        round_zero(Duration::from_secs(60)),
        [PartyId(0), PartyId(1), PartyId(2)]
    );
    assert_eq!(
        round_zero(Duration::from_millis(100)),
        [PartyId(0), PartyId(1)]
    );
}

/// Strict secure aggregation's rounds: a round publishes only with every member of its set;
/// at the deadline with one missing it is void (no sum) when enough members remain, and the
/// next set leaves the missing one out until it asks to rejoin; with too few it keeps
/// waiting; an update from outside the set is refused; a restored server voids the open round.
#[test]
fn strict_rounds_publish_whole_sets_void_short_ones_and_take_parties_back() {
    let now = Instant::now();
    let later = |s: u64| now + Duration::from_secs(s);
    let ids = |ids: &[u32]| ids.iter().map(|&p| PartyId(p)).collect::<Vec<_>>();
    let mut server = server(config(3, 2), now).expect("valid").with_party_sets();

    // Round 0 with everyone: published, the next set announced with it.
    for p in 0..3 {
        server
            .submit(PartyId(p), Round(0), &plain(p, 0, [1; LEN]), now)
            .expect("in");
    }
    let round0 = server
        .aggregate(Round(0))
        .expect("kept")
        .expect("published");
    assert!(!round0.void);
    assert_eq!(round0.parties, ids(&[0, 1, 2]));
    assert_eq!(round0.next_set, Some(ids(&[0, 1, 2])));

    // Round 1 without party 2: nothing before the deadline, void at it.
    for p in 0..2 {
        server
            .submit(PartyId(p), Round(1), &plain(p, 1, [1; LEN]), now)
            .expect("in");
    }
    assert!(!server.tick(later(5)), "closed before the deadline");
    assert!(server.aggregate(Round(1)).expect("open").is_none());
    assert!(server.tick(later(11)), "void at the deadline");
    let round1 = server.aggregate(Round(1)).expect("kept").expect("closed");
    assert!(round1.void && round1.bytes.is_empty(), "{round1:?}");
    assert_eq!(round1.parties, ids(&[0, 1]));
    assert_eq!(round1.next_set, Some(ids(&[0, 1])));

    // Party 2 is out of round 2: its update is refused, and it asks to rejoin.
    let refused = server
        .submit(PartyId(2), Round(2), &plain(2, 2, [1; LEN]), later(11))
        .expect_err("not in the set");
    assert!(matches!(refused, Refusal::NotInSet { .. }), "{refused}");
    assert_eq!(server.rejoin(PartyId(2)).expect("rejoin"), Round(3));
    assert_eq!(server.rejoin(PartyId(0)).expect("a member"), Round(2));
    for p in 0..2 {
        server
            .submit(PartyId(p), Round(2), &plain(p, 2, [2; LEN]), later(12))
            .expect("in");
    }
    let round2 = server
        .aggregate(Round(2))
        .expect("kept")
        .expect("published");
    assert!(!round2.void);
    assert_eq!(round2.parties, ids(&[0, 1]));
    assert_eq!(round2.next_set, Some(ids(&[0, 1, 2])), "party 2 is back");
    let (_, words) = sum_of(&server, 2, 2);
    assert_eq!(words, [4; LEN]);

    // Round 3: only party 0 by the deadline, below the minimum of 2: the round waits.
    server
        .submit(PartyId(0), Round(3), &plain(0, 3, [1; LEN]), later(12))
        .expect("in");
    assert!(
        !server.tick(later(40)),
        "a set below the minimum is never announced"
    );
    assert_eq!(server.current_round(), Round(3));
    // Once a second member comes, past the deadline, the round is void without the third.
    server
        .submit(PartyId(1), Round(3), &plain(1, 3, [1; LEN]), later(41))
        .expect("in");
    let round3 = server.aggregate(Round(3)).expect("kept").expect("closed");
    assert!(round3.void, "{round3:?}");
    assert_eq!(round3.next_set, Some(ids(&[0, 1])));

    // A restart voids the open round: its submissions were not kept.
    server
        .submit(PartyId(0), Round(4), &plain(0, 4, [1; LEN]), later(42))
        .expect("in");
    let state = server.state();
    let mut restored = self::server(config(3, 2), later(43))
        .expect("valid")
        .with_party_sets();
    restored
        .restore(state.clone(), 10, later(43))
        .expect("restores");
    assert_eq!(restored.current_round(), Round(5));
    let void = restored.aggregate(Round(4)).expect("kept").expect("closed");
    assert!(void.void && void.parties.is_empty(), "{void:?}");
    assert_eq!(void.next_set, Some(ids(&[0, 1])), "the same set again");

    // A state with party sets does not restore into a server without them, nor back.
    let mut unsets = self::server(config(3, 2), later(43)).expect("valid");
    let refused = unsets
        .restore(state, 10, later(43))
        .expect_err("sets refused");
    assert!(refused.to_string().contains("party set"), "{refused}");
    let plain_state = self::server(config(3, 2), now).expect("valid").state();
    let refused = self::server(config(3, 2), now)
        .expect("valid")
        .with_party_sets()
        .restore(plain_state, 10, now)
        .expect_err("none refused");
    assert!(refused.to_string().contains("party set"), "{refused}");
}
