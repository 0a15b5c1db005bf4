//! The real `sig-gate` binary: configuration refusals (exit 2, one line naming the variable),
//! `check-config`, `keygen`, `sign` flag errors, `probe`, `--version`, `completions` and `man`,
//! `serve` exiting 0 after a drain or 1 when the grace period runs out, and its access log.

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
        (&[ok, ("GATE_WORKERS", "0")], "GATE_WORKERS"),
        (&[ok, ("GATE_WORKERS", "all")], "GATE_WORKERS"),
        (&[ok, ("GATE_WORKERS", "100000")], "GATE_WORKERS"),
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
        "completions",
        "man",
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
    /// Workers, as the `listening` line reports them.
    workers: u64,
    /// Every log line after `listening`, handed over once the process has closed stderr.
    log: std::thread::JoinHandle<Vec<String>>,
}

impl Served {
    /// SIGTERM, wait for exit 0, and return the log lines written after `listening`.
    fn stop(mut self) -> Vec<String> {
        terminate(&self.child);
        assert_eq!(self.child.wait().expect("exit").code(), Some(0));
        self.log.join().expect("log reader")
    }
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
    let Listening {
        proxy,
        admin,
        workers,
    } = loop {
        let line = lines
            .next()
            .expect("serve logs until listening")
            .expect("utf-8 log");
        if let Some(addresses) = listening(&line) {
            break addresses;
        }
    };
    let log = std::thread::spawn(move || lines.map(|line| line.expect("utf-8 log")).collect());
    Served {
        child,
        proxy,
        admin,
        workers,
        log,
    }
}

/// What a `listening` line reports.
struct Listening {
    proxy: String,
    admin: String,
    workers: u64,
}

/// The proxy and admin addresses and the workers of a `listening` line, JSON or text.
fn listening(line: &str) -> Option<Listening> {
    if let Ok(event) = serde_json::from_str::<serde_json::Value>(line) {
        let field = |name: &str| event[name].as_str().map(str::to_owned);
        if event["message"] != "listening" {
            return None;
        }
        return Some(Listening {
            proxy: field("proxy_addr")?,
            admin: field("admin_addr")?,
            workers: event["workers"].as_u64()?,
        });
    }
    if !line.contains(" listening ") {
        return None;
    }
    let field = |name: &str| {
        let start = line.find(&format!("{name}="))? + name.len() + 1;
        line[start..].split_whitespace().next().map(str::to_owned)
    };
    Some(Listening {
        proxy: field("proxy_addr")?,
        admin: field("admin_addr")?,
        workers: field("workers")?.parse().ok()?,
    })
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
async fn on_one_cpu_the_gate_serves_and_drains_on_one_worker() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let mut pinned = Command::new("taskset");
    pinned.args(["-c", "0", BIN]);
    let mut served = serve_with(pinned, &upstream.url(), &[]);
    assert_eq!(served.workers, 1, "one CPU: one worker by default");
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

#[test]
fn workers_default_to_the_cpus_the_process_may_use() {
    let shown = |command: &mut Command, vars: &[(&str, &str)]| {
        let output = command
            .arg("check-config")
            .env_clear()
            .env("INTERSERVICE_HMAC_SECRET", SECRET)
            .envs(vars.iter().copied())
            .current_dir(std::env::temp_dir())
            .output()
            .expect("check-config");
        assert_eq!(output.status.code(), Some(0));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let line = stdout
            .lines()
            .find(|line| line.trim_start().starts_with("GATE_WORKERS "))
            .unwrap_or_else(|| panic!("GATE_WORKERS shown: {stdout}"))
            .to_owned();
        line.split_whitespace().nth(1).expect("a value").to_owned()
    };
    // The child inherits this process's CPU affinity and cgroup.
    let usable = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(shown(&mut Command::new(BIN), &[]), usable.to_string());
    assert_eq!(
        shown(Command::new("taskset").args(["-c", "0", BIN]), &[]),
        "1",
        "pinned to one CPU"
    );
    assert_eq!(
        shown(&mut Command::new(BIN), &[("GATE_WORKERS", "3")]),
        "3",
        "set explicitly"
    );
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

/// Send `method target` with no body and the headers `sig-gate sign` printed for it.
async fn send_printed(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    output: &std::process::Output,
) -> support::Reply {
    let printed = printed_headers(output);
    let headers: Vec<(&str, String)> = printed
        .iter()
        .map(|(name, value)| (name.as_str(), value.clone()))
        .collect();
    support::send(addr, method, target, &headers, "").await
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
        let reply = send_printed(gate.addr, "GET", "/t?a=1", &output).await;
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

#[test]
fn version_names_the_package_version_and_the_commit() {
    let output = sig_gate(&["--version"], &[]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let prefix = format!("sig-gate {} (commit ", env!("CARGO_PKG_VERSION"));
    let commit = text
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("not `{prefix}COMMIT)`: {text:?}"));
    // Built from a git checkout: a commit of it, HEAD or (when a commit landed while the tests
    // ran) one of HEAD's ancestors. Without git, whatever the build was given.
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|out| out.status.success())
    };
    if git(&["rev-parse", "--git-dir"]).is_some() {
        assert!(
            git(&["merge-base", "--is-ancestor", commit, "HEAD"]).is_some(),
            "{commit} is not HEAD or one of its ancestors"
        );
    } else {
        assert!(!commit.is_empty() && !commit.contains(char::is_whitespace));
    }
}

#[test]
fn completions_are_scripts_the_shell_loads() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = sig_gate(&["completions", shell], &[]);
        assert!(output.status.success(), "{shell}");
        let script = String::from_utf8(output.stdout).expect("utf-8");
        assert!(
            script.contains("check-config") && script.contains("completions"),
            "{shell}: the subcommands are completed"
        );
    }
    // bash itself: the script parses, and registers a completion for `sig-gate`.
    let script = sig_gate(&["completions", "bash"], &[]).stdout;
    let file =
        std::env::temp_dir().join(format!("sig-gate-completion-{}.bash", std::process::id()));
    std::fs::write(&file, script).expect("write script");
    let loaded = Command::new("bash")
        .args([
            "--norc",
            "-c",
            "source \"$1\" && complete -p sig-gate",
            "bash",
        ])
        .arg(&file)
        .output()
        .expect("run bash");
    std::fs::remove_file(&file).expect("remove script");
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    assert!(String::from_utf8_lossy(&loaded.stdout).contains("sig-gate"));
    assert_eq!(
        sig_gate(&["completions", "tcsh"], &[]).status.code(),
        Some(2)
    );
}

#[test]
fn man_prints_the_page_or_writes_one_per_command() {
    let output = sig_gate(&["man"], &[]);
    assert!(output.status.success());
    let page = String::from_utf8(output.stdout).expect("utf-8");
    assert!(page.contains(".TH sig-gate 1"), "{page:.400}");
    assert!(page.contains("check\\-config") && page.contains(env!("CARGO_PKG_VERSION")));

    let dir = std::env::temp_dir().join(format!("sig-gate-man-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create dir");
    let dir_text = dir.to_str().expect("utf-8 path");
    assert!(
        sig_gate(&["man", "--out-dir", dir_text], &[])
            .status
            .success()
    );
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .expect("read dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    pages.sort();
    std::fs::remove_dir_all(&dir).expect("remove dir");
    for expected in [
        "sig-gate.1",
        "sig-gate-serve.1",
        "sig-gate-sign.1",
        "sig-gate-man.1",
    ] {
        assert!(
            pages.iter().any(|p| p == expected),
            "{expected} in {pages:?}"
        );
    }
    let missing = sig_gate(&["man", "--out-dir", "/nonexistent/man1"], &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--out-dir"));
}

/// The parsed JSON log lines of a stopped gate.
async fn stop_and_read_log(served: Served) -> Vec<serde_json::Value> {
    let lines = tokio::task::spawn_blocking(move || served.stop())
        .await
        .expect("stop");
    lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("JSON: {line}")))
        .collect()
}

fn events<'a>(log: &'a [serde_json::Value], message: &str) -> Vec<&'a serde_json::Value> {
    log.iter().filter(|e| e["message"] == message).collect()
}

#[tokio::test]
async fn the_access_log_has_one_line_per_request_carrying_its_request_id() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let served = serve(&upstream.url(), &[("GATE_ACCESS_LOG", "true")]);
    let addr = served.proxy.parse().expect("addr");
    let target = "/tools/list?token=query-stays-out-of-the-log";
    let mut headers = sign(SECRET, "current", "GET", target, b"");
    headers.push(("X-Request-Id", "client-chosen-id".into()));
    let forwarded = support::send(addr, "GET", target, &headers, "").await;
    assert_eq!(forwarded.status, http::StatusCode::OK);
    let refused = support::send(addr, "POST", "/tools/call?x=1", &[], "{}").await;
    assert_eq!(refused.status, http::StatusCode::UNAUTHORIZED);
    let refused_id = refused.headers["x-request-id"].to_str().expect("ASCII");

    let log = stop_and_read_log(served).await;
    let access = events(&log, "access");
    assert_eq!(access.len(), 2, "one line per request: {access:?}");
    let ok = access[0];
    assert_eq!(ok["level"], "INFO");
    assert_eq!(ok["request_id"], "client-chosen-id");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/tools/list");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["upstream_status"], 200);
    assert_eq!(ok["caller"], "shared");
    assert_eq!(ok["key_id"], "current");
    assert!(
        ok["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{ok}"
    );

    let no = access[1];
    assert_eq!(no["request_id"], refused_id);
    assert_eq!(
        (&no["method"], &no["path"], &no["status"]),
        (&"POST".into(), &"/tools/call".into(), &401.into())
    );
    for absent in ["caller", "key_id", "upstream_status"] {
        assert!(
            no.get(absent).is_none(),
            "{absent} on an unverified request: {no}"
        );
    }
    // The rejection's own line names the same request.
    let rejection = events(&log, "invalid request signature");
    assert_eq!(rejection.len(), 1);
    assert_eq!(rejection[0]["request_id"], refused_id);
    let everything = log.iter().map(ToString::to_string).collect::<String>();
    assert!(
        !everything.contains("query-stays-out-of-the-log"),
        "a query was logged"
    );
    assert!(!everything.contains(SECRET), "a secret was logged");
}

#[tokio::test]
async fn upstream_failures_are_logged_with_the_request_id() {
    // A port nothing listens on: bound, then let go.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port");
    let served = serve(&format!("http://{closed}"), &[("GATE_ACCESS_LOG", "yes")]);
    let addr = served.proxy.parse().expect("addr");
    let headers = sign(SECRET, "current", "GET", "/down", b"");
    let reply = support::send(addr, "GET", "/down", &headers, "").await;
    assert_eq!(reply.status, http::StatusCode::BAD_GATEWAY);
    let id = reply.headers["x-request-id"]
        .to_str()
        .expect("ASCII")
        .to_owned();

    let log = stop_and_read_log(served).await;
    let unavailable = events(&log, "upstream unavailable");
    assert_eq!(unavailable.len(), 1, "{log:?}");
    assert_eq!(unavailable[0]["request_id"], id.as_str());
    let access = events(&log, "access");
    assert_eq!(access.len(), 1);
    assert_eq!(access[0]["request_id"], id.as_str());
    assert_eq!(access[0]["status"], 502);
    assert_eq!(access[0]["caller"], "shared", "the request verified");
    assert!(
        access[0].get("upstream_status").is_none(),
        "no upstream answer"
    );
}

#[tokio::test]
async fn the_access_log_is_off_by_default_and_follows_the_text_format() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let quiet = serve(&upstream.url(), &[]);
    let addr = quiet.proxy.parse().expect("addr");
    let headers = sign(SECRET, "current", "GET", "/quiet", b"");
    assert_eq!(
        support::send(addr, "GET", "/quiet", &headers, "")
            .await
            .status,
        http::StatusCode::OK
    );
    let log = stop_and_read_log(quiet).await;
    assert!(events(&log, "access").is_empty(), "{log:?}");

    let text = serve(
        &upstream.url(),
        &[("GATE_ACCESS_LOG", "true"), ("GATE_LOG_FORMAT", "text")],
    );
    let addr = text.proxy.parse().expect("addr");
    let mut headers = sign(SECRET, "current", "GET", "/text", b"");
    headers.push(("X-Request-Id", "text-id".into()));
    assert_eq!(
        support::send(addr, "GET", "/text", &headers, "")
            .await
            .status,
        http::StatusCode::OK
    );
    let lines = tokio::task::spawn_blocking(move || text.stop())
        .await
        .expect("stop");
    let access: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains(" access "))
        .collect();
    assert_eq!(access.len(), 1, "{lines:?}");
    for field in [
        "request_id=\"text-id\"",
        "method=\"GET\"",
        "path=\"/text\"",
        "status=200",
        "upstream_status=200",
        "caller=\"shared\"",
        "key_id=\"current\"",
        "duration_ms=",
    ] {
        assert!(access[0].contains(field), "{field} in {}", access[0]);
    }
}

#[tokio::test]
async fn the_access_log_names_a_registry_key_and_its_caller() {
    let upstream = RecordingUpstream::start().await.expect("upstream starts");
    let dir = TempDir::new("access-registry");
    std::fs::write(dir.join("agent"), SECRET).expect("write");
    let registry = dir.join("keys.toml");
    std::fs::write(
        &registry,
        "[[key]]\nid = \"agent-2026-12\"\ncaller = \"agent\"\nalg = \"hmac-sha256\"\nsecret_file = \"agent\"\n",
    )
    .expect("write");
    let served = serve(
        &upstream.url(),
        &[
            ("GATE_KEYS_FILE", registry.as_str()),
            ("GATE_AUDIENCE", "tool-gate"),
            ("GATE_ACCESS_LOG", "true"),
        ],
    );
    let addr = served.proxy.parse().expect("addr");
    let key_file = dir.join("agent");
    let output = sig_gate(
        &["sign", "--method", "POST", "--path", "/tools/call"],
        &[
            ("GATE_SIGNING_KEY_ID", "agent-2026-12"),
            ("GATE_SIGNING_KEY_FILE", key_file.as_str()),
            ("GATE_AUDIENCE", "tool-gate"),
        ],
    );
    let reply = send_printed(addr, "POST", "/tools/call", &output).await;
    assert_eq!(reply.status, http::StatusCode::OK, "{}", reply.text());

    let log = stop_and_read_log(served).await;
    let access = events(&log, "access");
    assert_eq!(access.len(), 1, "{log:?}");
    assert_eq!(access[0]["caller"], "agent");
    assert_eq!(access[0]["key_id"], "agent-2026-12");
    assert_eq!(access[0]["upstream_status"], 200);
}
