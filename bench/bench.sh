#!/usr/bin/env bash
# `make bench`, end to end: criterion's verification ratios, then the load benchmark (install
# what is missing, build sig-gate and the load generator, run bench/run.py, which writes
# docs/benchmarks.md and docs/benchmarks.svg with the wall time of all of it).
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
"${CARGO:-cargo}" bench --locked -p gate --bench verify -- "${criterion[@]}"
python3 scripts/verify-ratio.py target/criterion/verify_1KiB_POST \
    target/criterion/verify_ed25519_v2_1KiB_POST

"$here/install.sh"
scripts/install-redis.sh  # the replay store of the sig-gate-redis target
"${CARGO:-cargo}" build --release --locked --bin sig-gate
# The generator links the gate's library for its signer and replay cache; its own target dir
# keeps it out of the project's build.
CARGO_TARGET_DIR="$here/.tools/target" "${CARGO:-cargo}" build --release --quiet \
    --manifest-path "$here/loadgen/Cargo.toml"
exec python3 "$here/run.py" "$@"
