//! What reached the recording upstream, kept two ways and bounded both ways: a summary per
//! path ([`Seen`]: how many, which key id the gate said verified the latest, its target and
//! headers) and the latest requests in full, in arrival order ([`Arrival`]: bodies included).
//! The drill runs for minutes at hundreds of requests a second, so neither may grow with the
//! number of requests: the full records are a ring of the last [`RECENT_REQUESTS`] (fewer when
//! their bodies pass [`RECENT_BODY_BYTES`]), and the summaries hold at most [`MAX_PATHS`]
//! paths, the least recently seen one giving way to a new path.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use http::{HeaderMap, Method};

use gate::protocol;

use super::Malformed;

/// Most requests kept in full ([`Arrival`]s), newest last.
pub const RECENT_REQUESTS: usize = 4096;
/// Most body bytes the full records hold together; older records give way first. The newest
/// record is always kept, whatever its size (the gate bounds what it forwards).
pub const RECENT_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Most paths with a [`Seen`] summary; a new path beyond it evicts the least recently seen.
pub const MAX_PATHS: usize = 4096;

/// What reached the upstream on one path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Requests received on the path.
    pub count: usize,
    /// `X-Gate-Verified-Key-Id` of the latest one (absent for report-only or exempt traffic).
    pub verified_key_id: Option<String>,
    /// The latest one's request target as it arrived (origin form: path and query).
    pub target: String,
    /// The latest one's headers, as the gate forwarded them.
    pub headers: HeaderMap,
}

/// One request as it reached the upstream, body included.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The connection it came on, numbered from 0 in accept order (across restarts).
    pub connection: u64,
    /// Its method.
    pub method: Method,
    /// Its request target as it arrived (origin form: path and query).
    pub target: String,
    /// Its headers, as the gate forwarded them.
    pub headers: HeaderMap,
    /// Its whole body.
    pub body: Bytes,
}

impl Arrival {
    /// The target's path (the part before `?`), the key of its [`Seen`] summary.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

/// Everything the upstream remembers; one behind a lock, shared by every connection task.
#[derive(Debug, Default)]
pub(super) struct Log {
    /// Per path: the arrival number of its latest request (for eviction), and its summary.
    paths: HashMap<String, (usize, Seen)>,
    recent: VecDeque<Arrival>,
    recent_body_bytes: usize,
    total: usize,
    reused: [usize; Malformed::ALL.len()],
}

impl Log {
    /// Record one request.
    pub(super) fn note(&mut self, arrival: Arrival) {
        let number = self.total;
        self.total += 1;
        let path = arrival.path();
        if !self.paths.contains_key(path) && self.paths.len() >= MAX_PATHS {
            let oldest = self
                .paths
                .iter()
                .min_by_key(|(_, (last, _))| *last)
                .map(|(path, _)| path.clone());
            if let Some(oldest) = oldest {
                self.paths.remove(&oldest);
            }
        }
        let (last, seen) = self.paths.entry(path.to_owned()).or_default();
        *last = number;
        seen.count += 1;
        seen.verified_key_id = arrival
            .headers
            .get(protocol::VERIFIED_KEY_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        seen.target.clone_from(&arrival.target);
        seen.headers.clone_from(&arrival.headers);

        self.recent_body_bytes += arrival.body.len();
        self.recent.push_back(arrival);
        while self.recent.len() > 1
            && (self.recent.len() > RECENT_REQUESTS || self.recent_body_bytes > RECENT_BODY_BYTES)
        {
            if let Some(gone) = self.recent.pop_front() {
                self.recent_body_bytes -= gone.body.len();
            }
        }
    }

    /// Count one request that came on a connection which had carried `kind`'s broken answer.
    pub(super) fn note_reuse(&mut self, kind: Malformed) {
        self.reused[kind as usize] += 1;
    }

    pub(super) fn seen(&self, path: &str) -> Seen {
        self.paths
            .get(path)
            .map(|(_, seen)| seen.clone())
            .unwrap_or_default()
    }

    pub(super) fn recent(&self) -> Vec<Arrival> {
        self.recent.iter().cloned().collect()
    }

    pub(super) fn total(&self) -> usize {
        self.total
    }

    pub(super) fn reused_after(&self, kind: Malformed) -> usize {
        self.reused[kind as usize]
    }
}
