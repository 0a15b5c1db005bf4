//! The chunked body decoder on arbitrary bytes in arbitrary read splits: never a panic, the
//! same outcome whatever the splits, never more data out than bytes in, and a body decoded
//! from a valid chunked encoding of it.
#![no_main]
#![forbid(unsafe_code)]

use gate::upstream_testing as testing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First two bytes: read sizes; the rest: the body as sent.
    let (sizes, wire) = data.split_at(data.len().min(2));
    let pieces: Vec<usize> = sizes.iter().map(|&n| usize::from(n % 64) + 1).collect();

    let whole = testing::decode_chunked(wire, &[]);
    let split = testing::decode_chunked(wire, &pieces);
    let byte_by_byte = testing::decode_chunked(wire, &[1]);
    match (&whole, &split, &byte_by_byte) {
        (Ok(a), Ok(b), Ok(c)) => assert!(a == b && b == c, "the read splits changed the body"),
        (Err(_), Err(_), Err(_)) => {}
        _ => panic!("the read splits changed acceptance: {whole:?} / {split:?} / {byte_by_byte:?}"),
    }
    if let Ok(Some((body, leftover))) = &whole {
        assert!(body.len() + leftover <= wire.len());
        // The decoded body, chunked again in one chunk, decodes to itself.
        let mut again = format!("{:x}\r\n", body.len()).into_bytes();
        if body.is_empty() {
            again.clear();
        } else {
            again.extend_from_slice(body);
            again.extend_from_slice(b"\r\n");
        }
        again.extend_from_slice(b"0\r\n\r\n");
        let decoded = testing::decode_chunked(&again, &pieces);
        assert_eq!(decoded.ok().flatten(), Some((body.clone(), 0)));
    }
});
