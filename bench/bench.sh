#!/usr/bin/env bash
# `make bench`'s load benchmark: install what is missing, build sig-gate and the load
# generator, then run bench/run.py, which writes docs/benchmarks.md and docs/benchmarks.svg.
# BENCH_QUICK=1 for a two-minute smoke run; see bench/run.py for the other knobs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"

"$here/install.sh"
cargo build --release --locked --bin sig-gate
# The generator links the gate's library for its signer and replay cache; its own target dir
# keeps it out of the project's build.
CARGO_TARGET_DIR="$here/.tools/target" cargo build --release --quiet \
    --manifest-path "$here/loadgen/Cargo.toml"
exec python3 "$here/run.py" "$@"
