#!/usr/bin/env bash
# Check the Python client as a user installs it, outside the repository's .venv:
#   1. build its wheel (pip wheel, in an isolated build environment from PyPI),
#   2. check its metadata names the license as an SPDX expression,
#   3. install that wheel into a fresh venv and run the installed CLI and an import,
#   4. install it from a git URL (this repository's committed HEAD, through file://), the way
#      clients/python/README.md tells users to install from the project's remote.
# Each installed copy must report the version of src/sig_gate_client/__init__.py, the one
# version source. Called by `make test-python`; the temporary venvs are removed on exit.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
client="$repo_root/clients/python"
work="$(mktemp -d -t sig-gate-client-package.XXXXXX)"
trap 'rm -rf "$work"' EXIT

want="$(sed -nE 's/^__version__ = "([^"]+)"$/\1/p' "$client/src/sig_gate_client/__init__.py")"
[[ -n "$want" ]] || { echo "test-python-package: no __version__ in __init__.py" >&2; exit 1; }

check_install() { # <venv> <how>
    local venv="$1" how="$2" got
    got="$("$venv/bin/sig-gate-client" --version)"
    [[ "$got" == "sig-gate-client $want" ]] \
        || { echo "test-python-package: $how: --version printed '$got', want 'sig-gate-client $want'" >&2; exit 1; }
    INTERSERVICE_HMAC_SECRET=package-check-secret-0123456789abcdef \
        "$venv/bin/sig-gate-client" sign --method GET --path /health >"$work/headers"
    grep -q '^X-Gate-Signature: [0-9a-f]\{64\}$' "$work/headers" \
        || { echo "test-python-package: $how: the installed CLI did not sign" >&2; cat "$work/headers" >&2; exit 1; }
    echo "PASS $how: sig-gate-client $want installs, reports its version and signs"
}

pip_quiet=(--quiet --disable-pip-version-check)

"$python" -m pip wheel "${pip_quiet[@]}" --no-deps --wheel-dir "$work/dist" "$client"
wheel="$(ls "$work"/dist/sig_gate_client-"$want"-py3-none-any.whl)"
# The license is an SPDX expression (PEP 639), not the deprecated table form.
"$python" - "$wheel" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as whl:
    meta = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
    lines = whl.read(meta).decode().splitlines()
if "License-Expression: LicenseRef-Proprietary" not in lines:
    sys.exit("test-python-package: the wheel's METADATA has no License-Expression: LicenseRef-Proprietary")
if any(line.startswith("License:") for line in lines):
    sys.exit("test-python-package: the wheel's METADATA still has the deprecated License: field")
print("PASS wheel metadata: License-Expression: LicenseRef-Proprietary")
PY
"$python" -m venv "$work/wheel-venv"
"$work/wheel-venv/bin/python" -m pip install "${pip_quiet[@]}" "$wheel"
check_install "$work/wheel-venv" "wheel $(basename "$wheel")"

head="$(git -C "$repo_root" rev-parse HEAD)"
"$python" -m venv "$work/git-venv"
"$work/git-venv/bin/python" -m pip install "${pip_quiet[@]}" \
    "git+file://$repo_root@$head#subdirectory=clients/python"
check_install "$work/git-venv" "git URL at ${head:0:7}"
