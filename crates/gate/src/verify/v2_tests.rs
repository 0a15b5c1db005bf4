//! Signature version 2 and the key registry's keys: every refusal, the audience binding, the
//! algorithm taken from the key, observe keys, and version 1 left to the environment's secrets.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;
use crate::keyring::{Algorithm, Key, PublicKey, Secret};
use crate::sign::{Request, Signer, SigningKey};

const NOW: u64 = 1_764_000_000;
const SKEW: u64 = 300;
const ENV: &str = "env-secret-0123456789-abcdefghijklmnopq";
const LANGGRAPH: &str = "langgraph-secret-0123456789-abcdefghijk";
const BILLING: &str = "billing-secret-0123456789-abcdefghijklmn";
const NONCE: &str = "nonce-0123456789abcdef";
const AUDIENCE: &str = "tool-gate";

/// An Ed25519 private key (PKCS#8 v1), made by `openssl genpkey -algorithm ed25519`.
const ED_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIBN/PayBV5M1CiArZWwqSC4pnlF7OeQ9g9LdPWw8dygj
-----END PRIVATE KEY-----
";

fn ed_public() -> PublicKey {
    SigningKey::ed25519_pem("x", ED_PEM)
        .expect("the test key parses")
        .public_key()
        .expect("an Ed25519 key has a public key")
}

/// Environment secret `env-1`, then registry keys: `lg-1` (langgraph, HMAC), `bl-1`
/// (billing, HMAC), `lg-ed` (langgraph, Ed25519), `lg-obs` (langgraph, Ed25519, observe).
fn keyring(audience: Option<&str>) -> Keyring {
    Keyring::assemble(
        Some(Key::new(Slot::Current, "env-1".into(), &Secret::new(ENV))),
        None,
        vec![
            Key::hmac(
                "lg-1".into(),
                "langgraph".into(),
                &Secret::new(LANGGRAPH),
                false,
            ),
            Key::hmac(
                "bl-1".into(),
                "billing".into(),
                &Secret::new(BILLING),
                false,
            ),
            Key::ed25519("lg-ed".into(), "langgraph".into(), ed_public(), false),
            Key::ed25519("lg-obs".into(), "langgraph".into(), ed_public(), true),
        ],
        false,
        audience.map(str::to_owned),
    )
}

fn hmac(id: &str, secret: &str) -> SigningKey {
    SigningKey::hmac(id, &Secret::new(secret))
}

fn ed(id: &str) -> SigningKey {
    SigningKey::ed25519_pem(id, ED_PEM).expect("the test key parses")
}

/// Headers `signer` sends for `POST /t?q=1` with body `{}`.
fn signed(signer: &Signer) -> HeaderMap {
    crate::sign::header_map(&signer.sign(&Request {
        method: "POST",
        target: "/t?q=1",
        body: b"{}",
        timestamp: NOW,
        nonce: NONCE,
    }))
}

const LINE: RequestLine<'static> = RequestLine {
    method: "POST",
    path: "/t",
    query: "q=1",
};

/// Both stages; the verifying key's id and caller.
fn outcome(headers: &HeaderMap, keyring: &Keyring) -> Result<(String, String), Reason> {
    check_headers(headers, keyring, SKEW, NOW)?
        .verify(LINE, &protocol::body_digest(b"{}"))
        .map(|v| (v.key().id().to_owned(), v.key().caller().to_owned()))
}

fn ok(id: &str, caller: &str) -> Result<(String, String), Reason> {
    Ok((id.to_owned(), caller.to_owned()))
}

fn with(mut headers: HeaderMap, name: HeaderName, value: &str) -> HeaderMap {
    headers.insert(name, HeaderValue::from_str(value).expect("test value"));
    headers
}

fn without(mut headers: HeaderMap, name: HeaderName) -> HeaderMap {
    headers.remove(name);
    headers
}

#[test]
fn version_2_table() {
    let ring = keyring(Some(AUDIENCE));
    let lg = signed(&Signer::v2(hmac("lg-1", LANGGRAPH), AUDIENCE));
    let zeros = "0".repeat(64);
    type Case = (
        &'static str,
        HeaderMap,
        Keyring,
        Result<(String, String), Reason>,
    );
    let cases: Vec<Case> = vec![
        (
            "registry HMAC key",
            lg.clone(),
            ring.clone(),
            ok("lg-1", "langgraph"),
        ),
        (
            "environment secret signs version 2 too",
            signed(&Signer::v2(hmac("env-1", ENV), AUDIENCE)),
            ring.clone(),
            ok("env-1", "shared"),
        ),
        (
            "Ed25519 key",
            signed(&Signer::v2(ed("lg-ed"), AUDIENCE)),
            ring.clone(),
            ok("lg-ed", "langgraph"),
        ),
        (
            "signed for another audience",
            signed(&Signer::v2(hmac("lg-1", LANGGRAPH), "billing-gate")),
            ring.clone(),
            Err(Reason::BadSignature),
        ),
        (
            "Ed25519, signed for another audience",
            signed(&Signer::v2(ed("lg-ed"), "billing-gate")),
            ring.clone(),
            Err(Reason::BadSignature),
        ),
        (
            "a gate without an audience refuses version 2",
            lg.clone(),
            keyring(None),
            Err(Reason::UnknownKeyId),
        ),
        (
            "no key id on the header pair",
            without(lg.clone(), protocol::KEY_ID),
            ring.clone(),
            Err(Reason::MissingKeyId),
        ),
        (
            "key id not configured",
            signed(&Signer::v2(hmac("lg-2", LANGGRAPH), AUDIENCE)),
            ring.clone(),
            Err(Reason::UnknownKeyId),
        ),
        (
            "another caller's key id on a signature made with this secret",
            signed(&Signer::v2(hmac("bl-1", LANGGRAPH), AUDIENCE)),
            ring.clone(),
            Err(Reason::BadSignature),
        ),
        (
            "an HMAC key's id on an Ed25519 signature: the key's algorithm decides",
            signed(&Signer::v2(ed("lg-1"), AUDIENCE)),
            ring.clone(),
            Err(Reason::BadSignature),
        ),
        (
            "an Ed25519 key's id on an HMAC signature: the key's algorithm decides",
            signed(&Signer::v2(hmac("lg-ed", LANGGRAPH), AUDIENCE)),
            ring.clone(),
            Err(Reason::BadSignature),
        ),
        (
            "zero signature",
            with(lg.clone(), protocol::SIGNATURE, &zeros),
            ring.clone(),
            Err(Reason::BadSignature),
        ),
        (
            "128 hex digits on an HMAC key",
            with(lg.clone(), protocol::SIGNATURE, &"ab".repeat(64)),
            ring.clone(),
            Err(Reason::BadSignature),
        ),
        (
            "neither 64 nor 128 hex digits",
            with(lg.clone(), protocol::SIGNATURE, &"ab".repeat(48)),
            ring.clone(),
            Err(Reason::MalformedSignature),
        ),
        (
            "version other than 2",
            with(lg.clone(), protocol::VERSION, "3"),
            ring.clone(),
            Err(Reason::MalformedSignature),
        ),
        (
            "version 02",
            with(lg.clone(), protocol::VERSION, "02"),
            ring.clone(),
            Err(Reason::MalformedSignature),
        ),
        (
            "empty version",
            with(lg.clone(), protocol::VERSION, ""),
            ring.clone(),
            Err(Reason::MalformedSignature),
        ),
        (
            "a version 2 signature sent as version 1",
            without(lg.clone(), protocol::VERSION),
            ring.clone(),
            Err(Reason::BadSignature),
        ),
    ];
    for (name, headers, keyring, expected) in cases {
        assert_eq!(outcome(&headers, &keyring), expected, "{name}");
    }
}

#[test]
fn a_repeated_version_header_is_malformed() {
    let mut headers = signed(&Signer::v2(hmac("lg-1", LANGGRAPH), AUDIENCE));
    headers.append(protocol::VERSION, HeaderValue::from_static("2"));
    assert_eq!(
        outcome(&headers, &keyring(Some(AUDIENCE))),
        Err(Reason::MalformedSignature)
    );
}

#[test]
fn version_1_signatures_are_the_environment_secrets_only() {
    let ring = keyring(Some(AUDIENCE));
    let registry_v1 = |id: &str| {
        signed(&Signer::new(
            Key::new(Slot::Current, id.into(), &Secret::new(LANGGRAPH)),
            None,
        ))
    };
    assert_eq!(
        outcome(
            &signed(&Signer::new(
                Key::new(Slot::Current, "env-1".into(), &Secret::new(ENV)),
                None
            )),
            &ring
        ),
        ok("env-1", "shared")
    );
    // A registry secret used for version 1 verifies nothing, whatever the mode.
    assert_eq!(
        outcome(&registry_v1("lg-1"), &ring),
        Err(Reason::BadSignature)
    );
    let strict = Keyring::assemble(
        Some(Key::new(Slot::Current, "env-1".into(), &Secret::new(ENV))),
        None,
        vec![Key::hmac(
            "lg-1".into(),
            "langgraph".into(),
            &Secret::new(LANGGRAPH),
            false,
        )],
        true,
        Some(AUDIENCE.into()),
    );
    assert_eq!(
        outcome(&registry_v1("lg-1"), &strict),
        Err(Reason::UnknownKeyId)
    );
    // Version 1 never takes a 128-digit signature.
    let long = with(registry_v1("env-1"), protocol::SIGNATURE, &"ab".repeat(64));
    assert_eq!(outcome(&long, &ring), Err(Reason::MalformedSignature));
    // Without environment secrets, version 1 has no key at all.
    let registry_only = Keyring::assemble(
        None,
        None,
        vec![Key::hmac(
            "lg-1".into(),
            "langgraph".into(),
            &Secret::new(LANGGRAPH),
            false,
        )],
        false,
        Some(AUDIENCE.into()),
    );
    assert_eq!(registry_only.mode(), "none");
    assert_eq!(
        outcome(&registry_v1("lg-1"), &registry_only),
        Err(Reason::BadSignature)
    );
}

#[test]
fn unconfigured_candidates_are_ignored_and_the_first_valid_one_names_the_caller() {
    let ring = keyring(Some(AUDIENCE));
    // The pair names a key this gate does not have; the list's second entry verifies.
    let unknown_then_known = signed(
        &Signer::v2(hmac("other-gate-key", LANGGRAPH), AUDIENCE).also_signing_with(ed("lg-ed")),
    );
    assert_eq!(
        outcome(&unknown_then_known, &ring),
        ok("lg-ed", "langgraph")
    );
    // Two callers' valid signatures: the header pair's comes first.
    let billing_first =
        signed(&Signer::v2(hmac("bl-1", BILLING), AUDIENCE).also_signing_with(ed("lg-ed")));
    assert_eq!(outcome(&billing_first, &ring), ok("bl-1", "billing"));
    let entries_only = without(billing_first, protocol::SIGNATURE);
    assert_eq!(outcome(&entries_only, &ring), ok("bl-1", "billing"));
}

#[test]
fn observe_keys_are_checked_and_counted_but_never_admit() {
    let ring = keyring(Some(AUDIENCE));
    let digest = protocol::body_digest(b"{}");
    let observations = |headers: &HeaderMap| {
        let pending = check_headers(headers, &ring, SKEW, NOW).expect("headers pass");
        let seen: Vec<(String, bool)> = pending
            .observations(LINE, &digest)
            .iter()
            .map(|(index, valid)| {
                (
                    ring.at(index).expect("in the keyring").id().to_owned(),
                    valid,
                )
            })
            .collect();
        (
            seen,
            pending
                .verify(LINE, &digest)
                .map(|v| v.key().id().to_owned()),
        )
    };
    // Only an observe key's signature, valid: counted valid, and the request is refused.
    let observe_only = signed(&Signer::v2(ed("lg-obs"), AUDIENCE));
    assert_eq!(
        observations(&observe_only),
        (vec![("lg-obs".into(), true)], Err(Reason::BadSignature))
    );
    // The migration's observe stage: the HMAC key admits, the observe key is counted.
    let both =
        signed(&Signer::v2(hmac("lg-1", LANGGRAPH), AUDIENCE).also_signing_with(ed("lg-obs")));
    assert_eq!(
        observations(&both),
        (vec![("lg-obs".into(), true)], Ok("lg-1".into()))
    );
    // A wrong observe signature is counted invalid, and changes nothing else.
    let mut tampered = both.clone();
    let json = tampered[protocol::SIGNATURES]
        .to_str()
        .expect("ASCII")
        .to_owned();
    let observe_sig = {
        let value: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        value[1]["signature"].as_str().expect("string").to_owned()
    };
    let flipped = format!(
        "{}{}",
        if observe_sig.starts_with('0') {
            "1"
        } else {
            "0"
        },
        &observe_sig[1..]
    );
    tampered.insert(
        protocol::SIGNATURES,
        HeaderValue::from_str(&json.replace(&observe_sig, &flipped)).expect("header-safe"),
    );
    assert_eq!(
        observations(&tampered),
        (vec![("lg-obs".into(), false)], Ok("lg-1".into()))
    );
    // Without an observe key named, nothing is observed.
    let plain = signed(&Signer::v2(hmac("lg-1", LANGGRAPH), AUDIENCE));
    assert_eq!(observations(&plain), (vec![], Ok("lg-1".into())));
}

#[test]
fn tampering_with_the_request_line_or_body_is_a_bad_signature_for_each_algorithm() {
    let ring = keyring(Some(AUDIENCE));
    for signer in [
        Signer::v2(hmac("lg-1", LANGGRAPH), AUDIENCE),
        Signer::v2(ed("lg-ed"), AUDIENCE),
    ] {
        let headers = signed(&signer);
        let digest = protocol::body_digest(b"{}");
        let tampered = [
            (
                RequestLine {
                    method: "PUT",
                    ..LINE
                },
                digest,
            ),
            (RequestLine { path: "/T", ..LINE }, digest),
            (
                RequestLine {
                    query: "q=2",
                    ..LINE
                },
                digest,
            ),
            (LINE, protocol::body_digest(b"{ }")),
        ];
        for (line, digest) in tampered {
            let result = check_headers(&headers, &ring, SKEW, NOW)
                .expect("headers pass")
                .verify(line, &digest);
            assert_eq!(
                result.map(|v| v.key_index()),
                Err(Reason::BadSignature),
                "{line:?} {signer:?}"
            );
        }
    }
}

#[test]
fn stale_timestamps_are_refused_before_key_ids_are_looked_at() {
    let headers = crate::sign::header_map(&Signer::v2(hmac("nobody", LANGGRAPH), AUDIENCE).sign(
        &Request {
            method: "POST",
            target: "/t?q=1",
            body: b"{}",
            timestamp: NOW - SKEW - 1,
            nonce: NONCE,
        },
    ));
    assert_eq!(
        outcome(&headers, &keyring(Some(AUDIENCE))),
        Err(Reason::StaleTimestamp)
    );
    assert_eq!(
        outcome(&headers, &keyring(None)),
        Err(Reason::StaleTimestamp)
    );
}

#[test]
fn ed25519_agrees_with_openssl() {
    // From OpenSSL for ED_PEM: `openssl pkey -pubout` (last 32 bytes of the DER, base64url),
    // and `openssl pkeyutl -sign -rawin` of the 5 bytes `hello`.
    let public = "x4yuD32xrmXOMf4taSvByhyR9qZt8NBXhP9P4vNwbAs";
    let signature = "35076d746f5812e38f727a03a6fd6ce351a634fffc6dcf70e9b3dcd0d95468ab\
                     3fe4a86adab4731b31cff20551e52227f320a15cbcb030fc8efac5072b83cc00";
    assert_eq!(ed_public().to_base64url(), public);
    let parsed = PublicKey::parse(public).expect("well-formed");
    let mut bytes = [0u8; 64];
    assert!(protocol::decode_hex_into(signature.as_bytes(), &mut bytes));
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, parsed.as_bytes());
    assert!(key.verify(b"hello", &bytes).is_ok());
    assert!(key.verify(b"hellO", &bytes).is_err());
    for bad in [
        "",
        "x4yuD32xrmXOMf4taSvByhyR9qZt8NBXhP9P4vNwbA",
        &format!("{public}="),
        &format!("+{}", &public[1..]),
    ] {
        assert_eq!(PublicKey::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn the_key_index_finds_the_key_in_its_keyring() {
    let ring = keyring(Some(AUDIENCE));
    let headers = signed(&Signer::v2(ed("lg-ed"), AUDIENCE));
    let verified = check_headers(&headers, &ring, SKEW, NOW)
        .expect("headers pass")
        .verify(LINE, &protocol::body_digest(b"{}"))
        .expect("verifies");
    let index = verified.key_index();
    assert_eq!(index.slot(), None);
    assert_eq!(ring.at(index).map(Key::id), Some("lg-ed"));
    assert_eq!(ring.at(index).map(Key::algorithm), Some(Algorithm::Ed25519));
    assert_eq!(verified.key().verified_caller(), "langgraph");
    assert_eq!(verified.key().verified_key_id(), "lg-ed");
}
