#!/usr/bin/env bash
# Install Debian's redis-server (redis-server and redis-cli) when either is missing, for the
# replay store's tests (tests/replay_store.rs) and the scorecard's replay store scenarios, which
# start their own servers on loopback, and for `make bench`'s Redis row. Called by
# `make test-rust`, `make test-runbook` and bench/bench.sh; works as root on a fresh Debian
# machine with no stdin (CI=true).
#
# The package's maintainer scripts would start a system Redis on 127.0.0.1:6379: a policy-rc.d
# that denies every start prevents that while we install (removed again if we created it), and
# the service is disabled for the next boot. Only the tests' own servers may run.
set -euo pipefail

if command -v redis-server > /dev/null && command -v redis-cli > /dev/null; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
created_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# install-redis.sh: no service starts during this install\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    created_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
echo "installing Debian's redis-server (redis-server, redis-cli)"
apt-get update -qq
apt-get install -y -qq --no-install-recommends redis-server > /dev/null
if [ -d /run/systemd/system ]; then
    systemctl disable --now redis-server.service > /dev/null 2>&1 || true
elif command -v systemctl > /dev/null; then
    systemctl disable redis-server.service > /dev/null 2>&1 || true
fi
command -v redis-server > /dev/null && command -v redis-cli > /dev/null
