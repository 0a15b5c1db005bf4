"""End-to-end checks against a real sig-gate and a real Prometheus, all on loopback.

Prints one `  PASS name` or `  FAIL name: why` line per check (scripts/test-deploy.sh
counts them) and exits non-zero if any failed. Checks, in order:

  probe          the Dockerfile's HEALTHCHECK command, run against the gate's admin port,
                 exits 0; against a 503 and against a closed port it exits 1.
  metrics        the metric families on /metrics are exactly deploy/metrics.txt, the
                 histograms are the `_seconds` ones, and every series and label value
                 the alerts and the dashboard select exists.
  clean traffic  signed requests flow and are forwarded; Prometheus (1 s scrapes, the
                 shipped rules with `for` shortened) computes a zero rejection share from
                 them and SigGateInvalidSignatureSpike stays inactive.
  alert fires    a burst of unsigned and wrongly signed requests (401s) makes
                 SigGateInvalidSignatureSpike fire, per reason, via Prometheus's HTTP API.
  dashboard      every query of deploy/grafana/sig-gate.json runs on that Prometheus and
                 returns data.
  drain          SIGTERM: the gate exits 0.

Environment: SIG_GATE_BIN (default target/debug/sig-gate), PROMETHEUS_BIN (default
`prometheus` on PATH). Nothing here listens on anything but 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
GATE_BIN = Path(os.environ.get("SIG_GATE_BIN", REPO / "target" / "debug" / "sig-gate"))
PROMETHEUS_BIN = os.environ.get("PROMETHEUS_BIN", "prometheus")
ALERT = "SigGateInvalidSignatureSpike"
# Shortened `for` in the test copy of the rules: the expressions stay exactly as shipped.
TEST_FOR = "2s"
BURST_PER_REASON = 250  # rate over the 5m window ~ 250/300 s = 0.83/s, above the 0.5/s floor

# Loopback only, and never through a proxy from the environment.
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))

RESULTS: list[tuple[str, bool, str]] = []


def record(name: str, ok: bool, detail: str = "") -> bool:
    RESULTS.append((name, ok, detail))
    line = f"  {'PASS' if ok else 'FAIL'} {name}"
    if detail:
        line += f": {detail}"
    print(line, flush=True)
    return ok


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 5) -> dict:
    with LOCAL.open(url, timeout=timeout) as response:
        return json.load(response)


class Upstream(BaseHTTPRequestHandler):
    """Stands in for tool-gate: 200 for everything, 503 on /status/503 (for the probe)."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        status = 503 if self.path == "/status/503" else 200
        body = b'{"ok":true}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


class Gate:
    """A `sig-gate serve` process on 127.0.0.1:0, its addresses read from its JSON log."""

    def __init__(self, upstream_port: int) -> None:
        self.secret = secrets.token_urlsafe(32)
        # Only the settings below: nothing from the caller's environment may change the
        # gate (a stray GATE_UNSIGNED_PATHS, say), and the working directory is a temporary
        # one so that no config/sig-gate.toml is picked up.
        inherited = {k: v for k, v in os.environ.items()
                     if not k.startswith(("GATE_", "INTERSERVICE_", "REQUIRE_SIGNATURE", "TOOL_GATE_", "LISTEN_"))}
        self.env = {
            **inherited,
            "INTERSERVICE_HMAC_SECRET": self.secret,
            "GATE_LISTEN": "127.0.0.1:0",
            "GATE_ADMIN_LISTEN": "127.0.0.1:0",
            "GATE_UPSTREAM": f"http://127.0.0.1:{upstream_port}",
            "GATE_LOG_FORMAT": "json",
            "GATE_SHUTDOWN_GRACE_SECS": "10",
        }
        self.log: list[str] = []
        self.proc = subprocess.Popen([str(GATE_BIN), "serve"], env=self.env, cwd=tempfile.gettempdir(),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        listening = threading.Event()
        self.proxy_addr = self.admin_addr = ""

        def read_stderr() -> None:
            for line in self.proc.stderr:
                self.log.append(line.rstrip())
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("message") == "listening":
                    self.proxy_addr, self.admin_addr = event["proxy_addr"], event["admin_addr"]
                    listening.set()

        threading.Thread(target=read_stderr, daemon=True).start()
        if not listening.wait(30):
            self.proc.kill()
            raise RuntimeError("sig-gate did not log `listening` within 30 s:\n" + "\n".join(self.log[-20:]))

    def sign(self, method: str, path: str) -> dict[str, str]:
        out = subprocess.run([str(GATE_BIN), "sign", "--method", method, "--path", path], env=self.env,
                             cwd=tempfile.gettempdir(), capture_output=True, text=True, check=True)
        return dict(line.split(": ", 1) for line in out.stdout.splitlines() if line.strip())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return -9
        return self.proc.returncode


def request(conn: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> tuple[int, dict]:
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = response.read()
    try:
        return response.status, json.loads(body)
    except ValueError:
        return response.status, {}


# ---------------------------------------------------------------------------------- probe
def healthcheck_command() -> list[str]:
    """The exec-form HEALTHCHECK CMD of the Dockerfile."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK\b.*?\bCMD\s+(\[.*\])\s*$", text, re.M)
    if not match:
        raise RuntimeError("Dockerfile has no exec-form HEALTHCHECK CMD")
    return json.loads(match[1])


def check_probe(gate: Gate, upstream_port: int) -> None:
    command = healthcheck_command()
    url = urllib.parse.urlsplit(command[-1])
    if command[:2] != ["sig-gate", "probe"] or url.path != "/readyz":
        record("probe: Dockerfile HEALTHCHECK", False, f"unexpected command {command}")
        return
    binary = str(GATE_BIN)

    def run(target: str) -> int:
        return subprocess.run([binary, *command[1:-1], target], cwd=tempfile.gettempdir(),
                              capture_output=True, timeout=30).returncode

    ready = run(f"http://{gate.admin_addr}{url.path}")
    record("probe: HEALTHCHECK command on a ready gate exits 0", ready == 0, f"exit {ready}")
    healthy = run(f"http://{gate.admin_addr}/healthz")
    record("probe: /healthz exits 0", healthy == 0, f"exit {healthy}")
    unavailable = run(f"http://127.0.0.1:{upstream_port}/status/503")
    record("probe: a 503 exits 1", unavailable == 1, f"exit {unavailable}")
    closed = run(f"http://127.0.0.1:{free_port()}/readyz")
    record("probe: a closed port exits 1", closed == 1, f"exit {closed}")


# -------------------------------------------------------------------------------- metrics
SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s")
LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
SELECTOR_RE = re.compile(r"\b(sig_gate_\w+)\s*(?:\{([^}]*)\})?")
MATCHER_RE = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
TARGET_LABELS = {"namespace", "job", "pod", "instance", "le"}


def exprs_of_rules(path: Path) -> list[str]:
    rules = yaml.safe_load(path.read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def exprs_of_dashboard(path: Path) -> list[str]:
    dash = json.loads(path.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def check_metrics(gate: Gate) -> None:
    with LOCAL.open(f"http://{gate.admin_addr}/metrics", timeout=5) as response:
        text = response.read().decode()
    types = dict(re.findall(r"^# TYPE (sig_gate_\w+) (\w+)$", text, re.M))
    listed = [line.strip() for line in (REPO / "deploy/metrics.txt").read_text().splitlines() if line.strip()]
    record("metrics: families on /metrics are exactly deploy/metrics.txt", set(types) == set(listed),
           f"only on /metrics: {sorted(set(types) - set(listed))}, only in metrics.txt: {sorted(set(listed) - set(types))}")
    histograms = {n for n, t in types.items() if t == "histogram"}
    record("metrics: the histograms are the `_seconds` families", histograms == {n for n in listed if n.endswith("_seconds")},
           f"histograms: {sorted(histograms)}")

    # Every (series, label, value) on /metrics, to check the matchers of alerts and dashboard.
    series: dict[str, dict[str, set[str]]] = {}
    for line in text.splitlines():
        match = SAMPLE_RE.match(line)
        if match and match[1].startswith("sig_gate_"):
            labels = series.setdefault(match[1], {})
            for name, value in LABEL_RE.findall(match[2] or ""):
                labels.setdefault(name, set()).add(value)
    problems = []
    sources = [("alerts.yml", x) for x in exprs_of_rules(REPO / "deploy/prometheus/alerts.yml")]
    sources += [("sig-gate.json", x) for x in exprs_of_dashboard(REPO / "deploy/grafana/sig-gate.json")]
    for origin, expr in sources:
        for metric, matchers in SELECTOR_RE.findall(expr):
            if metric not in series:
                problems.append(f"{origin}: {metric} is not on /metrics")
                continue
            for label, op, value in MATCHER_RE.findall(matchers):
                if label in TARGET_LABELS:
                    continue  # added by Prometheus or a Grafana variable, not by the gate
                if label not in series[metric]:
                    problems.append(f"{origin}: {metric} has no label {label}")
                elif op in ("=", "=~") and metric != "sig_gate_config_info":
                    # Labelled counters exist from start-up for every value (README, "Metrics"), so
                    # each value an alert selects must be there already. config_info's values
                    # describe the configuration, which differs from this gate's.
                    for alternative in value.split("|"):
                        if alternative not in series[metric][label]:
                            problems.append(f"{origin}: {metric}{{{label}={alternative!r}}} does not exist")
    record("metrics: every series and label value selected by alerts and dashboard exists", not problems,
           "; ".join(sorted(set(problems))))


# ----------------------------------------------------------------------------- prometheus
class Prometheus:
    def __init__(self, workdir: Path, admin_addr: str) -> None:
        rules = yaml.safe_load((REPO / "deploy/prometheus/alerts.yml").read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = TEST_FOR
        (workdir / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(workdir / "rules.yml")],
            "scrape_configs": [{"job_name": "sig-gate", "static_configs": [{"targets": [admin_addr]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.base = f"http://127.0.0.1:{free_port()}"
        self.log = open(workdir / "prometheus.log", "w")
        self.logpath = workdir / "prometheus.log"
        self.proc = subprocess.Popen(
            [PROMETHEUS_BIN, f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address={self.base.removeprefix('http://')}",
             "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}:\n{self.logpath.read_text()[-2000:]}")
            try:
                with LOCAL.open(f"{self.base}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("prometheus did not become ready within 60 s")

    def api(self, path: str, **params: str) -> dict:
        url = f"{self.base}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        reply = get_json(url)
        if reply.get("status") != "success":
            raise RuntimeError(f"{url}: {reply}")
        return reply["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def alert_states(self) -> list[dict]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"].get("alertname") == ALERT]

    def rule(self) -> dict:
        for group in self.api("rules")["groups"]:
            for rule in group["rules"]:
                if rule["name"] == ALERT:
                    return rule
        raise RuntimeError(f"{ALERT} is not loaded")

    def wait_for(self, what: str, predicate, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.5)
        raise TimeoutError(f"{what}: not within {timeout:.0f} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def scraped_total(prom: Prometheus, outcome: str) -> float:
    result = prom.query(f'sum(sig_gate_requests_total{{job="sig-gate",outcome="{outcome}"}})')
    return float(result[0]["value"][1]) if result else -1.0


def check_alert(gate: Gate, prom: Prometheus) -> None:
    # A baseline first: Prometheus computes rates from differences between scrapes, so
    # traffic sent before its first scrapes of the gate would be invisible to the rule.
    prom.wait_for("two scrapes of the idle gate", lambda: prom.query(
        'count_over_time(sig_gate_requests_total{job="sig-gate",outcome="forwarded"}[1m]) >= 2'))

    # Clean traffic, signed, flowing the whole time the rule is watched.
    statuses: list[int] = []
    stop = threading.Event()

    def clean_traffic() -> None:
        conn = http.client.HTTPConnection(*gate.proxy_addr.rsplit(":", 1), timeout=10)
        while not stop.is_set():
            statuses.append(request(conn, "/x", gate.sign("GET", "/x"))[0])
            time.sleep(0.02)
        conn.close()

    sender = threading.Thread(target=clean_traffic, daemon=True)
    sender.start()
    try:
        prom.wait_for("Prometheus sees the clean traffic as a rate", lambda: prom.query(
            'sum(rate(sig_gate_requests_total{job="sig-gate",outcome="forwarded"}[5m])) > 0'))
        # The alert's own share, as Prometheus computes it from the live gate: one series per
        # reason, all zero. This is what the rule decides on, so its silence means something.
        share = prom.query(
            "sum by (namespace, job, reason) (rate(sig_gate_invalid_request_signature_total[5m]))"
            " / on (namespace, job) group_left sum by (namespace, job) (rate(sig_gate_requests_total[5m]))")
        values = {s["metric"]["reason"]: float(s["value"][1]) for s in share}
        record("clean traffic: Prometheus computes a zero rejection share for every reason",
               len(values) == 7 and not any(values.values()), f"{values}")
        quiet, evaluations = True, 0
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            rule = prom.rule()
            if rule.get("health") != "ok":
                record(f"clean traffic: {ALERT} evaluates", False, f"health {rule.get('health')}: {rule.get('lastError')}")
                return
            evaluations += 1
            quiet &= rule.get("state") == "inactive" and not prom.alert_states()
            time.sleep(1)
        record(f"clean traffic: {ALERT} stays inactive", quiet and evaluations >= 5,
               f"state {prom.rule().get('state')} at each of {evaluations} checks over 6 s (rule `for` {TEST_FOR})")
    finally:
        stop.set()
        sender.join(15)
    record("clean traffic: signed requests are forwarded (200)", bool(statuses) and set(statuses) == {200},
           f"{len(statuses)} requests, statuses {sorted(set(statuses))}")

    conn = http.client.HTTPConnection(*gate.proxy_addr.rsplit(":", 1), timeout=10)
    # The burst: unsigned requests, and requests with well-formed headers but a wrong MAC.
    reasons: dict[str, int] = {}
    for _ in range(BURST_PER_REASON):
        status, body = request(conn, "/x", {})
        reasons[f"{status} {body.get('reason')}"] = reasons.get(f"{status} {body.get('reason')}", 0) + 1
        headers = {
            "X-Gate-Key-Id": "current",
            "X-Gate-Timestamp": str(int(time.time())),
            "X-Gate-Nonce": secrets.token_urlsafe(24),
            "X-Gate-Signature": secrets.token_hex(32),
        }
        status, body = request(conn, "/x", headers)
        reasons[f"{status} {body.get('reason')}"] = reasons.get(f"{status} {body.get('reason')}", 0) + 1
    conn.close()
    want = {"401 missing_signature": BURST_PER_REASON, "401 bad_signature": BURST_PER_REASON}
    record("burst: unsigned and forged requests are refused with 401 and their reason", reasons == want, f"got {reasons}")

    def firing_for_both_reasons() -> list[dict] | None:
        firing = [a for a in prom.alert_states() if a["state"] == "firing"]
        reasons = {a["labels"].get("reason") for a in firing}
        return firing if reasons >= {"missing_signature", "bad_signature"} else None

    started = time.monotonic()
    try:
        firing = prom.wait_for(f"{ALERT} firing for both reasons", firing_for_both_reasons, timeout=90)
    except TimeoutError as err:
        record(f"alert fires: {ALERT}", False, f"{err}; alerts now {prom.alert_states()}")
        return
    summaries = "; ".join(f"{a['labels']['reason']}: {a['annotations'].get('summary')}" for a in firing)
    record(f"alert fires: {ALERT} via Prometheus's API", True,
           f"firing {time.monotonic() - started:.1f} s after the burst ({summaries})")
    labels_ok = all(a["labels"].get("severity") == "critical" and a["annotations"].get("runbook_url", "").startswith("docs/operations.md#")
                    for a in firing)
    record("alert fires: with severity and runbook link", labels_ok, "")


def check_dashboard(prom: Prometheus) -> None:
    dash = json.loads((REPO / "deploy/grafana/sig-gate.json").read_text())
    empty, failed = [], []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = (target["expr"].replace("$__rate_interval", "1m")
                    .replace('"$namespace"', '".*"').replace('"$job"', '".*"'))
            try:
                result = prom.query(expr)
            except (RuntimeError, OSError) as err:
                failed.append(f"{panel['title']}: {err}")
                continue
            if not result:
                empty.append(panel["title"])
    record("dashboard: every panel query runs on Prometheus", not failed, "; ".join(failed))
    record("dashboard: every panel query returns data from the gate", not empty, f"empty: {empty}")


def main() -> int:
    if not GATE_BIN.exists():
        record("sig-gate binary", False, f"{GATE_BIN} does not exist (cargo build --bin sig-gate)")
        return 1
    if not shutil.which(PROMETHEUS_BIN):
        record("prometheus binary", False, f"{PROMETHEUS_BIN} not found (apt-get install prometheus)")
        return 1
    with upstream() as upstream_port, tempfile.TemporaryDirectory(prefix="sig-gate-e2e-") as tmp:
        gate = Gate(upstream_port)
        prom = None
        try:
            check_probe(gate, upstream_port)
            check_metrics(gate)
            prom = Prometheus(Path(tmp), gate.admin_addr)
            check_alert(gate, prom)
            check_dashboard(prom)
        except Exception as err:  # report, then clean up: never leave a process behind
            record("e2e run", False, f"{type(err).__name__}: {err}")
            if prom is not None and prom.logpath.exists():
                print(prom.logpath.read_text()[-2000:])
        finally:
            if prom is not None:
                prom.stop()
            code = gate.stop()
            record("drain: the gate exits 0 on SIGTERM", code == 0, f"exit {code}")
            if code != 0:
                print("\n".join(gate.log[-20:]))
    return 0 if all(ok for _, ok, _ in RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
