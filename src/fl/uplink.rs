//! What a party's driver asks of a transport: the round protocol's requests, and how a party
//! waits out a lost server.
//!
//! [`Uplink`] is implemented by the in-process [`HubUplink`](super::HubUplink) and by the
//! network transport (`transport::http::HttpUplink`); both end in the same
//! [`Hub`](super::Hub) methods, so a request means the same over either.

use super::error::UplinkError;
use super::metrics::Observer;
pub use super::server::Submitted;
use super::server::{ModelSnapshot, Published, Round};
use std::time::{Duration, Instant};

/// Moves one party's requests to the server and its answers back.
pub trait Uplink {
    /// Sends this party's sealed update for `round`.
    fn submit(&mut self, round: Round, bytes: &[u8]) -> Result<Submitted, UplinkError>;
    /// Waits for `round`'s published sum. `keep_from`: this party may still ask for the sums
    /// from that round on (its last checkpoint is there, and a restart would go back to it),
    /// so the server keeps them; `None`: nothing before `round`.
    fn fetch(&mut self, round: Round, keep_from: Option<Round>) -> Result<Published, UplinkError>;
    /// Tells the server this party skipped `round`: its sum could not be a sum of valid
    /// updates, for `reason` (the server logs it for its operator).
    fn skipped(&mut self, round: Round, reason: &str) -> Result<(), UplinkError>;
    /// Strict secure aggregation: this party, left out of `round`'s party set (it missed a
    /// deadline), asks to be in a later round's set; returns the first round whose set holds
    /// it (announced with the outcome of the round before).
    fn rejoin(&mut self, round: Round) -> Result<Round, UplinkError>;
    /// Uploads this party's sealed model snapshot of the model before `round`.
    fn put_snapshot(&mut self, round: Round, bytes: &[u8]) -> Result<(), UplinkError>;
    /// The latest model snapshot the server keeps.
    fn snapshot(&mut self) -> Result<ModelSnapshot, UplinkError>;
    /// Tells the server this party is ready (its data loaded, its checkpoint read): round 0's
    /// clock starts once every party is (see [`Hub::ready`](super::Hub::ready)).
    fn ready(&mut self) -> Result<(), UplinkError>;
}

/// How a party waits out a lost server: it asks again after `first_delay`, doubling the
/// wait up to `max_delay`, until `give_up_after` has passed since the first failure. A
/// server that comes back within that window (restarted from its `--state-dir`) finds the
/// party where it was: it resends its update for the open round (a server that already
/// has it answers [`Submitted::AlreadyIn`]) and goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// First wait after a failure.
    pub first_delay: Duration,
    /// Longest wait between two attempts.
    pub max_delay: Duration,
    /// Give up once the server has been unreachable this long.
    pub give_up_after: Duration,
}

impl Default for Retry {
    /// 0.5 s, doubling to 15 s, for up to 5 minutes.
    fn default() -> Self {
        Self {
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(15),
            give_up_after: Duration::from_secs(300),
        }
    }
}

impl Retry {
    /// Calls `attempt` until it succeeds, fails for good, or the server has been
    /// unreachable for `give_up_after`; notes each wait to `observer` as `what: error`.
    pub fn call<T>(
        &self,
        what: &str,
        observer: &mut dyn Observer,
        mut attempt: impl FnMut() -> Result<T, UplinkError>,
    ) -> Result<T, UplinkError> {
        let mut failing_since: Option<Instant> = None;
        let mut delay = self.first_delay;
        loop {
            match attempt() {
                Err(e) if e.is_transient() => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    let left = self.give_up_after.saturating_sub(since.elapsed());
                    if left.is_zero() {
                        return Err(e);
                    }
                    let wait = delay.min(left);
                    observer.note(&format!(
                        "{what}: {e}; retrying in {:.1} s (giving up in {:.0} s)",
                        wait.as_secs_f64(),
                        left.as_secs_f64()
                    ));
                    std::thread::sleep(wait);
                    delay = (delay * 2).min(self.max_delay);
                }
                other => return other,
            }
        }
    }
}
