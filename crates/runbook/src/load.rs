//! The continuous stream of signed requests a legitimate client sends while the gate is
//! redeployed: a fixed rate (a tokio interval; missed ticks are caught up, so the rate holds
//! unless the gate is slower than the concurrency allows), a fresh nonce and timestamp per
//! request, and a signer the caller swaps as the client follows its own rollout (dual-sign
//! during the overlap). Every request is recorded with its phase, start, end and failure (any
//! non-2xx status or connection error) and the gate it went to, so a report can count failures
//! and latencies per phase and bound how many requests a gate counted between two scrapes. The
//! stream goes to one address, or round-robin to several (replicas behind a load balancer).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use super::client::{Call, Http};
use gate::sign::Signer;

/// Most requests in flight at once: at 250 requests a second this allows each to take up to a
/// quarter second before the rate drops (which the reports would show).
const MAX_IN_FLIGHT: usize = 64;

/// A request that has not answered by then counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle time after which the client drops a pooled connection: below the one second a draining
/// gate keeps idle connections (see [`Http::new`]).
const POOL_IDLE: Duration = Duration::from_millis(500);

/// One request of the stream.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The phase that was current when the request started.
    pub phase: usize,
    /// Where it was sent.
    pub target: SocketAddr,
    /// When it was sent.
    pub started: Instant,
    /// When its answer (or error) arrived.
    pub finished: Instant,
    /// `None` for a 2xx answer; otherwise what went wrong.
    pub failure: Option<String>,
}

impl Sample {
    /// Latency in milliseconds.
    pub fn millis(&self) -> f64 {
        (self.finished - self.started).as_secs_f64() * 1000.0
    }
}

struct Shared {
    signer: RwLock<Arc<Signer>>,
    /// Never empty: [`Load::set_targets`] refuses an empty list.
    targets: RwLock<Arc<Vec<SocketAddr>>>,
    phase: AtomicUsize,
    record: Mutex<Record>,
    stop: Notify,
}

/// Finished requests, and the start and target of each request still in flight (keyed by
/// sequence number): a request in flight may already have been counted by the gate.
#[derive(Default)]
struct Record {
    finished: Vec<Sample>,
    in_flight: HashMap<u64, (Instant, SocketAddr)>,
}

/// The running stream.
pub struct Load {
    shared: Arc<Shared>,
    scheduler: Option<JoinHandle<()>>,
}

impl Load {
    /// Start sending `rate` signed `POST /<path_prefix>/load?seq=N` requests a second to
    /// `target`, signed by `signer`, recorded under phase 0.
    pub fn start(target: SocketAddr, rate: u32, signer: Signer, path_prefix: &str) -> Load {
        let shared = Arc::new(Shared {
            signer: RwLock::new(Arc::new(signer)),
            targets: RwLock::new(Arc::new(vec![target])),
            phase: AtomicUsize::new(0),
            record: Mutex::default(),
            stop: Notify::new(),
        });
        let path = format!("/{}/load", path_prefix.trim_matches('/'));
        let scheduler = tokio::spawn(schedule(rate.max(1), path, Arc::clone(&shared)));
        Load {
            shared,
            scheduler: Some(scheduler),
        }
    }

    /// From now on, sign with `signer` (the client's own rollout step).
    pub fn set_signer(&self, signer: Signer) {
        let _record = self.shared.record.lock().expect("load record lock");
        *self.shared.signer.write().expect("signer lock") = Arc::new(signer);
    }

    /// Wait until every request in flight now has finished (at most `within`): after
    /// [`Load::set_signer`] or [`Load::set_targets`], no request of the old mode is left to be
    /// counted by a gate from then on. Whether they all finished in time.
    pub async fn settle(&self, within: Duration) -> bool {
        let waiting: Vec<u64> = {
            let record = self.shared.record.lock().expect("load record lock");
            record.in_flight.keys().copied().collect()
        };
        let deadline = Instant::now() + within;
        loop {
            let left = {
                let record = self.shared.record.lock().expect("load record lock");
                waiting.iter().any(|seq| record.in_flight.contains_key(seq))
            };
            if !left {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// From now on, send request `N` to `targets[N % targets.len()]`: round-robin, as a load
    /// balancer in front of replicas does. An empty list is ignored (the stream keeps its
    /// targets).
    pub fn set_targets(&self, targets: Vec<SocketAddr>) {
        if !targets.is_empty() {
            let _record = self.shared.record.lock().expect("load record lock");
            *self.shared.targets.write().expect("targets lock") = Arc::new(targets);
        }
    }

    /// [`Load::set_signer`] and [`Load::set_targets`] at once: no request is signed the new
    /// way and sent to an old target, or the other way round (a move between gates that
    /// accept different keys).
    pub fn switch(&self, signer: Signer, targets: Vec<SocketAddr>) {
        let _record = self.shared.record.lock().expect("load record lock");
        *self.shared.signer.write().expect("signer lock") = Arc::new(signer);
        if !targets.is_empty() {
            *self.shared.targets.write().expect("targets lock") = Arc::new(targets);
        }
    }

    /// Record requests started from now on under `phase`.
    pub fn set_phase(&self, phase: usize) {
        self.shared.phase.store(phase, Ordering::Relaxed);
    }

    /// A copy of every finished request so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.shared
            .record
            .lock()
            .expect("load record lock")
            .finished
            .clone()
    }

    /// Bounds on how many successful stream requests a gate counted between two scrapes; see
    /// [`counted_between`]. Requests still in flight count as possibly counted.
    pub fn counted_between(
        &self,
        first: (Instant, Instant),
        second: (Instant, Instant),
    ) -> (usize, usize) {
        self.bounds(None, first, second)
    }

    /// [`Load::counted_between`] for the requests sent to `target` only: what one of several
    /// replicas counted.
    pub fn counted_between_at(
        &self,
        target: SocketAddr,
        first: (Instant, Instant),
        second: (Instant, Instant),
    ) -> (usize, usize) {
        self.bounds(Some(target), first, second)
    }

    fn bounds(
        &self,
        target: Option<SocketAddr>,
        first: (Instant, Instant),
        second: (Instant, Instant),
    ) -> (usize, usize) {
        let record = self.shared.record.lock().expect("load record lock");
        let to_target = |addr: &SocketAddr| target.is_none_or(|t| t == *addr);
        let finished: Vec<Sample> = record
            .finished
            .iter()
            .filter(|s| to_target(&s.target))
            .cloned()
            .collect();
        let (lower, upper) = counted_between(&finished, first, second);
        let in_flight = record
            .in_flight
            .values()
            .filter(|(started, addr)| *started <= second.1 && to_target(addr))
            .count();
        (lower, upper + in_flight)
    }

    /// Stop sending and wait (up to the request timeout) for the requests in flight.
    pub async fn stop(mut self) -> Vec<Sample> {
        if let Some(scheduler) = self.scheduler.take() {
            self.shared.stop.notify_one();
            let _ = scheduler.await;
        }
        self.samples()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.abort();
        }
    }
}

async fn schedule(rate: u32, path: String, shared: Arc<Shared>) {
    let http = Http::new(POOL_IDLE);
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate);
    let mut seq: u64 = 0;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shared.stop.notified() => break,
        }
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
            () = shared.stop.notified() => break,
        };
        seq += 1;
        let started = Instant::now();
        // The request is signed and entered in flight under the record's lock, which
        // `set_signer` and `set_targets` take too: once they return, every request of the old
        // mode is in flight or finished, which is what `settle` waits on.
        let (call, target, phase) = {
            let mut record = shared.record.lock().expect("load record lock");
            let signer = Arc::clone(&shared.signer.read().expect("signer lock"));
            let target = {
                let targets = shared.targets.read().expect("targets lock");
                // set_targets keeps the list non-empty; the remainder is below its length.
                targets[(seq % targets.len() as u64) as usize]
            };
            let phase = shared.phase.load(Ordering::Relaxed);
            let call = Call::new(Method::POST, format!("{path}?seq={seq}"))
                .body(Bytes::from(format!(r#"{{"seq":{seq}}}"#)))
                .signed(&signer);
            record.in_flight.insert(seq, (started, target));
            (call, target, phase)
        };
        let (http, shared) = (http.clone(), Arc::clone(&shared));
        tokio::spawn(async move {
            let result = http.send(call.request(target), REQUEST_TIMEOUT).await;
            let finished = Instant::now();
            let failure = match result {
                Ok(reply) if reply.status.is_success() => None,
                Ok(reply) => Some(format!("status {}", reply.summary())),
                Err(err) => Some(format!("connection error: {err}")),
            };
            let mut record = shared.record.lock().expect("load record lock");
            record.in_flight.remove(&seq);
            record.finished.push(Sample {
                phase,
                target,
                started,
                finished,
                failure,
            });
            drop(permit);
        });
    }
    // Wait for the requests in flight: each returns its permit when recorded.
    let _ = tokio::time::timeout(
        REQUEST_TIMEOUT + Duration::from_secs(1),
        permits.acquire_many(MAX_IN_FLIGHT as u32),
    )
    .await;
}

/// Counts and latencies of a set of samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Requests.
    pub requests: usize,
    /// 2xx answers.
    pub ok: usize,
    /// Everything else.
    pub failed: usize,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// The first few failures, for the report.
    pub first_failures: Vec<String>,
}

impl Stats {
    /// Summarise `samples`.
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Stats {
        let mut stats = Stats::default();
        let mut latencies = Vec::new();
        for sample in samples {
            stats.requests += 1;
            latencies.push(sample.millis());
            match &sample.failure {
                None => stats.ok += 1,
                Some(failure) => {
                    stats.failed += 1;
                    if stats.first_failures.len() < 5 {
                        stats.first_failures.push(failure.clone());
                    }
                }
            }
        }
        latencies.sort_by(f64::total_cmp);
        stats.p50_ms = percentile(&latencies, 0.50);
        stats.p99_ms = percentile(&latencies, 0.99);
        stats
    }
}

/// Nearest-rank percentile of sorted values (0 for none).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest rank: the smallest value with at least q of the values at or below it.
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// How many successful requests a gate must have counted between two scrapes, as bounds: a
/// request that started after the first scrape answered and finished before the second was
/// sent was certainly counted in between (`lower`); one that finished before the first scrape
/// was sent or started after the second answered certainly was not; the rest may have been
/// (`upper` counts them too). `first` and `second` are (sent, answered) instants of the scrapes.
pub fn counted_between(
    samples: &[Sample],
    first: (Instant, Instant),
    second: (Instant, Instant),
) -> (usize, usize) {
    let mut lower = 0;
    let mut upper = 0;
    for sample in samples {
        if sample.started >= first.1 && sample.finished <= second.0 {
            lower += 1;
        }
        if sample.finished >= first.0 && sample.started <= second.1 {
            upper += 1;
        }
    }
    (lower, upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.50), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn counted_between_bounds() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let sample = |start, end| Sample {
            phase: 0,
            target: "127.0.0.1:1".parse().expect("literal"),
            started: at(start),
            finished: at(end),
            failure: None,
        };
        let samples = [
            sample(0, 5),     // before the first scrape: never counted
            sample(8, 12),    // straddles the first scrape: maybe
            sample(20, 30),   // inside: certainly
            sample(95, 105),  // straddles the second: maybe
            sample(120, 130), // after: never
        ];
        assert_eq!(
            counted_between(&samples, (at(10), at(11)), (at(100), at(101))),
            (1, 3)
        );
    }

    #[test]
    fn stats_count_failures_and_latencies() {
        let t0 = Instant::now();
        let samples: Vec<Sample> = (0..10)
            .map(|i| Sample {
                phase: 1,
                target: "127.0.0.1:1".parse().expect("literal"),
                started: t0,
                finished: t0 + Duration::from_millis(i + 1),
                failure: (i == 3).then(|| "status 401 bad_signature".to_owned()),
            })
            .collect();
        let stats = Stats::of(&samples);
        assert_eq!((stats.requests, stats.ok, stats.failed), (10, 9, 1));
        assert_eq!(stats.p50_ms.round(), 5.0);
        assert_eq!(stats.p99_ms.round(), 10.0);
        assert_eq!(stats.first_failures, ["status 401 bad_signature"]);
    }
}
