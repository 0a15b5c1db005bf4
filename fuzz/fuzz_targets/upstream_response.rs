//! The upstream response parser (head, 1xx, framing, body) on arbitrary bytes in arbitrary
//! read splits. It must never panic, never depend on where the reads split, never deliver
//! more body than it read, and never keep a header the gate drops (hop-by-hop ones).
#![no_main]
#![forbid(unsafe_code)]

use gate::upstream_testing as testing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: the request's method (bit 0: HEAD); next three: read sizes; the rest: the
    // bytes the upstream sent before closing.
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (sizes, wire) = rest.split_at(rest.len().min(3));
    let pieces: Vec<usize> = sizes.iter().map(|&n| usize::from(n) + 1).collect();
    let head_request = flags & 1 == 1;

    let whole = testing::read_response(wire, head_request, &[]);
    let split = testing::read_response(wire, head_request, &pieces);
    match (&whole, &split) {
        (Ok(whole), Ok(split)) => assert_eq!(whole, split, "the read splits changed the result"),
        (Err(_), Err(_)) => {}
        _ => panic!("the read splits changed acceptance: {whole:?} / {split:?}"),
    }
    if let Ok(read) = whole {
        assert!(read.body.len() + read.leftover <= wire.len());
        assert!(!read.until_close || read.leftover == 0);
        assert!(!(read.until_close && read.reusable));
        assert!((200..1000).contains(&read.status));
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "transfer-encoding",
            "upgrade",
        ] {
            assert!(!read.headers.contains_key(name), "{name} forwarded");
        }
    }
});
