//! The scorecard's caller identity scenarios: signature version 2 with the key registry
//! (`GATE_KEYS_FILE`, `GATE_AUDIENCE`). A request signed for one service replayed to another,
//! a key used after a reload removed it, a forged `X-Gate-Verified-Caller`, an HMAC signature
//! keyed with an Ed25519 public key (algorithm confusion), an observe key on its own, and one
//! caller's key claiming another caller's key id.
//!
//! They play against gates of their own, started once for all of them beside the field's
//! ([`Court`]): `tool-gate` and `billing-gate`, two audiences sharing one registry (an HMAC and
//! an Ed25519 key per caller, and an observe key), and a third gate whose registry the reload
//! scenario rewrites. Every key is generated for the run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{KeyInit, Mac};
use http::Method;

use super::attacks::{SpoofCase, spoofed};
use super::{Field, answer, exchange, grew, invalid, reached, rejection};
use crate::client::Call;
use crate::exposition::Scrape;
use crate::process::{GateEnv, GateProcess};
use crate::{Check, HarnessError};
use gate::config::vars;
use gate::keyring::{Algorithm, Secret};
use gate::protocol::{self, SignedString, V2Line};
use gate::sign::{self, Signer, SigningKey, names};
use gate::verify::Reason;

/// `GATE_AUDIENCE` of the gate most scenarios call.
const TOOL: &str = "tool-gate";
/// `GATE_AUDIENCE` of the other service's gate, sharing the registry.
const BILLING: &str = "billing-gate";
/// The registry gates' exempt path (`GATE_UNSIGNED_PATHS`).
const EXEMPT_PATH: &str = "/game/identity-exempt";
/// How long a reload triggered by SIGHUP may take to be counted: it is done at once; the rest
/// is a busy machine.
const RELOAD_WITHIN: Duration = Duration::from_secs(10);

/// Key ids of the shared registry.
const LG_HMAC: &str = "lg-hmac";
const LG_ED: &str = "lg-ed";
const LG_ED_NEXT: &str = "lg-ed-next";
const PLANNER_HMAC: &str = "planner-hmac";
const PLANNER_ED: &str = "planner-ed";
/// Key ids of the reload gate's registry.
const LG_OLD: &str = "lg-old";
const LG_NEW: &str = "lg-new";

/// One caller's key, generated for the run: its signing half, and its `[[key]]` entry.
struct CallerKey {
    id: &'static str,
    caller: &'static str,
    signing: SigningKey,
    /// The HMAC secret's text (HMAC keys only).
    secret: Option<String>,
    /// The Ed25519 private key, PKCS#8 PEM (Ed25519 keys only).
    pem: Option<String>,
    observe: bool,
}

impl CallerKey {
    fn hmac(id: &'static str, caller: &'static str) -> CallerKey {
        let secret = gate::random::secret_text(32);
        CallerKey {
            id,
            caller,
            signing: SigningKey::hmac(id, &Secret::new(secret.as_bytes())),
            secret: Some(secret),
            pem: None,
            observe: false,
        }
    }

    fn ed25519(id: &'static str, caller: &'static str) -> Result<CallerKey, HarnessError> {
        let (pem, _) = sign::generate_ed25519()
            .map_err(|e| HarnessError::new("generating an Ed25519 key", e))?;
        let signing = SigningKey::ed25519_pem(id, &pem)
            .map_err(|e| HarnessError::new("reading the new Ed25519 key", e))?;
        Ok(CallerKey {
            id,
            caller,
            signing,
            secret: None,
            pem: Some(pem.to_string()),
            observe: false,
        })
    }

    fn observed(mut self) -> CallerKey {
        self.observe = true;
        self
    }

    /// A version 2 signer with this key for `audience`.
    fn signer(&self, audience: &str) -> Signer {
        Signer::v2(self.signing.clone(), audience)
    }

    /// This key's material under another key id: a forger who holds it claiming `id`.
    fn claiming(&self, id: &str) -> Result<SigningKey, HarnessError> {
        match (&self.secret, &self.pem) {
            (Some(secret), _) => Ok(SigningKey::hmac(id, &Secret::new(secret.as_bytes()))),
            (None, Some(pem)) => SigningKey::ed25519_pem(id, pem)
                .map_err(|e| HarnessError::new("reading an Ed25519 key", e)),
            (None, None) => Err(HarnessError(format!("{}: no key material", self.id))),
        }
    }

    /// The 32 bytes of an Ed25519 key's public half.
    fn public_bytes(&self) -> Result<[u8; 32], HarnessError> {
        self.signing
            .public_key()
            .map(|public| *public.as_bytes())
            .ok_or_else(|| HarnessError(format!("{}: not an Ed25519 key", self.id)))
    }

    /// The `[[key]]` entry, its HMAC secret written beside the registry in `dir`.
    fn entry(&self, dir: &Path) -> Result<String, HarnessError> {
        let mut entry = format!(
            "[[key]]\nid = \"{}\"\ncaller = \"{}\"\nalg = \"{}\"\n",
            self.id,
            self.caller,
            self.signing.algorithm()
        );
        match (&self.secret, self.signing.public_key()) {
            (Some(secret), _) => {
                let file = format!("{}.secret", self.id);
                write_private(&dir.join(&file), secret)?;
                entry.push_str(&format!("secret_file = \"{file}\"\n"));
            }
            (None, Some(public)) => {
                entry.push_str(&format!("public_key = \"{}\"\n", public.to_base64url()));
            }
            (None, None) => return Err(HarnessError(format!("{}: no key material", self.id))),
        }
        if self.observe {
            entry.push_str("observe = true\n");
        }
        entry.push('\n');
        Ok(entry)
    }
}

/// Write `text` to `path`, readable by the owner only, replacing it whole (a new file renamed
/// over the old one), so a gate watching it never reads half a file.
fn write_private(path: &Path, text: &str) -> Result<(), HarnessError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| HarnessError::new(format!("writing {}", path.display()), e);
    let fresh = path.with_extension("new");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&fresh)
        .map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    drop(file);
    std::fs::rename(&fresh, path).map_err(fail)
}

/// A registry file of `keys` at `dir/name`.
fn write_registry(dir: &Path, name: &str, keys: &[&CallerKey]) -> Result<PathBuf, HarnessError> {
    let mut text = String::new();
    for key in keys {
        text.push_str(&key.entry(dir)?);
    }
    let path = dir.join(name);
    write_private(&path, &text)?;
    Ok(path)
}

/// The gates and keys only the identity scenarios use.
struct Court {
    /// `GATE_AUDIENCE=tool-gate`, the shared registry, the field's current secret as the
    /// environment key, one exempt path.
    tool: GateProcess,
    /// `GATE_AUDIENCE=billing-gate`, the same registry and secret.
    billing: GateProcess,
    /// `GATE_AUDIENCE=tool-gate` with a registry of [`LG_OLD`] and [`LG_NEW`], which the
    /// reload scenario rewrites.
    reloading: GateProcess,
    reload_dir: PathBuf,
    lg_hmac: CallerKey,
    lg_ed: CallerKey,
    lg_ed_next: CallerKey,
    planner_hmac: CallerKey,
    planner_ed: CallerKey,
    lg_old: CallerKey,
    lg_new: CallerKey,
}

impl Court {
    async fn start(field: &Field) -> Result<Court, HarnessError> {
        let lg_hmac = CallerKey::hmac(LG_HMAC, "langgraph");
        let lg_ed = CallerKey::ed25519(LG_ED, "langgraph")?;
        let lg_ed_next = CallerKey::ed25519(LG_ED_NEXT, "langgraph")?.observed();
        let planner_hmac = CallerKey::hmac(PLANNER_HMAC, "planner");
        let planner_ed = CallerKey::ed25519(PLANNER_ED, "planner")?;
        let lg_old = CallerKey::hmac(LG_OLD, "langgraph");
        let lg_new = CallerKey::hmac(LG_NEW, "langgraph");

        let dir = field.launcher.workdir().join("identity");
        let reload_dir = field.launcher.workdir().join("identity-reload");
        for dir in [&dir, &reload_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| HarnessError::new(format!("creating {}", dir.display()), e))?;
        }
        let shared = write_registry(
            &dir,
            "keys.toml",
            &[&lg_hmac, &lg_ed, &lg_ed_next, &planner_hmac, &planner_ed],
        )?;
        let reload = write_registry(&reload_dir, "keys.toml", &[&lg_old, &lg_new])?;

        let registry = |audience: &str, keys: &Path| {
            GateEnv::new(&field.upstream.url())
                .set(vars::KEYS_FILE, keys.display().to_string())
                .set(vars::AUDIENCE, audience)
        };
        let tool_env = registry(TOOL, &shared)
            .current(&field.new)
            .set(vars::UNSIGNED_PATHS, EXEMPT_PATH);
        let billing_env = registry(BILLING, &shared).current(&field.new);
        let reload_env = registry(TOOL, &reload);
        let launcher = &field.launcher;
        let (tool, billing, reloading) = tokio::join!(
            launcher.start_running("tool-gate (registry)", &tool_env, None),
            launcher.start_running("billing-gate (registry)", &billing_env, None),
            launcher.start_running("reloading gate (registry)", &reload_env, None),
        );
        let (tool, billing, reloading) = (tool?, billing?, reloading?);
        for gate in [&tool, &billing, &reloading] {
            gate.wait_ready(Duration::from_secs(10)).await?;
        }
        Ok(Court {
            tool,
            billing,
            reloading,
            reload_dir,
            lg_hmac,
            lg_ed,
            lg_ed_next,
            planner_hmac,
            planner_ed,
            lg_old,
            lg_new,
        })
    }
}

const AUDIENCE: &str = "version 2 request replayed to a gate of another audience";
const REMOVED: &str = "caller key used after a reload removed it";
const SPOOFED: &str = "spoofed X-Gate-Verified-Caller in any spelling";
const CONFUSION: &str = "algorithm confusion: HMAC keyed with an Ed25519 public key";
const OBSERVE: &str = "observe key never grants access";
const CLAIMED: &str = "one caller's key claiming another caller's key id";

/// Every identity scenario's name, in the order they are played.
const NAMES: [&str; 6] = [AUDIENCE, REMOVED, SPOOFED, CONFUSION, OBSERVE, CLAIMED];

/// Play every identity scenario, handing each verdict to `record` under its name; when the
/// registry gates do not start, every scenario fails with that error.
pub(super) async fn play(
    field: &Field,
    record: &mut impl FnMut(&str, Result<Vec<Check>, HarnessError>),
) {
    let court = match Court::start(field).await {
        Ok(court) => court,
        Err(err) => {
            for name in NAMES {
                record(name, Err(err.clone()));
            }
            return;
        }
    };
    let court = &court;
    record(AUDIENCE, other_audience(field, court).await);
    record(REMOVED, removed_by_reload(field, court).await);
    record(SPOOFED, spoofed_caller(field, court).await);
    record(CONFUSION, algorithm_confusion(field, court).await);
    record(OBSERVE, observe_alone(field, court).await);
    record(CLAIMED, claimed_key_id(field, court).await);
}

/// Which caller the upstream was told sent the latest request on `path`.
fn caller_seen(field: &Field, path: &str, expected: &str) -> Check {
    let seen = field.upstream.seen(path);
    let observed = match seen.headers.get(&protocol::VERIFIED_CALLER) {
        _ if seen.count == 0 => format!("{path} never reached the upstream"),
        Some(value) => format!("caller {}", value.to_str().unwrap_or("?")),
        None => "no X-Gate-Verified-Caller".to_owned(),
    };
    Check::equal(
        format!("X-Gate-Verified-Caller on {path}"),
        format!("caller {expected}"),
        observed,
    )
}

/// A request signed for `billing-gate` passes there and is refused by `tool-gate`, which
/// holds the very same key: the audience is part of what is signed. With an HMAC key and with
/// an Ed25519 key.
async fn other_audience(field: &Field, court: &Court) -> Result<Vec<Check>, HarnessError> {
    let mut checks = Vec::new();
    for (key, path) in [
        (&court.lg_hmac, "/game/audience-hmac"),
        (&court.lg_ed, "/game/audience-ed25519"),
    ] {
        let call = Call::signed_post(path, &key.signer(BILLING));
        let at_billing = field.http.call(court.billing.proxy_addr(), &call).await?;
        let (before, replayed, after) = exchange(field, &court.tool, &call).await?;
        let alg = key.signing.algorithm();
        checks.extend([
            answer(&format!("{alg}: at {BILLING}"), &at_billing, "200"),
            answer(
                &format!("{alg}: the same bytes at {TOOL}"),
                &replayed,
                "401 bad_signature",
            ),
            invalid(&before, &after, Reason::BadSignature, 1),
            reached(field, path, 1, Some(key.id)),
            caller_seen(field, path, key.caller),
        ]);
    }
    Ok(checks)
}

/// A caller's key passes; the registry is rewritten without it and the gate told with SIGHUP;
/// once the reload is counted, the same key is refused while the caller's other key passes,
/// and the removed key's `sig_gate_key_info` series is gone.
async fn removed_by_reload(field: &Field, court: &Court) -> Result<Vec<Check>, HarnessError> {
    let gate = &court.reloading;
    let addr = gate.proxy_addr();
    let (old, new) = (&court.lg_old, &court.lg_new);
    let before_path = "/game/reload-before";
    let before_call = Call::signed_post(before_path, &old.signer(TOOL));
    let before_reply = field.http.call(addr, &before_call).await?;

    let ok = [("result", "ok")];
    let before = gate.scrape().await?;
    write_registry(&court.reload_dir, "keys.toml", &[new])?;
    gate.hang_up()?;
    let started = Instant::now();
    let key_info = |scrape: &Scrape, id: &str| {
        let state = scrape
            .value("sig_gate_key_info", &[("key_id", id)])
            .map_or("absent", |_| "present");
        format!("key_info{{key_id=\"{id}\"}} {state}")
    };
    let in_force =
        |scrape: &Scrape| format!("{}, {}", key_info(scrape, LG_OLD), key_info(scrape, LG_NEW));
    let expected_keys =
        format!("key_info{{key_id=\"{LG_OLD}\"}} absent, key_info{{key_id=\"{LG_NEW}\"}} present");
    // Until the reload that read the new file is counted and in force (a reload the file
    // watcher started on its own is counted too, and changes nothing).
    let (reloaded, grew) = loop {
        let now = gate.scrape().await?;
        let grew = now.count_delta(&before, "sig_gate_reload_total", &ok);
        if (grew >= 1 && in_force(&now) == expected_keys) || started.elapsed() > RELOAD_WITHIN {
            break (now, grew);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reload_check = Check::new(
        "reload after SIGHUP",
        "reload_total{result=\"ok\"} grew",
        if grew >= 1 {
            format!(
                "reload_total{{result=\"ok\"}} grew within {} ms",
                started.elapsed().as_millis()
            )
        } else {
            format!(
                "reload_total{{result=\"ok\"}} unchanged after {} ms; gate log: {}",
                RELOAD_WITHIN.as_millis(),
                gate.log_tail().join(" | ")
            )
        },
        grew >= 1,
    );

    let after_path = "/game/reload-removed-key";
    let removed = Call::signed_post(after_path, &old.signer(TOOL));
    let mut checks = vec![
        answer(&format!("{LG_OLD} before the reload"), &before_reply, "200"),
        reached(field, before_path, 1, Some(LG_OLD)),
        reload_check,
        Check::equal(
            "/metrics sig_gate_key_info",
            expected_keys,
            in_force(&reloaded),
        ),
    ];
    let refused = rejection(field, gate, &removed, Reason::UnknownKeyId).await?;
    checks.extend(refused.into_iter().map(|mut check| {
        check.name = format!("{LG_OLD} after the reload: {}", check.name);
        check
    }));
    let kept = Call::signed_post("/game/reload-kept-key", &new.signer(TOOL));
    let kept_reply = field.http.call(addr, &kept).await?;
    checks.push(answer(
        &format!("{LG_NEW} after the reload"),
        &kept_reply,
        "200",
    ));
    Ok(checks)
}

/// A client's `X-Gate-Verified-Caller`, spelt with underscores or in any case, never reaches
/// the upstream: not on an exempt path, not through a report-only gate, and not beside the
/// gate's own on a verified request of either version.
async fn spoofed_caller(field: &Field, court: &Court) -> Result<Vec<Check>, HarnessError> {
    // One copy with dashes: on a signed path two copies of an `X-Gate-*` name are a
    // malformed signature, which would end the verified cases before forwarding.
    let spoofs = [
        "X_Gate_Verified_Caller: billing",
        "x_gate_verified_caller: billing",
        "X_GATE_VERIFIED_CALLER: billing",
        "X-GATE-VERIFIED-CALLER: billing",
    ];
    let exempt = Call::new(Method::GET, EXEMPT_PATH);
    let report_only = Call::new(Method::GET, "/game/spoof-caller-report-only");
    let v2 = Call::signed_post("/game/spoof-caller-v2", &court.lg_ed.signer(TOOL));
    let v1 = Call::signed_post("/game/spoof-caller-v1", &field.new.signer());
    let cases: [SpoofCase<'_>; 4] = [
        ("exempt path", &court.tool, &exempt, None),
        (
            "report-only gate, unsigned",
            &field.report_only,
            &report_only,
            None,
        ),
        (
            "version 2 request of langgraph",
            &court.tool,
            &v2,
            Some("langgraph"),
        ),
        (
            "version 1 request, shared secret",
            &field.main,
            &v1,
            Some(gate::keyring::SHARED_CALLER),
        ),
    ];
    Ok(spoofed(field, &protocol::VERIFIED_CALLER, &spoofs, &cases).await)
}

/// HMAC-SHA256 keyed with `key` over the version 2 signed string of `POST target` with
/// `body`, for `line`, in hex: a signature no signer of the gate's makes.
fn forged_hmac(
    key: &[u8],
    line: V2Line<'_>,
    target: &str,
    body: &[u8],
    nonce: &str,
    timestamp: &str,
) -> String {
    let digest = protocol::body_digest(body);
    let (path, query) = SignedString::split_target(target);
    let signed = SignedString {
        timestamp,
        nonce,
        method: Method::POST.as_str(),
        path,
        query,
        body_digest: &digest,
    };
    // HMAC takes a key of any length.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key");
    signed.write_v2(line, |piece| mac.update(piece));
    protocol::hex_string(&mac.finalize().into_bytes())
}

/// An attacker who knows an Ed25519 key's public half (it is public) computes an HMAC with
/// those 32 bytes as the secret and sends it for that key id, hoping the gate takes the
/// algorithm from the request: with `hmac-sha256` on the algorithm line (what an HMAC signer
/// writes) and with `ed25519` there. The algorithm comes from the configured key, so both are
/// refused.
async fn algorithm_confusion(field: &Field, court: &Court) -> Result<Vec<Check>, HarnessError> {
    let public = court.lg_ed.public_bytes()?;
    let as_hmac = Call::signed_post(
        "/game/confusion-hmac-line",
        &Signer::v2(SigningKey::hmac(LG_ED, &Secret::new(public.to_vec())), TOOL),
    );
    let body = br#"{"tool":"transfer","amount":100}"#;
    let target = "/game/confusion-ed25519-line";
    let nonce = sign::new_nonce();
    let timestamp = gate::clock::unix_now().to_string();
    let line = V2Line {
        algorithm: Algorithm::Ed25519.as_str(),
        key_id: LG_ED,
        audience: TOOL,
    };
    let signature = forged_hmac(&public, line, target, body, &nonce, &timestamp);
    let as_ed25519 = Call::new(Method::POST, target)
        .body(Bytes::from_static(body))
        .header(names::VERSION, protocol::VERSION_2)
        .header(names::KEY_ID, LG_ED)
        .header(names::TIMESTAMP, &timestamp)
        .header(names::NONCE, &nonce)
        .header(names::SIGNATURE, &signature);
    let mut checks = Vec::new();
    for (what, call) in [
        ("algorithm line hmac-sha256", &as_hmac),
        ("algorithm line ed25519", &as_ed25519),
    ] {
        let refused = rejection(field, &court.tool, call, Reason::BadSignature).await?;
        checks.extend(refused.into_iter().map(|mut check| {
            check.name = format!("{what}: {}", check.name);
            check
        }));
    }
    Ok(checks)
}

/// A request signed with an observe key alone, correctly: the gate checks the signature and
/// counts it `valid`, and refuses the request, which no key that grants access signed.
async fn observe_alone(field: &Field, court: &Court) -> Result<Vec<Check>, HarnessError> {
    let key = &court.lg_ed_next;
    let call = Call::signed_post("/game/observe-alone", &key.signer(TOOL));
    let (before, reply, after) = exchange(field, &court.tool, &call).await?;
    let observed = [
        ("caller", key.caller),
        ("key_id", key.id),
        ("result", "valid"),
    ];
    let metric = "sig_gate_identity_observed_total";
    let text = |n: i64| {
        format!(
            "identity_observed_total{{key_id=\"{}\",result=\"valid\"}} +{n}",
            key.id
        )
    };
    Ok(vec![
        answer("answer", &reply, "401 bad_signature"),
        invalid(&before, &after, Reason::BadSignature, 1),
        Check::equal(
            format!("/metrics {metric}"),
            text(1),
            text(after.count_delta(&before, metric, &observed)),
        ),
        reached(field, call.path(), 0, None),
    ])
}

/// langgraph's keys signing under planner's key ids: refused, whichever algorithm, though each
/// signature is a genuine one of a registered key.
async fn claimed_key_id(field: &Field, court: &Court) -> Result<Vec<Check>, HarnessError> {
    let mut checks = Vec::new();
    for (holder, claimed, path) in [
        (&court.lg_hmac, &court.planner_hmac, "/game/claimed-hmac"),
        (&court.lg_ed, &court.planner_ed, "/game/claimed-ed25519"),
    ] {
        let forged = Signer::v2(holder.claiming(claimed.id)?, TOOL);
        let call = Call::signed_post(path, &forged);
        let refused = rejection(field, &court.tool, &call, Reason::BadSignature).await?;
        let what = format!("{}'s key as {}", holder.id, claimed.id);
        checks.extend(refused.into_iter().map(|mut check| {
            check.name = format!("{what}: {}", check.name);
            check
        }));
    }
    let before = court.tool.scrape().await?;
    let genuine = Call::signed_post("/game/claimed-genuine", &court.planner_ed.signer(TOOL));
    let reply = field.http.call(court.tool.proxy_addr(), &genuine).await?;
    let after = court.tool.scrape().await?;
    checks.extend([
        answer(&format!("{PLANNER_ED} itself"), &reply, "200"),
        grew(
            &before,
            &after,
            "sig_gate_requests_total",
            ("outcome", "forwarded"),
            1,
        ),
        caller_seen(field, genuine.path(), "planner"),
    ]);
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_has_a_name() {
        let names: std::collections::HashSet<_> = NAMES.iter().collect();
        assert_eq!(names.len(), NAMES.len());
    }

    #[test]
    fn registry_entries_name_the_key_material_by_algorithm() {
        let dir = crate::process::Workdir::create("identity-test").expect("a directory");
        let hmac = CallerKey::hmac("lg-1", "langgraph");
        let entry = hmac.entry(dir.path()).expect("an entry");
        assert!(entry.contains("alg = \"hmac-sha256\"\nsecret_file = \"lg-1.secret\""));
        let written = std::fs::read_to_string(dir.path().join("lg-1.secret")).expect("written");
        assert_eq!(Some(written), hmac.secret);
        let ed = CallerKey::ed25519("lg-ed", "langgraph")
            .expect("a key")
            .observed();
        let entry = ed.entry(dir.path()).expect("an entry");
        let public = ed.signing.public_key().expect("Ed25519").to_base64url();
        assert!(entry.contains(&format!("public_key = \"{public}\"\nobserve = true")));
        assert!(!entry.contains("secret"), "{entry}");
    }

    #[test]
    fn a_forger_claiming_another_id_signs_with_the_same_material() {
        let ed = CallerKey::ed25519("lg-ed", "langgraph").expect("a key");
        let forged = ed.claiming("planner-ed").expect("a signing key");
        assert_eq!(forged.id(), "planner-ed");
        assert_eq!(forged.public_key(), ed.signing.public_key());
    }
}
