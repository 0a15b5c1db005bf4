//! The drill's plan: the gate deployments, client signing modes and probes of the runbook's
//! five phases, and the credentials they use.

use std::collections::BTreeMap;

use super::GRACE_SECS;
use crate::client::Credential;
use crate::process::GateEnv;
use gate::config::vars;
use gate::keyring::Slot;
use gate::sign::Signer;
use gate::verify::Reason;

/// A gate configuration of the rotation: current secret, optional previous, strict key ids.
#[derive(Debug, Clone)]
pub(super) struct Deployment {
    current: Credential,
    pub(super) previous: Option<Credential>,
    strict: bool,
}

impl Deployment {
    pub(super) fn env(&self, upstream: &str) -> GateEnv {
        let env = GateEnv::new(upstream)
            .current(&self.current)
            .set(vars::STRICT_KEY_ID, self.strict.to_string())
            .set(vars::SHUTDOWN_GRACE_SECS, GRACE_SECS.to_string());
        match &self.previous {
            Some(previous) => env.previous(previous),
            None => env.without_previous(),
        }
    }

    /// `SECRET=new(k2) PREV=old(k1) STRICT=true`, with the harness's names for the secrets.
    pub(super) fn describe(&self, names: &Names) -> String {
        let mut text = format!(
            "SECRET={}({})",
            names.of(&self.current),
            self.current.key_id()
        );
        if let Some(previous) = &self.previous {
            text.push_str(&format!(
                " SECRET_PREV={}({})",
                names.of(previous),
                previous.key_id()
            ));
        }
        text.push_str(&format!(" STRICT_KEY_ID={}", self.strict));
        text
    }

    /// The `sig_gate_config_info` labels this deployment must report.
    pub(super) fn info(&self) -> BTreeMap<String, String> {
        let (key_id_prev, fingerprint_prev) = self
            .previous
            .as_ref()
            .map(|p| (p.key_id().to_owned(), p.fingerprint()))
            .unwrap_or_default();
        BTreeMap::from([
            (
                "mode".to_owned(),
                if self.previous.is_some() {
                    "dual"
                } else {
                    "single"
                }
                .to_owned(),
            ),
            ("strict_key_id".to_owned(), self.strict.to_string()),
            ("require_signature".to_owned(), "true".to_owned()),
            ("key_id".to_owned(), self.current.key_id().to_owned()),
            ("key_id_prev".to_owned(), key_id_prev),
            ("fingerprint".to_owned(), self.current.fingerprint()),
            ("fingerprint_prev".to_owned(), fingerprint_prev),
        ])
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
    /// 200, verified under `slot`, forwarded with `X-Gate-Verified-Key-Id: key_id`.
    Accepted { slot: Slot, key_id: String },
    /// 401 with this reason, never forwarded.
    Rejected(Reason),
}

/// A request signed one particular way, with the answer the phase requires.
#[derive(Debug, Clone)]
pub(super) struct Probe {
    pub(super) name: String,
    pub(super) signer: Signer,
    pub(super) expect: Expect,
}

pub(super) fn accepted(name: &str, signer: Signer, slot: Slot, key_id: &str) -> Probe {
    Probe {
        name: name.to_owned(),
        signer,
        expect: Expect::Accepted {
            slot,
            key_id: key_id.to_owned(),
        },
    }
}

pub(super) fn rejected(name: &str, signer: Signer, reason: Reason) -> Probe {
    Probe {
        name: name.to_owned(),
        signer,
        expect: Expect::Rejected(reason),
    }
}

/// One gate generation within a phase.
#[derive(Debug, Clone)]
pub(super) struct Step {
    /// What the redeploy does, for the check names.
    pub(super) label: &'static str,
    pub(super) deployment: Deployment,
    /// How the client signs once this generation serves.
    pub(super) client: Signer,
    /// The slot the client's signatures verify under on this generation.
    pub(super) client_slot: Slot,
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

/// The runbook's five phases.
pub(super) fn plan(names: &Names) -> Vec<Phase> {
    let (old, new) = (&names.old, &names.new);
    let old_only = Deployment {
        current: old.clone(),
        previous: None,
        strict: false,
    };
    let overlap = Deployment {
        current: new.clone(),
        previous: Some(old.clone()),
        strict: false,
    };
    let overlap_strict = Deployment {
        strict: true,
        ..overlap.clone()
    };
    let retired = Deployment {
        current: new.clone(),
        previous: None,
        strict: true,
    };
    let dual = new.dual_signer(old);
    let (k1, k2) = (old.key_id(), new.key_id());
    let old_k1 = || old.signer();
    let new_k2 = || new.signer();
    let old_as_k2 = || old.relabelled(k2).signer();
    let new_as_k1 = || new.relabelled(k1).signer();
    let single = |step: Step| vec![Step { share: 100, ..step }];

    vec![
        Phase {
            name: "1 current state",
            client: format!("signs with old ({k1})"),
            steps: single(Step {
                label: "deploy SECRET=old",
                deployment: old_only.clone(),
                client: old_k1(),
                client_slot: Slot::Current,
                probes: vec![
                    accepted("old-signed (k1)", old_k1(), Slot::Current, k1),
                    rejected("new-signed (k2)", new_k2(), Reason::BadSignature),
                ],
                share: 100,
            }),
        },
        Phase {
            name: "2 overlap",
            client: format!("dual-signs new ({k2}) + old ({k1}), switched while both gates serve"),
            steps: single(Step {
                label: "redeploy into the overlap",
                deployment: overlap.clone(),
                client: dual.clone(),
                client_slot: Slot::Current,
                probes: vec![
                    accepted("old-signed (k1)", old_k1(), Slot::Previous, k1),
                    accepted("new-signed (k2)", new_k2(), Slot::Current, k2),
                    accepted("dual-signed (k2+k1)", dual.clone(), Slot::Current, k2),
                    accepted(
                        "old secret labelled k2 (strict off)",
                        old_as_k2(),
                        Slot::Previous,
                        k1,
                    ),
                    rejected(
                        "signed with an unknown secret",
                        names.stranger.signer(),
                        Reason::BadSignature,
                    ),
                ],
                share: 100,
            }),
        },
        Phase {
            name: "3 overlap, strict key ids",
            client: format!("dual-signs new ({k2}) + old ({k1})"),
            steps: single(Step {
                label: "redeploy with INTERSERVICE_HMAC_STRICT_KEY_ID=true",
                deployment: overlap_strict,
                client: dual.clone(),
                client_slot: Slot::Current,
                probes: vec![
                    accepted("new-signed (k2)", new_k2(), Slot::Current, k2),
                    accepted("old-signed (k1)", old_k1(), Slot::Previous, k1),
                    accepted("dual-signed (k2+k1)", dual.clone(), Slot::Current, k2),
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
            }),
        },
        Phase {
            name: "4 retirement",
            client: format!("signs with new ({k2}) only, switched while both gates serve"),
            steps: single(Step {
                label: "redeploy with SECRET_PREV unset",
                deployment: retired,
                client: new_k2(),
                client_slot: Slot::Current,
                probes: vec![
                    accepted("new-signed (k2)", new_k2(), Slot::Current, k2),
                    rejected("old-signed (k1)", old_k1(), Reason::UnknownKeyId),
                    rejected("old secret labelled k2", old_as_k2(), Reason::BadSignature),
                    accepted(
                        "dual-signed (a client not yet switched)",
                        dual.clone(),
                        Slot::Current,
                        k2,
                    ),
                ],
                share: 100,
            }),
        },
        Phase {
            name: "5 rollback rehearsal",
            client: format!("dual-signs again in the overlap, then signs with old ({k1}) only"),
            steps: vec![
                Step {
                    label: "redeploy back into the overlap",
                    deployment: overlap,
                    client: dual.clone(),
                    client_slot: Slot::Current,
                    probes: vec![
                        accepted("old-signed (k1)", old_k1(), Slot::Previous, k1),
                        accepted("new-signed (k2)", new_k2(), Slot::Current, k2),
                    ],
                    share: 40,
                },
                Step {
                    label: "roll back to SECRET=old",
                    deployment: old_only,
                    client: old_k1(),
                    client_slot: Slot::Current,
                    probes: vec![
                        accepted("old-signed (k1)", old_k1(), Slot::Current, k1),
                        rejected("new-signed (k2)", new_k2(), Reason::BadSignature),
                        accepted(
                            "dual-signed (a client not yet rolled back)",
                            dual,
                            Slot::Current,
                            k1,
                        ),
                    ],
                    share: 60,
                },
            ],
        },
    ]
}
