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
  fingerprints   a second gate with another secret, scraped in the same job (one workload,
                 half rolled out), makes SigGateFingerprintMismatch fire with the two
                 fingerprints the gates export; once it stops, SigGateDown fires for its
                 target and the mismatch resolves.
  store          a gate of another job records nonces in a real redis-server on loopback;
                 Redis killed under signed traffic: 503 for every signed request, and
                 SigGateReplayStoreDown and SigGateReplayStoreErrors fire for that gate;
                 Redis started again on its port: requests pass without a restart and the
                 down alert resolves.
  dashboard      every query of deploy/grafana/sig-gate.json runs on that Prometheus and
                 returns data (the replay store panels from the gate on Redis).
  drain          SIGTERM: each gate exits 0.

Environment: SIG_GATE_BIN (default target/debug/sig-gate), PROMETHEUS_BIN (default
`prometheus` on PATH), REDIS_BIN (default `redis-server` on PATH). Nothing here listens on
anything but 127.0.0.1.
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
MISMATCH = "SigGateFingerprintMismatch"
DOWN = "SigGateDown"
STORE_DOWN = "SigGateReplayStoreDown"
STORE_ERRORS = "SigGateReplayStoreErrors"
# The scrape job of the gate whose replay store is a real Redis (a workload of its own, so its
# secret does not count in the first job's fingerprint comparison).
STORE_JOB = "sig-gate-store"
REDIS_BIN = os.environ.get("REDIS_BIN", "redis-server")
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

    def __init__(self, upstream_port: int, extra_env: dict[str, str] | None = None) -> None:
        self.secret = secrets.token_urlsafe(32)  # each gate its own
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
            **(extra_env or {}),
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


class Redis:
    """A `redis-server` on 127.0.0.1 on a free port, without persistence; `kill` and `start`
    again on the same port, as an outage and its end."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--logfile", ""],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited {self.proc.returncode} on port {self.port}")
            if self.ping():
                return
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"redis-server did not answer PING on port {self.port} within 30 s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the store vanishes mid-traffic, as a crashed Redis does."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


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
    def __init__(self, workdir: Path, jobs: dict[str, list[str]]) -> None:
        rules = yaml.safe_load((REPO / "deploy/prometheus/alerts.yml").read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = TEST_FOR
        (workdir / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(workdir / "rules.yml")],
            # One job per workload: the gates of a job are the pods of one workload.
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}
                               for job, targets in jobs.items()],
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

    def alert_states(self, name: str = ALERT) -> list[dict]:
        return [a for a in self.api("alerts")["alerts"] if a["labels"].get("alertname") == name]

    def firing(self, name: str) -> list[dict] | None:
        """The alerts of rule `name` that fire now, or None (for `wait_for`)."""
        return [a for a in self.alert_states(name) if a["state"] == "firing"] or None

    def rule(self, name: str = ALERT) -> dict:
        for group in self.api("rules")["groups"]:
            for rule in group["rules"]:
                if rule["name"] == name:
                    return rule
        raise RuntimeError(f"{name} is not loaded")

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
        # (This job only: the replay store's gate, a job of its own, has no traffic yet, so its
        # share is 0/0.)
        share = prom.query(
            'sum by (namespace, job, reason) (rate(sig_gate_invalid_request_signature_total{job="sig-gate"}[5m]))'
            ' / on (namespace, job) group_left sum by (namespace, job) (rate(sig_gate_requests_total{job="sig-gate"}[5m]))')
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
    labels_ok = all(a["labels"].get("severity") == "critical" and runbook_link(a, "siggateinvalidsignaturespike")
                    for a in firing)
    record("alert fires: with severity and runbook link", labels_ok, "")


def runbook_link(alert: dict, anchor: str) -> bool:
    """The alert links to its section of docs/operations.md with an absolute URL."""
    url = alert["annotations"].get("runbook_url", "")
    return url.startswith(("https://", "http://")) and url.endswith(f"/docs/operations.md#{anchor}")


def fingerprint_of(gate: Gate) -> str:
    with LOCAL.open(f"http://{gate.admin_addr}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(r'^sig_gate_config_info\{[^}]*\bfingerprint="([0-9a-f]{8})"', text, re.M)
    if not match:
        raise RuntimeError(f"no fingerprint on {gate.admin_addr}/metrics")
    return match[1]


def check_fingerprints(gate: Gate, other: Gate, prom: Prometheus) -> None:
    """Two gates of one job on different secrets: the mismatch fires; the second one stops:
    it is down, and the mismatch resolves."""
    expected = {fingerprint_of(gate), fingerprint_of(other)}
    record("fingerprints: the two gates export two fingerprints", len(expected) == 2, f"{sorted(expected)}")
    seen = prom.wait_for("both gates' fingerprints in Prometheus", lambda: {
        s["metric"]["fingerprint"] for s in prom.query('sig_gate_config_info{job="sig-gate"}')} == expected or None)
    record("fingerprints: Prometheus holds both gates' sig_gate_config_info", bool(seen), f"{sorted(expected)}")

    started = time.monotonic()
    try:
        alerts = prom.wait_for(f"{MISMATCH} firing", lambda: prom.firing(MISMATCH), timeout=90)
    except TimeoutError as err:
        record(f"fingerprints: {MISMATCH} fires", False, f"{err}; rule {prom.rule(MISMATCH)}")
        return
    alert = alerts[0]
    record(f"fingerprints: {MISMATCH} fires for the job, counting 2 secret sets",
           len(alerts) == 1 and alert["labels"].get("job") == "sig-gate" and float(alert["value"]) == 2
           and alert["labels"].get("severity") == "warning" and runbook_link(alert, "siggatefingerprintmismatch"),
           f"after {time.monotonic() - started:.1f} s: {alert['labels']}, value {alert['value']}, "
           f"summary {alert['annotations'].get('summary')!r}")

    code = other.stop()
    record("drain: the second gate exits 0 on SIGTERM", code == 0, f"exit {code}")
    try:
        down = prom.wait_for(f"{DOWN} firing", lambda: prom.firing(DOWN), timeout=90)
    except TimeoutError as err:
        record(f"fingerprints: {DOWN} fires for the stopped gate", False, f"{err}; rule {prom.rule(DOWN)}")
        return
    record(f"fingerprints: {DOWN} fires for the stopped gate, and only for it",
           [a["labels"].get("instance") for a in down] == [other.admin_addr] and runbook_link(down[0], "siggatedown"),
           f"instances {[a['labels'].get('instance') for a in down]}, stopped {other.admin_addr}")
    try:
        prom.wait_for(f"{MISMATCH} resolved", lambda: prom.rule(MISMATCH).get("state") == "inactive", timeout=90)
        record(f"fingerprints: {MISMATCH} resolves with one secret left", True, "")
    except TimeoutError as err:
        record(f"fingerprints: {MISMATCH} resolves with one secret left", False, f"{err}; {prom.alert_states(MISMATCH)}")


def check_store(gate: Gate, redis: Redis, prom: Prometheus) -> None:
    """A gate on a real Redis: while Redis answers, signed requests pass and the store alerts
    stay quiet; Redis killed, signed requests get 503 and SigGateReplayStoreDown and
    SigGateReplayStoreErrors fire for that gate; Redis back on its port, requests pass again
    without a restart and the down alert resolves."""
    def store_up() -> list[dict]:
        return prom.query(f'sig_gate_replay_store_up{{job="{STORE_JOB}"}}')

    up = prom.wait_for("Prometheus scrapes the store gate's sig_gate_replay_store_up 1",
                       lambda: [s for s in store_up() if s["value"][1] == "1"] or None)
    info = prom.query(f'sig_gate_config_info{{job="{STORE_JOB}"}}')
    record("store: Prometheus sees the gate on Redis up, with replay_store=\"redis\"",
           bool(up) and [i["metric"].get("replay_store") for i in info] == ["redis"],
           f"up {[s['value'][1] for s in up]}, replay_store {[i['metric'].get('replay_store') for i in info]}")

    conn = http.client.HTTPConnection(*gate.proxy_addr.rsplit(":", 1), timeout=10)
    statuses = [request(conn, "/x", gate.sign("GET", "/x"))[0] for _ in range(5)]
    record("store: signed requests pass while Redis answers", statuses == [200] * 5, f"statuses {statuses}")
    quiet = all(prom.rule(name).get("health") == "ok" and prom.rule(name).get("state") == "inactive"
                for name in (STORE_DOWN, STORE_ERRORS))
    record(f"store: {STORE_DOWN} and {STORE_ERRORS} evaluate and stay inactive while Redis answers", quiet,
           f"{[(n, prom.rule(n).get('state'), prom.rule(n).get('lastError')) for n in (STORE_DOWN, STORE_ERRORS)]}")

    redis.kill()
    # Signed traffic during the outage: each request fails closed, and each is a failed store
    # operation for the error ratio (the floor is more than 5 in 5 minutes).
    outcomes: dict[str, int] = {}
    for _ in range(30):
        status, body = request(conn, "/x", gate.sign("GET", "/x"))
        key = f"{status} {body.get('error')}"
        outcomes[key] = outcomes.get(key, 0) + 1
    record("store: Redis killed: every signed request gets 503 replay store unavailable",
           outcomes == {"503 replay store unavailable": 30}, f"got {outcomes}")

    started = time.monotonic()
    for name, anchor, severity, labels in (
            (STORE_DOWN, "siggatereplaystoredown", "critical", {"job": STORE_JOB, "instance": gate.admin_addr}),
            (STORE_ERRORS, "siggatereplaystoreerrors", "warning", {"job": STORE_JOB})):
        try:
            alerts = prom.wait_for(f"{name} firing", lambda name=name: prom.firing(name), timeout=90)
        except TimeoutError as err:
            record(f"store: {name} fires for the gate whose Redis is down", False, f"{err}; rule {prom.rule(name)}")
            continue
        alert = alerts[0]
        record(f"store: {name} fires for the gate whose Redis is down, and only for it",
               len(alerts) == 1 and all(alert["labels"].get(k) == v for k, v in labels.items())
               and alert["labels"].get("severity") == severity and runbook_link(alert, anchor),
               f"{time.monotonic() - started:.1f} s after the kill: {alert['labels']}, "
               f"summary {alert['annotations'].get('summary')!r}")

    redis.start()
    deadline = time.monotonic() + 30
    status = 0
    while time.monotonic() < deadline:
        status = request(conn, "/x", gate.sign("GET", "/x"))[0]
        if status == 200:
            break
        time.sleep(0.5)
    conn.close()
    record("store: Redis back on its port: signed requests pass again, the gate was not restarted",
           status == 200 and gate.proc.poll() is None, f"last status {status}")
    try:
        prom.wait_for(f"{STORE_DOWN} resolved", lambda: prom.rule(STORE_DOWN).get("state") == "inactive", timeout=90)
        record(f"store: {STORE_DOWN} resolves once Redis answers", True, "")
    except TimeoutError as err:
        record(f"store: {STORE_DOWN} resolves once Redis answers", False, f"{err}; {prom.alert_states(STORE_DOWN)}")


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
    if not shutil.which(REDIS_BIN):
        record("redis-server binary", False, f"{REDIS_BIN} not found (scripts/install-redis.sh)")
        return 1
    with upstream() as upstream_port, tempfile.TemporaryDirectory(prefix="sig-gate-e2e-") as tmp:
        gate = Gate(upstream_port)
        other = store_gate = redis = None
        prom = None
        try:
            # The same workload's second pod, on another secret: half a rollout.
            other = Gate(upstream_port)
            check_probe(gate, upstream_port)
            check_metrics(gate)
            # Another workload, whose gate records nonces in a real Redis.
            redis = Redis(Path(tmp))
            store_gate = Gate(upstream_port, {"GATE_REPLAY_STORE": f"redis://127.0.0.1:{redis.port}",
                                              "GATE_REPLAY_STORE_TIMEOUT_MS": "500"})
            prom = Prometheus(Path(tmp), {"sig-gate": [gate.admin_addr, other.admin_addr],
                                          STORE_JOB: [store_gate.admin_addr]})
            check_alert(gate, prom)
            check_fingerprints(gate, other, prom)
            check_store(store_gate, redis, prom)
            check_dashboard(prom)
        except Exception as err:  # report, then clean up: never leave a process behind
            record("e2e run", False, f"{type(err).__name__}: {err}")
            if prom is not None and prom.logpath.exists():
                print(prom.logpath.read_text()[-2000:])
        finally:
            if prom is not None:
                prom.stop()
            if other is not None and other.proc.poll() is None:
                other.stop()
            if store_gate is not None:
                code = store_gate.stop()
                record("drain: the replay store's gate exits 0 on SIGTERM", code == 0, f"exit {code}")
            if redis is not None:
                redis.stop()
            code = gate.stop()
            record("drain: the gate exits 0 on SIGTERM", code == 0, f"exit {code}")
            if code != 0:
                print("\n".join(gate.log[-20:]))
    return 0 if all(ok for _, ok, _ in RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
