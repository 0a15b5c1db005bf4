//! Caller keys through a real gate on loopback: version 2 with registry keys (HMAC and
//! Ed25519), the audience binding, version 1 beside it, what the upstream learns
//! (`X-Gate-Verified-Caller`, `X-Gate-Verified-Key-Id`, client copies stripped in every
//! spelling), and the keys' metrics.

mod support;

use std::path::PathBuf;

use gate::keyring::Secret;
use gate::sign::{self, Request, Signer, SigningKey};
use http::StatusCode;
use runbook::upstream::RecordingUpstream;
use support::{SECRET, TestGate, send, sign};

const LANGGRAPH: &str = "langgraph-secret-0123456789-abcdefghijk";
const BILLING: &str = "billing-secret-0123456789-abcdefghijklmn";

/// An Ed25519 private key made by `openssl genpkey -algorithm ed25519`, and its public key.
const ED_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIBN/PayBV5M1CiArZWwqSC4pnlF7OeQ9g9LdPWw8dygj
-----END PRIVATE KEY-----
";
const ED_PUBLIC: &str = "x4yuD32xrmXOMf4taSvByhyR9qZt8NBXhP9P4vNwbAs";

/// A directory with a registry (`lg-1` HMAC and `lg-ed` Ed25519 for langgraph, `bl-1` HMAC for
/// billing, `lg-obs` an observe key), removed when dropped.
struct Registry {
    dir: PathBuf,
}

impl Registry {
    fn write(name: &str) -> Registry {
        let dir = std::env::temp_dir().join(format!(
            "sig-gate-keys-test-{name}-{}-{}",
            std::process::id(),
            sign::new_nonce()
        ));
        std::fs::create_dir_all(dir.join("secrets")).expect("temp dir");
        std::fs::write(dir.join("secrets/lg"), format!("{LANGGRAPH}\n")).expect("write");
        std::fs::write(dir.join("secrets/bl"), BILLING).expect("write");
        let registry = format!(
            r#"
[[key]]
id = "lg-1"
caller = "langgraph"
alg = "hmac-sha256"
secret_file = "secrets/lg"

[[key]]
id = "lg-ed"
caller = "langgraph"
alg = "ed25519"
public_key = "{ED_PUBLIC}"

[[key]]
id = "bl-1"
caller = "billing"
alg = "hmac-sha256"
secret_file = "secrets/bl"

[[key]]
id = "lg-obs"
caller = "langgraph"
alg = "ed25519"
public_key = "{ED_PUBLIC}"
observe = true
"#
        );
        std::fs::write(dir.join("keys.toml"), registry).expect("write");
        Registry { dir }
    }

    fn path(&self) -> String {
        self.dir.join("keys.toml").display().to_string()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn hmac(id: &str, secret: &str) -> SigningKey {
    SigningKey::hmac(id, &Secret::new(secret))
}

fn ed(id: &str) -> SigningKey {
    SigningKey::ed25519_pem(id, ED_PEM).expect("the test key parses")
}

/// Headers `signer` sends for `method target` with `body`, now, with a fresh nonce.
fn signed(signer: &Signer, method: &str, target: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let nonce = sign::new_nonce();
    signer.sign(&Request {
        method,
        target,
        body,
        timestamp: gate::clock::unix_now(),
        nonce: &nonce,
    })
}

async fn gate_for(upstream: &RecordingUpstream, registry: &Registry, audience: &str) -> TestGate {
    TestGate::start(
        &upstream.url(),
        &[
            ("GATE_KEYS_FILE", &registry.path()),
            ("GATE_AUDIENCE", audience),
        ],
    )
    .await
}

/// The client's own copies of the gate's statements, in several spellings.
fn forged() -> Vec<(&'static str, String)> {
    vec![
        ("X-Gate-Verified-Caller", "admin".into()),
        ("x_gate_verified_caller", "admin".into()),
        ("X-Gate-Verified-Key-Id", "root".into()),
        ("X_Gate_Verified_Key_Id", "root".into()),
    ]
}

/// What the upstream saw of the gate's statements on its last request: every
/// `X-Gate-Verified-*` header in any spelling, name lower-cased.
fn statements(upstream: &RecordingUpstream) -> Vec<(String, String)> {
    let seen = upstream.arrivals();
    let last = seen.last().expect("the upstream saw a request");
    let mut found: Vec<(String, String)> = last
        .headers
        .iter()
        .filter(|(name, _)| {
            name.as_str()
                .replace('_', "-")
                .starts_with("x-gate-verified")
        })
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().expect("ASCII").to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

fn pair(name: &str, value: &str) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

#[tokio::test]
async fn version_2_reaches_the_upstream_with_the_callers_identity_and_forged_copies_do_not() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let registry = Registry::write("identity");
    let gate = gate_for(&upstream, &registry, "tool-gate").await;
    for (signer, key_id, caller) in [
        (
            Signer::v2(hmac("lg-1", LANGGRAPH), "tool-gate"),
            "lg-1",
            "langgraph",
        ),
        (Signer::v2(ed("lg-ed"), "tool-gate"), "lg-ed", "langgraph"),
        (
            Signer::v2(hmac("bl-1", BILLING), "tool-gate"),
            "bl-1",
            "billing",
        ),
    ] {
        let mut headers = signed(&signer, "POST", "/tools/call?x=1", b"{}");
        headers.extend(forged());
        let reply = send(gate.addr, "POST", "/tools/call?x=1", &headers, "{}").await;
        assert_eq!(reply.status, StatusCode::OK, "{key_id}: {}", reply.text());
        assert_eq!(
            statements(&upstream),
            [
                pair("x-gate-verified-caller", caller),
                pair("x-gate-verified-key-id", key_id)
            ],
            "{key_id}"
        );
    }
    // The signature headers themselves go on, version included.
    let last = upstream.arrivals().pop().expect("seen");
    assert_eq!(last.headers["x-gate-version"], "2");

    // Version 1 with the environment's secret: the caller is `shared`.
    let mut headers = sign(SECRET, "current", "GET", "/v1", b"");
    headers.extend(forged());
    let reply = send(gate.addr, "GET", "/v1", &headers, "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        statements(&upstream),
        [
            pair("x-gate-verified-caller", "shared"),
            pair("x-gate-verified-key-id", "current")
        ]
    );

    // An exempt or refused request carries no statement, and a forged one is stripped.
    let reply = send(gate.addr, "GET", "/unsigned", &forged(), "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let count = upstream.total();
    let mut headers = signed(
        &Signer::v2(hmac("lg-1", BILLING), "tool-gate"),
        "GET",
        "/x",
        b"",
    );
    headers.extend(forged());
    let reply = send(gate.addr, "GET", "/x", &headers, "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["reason"], "bad_signature");
    assert_eq!(upstream.total(), count, "a refused request reaches nobody");

    // Each key's admissions, by caller, key id and algorithm; the observe key at 0.
    let metrics = gate.metrics().await;
    let admitted = |caller: &str, id: &str, alg: &str| {
        metrics
            .get(&format!(
                "sig_gate_verified_key_total{{alg=\"{alg}\",caller=\"{caller}\",key_id=\"{id}\"}}"
            ))
            .copied()
    };
    assert_eq!(admitted("langgraph", "lg-1", "hmac-sha256"), Some(1.0));
    assert_eq!(admitted("langgraph", "lg-ed", "ed25519"), Some(1.0));
    assert_eq!(admitted("billing", "bl-1", "hmac-sha256"), Some(1.0));
    assert_eq!(admitted("shared", "current", "hmac-sha256"), Some(1.0));
    assert_eq!(admitted("langgraph", "lg-obs", "ed25519"), Some(0.0));
    assert_eq!(
        metrics.get("sig_gate_verified_total{slot=\"current\"}"),
        Some(&1.0)
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_request_signed_for_one_audience_is_refused_by_another() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let registry = Registry::write("audience");
    let tool_gate = gate_for(&upstream, &registry, "tool-gate").await;
    let billing_gate = gate_for(&upstream, &registry, "billing-gate").await;
    for signer in [
        Signer::v2(hmac("lg-1", LANGGRAPH), "tool-gate"),
        Signer::v2(ed("lg-ed"), "tool-gate"),
    ] {
        let headers = signed(&signer, "POST", "/tools/call", b"{\"q\":1}");
        // The very same request, captured and sent to the other service.
        let elsewhere = send(
            billing_gate.addr,
            "POST",
            "/tools/call",
            &headers,
            "{\"q\":1}",
        )
        .await;
        assert_eq!(elsewhere.status, StatusCode::UNAUTHORIZED);
        assert_eq!(elsewhere.json()["reason"], "bad_signature");
        let here = send(tool_gate.addr, "POST", "/tools/call", &headers, "{\"q\":1}").await;
        assert_eq!(here.status, StatusCode::OK, "{}", here.text());
    }
    assert_eq!(
        billing_gate
            .metric("sig_gate_invalid_request_signature_total{reason=\"bad_signature\"}")
            .await,
        2.0
    );
    tool_gate.stop().await;
    billing_gate.stop().await;
}

#[tokio::test]
async fn a_gate_without_an_audience_refuses_version_2_and_keeps_version_1() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = TestGate::start(&upstream.url(), &[]).await;
    let v2 = signed(
        &Signer::v2(hmac("current", SECRET), "tool-gate"),
        "GET",
        "/t",
        b"",
    );
    let reply = send(gate.addr, "GET", "/t", &v2, "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["reason"], "unknown_key_id");
    assert!((upstream.total() == 0), "refused, not forwarded");
    let v1 = sign(SECRET, "current", "GET", "/t", b"");
    let reply = send(gate.addr, "GET", "/t", &v1, "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        statements(&upstream),
        [
            pair("x-gate-verified-caller", "shared"),
            pair("x-gate-verified-key-id", "current")
        ]
    );
    gate.stop().await;
}

#[tokio::test]
async fn observe_keys_are_counted_and_never_admit() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let registry = Registry::write("observe");
    let gate = gate_for(&upstream, &registry, "tool-gate").await;
    let observed =
        "sig_gate_identity_observed_total{caller=\"langgraph\",key_id=\"lg-obs\",result=\"valid\"}";
    assert_eq!(gate.metrics().await.get(observed), Some(&0.0));
    // The observe stage: the HMAC key admits, the observe key's signature is counted.
    let both = Signer::v2(hmac("lg-1", LANGGRAPH), "tool-gate").also_signing_with(ed("lg-obs"));
    let reply = send(gate.addr, "GET", "/t", &signed(&both, "GET", "/t", b""), "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        statements(&upstream)[0],
        pair("x-gate-verified-caller", "langgraph")
    );
    // The observe key alone grants nothing.
    let alone = Signer::v2(ed("lg-obs"), "tool-gate");
    let reply = send(
        gate.addr,
        "GET",
        "/t",
        &signed(&alone, "GET", "/t", b""),
        "",
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["reason"], "bad_signature");
    assert_eq!(gate.metric(observed).await, 2.0);
    gate.stop().await;
}
