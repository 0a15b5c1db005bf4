//! Live key reload with real `sig-gate serve` processes on loopback: a caller's key rotated
//! without a restart, by rewriting the files and by swapping a `..data` symlink as Kubernetes
//! does when it updates a mounted Secret, under continuous signed load with zero failed
//! legitimate requests; a broken file keeping the keys in force; SIGHUP reloading at once; and
//! `sig_gate_key_info` / `sig_gate_config_info` following the keys in force.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gate::keyring::Secret;
use gate::sign::{Signer, SigningKey};
use http::Method;
use runbook::client::{Call, Http};
use runbook::load::Load;
use runbook::process::{GateEnv, GateProcess, Launcher, Workdir};
use runbook::upstream::RecordingUpstream;
use tokio::sync::Mutex;

/// Each test drives load against a real process; one at a time keeps them meaningful on a
/// small machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

const AUDIENCE: &str = "tool-gate";
/// Requests a second of the continuous load.
const RATE: u32 = 40;
/// How long a change may take to be in force: the documented 10 seconds, with room for a slow
/// debug build on a busy machine.
const RELOAD_WITHIN: Duration = Duration::from_secs(30);

fn secret(n: u32) -> String {
    format!("caller-secret-{n:04}-0123456789abcdefghijklmn")
}

fn signer(id: &str, secret: &str) -> Signer {
    Signer::v2(SigningKey::hmac(id, &Secret::new(secret)), AUDIENCE)
}

fn entry(id: &str, file: &str) -> String {
    format!(
        "[[key]]\nid = \"{id}\"\ncaller = \"langgraph\"\nalg = \"hmac-sha256\"\nsecret_file = \"{file}\"\n\n"
    )
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// `/metrics` as `name{labels}` -> value.
async fn metrics(gate: &GateProcess) -> HashMap<String, f64> {
    gate.scrape()
        .await
        .expect("scrape")
        .samples
        .iter()
        .map(|s| (s.series(), s.value))
        .collect()
}

/// The key ids of the `sig_gate_key_info` series, sorted.
fn key_info_ids(metrics: &HashMap<String, f64>) -> Vec<String> {
    let mut ids: Vec<String> = metrics
        .keys()
        .filter(|k| k.starts_with("sig_gate_key_info{"))
        .filter_map(|k| {
            k.split("key_id=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_owned)
        })
        .collect();
    ids.sort();
    ids
}

fn reloads(metrics: &HashMap<String, f64>, result: &str) -> f64 {
    metrics
        .get(&format!("sig_gate_reload_total{{result=\"{result}\"}}"))
        .copied()
        .unwrap_or(0.0)
}

/// Wait until `/metrics` satisfies `done`; the last scrape.
async fn wait_for(
    gate: &GateProcess,
    what: &str,
    done: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + RELOAD_WITHIN;
    loop {
        let now = metrics(gate).await;
        if done(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {RELOAD_WITHIN:?}; log: {:#?}",
            gate.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One signed request; its status and reason.
async fn call(gate: &GateProcess, signer: &Signer) -> (u16, Option<String>) {
    let http = Http::new(Duration::from_millis(200));
    let call = Call::new(Method::POST, "/reload/probe")
        .body("{}")
        .signed(signer);
    let reply = http
        .send(call.request(gate.proxy_addr()), Duration::from_secs(5))
        .await
        .expect("the gate answers");
    (reply.status.as_u16(), reply.reason())
}

/// A running gate with `env`, in `workdir`, in front of a fresh upstream.
struct Rig {
    _upstream: RecordingUpstream,
    gate: GateProcess,
}

async fn start(workdir: &Workdir, env: impl FnOnce(GateEnv) -> GateEnv) -> Rig {
    let upstream = RecordingUpstream::start().await.expect("upstream");
    let launcher = Launcher::new(PathBuf::from(env!("CARGO_BIN_EXE_sig-gate")), workdir);
    let env = env(GateEnv::new(&upstream.url()).set("GATE_AUDIENCE", AUDIENCE));
    let gate = launcher
        .start_running("reload", &env, None)
        .await
        .expect("the gate starts");
    gate.wait_ready(Duration::from_secs(10))
        .await
        .expect("ready");
    Rig {
        _upstream: upstream,
        gate,
    }
}

/// Stop the load; every request of it succeeded.
async fn no_failures(load: Load) -> usize {
    let samples = load.stop().await;
    let failures: Vec<_> = samples.iter().filter_map(|s| s.failure.as_ref()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} legitimate requests failed: {:?}",
        failures.len(),
        samples.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        samples.len() > 100,
        "only {} requests were sent",
        samples.len()
    );
    samples.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_key_is_rotated_by_rewriting_its_files_under_load() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let workdir = Workdir::create("reload-test").expect("workdir");
    let dir = workdir.path();
    std::fs::create_dir(dir.join("secrets")).expect("mkdir");
    write(&dir.join("secrets/lg-1"), &format!("{}\n", secret(1)));
    write(&dir.join("keys.toml"), &entry("lg-1", "secrets/lg-1"));
    // No environment secret: the registry alone.
    let rig = start(&workdir, |env| {
        env.set(
            "GATE_KEYS_FILE",
            dir.join("keys.toml").display().to_string(),
        )
    })
    .await;
    let gate = &rig.gate;
    let first = metrics(gate).await;
    assert_eq!(key_info_ids(&first), ["lg-1"]);
    let info = first
        .keys()
        .find(|k| k.starts_with("sig_gate_config_info{"))
        .expect("config info");
    assert!(
        info.contains("mode=\"none\"") && info.contains("fingerprint=\"\""),
        "{info}"
    );

    let load = Load::start(
        gate.proxy_addr(),
        RATE,
        signer("lg-1", &secret(1)),
        "reload",
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Overlap: the new key's secret file first, then the registry naming both keys.
    write(&dir.join("secrets/lg-2"), &format!("{}\n", secret(2)));
    write(
        &dir.join("keys.toml"),
        &format!(
            "{}{}",
            entry("lg-1", "secrets/lg-1"),
            entry("lg-2", "secrets/lg-2")
        ),
    );
    let overlap = wait_for(gate, "overlap in force", |m| {
        key_info_ids(m) == ["lg-1", "lg-2"]
    })
    .await;
    assert_eq!(reloads(&overlap, "error"), 0.0);
    let fingerprint = Secret::new(secret(2)).fingerprint().to_string();
    assert!(
        overlap.keys().any(|k| k.starts_with("sig_gate_key_info{")
            && k.contains("key_id=\"lg-2\"")
            && k.contains(&format!("fingerprint=\"{fingerprint}\""))),
        "{overlap:?}"
    );
    assert_eq!(
        overlap.get(
            "sig_gate_verified_key_total{alg=\"hmac-sha256\",caller=\"langgraph\",key_id=\"lg-2\"}"
        ),
        Some(&0.0),
        "a new key's series starts at 0"
    );

    // The caller moves to the new key, then the old one is retired.
    load.set_signer(signer("lg-2", &secret(2)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    write(&dir.join("keys.toml"), &entry("lg-2", "secrets/lg-2"));
    let retired = wait_for(gate, "retirement in force", |m| key_info_ids(m) == ["lg-2"]).await;
    assert!(
        !retired.keys().any(|k| k.contains("key_id=\"lg-1\"")),
        "every series of the removed key is gone: {retired:?}"
    );
    assert!(
        retired["sig_gate_verified_key_total{alg=\"hmac-sha256\",caller=\"langgraph\",key_id=\"lg-2\"}"]
            > 0.0
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = no_failures(load).await;

    // The removed key no longer opens the gate.
    assert_eq!(
        call(gate, &signer("lg-1", &secret(1))).await,
        (401, Some("unknown_key_id".into()))
    );
    assert_eq!(call(gate, &signer("lg-2", &secret(2))).await.0, 200);
    let last = metrics(gate).await;
    assert!(reloads(&last, "ok") >= 2.0, "{last:?}");
    assert_eq!(reloads(&last, "error"), 0.0, "{:#?}", gate.log_tail());
    assert!(sent > 0);
}

/// Kubernetes' atomic update of a mounted Secret: the files are symlinks through `..data`,
/// which is swapped to a new timestamped directory with one rename.
struct Projected {
    mount: PathBuf,
    generation: u32,
}

impl Projected {
    fn new(mount: PathBuf, files: &[(&str, String)]) -> Projected {
        std::fs::create_dir(&mount).expect("mkdir");
        let mut projected = Projected {
            mount,
            generation: 0,
        };
        projected.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), projected.mount.join(name))
                .expect("symlink");
        }
        projected
    }

    /// Write a new generation and swap `..data` to it; the old one is removed, as the kubelet
    /// does.
    fn update(&mut self, files: &[(&str, String)]) {
        self.generation += 1;
        let name = format!("..2026_12_03_{:02}", self.generation);
        let dir = self.mount.join(&name);
        std::fs::create_dir(&dir).expect("mkdir");
        for (file, content) in files {
            write(&dir.join(file), content);
        }
        let tmp = self.mount.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).expect("symlink");
        std::fs::rename(&tmp, self.mount.join("..data")).expect("swap ..data");
        if self.generation > 1 {
            let old = self
                .mount
                .join(format!("..2026_12_03_{:02}", self.generation - 1));
            std::fs::remove_dir_all(old).expect("remove the old generation");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_secret_update_swapping_the_data_symlink_rotates_keys_under_load() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let workdir = Workdir::create("reload-test").expect("workdir");
    let dir = workdir.path();
    let registry_one = entry("lg-1", "lg-1");
    let registry_both = format!("{}{}", entry("lg-1", "lg-1"), entry("lg-2", "lg-2"));
    let shared = |n: u32| format!("shared-secret-{n:04}-0123456789abcdefghijklm");
    // Every file is projected, the registry, the callers' secrets and the env secret alike;
    // a file the registry does not name yet is projected empty.
    let files = |registry: &str, lg1: &str, lg2: &str, env: &str| {
        vec![
            ("keys.toml", registry.to_owned()),
            ("lg-1", lg1.to_owned()),
            ("lg-2", lg2.to_owned()),
            ("shared", env.to_owned()),
        ]
    };
    let mut mount = Projected::new(
        dir.join("keys"),
        &files(&registry_one, &secret(1), "", &shared(1)),
    );
    let rig = start(&workdir, |env| {
        env.set(
            "GATE_KEYS_FILE",
            dir.join("keys/keys.toml").display().to_string(),
        )
        .set(
            "INTERSERVICE_HMAC_SECRET_FILE",
            dir.join("keys/shared").display().to_string(),
        )
    })
    .await;
    let gate = &rig.gate;
    let config_fingerprint = |m: &HashMap<String, f64>| {
        m.keys()
            .find(|k| k.starts_with("sig_gate_config_info{"))
            .and_then(|k| {
                k.split("fingerprint=\"")
                    .nth(1)?
                    .split('"')
                    .next()
                    .map(str::to_owned)
            })
    };
    let start_metrics = metrics(gate).await;
    assert_eq!(key_info_ids(&start_metrics), ["current", "lg-1"]);
    assert_eq!(
        config_fingerprint(&start_metrics),
        Some(Secret::new(shared(1)).fingerprint().to_string())
    );

    let load = Load::start(gate.proxy_addr(), RATE, signer("lg-1", &secret(1)), "k8s");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Overlap, and the shared secret rotated in the same update.
    mount.update(&files(&registry_both, &secret(1), &secret(2), &shared(2)));
    let overlap = wait_for(gate, "overlap in force", |m| {
        key_info_ids(m) == ["current", "lg-1", "lg-2"]
    })
    .await;
    assert_eq!(
        config_fingerprint(&overlap),
        Some(Secret::new(shared(2)).fingerprint().to_string()),
        "sig_gate_config_info follows the _FILE secret"
    );
    load.set_signer(signer("lg-2", &secret(2)));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Retirement.
    mount.update(&files(&entry("lg-2", "lg-2"), "", &secret(2), &shared(2)));
    wait_for(gate, "retirement in force", |m| {
        key_info_ids(m) == ["current", "lg-2"]
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    no_failures(load).await;
    assert_eq!(
        call(gate, &signer("lg-1", &secret(1))).await,
        (401, Some("unknown_key_id".into()))
    );
    let last = metrics(gate).await;
    assert_eq!(reloads(&last, "error"), 0.0, "{:#?}", gate.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_keeps_the_keys_in_force_and_sighup_reloads_at_once() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let workdir = Workdir::create("reload-test").expect("workdir");
    let dir = workdir.path();
    write(&dir.join("lg-1"), &secret(1));
    write(&dir.join("keys.toml"), &entry("lg-1", "lg-1"));
    let rig = start(&workdir, |env| {
        env.set(
            "GATE_KEYS_FILE",
            dir.join("keys.toml").display().to_string(),
        )
    })
    .await;
    let gate = &rig.gate;
    let lg1 = signer("lg-1", &secret(1));
    assert_eq!(call(gate, &lg1).await.0, 200);

    // A registry cut off mid-write: the error is counted and logged, the keys stay.
    write(
        &dir.join("keys.toml"),
        "[[key]]\nid = \"lg-1\"\ncaller = \"langgr",
    );
    wait_for(gate, "the broken registry counted", |m| {
        reloads(m, "error") == 1.0
    })
    .await;
    assert_eq!(call(gate, &lg1).await.0, 200, "the old keys stay in force");
    assert_eq!(key_info_ids(&metrics(gate).await), ["lg-1"]);
    let logged = gate.log_tail().join("\n");
    let line = logged
        .lines()
        .find(|l| l.contains("key reload failed"))
        .expect("the failure is logged");
    assert!(
        line.contains("keys.toml") && line.contains("line 3"),
        "{line}"
    );
    assert!(line.contains("\"level\":\"ERROR\""), "{line}");

    // A secret file that is too short: refused, naming the file and the key, no secret.
    write(&dir.join("lg-1"), "short-secret\n");
    write(&dir.join("keys.toml"), &entry("lg-1", "lg-1"));
    wait_for(gate, "the short secret counted", |m| {
        reloads(m, "error") == 2.0
    })
    .await;
    let logged = gate.log_tail().join("\n");
    let line = logged
        .lines()
        .rfind(|l| l.contains("key reload failed"))
        .expect("logged");
    assert!(
        line.contains("key \\\"lg-1\\\"") && line.contains("shorter than 32"),
        "{line}"
    );
    assert!(
        !logged.contains("short-secret") && !logged.contains(&secret(1)),
        "{logged}"
    );
    assert_eq!(call(gate, &lg1).await.0, 200, "still the old keys");

    // Fixed: in force again.
    write(&dir.join("lg-1"), &secret(3));
    wait_for(gate, "the fixed file loaded", |m| reloads(m, "ok") == 1.0).await;
    assert_eq!(call(gate, &signer("lg-1", &secret(3))).await.0, 200);
    assert_eq!(call(gate, &lg1).await, (401, Some("bad_signature".into())));

    // SIGHUP with no file changed: a reload all the same, at once, which file polling would
    // never do.
    let before = reloads(&metrics(gate).await, "ok");
    gate.hang_up().expect("SIGHUP");
    wait_for(gate, "SIGHUP reload", |m| reloads(m, "ok") == before + 1.0).await;
    let logged = gate.log_tail().join("\n");
    assert!(
        logged
            .lines()
            .any(|l| l.contains("keys reloaded") && l.contains("\"trigger\":\"SIGHUP\"")),
        "{logged}"
    );
    // The process is still serving: SIGHUP does not end it.
    assert_eq!(call(gate, &signer("lg-1", &secret(3))).await.0, 200);
    assert_eq!(gate.probe("/readyz").await.expect("admin"), 200);
}
