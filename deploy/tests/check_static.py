"""Static checks of the deploy files that need no running gate.

Usage: check_static.py CHECK, one of:
  alerts          alerts.yml: the required alerts exist, each with severity, summary,
                  description and an absolute runbook_url, all on one base URL that names
                  docs/operations.md, whose anchor exists there; every metric name is in
                  deploy/metrics.txt.
  dashboard       deploy/grafana/sig-gate.json: valid dashboard JSON (unique ids, panels on
                  the 24-column grid without overlaps, one Prometheus datasource variable,
                  the nine required views); every metric name is in deploy/metrics.txt.
  dockerfile      Dockerfile: CI's compiler and build command, distroless runtime, non-root
                  numeric user, EXPOSE 8080 9090, the fixed ENTRYPOINT, a curl-free health
                  check on the admin port.
  docker-context  .dockerignore: the context it lets through holds everything cargo reads
                  (manifest targets, include_str!/include_bytes!/#[path] files), and
                  `cargo metadata --locked --offline --filter-platform HOST` succeeds in a copy
                  of exactly that context, after `cargo fetch --locked --target HOST` brought
                  the crates a build for this host reads (a no-op when they are cached).
  systemd         deploy/systemd/: the units parse, name the sockets in the gate's fd order
                  (proxy, admin), and stop later than the gate's drain deadline.
Prints one line per problem; exits 1 if there is any.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import yaml

REPO = Path(__file__).resolve().parents[2]
METRICS = [line.strip() for line in (REPO / "deploy/metrics.txt").read_text().splitlines() if line.strip()]
# The two histograms are the unit-suffixed `_seconds` families; the live
# test (prometheus_e2e.py) confirms that against `# TYPE` on the real /metrics.
HISTOGRAMS = {m for m in METRICS if m.endswith("_seconds")}
ALLOWED_NAMES = set(METRICS) | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
METRIC_RE = re.compile(r"\bsig_gate_[a-z0-9_]+\b")
REQUIRED_ALERTS = {
    "SigGateInvalidSignatureSpike", "SigGatePreviousSecretStillInUse", "SigGateClockSkewHigh",
    "SigGateReplayCacheNearFull", "SigGateUpstreamErrors", "SigGateDown", "SigGateAbsent",
    "SigGateFingerprintMismatch", "SigGateReplayStoreDown", "SigGateReplayStoreErrors",
}
BUILD_COMMAND = "cargo build --release --locked"
# `#[cfg(test)]`, then any comment or attribute lines, then `mod name {`.
TEST_MODULE_RE = re.compile(r"^[ \t]*#\[cfg\(test\)\][ \t]*\n(?:[ \t]*(?://.*|#\[.*\])[ \t]*\n)*[ \t]*mod\s+\w+\s*\{", re.M)

problems: list[str] = []


def check(ok: bool, message: str) -> bool:
    if not ok:
        problems.append(message)
    return ok


def unknown_metrics(text: str) -> set[str]:
    return set(METRIC_RE.findall(text)) - ALLOWED_NAMES


def github_anchors(markdown: str) -> set[str]:
    """Heading anchors as GitHub renders them: lowercase, punctuation dropped, spaces to '-'."""
    anchors = set()
    in_fence = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        match = None if in_fence else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            anchors.add(re.sub(r"[^\w\- ]", "", match[1].lower()).replace(" ", "-"))
    return anchors


# --------------------------------------------------------------------------------- alerts
def check_alerts() -> None:
    rules = yaml.safe_load((REPO / "deploy/prometheus/alerts.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    names = [a["alert"] for a in alerts]
    check(REQUIRED_ALERTS <= set(names), f"missing alerts: {sorted(REQUIRED_ALERTS - set(names))}")
    check(len(names) == len(set(names)), "an alert name is used twice")
    operations = REPO / "docs/operations.md"
    anchors = github_anchors(operations.read_text()) if operations.exists() else set()
    check(operations.exists(), "docs/operations.md does not exist")
    bases = set()
    for alert in alerts:
        name = alert["alert"]
        ann = alert.get("annotations", {})
        check(alert.get("labels", {}).get("severity") in {"critical", "warning", "info"},
              f"{name}: severity must be critical, warning or info")
        for key in ("summary", "description", "runbook_url"):
            check(bool(ann.get(key, "").strip()), f"{name}: no {key}")
        url = ann.get("runbook_url", "")
        base, _, anchor = url.partition("#")
        bases.add(base)
        parts = urlsplit(base)
        check(parts.scheme in ("http", "https") and bool(parts.netloc) and base.endswith("/docs/operations.md")
              and anchor in anchors,
              f"{name}: runbook_url {url!r} is not an absolute link to a heading of docs/operations.md")
        bad = unknown_metrics(alert["expr"])
        check(not bad, f"{name}: metrics not exported by the gate: {sorted(bad)}")
    check(len(bases) == 1, f"runbook_url bases {sorted(bases)}: one base for all (make prometheus-rules)")
    check(not unknown_metrics((REPO / "deploy/prometheus/alerts.test.yml").read_text()),
          f"alerts.test.yml uses unknown metrics: {sorted(unknown_metrics((REPO / 'deploy/prometheus/alerts.test.yml').read_text()))}")


# ------------------------------------------------------------------------------ dashboard
def check_dashboard() -> None:
    path = REPO / "deploy/grafana/sig-gate.json"
    try:
        dash = json.loads(path.read_text())
    except ValueError as err:
        check(False, f"{path.name}: not JSON: {err}")
        return
    for key, kind in (("title", str), ("uid", str), ("schemaVersion", int), ("panels", list), ("templating", dict)):
        check(isinstance(dash.get(key), kind), f"dashboard: {key} missing or not {kind.__name__}")
    variables = {v["name"]: v for v in dash["templating"].get("list", [])}
    check(variables.get("datasource", {}).get("type") == "datasource"
          and variables["datasource"].get("query") == "prometheus", "dashboard: needs a Prometheus datasource variable")
    panels = dash["panels"]
    ids = [p.get("id") for p in panels]
    check(len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids), "dashboard: panel ids must be unique integers")
    cells: dict[tuple[int, int], str] = {}
    exprs = []
    for panel in panels:
        title = panel.get("title", "?")
        grid = panel.get("gridPos", {})
        check(all(isinstance(grid.get(k), int) for k in "xywh") and grid["x"] + grid["w"] <= 24,
              f"panel {title}: gridPos outside the 24-column grid")
        for x in range(grid.get("x", 0), grid.get("x", 0) + grid.get("w", 0)):
            for y in range(grid.get("y", 0), grid.get("y", 0) + grid.get("h", 0)):
                check((x, y) not in cells, f"panel {title} overlaps {cells.get((x, y))}")
                cells[(x, y)] = title
        if panel.get("type") == "row":
            continue
        check(panel.get("datasource", {}).get("uid") == "${datasource}", f"panel {title}: must use the $datasource variable")
        targets = panel.get("targets", [])
        check(bool(targets), f"panel {title}: no queries")
        refs = [t.get("refId") for t in targets]
        check(len(refs) == len(set(refs)), f"panel {title}: duplicate refId")
        for target in targets:
            check(bool(target.get("expr", "").strip()), f"panel {title}: empty query")
            exprs.append(target.get("expr", ""))
    # The views the issue asks for, each found by the series it plots.
    joined = "\n".join(exprs)
    for view, needle in (("requests by outcome", "by (outcome) (rate(sig_gate_requests_total"),
                         ("rejections by reason", "by (reason) (rate(sig_gate_invalid_request_signature_total"),
                         ("verified by slot", "by (slot) (rate(sig_gate_verified_total"),
                         ("clock skew", "sig_gate_clock_skew_seconds_bucket"),
                         ("latency percentiles", "histogram_quantile(0.99, sum by (le) (rate(sig_gate_request_duration_seconds_bucket"),
                         ("replay cache fill", "sig_gate_nonce_cache_entries{namespace=~\"$namespace\", job=~\"$job\"} / sig_gate_nonce_cache_capacity"),
                         ("replay store up per pod", "sig_gate_replay_store_up{"),
                         ("replay store errors by kind", "by (kind) (rate(sig_gate_replay_store_errors_total"),
                         ("replay store latency", "rate(sig_gate_replay_store_duration_seconds_bucket")):
        check(needle in joined, f"dashboard: no panel for {view}")
    everything = json.dumps(dash)
    bad = unknown_metrics(everything)
    check(not bad, f"dashboard: metrics not exported by the gate: {sorted(bad)}")


# ----------------------------------------------------------------------------- dockerfile
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text()
    logical, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip().removesuffix("\\") + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    out = []
    for line in logical:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def ci_build_commands() -> list[str]:
    """`cargo build --release ...` lines in the files CI runs."""
    found = []
    for name in ("Makefile", ".ci/run"):
        path = REPO / name
        if path.exists():
            found += [m.strip() for m in re.findall(r"cargo build --release[^\n;&|]*", path.read_text())]
    return found


def check_dockerfile() -> None:
    instructions = dockerfile_instructions()
    args = {k: v for (i, rest) in instructions if i == "ARG" for k, _, v in [rest.partition("=")]}
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True)
    version = re.search(r"rustc (\d+\.\d+\.\d+)", rustc.stdout)
    check(bool(version) and args.get("RUST_VERSION") == version[1],
          f"Dockerfile RUST_VERSION={args.get('RUST_VERSION')} but CI's compiler is {version[1] if version else '?'}")
    froms = [rest for i, rest in instructions if i == "FROM"]
    check(len(froms) >= 2, "Dockerfile must be multi-stage")
    check(froms[0].startswith("rust:${RUST_VERSION}-"), f"build stage must use rust:${{RUST_VERSION}}, got {froms[0]}")
    runtime = froms[-1].split()[0]
    check(runtime.startswith("gcr.io/distroless/") or re.match(r"debian:[\w.-]+-slim$", runtime) is not None,
          f"runtime image {runtime} is neither distroless nor Debian slim")
    check(all(":latest" not in f and (":" in f.split()[0] or "@" in f.split()[0]) for f in froms),
          "every FROM needs an explicit tag")
    runs = " ".join(rest for i, rest in instructions if i == "RUN")
    builds = re.findall(r"cargo build[^&;|]*", runs)
    check([b.strip() for b in builds] == [BUILD_COMMAND], f"the image must build with `{BUILD_COMMAND}`, found {builds}")
    for command in ci_build_commands():
        check(command == BUILD_COMMAND, f"CI builds with `{command}`, the Dockerfile with `{BUILD_COMMAND}`")
    users = [rest for i, rest in instructions if i == "USER"]
    check(bool(users) and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]) is not None,
          f"the last USER must be a numeric non-root uid, got {users[-1:] or 'none'}")
    exposed = {p for i, rest in instructions if i == "EXPOSE" for p in rest.split()}
    check(exposed == {"8080", "9090"}, f"EXPOSE {sorted(exposed)}, want 8080 9090")
    entry = [rest for i, rest in instructions if i == "ENTRYPOINT"]
    check(bool(entry) and json.loads(entry[-1]) == ["sig-gate", "serve"], f"ENTRYPOINT must be [\"sig-gate\", \"serve\"], got {entry}")
    health = [rest for i, rest in instructions if i == "HEALTHCHECK"]
    cmd = re.search(r"\bCMD\s+(\[.*\])", health[-1]) if health else None
    command = json.loads(cmd[1]) if cmd else []
    check(command[:2] == ["sig-gate", "probe"] and command[-1] == "http://127.0.0.1:9090/readyz",
          f"HEALTHCHECK must run `sig-gate probe http://127.0.0.1:9090/readyz` in exec form, got {health}")
    env = " ".join(rest for i, rest in instructions if i == "ENV")
    admin = re.search(r"GATE_ADMIN_LISTEN=([\d.]+):(\d+)", env)
    check(bool(admin) and admin[2] == "9090" and admin[1] in ("0.0.0.0", "127.0.0.1"),
          "GATE_ADMIN_LISTEN in the image must listen on port 9090, where the health check looks")
    check(not any(i in ("ADD",) for i, _ in instructions), "use COPY, not ADD")


# ------------------------------------------------------------------------- docker context
def context_allowlist() -> set[str] | None:
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    if not rules or rules[0] != "*" or not all(re.fullmatch(r"![\w.-]+", r) for r in rules[1:]):
        check(False, ".dockerignore must be `*` followed by `!name` lines (top-level names only)")
        return None
    return {r[1:] for r in rules[1:]}


def cargo_needs() -> set[str]:
    """Top-level paths `cargo build --release --locked` reads: the root package's and every
    workspace member's manifest, sources, declared targets and compile-time includes."""
    root = tomllib.loads((REPO / "Cargo.toml").read_text())
    needs = {"Cargo.toml", "Cargo.lock"}
    packages = [REPO] + [REPO / member for member in root.get("workspace", {}).get("members", [])]
    for package_dir in packages:
        manifest = tomllib.loads((package_dir / "Cargo.toml").read_text())
        needs.add(package_dir.relative_to(REPO).parts[0] if package_dir != REPO else "src")
        package = manifest.get("package", {})
        build = package.get("build", "build.rs" if (package_dir / "build.rs").exists() else None)
        defaults = {"bin": "src/bin", "test": "tests", "bench": "benches", "example": "examples"}
        paths = [build] if build else []
        for kind, folder in defaults.items():
            paths += [t.get("path") or f"{folder}/{t['name']}.rs" for t in manifest.get(kind, [])]
        if "lib" in manifest and "path" in manifest["lib"]:
            paths.append(manifest["lib"]["path"])
        for path in paths:
            needs.add((package_dir / path).resolve().relative_to(REPO).parts[0])
        # Files pulled in at compile time. Unit tests sit at the bottom of each file in a
        # `#[cfg(test)] mod tests { ... }` (the house style) and are not compiled by a release
        # build, so what they include need not be in the image's context.
        for source in (package_dir / "src").rglob("*.rs"):
            text = re.split(TEST_MODULE_RE, source.read_text(), maxsplit=1)[0]
            for rel in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', text) + re.findall(r'#\[path\s*=\s*"([^"]+)"\]', text):
                if "CARGO_MANIFEST_DIR" in rel:
                    continue
                resolved = (source.parent / rel).resolve()
                if REPO in resolved.parents:
                    needs.add(resolved.relative_to(REPO).parts[0])
    return needs


def host_triple() -> str:
    """The target triple rustc builds for by default (`host:` in `rustc -vV`)."""
    out = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("host:"))


def check_docker_context() -> None:
    allow = context_allowlist()
    if allow is None:
        return
    needs = cargo_needs()
    check(needs <= allow, f".dockerignore leaves out what cargo needs: {sorted(needs - allow)}")
    check("target" not in allow and ".git" not in allow, ".dockerignore lets target/ or .git/ into the context")
    with tempfile.TemporaryDirectory(prefix="docker-context-") as tmp:
        for name in allow:
            source = REPO / name
            if source.is_dir():
                shutil.copytree(source, Path(tmp) / name)
            elif source.exists():
                shutil.copy2(source, Path(tmp) / name)
        # The image is built for the build host's platform. Resolving every platform's
        # dependencies offline would need crates (Windows console support, say) that no Linux
        # build downloads, so the check would pass only on a machine that happened to cache them.
        host = host_triple()
        fetch = subprocess.run(["cargo", "fetch", "--locked", "--target", host],
                               cwd=REPO, capture_output=True, text=True)
        if not check(fetch.returncode == 0, f"cargo fetch --locked --target {host} failed: {fetch.stderr.strip()[-500:]}"):
            return
        out = subprocess.run(["cargo", "metadata", "--locked", "--offline", "--filter-platform", host,
                              "--format-version", "1"], cwd=tmp, capture_output=True, text=True)
        check(out.returncode == 0, f"cargo metadata --locked in the Docker context failed: {out.stderr.strip()[-500:]}")
        files = sum(1 for _ in Path(tmp).rglob("*") if _.is_file())
        print(f"  context: {sorted(allow)} ({files} files); cargo reads {sorted(needs)}")


# -------------------------------------------------------------------------------- systemd
def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """systemd unit syntax: [Section] headers and Key=Value lines; keys may repeat."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if re.fullmatch(r"\[[A-Za-z]+\]", line):
            current = sections.setdefault(line[1:-1], [])
        elif current is not None and re.match(r"^[A-Za-z][A-Za-z0-9]*=", line):
            key, _, value = line.partition("=")
            current.append((key, value))
        else:
            check(False, f"{path.name}:{number}: not a section header or Key=Value: {raw!r}")
    return sections


def values(unit: dict, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def check_systemd() -> None:
    folder = REPO / "deploy/systemd"
    socket = parse_unit(folder / "sig-gate.socket")
    service = parse_unit(folder / "sig-gate.service")
    template = parse_unit(folder / "sig-gate@.service")
    env = dict(line.split("=", 1) for line in (folder / "sig-gate.env").read_text().splitlines()
               if line.strip() and not line.startswith("#"))
    listens = values(socket, "Socket", "ListenStream")
    check(len(listens) == 2, f"sig-gate.socket must pass two sockets (fd 3 proxy, fd 4 admin), has {listens}")
    if len(listens) == 2:
        check(listens[0].rsplit(":", 1)[-1] == env.get("GATE_LISTEN", "").rsplit(":", 1)[-1],
              "the first ListenStream (fd 3) must be the proxy port of GATE_LISTEN")
        check(listens[1] == env.get("GATE_ADMIN_LISTEN"), "the second ListenStream (fd 4) must be GATE_ADMIN_LISTEN")
    check(values(socket, "Socket", "Accept") in ([], ["no"], ["false"]), "sig-gate.socket must not use Accept=yes")
    grace = int(env.get("GATE_SHUTDOWN_GRACE_SECS", "30"))
    for name, unit in (("sig-gate.service", service), ("sig-gate@.service", template)):
        check(values(unit, "Service", "ExecStart") == ["/usr/local/bin/sig-gate serve"], f"{name}: ExecStart must run `sig-gate serve`")
        stop = values(unit, "Service", "TimeoutStopSec")
        check(bool(stop) and int(stop[-1]) > grace, f"{name}: TimeoutStopSec must exceed GATE_SHUTDOWN_GRACE_SECS ({grace})")
        check(values(unit, "Service", "KillSignal") == ["SIGTERM"], f"{name}: the drain starts on SIGTERM")
        check("1" in " ".join(values(unit, "Service", "SuccessExitStatus")).split(),
              f"{name}: exit 1 (drain deadline reached) should not count as a failure")
        check(values(unit, "Service", "User") not in ([], ["root"]), f"{name}: must not run as root")
        check(values(unit, "Service", "NoNewPrivileges") == ["yes"], f"{name}: NoNewPrivileges=yes")
    check(values(service, "Unit", "Requires") == ["sig-gate.socket"], "sig-gate.service must require sig-gate.socket")
    check("sig-gate.socket" in " ".join(values(template, "Unit", "Conflicts")).split(),
          "sig-gate@.service binds the ports itself: it must conflict with sig-gate.socket")
    check(any("/readyz" in v for v in values(template, "Service", "ExecStartPost")),
          "sig-gate@.service must wait for /readyz so `systemctl start` means serving")
    check(values(service, "Service", "EnvironmentFile") == ["/etc/sig-gate/sig-gate.env"],
          "sig-gate.service reads /etc/sig-gate/sig-gate.env")
    for key in env:
        check(re.fullmatch(r"(GATE|INTERSERVICE|REQUIRE)_?[A-Z_]*", key) is not None, f"sig-gate.env: unexpected variable {key}")
    check(not any(k in env for k in ("INTERSERVICE_HMAC_SECRET", "INTERSERVICE_HMAC_SECRET_PREV")),
          "sig-gate.env must name secret files, never hold a secret")


def main() -> int:
    checks = {"alerts": check_alerts, "dashboard": check_dashboard, "dockerfile": check_dockerfile,
              "docker-context": check_docker_context, "systemd": check_systemd}
    if len(sys.argv) != 2 or sys.argv[1] not in checks:
        print(f"usage: check_static.py {{{','.join(checks)}}}", file=sys.stderr)
        return 2
    checks[sys.argv[1]]()
    for problem in problems:
        print(f"  problem: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
