//! Full verification of a 1 KiB POST (header parsing, the replay slot's prefetch, signed string,
//! HMAC check, replay-cache insert) against the raw cryptography it cannot avoid: SHA-256 of the
//! body plus one HMAC of the request's signed string. Target: full / raw <= 1.3 (`make bench`
//! prints the ratio). The same for version 2 with an Ed25519 registry key
//! (`verify_ed25519_v2_1KiB_POST`): the raw side is SHA-256 of the body plus ring's Ed25519
//! verification of the signed string; target <= 1.1, since the signature check dominates.
//!
//! Both sides walk the same small pool of distinct pre-signed requests: small enough to stay in
//! cache, as a request hyper has just parsed is; signing and pool refills happen outside the
//! timed loops. Each refill gets fresh nonces, and every 64 refills the clock moves one second
//! on against a 4 s window, so the replay cache holds a steady ~80k entries and sweeps as it
//! would in service.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use gate::keyring::PublicKey;
use gate::keyring::{HmacSha256, Key, Keyring, Secret, Slot};
use gate::protocol::{self, SignedString, V2Line};
use gate::replay::{NonceCache, ReplayStore};
use gate::sign::{Request, Signer, SigningKey};
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

/// The version 2 lines of the Ed25519 group's key.
const ED25519_V2: V2Line<'static> = V2Line {
    algorithm: "ed25519",
    key_id: "langgraph-ed25519-1",
    audience: "tool-gate",
};

/// `POOL` requests signed at `timestamp`, nonces numbered from `first`; `v2` when the signer
/// signs version 2 (the signed string is then rendered with those lines).
fn pool(signer: &Signer, body: &[u8], timestamp: u64, first: u64) -> Vec<Signed> {
    pool_of(signer, None, body, timestamp, first)
}

fn pool_of(
    signer: &Signer,
    v2: Option<V2Line<'_>>,
    body: &[u8],
    timestamp: u64,
    first: u64,
) -> Vec<Signed> {
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
                signed_string: match v2 {
                    Some(lines) => signed.render_v2(lines),
                    None => signed.render("current"),
                },
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

    bench_ed25519(c, &body);
}

/// The version 2 Ed25519 group: a registry key, the gate's audience, the same body.
fn bench_ed25519(c: &mut Criterion, body: &[u8]) {
    let (pem, public) = gate::sign::generate_ed25519().expect("a new key");
    let signing = || SigningKey::ed25519_pem(ED25519_V2.key_id, &pem).expect("the key reads back");
    let signer = Signer::v2(signing(), ED25519_V2.audience);
    let registry_key = Key::ed25519(
        ED25519_V2.key_id.into(),
        "langgraph".into(),
        PublicKey::from_bytes(*public.as_bytes()),
        false,
    );
    let keyring = Keyring::assemble(
        None,
        None,
        vec![registry_key],
        false,
        Some(ED25519_V2.audience.into()),
    );
    let verifier =
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, *public.as_bytes());
    let fixed_pool = pool_of(&signer, Some(ED25519_V2), body, T0, 0);
    // The raw side needs the signature bytes: the last 128 hex of the request's headers.
    let signature_of = |headers: &HeaderMap| -> Vec<u8> {
        let hex = headers[protocol::SIGNATURE].as_bytes();
        (0..hex.len() / 2)
            .map(|i| {
                u8::from_str_radix(
                    std::str::from_utf8(&hex[2 * i..2 * i + 2]).expect("hex"),
                    16,
                )
                .expect("hex")
            })
            .collect()
    };

    let mut group = c.benchmark_group("verify_ed25519_v2_1KiB_POST");
    group.bench_function("raw_crypto", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || {
                    fixed_pool
                        .iter()
                        .map(|s| Signed {
                            headers: s.headers.clone(),
                            timestamp: s.timestamp,
                            signed_string: s.signed_string.clone(),
                        })
                        .collect()
                },
                |request| {
                    let signature = signature_of(&request.headers);
                    let digest = protocol::body_digest(black_box(body));
                    let ok = verifier
                        .verify(request.signed_string.as_bytes(), &signature)
                        .is_ok();
                    black_box((digest, ok));
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
                    pool_of(
                        &signer,
                        Some(ED25519_V2),
                        body,
                        T0 + second / 64,
                        second * POOL as u64,
                    )
                },
                |request| {
                    let pending = verify::check_headers(
                        &request.headers,
                        &keyring,
                        WINDOW,
                        request.timestamp,
                    )
                    .expect("valid request");
                    let prefetched = store.prefetch(pending.nonce());
                    let verified = pending
                        .verify(LINE, &protocol::body_digest(black_box(body)))
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
