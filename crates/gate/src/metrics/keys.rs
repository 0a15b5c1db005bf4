//! The series of the keys in force: `sig_gate_verified_key_total{caller,key_id,alg}`,
//! `sig_gate_identity_observed_total{caller,key_id,result}`, `sig_gate_key_info{caller,key_id,
//! alg,observe,fingerprint}`, and `sig_gate_reload_total{result}`; and, as the keys change,
//! `sig_gate_config_info`.
//!
//! [`Metrics::install_keys`] runs at start-up and after every successful reload, on the
//! reload path only: it resolves a [`KeyCounters`] per key (so the request path counts with
//! one atomic add), starts the series of new keys at 0, keeps those of keys still in force,
//! and removes those of keys gone.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::{Metrics, bool_label};
use crate::keyring::{Key, Keyring};

/// How a reload ended: `sig_gate_reload_total{result}`.
const RELOAD_RESULTS: [&str; 2] = ["ok", "error"];

/// The vectors, and the label sets installed now (to remove on the next install).
#[derive(Debug, Clone)]
pub(super) struct KeySeries {
    verified: IntCounterVec,
    observed: IntCounterVec,
    info: IntGaugeVec,
    reloads: [IntCounter; 2],
    installed: Arc<Mutex<Installed>>,
}

/// Label values of every series installed for the keys in force.
#[derive(Debug, Default)]
struct Installed {
    verified: HashSet<[String; 3]>,
    observed: HashSet<[String; 3]>,
    info: HashSet<[String; 5]>,
}

/// One key's counters, resolved when the key was installed. Every key has both observed
/// series, at 0 for a key that is not `observe` (so the family is exported whatever the keys,
/// as `deploy/metrics.txt` lists it); only an observe key's signatures are ever counted there.
#[derive(Debug, Clone)]
pub struct KeyCounters {
    admitted: IntCounter,
    /// `valid`, then `invalid`.
    observed: [IntCounter; 2],
}

impl KeyCounters {
    /// Count one request this key admitted.
    pub fn admitted(&self) {
        self.admitted.inc();
    }

    /// Count one signature of this (observe) key, valid or not.
    pub fn observed(&self, valid: bool) {
        let [valid_count, invalid_count] = &self.observed;
        if valid { valid_count } else { invalid_count }.inc();
    }
}

impl KeySeries {
    pub(super) fn register(registry: &Registry) -> KeySeries {
        const VALID: &str = "metric definitions are static and unique";
        let verified = IntCounterVec::new(
            Opts::new(
                "sig_gate_verified_key_total",
                "Requests admitted by each key in force (observe keys included, at 0).",
            ),
            &["caller", "key_id", "alg"],
        )
        .expect(VALID);
        let observed = IntCounterVec::new(
            Opts::new(
                "sig_gate_identity_observed_total",
                "Signatures of observe keys, checked and counted without granting access.",
            ),
            &["caller", "key_id", "result"],
        )
        .expect(VALID);
        let info = IntGaugeVec::new(
            Opts::new(
                "sig_gate_key_info",
                "Each key in force; secrets and public keys appear only as fingerprints.",
            ),
            &["caller", "key_id", "alg", "observe", "fingerprint"],
        )
        .expect(VALID);
        let reload = IntCounterVec::new(
            Opts::new(
                "sig_gate_reload_total",
                "Key reloads (SIGHUP or a changed key file), by result.",
            ),
            &["result"],
        )
        .expect(VALID);
        for collector in [
            Box::new(verified.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(observed.clone()),
            Box::new(info.clone()),
            Box::new(reload.clone()),
        ] {
            registry.register(collector).expect(VALID);
        }
        let reloads = RELOAD_RESULTS.map(|result| reload.with_label_values(&[result]));
        KeySeries {
            verified,
            observed,
            info,
            reloads,
            installed: Arc::default(),
        }
    }
}

impl Metrics {
    /// Install the series of `keyring`'s keys (and its `sig_gate_config_info`), removing those
    /// of keys no longer in force; the counters of each key, in [`Keyring::keys`] order.
    pub fn install_keys(&self, keyring: &Keyring) -> Vec<KeyCounters> {
        let series = &self.keys;
        // Only start-up and the reload task install keys; a poisoned lock held label sets only.
        let mut installed = series
            .installed
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut now = Installed::default();
        let counters = keyring
            .keys()
            .iter()
            .map(|key| {
                let labels = [key.caller(), key.id(), key.algorithm().as_str()];
                now.verified.insert(labels.map(str::to_owned));
                let admitted = series.verified.with_label_values(&labels);
                let observed = ["valid", "invalid"].map(|result| {
                    let labels = [key.caller(), key.id(), result];
                    now.observed.insert(labels.map(str::to_owned));
                    series.observed.with_label_values(&labels)
                });
                let info = info_labels(key);
                series
                    .info
                    .with_label_values(&info.each_ref().map(String::as_str))
                    .set(1);
                now.info.insert(info);
                KeyCounters { admitted, observed }
            })
            .collect();
        // Removal fails only for a label set that is not there: nothing to remove then.
        for gone in installed.verified.difference(&now.verified) {
            let _ = series
                .verified
                .remove_label_values(&gone.each_ref().map(String::as_str));
        }
        for gone in installed.observed.difference(&now.observed) {
            let _ = series
                .observed
                .remove_label_values(&gone.each_ref().map(String::as_str));
        }
        for gone in installed.info.difference(&now.info) {
            let _ = series
                .info
                .remove_label_values(&gone.each_ref().map(String::as_str));
        }
        *installed = now;
        drop(installed);
        self.show_config_info(keyring);
        counters
    }

    /// Count one reload, successful or not.
    pub fn reload(&self, ok: bool) {
        self.keys.reloads[usize::from(!ok)].inc();
    }

    /// Set `sig_gate_config_info` for `keyring`: the new series first, then the old one
    /// removed, so a scrape never finds none.
    fn show_config_info(&self, keyring: &Keyring) {
        let info = &self.config_info;
        let label = |key: Option<&Key>, text: fn(&Key) -> String| key.map(text).unwrap_or_default();
        let labels = vec![
            keyring.mode().to_owned(),
            bool_label(keyring.strict_key_id()).to_owned(),
            info.require_signature.to_owned(),
            label(keyring.current(), |k| k.id().to_owned()),
            label(keyring.previous(), |k| k.id().to_owned()),
            label(keyring.current(), |k| k.fingerprint().to_string()),
            label(keyring.previous(), |k| k.fingerprint().to_string()),
            info.replay_store.to_owned(),
        ];
        fn as_strs(labels: &[String]) -> Vec<&str> {
            labels.iter().map(String::as_str).collect()
        }
        info.gauge.with_label_values(&as_strs(&labels)).set(1);
        let mut shown = info
            .shown
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if !shown.is_empty() && *shown != labels {
            let _ = info.gauge.remove_label_values(&as_strs(&shown));
        }
        *shown = labels;
    }
}

/// `sig_gate_key_info`'s labels for `key`.
fn info_labels(key: &Key) -> [String; 5] {
    [
        key.caller().to_owned(),
        key.id().to_owned(),
        key.algorithm().as_str().to_owned(),
        bool_label(key.observe()).to_owned(),
        key.fingerprint().to_string(),
    ]
}
