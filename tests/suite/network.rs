//! The network transport on loopback: real `hefl serve` and `hefl join` processes, a client
//! killed mid-run, and every refusal of the HTTP server. Every test is bounded in time and
//! stops by itself.

use hefl::data::IMAGE_PIXELS;
use hefl::fl::{
    Hub, HubEvent, Mode, PartyId, Plan, Privacy, Round, Submitted, TrainConfig, Uplink, plan_for,
    run,
};
use hefl::he::keys::KeyFile;
use hefl::he::{EncryptedVector, Expected};
use hefl::quant::FixedPoint;
use hefl::transport::Tokens;
use hefl::transport::http::{self, HttpUplink};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HIDDEN: &str = "16";
const BATCH: &str = "32";

use crate::util::write_tiny_mnist as write_synthetic_mnist;

fn hefl() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hefl"));
    command.env_remove("MNIST_DIR").env_remove("HEFL_TOKEN");
    command
}

/// Kills the child if a test fails before it is waited for.
struct Guard(Option<Child>);

impl Guard {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child still owned")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for a child at most `limit` (killing it and failing after that).
fn wait_bounded(mut guard: Guard, limit: Duration, what: &str) -> Output {
    let start = Instant::now();
    while guard.child().try_wait().expect("try_wait").is_none() {
        assert!(
            start.elapsed() < limit,
            "{what} did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let child = guard.0.take().expect("child");
    child.wait_with_output().expect("output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Starts `hefl serve` on a free port; returns the process and its URL.
fn start_server(dir: &Path, extra: &[&str]) -> (Guard, String) {
    let mut child = hefl()
        .args(["serve", "--bind", "127.0.0.1:0", "--parties", "3"])
        .args([
            "--train-size",
            "600",
            "--hidden",
            HIDDEN,
            "--batch-size",
            BATCH,
        ])
        .args(["--lr", "1e-2", "--tokens"])
        .arg(dir.join("tokens.json"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("read the listening line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    (Guard(Some(child)), url)
}

fn start_party(dir: &Path, url: &str, party: u32) -> Guard {
    let child = hefl()
        .args(["join", "--server", url, "--party", &party.to_string()])
        .arg("--tokens")
        .arg(dir.join("tokens.json"))
        .arg("--key")
        .arg(dir.join("hefl.key"))
        .arg("--data-dir")
        .arg(dir)
        .arg("--metrics-out")
        .arg(dir.join(format!("party-{party}.json")))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn join");
    Guard(Some(child))
}

fn setup() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    write_synthetic_mnist(dir.path());
    let key = KeyFile::generate().expect("key");
    key.write_new(&dir.path().join("hefl.key"), false)
        .expect("write key");
    (dir, key.key_id().to_string())
}

fn final_accuracy(path: &Path) -> f64 {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("metrics")).expect("json");
    json["epochs"]
        .as_array()
        .and_then(|e| e.last())
        .and_then(|e| e["test_accuracy"].as_f64())
        .expect("test_accuracy")
}

#[test]
fn three_processes_match_the_in_process_run() {
    let (dir, key_id) = setup();
    let (server, url) = start_server(
        dir.path(),
        &["--privacy", "he", "--key-id", &key_id, "--epochs", "2"],
    );
    let parties: Vec<Guard> = (0..3).map(|p| start_party(dir.path(), &url, p)).collect();
    for (p, guard) in parties.into_iter().enumerate() {
        let out = wait_bounded(guard, Duration::from_secs(120), "a party");
        assert!(out.status.success(), "party {p}: {}", text(&out.stderr));
    }
    let out = wait_bounded(server, Duration::from_secs(30), "the server");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("done: 14 rounds"),
        "{}",
        text(&out.stdout)
    );

    // Every party ends with the same model, and it is the in-process run's model.
    let accuracies: Vec<f64> = (0..3)
        .map(|p| final_accuracy(&dir.path().join(format!("party-{p}.json"))))
        .collect();
    let data = hefl::data::load_mnist_dir(dir.path()).expect("fixture loads");
    let config = TrainConfig {
        mode: Mode::Federated,
        privacy: Privacy::He,
        epochs: 2,
        batch_size: 32,
        lr: 1e-2,
        layers: vec![IMAGE_PIXELS, 16, 10],
        ..TrainConfig::default()
    };
    let key = Arc::new(
        KeyFile::load(&dir.path().join("hefl.key"))
            .and_then(|k| k.secret_key())
            .expect("key"),
    );
    let local = run(&config, &data, Some(key), &mut ()).expect("in-process run");
    let expected = local.final_accuracy().expect("epochs");
    assert!(
        expected > 0.9,
        "the synthetic task is learnable: {expected}"
    );
    assert_eq!(accuracies, [expected; 3]);
}

#[test]
fn a_killed_party_is_left_out_and_the_others_finish() {
    let (dir, key_id) = setup();
    let (server, url) = start_server(
        dir.path(),
        &[
            "--privacy",
            "he",
            "--key-id",
            &key_id,
            "--epochs",
            "30",
            "--min-parties",
            "2",
            "--round-timeout",
            "1s",
        ],
    );
    let survivors: Vec<Guard> = (0..2).map(|p| start_party(dir.path(), &url, p)).collect();
    let mut victim = start_party(dir.path(), &url, 2);
    // Kill party 2 once it has finished its first epoch.
    let mut line = String::new();
    let mut reader = BufReader::new(victim.child().stdout.take().expect("stdout"));
    while !line.contains("epoch") {
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("read") > 0,
            "party 2 ended early"
        );
    }
    victim.child().kill().expect("kill party 2");
    let _ = victim.child().wait();

    for (p, guard) in survivors.into_iter().enumerate() {
        let out = wait_bounded(guard, Duration::from_secs(120), "a surviving party");
        assert!(out.status.success(), "party {p}: {}", text(&out.stderr));
        assert!(final_accuracy(&dir.path().join(format!("party-{p}.json"))) > 0.9);
    }
    let out = wait_bounded(server, Duration::from_secs(30), "the server");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stderr);
    assert!(
        log.contains("closed at its deadline with parties 0, 1 (2 of 3)"),
        "{log}"
    );
    assert!(
        text(&out.stdout).contains("done: 210 rounds"),
        "{}",
        text(&out.stdout)
    );
}

/// A raw request, for the malformed cases the uplink never sends.
fn raw(
    url: &str,
    path: &str,
    party: Option<&str>,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let full = format!("{url}{path}");
    let mut response = match body {
        Some(body) => {
            let mut request = agent.post(&full);
            if let Some(p) = party {
                request = request.header(http::PARTY_HEADER, p);
            }
            if let Some(t) = token {
                request = request.header("authorization", format!("Bearer {t}"));
            }
            request.send(body)
        }
        None => {
            let mut request = agent.get(&full);
            if let Some(p) = party {
                request = request.header(http::PARTY_HEADER, p);
            }
            if let Some(t) = token {
                request = request.header("authorization", format!("Bearer {t}"));
            }
            request.call()
        }
    }
    .expect("request");
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

#[test]
fn the_server_refuses_bad_requests_and_keeps_the_round() {
    let key = KeyFile::from_seed([8; 32]).secret_key().expect("key");
    let other = KeyFile::from_seed([9; 32]).secret_key().expect("key");
    let config = TrainConfig {
        privacy: Privacy::He,
        epochs: 1,
        layers: vec![IMAGE_PIXELS, 4, 10],
        ..TrainConfig::default()
    };
    let plan = plan_for(
        &config,
        600,
        Some(1),
        Some(key.key_id()),
        Duration::from_secs(20),
    )
    .expect("plan");
    let slots = hefl::model::param_count(&config.layers) + 1;
    let hub = Arc::new(Hub::new(plan, None, |_: &HubEvent| {}).expect("hub"));
    let (tokens, issued) = Tokens::generate(3).expect("tokens");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let serving = std::thread::spawn(move || http::serve(listener, hub, tokens, None));

    let fp = FixedPoint::for_parties(3).expect("fp");
    let words: Vec<u64> = (0..slots as i64)
        .map(|i| fp.to_plaintext(i % 5 - 2))
        .collect();
    let good = key.encrypt(&words).expect("encrypt").to_bytes();
    let update = "/v1/rounds/0/update";

    // Authentication.
    assert_eq!(
        raw(&url, update, None, Some(&issued[0]), Some(&good)).0,
        401
    );
    assert_eq!(raw(&url, update, Some("0"), None, Some(&good)).0, 401);
    assert_eq!(
        raw(&url, update, Some("0"), Some(&issued[1]), Some(&good)).0,
        401
    );
    assert_eq!(
        raw(&url, update, Some("7"), Some(&issued[0]), Some(&good)).0,
        401
    );
    assert_eq!(raw(&url, "/v1/plan", Some("0"), Some("nope"), None).0, 401);

    // Party 0 submits; then every kind of bad submission is refused.
    let mut uplinks: Vec<HttpUplink> = (0..3)
        .map(|p| HttpUplink::new(&url, p, &issued[p as usize]))
        .collect();
    let fetched_plan = uplinks[0].plan().expect("plan");
    assert_eq!(fetched_plan.rounds_per_epoch, 1);
    assert_eq!(
        uplinks[0].submit(Round(0), good.clone()).expect("submit"),
        Submitted::Accepted
    );
    let p1 = Some("1");
    let t1 = Some(issued[1].as_str());
    let refused = |path: &str, body: &[u8], status: u16, says: &str| {
        let (got, message) = raw(&url, path, p1, t1, Some(body));
        assert_eq!(got, status, "{path}: {message}");
        assert!(message.contains(says), "{message:?} should say {says:?}");
    };
    refused(
        "/v1/rounds/1/update",
        &good,
        409,
        "update for round 1, server is on round 0",
    );
    let (status, message) = raw(&url, update, Some("0"), Some(&issued[0]), Some(&good));
    assert_eq!(
        (status, message.contains("already submitted")),
        (409, true),
        "{message}"
    );
    let other_key = other.encrypt(&words).expect("encrypt").to_bytes();
    refused(update, &other_key, 422, "key id");
    let longer = key.encrypt(&[0; 3000]).expect("encrypt").to_bytes();
    refused(update, &longer, 422, "values, expected");
    let mut other_params = good.clone();
    other_params[18] ^= 1;
    refused(update, &other_params, 422, "parameter set");
    refused(update, &good[..good.len() - 8], 422, "truncated");
    refused(update, b"garbage", 422, "");
    let oversized = vec![0u8; good.len() + 4096];
    let (status, _) = raw(&url, update, p1, t1, Some(&oversized));
    assert_eq!(status, 413);

    // None of that disturbed the round: parties 1 and 2 complete it and all fetch the sum.
    for uplink in &mut uplinks[1..] {
        assert_eq!(
            uplink.submit(Round(0), good.clone()).expect("submit"),
            Submitted::Accepted
        );
    }
    // An update for the closed round is refused as late.
    let (status, message) = raw(&url, update, p1, t1, Some(&good));
    assert_eq!(status, 409, "{message}");
    assert_eq!(
        uplinks[2].submit(Round(0), good.clone()).expect("submit"),
        Submitted::Late("update for round 0, server is on round 1".into())
    );
    for uplink in &mut uplinks {
        let published = uplink.fetch(Round(0)).expect("fetch");
        assert_eq!(published.parties, [PartyId(0), PartyId(1), PartyId(2)]);
        let bytes = &published.bytes;
        let sum = EncryptedVector::from_bytes(
            bytes,
            &Expected {
                key_id: key.key_id(),
                plaintext_len: slots,
                max_summands: 3,
            },
        )
        .expect("valid sum");
        let decoded = fp.decode_integers(&key.decrypt(&sum).expect("decrypt"));
        let expected: Vec<i64> = (0..slots as i64).map(|i| 3 * (i % 5 - 2)).collect();
        assert_eq!(decoded, expected);
    }

    // The plan had one round: the server stops once every party fetched it.
    let report = serving.join().expect("server thread").expect("serve");
    assert_eq!((report.rounds, report.short_rounds), (1, 0));
}

#[test]
fn hostile_plans_are_refused() {
    let good = Plan::clone(
        &plan_for(
            &TrainConfig::default(),
            60_000,
            None,
            None,
            Duration::from_secs(30),
        )
        .expect("plan"),
    );
    assert!(good.validate().is_ok());
    let bad = [
        Plan {
            config: TrainConfig {
                mode: Mode::Local,
                ..good.config.clone()
            },
            ..good.clone()
        },
        Plan {
            rounds_per_epoch: 0,
            ..good.clone()
        },
        Plan {
            rounds_per_epoch: usize::MAX,
            ..good.clone()
        },
        Plan {
            config: TrainConfig {
                layers: vec![IMAGE_PIXELS, 1 << 40, 10],
                ..good.config.clone()
            },
            ..good.clone()
        },
        Plan {
            config: TrainConfig {
                privacy: Privacy::He,
                ..good.config.clone()
            },
            ..good.clone()
        },
    ];
    for plan in bad {
        assert!(plan.validate().is_err(), "{plan:?}");
    }
}

#[test]
fn tokens_files_are_private_and_match_the_party_count() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tokens.json");
    let issued = Tokens::load_or_create(&path, 3).expect("created");
    let mode = std::fs::metadata(&path)
        .expect("written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(Tokens::load_or_create(&path, 3).expect("read back"), issued);
    assert_eq!(Tokens::read_party(&path, 2).expect("party 2"), issued[2]);
    assert!(Tokens::read_party(&path, 3).is_err());
    assert!(Tokens::load_or_create(&path, 4).is_err());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = Tokens::read_party(&path, 0).expect_err("world-readable tokens");
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[test]
fn tls_serves_parties_that_trust_the_certificate() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let config = TrainConfig {
        parties: 1,
        epochs: 1,
        layers: vec![IMAGE_PIXELS, 4, 10],
        ..TrainConfig::default()
    };
    let plan = plan_for(&config, 600, Some(1), None, Duration::from_secs(20)).expect("plan");
    let slots = hefl::model::param_count(&config.layers) + 1;
    let hub = Arc::new(Hub::new(plan, None, |_: &HubEvent| {}).expect("hub"));
    let (tokens, issued) = Tokens::generate(1).expect("tokens");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let tls = http::TlsFiles {
        cert: fixtures.join("cert.pem"),
        key: fixtures.join("key.pem"),
    };
    let serving = std::thread::spawn(move || http::serve(listener, hub, tokens, Some(tls)));

    let url = format!("https://127.0.0.1:{port}");
    // Not trusted by the web roots, and not spoken to in clear text.
    let untrusted = HttpUplink::new(&url, 0, &issued[0]).plan();
    assert!(untrusted.is_err());
    let clear = HttpUplink::new(&format!("http://127.0.0.1:{port}"), 0, &issued[0]).plan();
    assert!(clear.is_err());

    let pem = std::fs::read(fixtures.join("cert.pem")).expect("cert");
    let mut uplink = HttpUplink::with_ca(&url, 0, &issued[0], &pem).expect("uplink");
    assert_eq!(uplink.plan().expect("plan over TLS").rounds_per_epoch, 1);
    let update = hefl::fl::PlainSum::fresh(vec![5; slots]);
    use hefl::fl::Summable;
    assert_eq!(
        uplink.submit(Round(0), update.to_bytes()).expect("submit"),
        Submitted::Accepted
    );
    let published = uplink.fetch(Round(0)).expect("fetch");
    assert_eq!(published.parties, [PartyId(0)]);
    assert_eq!(*published.bytes, update.to_bytes());
    let report = serving.join().expect("thread").expect("serve");
    assert_eq!(report.rounds, 1);
}
