#!/usr/bin/env python3
"""Keep deploy/prometheus/prometheusrule.yaml in step with alerts.yml, and set the base URL of
the alerts' runbook links (`make prometheus-rules [RUNBOOK_BASE_URL=https://...]`).

alerts.yml is the one source of the rules: Prometheus loads it with `rule_files:` and promtool
tests it (alerts.test.yml). The PrometheusRule that the Prometheus Operator loads holds the
same groups, so it is written from alerts.yml: its text from `groups:` on, indented under
`spec:`, comments included.

Every `runbook_url` is `<base>#<anchor>`, with one base for all of them. `--runbook-base-url`
sets a new base in alerts.yml, alerts.test.yml (whose expected annotations name the links) and
the PrometheusRule; without it the one absolute base already in alerts.yml is kept, and links
given relative to the repository (`docs/operations.md#...`) are rewritten onto it.

`--check` writes nothing: it exits 1 when the PrometheusRule is not what alerts.yml gives, or
the links do not share one absolute base. Standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "deploy" / "prometheus"
ALERTS = FOLDER / "alerts.yml"
TESTS = FOLDER / "alerts.test.yml"
RULE = FOLDER / "prometheusrule.yaml"

LINK = re.compile(r'(runbook_url:\s*")([^"#]*)#')
HEADER = """\
# Generated from alerts.yml by `make prometheus-rules` (scripts/prometheus-rules.py): edit
# alerts.yml, then run it. scripts/test-deploy.sh fails while the two differ.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: sig-gate
  labels:
    app.kubernetes.io/name: sig-gate
    app.kubernetes.io/component: monitoring
spec:
"""


def is_absolute(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not parts.fragment


def bases(text: str) -> set[str]:
    return {match[2] for match in LINK.finditer(text)}


def rebase(text: str, base: str) -> str:
    return LINK.sub(lambda match: f"{match[1]}{base}#", text)


def prometheus_rule(alerts: str) -> str:
    """The PrometheusRule text for the rules text `alerts`."""
    at = re.search(r"^groups:", alerts, re.M)
    if at is None:
        raise SystemExit(f"{ALERTS}: no top-level `groups:`")
    body = alerts[at.start():]
    return HEADER + "".join(f"  {line}" if line.strip() else line for line in body.splitlines(keepends=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runbook-base-url", help="new base of every runbook_url (no #fragment)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when out of step")
    args = parser.parse_args()

    alerts = ALERTS.read_text()
    found = bases(alerts)
    if args.check:
        problems = []
        if len(found) != 1 or not all(is_absolute(b) for b in found):
            problems.append(f"runbook_url bases {sorted(found)}: want one absolute URL")
        if bases(TESTS.read_text()) - found:
            problems.append(f"alerts.test.yml expects other runbook_url bases: {sorted(bases(TESTS.read_text()) - found)}")
        if not RULE.exists() or RULE.read_text() != prometheus_rule(alerts):
            problems.append(f"{RULE.relative_to(REPO)} is not generated from alerts.yml")
        for problem in problems:
            print(f"  problem: {problem} (run `make prometheus-rules`)")
        return 1 if problems else 0

    if args.runbook_base_url is not None:
        base = args.runbook_base_url
        if not is_absolute(base):
            print(f"--runbook-base-url {base!r}: want an absolute http(s) URL without #fragment", file=sys.stderr)
            return 2
    else:
        absolute = sorted(b for b in found if is_absolute(b))
        if len(absolute) != 1:
            print(f"runbook_url bases in alerts.yml: {sorted(found)}; name the one to use with "
                  "--runbook-base-url (make prometheus-rules RUNBOOK_BASE_URL=...)", file=sys.stderr)
            return 2
        base = absolute[0]

    alerts = rebase(alerts, base)
    ALERTS.write_text(alerts)
    TESTS.write_text(rebase(TESTS.read_text(), base))
    RULE.write_text(prometheus_rule(alerts))
    print(f"runbook links: {base}#...; wrote {RULE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
