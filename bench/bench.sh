#!/usr/bin/env bash
# `make bench`, end to end: install what is missing and build sig-gate, the criterion
# benchmark and the load generator; then criterion's verification ratios and the load benchmark
# (bench/run.py, which writes docs/benchmarks.md and docs/benchmarks.svg with the wall time of
# all of it).
# BENCH_QUICK=1 for a smoke run (criterion's shortest settings, one short round); see
# bench/run.py for the other knobs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"
BENCH_STARTED="${BENCH_STARTED:-$(date +%s)}"
export BENCH_STARTED

criterion=()
if [[ "${BENCH_QUICK:-0}" == 1 ]]; then
    criterion=(--warm-up-time 1 --measurement-time 2)
fi
# Every build first, then the measurements. oha (optional: with BENCH_OHA=1, built once into
# bench/.tools) compiles in the background beside the project's own builds, so that on a new
# machine they share the two cores instead of taking turns; nothing is measured until all of
# them are done.
"$here/install.sh" packages
scripts/install-redis.sh  # the replay store of the sig-gate-redis target
"$here/install.sh" oha &
oha_build=$!
# A failed build below stops the benchmark: take oha's build down with it (install.sh first,
# so that it does not record the interrupted build as a failed one, then its cargo).
stop_oha_build() {
    local cargo=()
    mapfile -t cargo < <(pgrep -P "$oha_build" || true)
    kill "$oha_build" 2>/dev/null || true
    if ((${#cargo[@]})); then
        kill "${cargo[@]}" 2>/dev/null || true
    fi
}
trap stop_oha_build EXIT
"${CARGO:-cargo}" bench --locked -p gate --bench verify --no-run
"${CARGO:-cargo}" build --release --locked --bin sig-gate
# The generator links the gate's library for its signer and replay cache; its own target dir
# keeps it out of the project's build.
CARGO_TARGET_DIR="$here/.tools/target" "${CARGO:-cargo}" build --release --quiet \
    --manifest-path "$here/loadgen/Cargo.toml"
wait "$oha_build"
trap - EXIT

"${CARGO:-cargo}" bench --locked -p gate --bench verify -- "${criterion[@]}"
python3 scripts/verify-ratio.py target/criterion/verify_1KiB_POST \
    target/criterion/verify_ed25519_v2_1KiB_POST
exec python3 "$here/run.py" "$@"
