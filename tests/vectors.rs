//! Every published test vector (the files other languages' signers are checked against too),
//! written by an independent generator (`tests/vectors/generate.py`):
//! - `tests/vectors/hmac-v1.json`: the signed string, the signature, verification by the
//!   gate's own verifier, and the exact header lines of the signer and of `sig-gate sign`;
//! - `tests/vectors/hmac-v2.json` and `ed25519-v2.json` (version 2; the format is each file's
//!   `description`): every signer case's signed strings and exact ordered headers from the
//!   signer's version 2 API and from `sig-gate sign`, every computed signature (honest or
//!   forged) recomputed, and every case's expected answer (the key id and caller admitted, or
//!   the reason, and the observe keys' results) from the gate's pure verifier with a keyring
//!   built as the case's `gate` section says.

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use gate::keyring::{Algorithm, Key, Keyring, PublicKey, Secret, Slot};
use gate::protocol::{self, SignedString, V2Line};
use gate::sign::{Request, Signer, SigningKey};
use gate::verify::{self, RequestLine};
use http::{HeaderMap, HeaderName, HeaderValue};
use ring::signature::KeyPair;
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

// ---------------------------------------------------------------------------------------------
// Version 2: tests/vectors/hmac-v2.json and tests/vectors/ed25519-v2.json.

/// The version 2 files, each with the algorithm its `algorithm` field names.
const V2_FILES: [(&str, &str); 2] = [
    ("hmac-v2.json", "hmac-sha256"),
    ("ed25519-v2.json", "ed25519"),
];

/// A version 2 file. Unknown fields are refused, so an expectation the generator adds cannot be
/// silently ignored here.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct V2File {
    version: u32,
    algorithm: String,
    #[allow(dead_code)] // the format, for people
    description: String,
    /// The gate's clock: `now` for verification.
    gate_clock: u64,
    keys: Vec<V2Key>,
    cases: Vec<V2Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct V2Key {
    id: String,
    caller: String,
    alg: String,
    /// `registry` (a `[[key]]` of GATE_KEYS_FILE) or `env` (INTERSERVICE_HMAC_SECRET).
    source: String,
    secret: Option<String>,
    private_key_hex: Option<String>,
    private_key_pem: Option<String>,
    public_key: Option<String>,
    public_key_hex: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct V2Case {
    name: String,
    method: String,
    target: String,
    body_base64: String,
    body_sha256: String,
    timestamp: String,
    nonce: String,
    /// What a conforming signer was given; `None` when the headers were made by hand.
    signer: Option<V2SignerSpec>,
    signatures: Vec<V2Signature>,
    headers: Vec<(String, String)>,
    gate: V2Gate,
    expected: V2Expected,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct V2SignerSpec {
    key_id: String,
    audience: String,
    observe_key_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct V2Signature {
    /// Claimed: line 3 and the header.
    key_id: String,
    /// Line 2, or `GATE-HMAC-SHA256` for a version 1 signature.
    alg: String,
    audience: String,
    signed_string: String,
    signature: String,
    /// The key whose material made it.
    signing_key: String,
    /// `hmac-sha256`, `ed25519` or `hmac-sha256-keyed-with-public-key`.
    primitive: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct V2Gate {
    audience: Option<String>,
    keys: Vec<String>,
    observe: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct V2Expected {
    result: String,
    key_id: Option<String>,
    caller: Option<String>,
    reason: Option<String>,
    observed: Vec<V2Observed>,
}

#[derive(Deserialize, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct V2Observed {
    key_id: String,
    caller: String,
    result: String,
}

/// Both version 2 files, by name; a missing or unreadable file fails the test that reads it.
fn load_v2() -> Vec<(&'static str, V2File)> {
    V2_FILES
        .iter()
        .map(|(name, algorithm)| {
            let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|err| panic!("{path}: {err} (the vectors are in the repository)"));
            let file: V2File =
                serde_json::from_str(&text).unwrap_or_else(|err| panic!("{path}: {err}"));
            assert_eq!(file.version, 2, "{name}");
            assert_eq!(file.algorithm, *algorithm, "{name}");
            (*name, file)
        })
        .collect()
}

impl V2File {
    fn key(&self, id: &str) -> &V2Key {
        self.keys
            .iter()
            .find(|key| key.id == id)
            .unwrap_or_else(|| panic!("key {id:?} is listed in the file's keys"))
    }
}

impl V2Key {
    fn secret(&self) -> Secret {
        let text = self.secret.as_deref();
        Secret::new(text.unwrap_or_else(|| panic!("{}: an HMAC key has a secret", self.id)))
    }

    fn pem(&self) -> &str {
        let pem = self.private_key_pem.as_deref();
        pem.unwrap_or_else(|| panic!("{}: an Ed25519 key has a private_key_pem", self.id))
    }

    fn public_key(&self) -> PublicKey {
        let text = self.public_key.as_deref().unwrap_or_default();
        PublicKey::parse(text).unwrap_or_else(|| panic!("{}: public_key {text:?}", self.id))
    }

    fn algorithm(&self) -> Algorithm {
        Algorithm::parse(&self.alg).unwrap_or_else(|| panic!("{}: alg {:?}", self.id, self.alg))
    }

    /// This key's material signing version 2 under key id `claimed` (its own id, or the one a
    /// forger claims).
    fn signing_key(&self, claimed: &str) -> SigningKey {
        match self.algorithm() {
            Algorithm::HmacSha256 => SigningKey::hmac(claimed, &self.secret()),
            Algorithm::Ed25519 => SigningKey::ed25519_pem(claimed, self.pem())
                .unwrap_or_else(|err| panic!("{}: {err}", self.id)),
        }
    }

    /// The gate's verifying key, as the registry or the environment would give it.
    fn gate_key(&self, observe: bool) -> Key {
        match (self.source.as_str(), self.algorithm()) {
            ("env", Algorithm::HmacSha256) => {
                assert!(!observe, "{}: env secrets are never observe keys", self.id);
                Key::new(Slot::Current, self.id.clone(), &self.secret())
            }
            ("registry", Algorithm::HmacSha256) => Key::hmac(
                self.id.clone(),
                self.caller.clone(),
                &self.secret(),
                observe,
            ),
            ("registry", Algorithm::Ed25519) => Key::ed25519(
                self.id.clone(),
                self.caller.clone(),
                self.public_key(),
                observe,
            ),
            (source, alg) => panic!("{}: no {alg} key comes from {source:?}", self.id),
        }
    }
}

impl V2Case {
    fn body(&self) -> Vec<u8> {
        body(&self.body_base64)
    }

    fn request<'a>(&'a self, body: &'a [u8]) -> Request<'a> {
        Request {
            method: &self.method,
            target: &self.target,
            body,
            timestamp: self.timestamp.parse().expect("timestamp"),
            nonce: &self.nonce,
        }
    }

    /// The keyring the case's `gate` section describes: the env secret (if listed) as the
    /// current secret, the registry keys in the listed order, strict key ids off.
    fn keyring(&self, file: &V2File) -> Keyring {
        let mut env = None;
        let mut registry = Vec::new();
        for id in &self.gate.keys {
            let key = file.key(id);
            let built = key.gate_key(self.gate.observe.contains(id));
            match key.source.as_str() {
                "env" => {
                    assert!(env.is_none(), "{}: one env secret", self.name);
                    env = Some(built);
                }
                _ => registry.push(built),
            }
        }
        for id in &self.gate.observe {
            assert!(self.gate.keys.contains(id), "{}: observe {id}", self.name);
        }
        Keyring::assemble(env, None, registry, false, self.gate.audience.clone())
    }
}

/// The headers in the order and spelling given, repeats kept.
fn ordered_header_map(lines: &[(String, String)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in lines {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    headers
}

#[test]
fn v2_files_hold_signer_cases_of_both_algorithms_and_every_outcome() {
    for (name, file) in load_v2() {
        let cases = &file.cases;
        assert!(
            cases.iter().filter(|c| c.signer.is_some()).count() >= 5,
            "{name}"
        );
        assert!(
            cases.iter().any(|c| c.expected.result == "accepted"),
            "{name}"
        );
        let reasons: Vec<&str> = cases
            .iter()
            .filter_map(|c| c.expected.reason.as_deref())
            .collect();
        for reason in [
            "bad_signature",
            "malformed_signature",
            "missing_key_id",
            "unknown_key_id",
        ] {
            assert!(
                reasons.contains(&reason),
                "{name}: a case refused with {reason}"
            );
        }
        assert!(
            cases.iter().any(|c| c.name.contains("another audience")),
            "{name}: the same request under another audience"
        );
        assert!(
            file.keys.iter().any(|k| k.alg == file.algorithm),
            "{name}: keys of its algorithm"
        );
        let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), cases.len(), "{name}: case names are unique");
    }
    let (_, ed) = &load_v2()[1];
    let has = |phrase: &str| ed.cases.iter().any(|c| c.name.contains(phrase));
    for phrase in [
        "algorithm confusion",
        "observe key never grants access",
        "claiming another caller's key id",
        "observe signature that fails",
    ] {
        assert!(has(phrase), "ed25519-v2.json: a case of {phrase}");
    }
    assert!(
        ed.cases.iter().any(|c| c
            .signer
            .as_ref()
            .is_some_and(|s| s.observe_key_id.is_some())),
        "ed25519-v2.json: a signer case with an observe key"
    );
}

#[test]
fn v2_ed25519_keys_pem_private_and_public_forms_agree() {
    for (name, file) in load_v2() {
        for key in file.keys.iter().filter(|k| k.alg == "ed25519") {
            let signing = key.signing_key(&key.id);
            let public = signing
                .public_key()
                .expect("an Ed25519 key has a public key");
            assert_eq!(public, key.public_key(), "{name}: {}", key.id);
            assert_eq!(
                Some(protocol::hex_string(public.as_bytes())),
                key.public_key_hex,
                "{name}: {}",
                key.id
            );
            let seed = key.private_key_hex.as_deref().expect("private_key_hex");
            let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&hex_bytes(seed))
                .expect("a 32-byte seed");
            assert_eq!(
                pair.public_key().as_ref(),
                public.as_bytes(),
                "{name}: {}",
                key.id
            );
        }
    }
}

/// Lowercase hex to bytes.
fn hex_bytes(text: &str) -> Vec<u8> {
    let mut out = vec![0u8; text.len() / 2];
    assert!(
        // An odd length fails the length check inside.
        protocol::decode_hex_into(text.as_bytes(), &mut out),
        "hex {text:?}"
    );
    out
}

#[test]
fn v2_signer_reproduces_every_signer_case_header_for_header() {
    let mut signed = 0;
    for (name, file) in load_v2() {
        for case in file.cases.iter() {
            let Some(spec) = &case.signer else { continue };
            let mut signer = Signer::v2(
                file.key(&spec.key_id).signing_key(&spec.key_id),
                &spec.audience,
            );
            if let Some(observe) = &spec.observe_key_id {
                signer = signer.also_signing_with(file.key(observe).signing_key(observe));
            }
            let body = case.body();
            let produced: Vec<(String, String)> = signer
                .sign(&case.request(&body))
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect();
            assert_eq!(produced, case.headers, "{name}: {}", case.name);

            // The signed strings, line for line, for each signature the signer made.
            let digest = protocol::body_digest(&body);
            assert_eq!(protocol::hex32_string(&digest), case.body_sha256, "{name}");
            let (path, query) = SignedString::split_target(&case.target);
            let string = SignedString {
                timestamp: &case.timestamp,
                nonce: &case.nonce,
                method: &case.method,
                path,
                query,
                body_digest: &digest,
            };
            let mut own = vec![&spec.key_id];
            own.extend(&spec.observe_key_id);
            for entry in &case.signatures {
                assert!(own.contains(&&entry.key_id), "{name}: {}", case.name);
                let key = file.key(&entry.key_id);
                let line = V2Line {
                    algorithm: key.algorithm().as_str(),
                    key_id: &entry.key_id,
                    audience: &spec.audience,
                };
                assert_eq!(
                    string.render_v2(line),
                    entry.signed_string,
                    "{name}: {}",
                    case.name
                );
            }
            signed += 1;
        }
    }
    assert!(signed >= 10, "{signed} signer cases");
}

#[test]
fn sig_gate_sign_prints_every_v2_signer_case() {
    let dir = std::env::temp_dir().join(format!("sig-gate-vectors-v2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (name, file) in load_v2() {
        for (i, case) in file.cases.iter().enumerate() {
            let Some(spec) = &case.signer else { continue };
            let key_file = |id: &str| {
                let key = file.key(id);
                let path = dir.join(format!("{name}-{i}-{id}"));
                let text = match key.algorithm() {
                    // A trailing newline is stripped, as from a mounted Secret.
                    Algorithm::HmacSha256 => format!("{}\n", key.secret.as_deref().unwrap_or("")),
                    Algorithm::Ed25519 => key.pem().to_owned(),
                };
                std::fs::write(&path, text).expect("write key file");
                (path, key.alg.clone())
            };
            let body_file = dir.join(format!("{name}-{i}-body"));
            std::fs::write(&body_file, case.body()).expect("write body");
            let (signing_file, alg) = key_file(&spec.key_id);
            let mut command = Command::new(env!("CARGO_BIN_EXE_sig-gate"));
            command
                .args(["sign", "--method", &case.method, "--path", &case.target])
                .args(["--timestamp", &case.timestamp, "--nonce", &case.nonce])
                .arg("--body-file")
                .arg(&body_file)
                .env_clear()
                .env("GATE_SIGNING_KEY_ID", &spec.key_id)
                .env("GATE_SIGNING_KEY_FILE", &signing_file)
                .env("GATE_SIGNING_ALG", &alg)
                .env("GATE_AUDIENCE", &spec.audience);
            if let Some(observe) = &spec.observe_key_id {
                let (observe_file, _) = key_file(observe);
                command
                    .env("GATE_OBSERVE_KEY_ID", observe)
                    .env("GATE_OBSERVE_KEY_FILE", &observe_file);
            }
            let output = command.output().expect("run sig-gate sign");
            assert!(
                output.status.success(),
                "{name}: {}: {}",
                case.name,
                String::from_utf8_lossy(&output.stderr)
            );
            let expected: String = case
                .headers
                .iter()
                .map(|(n, val)| format!("{n}: {val}\n"))
                .collect();
            assert_eq!(
                String::from_utf8_lossy(&output.stdout),
                expected,
                "{name}: {}",
                case.name
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// HMAC-SHA256 of `message` under `key`, lowercase hex: for the forged entries only, which no
/// signer of the gate's makes (a wrong algorithm line, a public key used as an HMAC secret).
fn raw_hmac(key: &[u8], message: &str) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(message.as_bytes());
    protocol::hex_string(&mac.finalize().into_bytes())
}

#[test]
fn v2_every_signature_of_every_case_recomputes_honest_or_forged() {
    for (name, file) in load_v2() {
        for case in &file.cases {
            let body = case.body();
            let digest = protocol::body_digest(&body);
            assert_eq!(protocol::hex32_string(&digest), case.body_sha256, "{name}");
            let (path, query) = SignedString::split_target(&case.target);
            let string = SignedString {
                timestamp: &case.timestamp,
                nonce: &case.nonce,
                method: &case.method,
                path,
                query,
                body_digest: &digest,
            };
            for entry in &case.signatures {
                let what = format!("{name}: {}: signature for {}", case.name, entry.key_id);
                let key = file.key(&entry.signing_key);
                let computed = if entry.alg == protocol::ALGORITHM {
                    // A version 1 signature, in the cases that mix versions: the gate's own
                    // version 1 MAC.
                    assert_eq!(entry.audience, "", "{what}");
                    assert_eq!(string.render(&entry.key_id), entry.signed_string, "{what}");
                    assert_eq!(entry.primitive, "hmac-sha256", "{what}");
                    let mac = Key::new(Slot::Current, key.id.clone(), &key.secret());
                    protocol::hex32_string(&mac.mac(&string, &entry.key_id))
                } else {
                    let line = V2Line {
                        algorithm: &entry.alg,
                        key_id: &entry.key_id,
                        audience: &entry.audience,
                    };
                    assert_eq!(string.render_v2(line), entry.signed_string, "{what}");
                    let honest = entry.alg == key.alg && entry.primitive == key.alg;
                    match entry.primitive.as_str() {
                        // Made the way a signer makes it (whatever key id it claims): the
                        // signer's own version 2 API.
                        _ if honest => {
                            let signer =
                                Signer::v2(key.signing_key(&entry.key_id), &entry.audience);
                            let headers = signer.sign(&case.request(&body));
                            headers
                                .into_iter()
                                .find(|(n, _)| *n == "X-Gate-Signature")
                                .map(|(_, value)| value)
                                .expect("the signer sends X-Gate-Signature")
                        }
                        "hmac-sha256" => {
                            let secret = key.secret.as_deref().expect("an HMAC key's secret");
                            raw_hmac(secret.as_bytes(), &entry.signed_string)
                        }
                        "hmac-sha256-keyed-with-public-key" => {
                            raw_hmac(key.public_key().as_bytes(), &entry.signed_string)
                        }
                        "ed25519" => {
                            let seed = key.private_key_hex.as_deref().expect("private_key_hex");
                            let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(
                                &hex_bytes(seed),
                            )
                            .expect("a 32-byte seed");
                            protocol::hex_string(pair.sign(entry.signed_string.as_bytes()).as_ref())
                        }
                        other => panic!("{what}: primitive {other:?}"),
                    }
                };
                assert_eq!(computed, entry.signature, "{what}");
            }
        }
    }
}

#[test]
fn v2_gate_verification_gives_every_expected_result() {
    for (name, file) in load_v2() {
        for case in &file.cases {
            let what = format!("{name}: {}", case.name);
            let keyring = case.keyring(&file);
            let headers = ordered_header_map(&case.headers);
            let body = case.body();
            let digest = protocol::body_digest(&body);
            let (path, query) = SignedString::split_target(&case.target);
            let line = RequestLine {
                method: &case.method,
                path,
                query,
            };
            // GATE_CLOCK_SKEW_SECS is "large enough": the default window, around gate_clock.
            let (observed, outcome) =
                match verify::check_headers(&headers, &keyring, 300, file.gate_clock) {
                    Err(reason) => (Vec::new(), Err(reason)),
                    Ok(pending) => {
                        let observed: Vec<V2Observed> = pending
                            .observations(line, &digest)
                            .iter()
                            .map(|(index, valid)| {
                                let key = keyring.at(index).expect("an index of this keyring");
                                V2Observed {
                                    key_id: key.id().to_owned(),
                                    caller: key.caller().to_owned(),
                                    result: if valid { "valid" } else { "invalid" }.to_owned(),
                                }
                            })
                            .collect();
                        let outcome = pending.verify(line, &digest).map(|verified| {
                            let key = verified.key();
                            // What the upstream receives, as the gate builds it.
                            (
                                key.verified_key_id().to_str().expect("ASCII").to_owned(),
                                key.verified_caller().to_str().expect("ASCII").to_owned(),
                            )
                        });
                        (observed, outcome)
                    }
                };
            assert_eq!(observed, case.expected.observed, "{what}: observed");
            match (case.expected.result.as_str(), outcome) {
                ("accepted", Ok((key_id, caller))) => {
                    assert_eq!(Some(key_id), case.expected.key_id, "{what}: key id");
                    assert_eq!(Some(caller), case.expected.caller, "{what}: caller");
                }
                ("rejected", Err(reason)) => {
                    assert_eq!(
                        Some(reason.as_str()),
                        case.expected.reason.as_deref(),
                        "{what}: reason"
                    );
                }
                (expected, outcome) => {
                    panic!("{what}: expected {expected}, the gate gave {outcome:?}")
                }
            }
        }
    }
}
