//! The drill's plan: the phases of the runbook's rotation (the gate deployments, how each is
//! put in place, the client's signing modes and the probes), and the credentials they use.
//!
//! Phases 1-5 redeploy with the secrets in the environment, as the runbook says. Phases 6-8
//! do the rotation again without restarts: the keys live in a mounted Secret (a key registry
//! and one secret file per key, so key ids come from files too), one gate process serves all
//! three, and each step is a Secret update the gate reloads. Phase 9 runs two replicas that
//! share a Redis replay store.

use std::collections::BTreeMap;

use super::GRACE_SECS;
use crate::client::Credential;
use crate::process::GateEnv;
use gate::config::vars;
use gate::keyring::Slot;
use gate::sign::Signer;
use gate::verify::Reason;

/// `GATE_AUDIENCE` of every gate the drill starts: the version 2 signatures of phases 6-9 name
/// it, and the redeployed gates have it too so the client can switch to version 2 before the
/// handover to the mounted Secret.
pub(super) const AUDIENCE: &str = "sig-gate-drill";

/// The caller the registry's keys belong to (`X-Gate-Verified-Caller`).
pub(super) const CALLER: &str = "langgraph";

/// The registry's name in the mounted Secret.
pub(super) const REGISTRY: &str = "keys.toml";

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
    /// Keys in a mounted Secret: a registry entry and a secret file per key (version 2 only),
    /// no environment secret; the replay store in memory or, for replicas, on Redis.
    Mounted { keys: Vec<Credential>, redis: bool },
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
        }
    }

    /// The mounted Secret's files: the registry and one secret file per key, named by its id.
    /// Empty for [`Deployment::Env`].
    pub(super) fn files(&self) -> BTreeMap<String, String> {
        let Deployment::Mounted { keys, .. } = self else {
            return BTreeMap::new();
        };
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

    /// Whether the keys come from the mounted Secret.
    pub(super) fn mounted(&self) -> bool {
        matches!(self, Deployment::Mounted { .. })
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
        }
    }

    /// The registry's keys as `key_id -> fingerprint` (empty for [`Deployment::Env`]).
    pub(super) fn registry_keys(&self) -> BTreeMap<String, String> {
        match self {
            Deployment::Env { .. } => BTreeMap::new(),
            Deployment::Mounted { keys, .. } => keys
                .iter()
                .map(|key| (key.key_id().to_owned(), key.fingerprint()))
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
        }
    }
}

/// The run's credentials and the names the report gives their secrets.
#[derive(Debug)]
pub(super) struct Names {
    pub(super) old: Credential,
    pub(super) new: Credential,
    pub(super) stranger: Credential,
}

impl Names {
    pub(super) fn of(&self, credential: &Credential) -> &'static str {
        if credential.secret() == self.old.secret() {
            "old"
        } else if credential.secret() == self.new.secret() {
            "new"
        } else {
            "unknown"
        }
    }
}

/// What a probe must get.
#[derive(Debug, Clone)]
pub(super) enum Expect {
    /// 200, forwarded with `X-Gate-Verified-Key-Id: key_id` (and counted under that key's slot
    /// for the environment's secrets).
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
    }
}

pub(super) fn rejected(name: &str, signer: Signer, reason: Reason) -> Probe {
    Probe {
        name: name.to_owned(),
        signer,
        expect: Expect::Rejected(reason),
        replica: 0,
        replays: None,
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

/// The runbook's rotation three ways: redeploys (phases 1-5), Secret updates reloaded by one
/// gate (6-8), and two replicas sharing Redis (9).
pub(super) fn plan(names: &Names) -> Vec<Phase> {
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
    let redeploy = Change::Redeploy {
        client_first: false,
    };

    vec![
        Phase {
            name: "1 current state",
            client: format!("signs with old ({k1})"),
            steps: vec![Step {
                label: "deploy SECRET=old",
                change: redeploy,
                deployment: old_only.clone(),
                client: old_k1(),
                client_key: k1.to_owned(),
                probes: vec![
                    accepted("old-signed (k1)", old_k1(), k1),
                    rejected("new-signed (k2)", new_k2(), Reason::BadSignature),
                ],
                share: 100,
            }],
        },
        Phase {
            name: "2 overlap",
            client: format!("dual-signs new ({k2}) + old ({k1}), switched while both gates serve"),
            steps: vec![Step {
                label: "redeploy into the overlap",
                change: redeploy,
                deployment: overlap.clone(),
                client: dual.clone(),
                client_key: k2.to_owned(),
                probes: vec![
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
                share: 100,
            }],
        },
        Phase {
            name: "3 overlap, strict key ids",
            client: format!("dual-signs new ({k2}) + old ({k1})"),
            steps: vec![Step {
                label: "redeploy with INTERSERVICE_HMAC_STRICT_KEY_ID=true",
                change: redeploy,
                deployment: overlap_strict,
                client: dual.clone(),
                client_key: k2.to_owned(),
                probes: vec![
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
                share: 100,
            }],
        },
        Phase {
            name: "4 retirement",
            client: format!("signs with new ({k2}) only, switched while both gates serve"),
            steps: vec![Step {
                label: "redeploy with SECRET_PREV unset",
                change: redeploy,
                deployment: retired,
                client: new_k2(),
                client_key: k2.to_owned(),
                probes: vec![
                    accepted("new-signed (k2)", new_k2(), k2),
                    rejected("old-signed (k1)", old_k1(), Reason::UnknownKeyId),
                    rejected("old secret labelled k2", old_as_k2(), Reason::BadSignature),
                    accepted("dual-signed (a client not yet switched)", dual.clone(), k2),
                ],
                share: 100,
            }],
        },
        Phase {
            name: "5 rollback rehearsal",
            client: format!("dual-signs again in the overlap, then signs with old ({k1}) only"),
            steps: vec![
                Step {
                    label: "redeploy back into the overlap",
                    change: redeploy,
                    deployment: overlap,
                    client: dual.clone(),
                    client_key: k2.to_owned(),
                    probes: vec![
                        accepted("old-signed (k1)", old_k1(), k1),
                        accepted("new-signed (k2)", new_k2(), k2),
                    ],
                    share: 40,
                },
                Step {
                    label: "roll back to SECRET=old",
                    change: redeploy,
                    deployment: old_only,
                    client: old_k1(),
                    client_key: k1.to_owned(),
                    probes: vec![
                        accepted("old-signed (k1)", old_k1(), k1),
                        rejected("new-signed (k2)", new_k2(), Reason::BadSignature),
                        accepted("dual-signed (a client not yet rolled back)", dual, k1),
                    ],
                    share: 60,
                },
            ],
        },
        Phase {
            name: "6 keys in a mounted Secret",
            client: format!(
                "signs version 2 with old ({k1}), switched before the handover (both gates \
                 accept it)"
            ),
            steps: vec![Step {
                label: "redeploy onto the mounted Secret (the gate of phases 6-8)",
                change: Change::Redeploy { client_first: true },
                deployment: mounted(&[old], false),
                client: old_v2(),
                client_key: k1.to_owned(),
                probes: vec![
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
                share: 100,
            }],
        },
        Phase {
            name: "7 overlap by Secret update",
            client: format!(
                "dual-signs version 2 with new ({k2}) + old ({k1}), switched once the gate \
                 reloaded"
            ),
            steps: vec![Step {
                label: "Secret update adds k2 (reloaded on the file change)",
                change: Change::SecretUpdate { hangup: false },
                deployment: mounted(&[old, new], false),
                client: dual_v2(),
                client_key: k2.to_owned(),
                probes: vec![
                    accepted("old-signed (k1)", old_v2(), k1),
                    accepted("new-signed (k2)", new_v2(), k2),
                    accepted("dual-signed (k2+k1)", dual_v2(), k2),
                    rejected(
                        "old secret labelled k2 (key ids bound, as with strict key ids)",
                        old.relabelled(k2).signer_v2(AUDIENCE),
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
                ],
                share: 100,
            }],
        },
        Phase {
            name: "8 retirement by Secret update and SIGHUP",
            client: format!(
                "signs version 2 with new ({k2}) only, switched once the gate reloaded"
            ),
            steps: vec![Step {
                label: "Secret update removes k1, then SIGHUP",
                change: Change::SecretUpdate { hangup: true },
                deployment: mounted(&[new], false),
                client: new_v2(),
                client_key: k2.to_owned(),
                probes: vec![
                    accepted("new-signed (k2)", new_v2(), k2),
                    rejected("old-signed (k1)", old_v2(), Reason::UnknownKeyId),
                    rejected(
                        "old secret labelled k2",
                        old.relabelled(k2).signer_v2(AUDIENCE),
                        Reason::BadSignature,
                    ),
                    accepted("dual-signed (a client not yet switched)", dual_v2(), k2),
                ],
                share: 100,
            }],
        },
        Phase {
            name: "9 two replicas sharing Redis",
            client: format!("signs version 2 with new ({k2}), round-robin to the two replicas"),
            steps: vec![Step {
                label: "two replicas with GATE_REPLAY_STORE on one Redis",
                change: Change::Replicas,
                deployment: mounted(&[new], true),
                client: new_v2(),
                client_key: k2.to_owned(),
                probes: vec![
                    accepted("new-signed, sent to replica A", new_v2(), k2).at(0),
                    rejected(
                        "the same request replayed to replica B",
                        new_v2(),
                        Reason::ReplayedNonce,
                    )
                    .at(1)
                    .replaying(0),
                    accepted("new-signed, sent to replica B", new_v2(), k2).at(1),
                    rejected(
                        "the same request replayed to replica A",
                        new_v2(),
                        Reason::ReplayedNonce,
                    )
                    .at(0)
                    .replaying(2),
                ],
                share: 100,
            }],
        },
    ]
}
