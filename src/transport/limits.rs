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
//! [`PeerCaps`] counts sockets as they are accepted, closes those over the per-address cap at
//! once, and keeps room for the parties: when the total is reached it closes the oldest
//! connection that has not authenticated.

use crate::fl::{ConfigError, Field};
use atomic_waker::AtomicWaker;
use axum_server::accept::Accept;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::{Ready, ready};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
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
    /// Time a new connection has to carry a request that authenticates (a party id and its
    /// token, in its first request's headers); closed after it otherwise. Default 3 s.
    pub auth_timeout: Duration,
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
            auth_timeout: Duration::from_secs(3),
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
            (Field::AuthTimeout, self.auth_timeout),
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

/// Counts open connections in total and per peer address, and keeps room for the parties.
///
/// A connection is *unauthenticated* until one of its requests authenticates (a party id and
/// its token, checked from the headers: [`PeerCaps::authenticated`]); it must do so within
/// [`Limits::auth_timeout`], or it is closed. Unauthenticated connections count against
/// [`Limits::max_connections_per_peer`] for their address (those over it are closed at once).
/// Authenticated connections count in the total only (parties behind one NAT each hold a long
/// poll) and are never closed to make room.
///
/// When [`Limits::max_connections`] are open, a new connection waits in a small overflow
/// pool for [`OVERFLOW_GRACE`]: if its first request authenticates in that time, the oldest
/// unauthenticated connection is closed to make room for it; if not, it is closed. So a flood
/// of connections that never authenticate, from any number of addresses, cannot keep a party
/// with a token from being served, and each flooding socket costs at most a grace period
/// before it is closed (no churn of strangers closing each other). A new connection is
/// refused at once only when the overflow pool is full. One line is logged when a cap is
/// reached (again only once the count has fallen to half the cap).
#[derive(Clone)]
pub(crate) struct PeerCaps {
    inner: Arc<Caps>,
}

struct Caps {
    max_total: usize,
    max_per_peer: usize,
    auth_timeout: Duration,
    open: Mutex<Open>,
    log: Box<dyn Fn(&str) + Send + Sync>,
}

/// One open connection's record.
struct Conn {
    /// Admission order, to tell a connection from a later one at the same address.
    seq: u64,
    /// When it must have authenticated.
    deadline: Instant,
    authenticated: bool,
    /// In the overflow pool (admitted over the total cap, not counted in it).
    overflow: bool,
    close: Arc<Closer>,
}

#[derive(Default)]
struct Open {
    /// Connections counted against the total cap.
    total: usize,
    /// Connections in the overflow pool.
    overflow: usize,
    /// Unauthenticated connections per address.
    per_peer: HashMap<IpAddr, usize>,
    conns: HashMap<SocketAddr, Conn>,
    /// Unauthenticated connections of the main pool, in admission order (entries of
    /// connections since authenticated or closed are skipped when met).
    waiting: VecDeque<(u64, SocketAddr)>,
    /// The same for the overflow pool.
    overflowing: VecDeque<(u64, SocketAddr)>,
    next_seq: u64,
    warned_total: bool,
    warned_peers: HashSet<IpAddr>,
}

/// How long a connection admitted over the total cap has to authenticate.
pub(crate) const OVERFLOW_GRACE: Duration = Duration::from_secs(1);
/// Most connections in the overflow pool at once: a quarter of the total cap, at least 64.
/// (Holding a stranger for its grace, rather than refusing it at once, is what keeps a flood
/// from spinning: a refused socket reconnects at once.)
fn max_overflow(max_total: usize) -> usize {
    (max_total / 4).max(64)
}

impl Open {
    /// Forgets `addr`'s connection (closing it); returns whether it was open.
    fn release(&mut self, addr: &SocketAddr, caps: &Caps) -> bool {
        let Some(conn) = self.conns.remove(addr) else {
            return false;
        };
        conn.close.close();
        if conn.overflow {
            self.overflow = self.overflow.saturating_sub(1);
        } else {
            self.total = self.total.saturating_sub(1);
            if self.total <= caps.max_total / 2 {
                self.warned_total = false;
            }
        }
        if !conn.authenticated {
            self.uncount_peer(addr.ip(), caps.max_per_peer);
        }
        true
    }

    fn uncount_peer(&mut self, ip: IpAddr, max_per_peer: usize) {
        if let Some(count) = self.per_peer.get_mut(&ip) {
            *count = count.saturating_sub(1);
            if *count <= max_per_peer / 2 {
                self.warned_peers.remove(&ip);
            }
            if *count == 0 {
                self.per_peer.remove(&ip);
            }
        }
    }

    /// The oldest connection of `queue` still unauthenticated there, if any.
    fn oldest(&mut self, overflow: bool) -> Option<SocketAddr> {
        loop {
            let queue = if overflow {
                &mut self.overflowing
            } else {
                &mut self.waiting
            };
            let &(seq, addr) = queue.front()?;
            match self.conns.get(&addr) {
                Some(c) if c.seq == seq && !c.authenticated && c.overflow == overflow => {
                    return Some(addr);
                }
                _ => {
                    queue.pop_front();
                }
            }
        }
    }

    /// Closes the connections of one pool whose deadline has passed; returns how many.
    fn expire(&mut self, overflow: bool, now: Instant, caps: &Caps) -> usize {
        let mut closed = 0;
        while let Some(addr) = self.oldest(overflow) {
            if self.conns.get(&addr).is_some_and(|c| c.deadline > now) {
                break;
            }
            self.release(&addr, caps);
            closed += 1;
        }
        closed
    }
}

/// Closes one connection from outside: its stream's next read or write fails.
#[derive(Default)]
struct Closer {
    closed: AtomicBool,
    waker: AtomicWaker,
}

impl Closer {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.waker.wake();
    }
}

impl PeerCaps {
    pub(crate) fn new(limits: &Limits, log: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self {
            inner: Arc::new(Caps {
                max_total: limits.max_connections,
                max_per_peer: limits.max_connections_per_peer,
                auth_timeout: limits.auth_timeout,
                open: Mutex::new(Open::default()),
                log: Box::new(log),
            }),
        }
    }

    /// Connections open now (counted against the cap, and in the overflow pool).
    pub(crate) fn open(&self) -> usize {
        let open = self.inner.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total + open.overflow
    }

    /// Notes that the connection from `addr` carried a request that authenticated: it no
    /// longer counts against its address's cap and is never closed to make room; admitted
    /// over the cap, it takes the place of the oldest unauthenticated connection.
    pub(crate) fn authenticated(&self, addr: SocketAddr) {
        let caps = &self.inner;
        let mut open = caps.open.lock().unwrap_or_else(|p| p.into_inner());
        let Some(conn) = open.conns.get_mut(&addr) else {
            return;
        };
        if conn.authenticated {
            return;
        }
        conn.authenticated = true;
        let overflow = std::mem::take(&mut conn.overflow);
        open.uncount_peer(addr.ip(), caps.max_per_peer);
        if overflow {
            open.overflow = open.overflow.saturating_sub(1);
            if open.total >= caps.max_total
                && let Some(victim) = open.oldest(false)
            {
                open.release(&victim, caps);
            }
            open.total += 1;
        }
    }

    fn admit(&self, stream: TcpStream) -> io::Result<Counted> {
        let addr = stream.peer_addr()?;
        let peer = addr.ip();
        let caps = &self.inner;
        let mut open = caps.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.per_peer.get(&peer).copied().unwrap_or(0);
        if count >= caps.max_per_peer {
            if open.warned_peers.insert(peer) {
                (caps.log)(&format!(
                    "connection limit reached for {peer}: {count} unauthenticated connections open (--max-connections-per-peer); refusing its new ones"
                ));
            }
            return Err(io::Error::other("per-peer connection limit reached"));
        }
        let overflow = open.total >= caps.max_total;
        if overflow {
            if !open.warned_total {
                open.warned_total = true;
                (caps.log)(&format!(
                    "connection limit reached: {} open (--max-connections); new connections get {OVERFLOW_GRACE:?} to authenticate, then take the place of the oldest unauthenticated one",
                    open.total
                ));
            }
            if open.overflow >= max_overflow(caps.max_total) {
                return Err(io::Error::other("connection limit reached"));
            }
        }
        // The same address and port again: the old socket is gone.
        open.release(&addr, caps);
        let seq = open.next_seq;
        open.next_seq += 1;
        let close = Arc::new(Closer::default());
        let grace = if overflow {
            OVERFLOW_GRACE
        } else {
            caps.auth_timeout
        };
        open.conns.insert(
            addr,
            Conn {
                seq,
                deadline: Instant::now() + grace,
                authenticated: false,
                overflow,
                close: Arc::clone(&close),
            },
        );
        *open.per_peer.entry(peer).or_insert(0) += 1;
        if overflow {
            open.overflow += 1;
            open.overflowing.push_back((seq, addr));
        } else {
            open.total += 1;
            open.waiting.push_back((seq, addr));
        }
        drop(open);
        // Small requests and answers: send them at once.
        stream.set_nodelay(true)?;
        Ok(Counted {
            stream,
            close,
            _slot: Slot {
                caps: Arc::clone(&self.inner),
                addr,
                seq,
            },
        })
    }

    /// Closes every connection that has not authenticated (the server is ending: strangers
    /// must not hold its graceful shutdown).
    pub(crate) fn close_strangers(&self) {
        let caps = &self.inner;
        let mut open = caps.open.lock().unwrap_or_else(|p| p.into_inner());
        let strangers: Vec<SocketAddr> = open
            .conns
            .iter()
            .filter(|(_, c)| !c.authenticated)
            .map(|(addr, _)| *addr)
            .collect();
        for addr in strangers {
            open.release(&addr, caps);
        }
    }

    /// Closes every connection past its deadline to authenticate; returns how many.
    fn sweep(&self) -> usize {
        let caps = &self.inner;
        let mut open = caps.open.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        open.expire(true, now, caps) + open.expire(false, now, caps)
    }

    /// Sweeps ([`PeerCaps::sweep`]) every 50 ms, as a task of the server's runtime, until
    /// the server ends.
    pub(crate) async fn sweep_every(self) {
        let mut ticks = tokio::time::interval(Duration::from_millis(50));
        loop {
            ticks.tick().await;
            self.sweep();
        }
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

/// One counted connection's place; given back when the connection is dropped (unless it
/// was already taken back, to admit another).
struct Slot {
    caps: Arc<Caps>,
    addr: SocketAddr,
    seq: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let caps = &self.caps;
        let mut open = caps.open.lock().unwrap_or_else(|p| p.into_inner());
        if open
            .conns
            .get(&self.addr)
            .is_some_and(|c| c.seq == self.seq)
        {
            open.release(&self.addr, caps);
        }
    }
}

/// An accepted TCP stream that holds its [`Slot`] while it is open; closed from outside when
/// its place is given to another ([`PeerCaps`]).
pub(crate) struct Counted {
    stream: TcpStream,
    close: Arc<Closer>,
    _slot: Slot,
}

impl Counted {
    /// The error a closed connection's reads and writes return.
    fn closed(&self, cx: &Context<'_>) -> Option<io::Error> {
        self.close.waker.register(cx.waker());
        self.close.closed.load(Ordering::SeqCst).then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to admit another connection",
            )
        })
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
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
