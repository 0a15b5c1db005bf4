//! Every published test vector in `tests/vectors/hmac-v1.json` (the file other languages'
//! signers are checked against too): the signed string, the signature, verification by the
//! gate's own verifier, and the exact header lines of the signer and of `sig-gate sign`.

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use gate::keyring::{Key, Keyring, Secret, Slot};
use gate::protocol::{self, SignedString};
use gate::sign::{Request, Signer};
use gate::verify::{self, RequestLine};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

#[derive(Deserialize)]
struct File {
    version: u32,
    algorithm: String,
    vectors: Vec<Vector>,
    dual_sign: Vec<DualVector>,
}

#[derive(Deserialize)]
struct Vector {
    name: String,
    secret: String,
    key_id: String,
    timestamp: String,
    nonce: String,
    method: String,
    target: String,
    body_base64: String,
    body_sha256: String,
    signed_string: String,
    signature: String,
}

#[derive(Deserialize)]
struct DualVector {
    name: String,
    secret: String,
    key_id: String,
    prev_secret: String,
    prev_key_id: String,
    timestamp: String,
    nonce: String,
    method: String,
    target: String,
    body_base64: String,
    headers: Vec<(String, String)>,
}

fn load() -> File {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/hmac-v1.json");
    let text = std::fs::read_to_string(path).expect("vectors file is in the repo");
    let file: File = serde_json::from_str(&text).expect("vectors file parses");
    assert_eq!(file.version, 1);
    assert_eq!(file.algorithm, protocol::ALGORITHM);
    file
}

fn body(base64: &str) -> Vec<u8> {
    STANDARD.decode(base64).expect("body_base64 is base64")
}

fn header_map(lines: &[(String, String)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in lines {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    headers
}

#[test]
fn vectors_cover_what_the_issue_names() {
    let file = load();
    assert!(file.vectors.len() >= 12, "at least 12 vectors");
    assert!(!file.dual_sign.is_empty(), "a dual-sign vector");
    let has = |pred: &dyn Fn(&Vector) -> bool| file.vectors.iter().any(pred);
    assert!(has(&|v| v.body_base64.is_empty()), "empty body");
    assert!(
        has(&|v| std::str::from_utf8(&body(&v.body_base64)).is_ok_and(|b| !b.is_ascii())),
        "non-ASCII body"
    );
    assert!(
        has(&|v| v.target.split('?').next().is_some_and(|p| p.contains('%'))),
        "percent-encoded path"
    );
    assert!(
        has(&|v| v.target.contains('+') && v.target.contains("%20")),
        "query with + and %20"
    );
    assert!(has(&|v| v.key_id.is_empty()), "no key id");
}

#[test]
fn every_vector_signs_and_verifies() {
    for v in load().vectors {
        let body = body(&v.body_base64);
        let digest = protocol::body_digest(&body);
        assert_eq!(protocol::hex32_string(&digest), v.body_sha256, "{}", v.name);
        let (path, query) = SignedString::split_target(&v.target);
        let signed = SignedString {
            timestamp: &v.timestamp,
            nonce: &v.nonce,
            method: &v.method,
            path,
            query,
            body_digest: &digest,
        };
        assert_eq!(signed.render(&v.key_id), v.signed_string, "{}", v.name);
        let key = Key::new(
            Slot::Current,
            "configured".into(),
            &Secret::new(v.secret.as_bytes()),
        );
        assert_eq!(
            protocol::hex32_string(&key.mac(&signed, &v.key_id)),
            v.signature,
            "{}",
            v.name
        );

        // The gate's verifier accepts the request as a signer would send it.
        let mut lines = vec![
            ("X-Gate-Timestamp".to_string(), v.timestamp.clone()),
            ("X-Gate-Nonce".to_string(), v.nonce.clone()),
            ("X-Gate-Signature".to_string(), v.signature.clone()),
        ];
        if !v.key_id.is_empty() {
            lines.push(("X-Gate-Key-Id".to_string(), v.key_id.clone()));
        }
        let headers = header_map(&lines);
        let keyring = Keyring::new(key, None, false);
        let now = v.timestamp.parse().expect("timestamp");
        let line = RequestLine {
            method: &v.method,
            path,
            query,
        };
        let verified = verify::check_headers(&headers, &keyring, 300, now)
            .and_then(|pending| pending.verify(line, &digest));
        assert!(verified.is_ok(), "{}: {:?}", v.name, verified.err());
    }
}

fn dual_signer(v: &DualVector) -> Signer {
    Signer::new(
        Key::new(
            Slot::Current,
            v.key_id.clone(),
            &Secret::new(v.secret.as_bytes()),
        ),
        Some(Key::new(
            Slot::Previous,
            v.prev_key_id.clone(),
            &Secret::new(v.prev_secret.as_bytes()),
        )),
    )
}

#[test]
fn dual_sign_vectors_match_the_signer_header_for_header() {
    for v in load().dual_sign {
        let body = body(&v.body_base64);
        let request = Request {
            method: &v.method,
            target: &v.target,
            body: &body,
            timestamp: v.timestamp.parse().expect("timestamp"),
            nonce: &v.nonce,
        };
        let produced: Vec<(String, String)> = dual_signer(&v)
            .sign(&request)
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        assert_eq!(produced, v.headers, "{}", v.name);
    }
}

#[test]
fn sig_gate_sign_prints_the_vector_headers() {
    let dir = std::env::temp_dir().join(format!("sig-gate-vectors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (i, v) in load().dual_sign.into_iter().enumerate() {
        let body_file = dir.join(format!("body-{i}"));
        std::fs::write(&body_file, body(&v.body_base64)).expect("write body");
        let output = Command::new(env!("CARGO_BIN_EXE_sig-gate"))
            .args(["sign", "--method", &v.method, "--path", &v.target])
            .args(["--timestamp", &v.timestamp, "--nonce", &v.nonce])
            .arg("--body-file")
            .arg(&body_file)
            .env_clear()
            .env("INTERSERVICE_HMAC_SECRET", &v.secret)
            .env("INTERSERVICE_HMAC_KEY_ID", &v.key_id)
            .env("INTERSERVICE_HMAC_SECRET_PREV", &v.prev_secret)
            .env("INTERSERVICE_HMAC_KEY_ID_PREV", &v.prev_key_id)
            .env("TOOL_GATE_DUAL_SIGN", "true")
            .env("GATE_ALLOW_WEAK_SECRET", "true")
            .output()
            .expect("run sig-gate sign");
        assert!(
            output.status.success(),
            "{}: {}",
            v.name,
            String::from_utf8_lossy(&output.stderr)
        );
        let expected: String = v
            .headers
            .iter()
            .map(|(n, val)| format!("{n}: {val}\n"))
            .collect();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            expected,
            "{}",
            v.name
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
