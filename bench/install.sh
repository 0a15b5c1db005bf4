#!/usr/bin/env bash
# Install what the load benchmark needs, when missing: nginx, HAProxy and wrk from Debian's
# packages (their system services are kept from starting: the benchmark runs its own
# instances on loopback), and, with BENCH_OHA=1, oha from crates.io into bench/.tools (never
# onto the user's PATH). oha is optional, for a cross-check of the open-loop generator, and
# not built by default: on 2 CPUs its build takes about 7 minutes, more than the project's own,
# and held a new machine's first `make bench` over 25 minutes (bench/analysis.md). When it
# cannot be built the benchmark says so and carries on without it.
# usage: install.sh [packages|oha] (both when no argument: `bench.sh` runs the two apart, so
# that oha compiles while the project's own builds do)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="$here/.tools"
mkdir -p "$tools"
what="${1:-all}"
case "$what" in
    all | packages | oha) ;;
    *)
        echo "usage: $0 [packages|oha]" >&2
        exit 2
        ;;
esac

need=()
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v taskset >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
# oha, when it is to be built (BENCH_OHA=1), links the system's OpenSSL (below), which its
# build finds with pkg-config.
if [[ "${BENCH_OHA:-}" == 1 ]]; then
    if command -v pkg-config >/dev/null; then
        pkg-config --exists openssl || need+=(libssl-dev)
    else
        need+=(pkg-config libssl-dev)
    fi
fi
if [[ "$what" != oha ]] && ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "bench: missing ${need[*]}; run as root or install them" >&2
        exit 1
    fi
    echo "bench: installing ${need[*]} from Debian (system services kept stopped)"
    # policy-rc.d exit 101 = "action forbidden": invoke-rc.d starts no service on install.
    saved_policy=""
    if [[ -e /usr/sbin/policy-rc.d ]]; then
        saved_policy="$(mktemp)"
        cp -p /usr/sbin/policy-rc.d "$saved_policy"
    fi
    restore_policy() {
        if [[ -n "$saved_policy" ]]; then
            mv "$saved_policy" /usr/sbin/policy-rc.d
        else
            rm -f /usr/sbin/policy-rc.d
        fi
    }
    trap restore_policy EXIT
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    restore_policy
    trap - EXIT
    # Where systemd runs, the units may still be enabled or started: stop and disable them.
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
        systemctl disable --now nginx haproxy >/dev/null 2>&1 || true
    fi
fi

# oha: built once, cached in bench/.tools/bin. A failed build is remembered (so each run does
# not spend minutes retrying) until bench/.tools/oha.failed is removed. Its default TLS (rustls
# on aws-lc, a C library compiled from source) is the slower build, and the benchmark speaks
# plain HTTP, so oha links the system's OpenSSL instead (bench/analysis.md has both build
# times).
OHA_VERSION="${OHA_VERSION:-1.14.0}"
if [[ "$what" != packages && ! -x "$tools/bin/oha" && ! -e "$tools/oha.failed" &&
    "${BENCH_OHA:-}" == 1 ]]; then
    echo "bench: building oha $OHA_VERSION from crates.io into bench/.tools (once; takes minutes)"
    if ! cargo install --locked --quiet --root "$tools" --version "$OHA_VERSION" \
        --no-default-features --features native-tls oha \
        >"$tools/oha-build.log" 2>&1; then
        date >"$tools/oha.failed"
        echo "bench: WARNING: oha failed to build (log: bench/.tools/oha-build.log);" \
            "the oha cross-check is skipped. Remove bench/.tools/oha.failed to retry." >&2
    fi
fi
