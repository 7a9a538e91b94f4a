//! The network transport: the round protocol over HTTP/1.1, served with axum (hyper, tokio)
//! and called with ureq.
//!
//! | request | what it does |
//! |---|---|
//! | `GET /v1/plan` | the run's [`Plan`](crate::fl::Plan) as JSON |
//! | `POST /v1/ready` | the party has loaded its data: round 0's clock starts once every party has said so (or at the join timeout once `min_parties` have) |
//! | `POST /v1/rounds/{r}/update` | one party's sealed update for round r (body: wire bytes) |
//! | `GET /v1/rounds/{r}/aggregate?wait_ms=W&keep_from=K` | round r's sum once it is published (long poll: `204 No Content` if still open after W ms); header `x-hefl-parties` lists the parties in it. `keep_from`: the party may still ask for the sums from round K on (its last checkpoint), so the server keeps them. Strict secure aggregation: `x-hefl-next-set` lists the next round's party set, and a void round answers `200` with an empty body and `x-hefl-void: 1` (`x-hefl-parties` then lists the members that had submitted, possibly none) |
//! | `POST /v1/rounds/{r}/rejoin` | strict secure aggregation: a party left out of round r's set asks to rejoin; `x-hefl-round` in the answer names the first round whose set holds it |
//! | `POST /v1/rounds/{r}/skipped` | the party skipped round r: its sum could not be a sum of valid updates (body: the reason, at most 4 KiB); the server logs it |
//! | `PUT /v1/snapshot/{r}` | a party's sealed model snapshot of the model before round r (body: wire bytes); kept if newer than the one kept |
//! | `GET /v1/snapshot` | the latest model snapshot (`404` if none yet); header `x-hefl-round` names its round |
//!
//! Every request carries `x-hefl-party: ID` and `authorization: Bearer TOKEN`, the per-party
//! token issued at setup ([`Tokens`]). Both are checked from the headers before a byte of
//! the body is read: a party the federation does not have gets `403`, a missing or wrong
//! token `401`, and the connection is closed with the body unread. A `Content-Length` above
//! the largest valid message gets `413` at once. Refusals keep the round intact and say why
//! in the body: `409` wrong round or duplicate (with `x-hefl-refusal: late` and the open
//! round in `x-hefl-round` when the round already closed, `not-in-set` with the open round
//! when the party is not in its party set, `duplicate` when the party's update is already in), `410` an aggregate no longer kept, `413` a body above the limit, `422` a
//! malformed update or one of another key id, parameter set or length, `408` an upload
//! slower than the floor rate. [`Limits`] bounds what any peer can hold: time to send
//! headers, pauses in a body, upload rate, and open connections in total and per address.
//!
//! With [`TlsFiles`] the server speaks HTTPS (rustls, ring provider); clients verify it
//! against the web roots ([`HttpUplink::new`]) or a given CA ([`HttpUplink::with_ca`]).
//!
//! This module only moves bytes: the handlers call the federation's [`Hub`], exactly as the
//! in-process [`HubUplink`](crate::fl::HubUplink) does, and [`HttpUplink`] is the party's
//! side for [`run_party`](crate::fl::run_party).

use super::limits::{Limits, PeerCaps};
use super::metrics::{Answered, Metrics};
use super::tokens::Tokens;
use crate::fl::{
    Hub, MalformedAnswer, ModelSnapshot, PartyId, Plan, Published, Refusal, RefusalKind, Round,
    ServeReport, Submitted, Uplink, UplinkError, ValidPlan,
};
use crate::secret_file::{self, SecretFileError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, Extension, Path as UrlPath, Query, Request, State,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutError, TimeoutLayer};

/// Header naming the requesting party.
pub const PARTY_HEADER: &str = "x-hefl-party";
/// Header listing the parties in a published sum, comma-separated.
pub const PARTIES_HEADER: &str = "x-hefl-parties";
/// Header set on a refusal a party acts on: `late` (`409`) when the update's round already
/// closed, `duplicate` (`409`) when the party's update for the round is already in,
/// `seed-taken` (`422`) when a copy of the upload got in first (the party reseals).
pub const REFUSAL_HEADER: &str = "x-hefl-refusal";
/// Header naming a round: the open round on a `late` refusal, a model snapshot's round.
pub const ROUND_HEADER: &str = "x-hefl-round";
/// Header listing the next round's party set (strict secure aggregation), comma-separated.
pub const NEXT_SET_HEADER: &str = "x-hefl-next-set";
/// Header marking a void round (strict secure aggregation): `1`.
pub const VOID_HEADER: &str = "x-hefl-void";
/// Longest a single aggregate request waits before answering `204 No Content`.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// Longest reason a party may give for skipping a round.
const MAX_SKIP_REASON: usize = 4096;
/// Largest PEM certificate chain read.
const MAX_CERT_FILE: u64 = 1 << 20;

/// Errors setting up or running the server.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A socket or runtime error.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS certificate or key cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The TLS private key file is not private, not a file, or unreadable.
    #[error("TLS: {0}")]
    TlsKey(#[from] SecretFileError),
}

/// Why a certificate, a key or a CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read, or is not a regular file of at most 1 MiB.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not PEM of what it should hold.
    #[error("{path} is not a PEM {what}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// "certificate chain", "private key" or "CA certificate".
        what: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// The file holds no certificate.
    #[error("no certificate in {path}: expected a PEM chain (BEGIN CERTIFICATE)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the certificate and key.
    #[error("certificate {cert} and key {key} do not make a server identity: {source}")]
    Identity {
        /// The certificate chain.
        cert: PathBuf,
        /// The key.
        key: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
}

/// The status code of each kind of refusal, and back: the one table both sides use.
fn status_of(kind: RefusalKind) -> StatusCode {
    match kind {
        RefusalKind::Unauthorized => StatusCode::UNAUTHORIZED,
        RefusalKind::UnknownParty => StatusCode::FORBIDDEN,
        RefusalKind::Conflict => StatusCode::CONFLICT,
        RefusalKind::Gone => StatusCode::GONE,
        RefusalKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        RefusalKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        RefusalKind::NotFound => StatusCode::NOT_FOUND,
        RefusalKind::Other => StatusCode::BAD_REQUEST,
    }
}

fn kind_of(status: StatusCode) -> RefusalKind {
    [
        RefusalKind::Unauthorized,
        RefusalKind::UnknownParty,
        RefusalKind::Conflict,
        RefusalKind::Gone,
        RefusalKind::TooLarge,
        RefusalKind::Invalid,
        RefusalKind::NotFound,
    ]
    .into_iter()
    .find(|&kind| status_of(kind) == status)
    .unwrap_or(RefusalKind::Other)
}

struct Shared {
    hub: Arc<Hub>,
    tokens: Tokens,
    /// The connection caps, told which connections authenticated.
    caps: PeerCaps,
    /// Notified whenever the hub's state changes ([`Hub::watch`]): long polls wait on it.
    changed: Arc<tokio::sync::Notify>,
    /// What `GET /metrics` reports.
    metrics: Metrics,
}

fn refusal_response(refusal: &Refusal) -> Response {
    let mut response = (status_of(RefusalKind::from(refusal)), refusal.to_string()).into_response();
    let headers = response.headers_mut();
    match refusal.submitted() {
        Some(Submitted::Late { open }) => {
            headers.insert(REFUSAL_HEADER, HeaderValue::from_static("late"));
            headers.insert(ROUND_HEADER, HeaderValue::from(open.0));
        }
        Some(Submitted::AlreadyIn) => {
            headers.insert(REFUSAL_HEADER, HeaderValue::from_static("duplicate"));
        }
        Some(Submitted::NotInSet { open }) => {
            headers.insert(REFUSAL_HEADER, HeaderValue::from_static("not-in-set"));
            headers.insert(ROUND_HEADER, HeaderValue::from(open.0));
        }
        Some(Submitted::Taken) => {
            headers.insert(REFUSAL_HEADER, HeaderValue::from_static("seed-taken"));
        }
        Some(Submitted::Accepted) | None => {}
    }
    response
}

/// The party a request authenticates as, from its headers alone, or the `401`/`403` refusal.
fn authenticate(st: &Shared, headers: &HeaderMap) -> Result<PartyId, (RefusalKind, String)> {
    let unauthorized = |reason: String| (RefusalKind::Unauthorized, reason);
    let party = headers
        .get(PARTY_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .ok_or_else(|| unauthorized("missing or invalid x-hefl-party header".to_owned()))?;
    let parties = st.hub.plan().config.parties;
    if party as usize >= parties {
        return Err((
            RefusalKind::UnknownParty,
            format!(
                "unknown party {party}: this federation has parties 0 to {}",
                parties - 1
            ),
        ));
    }
    let token = bearer(headers)
        .ok_or_else(|| unauthorized("missing authorization: Bearer <token> header".to_owned()))?;
    if !st.tokens.check(party, token) {
        return Err(unauthorized(format!("wrong token for party {party}")));
    }
    Ok(PartyId(party))
}

/// The token of an `authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Lets a request through only with the operator's token (no party's token, no party header
/// needed); refused like any unauthenticated request otherwise.
async fn require_operator(
    State(st): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    match bearer(request.headers()) {
        Some(token) if st.tokens.check_operator(token) => {
            st.caps.authenticated(peer);
            next.run(request).await
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            "GET /v1/status and /metrics take the operator's token (the .operator file beside the tokens file)",
        )
            .into_response(),
    }
}

/// What the operator sees ([`Hub::status`]): JSON.
async fn status_handler(State(st): State<Arc<Shared>>) -> Response {
    axum::Json(st.hub.status()).into_response()
}

/// The server's metrics in Prometheus's text format ([`Metrics`]).
async fn metrics_handler(State(st): State<Arc<Shared>>) -> Response {
    let text = st.metrics.render(&st.hub, st.caps.open());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Counts every answered request (authenticated or not) by status and refusal tag, and the
/// body bytes each way by `Content-Length`: two atomic adds per request.
async fn count_requests(State(st): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let length = |headers: &HeaderMap| {
        headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let received = length(request.headers());
    let response = next.run(request).await;
    let refusal = response
        .headers()
        .get(REFUSAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let answered = Answered {
        status: response.status().as_u16(),
        refusal,
    };
    st.metrics
        .answered(answered, received, length(response.headers()));
    response
}

/// Runs before any handler and before a byte of the body is read: a request that does not
/// authenticate is answered at once (and its connection closed with the body unread), so
/// an unauthenticated peer costs the server one parsed header block.
async fn require_party(
    State(st): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    match authenticate(&st, request.headers()) {
        Ok(party) => {
            // A party's connection: never closed to make room for strangers.
            st.caps.authenticated(peer);
            request.extensions_mut().insert(party);
            next.run(request).await
        }
        Err((kind, reason)) => (status_of(kind), reason).into_response(),
    }
}

/// The plan; asking for it is how a party joins ([`Hub::join`]).
async fn plan_handler(
    State(st): State<Arc<Shared>>,
    Extension(party): Extension<PartyId>,
) -> Response {
    st.hub.join(party);
    axum::Json(Plan::clone(st.hub.plan())).into_response()
}

/// The party has loaded its data: round 0's clock may start ([`Hub::ready`]).
async fn ready_handler(
    State(st): State<Arc<Shared>>,
    Extension(party): Extension<PartyId>,
) -> Response {
    st.hub.ready(party);
    (StatusCode::OK, "noted: ready").into_response()
}

async fn update_handler(
    State(st): State<Arc<Shared>>,
    Extension(party): Extension<PartyId>,
    UrlPath(round): UrlPath<u64>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_refusal(rejection),
    };
    match st.hub.submit(party, Round(round), &body) {
        Ok(()) => (StatusCode::OK, format!("accepted for round {round}")).into_response(),
        Err(refusal) => refusal_response(&refusal),
    }
}

/// An upload whose body did not arrive: `408` when it paused longer than the body timeout
/// (tower-http's [`TimeoutError`] under the rejection), else axum's own answer (`413` over
/// the limit, `400` a broken body).
fn body_refusal(rejection: BytesRejection) -> Response {
    let timed_out = std::iter::successors(
        Some(&rejection as &(dyn std::error::Error + 'static)),
        |e| e.source(),
    )
    .any(|e| e.is::<TimeoutError>());
    if timed_out {
        (
            StatusCode::REQUEST_TIMEOUT,
            "the upload paused longer than the body timeout".to_owned(),
        )
            .into_response()
    } else {
        rejection.into_response()
    }
}

/// A published sum as a response body: every party's response reads the same bytes.
struct SharedBody(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedBody {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[derive(Deserialize)]
struct WaitQuery {
    wait_ms: Option<u64>,
    /// The oldest round the party may still ask for ([`Uplink::keep_from`]).
    keep_from: Option<u64>,
}

async fn aggregate_handler(
    State(st): State<Arc<Shared>>,
    Extension(party): Extension<PartyId>,
    UrlPath(round): UrlPath<u64>,
    Query(query): Query<WaitQuery>,
) -> Response {
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    let keep_from = query.keep_from.map(Round);
    // A long poll holds no thread: it asks the hub without waiting, and waits here for the
    // hub's next change (a round closing, the run ending), at most a second at a time (the
    // round's own deadline passes by the hub's clock, which `serve` keeps ticking).
    let until = tokio::time::Instant::now() + wait;
    let found = loop {
        let changed = st.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        match st.hub.fetch(party, Round(round), Duration::ZERO, keep_from) {
            Ok(None) if tokio::time::Instant::now() < until => {}
            other => break other,
        }
        let tick = until.min(tokio::time::Instant::now() + Duration::from_secs(1));
        tokio::select! {
            () = changed => {}
            () = tokio::time::sleep_until(tick) => {}
        }
    };
    match found {
        Ok(Some(published)) => {
            let list = |ids: &[PartyId]| {
                let ids: Vec<String> = ids.iter().map(|p| p.0.to_string()).collect();
                HeaderValue::from_str(&ids.join(","))
            };
            let parties = list(&published.parties);
            let next_set = published.next_set.as_deref().map(list);
            let void = published.void;
            // The sum's bytes are shared with every other response, not copied per party.
            let body = Bytes::from_owner(SharedBody(published.bytes));
            let mut response = (StatusCode::OK, body).into_response();
            let headers = response.headers_mut();
            if let Ok(value) = parties {
                headers.insert(PARTIES_HEADER, value);
            }
            if let Some(Ok(value)) = next_set {
                headers.insert(NEXT_SET_HEADER, value);
            }
            if void {
                headers.insert(VOID_HEADER, HeaderValue::from_static("1"));
            }
            response
        }
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(refusal) => refusal_response(&refusal),
    }
}

/// A party's report that it skipped `round` (its sum could not be a sum of valid updates):
/// logged by the hub, for the operator.
async fn skipped_handler(
    State(st): State<Arc<Shared>>,
    Extension(party): Extension<PartyId>,
    UrlPath(round): UrlPath<u64>,
    reason: String,
) -> Response {
    match st.hub.skipped(party, Round(round), &reason) {
        Ok(()) => (StatusCode::OK, format!("noted: {round} skipped")).into_response(),
        Err(refusal) => refusal_response(&refusal),
    }
}

/// Strict secure aggregation: a party left out of the open round's set asks to rejoin; the
/// first round whose set holds it in [`ROUND_HEADER`].
async fn rejoin_handler(
    State(st): State<Arc<Shared>>,
    Extension(party): Extension<PartyId>,
) -> Response {
    match st.hub.rejoin(party) {
        Ok(from) => {
            let mut response = (
                StatusCode::OK,
                format!("{party} is in the party set from {from} on"),
            )
                .into_response();
            response
                .headers_mut()
                .insert(ROUND_HEADER, HeaderValue::from(from.0));
            response
        }
        Err(refusal) => refusal_response(&refusal),
    }
}

/// A party's model snapshot of the model before round `r`.
async fn put_snapshot_handler(
    State(st): State<Arc<Shared>>,
    Extension(party): Extension<PartyId>,
    UrlPath(round): UrlPath<u64>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_refusal(rejection),
    };
    let hub = Arc::clone(&st.hub);
    // Validating a snapshot parses a megabyte or so: off the async workers.
    let kept =
        tokio::task::spawn_blocking(move || hub.put_snapshot(party, Round(round), &body)).await;
    match kept {
        Ok(Ok(())) => (
            StatusCode::OK,
            format!("model snapshot of round {round} kept"),
        )
            .into_response(),
        Ok(Err(refusal)) => refusal_response(&refusal),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The latest model snapshot, its round in [`ROUND_HEADER`].
async fn snapshot_handler(State(st): State<Arc<Shared>>) -> Response {
    match st.hub.snapshot() {
        Ok(snapshot) => {
            let mut response = (StatusCode::OK, snapshot.bytes.to_vec()).into_response();
            response
                .headers_mut()
                .insert(ROUND_HEADER, HeaderValue::from(snapshot.round.0));
            response
        }
        Err(refusal) => refusal_response(&refusal),
    }
}

/// A server certificate chain and its private key, PEM files, for serving over TLS.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key (a secret file: mode 0600, like key files).
    pub key: PathBuf,
}

/// A loaded, checked TLS server identity ([`TlsFiles::load`]).
#[derive(Clone, Debug)]
pub struct TlsIdentity(Arc<rustls::ServerConfig>);

impl TlsFiles {
    /// Reads and checks both files and pairs them into a server identity: done before the
    /// server listens, so a bad certificate never follows a `listening on` line. Refuses a
    /// key file that group or others can read, an empty chain, and a key that does not
    /// match the certificate.
    pub fn load(&self) -> Result<TlsIdentity, TransportError> {
        let cert_pem = read_cert_file(&self.cert).map_err(|source| TlsError::Read {
            path: self.cert.clone(),
            source,
        })?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                path: self.cert.clone(),
                what: "certificate chain",
                reason: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::Empty {
                path: self.cert.clone(),
            }
            .into());
        }
        let key_pem = secret_file::read_private(&self.key, MAX_CERT_FILE)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
            path: self.key.clone(),
            what: "private key",
            reason: e.to_string(),
        })?;
        let identity = |source| TlsError::Identity {
            cert: self.cert.clone(),
            key: self.key.clone(),
            source,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(identity)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(identity)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsIdentity(Arc::new(config)))
    }
}

/// A certificate file's bytes: a regular file of at most [`MAX_CERT_FILE`] bytes.
fn read_cert_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if metadata.len() > MAX_CERT_FILE {
        return Err(std::io::Error::other(format!(
            "{} bytes, expected at most {MAX_CERT_FILE}",
            metadata.len()
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CERT_FILE).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The routes, behind the limits: a `Content-Length` above the largest valid message (of any
/// kind) gets `413` before anything else, and one above the route's own limit right after
/// authentication; then every request authenticates from its headers
/// ([`require_party`]) before its body is read; an upload must keep arriving (no gap longer
/// than `body_timeout`) and finish within its deadline ([`Limits::upload_deadline`]).
fn router(shared: Arc<Shared>, limits: &Limits) -> Router {
    let body_limit = shared.hub.max_submission_len();
    let snapshot_limit = shared.hub.max_snapshot_len();
    let upload_deadline = limits.upload_deadline(body_limit);
    Router::new()
        .route("/v1/plan", get(plan_handler))
        .route("/v1/ready", post(ready_handler))
        .route(
            "/v1/rounds/{round}/update",
            post(update_handler)
                .layer::<_, Infallible>(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    upload_deadline,
                ))
                .layer::<_, Infallible>(DefaultBodyLimit::max(body_limit))
                .layer::<_, Infallible>(RequestBodyLimitLayer::new(body_limit)),
        )
        .route("/v1/rounds/{round}/aggregate", get(aggregate_handler))
        .route(
            "/v1/rounds/{round}/rejoin",
            post(rejoin_handler).layer(DefaultBodyLimit::max(0)),
        )
        .route(
            "/v1/rounds/{round}/skipped",
            post(skipped_handler).layer(DefaultBodyLimit::max(MAX_SKIP_REASON)),
        )
        .route(
            "/v1/snapshot/{round}",
            put(put_snapshot_handler)
                .layer::<_, Infallible>(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    limits.upload_deadline(snapshot_limit),
                ))
                .layer::<_, Infallible>(DefaultBodyLimit::max(snapshot_limit))
                .layer::<_, Infallible>(RequestBodyLimitLayer::new(snapshot_limit)),
        )
        .route("/v1/snapshot", get(snapshot_handler))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            require_party,
        ))
        .merge(
            Router::new()
                .route("/v1/status", get(status_handler))
                .route("/metrics", get(metrics_handler))
                .route_layer(middleware::from_fn_with_state(
                    Arc::clone(&shared),
                    require_operator,
                )),
        )
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            count_requests,
        ))
        .layer(RequestBodyTimeoutLayer::new(limits.body_timeout))
        .layer(DefaultBodyLimit::max(body_limit.max(snapshot_limit)))
        .layer(RequestBodyLimitLayer::new(body_limit.max(snapshot_limit)))
        .with_state(shared)
}

/// Serves `hub`'s rounds on `listener` (over TLS with `tls`) until the hub's run is over
/// ([`Hub::wait_finished`]), then returns what was published. `limits` bound what any peer
/// can hold; `log` receives a line when a connection cap is reached.
pub fn serve(
    listener: std::net::TcpListener,
    hub: Arc<Hub>,
    tokens: Tokens,
    tls: Option<TlsIdentity>,
    limits: &Limits,
    log: impl Fn(&str) + Send + Sync + 'static,
) -> Result<ServeReport, TransportError> {
    let caps = PeerCaps::new(limits, log);
    let changed = Arc::new(tokio::sync::Notify::new());
    hub.watch({
        let changed = Arc::clone(&changed);
        move || changed.notify_waiters()
    });
    let shared = Arc::new(Shared {
        hub: Arc::clone(&hub),
        tokens,
        caps: caps.clone(),
        changed,
        metrics: Metrics::new(),
    });
    let app = router(shared, limits);
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let sweeper = tokio::spawn(caps.clone().sweep_every());
        let handle = axum_server::Handle::new();
        let stopper = {
            let (hub, handle, caps) = (Arc::clone(&hub), handle.clone(), caps.clone());
            tokio::spawn(async move {
                let _ = tokio::task::spawn_blocking(move || hub.wait_finished()).await;
                caps.close_strangers();
                handle.graceful_shutdown(Some(Duration::from_secs(5)));
            })
        };
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        let server = axum_server::from_tcp(listener)?.handle(handle);
        match tls {
            None => {
                let mut server = server.acceptor(caps).http1_only();
                limits.tune(server.http_builder());
                server.serve(service).await?
            }
            Some(TlsIdentity(config)) => {
                let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(
                    axum_server::tls_rustls::RustlsConfig::from_config(config),
                )
                .handshake_timeout(limits.header_timeout)
                .acceptor(caps);
                let mut server = server.acceptor(acceptor).http1_only();
                limits.tune(server.http_builder());
                server.serve(service).await?
            }
        }
        stopper.abort();
        sweeper.abort();
        Ok::<(), std::io::Error>(())
    })?;
    // The serving loop ended (finished, or the listener failed): release any waiter.
    hub.stop();
    Ok(hub.report())
}

/// A party's connection to a server: implements [`Uplink`] over HTTP.
pub struct HttpUplink {
    agent: ureq::Agent,
    base: String,
    party: u32,
    authorization: String,
    /// Largest aggregate or snapshot body accepted (set from the plan).
    max_body: u64,
}

impl HttpUplink {
    /// A connection to the server at `base` (e.g. `http://127.0.0.1:7878`) as `party`.
    /// An `https://` server is verified against the usual web roots.
    pub fn new(base: &str, party: u32, token: &str) -> Self {
        Self::with_agent(base, party, token, Self::config_builder().build().into())
    }

    /// Like [`HttpUplink::new`], trusting only the CA certificate(s) in the PEM file
    /// `ca_file` (e.g. a self-signed server certificate).
    pub fn with_ca(
        base: &str,
        party: u32,
        token: &str,
        ca_file: &Path,
    ) -> Result<Self, TransportError> {
        let pem = read_cert_file(ca_file).map_err(|source| TlsError::Read {
            path: ca_file.to_path_buf(),
            source,
        })?;
        let certs = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                path: ca_file.to_path_buf(),
                what: "CA certificate",
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsError::Empty {
                path: ca_file.to_path_buf(),
            }
            .into());
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
            max_body: 1 << 20,
        }
    }

    fn unreachable(&self, e: ureq::Error) -> UplinkError {
        UplinkError::Unreachable {
            server: self.base.clone(),
            reason: e.to_string(),
        }
    }

    fn refused(status: StatusCode, body: &str) -> UplinkError {
        UplinkError::Refused {
            kind: kind_of(status),
            reason: format!("{status}: {}", body.trim()),
        }
    }

    /// Fetches and validates the run's plan.
    pub fn plan(&mut self) -> Result<ValidPlan, UplinkError> {
        let mut response = self
            .agent
            .get(format!("{}/v1/plan", self.base))
            .header(PARTY_HEADER, self.party.to_string())
            .header("authorization", &self.authorization)
            .call()
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let body = response
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .map_err(|e| self.unreachable(e))?;
        if status != StatusCode::OK {
            return Err(Self::refused(status, &body));
        }
        let plan: Plan = serde_json::from_str(&body).map_err(MalformedAnswer::from)?;
        let plan = plan.validate().map_err(UplinkError::Plan)?;
        let snapshot = plan.max_snapshot_len().map_err(UplinkError::Plan)?;
        self.max_body = plan.max_message_len().max(snapshot) as u64;
        Ok(plan)
    }

    /// Sends `body` with `method` to `path` under the base; returns the (short) answer.
    fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Answer, UplinkError> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "PUT" => self.agent.put(url),
            _ => self.agent.post(url),
        };
        let mut response = request
            .header(PARTY_HEADER, self.party.to_string())
            .header("authorization", &self.authorization)
            .header("content-type", content_type)
            .send(body)
            .map_err(|e| self.unreachable(e))?;
        let tag = response
            .headers()
            .get(REFUSAL_HEADER)
            .map(|v| v.as_bytes().to_vec());
        let round = round_header(response.headers());
        let body = response
            .body_mut()
            .with_config()
            .limit(1 << 16)
            .read_to_string()
            .unwrap_or_default();
        Ok(Answer {
            status: response.status(),
            tag,
            round,
            body,
        })
    }

    /// GETs `path`, long-polling while the server answers `204`; returns the status, the
    /// headers and the body (at most the plan's largest message).
    fn get(&self, path: &str) -> Result<(StatusCode, HeaderMap, Vec<u8>), UplinkError> {
        loop {
            let mut response = self
                .agent
                .get(format!("{}{path}", self.base))
                .header(PARTY_HEADER, self.party.to_string())
                .header("authorization", &self.authorization)
                .call()
                .map_err(|e| self.unreachable(e))?;
            let status = response.status();
            if status == StatusCode::NO_CONTENT {
                continue;
            }
            let headers = response.headers().clone();
            let body = response
                .body_mut()
                .with_config()
                .limit(self.max_body)
                .read_to_vec()
                .map_err(|e| self.unreachable(e))?;
            if status != StatusCode::OK {
                return Err(Self::refused(status, &String::from_utf8_lossy(&body)));
            }
            return Ok((status, headers, body));
        }
    }
}

/// A short answer to a request that sent a body.
struct Answer {
    status: StatusCode,
    /// The [`REFUSAL_HEADER`] tag.
    tag: Option<Vec<u8>>,
    /// The [`ROUND_HEADER`] round.
    round: Option<u64>,
    body: String,
}

/// The round in [`ROUND_HEADER`], if the answer carries one.
fn round_header(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(ROUND_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

impl Uplink for HttpUplink {
    fn submit(&mut self, round: Round, bytes: &[u8]) -> Result<Submitted, UplinkError> {
        let path = format!("/v1/rounds/{}/update", round.0);
        let answer = self.send("POST", &path, "application/octet-stream", bytes)?;
        match (answer.status, answer.tag.as_deref(), answer.round) {
            (StatusCode::OK, _, _) => Ok(Submitted::Accepted),
            (StatusCode::CONFLICT, Some(b"late"), Some(open)) => {
                Ok(Submitted::Late { open: Round(open) })
            }
            (StatusCode::CONFLICT, Some(b"duplicate"), _) => Ok(Submitted::AlreadyIn),
            (StatusCode::CONFLICT, Some(b"not-in-set"), Some(open)) => {
                Ok(Submitted::NotInSet { open: Round(open) })
            }
            (StatusCode::UNPROCESSABLE_ENTITY, Some(b"seed-taken"), _) => Ok(Submitted::Taken),
            (status, _, _) => Err(Self::refused(status, &answer.body)),
        }
    }

    fn skipped(&mut self, round: Round, reason: &str) -> Result<(), UplinkError> {
        let path = format!("/v1/rounds/{}/skipped", round.0);
        let answer = self.send(
            "POST",
            &path,
            "text/plain; charset=utf-8",
            reason.as_bytes(),
        )?;
        if answer.status == StatusCode::OK {
            return Ok(());
        }
        Err(Self::refused(answer.status, &answer.body))
    }

    /// Waits for the sum as long as the server says it is coming (`204`): a stalled
    /// server gives up by itself (its idle timeout), and a lost one is the caller's to
    /// retry.
    fn fetch(&mut self, round: Round, keep_from: Option<Round>) -> Result<Published, UplinkError> {
        let path = format!(
            "/v1/rounds/{}/aggregate?wait_ms={}{}",
            round.0,
            MAX_WAIT.as_millis(),
            keep_from.map_or(String::new(), |k| format!("&keep_from={}", k.0))
        );
        let (_, headers, body) = self.get(&path)?;
        let list = |header: &'static str| {
            headers.get(header).map(|v| {
                v.to_str()
                    .ok()
                    .and_then(|v| {
                        v.split(',')
                            .filter(|s| !s.is_empty())
                            .map(|s| s.trim().parse().map(PartyId).ok())
                            .collect::<Option<Vec<_>>>()
                    })
                    .ok_or(MalformedAnswer::Header { round, header })
            })
        };
        let void = match headers.get(VOID_HEADER) {
            None => false,
            Some(v) if v == "1" && body.is_empty() => true,
            Some(_) => {
                return Err(MalformedAnswer::Header {
                    round,
                    header: VOID_HEADER,
                }
                .into());
            }
        };
        let parties = match list(PARTIES_HEADER) {
            Some(Ok(p)) if void || !p.is_empty() => p,
            _ => {
                return Err(MalformedAnswer::Header {
                    round,
                    header: PARTIES_HEADER,
                }
                .into());
            }
        };
        let next_set = list(NEXT_SET_HEADER).transpose()?;
        Ok(Published {
            round,
            parties,
            bytes: Arc::new(body),
            void,
            next_set,
        })
    }

    fn rejoin(&mut self, round: Round) -> Result<Round, UplinkError> {
        let path = format!("/v1/rounds/{}/rejoin", round.0);
        let answer = self.send("POST", &path, "text/plain; charset=utf-8", b"")?;
        match (answer.status, answer.round) {
            (StatusCode::OK, Some(from)) => Ok(Round(from)),
            (StatusCode::OK, None) => Err(MalformedAnswer::Header {
                round,
                header: ROUND_HEADER,
            }
            .into()),
            (status, _) => Err(Self::refused(status, &answer.body)),
        }
    }

    fn put_snapshot(&mut self, round: Round, bytes: &[u8]) -> Result<(), UplinkError> {
        let path = format!("/v1/snapshot/{}", round.0);
        let answer = self.send("PUT", &path, "application/octet-stream", bytes)?;
        if answer.status == StatusCode::OK {
            return Ok(());
        }
        Err(Self::refused(answer.status, &answer.body))
    }

    fn ready(&mut self) -> Result<(), UplinkError> {
        let answer = self.send("POST", "/v1/ready", "text/plain; charset=utf-8", b"")?;
        if answer.status == StatusCode::OK {
            return Ok(());
        }
        Err(Self::refused(answer.status, &answer.body))
    }

    fn snapshot(&mut self) -> Result<ModelSnapshot, UplinkError> {
        let (_, headers, body) = self.get("/v1/snapshot")?;
        let round = round_header(&headers).ok_or(MalformedAnswer::Header {
            round: Round(0),
            header: ROUND_HEADER,
        })?;
        Ok(ModelSnapshot {
            round: Round(round),
            bytes: Arc::new(body),
        })
    }
}
