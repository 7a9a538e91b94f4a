//! The server's Prometheus metrics (`GET /metrics`, behind the operator's token), kept with
//! `prometheus-client`: requests answered by status and refusal, bytes received and sent,
//! open connections, rounds and their durations.
//!
//! Counting costs one atomic add per request (a middleware that reads the response's status
//! and `Content-Length`); the rest is read from [`Hub::status`] when metrics are asked for,
//! so nothing is computed for an operator who never asks.

use crate::fl::Hub;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Mutex;

/// A request's answer, as counted.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Answered {
    /// The HTTP status.
    pub status: u16,
    /// The refusal's tag (`late`, `duplicate`, `seed-taken`, ...), empty for others.
    pub refusal: String,
}

/// The server's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<Answered, Counter>,
    bytes_received: Counter,
    bytes_sent: Counter,
    connections: Gauge<i64, std::sync::atomic::AtomicI64>,
    open_round: Gauge<i64, std::sync::atomic::AtomicI64>,
    parties_gone: Gauge<i64, std::sync::atomic::AtomicI64>,
    round_seconds: Histogram,
    /// The last round observed in `round_seconds` (rounds are observed as metrics are
    /// asked for, from the hub's last 16).
    observed: Mutex<Option<u64>>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("hefl");
        let requests = Family::<Answered, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by status and refusal tag",
            requests.clone(),
        );
        let bytes_received = Counter::default();
        registry.register(
            "received_bytes",
            "Request body bytes received (Content-Length)",
            bytes_received.clone(),
        );
        let bytes_sent = Counter::default();
        registry.register(
            "sent_bytes",
            "Response body bytes sent (Content-Length)",
            bytes_sent.clone(),
        );
        let connections = Gauge::default();
        registry.register("connections", "Open connections", connections.clone());
        let open_round = Gauge::default();
        registry.register(
            "open_round",
            "The open round (rounds published)",
            open_round.clone(),
        );
        let parties_gone = Gauge::default();
        registry.register(
            "parties_gone",
            "Parties the server counts as gone",
            parties_gone.clone(),
        );
        // 1 ms to about 65 s.
        let round_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register(
            "round_seconds",
            "Seconds from one round's close to the next's",
            round_seconds.clone(),
        );
        Self {
            registry,
            requests,
            bytes_received,
            bytes_sent,
            connections,
            open_round,
            parties_gone,
            round_seconds,
            observed: Mutex::new(None),
        }
    }

    /// Counts one answered request.
    pub(crate) fn answered(&self, answered: Answered, received: u64, sent: u64) {
        self.requests.get_or_create(&answered).inc();
        self.bytes_received.inc_by(received);
        self.bytes_sent.inc_by(sent);
    }

    /// The metrics in Prometheus's text format, `hub`'s state and `connections` read now.
    pub(crate) fn render(&self, hub: &Hub, connections: usize) -> String {
        let status = hub.status();
        self.open_round
            .set(i64::try_from(status.round).unwrap_or(i64::MAX));
        self.parties_gone
            .set(status.parties.iter().filter(|p| p.gone).count() as i64);
        self.connections
            .set(i64::try_from(connections).unwrap_or(i64::MAX));
        {
            let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
            for round in &status.recent_rounds {
                if observed.is_none_or(|last| round.round > last) {
                    self.round_seconds.observe(round.seconds);
                    *observed = Some(round.round);
                }
            }
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
