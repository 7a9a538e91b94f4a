//! What one peer may hold of the server: time limits on every stage of a request, and caps
//! on open connections.
//!
//! The stack enforces almost all of it: hyper closes a connection whose request headers do
//! not arrive within [`Limits::header_timeout`] (idle keep-alive connections included),
//! rustls's acceptor bounds the TLS handshake by the same time, and tower-http layers answer
//! an oversized `Content-Length` with `413` before reading, cut off a body that pauses longer
//! than [`Limits::body_timeout`], and end an upload that takes longer than its
//! [`Limits::upload_deadline`]. The connection caps are the one piece no layer offers (tower's
//! concurrency limits count requests, not sockets, and know no peer addresses):
//! [`PeerCaps`] counts sockets as they are accepted and closes those over a cap at once.

use crate::fl::{ConfigError, Field};
use axum_server::accept::Accept;
use std::collections::{HashMap, HashSet};
use std::future::{Ready, ready};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Largest buffer hyper keeps for one connection's unparsed input (hyper's minimum is 8 KiB).
/// Request headers must fit in it: ours are a few hundred bytes.
const MAX_CONNECTION_BUFFER: usize = 16 << 10;

/// Bounds on what any peer, authenticated or not, can make the server hold.
///
/// ```
/// use hefl::transport::Limits;
/// use std::time::Duration;
///
/// let limits = Limits::default();
/// limits.validate()?;
/// // A maximal demo upload (1.6 MB) at the default floor of 16 KiB/s, plus one body timeout:
/// assert_eq!(limits.upload_deadline(1_638_536), Duration::from_secs_f64(10.0 + 1_638_536.0 / 16_384.0));
/// let bad = Limits { max_connections_per_peer: 0, ..Limits::default() };
/// assert!(bad.validate().unwrap_err().to_string().contains("max_connections_per_peer"));
/// # Ok::<(), hefl::fl::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Time a connection has to deliver a request's headers, counted from when it opens or
    /// from the end of its previous response (so it also closes idle connections), and the
    /// TLS handshake's limit. Default 10 s.
    pub header_timeout: Duration,
    /// Longest pause within a request body. Default 10 s.
    pub body_timeout: Duration,
    /// Slowest upload accepted, in bytes per second: an update must arrive within
    /// [`Limits::upload_deadline`]. Default 16 KiB/s.
    pub min_upload_rate: u64,
    /// Connections open at once, in total. Default 512.
    pub max_connections: usize,
    /// Connections open at once from one IP address. Default 64.
    pub max_connections_per_peer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            min_upload_rate: 16 << 10,
            max_connections: 512,
            max_connections_per_peer: 64,
        }
    }
}

/// Shortest and longest time limits accepted.
const TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(3600));
/// Most connections a server may be told to hold.
pub const MAX_CONNECTIONS: usize = 100_000;

impl Limits {
    /// Checks every bound: time limits from 100 ms to 1 h, a positive upload rate of at most
    /// 1 GiB/s, 1 to 100,000 connections, and a per-peer cap no larger than the total.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            (Field::HeaderTimeout, self.header_timeout),
            (Field::BodyTimeout, self.body_timeout),
        ] {
            if !(TIMEOUT_RANGE.0..=TIMEOUT_RANGE.1).contains(&value) {
                return Err(ConfigError::Invalid {
                    field,
                    expected: "a duration from 100ms to 1h".into(),
                    found: format!("{value:?}"),
                });
            }
        }
        if !(1..=1 << 30).contains(&self.min_upload_rate) {
            return Err(ConfigError::Invalid {
                field: Field::MinUploadRate,
                expected: "1 to 1073741824 bytes per second".into(),
                found: self.min_upload_rate.to_string(),
            });
        }
        crate::fl::check_range(
            Field::MaxConnections,
            self.max_connections,
            1,
            MAX_CONNECTIONS,
        )?;
        crate::fl::check_range(
            Field::MaxConnectionsPerPeer,
            self.max_connections_per_peer,
            1,
            self.max_connections,
        )
    }

    /// Longest an upload of at most `max_len` bytes may take: one body timeout plus
    /// `max_len` at [`Limits::min_upload_rate`].
    pub fn upload_deadline(&self, max_len: usize) -> Duration {
        self.body_timeout + Duration::from_secs_f64(max_len as f64 / self.min_upload_rate as f64)
    }

    /// Applies the connection-level limits to hyper's HTTP/1 settings.
    pub(crate) fn tune(
        &self,
        builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    ) {
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .max_buf_size(MAX_CONNECTION_BUFFER);
    }
}

/// Counts open connections in total and per peer address, and refuses (closes at once)
/// those over [`Limits::max_connections`] or [`Limits::max_connections_per_peer`], logging
/// one line when a cap is reached (again only once the count has fallen to half the cap).
#[derive(Clone)]
pub(crate) struct PeerCaps {
    inner: Arc<Caps>,
}

struct Caps {
    max_total: usize,
    max_per_peer: usize,
    open: Mutex<Open>,
    log: Box<dyn Fn(&str) + Send + Sync>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
    warned_total: bool,
    warned_peers: HashSet<IpAddr>,
}

impl PeerCaps {
    pub(crate) fn new(limits: &Limits, log: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self {
            inner: Arc::new(Caps {
                max_total: limits.max_connections,
                max_per_peer: limits.max_connections_per_peer,
                open: Mutex::new(Open::default()),
                log: Box::new(log),
            }),
        }
    }

    fn admit(&self, stream: TcpStream) -> io::Result<Counted> {
        let peer = stream.peer_addr()?.ip();
        let caps = &self.inner;
        let mut open = caps.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= caps.max_total {
            if !open.warned_total {
                open.warned_total = true;
                (caps.log)(&format!(
                    "connection limit reached: {} open (--max-connections); refusing new connections",
                    open.total
                ));
            }
            return Err(io::Error::other("connection limit reached"));
        }
        let count = open.per_peer.get(&peer).copied().unwrap_or(0);
        if count >= caps.max_per_peer {
            if open.warned_peers.insert(peer) {
                (caps.log)(&format!(
                    "connection limit reached for {peer}: {count} open (--max-connections-per-peer); refusing its new connections"
                ));
            }
            return Err(io::Error::other("per-peer connection limit reached"));
        }
        open.per_peer.insert(peer, count + 1);
        open.total += 1;
        drop(open);
        // Small requests and answers: send them at once.
        stream.set_nodelay(true)?;
        Ok(Counted {
            stream,
            _slot: Slot {
                caps: Arc::clone(&self.inner),
                peer,
            },
        })
    }
}

impl<S> Accept<TcpStream, S> for PeerCaps {
    type Stream = Counted;
    type Service = S;
    type Future = Ready<io::Result<(Counted, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        ready(self.admit(stream).map(|stream| (stream, service)))
    }
}

/// One counted connection's place; given back when the connection is dropped.
struct Slot {
    caps: Arc<Caps>,
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let caps = &self.caps;
        let mut guard = caps.open.lock().unwrap_or_else(|p| p.into_inner());
        let open = &mut *guard;
        open.total = open.total.saturating_sub(1);
        if open.total <= caps.max_total / 2 {
            open.warned_total = false;
        }
        if let Some(count) = open.per_peer.get_mut(&self.peer) {
            *count = count.saturating_sub(1);
            if *count <= caps.max_per_peer / 2 {
                open.warned_peers.remove(&self.peer);
            }
            if *count == 0 {
                open.per_peer.remove(&self.peer);
            }
        }
    }
}

/// An accepted TCP stream that holds its [`Slot`] while it is open.
pub(crate) struct Counted {
    stream: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
