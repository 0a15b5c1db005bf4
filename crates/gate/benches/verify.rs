//! Full verification of a 1 KiB POST (header parsing, the replay slot's prefetch, signed string,
//! HMAC check, replay-cache insert) against the raw cryptography it cannot avoid: SHA-256 of the
//! body plus one HMAC of the request's signed string. Target: full / raw <= 1.3 (`make bench`
//! prints the ratio).
//!
//! Both sides walk the same small pool of distinct pre-signed requests: small enough to stay in
//! cache, as a request hyper has just parsed is; signing and pool refills happen outside the
//! timed loops. Each refill gets fresh nonces, and every 64 refills the clock moves one second
//! on against a 4 s window, so the replay cache holds a steady ~80k entries and sweeps as it
//! would in service.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use gate::keyring::{HmacSha256, Key, Keyring, Secret, Slot};
use gate::protocol::{self, SignedString};
use gate::replay::{NonceCache, ReplayStore};
use gate::sign::{Request, Signer};
use gate::verify::{self, RequestLine};
use hmac::{KeyInit, Mac};
use http::{HeaderMap, HeaderValue};

const SECRET: &str = "bench-secret-0123456789abcdefghijklmnopq";
const T0: u64 = 1_764_000_000;
const WINDOW: u64 = 4;
const POOL: usize = 256;
const TARGET: &str = "/tools/call?session=42&stream=false";
const LINE: RequestLine<'static> = RequestLine {
    method: "POST",
    path: "/tools/call",
    query: "session=42&stream=false",
};

/// One pre-signed request: its headers as a client sends them, and its signed string.
struct Signed {
    headers: HeaderMap,
    /// Unix seconds it was signed at: the verifier's "now" for it.
    timestamp: u64,
    signed_string: String,
}

/// `POOL` requests signed at `timestamp`, nonces numbered from `first`.
fn pool(signer: &Signer, body: &[u8], timestamp: u64, first: u64) -> Vec<Signed> {
    let digest = protocol::body_digest(body);
    let ts = timestamp.to_string();
    (first..first + POOL as u64)
        .map(|n| {
            let nonce = format!("bench-nonce-{n:016}");
            let request = Request {
                method: "POST",
                target: TARGET,
                body,
                timestamp,
                nonce: &nonce,
            };
            let mut headers = gate::sign::header_map(&signer.sign(&request));
            for (name, value) in [
                ("host", "tool-gate:8081"),
                ("content-type", "application/json"),
                ("content-length", "1024"),
                ("user-agent", "python-httpx/0.28"),
                ("accept", "*/*"),
            ] {
                headers.insert(name, HeaderValue::from_static(value));
            }
            let signed = SignedString {
                timestamp: &ts,
                nonce: &nonce,
                method: LINE.method,
                path: LINE.path,
                query: LINE.query,
                body_digest: &digest,
            };
            Signed {
                headers,
                timestamp,
                signed_string: signed.render("current"),
            }
        })
        .collect()
}

/// Run `work` over pool entries `iters` times in total, timing only `work`; `refill` replaces
/// the pool (untimed) whenever it is used up.
fn timed(
    iters: u64,
    mut refill: impl FnMut() -> Vec<Signed>,
    mut work: impl FnMut(&Signed),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let requests = refill();
        let chunk = left.min(POOL as u64) as usize;
        let start = Instant::now();
        for request in &requests[..chunk] {
            work(request);
        }
        total += start.elapsed();
        left -= chunk as u64;
    }
    total
}

fn bench(c: &mut Criterion) {
    let mut body = br#"{"tool":"search","args":{"q":""#.to_vec();
    body.resize(1024 - 3, b'x');
    body.extend_from_slice(br#""}}"#);
    let key = || Key::new(Slot::Current, "current".into(), &Secret::new(SECRET));
    let signer = Signer::new(key(), None);
    let keyring = Keyring::new(key(), None, false);
    let keyed = HmacSha256::new_from_slice(SECRET.as_bytes()).expect("any key length");
    let fixed_pool = pool(&signer, &body, T0, 0);

    let mut group = c.benchmark_group("verify_1KiB_POST");
    group.bench_function("raw_crypto", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || {
                    fixed_pool
                        .iter()
                        .map(|s| Signed {
                            headers: HeaderMap::new(),
                            timestamp: s.timestamp,
                            signed_string: s.signed_string.clone(),
                        })
                        .collect()
                },
                |request| {
                    let digest = protocol::body_digest(black_box(&body));
                    let mut mac = keyed.clone();
                    mac.update(request.signed_string.as_bytes());
                    black_box((digest, mac.finalize()));
                },
            )
        })
    });

    let store = ReplayStore::Memory(NonceCache::new(1_000_000, WINDOW));
    let mut second = 0u64;
    group.bench_function("full_verification", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || {
                    second += 1;
                    pool(&signer, &body, T0 + second / 64, second * POOL as u64)
                },
                |request| {
                    let pending = verify::check_headers(
                        &request.headers,
                        &keyring,
                        WINDOW,
                        request.timestamp,
                    )
                    .expect("valid request");
                    // As the gate does, before it reads and hashes the body.
                    let prefetched = store.prefetch(pending.nonce());
                    let verified = pending
                        .verify(LINE, &protocol::body_digest(black_box(&body)))
                        .expect("valid request");
                    black_box(
                        store
                            .admit_prefetched(verified, &prefetched, request.timestamp)
                            .ready()
                            .expect("the memory table answers at once")
                            .expect("fresh nonce"),
                    );
                },
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
