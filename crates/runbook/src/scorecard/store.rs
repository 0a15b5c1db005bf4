//! The scorecard's replay store scenarios: two gate replicas recording nonces in one real
//! `redis-server` (`GATE_REPLAY_STORE=redis://...`). A request accepted by one replica replayed
//! to the other, a replay sent to a replica restarted since, and the store killed and started
//! again under signed requests.
//!
//! The server is started for the run on a free loopback port ([`crate::redis`]); without
//! `redis-server` installed every scenario here fails, saying to run
//! `scripts/install-redis.sh`. Starting and killing it block a thread for a moment, so they run
//! through [`tokio::task::block_in_place`] (the scorecard's runtime is multi-threaded).

use std::time::{Duration, Instant};

use super::{Field, answer, grew, invalid, reached};
use crate::client::Call;
use crate::exposition::Scrape;
use crate::process::{GateEnv, GateProcess};
use crate::redis::RedisServer;
use crate::{Check, HarnessError};
use gate::config::vars;
use gate::verify::Reason;

/// `GATE_REPLAY_STORE_TIMEOUT_MS` of the replicas: well above a loopback round trip on a busy
/// machine, so a legitimate request never fails for a slow answer; a dead store refuses the
/// connection at once anyway.
const BUDGET_MS: u64 = 1000;
/// How long the replicas may take to pass requests again once the store is back (they
/// reconnect by themselves; the probe runs every second).
const RECOVER_WITHIN: Duration = Duration::from_secs(15);
/// Signed requests sent while the store is down.
const DURING_OUTAGE: usize = 3;
/// `sig_gate_replay_store_up`.
const UP: &str = "sig_gate_replay_store_up";

/// The store and the replicas only these scenarios use.
struct Replicas {
    redis: RedisServer,
    env: GateEnv,
    a: GateProcess,
    b: GateProcess,
}

impl Replicas {
    async fn start(field: &Field) -> Result<Replicas, HarnessError> {
        let redis = tokio::task::block_in_place(|| RedisServer::start(&[]))?;
        let env = GateEnv::new(&field.upstream.url())
            .current(&field.new)
            .set(vars::REPLAY_STORE, redis.url())
            .set(vars::REPLAY_STORE_TIMEOUT_MS, BUDGET_MS.to_string());
        let launcher = &field.launcher;
        let (a, b) = tokio::join!(
            launcher.start_running("replica A (Redis store)", &env, None),
            launcher.start_running("replica B (Redis store)", &env, None),
        );
        let (a, b) = (a?, b?);
        for gate in [&a, &b] {
            gate.wait_ready(Duration::from_secs(10)).await?;
        }
        Ok(Replicas { redis, env, a, b })
    }
}

const CROSS_REPLICA: &str = "replay to another replica sharing the store";
const AFTER_RESTART: &str = "replay after a gate restart";
const OUTAGE: &str = "replay store down, then back";

/// Every replay store scenario's name, in the order they are played.
const NAMES: [&str; 3] = [CROSS_REPLICA, AFTER_RESTART, OUTAGE];

/// Play every replay store scenario, handing each verdict to `record` under its name; when
/// Redis or the replicas do not start, every scenario fails with that error.
pub(super) async fn play(
    field: &Field,
    record: &mut impl FnMut(&str, Result<Vec<Check>, HarnessError>),
) {
    let mut replicas = match Replicas::start(field).await {
        Ok(replicas) => replicas,
        Err(err) => {
            for name in NAMES {
                record(name, Err(err.clone()));
            }
            return;
        }
    };
    record(CROSS_REPLICA, cross_replica(field, &replicas).await);
    record(AFTER_RESTART, after_restart(field, &mut replicas).await);
    record(OUTAGE, outage(field, &mut replicas).await);
}

/// `sig_gate_replay_store_up` and its value, as text.
fn up(scrape: &Scrape) -> String {
    let value = scrape
        .value(UP, &[])
        .map_or("absent".to_owned(), |v| format!("{v}"));
    format!("replay_store_up {value}")
}

/// Accepted by replica A, the same request to replica B is `replayed_nonce`: B learnt the
/// nonce from the store, not from its own memory.
async fn cross_replica(field: &Field, replicas: &Replicas) -> Result<Vec<Check>, HarnessError> {
    let call = Call::signed_post("/game/store-cross-replica", &field.new.signer());
    let at_a = field.http.call(replicas.a.proxy_addr(), &call).await?;
    let before = replicas.b.scrape().await?;
    let at_b = field.http.call(replicas.b.proxy_addr(), &call).await?;
    let after = replicas.b.scrape().await?;
    Ok(vec![
        answer("at replica A", &at_a, "200"),
        answer("the same request at replica B", &at_b, "401 replayed_nonce"),
        invalid(&before, &after, Reason::ReplayedNonce, 1),
        reached(field, call.path(), 1, Some(field.new.key_id())),
    ])
}

/// Accepted by replica A, which is then stopped and started again (a rollout): the new process
/// has an empty memory, and still refuses the replay, from the store.
async fn after_restart(field: &Field, replicas: &mut Replicas) -> Result<Vec<Check>, HarnessError> {
    let call = Call::signed_post("/game/store-restart", &field.new.signer());
    let first = field.http.call(replicas.a.proxy_addr(), &call).await?;
    let code = replicas.a.stop(Duration::from_secs(10)).await?;
    replicas.a = field
        .launcher
        .start_running("replica A, restarted", &replicas.env, None)
        .await?;
    replicas.a.wait_ready(Duration::from_secs(10)).await?;
    let before = replicas.a.scrape().await?;
    let replay = field.http.call(replicas.a.proxy_addr(), &call).await?;
    let after = replicas.a.scrape().await?;
    let fresh = Call::signed_post("/game/store-restart-fresh", &field.new.signer());
    let fresh_reply = field.http.call(replicas.a.proxy_addr(), &fresh).await?;
    Ok(vec![
        answer("before the restart", &first, "200"),
        Check::equal(
            "replica A stopped",
            "replica A exit 0".to_owned(),
            code.map_or("replica A killed by a signal".to_owned(), |c| {
                format!("replica A exit {c}")
            }),
        ),
        answer(
            "the same request after the restart",
            &replay,
            "401 replayed_nonce",
        ),
        invalid(&before, &after, Reason::ReplayedNonce, 1),
        reached(field, call.path(), 1, Some(field.new.key_id())),
        answer("a fresh request after the restart", &fresh_reply, "200"),
    ])
}

/// Redis killed: every signed request is refused with 503 `replay store unavailable`, counted,
/// nothing forwarded, and `sig_gate_replay_store_up` reads 0; the gate stays ready. Redis
/// started again on its port: requests pass again on the same gate process, and the gauge
/// reads 1.
async fn outage(field: &Field, replicas: &mut Replicas) -> Result<Vec<Check>, HarnessError> {
    let gate = &replicas.b;
    let addr = gate.proxy_addr();
    let signer = field.new.signer();
    tokio::task::block_in_place(|| replicas.redis.kill());
    let before = gate.scrape().await?;
    let path = "/game/store-outage";
    let mut refused = Vec::new();
    for _ in 0..DURING_OUTAGE {
        let started = Instant::now();
        let reply = field
            .http
            .call(addr, &Call::signed_post(path, &signer))
            .await?;
        refused.push((reply, started.elapsed()));
    }
    let during = gate.scrape().await?;
    let ready = gate.probe("/readyz").await;

    tokio::task::block_in_place(|| replicas.redis.restart(None))?;
    let started = Instant::now();
    let recovered = Call::signed_post("/game/store-recovered", &signer);
    let mut attempts = 0;
    let back = loop {
        attempts += 1;
        // A fresh signature each time: a refused attempt may have recorded its nonce.
        let call = Call::signed_post(recovered.path(), &signer);
        let reply = field.http.call(addr, &call).await?;
        if reply.status == 200 || started.elapsed() > RECOVER_WITHIN {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = started.elapsed();
    // The probe runs every second: the gauge follows within a few.
    let mut after = gate.scrape().await?;
    while after.value(UP, &[]) != Some(1.0) && started.elapsed() < RECOVER_WITHIN {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = gate.scrape().await?;
    }

    let unavailable = "503 replay store unavailable";
    let answers: Vec<String> = refused.iter().map(|(r, _)| r.summary()).collect();
    let slowest = refused
        .iter()
        .map(|(_, took)| *took)
        .max()
        .unwrap_or_default();
    let budget = Duration::from_millis(BUDGET_MS) + Duration::from_millis(1500);
    let mut checks = vec![
        Check::equal(
            format!("{DURING_OUTAGE} signed requests while Redis is down"),
            [unavailable; DURING_OUTAGE].join(", "),
            answers.join(", "),
        ),
        Check::new(
            "refused within the store budget",
            format!("each answered in < {} ms", budget.as_millis()),
            format!("slowest in {} ms", slowest.as_millis()),
            slowest < budget,
        ),
        grew(
            &before,
            &during,
            "sig_gate_rejected_other_total",
            ("reason", "replay_store_unavailable"),
            DURING_OUTAGE as i64,
        ),
        reached(field, path, 0, None),
        Check::equal(
            format!("{UP} while down"),
            "replay_store_up 0".to_owned(),
            up(&during),
        ),
        Check::equal(
            "gate /readyz while the store is down",
            "/readyz 200".to_owned(),
            ready.map_or_else(|e| e.to_string(), |s| format!("/readyz {s}")),
        ),
    ];
    checks.extend([
        Check::new(
            "after Redis is back, the same gate process",
            format!("back: 200 within {} ms", RECOVER_WITHIN.as_millis()),
            format!(
                "back: {} after {} ms ({attempts} attempts)",
                back.summary(),
                took.as_millis()
            ),
            back.status == 200,
        ),
        reached(field, recovered.path(), 1, Some(field.new.key_id())),
        Check::equal(
            format!("{UP} once back"),
            "replay_store_up 1".to_owned(),
            up(&after),
        ),
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
}
