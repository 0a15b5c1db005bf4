//! The verification path allocates nothing: parsing the headers, building the signed string,
//! both HMAC checks and the dual-sign JSON all work on borrowed data and fixed arrays. The
//! replay cache's shard tables grow by doubling, so it allocates a handful of times per shard
//! over a process's life, never per request (while a shard's old table moves into its new
//! one, the old one also shrinks in place once per 4,096 slots moved). Counted with a
//! counting global allocator (allocation-counter).

use gate::keyring::{Key, Keyring, Secret, Slot};
use gate::protocol;
use gate::replay::{NonceCache, ReplayStore};
use gate::sign::{Request, Signer};
use gate::verify::{self, RequestLine};
use http::HeaderMap;

const NEW: &str = "alloc-test-secret-new-0123456789abcdefgh";
const OLD: &str = "alloc-test-secret-old-0123456789abcdefgh";
const NOW: u64 = 1_764_000_000;
const BODY: &[u8] = br#"{"tool":"search","args":{"q":"sig-gate"}}"#;

fn keyring() -> Keyring {
    Keyring::new(
        Key::new(Slot::Current, "k-new".into(), &Secret::new(NEW)),
        Some(Key::new(Slot::Previous, "k-old".into(), &Secret::new(OLD))),
        true,
    )
}

/// `count` dual-signed requests, each with its own nonce.
fn requests(count: usize) -> Vec<HeaderMap> {
    let signer = Signer::new(
        Key::new(Slot::Current, "k-new".into(), &Secret::new(NEW)),
        Some(Key::new(Slot::Previous, "k-old".into(), &Secret::new(OLD))),
    );
    (0..count)
        .map(|i| {
            let nonce = format!("alloc-nonce-{i:016}");
            let request = Request {
                method: "POST",
                target: "/tools/call?x=1",
                body: BODY,
                timestamp: NOW,
                nonce: &nonce,
            };
            gate::sign::header_map(&signer.sign(&request))
        })
        .collect()
}

const LINE: RequestLine<'static> = RequestLine {
    method: "POST",
    path: "/tools/call",
    query: "x=1",
};

#[test]
fn verification_allocates_nothing() {
    let keyring = keyring();
    let requests = requests(1000);
    let counted = allocation_counter::measure(|| {
        for headers in &requests {
            let verified = verify::check_headers(headers, &keyring, 300, NOW)
                .and_then(|pending| pending.verify(LINE, &protocol::body_digest(BODY)))
                .expect("valid request");
            std::hint::black_box(verified);
        }
    });
    assert_eq!(
        counted.count_total, 0,
        "allocations on the verification path"
    );
}

#[test]
fn replay_cache_allocates_only_when_its_table_grows() {
    let keyring = keyring();
    let requests = requests(4096);
    let store = ReplayStore::Memory(NonceCache::new(1_000_000, 300));
    let counted = allocation_counter::measure(|| {
        for headers in &requests {
            // As the gate admits: the prefetch after the header checks, the admission once the
            // signature verified.
            let pending =
                verify::check_headers(headers, &keyring, 300, NOW).expect("valid request");
            let prefetched = store.prefetch(pending.nonce());
            let verified = pending
                .verify(LINE, &protocol::body_digest(BODY))
                .expect("valid request");
            store
                .admit_prefetched(verified, &prefetched, NOW)
                .ready()
                .expect("the memory table answers at once")
                .expect("fresh nonce");
        }
    });
    // 4096 entries over 16 shards, about 256 each (give or take 16): 512-slot tables, reached
    // by doubling from 4 slots, at most 7 growths a shard.
    assert!(
        counted.count_total <= 16 * 7,
        "{} allocations for 4096 requests",
        counted.count_total
    );
    assert_eq!(store.len(), 4096);
}
