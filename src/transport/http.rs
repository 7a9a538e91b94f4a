//! The network transport: the round protocol over HTTP/1.1, served with axum (hyper, tokio)
//! and called with ureq.
//!
//! | request | what it does |
//! |---|---|
//! | `GET /v1/plan` | the run's [`Plan`](crate::fl::Plan) as JSON |
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
//! This module only moves bytes: the handlers call the federation's [`Hub`], exactly as the
//! in-process [`HubUplink`](crate::fl::HubUplink) does, and [`HttpUplink`] is the party's
//! side for [`run_party`](crate::fl::run_party).

use super::tokens::Tokens;
use crate::fl::{
    Hub, PartyId, Plan, Published, Refusal, RefusalKind, Round, ServeReport, Submitted, Uplink,
    UplinkError, ValidPlan,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Header naming the requesting party.
pub const PARTY_HEADER: &str = "x-hefl-party";
/// Header listing the parties in a published sum, comma-separated.
pub const PARTIES_HEADER: &str = "x-hefl-parties";
/// Header set to `late` on the refusal of an update whose round already closed.
pub const REFUSAL_HEADER: &str = "x-hefl-refusal";
/// Longest a single aggregate request waits before answering `204 No Content`.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// Errors running the server.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A socket, runtime or certificate error.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
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
    ]
    .into_iter()
    .find(|&kind| status_of(kind) == status)
    .unwrap_or(RefusalKind::Other)
}

struct Shared {
    hub: Arc<Hub>,
    tokens: Tokens,
}

fn unauthorized(reason: String) -> Response {
    (status_of(RefusalKind::Unauthorized), reason).into_response()
}

fn refusal_response(refusal: &Refusal) -> Response {
    let mut response = (status_of(RefusalKind::from(refusal)), refusal.to_string()).into_response();
    if refusal.is_late() {
        response
            .headers_mut()
            .insert(REFUSAL_HEADER, HeaderValue::from_static("late"));
    }
    response
}

/// The party a request authenticates as, or the reason for a `401`.
fn authenticate(tokens: &Tokens, headers: &HeaderMap) -> Result<PartyId, String> {
    let party = headers
        .get(PARTY_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .ok_or_else(|| "missing or invalid x-hefl-party header".to_owned())?;
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| "missing authorization: Bearer <token> header".to_owned())?;
    if !tokens.check(party, token) {
        return Err(format!("wrong token for party {party}"));
    }
    Ok(PartyId(party))
}

async fn plan_handler(State(st): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match authenticate(&st.tokens, &headers) {
        Ok(_) => axum::Json(Plan::clone(st.hub.plan())).into_response(),
        Err(reason) => unauthorized(reason),
    }
}

async fn update_handler(
    State(st): State<Arc<Shared>>,
    UrlPath(round): UrlPath<u64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let party = match authenticate(&st.tokens, &headers) {
        Ok(p) => p,
        Err(reason) => return unauthorized(reason),
    };
    match st.hub.submit(party, Round(round), &body) {
        Ok(()) => (StatusCode::OK, format!("accepted for round {round}")).into_response(),
        Err(refusal) => refusal_response(&refusal),
    }
}

#[derive(Deserialize)]
struct WaitQuery {
    wait_ms: Option<u64>,
}

async fn aggregate_handler(
    State(st): State<Arc<Shared>>,
    UrlPath(round): UrlPath<u64>,
    Query(query): Query<WaitQuery>,
    headers: HeaderMap,
) -> Response {
    let party = match authenticate(&st.tokens, &headers) {
        Ok(p) => p,
        Err(reason) => return unauthorized(reason),
    };
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    let hub = Arc::clone(&st.hub);
    let found = tokio::task::spawn_blocking(move || hub.fetch(party, Round(round), wait)).await;
    match found {
        Ok(Ok(Some(published))) => {
            let parties: Vec<String> = published.parties.iter().map(|p| p.0.to_string()).collect();
            let mut response = (StatusCode::OK, published.bytes.to_vec()).into_response();
            if let Ok(value) = HeaderValue::from_str(&parties.join(",")) {
                response.headers_mut().insert(PARTIES_HEADER, value);
            }
            response
        }
        Ok(Ok(None)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(refusal)) => refusal_response(&refusal),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
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

/// Serves `hub`'s rounds on `listener` (over TLS with `tls`) until the hub's run is over
/// ([`Hub::wait_finished`]), then returns what was published.
pub fn serve(
    listener: std::net::TcpListener,
    hub: Arc<Hub>,
    tokens: Tokens,
    tls: Option<TlsFiles>,
) -> Result<ServeReport, TransportError> {
    let body_limit = hub.max_submission_len();
    let shared = Arc::new(Shared {
        hub: Arc::clone(&hub),
        tokens,
    });
    let app = Router::new()
        .route("/v1/plan", get(plan_handler))
        .route("/v1/rounds/{round}/update", post(update_handler))
        .route("/v1/rounds/{round}/aggregate", get(aggregate_handler))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(shared);
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let handle = axum_server::Handle::new();
        let stopper = {
            let (hub, handle) = (Arc::clone(&hub), handle.clone());
            tokio::spawn(async move {
                let _ = tokio::task::spawn_blocking(move || hub.wait_finished()).await;
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
            .map_err(|e| UplinkError::Malformed(format!("CA certificate: {e}")))?;
        if certs.is_empty() {
            return Err(UplinkError::Malformed(
                "no certificate in the CA file".into(),
            ));
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
        let plan: Plan = serde_json::from_str(&body)
            .map_err(|e| UplinkError::Malformed(format!("the plan does not parse: {e}")))?;
        let plan = plan.validate().map_err(UplinkError::Plan)?;
        self.give_up = plan
            .round_timeout
            .saturating_mul(4)
            .max(Duration::from_secs(60));
        self.max_body = plan.max_message_len() as u64;
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
        let status = response.status();
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
            StatusCode::OK => Ok(Submitted::Accepted),
            StatusCode::CONFLICT if late => Ok(Submitted::Late(body.trim().to_owned())),
            _ => Err(Self::refused(status, &body)),
        }
    }

    fn fetch(&mut self, round: Round) -> Result<Published, UplinkError> {
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
            let status = response.status();
            if status == StatusCode::NO_CONTENT {
                if started.elapsed() > self.give_up {
                    return Err(UplinkError::NotPublished {
                        round,
                        waited: self.give_up,
                    });
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
            if status != StatusCode::OK {
                return Err(Self::refused(status, &String::from_utf8_lossy(&body)));
            }
            let parties = match parties {
                Some(Ok(p)) if !p.is_empty() => p,
                _ => {
                    return Err(UplinkError::Malformed(format!(
                        "{round}: missing or malformed {PARTIES_HEADER} header"
                    )));
                }
            };
            return Ok(Published {
                round,
                parties,
                bytes: Arc::new(body),
            });
        }
    }
}
