//! The body budget: a bound on request-body bytes held while bodies arrive, per connection and
//! across the process (`GATE_MAX_BUFFERED_BODY_BYTES`, docs/operations.md).
//!
//! A signed request's body must be read whole before its signature can be checked, so a
//! client that sends well-formed but unverifiable headers and then trickles a body makes the
//! gate hold up to `GATE_MAX_BODY_BYTES` for up to `GATE_BODY_READ_TIMEOUT_SECS`, once per
//! HTTP/2 stream. The budget caps that: bytes that arrive after the gate started waiting for a
//! body are reserved here, and a request whose next bytes do not fit is refused at once (503)
//! instead of growing memory. Bytes that came with the request head are not counted: the HTTP
//! layer already held them, within its own bounds (the HTTP/1.1 read buffer, the HTTP/2
//! flow-control windows).
//!
//! A [`Reservation`] lives as long as the body buffer it paid for, so the budget also covers
//! the time a body waits for the upstream.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::logging::Throttle;

/// Bytes reserved against a limit, with the limit; shared by every reservation drawing on it.
#[derive(Debug)]
struct Pool {
    limit: usize,
    used: AtomicUsize,
}

impl Pool {
    fn new(limit: usize) -> Pool {
        Pool {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// Take `bytes` if they fit under the limit.
    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The process-wide budget. Cloning shares it.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    process: Arc<Pool>,
    per_connection: usize,
    log: Arc<Throttle>,
}

impl BodyBudget {
    /// A budget of `total` bytes for the process, of which one connection may hold at most
    /// `per_connection`.
    pub fn new(total: usize, per_connection: usize) -> BodyBudget {
        BodyBudget {
            process: Arc::new(Pool::new(total)),
            per_connection: per_connection.min(total),
            log: Arc::new(Throttle::new(Duration::from_secs(1))),
        }
    }

    /// The share of one new connection.
    pub fn connection(&self) -> ConnectionBudget {
        ConnectionBudget {
            process: Arc::clone(&self.process),
            connection: Arc::new(Pool::new(self.per_connection)),
            log: Arc::clone(&self.log),
        }
    }

    /// Bytes reserved now, across the process.
    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.process.used.load(Ordering::Acquire)
    }
}

/// One connection's share of the [`BodyBudget`]. Cloning shares it.
#[derive(Debug, Clone)]
pub struct ConnectionBudget {
    process: Arc<Pool>,
    connection: Arc<Pool>,
    log: Arc<Throttle>,
}

impl ConnectionBudget {
    /// Whether a refusal may be logged now: one line per second across the process, so a
    /// client cannot flood the log (`sig_gate_body_budget_refused_total` counts them all).
    pub fn may_log(&self) -> bool {
        self.log.allow()
    }

    /// An empty reservation; [`Reservation::grow`] adds to it.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }
}

/// The budget has no room for more bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Exhausted {
    /// This connection holds its whole share.
    #[error("the connection's share of the body budget is used up")]
    Connection,
    /// The process holds its whole budget.
    #[error("the process's body budget is used up")]
    Process,
}

/// Bytes held for one body; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: ConnectionBudget,
    bytes: usize,
}

impl Reservation {
    /// Reserve `bytes` more, or nothing when they do not fit.
    pub fn grow(&mut self, bytes: usize) -> Result<(), Exhausted> {
        if !self.budget.connection.take(bytes) {
            return Err(Exhausted::Connection);
        }
        if !self.budget.process.take(bytes) {
            self.budget.connection.give_back(bytes);
            return Err(Exhausted::Process);
        }
        self.bytes += bytes;
        Ok(())
    }

    /// Bytes held by this reservation.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.connection.give_back(self.bytes);
        self.budget.process.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_per_connection_and_per_process() {
        let budget = BodyBudget::new(100, 60);
        let (first, second) = (budget.connection(), budget.connection());
        let mut a = first.reservation();
        a.grow(50).expect("fits");
        assert_eq!(a.grow(11), Err(Exhausted::Connection), "60 per connection");
        let mut b = first.reservation();
        b.grow(10).expect("the connection's last 10 bytes");
        assert_eq!(b.grow(1), Err(Exhausted::Connection));

        let mut c = second.reservation();
        c.grow(40).expect("the process's last 40 bytes");
        assert_eq!(c.grow(1), Err(Exhausted::Process));
        assert_eq!(budget.used(), 100);
        assert_eq!((a.bytes(), b.bytes(), c.bytes()), (50, 10, 40));

        // A refused reservation took nothing; a dropped one gives everything back.
        drop(a);
        assert_eq!(budget.used(), 50);
        c.grow(20).expect("room again");
        let mut d = first.reservation();
        d.grow(30)
            .expect("the first connection's share is free again");
        drop((b, c, d));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_connection_share_never_exceeds_the_total() {
        let budget = BodyBudget::new(10, 1000);
        let mut r = budget.connection().reservation();
        assert!(r.grow(11).is_err());
        r.grow(10).expect("the whole budget");
    }
}
