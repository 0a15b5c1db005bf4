//! The real `sig-gate` binary: configuration refusals (exit 2, one line naming the variable),
//! `check-config`, `keygen`, `sign` flag errors, `probe`, and `serve` exiting 0 after a drain
//! or 1 when the grace period runs out.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use runbook::upstream::RecordingUpstream;
use support::{SECRET, sign};

const BIN: &str = env!("CARGO_BIN_EXE_sig-gate");

fn sig_gate(args: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(vars.iter().copied())
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run sig-gate")
}

#[test]
fn bad_configuration_exits_2_with_one_line_naming_the_variable() {
    let ok = ("INTERSERVICE_HMAC_SECRET", SECRET);
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "INTERSERVICE_HMAC_SECRET"),
        (
            &[("INTERSERVICE_HMAC_SECRET", "too-short")],
            "INTERSERVICE_HMAC_SECRET",
        ),
        (
            &[ok, ("INTERSERVICE_HMAC_SECRET_FILE", "/etc/hostname")],
            "INTERSERVICE_HMAC_SECRET",
        ),
        (
            &[ok, ("INTERSERVICE_HMAC_SECRET_PREV", SECRET)],
            "INTERSERVICE_HMAC_SECRET_PREV",
        ),
        (&[ok, ("REQUIRE_SIGNATURE", "perhaps")], "REQUIRE_SIGNATURE"),
        (&[ok, ("GATE_LISTEN", "nowhere")], "GATE_LISTEN"),
        (&[ok, ("GATE_UPSTREAM", "ftp://x")], "GATE_UPSTREAM"),
        (&[ok, ("GATE_CLOCK_SKEW_SECS", "0")], "GATE_CLOCK_SKEW_SECS"),
        (
            &[ok, ("GATE_CONFIG", "/does/not/exist.toml")],
            "GATE_CONFIG",
        ),
    ];
    for subcommand in ["serve", "check-config"] {
        for (vars, named) in cases {
            let output = sig_gate(&[subcommand], vars);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{subcommand} {vars:?}: {stderr}"
            );
            assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
            assert!(stderr.contains(named), "{vars:?}: {stderr}");
            assert!(!stderr.contains(SECRET), "no secret in errors");
        }
    }
}

#[test]
fn check_config_shows_fingerprints_never_secrets() {
    let previous = "previous-secret-0123456789abcdefghijkl";
    let output = sig_gate(
        &["check-config"],
        &[
            ("INTERSERVICE_HMAC_SECRET", SECRET),
            ("INTERSERVICE_HMAC_SECRET_PREV", previous),
        ],
    );
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let fingerprint = gate::keyring::Secret::new(SECRET).fingerprint().to_string();
    assert!(stdout.contains(&fingerprint), "{stdout}");
    assert!(stdout.contains("dual mode"), "{stdout}");
    assert!(
        !stdout.contains(SECRET) && !stdout.contains(previous),
        "{stdout}"
    );
}

#[test]
fn keygen_prints_url_safe_secrets_of_at_least_32_bytes() {
    let a = sig_gate(&["keygen"], &[]);
    let b = sig_gate(&["keygen"], &[]);
    assert!(a.status.success());
    let (a, b) = (
        String::from_utf8_lossy(&a.stdout),
        String::from_utf8_lossy(&b.stdout),
    );
    let a = a.trim_end();
    assert_eq!(a.len(), 43, "32 bytes as unpadded base64");
    assert!(
        a.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    );
    assert_ne!(a, b.trim_end());
    assert_eq!(
        sig_gate(&["keygen", "--bytes", "16"], &[]).status.code(),
        Some(2)
    );
}

#[test]
fn sign_refuses_bad_flags_and_explains_dual_sign() {
    let secret = [("INTERSERVICE_HMAC_SECRET", SECRET)];
    for args in [
        &["sign", "--method", "GET", "--path", "no-slash"][..],
        &["sign", "--method", "G E T", "--path", "/"],
        &["sign", "--method", "GET", "--path", "/", "--nonce", "short"],
        &[
            "sign",
            "--method",
            "GET",
            "--path",
            "/",
            "--timestamp",
            "-5",
        ],
        &["sign", "--method", "GET"],
    ] {
        assert_eq!(sig_gate(args, &secret).status.code(), Some(2), "{args:?}");
    }
    let output = sig_gate(
        &["sign", "--method", "GET", "--path", "/"],
        &[
            ("INTERSERVICE_HMAC_SECRET", SECRET),
            ("TOOL_GATE_DUAL_SIGN", "true"),
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("INTERSERVICE_HMAC_SECRET_PREV"));
    let output = sig_gate(&["sign", "--method", "GET", "--path", "/x?y=1"], &secret);
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let names: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once(": ").map(|(n, _)| n))
        .collect();
    assert_eq!(
        names,
        [
            "X-Gate-Key-Id",
            "X-Gate-Timestamp",
            "X-Gate-Nonce",
            "X-Gate-Signature"
        ]
    );
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "serve",
        "sign",
        "check-config",
        "keygen",
        "demo",
        "probe",
        "advise",
    ] {
        let output = sig_gate(&[sub, "--help"], &[]);
        assert!(output.status.success(), "{sub} --help");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Usage"),
            "{sub}"
        );
    }
}

/// A `sig-gate serve` child process and the addresses from its `listening` log line.
struct Served {
    child: Child,
    proxy: String,
    admin: String,
}

fn serve(upstream: &str, vars: &[(&str, &str)]) -> Served {
    serve_with(Command::new(BIN), upstream, vars)
}

/// [`serve`] through a prepared command (for example `taskset` in front of the binary).
fn serve_with(mut command: Command, upstream: &str, vars: &[(&str, &str)]) -> Served {
    let mut child = command
        .arg("serve")
        .env_clear()
        .envs([
            ("INTERSERVICE_HMAC_SECRET", SECRET),
            ("GATE_LISTEN", "127.0.0.1:0"),
            ("GATE_ADMIN_LISTEN", "127.0.0.1:0"),
            ("GATE_UPSTREAM", upstream),
            ("GATE_LOG_FORMAT", "json"),
        ])
        .envs(vars.iter().copied())
        .current_dir(std::env::temp_dir())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let listening = loop {
        let line = lines
            .next()
            .expect("serve logs until listening")
            .expect("utf-8 log");
        let event: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if event["message"] == "listening" {
            break event;
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    Served {
        child,
        proxy: listening["proxy_addr"]
            .as_str()
            .expect("proxy_addr")
            .to_owned(),
        admin: listening["admin_addr"]
            .as_str()
            .expect("admin_addr")
            .to_owned(),
    }
}

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[test]
fn probe_and_sigterm_exit_0() {
    let served = serve("http://127.0.0.1:9", &[]);
    let probe = |path: &str| {
        sig_gate(&["probe", &format!("http://{}{path}", served.admin)], &[])
            .status
            .code()
    };
    assert_eq!(probe("/readyz"), Some(0));
    assert_eq!(probe("/nonexistent"), Some(1));
    assert_eq!(
        sig_gate(&["probe", "not a url"], &[]).status.code(),
        Some(2)
    );
    let mut served = served;
    terminate(&served.child);
    assert_eq!(served.child.wait().expect("exit").code(), Some(0));
    assert_eq!(
        sig_gate(&["probe", &format!("http://{}/healthz", served.admin)], &[])
            .status
            .code(),
        Some(1)
    );
    let _ = served.proxy;
}

#[tokio::test]
async fn sigterm_with_a_request_outliving_the_grace_period_exits_1() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let mut served = serve(&upstream.url(), &[("GATE_SHUTDOWN_GRACE_SECS", "1")]);
    let addr = served.proxy.parse().expect("addr");
    let headers = sign(SECRET, "current", "GET", "/hold", b"");
    let held =
        tokio::spawn(
            async move { support::start_request(addr, "GET", "/hold", &headers, "").await },
        );
    while upstream.total() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    terminate(&served.child);
    let code = tokio::task::spawn_blocking(move || served.child.wait().expect("exit").code())
        .await
        .expect("wait");
    assert_eq!(
        code,
        Some(1),
        "grace period ran out with a request in flight"
    );
    held.abort();
}

#[tokio::test]
async fn on_one_cpu_the_gate_serves_and_drains_on_the_current_thread_runtime() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let mut pinned = Command::new("taskset");
    pinned.args(["-c", "0", BIN]);
    let mut served = serve_with(pinned, &upstream.url(), &[]);
    let addr = served.proxy.parse().expect("addr");
    let headers = sign(SECRET, "current", "POST", "/one-cpu", b"{}");
    let reply = support::send(addr, "POST", "/one-cpu", &headers, "{}").await;
    assert_eq!(reply.status, http::StatusCode::OK);
    assert_eq!(upstream.total(), 1);
    terminate(&served.child);
    let code = tokio::task::spawn_blocking(move || served.child.wait().expect("exit").code())
        .await
        .expect("wait");
    assert_eq!(code, Some(0));
}

/// A private temporary directory, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "sig-gate-cli-{name}-{}-{}",
            std::process::id(),
            gate::sign::new_nonce()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn join(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The headers `sig-gate sign` printed, as `(name, value)`.
fn printed_headers(output: &std::process::Output) -> Vec<(String, String)> {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let (name, value) = line.split_once(": ").expect("Name: value");
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

#[test]
fn keygen_writes_an_ed25519_key_once_and_prints_its_public_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("keygen");
    let out = dir.join("caller.pem");
    let output = sig_gate(&["keygen", "--ed25519", "--out", &out], &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let public = String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_owned();
    let pem = std::fs::read_to_string(&out).expect("written");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    let mode = std::fs::metadata(&out)
        .expect("written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let key = gate::sign::SigningKey::ed25519_pem("k", &pem).expect("a PKCS#8 Ed25519 key");
    assert_eq!(key.public_key().expect("Ed25519").to_base64url(), public);
    // Never overwritten.
    let again = sig_gate(&["keygen", "--ed25519", "--out", &out], &[]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--out"));
    assert_eq!(std::fs::read_to_string(&out).expect("still there"), pem);
    assert_eq!(
        sig_gate(&["keygen", "--ed25519"], &[]).status.code(),
        Some(2)
    );
}

#[test]
fn sign_version_2_hmac_is_the_ten_line_string_computed_independently() {
    use hmac::{KeyInit, Mac};
    let dir = TempDir::new("sign-v2");
    let file = dir.join("lg");
    std::fs::write(&file, format!("{SECRET}\n")).expect("write");
    let vars = [
        ("GATE_SIGNING_KEY_ID", "lg-1"),
        ("GATE_SIGNING_KEY_FILE", file.as_str()),
        ("GATE_AUDIENCE", "tool-gate"),
    ];
    let body = dir.join("body");
    std::fs::write(&body, "{}").expect("write");
    let output = sig_gate(
        &[
            "sign",
            "--method",
            "POST",
            "--path",
            "/tools/call?x=1",
            "--body-file",
            &body,
            "--timestamp",
            "1764000000",
            "--nonce",
            "nonce-0123456789abcdef",
        ],
        &vars,
    );
    let headers = printed_headers(&output);
    let text = "GATE-SIG-V2\nhmac-sha256\nlg-1\ntool-gate\n1764000000\nnonce-0123456789abcdef\n\
                POST\n/tools/call\nx=1\n\
                44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key");
    mac.update(text.as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "X-Gate-Version",
            "X-Gate-Key-Id",
            "X-Gate-Timestamp",
            "X-Gate-Nonce",
            "X-Gate-Signature"
        ]
    );
    assert_eq!(headers[0].1, "2");
    assert_eq!(headers[4].1, expected);
    // A missing piece is named.
    let output = sig_gate(
        &["sign", "--method", "GET", "--path", "/"],
        &[
            ("GATE_SIGNING_KEY_ID", "lg-1"),
            ("GATE_SIGNING_KEY_FILE", file.as_str()),
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("GATE_AUDIENCE"));
}

#[tokio::test]
async fn what_sign_prints_passes_a_gate_with_the_registry_and_check_config_lists_its_keys() {
    let dir = TempDir::new("registry");
    let pem = dir.join("lg.pem");
    let keygen = sig_gate(&["keygen", "--ed25519", "--out", &pem], &[]);
    let public = String::from_utf8_lossy(&keygen.stdout)
        .trim_end()
        .to_owned();
    std::fs::write(dir.join("lg"), SECRET).expect("write");
    let registry = dir.join("keys.toml");
    std::fs::write(
        &registry,
        format!(
            "[[key]]\nid = \"lg-1\"\ncaller = \"langgraph\"\nalg = \"hmac-sha256\"\nsecret_file = \"lg\"\n\n\
             [[key]]\nid = \"lg-ed\"\ncaller = \"langgraph\"\nalg = \"ed25519\"\npublic_key = \"{public}\"\n"
        ),
    )
    .expect("write");

    let check = sig_gate(
        &["check-config"],
        &[
            ("GATE_KEYS_FILE", registry.as_str()),
            ("GATE_AUDIENCE", "tool-gate"),
        ],
    );
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(stdout.contains("configuration OK: none mode"), "{stdout}");
    let fingerprint = gate::keyring::Secret::new(SECRET).fingerprint().to_string();
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("langgraph") && l.contains("lg-1") && l.contains(&fingerprint)),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("lg-ed") && l.contains("ed25519")),
        "{stdout}"
    );
    assert!(
        !stdout.contains(SECRET) && !stdout.contains(&public),
        "{stdout}"
    );

    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let gate = support::TestGate::start(
        &upstream.url(),
        &[
            ("GATE_KEYS_FILE", &registry),
            ("GATE_AUDIENCE", "tool-gate"),
        ],
    )
    .await;
    let key_file = dir.join("lg");
    for (alg, id, file) in [
        ("hmac-sha256", "lg-1", key_file.as_str()),
        ("ed25519", "lg-ed", pem.as_str()),
    ] {
        let output = sig_gate(
            &["sign", "--method", "GET", "--path", "/t?a=1"],
            &[
                ("GATE_SIGNING_KEY_ID", id),
                ("GATE_SIGNING_KEY_FILE", file),
                ("GATE_SIGNING_ALG", alg),
                ("GATE_AUDIENCE", "tool-gate"),
            ],
        );
        let printed = printed_headers(&output);
        let headers: Vec<(&str, String)> = printed
            .iter()
            .map(|(name, value)| (name.as_str(), value.clone()))
            .collect();
        let reply = support::send(gate.addr, "GET", "/t?a=1", &headers, "").await;
        assert_eq!(reply.status, 200, "{alg}: {}", reply.text());
        let seen = upstream.arrivals();
        let last = seen.last().expect("forwarded");
        assert_eq!(last.headers["x-gate-verified-caller"], "langgraph");
        assert_eq!(last.headers["x-gate-verified-key-id"], id);
    }
    gate.stop().await;

    // A bad registry: exit 2, one line naming the variable, the file and the entry.
    std::fs::write(
        &registry,
        "[[key]]\nid = \"lg-1\"\ncaller = \"langgraph\"\nalg = \"hmac-sha256\"\n",
    )
    .expect("write");
    for command in ["check-config", "serve"] {
        let output = sig_gate(
            &[command],
            &[
                ("GATE_KEYS_FILE", registry.as_str()),
                ("GATE_AUDIENCE", "tool-gate"),
            ],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("GATE_KEYS_FILE")
                && stderr.contains(&registry)
                && stderr.contains("key \"lg-1\"")
                && stderr.contains("needs secret_file"),
            "{stderr}"
        );
    }
}
