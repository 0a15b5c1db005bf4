//! The drill's plan: the phases of the runbook's rotation (the gate deployments, how each is
//! put in place, the client's signing modes and the probes), and the credentials they use.
//!
//! Phases 1-5 redeploy with the secrets in the environment, as the runbook says. Phases 6-10
//! do the rotation again without restarts: the keys live in a mounted Secret (a key registry
//! and one secret file per key, so key ids come from files too), one gate process serves all
//! five, and each step (overlap, strict key ids, retirement, rollback) is a Secret update the
//! gate reloads. Phase 11 runs two replicas that share a Redis replay store. Phases 12-16
//! migrate the caller from the shared secret to its own Ed25519 key: a registry of their own
//! beside the shared secret, the key observed, the observe window, the key enforced (both by
//! Secret updates), and the shared secret retired by a redeploy.

use std::collections::BTreeMap;

use super::GRACE_SECS;
use crate::client::{Credential, IdentityKey};
use crate::process::GateEnv;
use gate::config::vars;
use gate::keyring::Slot;
use gate::sign::Signer;
use gate::verify::Reason;

/// `GATE_AUDIENCE` of every gate the drill starts: the version 2 signatures of phases 6-16 name
/// it, and the redeployed gates have it too so the client can switch to version 2 before the
/// handover to the mounted Secret.
pub(super) const AUDIENCE: &str = "sig-gate-drill";

/// The caller the registry's keys belong to (`X-Gate-Verified-Caller`).
pub(super) const CALLER: &str = "langgraph";

/// The caller the environment's secrets stand for (`X-Gate-Verified-Caller`).
pub(super) const SHARED: &str = "shared";

/// The registry's name in a mounted Secret.
pub(super) const REGISTRY: &str = "keys.toml";

/// The mounted Secret of the rotation by reloads (phases 6-11), and the one of the migration
/// (12-16): two Secrets, so that publishing one never changes the keys of gates reading the
/// other.
pub(super) const ROTATION_SECRET: &str = "secret";
pub(super) const MIGRATION_SECRET: &str = "identity";

/// `GATE_REPLAY_STORE_TIMEOUT_MS` of the replicas: the budget bounds how long a request waits
/// for Redis before failing closed; the drill judges availability on what may be a busy
/// two-core machine, so it allows more than the 100 ms default.
const STORE_TIMEOUT_MS: u32 = 1000;

/// A gate configuration of the rotation.
#[derive(Debug, Clone)]
pub(super) enum Deployment {
    /// Secrets in the environment: current, optional previous, strict key ids.
    Env {
        current: Credential,
        previous: Option<Credential>,
        strict: bool,
    },
    /// Keys in a mounted Secret: a registry entry and a secret file per key (version 2 only);
    /// no environment secret; the replay store in memory or, for replicas, on Redis.
    Mounted { keys: Vec<Credential>, redis: bool },
    /// The migration: the shared secret in the environment (until it is retired) and a
    /// mounted registry of Ed25519 keys, each observed (`observe = true`) or enforced.
    Identity {
        shared: Option<Credential>,
        keys: Vec<(IdentityKey, Observe)>,
    },
}

/// Whether a registry key only observes or grants access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Observe {
    /// `observe = true`: verified and counted, never grants access.
    Observed,
    /// `observe` absent: the key admits requests.
    Enforced,
}

/// One key a gate has in force, as `sig_gate_key_info` labels it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct KeyInForce {
    pub(super) key_id: String,
    pub(super) caller: &'static str,
    pub(super) alg: &'static str,
    pub(super) observe: bool,
    pub(super) fingerprint: String,
}

impl Deployment {
    /// The gate's environment. `registry` is the mounted registry's path, `redis` the store's
    /// URL (both used by [`Deployment::Mounted`] only).
    pub(super) fn env(&self, upstream: &str, registry: &str, redis: Option<&str>) -> GateEnv {
        let env = GateEnv::new(upstream)
            .set(vars::AUDIENCE, AUDIENCE)
            .set(vars::SHUTDOWN_GRACE_SECS, GRACE_SECS.to_string());
        match self {
            Deployment::Env {
                current,
                previous,
                strict,
            } => {
                let env = env
                    .current(current)
                    .set(vars::STRICT_KEY_ID, strict.to_string());
                match previous {
                    Some(previous) => env.previous(previous),
                    None => env.without_previous(),
                }
            }
            Deployment::Mounted { redis: uses, .. } => {
                let env = env.set(vars::KEYS_FILE, registry);
                match (uses, redis) {
                    (true, Some(url)) => env
                        .set(vars::REPLAY_STORE, url)
                        .set(vars::REPLAY_STORE_TIMEOUT_MS, STORE_TIMEOUT_MS.to_string()),
                    _ => env,
                }
            }
            Deployment::Identity { shared, .. } => {
                let env = env.set(vars::KEYS_FILE, registry);
                match shared {
                    Some(shared) => env.current(shared),
                    None => env,
                }
            }
        }
    }

    /// The mounted Secret this deployment reads (`None` for [`Deployment::Env`]).
    pub(super) fn secret(&self) -> Option<&'static str> {
        match self {
            Deployment::Env { .. } => None,
            Deployment::Mounted { .. } => Some(ROTATION_SECRET),
            Deployment::Identity { .. } => Some(MIGRATION_SECRET),
        }
    }

    /// The mounted Secret's files: the registry and one secret file per key, named by its id.
    /// Empty for [`Deployment::Env`].
    /// The identity Secret holds the registry alone (public keys need no file).
    pub(super) fn files(&self) -> BTreeMap<String, String> {
        match self {
            Deployment::Env { .. } => BTreeMap::new(),
            Deployment::Mounted { keys, .. } => {
                let registry: String = keys
                    .iter()
                    .map(|key| {
                        format!(
                            "[[key]]\nid = \"{id}\"\ncaller = \"{CALLER}\"\nalg = \"hmac-sha256\"\n\
                             secret_file = \"{id}\"\n\n",
                            id = key.key_id()
                        )
                    })
                    .collect();
                let mut files: BTreeMap<String, String> = keys
                    .iter()
                    .map(|key| (key.key_id().to_owned(), format!("{}\n", key.secret())))
                    .collect();
                files.insert(REGISTRY.to_owned(), registry);
                files
            }
            Deployment::Identity { keys, .. } => {
                let registry: String = keys
                    .iter()
                    .map(|(key, observe)| {
                        format!(
                            "[[key]]\nid = \"{id}\"\ncaller = \"{CALLER}\"\nalg = \"ed25519\"\n\
                             public_key = \"{public}\"\n{observe}\n",
                            id = key.key_id(),
                            public = key.public_key(),
                            observe = if *observe == Observe::Observed {
                                "observe = true\n"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect();
                BTreeMap::from([(REGISTRY.to_owned(), registry)])
            }
        }
    }

    /// Whether the keys come from a mounted Secret (the gate reloads them).
    pub(super) fn mounted(&self) -> bool {
        self.secret().is_some()
    }

    /// The environment slot a key id verifies under (`None` for registry keys, which are
    /// counted per key only).
    pub(super) fn slot_of(&self, key_id: &str) -> Option<Slot> {
        match self {
            Deployment::Env {
                current, previous, ..
            } => {
                if current.key_id() == key_id {
                    Some(Slot::Current)
                } else if previous.as_ref().is_some_and(|p| p.key_id() == key_id) {
                    Some(Slot::Previous)
                } else {
                    None
                }
            }
            Deployment::Mounted { .. } => None,
            Deployment::Identity { shared, .. } => shared
                .as_ref()
                .filter(|shared| shared.key_id() == key_id)
                .map(|_| Slot::Current),
        }
    }

    /// Whether an environment secret is in force (requests it admits count per slot).
    pub(super) fn has_env_secret(&self) -> bool {
        match self {
            Deployment::Env { .. } => true,
            Deployment::Mounted { .. } => false,
            Deployment::Identity { shared, .. } => shared.is_some(),
        }
    }

    /// The caller a key id admits requests as.
    pub(super) fn caller_of(&self, key_id: &str) -> &'static str {
        if self.slot_of(key_id).is_some() {
            SHARED
        } else {
            CALLER
        }
    }

    /// Every key in force, as `sig_gate_key_info` shows it (empty for [`Deployment::Env`],
    /// whose secrets the slot counters and `sig_gate_config_info` follow).
    pub(super) fn keys_in_force(&self) -> Vec<KeyInForce> {
        let hmac = |caller, key: &Credential| KeyInForce {
            key_id: key.key_id().to_owned(),
            caller,
            alg: "hmac-sha256",
            observe: false,
            fingerprint: key.fingerprint(),
        };
        match self {
            Deployment::Env { .. } => Vec::new(),
            Deployment::Mounted { keys, .. } => keys.iter().map(|key| hmac(CALLER, key)).collect(),
            Deployment::Identity { shared, keys } => shared
                .iter()
                .map(|shared| hmac(SHARED, shared))
                .chain(keys.iter().map(|(key, observe)| KeyInForce {
                    key_id: key.key_id().to_owned(),
                    caller: CALLER,
                    alg: "ed25519",
                    observe: *observe == Observe::Observed,
                    fingerprint: key.fingerprint(),
                }))
                .collect(),
        }
    }

    /// `SECRET=new(k2) PREV=old(k1) STRICT=true`, or `Secret: k1=old k2=new`, with the
    /// harness's names for the secrets.
    pub(super) fn describe(&self, names: &Names) -> String {
        match self {
            Deployment::Env {
                current,
                previous,
                strict,
            } => {
                let mut text = format!("SECRET={}({})", names.of(current), current.key_id());
                if let Some(previous) = previous {
                    text.push_str(&format!(
                        " SECRET_PREV={}({})",
                        names.of(previous),
                        previous.key_id()
                    ));
                }
                text.push_str(&format!(" STRICT_KEY_ID={strict}"));
                text
            }
            Deployment::Mounted { keys, redis } => {
                let keys: Vec<String> = keys
                    .iter()
                    .map(|key| format!("{}={}", key.key_id(), names.of(key)))
                    .collect();
                let mut text = format!("mounted Secret: {REGISTRY} [{}]", keys.join(" "));
                if *redis {
                    text.push_str(", two replicas, GATE_REPLAY_STORE=redis://127.0.0.1");
                }
                text
            }
            Deployment::Identity { shared, keys } => {
                let mut text = match shared {
                    Some(shared) => format!(
                        "SECRET={}({}) (caller {SHARED}), ",
                        names.of(shared),
                        shared.key_id()
                    ),
                    None => "no environment secret, ".to_owned(),
                };
                let keys: Vec<String> = keys
                    .iter()
                    .map(|(key, observe)| {
                        format!(
                            "{}=ed25519{}",
                            key.key_id(),
                            if *observe == Observe::Observed {
                                " observe"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect();
                text.push_str(&format!(
                    "mounted Secret: {REGISTRY} [{}] (caller {CALLER})",
                    keys.join(" ")
                ));
                text
            }
        }
    }

    /// The `sig_gate_config_info` labels this deployment must report.
    pub(super) fn info(&self) -> BTreeMap<String, String> {
        let text = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        match self {
            Deployment::Env {
                current,
                previous,
                strict,
            } => {
                let (key_id_prev, fingerprint_prev) = previous
                    .as_ref()
                    .map(|p| (p.key_id().to_owned(), p.fingerprint()))
                    .unwrap_or_default();
                let mode = if previous.is_some() { "dual" } else { "single" };
                text(&[
                    ("mode", mode),
                    ("strict_key_id", &strict.to_string()),
                    ("require_signature", "true"),
                    ("key_id", current.key_id()),
                    ("key_id_prev", &key_id_prev),
                    ("fingerprint", &current.fingerprint()),
                    ("fingerprint_prev", &fingerprint_prev),
                ])
            }
            Deployment::Mounted { redis, .. } => text(&[
                ("mode", "none"),
                ("require_signature", "true"),
                ("key_id", ""),
                ("key_id_prev", ""),
                ("fingerprint", ""),
                ("fingerprint_prev", ""),
                ("replay_store", if *redis { "redis" } else { "memory" }),
            ]),
            Deployment::Identity { shared, .. } => {
                let (mode, key_id, fingerprint) = match shared {
                    Some(shared) => ("single", shared.key_id().to_owned(), shared.fingerprint()),
                    None => ("none", String::new(), String::new()),
                };
                text(&[
                    ("mode", mode),
                    ("require_signature", "true"),
                    ("key_id", &key_id),
                    ("key_id_prev", ""),
                    ("fingerprint", &fingerprint),
                    ("fingerprint_prev", ""),
                    ("replay_store", "memory"),
                ])
            }
        }
    }
}

/// The run's credentials and the names the report gives their secrets.
#[derive(Debug)]
pub(super) struct Names {
    pub(super) old: Credential,
    pub(super) new: Credential,
    pub(super) stranger: Credential,
    /// The shared secret the migration starts from.
    pub(super) shared: Credential,
    /// The caller's own Ed25519 key the migration moves to.
    pub(super) identity: IdentityKey,
    /// Another Ed25519 key claiming the caller's key id: a signer with the wrong key.
    pub(super) impostor: IdentityKey,
}

impl Names {
    /// A run's credentials: the rotation's `k1` and `k2`, an unknown secret, the shared secret
    /// `s1`, and the caller's Ed25519 key `lg-ed1` with an impostor of the same id.
    pub(super) fn generate() -> Names {
        Names {
            old: Credential::generate("k1"),
            new: Credential::generate("k2"),
            stranger: Credential::generate("k2"),
            shared: Credential::generate("s1"),
            identity: IdentityKey::generate(IDENTITY_KEY_ID),
            impostor: IdentityKey::generate(IDENTITY_KEY_ID),
        }
    }

    pub(super) fn of(&self, credential: &Credential) -> &'static str {
        if credential.secret() == self.old.secret() {
            "old"
        } else if credential.secret() == self.new.secret() {
            "new"
        } else if credential.secret() == self.shared.secret() {
            "shared"
        } else {
            "unknown"
        }
    }
}

/// The key id of the caller's Ed25519 key.
const IDENTITY_KEY_ID: &str = "lg-ed1";

/// What a probe must get.
#[derive(Debug, Clone)]
pub(super) enum Expect {
    /// 200, forwarded with `X-Gate-Verified-Key-Id: key_id` and the caller of that key in
    /// `X-Gate-Verified-Caller` (and counted under that key's slot for the environment's
    /// secrets).
    Accepted { key_id: String },
    /// 401 with this reason, never forwarded.
    Rejected(Reason),
}

/// A request signed one particular way, with the answer the phase requires.
#[derive(Debug, Clone)]
pub(super) struct Probe {
    pub(super) name: String,
    pub(super) signer: Signer,
    pub(super) expect: Expect,
    /// Which replica it goes to (0 unless the step runs replicas).
    pub(super) replica: usize,
    /// Send again, byte for byte, the request of this earlier probe of the step (a replay)
    /// instead of signing a new one.
    pub(super) replays: Option<usize>,
    /// What the gate counts for the probe's observe-key signature, when it carries one:
    /// `valid` or `invalid` in `sig_gate_identity_observed_total`.
    pub(super) observed: Option<Observed>,
}

/// The result an observe key's signature is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Observed {
    Valid,
    Invalid,
}

pub(super) fn accepted(name: &str, signer: Signer, key_id: &str) -> Probe {
    Probe {
        name: name.to_owned(),
        signer,
        expect: Expect::Accepted {
            key_id: key_id.to_owned(),
        },
        replica: 0,
        replays: None,
        observed: None,
    }
}

pub(super) fn rejected(name: &str, signer: Signer, reason: Reason) -> Probe {
    Probe {
        name: name.to_owned(),
        signer,
        expect: Expect::Rejected(reason),
        replica: 0,
        replays: None,
        observed: None,
    }
}

impl Probe {
    /// Send it to replica `replica`.
    fn at(mut self, replica: usize) -> Probe {
        self.replica = replica;
        self
    }

    /// Make it the replay of probe `index` of the same step.
    fn replaying(mut self, index: usize) -> Probe {
        self.replays = Some(index);
        self
    }

    /// It carries an observe key's signature the gate counts as `result`.
    fn observed(mut self, result: Observed) -> Probe {
        self.observed = Some(result);
        self
    }
}

/// How a step puts its deployment in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// Start a new generation on the shared socket, wait for its `/readyz`, then SIGTERM the
    /// generation before it. The client switches while both serve, or (`client_first`) before
    /// the new one starts, when only a signing mode both accept avoids a gap.
    Redeploy { client_first: bool },
    /// Publish a new version of the mounted Secret; the running gate reloads it, on the file
    /// change or (`hangup`) on SIGHUP sent right after the update. The client switches once
    /// the reload is in force.
    SecretUpdate { hangup: bool },
    /// Start two replicas on ports of their own, sharing a Redis the drill starts; the client
    /// then sends round-robin to them, and the generation on the shared socket is drained.
    Replicas,
    /// Change nothing: a window in which the operator watches before the next step.
    Hold,
}

/// One change of the gate within a phase.
#[derive(Debug, Clone)]
pub(super) struct Step {
    /// What the change does, for the check names.
    pub(super) label: &'static str,
    pub(super) change: Change,
    /// The gate configuration once the change is in force.
    pub(super) deployment: Deployment,
    /// How the client signs once this step is in force.
    pub(super) client: Signer,
    /// The key id the client's requests verify as on this deployment.
    pub(super) client_key: String,
    /// Whether each of the client's requests also carries a valid signature of an observe key
    /// in force (counted `valid` in `sig_gate_identity_observed_total`).
    pub(super) client_observed: bool,
    pub(super) probes: Vec<Probe>,
    /// Share of the phase's time spent on this step, in percent.
    pub(super) share: u32,
}

#[derive(Debug, Clone)]
pub(super) struct Phase {
    pub(super) name: &'static str,
    pub(super) client: String,
    pub(super) steps: Vec<Step>,
}

/// The runbook's rotation three ways, redeploys (phases 1-5), Secret updates reloaded by one
/// gate (6-10), two replicas sharing Redis (11); then the migration to the caller's own
/// Ed25519 key (12-16).
pub(super) fn plan(names: &Names) -> Vec<Phase> {
    let mut phases = rotation(names);
    phases.extend(migration(names));
    phases
}

/// A step that does not observe: every step but the migration's observe stage.
fn step(
    label: &'static str,
    change: Change,
    deployment: Deployment,
    client: Signer,
    client_key: &str,
    probes: Vec<Probe>,
    share: u32,
) -> Step {
    Step {
        label,
        change,
        deployment,
        client,
        client_key: client_key.to_owned(),
        client_observed: false,
        probes,
        share,
    }
}

fn rotation(names: &Names) -> Vec<Phase> {
    let (old, new) = (&names.old, &names.new);
    let env = |current: &Credential, previous: Option<&Credential>, strict: bool| Deployment::Env {
        current: current.clone(),
        previous: previous.cloned(),
        strict,
    };
    let old_only = env(old, None, false);
    let overlap = env(new, Some(old), false);
    let overlap_strict = env(new, Some(old), true);
    let retired = env(new, None, true);
    let mounted = |keys: &[&Credential], redis: bool| Deployment::Mounted {
        keys: keys.iter().map(|key| (*key).clone()).collect(),
        redis,
    };
    let dual = new.dual_signer(old);
    let (k1, k2) = (old.key_id(), new.key_id());
    let old_k1 = || old.signer();
    let new_k2 = || new.signer();
    let old_as_k2 = || old.relabelled(k2).signer();
    let new_as_k1 = || new.relabelled(k1).signer();
    let old_v2 = || old.signer_v2(AUDIENCE);
    let new_v2 = || new.signer_v2(AUDIENCE);
    let dual_v2 = || new.dual_signer_v2(old, AUDIENCE);
    let old_as_k2_v2 = || old.relabelled(k2).signer_v2(AUDIENCE);
    // The overlap on registry keys (phases 7 and 8): both keys accepted, each bound to its id.
    let both_keys_bound_v2 = || {
        vec![
            accepted("old-signed (k1)", old_v2(), k1),
            accepted("new-signed (k2)", new_v2(), k2),
            accepted("dual-signed (k2+k1)", dual_v2(), k2),
            rejected(
                "old secret labelled k2 (key ids bound, as with strict key ids)",
                old_as_k2_v2(),
                Reason::BadSignature,
            ),
            rejected(
                "new secret labelled k1",
                new.relabelled(k1).signer_v2(AUDIENCE),
                Reason::BadSignature,
            ),
            rejected(
                "new secret, unknown key id k9",
                new.relabelled("k9").signer_v2(AUDIENCE),
                Reason::UnknownKeyId,
            ),
        ]
    };
    let redeploy = Change::Redeploy {
        client_first: false,
    };
    let file_change = Change::SecretUpdate { hangup: false };
    let hangup = Change::SecretUpdate { hangup: true };

    vec![
        Phase {
            name: "1 current state",
            client: format!("signs with old ({k1})"),
            steps: vec![step(
                "deploy SECRET=old",
                redeploy,
                old_only.clone(),
                old_k1(),
                k1,
                vec![
                    accepted("old-signed (k1)", old_k1(), k1),
                    rejected("new-signed (k2)", new_k2(), Reason::BadSignature),
                ],
                100,
            )],
        },
        Phase {
            name: "2 overlap",
            client: format!("dual-signs new ({k2}) + old ({k1}), switched while both gates serve"),
            steps: vec![step(
                "redeploy into the overlap",
                redeploy,
                overlap.clone(),
                dual.clone(),
                k2,
                vec![
                    accepted("old-signed (k1)", old_k1(), k1),
                    accepted("new-signed (k2)", new_k2(), k2),
                    accepted("dual-signed (k2+k1)", dual.clone(), k2),
                    accepted("old secret labelled k2 (strict off)", old_as_k2(), k1),
                    rejected(
                        "signed with an unknown secret",
                        names.stranger.signer(),
                        Reason::BadSignature,
                    ),
                ],
                100,
            )],
        },
        Phase {
            name: "3 overlap, strict key ids",
            client: format!("dual-signs new ({k2}) + old ({k1})"),
            steps: vec![step(
                "redeploy with INTERSERVICE_HMAC_STRICT_KEY_ID=true",
                redeploy,
                overlap_strict,
                dual.clone(),
                k2,
                vec![
                    accepted("new-signed (k2)", new_k2(), k2),
                    accepted("old-signed (k1)", old_k1(), k1),
                    accepted("dual-signed (k2+k1)", dual.clone(), k2),
                    rejected(
                        "old secret mislabelled k2",
                        old_as_k2(),
                        Reason::BadSignature,
                    ),
                    rejected(
                        "new secret mislabelled k1",
                        new_as_k1(),
                        Reason::BadSignature,
                    ),
                    rejected(
                        "new secret, unknown key id k9",
                        new.relabelled("k9").signer(),
                        Reason::UnknownKeyId,
                    ),
                ],
                100,
            )],
        },
        Phase {
            name: "4 retirement",
            client: format!("signs with new ({k2}) only, switched while both gates serve"),
            steps: vec![step(
                "redeploy with SECRET_PREV unset",
                redeploy,
                retired,
                new_k2(),
                k2,
                vec![
                    accepted("new-signed (k2)", new_k2(), k2),
                    rejected("old-signed (k1)", old_k1(), Reason::UnknownKeyId),
                    rejected("old secret labelled k2", old_as_k2(), Reason::BadSignature),
                    accepted("dual-signed (a client not yet switched)", dual.clone(), k2),
                ],
                100,
            )],
        },
        Phase {
            name: "5 rollback rehearsal",
            client: format!("dual-signs again in the overlap, then signs with old ({k1}) only"),
            steps: vec![
                step(
                    "redeploy back into the overlap",
                    redeploy,
                    overlap,
                    dual.clone(),
                    k2,
                    vec![
                        accepted("old-signed (k1)", old_k1(), k1),
                        accepted("new-signed (k2)", new_k2(), k2),
                    ],
                    40,
                ),
                step(
                    "roll back to SECRET=old",
                    redeploy,
                    old_only,
                    old_k1(),
                    k1,
                    vec![
                        accepted("old-signed (k1)", old_k1(), k1),
                        rejected("new-signed (k2)", new_k2(), Reason::BadSignature),
                        accepted("dual-signed (a client not yet rolled back)", dual, k1),
                    ],
                    60,
                ),
            ],
        },
        Phase {
            name: "6 keys in a mounted Secret",
            client: format!(
                "signs version 2 with old ({k1}), switched before the handover (both gates \
                 accept it)"
            ),
            steps: vec![step(
                "redeploy onto the mounted Secret (the gate of phases 6-10)",
                Change::Redeploy { client_first: true },
                mounted(&[old], false),
                old_v2(),
                k1,
                vec![
                    accepted("old-signed, version 2 (k1)", old_v2(), k1),
                    rejected(
                        "new-signed, version 2 (k2, not in the Secret yet)",
                        new_v2(),
                        Reason::UnknownKeyId,
                    ),
                    rejected(
                        "old-signed, version 1 (registry keys take version 2 only)",
                        old_k1(),
                        Reason::BadSignature,
                    ),
                    rejected(
                        "unknown secret labelled k1",
                        names.stranger.relabelled(k1).signer_v2(AUDIENCE),
                        Reason::BadSignature,
                    ),
                ],
                100,
            )],
        },
        Phase {
            name: "7 overlap by Secret update",
            client: format!(
                "dual-signs version 2 with new ({k2}) + old ({k1}), switched once the gate \
                 reloaded"
            ),
            steps: vec![step(
                "Secret update adds k2 (reloaded on the file change)",
                file_change,
                mounted(&[old, new], false),
                dual_v2(),
                k2,
                both_keys_bound_v2(),
                100,
            )],
        },
        Phase {
            name: "8 strict key ids by SIGHUP",
            client: format!("dual-signs version 2 with new ({k2}) + old ({k1})"),
            steps: vec![step(
                "no key changes: registry keys are bound to their ids already (SIGHUP re-reads \
                 the same Secret)",
                hangup,
                mounted(&[old, new], false),
                dual_v2(),
                k2,
                both_keys_bound_v2(),
                100,
            )],
        },
        Phase {
            name: "9 retirement by Secret update",
            client: format!(
                "signs version 2 with new ({k2}) only, switched once the gate reloaded"
            ),
            steps: vec![step(
                "Secret update removes k1's entry and its secret file (reloaded on the file \
                 change)",
                file_change,
                mounted(&[new], false),
                new_v2(),
                k2,
                vec![
                    accepted("new-signed (k2)", new_v2(), k2),
                    rejected("old-signed (k1)", old_v2(), Reason::UnknownKeyId),
                    rejected(
                        "old secret labelled k2",
                        old_as_k2_v2(),
                        Reason::BadSignature,
                    ),
                    accepted("dual-signed (a client not yet switched)", dual_v2(), k2),
                ],
                100,
            )],
        },
        Phase {
            name: "10 rollback rehearsal by Secret updates",
            client: format!(
                "dual-signs version 2 again once k1 is back, then signs with old ({k1}) only"
            ),
            steps: vec![
                step(
                    "Secret update puts k1 back beside k2, then SIGHUP",
                    hangup,
                    mounted(&[old, new], false),
                    dual_v2(),
                    k2,
                    vec![
                        accepted("old-signed (k1)", old_v2(), k1),
                        accepted("new-signed (k2)", new_v2(), k2),
                    ],
                    40,
                ),
                step(
                    "Secret update rolls back to k1 alone, then SIGHUP",
                    hangup,
                    mounted(&[old], false),
                    old_v2(),
                    k1,
                    vec![
                        accepted("old-signed (k1)", old_v2(), k1),
                        rejected("new-signed (k2)", new_v2(), Reason::UnknownKeyId),
                        accepted("dual-signed (a client not yet rolled back)", dual_v2(), k1),
                    ],
                    60,
                ),
            ],
        },
        Phase {
            name: "11 two replicas sharing Redis",
            client: format!("signs version 2 with old ({k1}), round-robin to the two replicas"),
            steps: vec![step(
                "two replicas with GATE_REPLAY_STORE on one Redis",
                Change::Replicas,
                mounted(&[old], true),
                old_v2(),
                k1,
                vec![
                    accepted("old-signed, sent to replica A", old_v2(), k1).at(0),
                    rejected(
                        "the same request replayed to replica B",
                        old_v2(),
                        Reason::ReplayedNonce,
                    )
                    .at(1)
                    .replaying(0),
                    accepted("old-signed, sent to replica B", old_v2(), k1).at(1),
                    rejected(
                        "the same request replayed to replica A",
                        old_v2(),
                        Reason::ReplayedNonce,
                    )
                    .at(0)
                    .replaying(2),
                ],
                100,
            )],
        },
    ]
}

/// The migration of docs/operations.md ("Migrating to per-service Ed25519 identity") for the
/// caller `langgraph`: from the shared secret `s1` to its own Ed25519 key, observed first,
/// then enforced, then the shared secret retired.
fn migration(names: &Names) -> Vec<Phase> {
    let (shared, identity, impostor) = (&names.shared, &names.identity, &names.impostor);
    let (s1, ed) = (shared.key_id(), identity.key_id());
    let identity_deployment =
        |shared: Option<&Credential>, observe: Option<Observe>| Deployment::Identity {
            shared: shared.cloned(),
            keys: observe
                .map(|observe| (identity.clone(), observe))
                .into_iter()
                .collect(),
        };
    let shared_v1 = || shared.signer();
    let shared_v2 = || shared.signer_v2(AUDIENCE);
    // What GATE_SIGNING_KEY_ID/_FILE (the shared secret) with GATE_OBSERVE_KEY_ID/_FILE (the
    // caller's Ed25519 key) sign: the shared signature first, the observe one beside it.
    let dual = || shared_v2().also_signing_with(identity.signing_key());
    let dual_impostor = || shared_v2().also_signing_with(impostor.signing_key());
    let ed_v2 = || identity.signer_v2(AUDIENCE);
    let impostor_v2 = || impostor.signer_v2(AUDIENCE);
    let observing = identity_deployment(Some(shared), Some(Observe::Observed));
    let enforcing = identity_deployment(Some(shared), Some(Observe::Enforced));

    vec![
        Phase {
            name: "12 migration: shared secret, registry on the gate",
            client: format!(
                "signs version 1 with the shared secret ({s1}), moved from the replicas to the \
                 new gate"
            ),
            steps: vec![step(
                "redeploy with the shared secret, GATE_AUDIENCE and an empty registry in a \
                 mounted Secret (the gate of phases 12-15)",
                Change::Redeploy {
                    client_first: false,
                },
                identity_deployment(Some(shared), None),
                shared_v1(),
                s1,
                vec![
                    accepted("shared-signed, version 1 (s1)", shared_v1(), s1),
                    accepted("shared-signed, version 2 (s1)", shared_v2(), s1),
                    rejected(
                        "signed with the caller's Ed25519 key (not in the registry yet)",
                        ed_v2(),
                        Reason::UnknownKeyId,
                    ),
                ],
                100,
            )],
        },
        Phase {
            name: "13 migration: Ed25519 key observed",
            client: format!(
                "dual-signs version 2: shared ({s1}) + its Ed25519 key ({ed}) as the observe \
                 signature, switched once the gate reloaded"
            ),
            steps: vec![Step {
                client_observed: true,
                ..step(
                    "Secret update adds the caller's public key with observe = true (reloaded \
                     on the file change)",
                    Change::SecretUpdate { hangup: false },
                    observing.clone(),
                    dual(),
                    s1,
                    vec![
                        accepted("dual-signed (s1 + observed ed25519)", dual(), s1)
                            .observed(Observed::Valid),
                        accepted(
                            "shared-signed, version 1 (a caller not yet dual-signing)",
                            shared_v1(),
                            s1,
                        ),
                        rejected(
                            "signed with the observed key alone (observe never grants access)",
                            ed_v2(),
                            Reason::BadSignature,
                        )
                        .observed(Observed::Valid),
                        accepted(
                            "dual-signed with a wrong Ed25519 key under the caller's key id",
                            dual_impostor(),
                            s1,
                        )
                        .observed(Observed::Invalid),
                    ],
                    100,
                )
            }],
        },
        Phase {
            name: "14 migration: observe shows only valid",
            client: format!("dual-signs version 2: shared ({s1}) + observed Ed25519 ({ed})"),
            steps: vec![Step {
                client_observed: true,
                ..step(
                    "no change: the window an operator watches before enforcing",
                    Change::Hold,
                    observing,
                    dual(),
                    s1,
                    vec![
                        accepted("dual-signed (s1 + observed ed25519)", dual(), s1)
                            .observed(Observed::Valid),
                    ],
                    100,
                )
            }],
        },
        Phase {
            name: "15 migration: Ed25519 key enforced",
            client: format!(
                "signs version 2 with its Ed25519 key ({ed}) alone, switched once the gate \
                 reloaded"
            ),
            steps: vec![step(
                "Secret update removes observe = true, then SIGHUP",
                Change::SecretUpdate { hangup: true },
                enforcing,
                ed_v2(),
                ed,
                vec![
                    accepted("Ed25519-signed (lg-ed1)", ed_v2(), ed),
                    accepted(
                        "dual-signed (a caller not yet switched: the shared signature comes \
                         first)",
                        dual(),
                        s1,
                    ),
                    accepted(
                        "shared-signed, version 1 (not retired yet)",
                        shared_v1(),
                        s1,
                    ),
                    rejected(
                        "a wrong Ed25519 key under the caller's key id",
                        impostor_v2(),
                        Reason::BadSignature,
                    ),
                ],
                100,
            )],
        },
        Phase {
            name: "16 migration: shared secret retired",
            client: format!("signs version 2 with its Ed25519 key ({ed}) alone"),
            steps: vec![step(
                "redeploy without INTERSERVICE_HMAC_SECRET (a variable: a rollout)",
                Change::Redeploy {
                    client_first: false,
                },
                identity_deployment(None, Some(Observe::Enforced)),
                ed_v2(),
                ed,
                vec![
                    accepted("Ed25519-signed (lg-ed1)", ed_v2(), ed),
                    accepted(
                        "dual-signed (s1 + ed25519: s1 is unknown now, lg-ed1 admits)",
                        dual(),
                        ed,
                    ),
                    rejected(
                        "shared-signed, version 1",
                        shared_v1(),
                        Reason::BadSignature,
                    ),
                    rejected(
                        "shared-signed, version 2",
                        shared_v2(),
                        Reason::UnknownKeyId,
                    ),
                ],
                100,
            )],
        },
    ]
}
