#!/usr/bin/env bash
# Run the Python client's tests, including live interop against the real gate binary.
#
# Called from the repository root by `make test-python`; works from a fresh clone:
#   1. creates .venv at the repository root if missing (python3 -m venv .venv),
#   2. installs clients/python with its [test] extras (httpx, requests, and cryptography for
#      the optional Ed25519 keys), only when the venv lacks them or
#      clients/python/pyproject.toml changed since the last install,
#   3. builds the gate (`cargo build --bin sig-gate`; set CARGO to use another cargo),
#   4. runs pytest on clients/python/tests; extra arguments are passed to pytest.
#
# Environment: PYTHON (default python3) creates the venv; SIG_GATE_BIN overrides the binary
# the interop tests start (the build step still runs unless SIG_GATE_SKIP_BUILD=1).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

python="${PYTHON:-python3}"
cargo="${CARGO:-cargo}"
venv="$repo_root/.venv"
client="clients/python"
stamp="$venv/.sig-gate-client-install"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "test-python: creating $venv" >&2
    if ! "$python" -m venv "$venv"; then
        rm -rf "$venv"
        echo "test-python: '$python -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2
        exit 1
    fi
fi

# Reinstall when the package metadata changed or a dependency is missing. The install is
# editable, so source edits never need one.
wanted="$(sha256sum "$client/pyproject.toml" | cut -d' ' -f1) $repo_root"
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]] \
    || ! "$venv/bin/python" -c 'import sig_gate_client, pytest, httpx, requests, cryptography' 2>/dev/null; then
    echo "test-python: installing $client[test] into .venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$client[test]"
    printf '%s\n' "$wanted" >"$stamp"
fi

if [[ "${SIG_GATE_SKIP_BUILD:-0}" != "1" ]]; then
    echo "test-python: $cargo build --bin sig-gate" >&2
    "$cargo" build --bin sig-gate
fi

exec "$venv/bin/python" -m pytest "$client/tests" "$@"
