//! The network transport: the round protocol over HTTP/1.1, served with axum (hyper, tokio)
//! and called with ureq.
//!
//! | request | what it does |
//! |---|---|
//! | `GET /v1/plan` | the run's [`Plan`] as JSON |
//! | `POST /v1/rounds/{r}/update` | one party's sealed update for round r (body: wire bytes) |
//! | `GET /v1/rounds/{r}/aggregate?wait_ms=W` | round r's sum once it is published (long poll: `204 No Content` if still open after W ms); header `x-hefl-parties` lists the parties in it |
//!
//! Every request carries `x-hefl-party: ID` and `authorization: Bearer TOKEN`, the per-party
//! token issued at setup ([`Tokens`]); a missing or wrong token gets `401`. Refusals keep the
//! round intact and say why in the body: `403` unknown party, `409` wrong round or duplicate
//! (with `x-hefl-refusal: late` when the round already closed), `410` an aggregate no longer
//! kept, `413` a body above the limit (the largest valid message), `422` a malformed update
//! or one of another key id, parameter set or length.
//!
//! With [`TlsFiles`] the server speaks HTTPS (rustls, ring provider); clients verify it
//! against the web roots ([`HttpUplink::new`]) or a given CA ([`HttpUplink::with_ca`]).
//!
//! This module only moves bytes: validation and sums are [`Server`]'s, the party's work is
//! [`run_party`](crate::fl::run_party)'s.

use crate::fl::{PartyId, Plan, Refusal, Round, Server, Submitted, Summable, Uplink, UplinkError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Header naming the requesting party.
pub const PARTY_HEADER: &str = "x-hefl-party";
/// Header listing the parties in a published sum, comma-separated.
pub const PARTIES_HEADER: &str = "x-hefl-parties";
/// Header set to `late` on the refusal of an update whose round already closed.
pub const REFUSAL_HEADER: &str = "x-hefl-refusal";
/// Longest a single aggregate request waits before answering `204 No Content`.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// Errors setting up or running the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A tokens file could not be read, written or parsed.
    #[error("tokens file {path}: {reason}")]
    Tokens {
        /// The file.
        path: std::path::PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A socket or runtime error.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
}

/// The per-party bearer tokens of a federation. The server keeps only their SHA-256.
///
/// ```
/// use hefl::transport::http::Tokens;
///
/// let (tokens, issued) = Tokens::generate(3)?;
/// assert_eq!(issued.len(), 3);
/// assert!(tokens.check(1, &issued[1]));
/// assert!(!tokens.check(1, &issued[0]));
/// assert!(!tokens.check(7, &issued[0]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Tokens {
    digests: Vec<[u8; 32]>,
}

impl Tokens {
    /// Fresh tokens for `parties` parties: 32 bytes each from the OS CSPRNG, hex-encoded.
    pub fn generate(parties: usize) -> Result<(Self, Vec<String>), getrandom::Error> {
        let issued = (0..parties)
            .map(|_| {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes)?;
                Ok(hex::encode(bytes))
            })
            .collect::<Result<Vec<_>, getrandom::Error>>()?;
        Ok((Self::from_issued(&issued), issued))
    }

    /// The tokens as issued (party i holds `issued[i]`).
    pub fn from_issued(issued: &[String]) -> Self {
        Self {
            digests: issued.iter().map(|t| digest(t)).collect(),
        }
    }

    /// Whether `presented` is party `party`'s token.
    pub fn check(&self, party: u32, presented: &str) -> bool {
        self.digests
            .get(party as usize)
            .is_some_and(|d| *d == digest(presented))
    }

    /// Reads the tokens file at `path` (a JSON list, party i's token at index i), or creates
    /// one with fresh tokens for `parties` parties (mode 0600) if there is none.
    pub fn load_or_create(path: &Path, parties: usize) -> Result<Vec<String>, TransportError> {
        let err = |reason: String| TransportError::Tokens {
            path: path.to_path_buf(),
            reason,
        };
        if path.exists() {
            let issued = read_tokens(path)?;
            if issued.len() != parties {
                return Err(err(format!(
                    "holds {} tokens, expected one per party ({parties}); delete it to issue new ones",
                    issued.len()
                )));
            }
            return Ok(issued);
        }
        let (_, issued) = Self::generate(parties).map_err(|e| err(e.to_string()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let json = serde_json::to_string_pretty(&issued).map_err(|e| err(e.to_string()))?;
        let mut file = crate::he::keys::create_private(path).map_err(|e| err(e.to_string()))?;
        file.write_all(json.as_bytes())
            .map_err(|e| err(e.to_string()))?;
        Ok(issued)
    }

    /// Party `party`'s token from a tokens file.
    pub fn read_party(path: &Path, party: u32) -> Result<String, TransportError> {
        read_tokens(path)?
            .into_iter()
            .nth(party as usize)
            .ok_or_else(|| TransportError::Tokens {
                path: path.to_path_buf(),
                reason: format!("no token for party {party}"),
            })
    }
}

fn read_tokens(path: &Path) -> Result<Vec<String>, TransportError> {
    let err = |reason: String| TransportError::Tokens {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let metadata = file.metadata().map_err(|e| err(e.to_string()))?;
    crate::he::keys::check_private(path, &metadata).map_err(|e| err(e.to_string()))?;
    let mut text = String::new();
    file.take(1 << 20)
        .read_to_string(&mut text)
        .map_err(|e| err(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| err(format!("expected a JSON list of tokens: {e}")))
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::new_with_prefix(b"hefl/v1/token\0")
        .chain_update(token.as_bytes())
        .finalize()
        .into()
}

/// What a finished server reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeReport {
    /// Rounds published.
    pub rounds: u64,
    /// Rounds published without every party.
    pub short_rounds: u64,
}

struct Shared<S: Summable> {
    server: Mutex<Server<S>>,
    plan: Plan,
    tokens: Tokens,
    /// Woken whenever a round closes.
    changed: Notify,
    /// Woken once the run is over.
    finished: Notify,
    last_fetched: Mutex<BTreeSet<PartyId>>,
    log: Box<dyn Fn(&str) + Send + Sync>,
    /// Rounds published so far (logged up to `rounds`).
    report: Mutex<ServeReport>,
}

impl<S: Summable> Shared<S> {
    fn server(&self) -> MutexGuard<'_, Server<S>> {
        // A panic while holding the lock would be a bug in Server; its state is still the
        // last consistent one (every method validates before it mutates).
        self.server.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn total_rounds(&self) -> u64 {
        self.plan.total_rounds()
    }

    /// Logs newly closed rounds (epoch ends and rounds without every party) and wakes waiters.
    fn after_change(&self) {
        let published = {
            let server = self.server();
            let current = server.current_round().0;
            let mut report = self.report.lock().unwrap_or_else(|p| p.into_inner());
            let published: Vec<_> = (report.rounds..current)
                .filter_map(|r| server.aggregate(Round(r)).ok().flatten())
                .collect();
            report.rounds = current;
            report.short_rounds += published
                .iter()
                .filter(|p| p.parties.len() < self.plan.config.parties)
                .count() as u64;
            published
        };
        if published.is_empty() {
            return;
        }
        self.changed.notify_waiters();
        let parties = self.plan.config.parties;
        for p in published {
            let r = p.round.0 + 1;
            if p.parties.len() < parties {
                let list: Vec<String> = p.parties.iter().map(|p| p.0.to_string()).collect();
                (self.log)(&format!(
                    "{} closed at its deadline with parties {} ({} of {parties})",
                    p.round,
                    list.join(", "),
                    p.parties.len()
                ));
            }
            if r % self.plan.rounds_per_epoch as u64 == 0 {
                (self.log)(&format!(
                    "epoch {} done ({r} of {} rounds)",
                    r / self.plan.rounds_per_epoch as u64,
                    self.total_rounds()
                ));
            }
        }
    }
}

fn unauthorized(reason: String) -> Response {
    (StatusCode::UNAUTHORIZED, reason).into_response()
}

fn refusal_response(refusal: &Refusal) -> Response {
    let status = match refusal {
        Refusal::UnknownParty { .. } => StatusCode::FORBIDDEN,
        Refusal::WrongRound { .. } | Refusal::Duplicate { .. } => StatusCode::CONFLICT,
        Refusal::Payload { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Refusal::NoSuchAggregate { .. } => StatusCode::GONE,
    };
    let mut response = (status, refusal.to_string()).into_response();
    if refusal.is_late() {
        response
            .headers_mut()
            .insert(REFUSAL_HEADER, HeaderValue::from_static("late"));
    }
    response
}

/// The party a request authenticates as, or the reason for a `401`.
fn authenticate(tokens: &Tokens, headers: &HeaderMap) -> Result<PartyId, String> {
    let unauthorized = |m: &str| m.to_owned();
    let party = headers
        .get(PARTY_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .ok_or_else(|| unauthorized("missing or invalid x-hefl-party header"))?;
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("missing authorization: Bearer <token> header"))?;
    if !tokens.check(party, token) {
        return Err(unauthorized(&format!("wrong token for party {party}")));
    }
    Ok(PartyId(party))
}

async fn plan_handler<S: Summable>(
    State(st): State<Arc<Shared<S>>>,
    headers: HeaderMap,
) -> Response {
    match authenticate(&st.tokens, &headers) {
        Ok(_) => axum::Json(st.plan.clone()).into_response(),
        Err(reason) => unauthorized(reason),
    }
}

async fn update_handler<S: Summable>(
    State(st): State<Arc<Shared<S>>>,
    UrlPath(round): UrlPath<u64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let party = match authenticate(&st.tokens, &headers) {
        Ok(p) => p,
        Err(reason) => return unauthorized(reason),
    };
    let result = st
        .server()
        .submit(party, Round(round), &body, Instant::now());
    match result {
        Ok(()) => {
            st.after_change();
            (StatusCode::OK, format!("accepted for round {round}")).into_response()
        }
        Err(refusal) => refusal_response(&refusal),
    }
}

#[derive(Deserialize)]
struct WaitQuery {
    wait_ms: Option<u64>,
}

async fn aggregate_handler<S: Summable>(
    State(st): State<Arc<Shared<S>>>,
    UrlPath(round): UrlPath<u64>,
    Query(query): Query<WaitQuery>,
    headers: HeaderMap,
) -> Response {
    let party = match authenticate(&st.tokens, &headers) {
        Ok(p) => p,
        Err(reason) => return unauthorized(reason),
    };
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let notified = st.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let found = st.server().aggregate(Round(round));
        match found {
            Ok(Some(published)) => {
                if round + 1 == st.total_rounds() {
                    let mut fetched = st.last_fetched.lock().unwrap_or_else(|p| p.into_inner());
                    fetched.insert(party);
                    if published.parties.iter().all(|p| fetched.contains(p)) {
                        st.finished.notify_one();
                    }
                }
                let parties: Vec<String> =
                    published.parties.iter().map(|p| p.0.to_string()).collect();
                let mut response = (StatusCode::OK, published.bytes.to_vec()).into_response();
                if let Ok(value) = HeaderValue::from_str(&parties.join(",")) {
                    response.headers_mut().insert(PARTIES_HEADER, value);
                }
                return response;
            }
            Ok(None) => {}
            Err(refusal) => return refusal_response(&refusal),
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return StatusCode::NO_CONTENT.into_response();
        }
    }
}

/// A server certificate chain and its private key, PEM files, for serving over TLS.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: std::path::PathBuf,
    /// The private key.
    pub key: std::path::PathBuf,
}

/// Serves `server`'s rounds on `listener` (over TLS with `tls`) until the plan's last round is published and
/// fetched by every party in it (or one round deadline after it is published), then
/// returns. `log` receives one line per epoch and per round closed without every party.
pub fn serve<S: Summable>(
    listener: std::net::TcpListener,
    server: Server<S>,
    plan: Plan,
    tokens: Tokens,
    tls: Option<TlsFiles>,
    log: impl Fn(&str) + Send + Sync + 'static,
) -> Result<ServeReport, TransportError> {
    let body_limit = S::max_wire_len(server.expect());
    let shared = Arc::new(Shared {
        server: Mutex::new(server),
        plan,
        tokens,
        changed: Notify::new(),
        finished: Notify::new(),
        last_fetched: Mutex::new(BTreeSet::new()),
        log: Box::new(log),
        report: Mutex::new(ServeReport {
            rounds: 0,
            short_rounds: 0,
        }),
    });
    let app = Router::new()
        .route("/v1/plan", get(plan_handler::<S>))
        .route("/v1/rounds/{round}/update", post(update_handler::<S>))
        .route("/v1/rounds/{round}/aggregate", get(aggregate_handler::<S>))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(Arc::clone(&shared));
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let ticker = {
            let st = Arc::clone(&shared);
            async move {
                let mut last_round_at: Option<Instant> = None;
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let current = {
                        let mut server = st.server();
                        server.tick(Instant::now());
                        server.current_round().0
                    };
                    st.after_change();
                    if current >= st.total_rounds() {
                        let at = *last_round_at.get_or_insert_with(Instant::now);
                        if at.elapsed() >= Duration::from_millis(st.plan.round_timeout_ms) {
                            st.finished.notify_one();
                        }
                    }
                }
            }
        };
        let ticker = tokio::spawn(ticker);
        let handle = axum_server::Handle::new();
        let stopper = {
            let (st, handle) = (Arc::clone(&shared), handle.clone());
            tokio::spawn(async move {
                st.finished.notified().await;
                handle.graceful_shutdown(Some(Duration::from_secs(5)));
            })
        };
        let service = app.into_make_service();
        match tls {
            None => {
                axum_server::from_tcp(listener)?
                    .handle(handle)
                    .serve(service)
                    .await?
            }
            Some(files) => {
                // ring, the provider ureq's rustls already uses; a no-op if one is installed.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let config =
                    axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
                        .await
                        .map_err(|e| {
                            std::io::Error::new(
                                e.kind(),
                                format!(
                                    "TLS certificate {} or key {}: {e}",
                                    files.cert.display(),
                                    files.key.display()
                                ),
                            )
                        })?;
                axum_server::tls_rustls::from_tcp_rustls(listener, config)?
                    .handle(handle)
                    .serve(service)
                    .await?
            }
        }
        stopper.abort();
        ticker.abort();
        Ok::<(), std::io::Error>(())
    })?;
    let report = shared
        .report
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(report)
}

/// A party's connection to a server: implements [`Uplink`] over HTTP.
pub struct HttpUplink {
    agent: ureq::Agent,
    base: String,
    party: u32,
    authorization: String,
    /// How long to keep waiting for one round's sum before giving up.
    give_up: Duration,
    /// Largest aggregate body accepted (set from the plan).
    max_body: u64,
}

impl HttpUplink {
    /// A connection to the server at `base` (e.g. `http://127.0.0.1:7878`) as `party`.
    /// An `https://` server is verified against the usual web roots.
    pub fn new(base: &str, party: u32, token: &str) -> Self {
        Self::with_agent(base, party, token, Self::config_builder().build().into())
    }

    /// Like [`HttpUplink::new`], trusting only the CA certificate(s) in `ca_pem` (e.g. a
    /// self-signed server certificate).
    pub fn with_ca(
        base: &str,
        party: u32,
        token: &str,
        ca_pem: &[u8],
    ) -> Result<Self, UplinkError> {
        let certs = ureq::tls::parse_pem(ca_pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| UplinkError(format!("CA certificate: {e}")))?;
        if certs.is_empty() {
            return Err(UplinkError("no certificate in the CA file".into()));
        }
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)))
            .build();
        let agent = Self::config_builder().tls_config(tls).build().into();
        Ok(Self::with_agent(base, party, token, agent))
    }

    fn config_builder() -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(MAX_WAIT + Duration::from_secs(30)))
    }

    fn with_agent(base: &str, party: u32, token: &str, agent: ureq::Agent) -> Self {
        Self {
            agent,
            base: base.trim_end_matches('/').to_owned(),
            party,
            authorization: format!("Bearer {token}"),
            give_up: Duration::from_secs(300),
            max_body: 1 << 20,
        }
    }

    /// Waits at most this long for a round's sum (default 5 minutes; [`HttpUplink::plan`]
    /// sets it from the server's round deadline).
    pub fn set_give_up(&mut self, give_up: Duration) {
        self.give_up = give_up;
    }

    fn unreachable(&self, e: ureq::Error) -> UplinkError {
        UplinkError(format!("cannot reach the server at {}: {e}", self.base))
    }

    fn refused(status: u16, body: &str) -> UplinkError {
        UplinkError(format!("server refused ({status}): {}", body.trim()))
    }

    /// Fetches and validates the run's plan.
    pub fn plan(&mut self) -> Result<Plan, UplinkError> {
        let mut response = self
            .agent
            .get(format!("{}/v1/plan", self.base))
            .header(PARTY_HEADER, self.party.to_string())
            .header("authorization", &self.authorization)
            .call()
            .map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .map_err(|e| self.unreachable(e))?;
        if status != 200 {
            return Err(Self::refused(status, &body));
        }
        let plan: Plan = serde_json::from_str(&body)
            .map_err(|e| UplinkError(format!("the server's plan does not parse: {e}")))?;
        plan.validate().map_err(|e| UplinkError(e.to_string()))?;
        self.give_up = Duration::from_millis(plan.round_timeout_ms)
            .saturating_mul(4)
            .max(Duration::from_secs(60));
        // Both envelopes fit in a ciphertext-sized message (plain words are half as big).
        let slots = crate::model::param_count(&plan.config.layers) + 1;
        self.max_body = <crate::he::EncryptedVector as Summable>::max_wire_len(
            &crate::he::Expected::fresh(crate::he::keys::KeyId([0; 32]), slots),
        ) as u64;
        Ok(plan)
    }
}

impl Uplink for HttpUplink {
    fn submit(&mut self, round: Round, bytes: Vec<u8>) -> Result<Submitted, UplinkError> {
        let mut response = self
            .agent
            .post(format!("{}/v1/rounds/{}/update", self.base, round.0))
            .header(PARTY_HEADER, self.party.to_string())
            .header("authorization", &self.authorization)
            .header("content-type", "application/octet-stream")
            .send(&bytes[..])
            .map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        let late = response
            .headers()
            .get(REFUSAL_HEADER)
            .is_some_and(|v| v.as_bytes() == b"late");
        let body = response
            .body_mut()
            .with_config()
            .limit(1 << 16)
            .read_to_string()
            .unwrap_or_default();
        match status {
            200 => Ok(Submitted::Accepted),
            409 if late => Ok(Submitted::Late(body.trim().to_owned())),
            _ => Err(Self::refused(status, &body)),
        }
    }

    fn fetch(&mut self, round: Round) -> Result<(Vec<PartyId>, Vec<u8>), UplinkError> {
        let started = Instant::now();
        loop {
            let mut response = self
                .agent
                .get(format!(
                    "{}/v1/rounds/{}/aggregate?wait_ms={}",
                    self.base,
                    round.0,
                    MAX_WAIT.as_millis()
                ))
                .header(PARTY_HEADER, self.party.to_string())
                .header("authorization", &self.authorization)
                .call()
                .map_err(|e| self.unreachable(e))?;
            let status = response.status().as_u16();
            if status == 204 {
                if started.elapsed() > self.give_up {
                    return Err(UplinkError(format!(
                        "{round} was not published within {:?}",
                        self.give_up
                    )));
                }
                continue;
            }
            let parties = response
                .headers()
                .get(PARTIES_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    v.split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| s.trim().parse().map(PartyId))
                        .collect::<Result<Vec<_>, _>>()
                });
            let body = response
                .body_mut()
                .with_config()
                .limit(self.max_body)
                .read_to_vec()
                .map_err(|e| self.unreachable(e))?;
            if status != 200 {
                return Err(Self::refused(status, &String::from_utf8_lossy(&body)));
            }
            let parties = match parties {
                Some(Ok(p)) if !p.is_empty() => p,
                _ => {
                    return Err(UplinkError(format!(
                        "{round}: missing or malformed {PARTIES_HEADER} header"
                    )));
                }
            };
            return Ok((parties, body));
        }
    }
}
