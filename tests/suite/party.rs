//! The party state machine: what it refuses, model snapshots, and the transcript that the Rust
//! driver and the Python binding's party must both turn into the same model.
//!
//! The transcript (`tests/fixtures/party-transcript/`) is a plan, a test key and the sums a
//! server published in each round: one with this party left out, one with a party's garbage
//! in it, and a restart from a checkpoint in between. [`run_party`] fed these sums must end
//! with the model and the skipped rounds written there; `hefl-py/tests/test_party_transcript.py`
//! asserts the same of `hefl.Party` driven from Python. Rewrite the fixture (new sums, the
//! same rounds) with `HEFL_BLESS=1 cargo test --test suite party::transcript`.

use hefl::fl::{
    Encoding, Federation, ModelSnapshot, Party, PartyId, PartyOptions, PlainShape, PlainSum,
    Privacy, Published, PublishedError, Received, RefusalKind, Round, RoundRules, SnapshotError,
    Step, Strategy, Submitted, Summable, TrainConfig, Uplink, UplinkError, ValidPlan, Weighting,
    plan_for, run_party,
};
use hefl::he::keys::{KeyFile, SecretKey};
use hefl::he::{CompactVector, Context};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/party-transcript")
}

/// The transcript's plan: 3 parties of which 2 may make a round, `he`, FedSGD with Adam, 3
/// epochs of 3 rounds.
fn transcript_plan(key: &SecretKey) -> ValidPlan {
    let config = TrainConfig {
        privacy: Privacy::He,
        epochs: 3,
        batch_size: 32,
        lr: 1e-2,
        layers: vec![hefl::data::IMAGE_PIXELS, 4, 10],
        ..TrainConfig::default()
    };
    let rules = RoundRules {
        min_parties: Some(2),
        ..RoundRules::default()
    };
    plan_for(&config, 600, Some(3), Some(key.key_id()), rules).expect("plan")
}

/// What the transcript's server published: per round, the parties in the sum and its bytes.
type Sums = BTreeMap<Round, (Vec<PartyId>, Arc<Vec<u8>>)>;

/// The round whose sum holds a party's garbage, the round party 0 is left out of, and the
/// round after which party 0 restarts from its checkpoint.
const GARBAGE: Round = Round(2);
const LEFT_OUT: Round = Round(4);
const RESTART_AFTER: Round = Round(5);

/// Fresh sums for every round of `plan`: parties 0 to 2 seal random updates (party 0's left
/// out of [`LEFT_OUT`]); in [`GARBAGE`], party 1's upload carries random words under a
/// well-formed header.
fn make_sums(plan: &ValidPlan, key: &Arc<SecretKey>) -> Sums {
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let parties: Vec<Party> = (0..3)
        .map(|p| Party::for_plan(plan, PartyId(p), Some(Arc::clone(key))).expect("party"))
        .collect();
    let expect = plan.expected_he().expect("he");
    let len = plan.wire_slots() - 1;
    let mut sums = Sums::new();
    for r in 0..plan.total_rounds() {
        let round = Round(r);
        let members: Vec<PartyId> = (0..3)
            .map(PartyId)
            .filter(|p| !(round == LEFT_OUT && p.0 == 0))
            .collect();
        let mut sum: Option<CompactVector> = None;
        for party in &members {
            let update: Vec<f32> = (0..len).map(|_| rng.random_range(-0.05..0.05)).collect();
            let mut bytes = parties[party.0 as usize]
                .envelope()
                .seal(
                    &update,
                    32,
                    Context {
                        run: plan.fingerprint(),
                        round: r,
                        party: party.0,
                    },
                    None,
                    &mut rng,
                    &mut Default::default(),
                )
                .expect("seal")
                .bytes;
            if round == GARBAGE && party.0 == 1 {
                let end = bytes.len() - 512;
                rng.fill(&mut bytes[600..end]);
            }
            match sum.as_mut() {
                Some(sum) => Summable::add_submission(sum, &bytes, &expect).expect("add"),
                None => {
                    sum = Some(
                        <CompactVector as Summable>::parse_submission(&bytes, &expect)
                            .expect("parse"),
                    )
                }
            }
        }
        let mut sum = sum.expect("a sum");
        sum.set_context(Context::sum(plan.fingerprint(), r));
        let bytes = Summable::to_bytes(&sum);
        sums.insert(round, (members, Arc::new(bytes)));
    }
    sums
}

/// An uplink that serves recorded sums: party 0 is told it was late for [`LEFT_OUT`], and
/// the connection stops for good when it asks for `stop_at`.
struct Scripted<'a> {
    sums: &'a Sums,
    stop_at: Option<Round>,
    skipped: BTreeSet<u64>,
}

impl Uplink for Scripted<'_> {
    fn submit(&mut self, round: Round, _bytes: &[u8]) -> Result<Submitted, UplinkError> {
        Ok(if round == LEFT_OUT {
            Submitted::Late {
                open: Round(round.0 + 1),
            }
        } else {
            Submitted::Accepted
        })
    }
    fn fetch(&mut self, round: Round, _keep: Option<Round>) -> Result<Published, UplinkError> {
        if self.stop_at == Some(round) {
            return Err(UplinkError::Stopped);
        }
        let (parties, bytes) = self.sums.get(&round).ok_or(UplinkError::Stopped)?;
        Ok(Published::sum(round, parties.clone(), Arc::clone(bytes)))
    }
    fn skipped(&mut self, round: Round, _reason: &str) -> Result<(), UplinkError> {
        self.skipped.insert(round.0);
        Ok(())
    }
    fn rejoin(&mut self, round: Round) -> Result<Round, UplinkError> {
        Ok(round)
    }
    fn put_snapshot(&mut self, _round: Round, _bytes: &[u8]) -> Result<(), UplinkError> {
        Ok(())
    }
    fn ready(&mut self) -> Result<(), UplinkError> {
        Ok(())
    }
    fn snapshot(&mut self) -> Result<ModelSnapshot, UplinkError> {
        Err(UplinkError::Refused {
            kind: RefusalKind::NotFound,
            reason: "no snapshot in a transcript".into(),
        })
    }
}

/// Party 0 of `plan` run by [`run_party`] on `sums`: stopped when it asks for the sum after
/// [`RESTART_AFTER`] and restarted from its checkpoint. Returns its final model and the
/// rounds it skipped (and told the uplink about).
fn run_transcript(plan: &ValidPlan, key: &Arc<SecretKey>, sums: &Sums) -> (Vec<f32>, Vec<u64>) {
    let data = crate::util::tiny_mnist();
    let state = tempfile::tempdir().expect("state dir");
    let options = PartyOptions {
        state_dir: Some(state.path().to_path_buf()),
        checkpoint_every: RESTART_AFTER.0 + 1,
        ..PartyOptions::default()
    };
    let run = |stop_at: Option<Round>| {
        let mut uplink = Scripted {
            sums,
            stop_at,
            skipped: BTreeSet::new(),
        };
        let result = run_party(
            plan,
            PartyId(0),
            &data,
            Some(Arc::clone(key)),
            &mut uplink,
            &mut (),
            &options,
        );
        (result, uplink.skipped)
    };
    let (stopped, mut reported) = run(Some(Round(RESTART_AFTER.0 + 1)));
    assert!(stopped.is_err(), "the first run stops");
    let (resumed, later) = run(None);
    reported.extend(later);
    let metrics = resumed.expect("the resumed run ends");
    let skipped = metrics.overhead.expect("federated").skipped_rounds;
    assert_eq!(reported.into_iter().collect::<Vec<_>>(), skipped);
    (metrics.final_params, skipped)
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes the transcript of fresh sums and what [`run_party`] makes of them.
fn bless(dir: &Path) {
    let key_file = KeyFile::generate().expect("key");
    let key = Arc::new(key_file.secret_key().expect("secret key"));
    let plan = transcript_plan(&key);
    let sums = make_sums(&plan, &key);
    let (model, skipped) = run_transcript(&plan, &key, &sums);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("sums")).expect("fixture dir");
    let key_path = dir.join("key.json");
    key_file.write_new(&key_path, true).expect("key file");
    std::fs::write(
        dir.join("plan.json"),
        serde_json::to_string_pretty(&*plan).expect("plan json"),
    )
    .expect("plan");
    let events: Vec<serde_json::Value> = sums
        .iter()
        .map(|(round, (parties, bytes))| {
            let file = format!("sums/{}.bin", round.0);
            std::fs::write(dir.join(&file), bytes.as_slice()).expect("sum");
            serde_json::json!({
                "round": round.0,
                "parties": parties.iter().map(|p| p.0).collect::<Vec<_>>(),
                "sum": file,
                "left_out": *round == LEFT_OUT,
            })
        })
        .collect();
    std::fs::write(dir.join("model.f32"), f32_bytes(&model)).expect("model");
    let transcript = serde_json::json!({
        "party": 0,
        "events": events,
        "restart_after": RESTART_AFTER.0,
        "expected": {
            "skipped": skipped,
            "next_round": plan.total_rounds(),
            "model": "model.f32",
        },
    });
    std::fs::write(
        dir.join("transcript.json"),
        serde_json::to_string_pretty(&transcript).expect("json"),
    )
    .expect("transcript");
}

/// A key file copied out of the fixture with mode 0600 (git checks files out 0644).
fn fixture_key(dir: &Path) -> (tempfile::TempDir, Arc<SecretKey>) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().join("hefl.key");
    std::fs::copy(dir.join("key.json"), &path).expect("copy key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let key = KeyFile::load(&path)
        .and_then(|k| k.secret_key())
        .expect("fixture key");
    (tmp, Arc::new(key))
}

/// The Rust driver turns the transcript's sums into the model and skips written there (the
/// Python binding's party is held to the same file by pytest).
#[test]
fn transcript_gives_the_recorded_model_and_skips() {
    let dir = fixture_dir();
    if std::env::var_os("HEFL_BLESS").is_some() || !dir.join("transcript.json").exists() {
        bless(&dir);
    }
    let (_tmp, key) = fixture_key(&dir);
    let plan: hefl::fl::Plan =
        serde_json::from_str(&std::fs::read_to_string(dir.join("plan.json")).expect("plan"))
            .expect("plan json");
    let plan = plan.validate().expect("valid plan");
    assert_eq!(plan.config.strategy, Strategy::FedSgd);
    let transcript: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("transcript.json")).expect("transcript"),
    )
    .expect("json");
    let mut sums = Sums::new();
    for event in transcript["events"].as_array().expect("events") {
        let round = Round(event["round"].as_u64().expect("round"));
        let parties = event["parties"]
            .as_array()
            .expect("parties")
            .iter()
            .map(|p| PartyId(p.as_u64().expect("id") as u32))
            .collect();
        let bytes = std::fs::read(dir.join(event["sum"].as_str().expect("file"))).expect("sum");
        sums.insert(round, (parties, Arc::new(bytes)));
    }
    let (model, skipped) = run_transcript(&plan, &key, &sums);
    let expected_skips: Vec<u64> = transcript["expected"]["skipped"]
        .as_array()
        .expect("skips")
        .iter()
        .map(|r| r.as_u64().expect("round"))
        .collect();
    assert_eq!(skipped, expected_skips);
    assert_eq!(skipped, [GARBAGE.0], "the garbage round is skipped");
    let expected = std::fs::read(dir.join("model.f32")).expect("model");
    assert!(
        f32_bytes(&model) == expected,
        "run_party's model differs from the transcript's"
    );
    // The sums moved the model: not a transcript that tests nothing.
    let initial = hefl::model::Mlp::new(&plan.config.layers, plan.config.seed).expect("model");
    assert!(initial.params() != model.as_slice());
}

/// A small plain federation of `parties` for the machine's own checks.
fn plain_federation(party: u32, parties: u32, snapshot_every: Option<u64>) -> Federation {
    Federation {
        party: PartyId(party),
        parties,
        id_limit: parties,
        min_parties: 2,
        length: 3,
        encoding: Encoding::new(8.0, 16, parties, Weighting::Fraction { nominal: 1 })
            .expect("encoding"),
        privacy: Privacy::Plain,
        he: None,
        step: Step::Gradient {
            optimizer: hefl::model::OptimizerKind::Adam,
            lr: 0.1,
        },
        snapshot_every,
        run: PLAIN_RUN,
    }
}

/// The run id of [`plain_federation`].
const PLAIN_RUN: [u8; 32] = [7; 32];

/// The published sum of `round` (of [`plain_federation`]'s run) of parties 0, 1, ...
/// sending `updates`.
fn plain_sum(round: u64, updates: &[[f32; 3]], parties: u32) -> Vec<u8> {
    let encoding =
        Encoding::new(8.0, 16, parties, Weighting::Fraction { nominal: 1 }).expect("encoding");
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut sum: Option<PlainSum> = None;
    for (party, update) in (0..).zip(updates) {
        let words = encoding.encode(update, 1, &mut rng).expect("encode").words;
        let context = Context {
            run: PLAIN_RUN,
            round,
            party,
        };
        let shape = PlainShape {
            len: 4,
            bits: encoding.total_bits(),
        };
        let bytes = PlainSum::sealed(words, shape.bits, context).to_bytes();
        match sum.as_mut() {
            Some(sum) => sum.add_submission(&bytes, &shape).expect("add"),
            None => sum = Some(PlainSum::parse_submission(&bytes, &shape).expect("parse")),
        }
    }
    let mut sum = sum.expect("a sum");
    sum.set_context(Context::sum(PLAIN_RUN, round));
    sum.to_bytes()
}

fn plain_party(party: u32, snapshot_every: Option<u64>) -> Party {
    Party::new(
        plain_federation(party, 3, snapshot_every),
        vec![0.5, -0.5, 1.0],
        None,
        ChaCha20Rng::seed_from_u64(5),
    )
    .expect("party")
}

/// Sums come in order, each once, of a party list the rules allow; anything else is refused
/// and changes nothing.
#[test]
fn the_party_refuses_sums_out_of_order_and_party_lists_the_rules_forbid() {
    let mut party = plain_party(0, None);
    let ids = |ids: &[u32]| ids.iter().map(|&p| PartyId(p)).collect::<Vec<_>>();
    let sum = plain_sum(0, &[[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]], 3);
    let mut cost = Default::default();
    let refuse = |party: &mut Party, round: u64, parties: &[u32], bytes: &[u8]| {
        let before = party.model().to_vec();
        let err = party
            .receive(
                &Published::sum(Round(round), ids(parties).to_vec(), bytes.to_vec().into()),
                &mut Default::default(),
            )
            .expect_err("refused");
        assert!(
            party.model() == before.as_slice(),
            "a refusal moved the model"
        );
        assert_eq!(party.next_round(), Round(0));
        err
    };
    assert!(matches!(
        refuse(&mut party, 1, &[0, 1], &sum),
        PublishedError::Gap { .. }
    ));
    assert!(matches!(
        refuse(&mut party, 0, &[1, 0], &sum),
        PublishedError::Parties { .. }
    ));
    assert!(matches!(
        refuse(&mut party, 0, &[0, 0], &sum),
        PublishedError::Parties { .. }
    ));
    assert!(matches!(
        refuse(&mut party, 0, &[0, 3], &sum),
        PublishedError::Parties { .. }
    ));
    assert!(matches!(
        refuse(&mut party, 0, &[1], &plain_sum(0, &[[0.1, 0.2, 0.3]], 3)),
        PublishedError::TooFew { min: 2, .. }
    ));
    // Two parties named, three summed: the envelope refuses it.
    let three = plain_sum(0, &[[0.1; 3], [0.1; 3], [0.1; 3]], 3);
    assert!(matches!(
        refuse(&mut party, 0, &[0, 1], &three),
        PublishedError::Open { .. }
    ));
    // Round 1's sum served as round 0's (a replay): the envelope refuses it, naming both.
    let replayed = plain_sum(1, &[[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]], 3);
    let err = refuse(&mut party, 0, &[0, 1], &replayed);
    assert!(matches!(err, PublishedError::Open { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("the sum of round 1, run 070707070707"),
        "{err}"
    );
    // The valid sum is applied once; the same round again changes nothing.
    let got = party
        .receive(
            &Published::sum(Round(0), ids(&[0, 1]), sum.clone().into()),
            &mut cost,
        )
        .expect("applied");
    assert!(matches!(got, Received::Applied { .. }));
    let after = party.model().to_vec();
    let again = party
        .receive(
            &Published::sum(Round(0), ids(&[0, 1]), sum.clone().into()),
            &mut cost,
        )
        .expect("stale");
    assert!(matches!(again, Received::Stale { .. }));
    assert!(party.model() == after.as_slice());
}

/// A party resynced from another's snapshot holds its model and optimizer exactly: both go on
/// to the same bits; a snapshot of another run, another round, an older round, or under
/// another key is refused and changes nothing.
#[test]
fn a_snapshot_resyncs_a_party_bit_for_bit_and_others_are_refused() {
    let mut cost = Default::default();
    let ids = [PartyId(0), PartyId(1)];
    let mut ahead = plain_party(0, Some(2));
    for r in 0..4 {
        let sum = plain_sum(r, &[[0.1 * r as f32, -0.2, 0.3], [0.05, 0.4, -0.1]], 3);
        ahead
            .receive(
                &Published::sum(Round(r), ids.to_vec(), sum.to_vec().into()),
                &mut cost,
            )
            .expect("applied");
    }
    assert_eq!(ahead.snapshot_due(&ids), Some(Round(4)));
    assert_eq!(plain_party(1, Some(2)).snapshot_due(&ids), None);
    let (round, bytes) = ahead.snapshot().expect("snapshot");
    assert_eq!(round, Round(4));

    let mut behind = plain_party(1, Some(2));
    behind.resync(round, &bytes).expect("resynced");
    assert_eq!(behind.next_round(), Round(4));
    let bits = |p: &Party| p.model().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&behind), bits(&ahead));
    // The optimizer came along too: the next step is the same.
    let sum = plain_sum(4, &[[0.3, 0.3, 0.3], [0.1, 0.1, 0.1]], 3);
    ahead
        .receive(
            &Published::sum(Round(4), ids.to_vec(), sum.to_vec().into()),
            &mut cost,
        )
        .expect("applied");
    behind
        .receive(
            &Published::sum(Round(4), ids.to_vec(), sum.to_vec().into()),
            &mut cost,
        )
        .expect("applied");
    assert_eq!(bits(&behind), bits(&ahead));

    let mut fresh = plain_party(1, Some(2));
    let before = bits(&fresh);
    for (announced, bytes, what) in [
        (Round(5), bytes.clone(), "another round"),
        (Round(4), bytes[..bytes.len() - 8].to_vec(), "truncated"),
    ] {
        let err = fresh.resync(announced, &bytes).expect_err(what);
        assert!(
            matches!(err, SnapshotError::Round { .. } | SnapshotError::Open(_)),
            "{what}: {err}"
        );
    }
    let other_run = Party::new(
        Federation {
            run: [8; 32],
            ..plain_federation(0, 3, Some(2))
        },
        vec![0.5, -0.5, 1.0],
        None,
        ChaCha20Rng::seed_from_u64(5),
    )
    .expect("party");
    let (round0, other) = other_run.snapshot().expect("snapshot");
    assert!(matches!(
        fresh.resync(round0, &other),
        Err(SnapshotError::Run)
    ));
    assert!(matches!(
        ahead.resync(round, &bytes),
        Err(SnapshotError::Behind { .. })
    ));
    assert_eq!(bits(&fresh), before, "a refused snapshot changed the model");
    assert_eq!(fresh.next_round(), Round(0));
    // Without snapshots in the plan there are none to make or take.
    assert!(matches!(
        plain_party(0, None).snapshot(),
        Err(SnapshotError::Disabled)
    ));
}

/// In `he` a snapshot is encrypted under the shared key: a party with another key cannot
/// resync from it (it decrypts to noise whose header does not check).
#[test]
fn an_he_snapshot_opens_only_under_the_shared_key() {
    let key = Arc::new(KeyFile::from_seed([5; 32]).secret_key().expect("key"));
    let other = Arc::new(KeyFile::from_seed([6; 32]).secret_key().expect("key"));
    let plan = transcript_plan(&key);
    let party = Party::for_plan(&plan, PartyId(0), Some(Arc::clone(&key))).expect("party");
    let (round, bytes) = party.snapshot().expect("snapshot");
    let mut same = Party::for_plan(&plan, PartyId(1), Some(Arc::clone(&key))).expect("party");
    same.resync(round, &bytes).expect("the shared key opens it");
    assert!(same.model() == party.model());
    // The bytes are not the model in the clear.
    let model_bytes = f32_bytes(party.model());
    assert!(!bytes.windows(64).any(|w| model_bytes.starts_with(w)));
    // A party under another key: its plan names the other key id; the ciphertext's key id
    // is refused before decryption.
    let other_plan = transcript_plan(&other);
    let mut stranger = Party::for_plan(&other_plan, PartyId(1), Some(other)).expect("party");
    assert!(stranger.resync(round, &bytes).is_err());
}
