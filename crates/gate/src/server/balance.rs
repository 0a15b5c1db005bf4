//! Keeping the workers' open connections even, whichever worker the kernel hands a new
//! connection to.
//!
//! `SO_REUSEPORT` spreads connections by a hash of their addresses, and with socket activation
//! whichever worker wakes first takes the connection; either way one worker can end up with
//! half again as many as another (bench/analysis.md, "2 workers"). Under load the busier
//! worker queues while the other idles, and a connection serves every one of its requests on
//! the worker it started on. So the worker that accepts a connection hands it to the worker
//! serving the fewest when that is not itself (HAProxy spreads its threads' connections the
//! same way). The hand-off happens once per connection, never per request: a handed-off
//! connection is then served start to end on its new worker, with no cross-thread wake-ups.
//! The balance counts connections, not requests: an idle keep-alive connection weighs as much
//! as a busy one, and one busy HTTP/2 connection stays one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

/// A connection on its way from the worker that accepted it to the one that will serve it.
#[derive(Debug)]
pub(super) struct Accepted {
    /// The client socket, deregistered from the accepting worker's runtime.
    pub(super) stream: std::net::TcpStream,
    pub(super) peer: SocketAddr,
    /// Its place under `GATE_MAX_CONNECTIONS`, taken by the accepting worker.
    pub(super) slot: OwnedSemaphorePermit,
    /// Its place in the serving worker's count, held until the connection ends.
    pub(super) load: Load,
}

/// The open connections of every worker, and the way to hand a connection to each.
///
/// The channels are unbounded, but what is in them is not: every connection in one holds a
/// `GATE_MAX_CONNECTIONS` permit.
#[derive(Debug)]
pub(super) struct Balancer {
    workers: Vec<Worker>,
}

#[derive(Debug)]
struct Worker {
    /// Connections this worker serves, or has been handed and not yet taken up.
    open: Arc<AtomicUsize>,
    inbox: UnboundedSender<Accepted>,
}

/// The receiving end of one worker's hand-offs.
pub(super) type Inbox = UnboundedReceiver<Accepted>;

/// One connection counted in its worker's load; uncounted when dropped.
#[derive(Debug)]
pub(super) struct Load {
    open: Arc<AtomicUsize>,
}

impl Drop for Load {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where a newly accepted connection goes.
#[derive(Debug)]
pub(super) enum Placement {
    /// The accepting worker serves it.
    Here(Load),
    /// Worker `to` serves it: hand it over with [`Balancer::hand_off`].
    There { to: usize, load: Load },
}

impl Balancer {
    /// A balancer for `workers` workers, and each worker's inbox, by index.
    pub(super) fn new(workers: usize) -> (Balancer, Vec<Inbox>) {
        let (workers, inboxes) = (0..workers)
            .map(|_| {
                let (inbox, received) = mpsc::unbounded_channel();
                let open = Arc::new(AtomicUsize::new(0));
                (Worker { open, inbox }, received)
            })
            .unzip();
        (Balancer { workers }, inboxes)
    }

    /// Place a connection that worker `here` has just accepted: on `here` unless another worker
    /// serves fewer connections than it, else on the worker that serves the fewest. The
    /// connection counts in its worker's load from now on. Two workers placing at the same
    /// instant may both pick the same one; the next placements even that out.
    pub(super) fn place(&self, here: usize) -> Placement {
        let count = |worker: &Worker| worker.open.load(Ordering::Relaxed);
        let mut to = here;
        let mut fewest = count(&self.workers[here]);
        for (index, worker) in self.workers.iter().enumerate() {
            let open = count(worker);
            if open < fewest {
                (to, fewest) = (index, open);
            }
        }
        let load = self.load(to);
        if to == here {
            Placement::Here(load)
        } else {
            Placement::There { to, load }
        }
    }

    /// Send `accepted` to worker `to`'s inbox. A worker that has stopped taking hand-offs (it
    /// is draining, or it has failed) gives the connection back, counted again in the load of
    /// `here`, for `here` to serve.
    pub(super) fn hand_off(
        &self,
        to: usize,
        here: usize,
        accepted: Accepted,
    ) -> Result<(), Accepted> {
        self.workers[to].inbox.send(accepted).map_err(|returned| {
            let mut accepted = returned.0;
            accepted.load = self.load(here);
            accepted
        })
    }

    fn load(&self, worker: usize) -> Load {
        let open = Arc::clone(&self.workers[worker].open);
        open.fetch_add(1, Ordering::Relaxed);
        Load { open }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed_on(placement: Placement, here: usize) -> (usize, Load) {
        match placement {
            Placement::Here(load) => (here, load),
            Placement::There { to, load } => (to, load),
        }
    }

    fn open(balancer: &Balancer) -> Vec<usize> {
        let workers = balancer.workers.iter();
        workers.map(|w| w.open.load(Ordering::Relaxed)).collect()
    }

    #[test]
    fn a_worker_keeps_a_connection_while_no_other_serves_fewer() {
        let (balancer, _inboxes) = Balancer::new(2);
        let (worker, _first) = placed_on(balancer.place(1), 1);
        assert_eq!(worker, 1, "a tie stays where it was accepted");
        // Worker 0 now serves fewer than 1, so 1 sends the next one over ...
        let (worker, _second) = placed_on(balancer.place(1), 1);
        assert_eq!(worker, 0);
        // ... and with one each, worker 0 keeps what it accepts.
        let (worker, _third) = placed_on(balancer.place(0), 0);
        assert_eq!(worker, 0);
        assert_eq!(open(&balancer), [2, 1]);
    }

    #[test]
    fn connections_all_accepted_by_one_worker_spread_evenly() {
        let (balancer, _inboxes) = Balancer::new(3);
        let loads: Vec<_> = (0..10).map(|_| placed_on(balancer.place(2), 2)).collect();
        assert_eq!(open(&balancer), [3, 3, 4]);
        drop(loads);
        assert_eq!(
            open(&balancer),
            [0, 0, 0],
            "a dropped load uncounts its connection"
        );
    }

    #[test]
    fn a_closed_connection_frees_its_place_on_its_worker() {
        let (balancer, _inboxes) = Balancer::new(2);
        let (_, on_one) = placed_on(balancer.place(1), 1);
        let (_, on_zero) = placed_on(balancer.place(1), 1);
        drop(on_zero);
        // Worker 0 serves none again, so it gets the next connection 1 accepts.
        let (worker, _next) = placed_on(balancer.place(1), 1);
        assert_eq!(worker, 0);
        drop(on_one);
        assert_eq!(open(&balancer), [1, 0]);
    }

    #[tokio::test]
    async fn a_worker_that_stopped_taking_connections_gives_them_back() {
        let (balancer, mut inboxes) = Balancer::new(2);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = std::net::TcpStream::connect(listener.local_addr().expect("addr"));
        let (stream, peer) = listener.accept().expect("accept");
        let semaphore = Arc::new(tokio::sync::Semaphore::new(1));
        let slot = semaphore.try_acquire_owned().expect("permit");
        let (_, _kept) = placed_on(balancer.place(0), 0);
        let Placement::There { to: 1, load } = balancer.place(0) else {
            panic!("worker 1 serves fewer");
        };
        let accepted = Accepted {
            stream,
            peer,
            slot,
            load,
        };
        inboxes[1].close();
        let returned = balancer.hand_off(1, 0, accepted).expect_err("inbox closed");
        assert_eq!(returned.peer, peer);
        assert_eq!(
            open(&balancer),
            [2, 0],
            "counted on the worker that serves it"
        );
        drop((returned, client));
        assert_eq!(open(&balancer), [1, 0]);
    }
}
