//! Group commit on one thread's connection to a single Redis server: at most one pipelined
//! batch of `SET NX PX` commands on its way, and the commands of requests that arrive
//! meanwhile wait and go together in the next batch, in one write.
//!
//! Why: on a busy worker the library's own pipelining sends each event-loop turn's commands in
//! one write, one to three a write under the benchmark's load; waiting for the batch on its way
//! sends about five, and each write and read saved on the gate's socket is CPU the worker
//! spends on requests instead (bench/analysis.md, "Group commit, kept"). A request that arrives
//! while a batch is on its way waits up to one more round trip, inside its budget.
//!
//! What it keeps of the store's promises:
//! - Every request still waits at most its budget: the caller's own timeout covers the wait
//!   in the queue and the batch's round trip, and a batch is itself bounded by the budget.
//! - A request that gave up (its budget spent, or its client gone) before its batch left is not
//!   sent, so its nonce is not recorded for a request the gate refused.
//! - Commands keep their order: two requests with the same nonce in one batch are answered
//!   first `OK`, then refused as a replay, as they would be one after the other.
//! - Memory is bounded: one queued command per request in flight on the worker, and a batch
//!   carries at most [`MAX_BATCH`] of them.
//! - A failed batch answers each of its requests with the failure and replaces the
//!   connection, so the commands queued behind it go on a new one.
//!
//! A Redis Cluster is not batched here: a pipeline must stay within one hash slot, and the
//! nonces of a batch spread over all of them.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, Value};
use tokio::sync::oneshot;

use super::Shared;
use crate::replay::StoreFailure;

/// Most commands one batch carries (about 70 bytes each): more wait for the next.
const MAX_BATCH: usize = 256;

/// What a queued request is answered: Redis's reply to its command, or why there is none.
pub(super) type Answer = Result<Value, StoreFailure>;

/// One thread's queue to one server, and the connection its batches go out on.
pub(super) struct Lane {
    state: Mutex<State>,
}

struct State {
    /// The connection, `None` while a batch task holds it (a batch is on its way).
    idle: Option<ConnectionManager>,
    /// Commands waiting for the next batch, in arrival order.
    queued: Vec<Queued>,
}

struct Queued {
    command: Cmd,
    answer: oneshot::Sender<Answer>,
}

impl Lane {
    pub(super) fn new(connection: ConnectionManager) -> Lane {
        Lane {
            state: Mutex::new(State {
                idle: Some(connection),
                queued: Vec::new(),
            }),
        }
    }

    /// Queue `command` for the next batch, and start the batch task when none is running:
    /// the receiver gets the reply. Dropping the receiver before the batch leaves takes the
    /// command out of it. Must be called inside a tokio runtime (the batch task runs on it).
    pub(super) fn submit(
        self: &Arc<Lane>,
        shared: &Arc<Shared>,
        command: Cmd,
    ) -> oneshot::Receiver<Answer> {
        let (answer, reply) = oneshot::channel();
        let mut state = self.lock();
        state.queued.push(Queued { command, answer });
        if let Some(connection) = state.idle.take() {
            drop(state);
            tokio::spawn(send_batches(
                Arc::clone(self),
                Arc::clone(shared),
                connection,
            ));
        }
        reply
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock is never held across anything that can panic halfway through a change.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The batch task: send what is queued as one pipeline, hand out the replies, and go again
/// while commands wait; then give the connection back to the lane and end.
async fn send_batches(lane: Arc<Lane>, shared: Arc<Shared>, mut connection: ConnectionManager) {
    let mut pipeline = Pipeline::new();
    pipeline.ignore_errors();
    let mut answers: Vec<oneshot::Sender<Answer>> = Vec::new();
    loop {
        {
            let mut state = lane.lock();
            let take = state.queued.len().min(MAX_BATCH);
            for queued in state.queued.drain(..take) {
                if !queued.answer.is_closed() {
                    pipeline.add_command(queued.command);
                    answers.push(queued.answer);
                }
            }
            if answers.is_empty() && state.queued.is_empty() {
                state.idle = Some(connection);
                return;
            }
        }
        if !answers.is_empty() {
            let count = answers.len();
            let replies = tokio::time::timeout(
                shared.budget,
                connection.req_packed_commands(&pipeline, 0, count),
            )
            .await;
            let failure = match replies {
                Ok(Ok(values)) if values.len() == count => {
                    shared.set_up(true, None);
                    for (answer, value) in answers.drain(..).zip(values) {
                        // A receiver gone since is a request that stopped waiting.
                        let _ = answer.send(Ok(value));
                    }
                    None
                }
                Ok(Ok(values)) => Some((
                    StoreFailure::Reply,
                    format!("{} replies to a pipeline of {count}", values.len()),
                )),
                Ok(Err(err)) => Some((super::failure_kind(&err), err.to_string())),
                Err(_elapsed) => Some((StoreFailure::Timeout, shared.no_answer())),
            };
            if let Some((kind, detail)) = failure {
                shared.set_up(false, Some((kind, &detail)));
                for answer in answers.drain(..) {
                    let _ = answer.send(Err(kind));
                }
                // The next batch goes on a new connection rather than one that failed, or on
                // the library's attempt to reconnect it made while the store may have been down.
                connection = super::open_single(&shared.url, shared.budget);
            }
            pipeline.clear();
        }
    }
}
