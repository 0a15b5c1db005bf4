#!/usr/bin/env python3
"""The load benchmark behind `make bench`: sig-gate against nginx and HAProxy, measured in the
same run on this machine, written to docs/benchmarks.md and docs/benchmarks.svg.

Targets, each in front of the same upstream (nginx answering `return 200` with a small JSON
body): direct (no proxy), nginx `proxy_pass` with upstream keepalive, HAProxy, and sig-gate
with full verification and replay protection. Every proxy runs one worker pinned to the same
CPU; the load generator and the upstream share the other CPU (see CPU_LAYOUT below).

Environment:
  BENCH_QUICK=1     smoke run: one short round (about two minutes)
  BENCH_ROUNDS=N    interleaved rounds (default 5)
  BENCH_NO_DOCS=1   print the table but leave docs/ untouched
  BENCH_PROXY_CPUS  CPU list for the proxies (default: the last CPU)
  BENCH_CLIENT_CPUS CPU list for the load generators and the upstream (default: the others)
  BENCH_NICE        niceness of every benchmark process when run as root (default -10; 0: off)

Raw figures of every run go to bench/.results/<timestamp>/results.json.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
TOOLS = BENCH / ".tools"
LOADGEN = TOOLS / "target" / "release" / "sig-gate-loadgen"
GATE = ROOT / "target" / "release" / "sig-gate"
OHA = TOOLS / "bin" / "oha"
LUA = BENCH / "wrk" / "signed.lua"

sys.path.insert(0, str(BENCH))
import report  # noqa: E402  (bench/report.py: markdown and SVG)

QUICK = os.environ.get("BENCH_QUICK") == "1"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1" if QUICK else "5"))
WARMUP_SECS = 1 if QUICK else 2
CLOSED_SECS = 3 if QUICK else 6
SLICES = 1 if QUICK else 3  # the closed-loop time of each target, in turns of CLOSED_SECS/SLICES
OPEN_SECS = 3 if QUICK else 4
CONNECTIONS = 64          # wrk's closed-loop connections
OPEN_CONNECTIONS = 32     # open-loop generator's connection pool
RATE_FRACTIONS = (0.2, 0.4, 0.6)  # of the slowest proxy's calibrated maximum
STARTS = 5 if QUICK else 11
IDLE_CONNECTIONS = 1000
IDLE_REPEATS = 1 if QUICK else 3
REPLAY_ENTRIES = 1_000_000
SECRET = "bench-secret-not-for-production-0123456789abcdef"
TARGET_PATH = "/tools/call?session=42&stream=false"
HOST = "tool-gate.internal"
UPSTREAM_BODY = '{"ok":true,"result":"bench"}'

PROXIES = ("nginx", "haproxy", "sig-gate")
TARGETS = ("direct",) + PROXIES


def log(message: str) -> None:
    print(f"bench: {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# CPUs

def cpu_layout() -> tuple[str, str]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("bench: needs at least 2 CPUs (proxy on one, load generator on another)")
    proxy = os.environ.get("BENCH_PROXY_CPUS", str(cpus[-1]))
    client = os.environ.get("BENCH_CLIENT_CPUS", ",".join(str(c) for c in cpus[:-1]))
    return proxy, client


PROXY_CPUS, CLIENT_CPUS = cpu_layout()
WORKERS = len(PROXY_CPUS.split(","))


def pinned(cpus: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpus] + argv


# ---------------------------------------------------------------------------------------------
# /proc

CLK_TCK = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """pid and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLK_TCK


def status_kib(pids: list[int], key: str) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


# ---------------------------------------------------------------------------------------------
# processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(port: int, path: str = "/", timeout: float = 0.5) -> int | None:
    """Status of a GET on 127.0.0.1:port, or None when nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64)
        return int(head[9:12]) if head.startswith(b"HTTP/1.") else None
    except (OSError, ValueError):
        return None


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    port: int
    admin_port: int | None = None

    def pids(self) -> list[int]:
        return descendants(self.popen.pid)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class Lab:
    """Configs in a temp dir, the upstream, and each target started on demand."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.upstream_port = free_port()
        self.upstream: Proc | None = None
        self.running: list[Proc] = []

    def nginx_conf(self, name: str, port: int, server_block: str, workers: int) -> Path:
        d = self.dir / name
        d.mkdir(exist_ok=True)
        user = "user root;" if os.geteuid() == 0 else ""
        conf = f"""
{user}
worker_processes {workers};
pid {d}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    {server_block}
}}
"""
        path = d / "nginx.conf"
        path.write_text(conf)
        return path

    def start_upstream(self) -> None:
        conf = self.nginx_conf("upstream", self.upstream_port, f"""
    server {{
        listen 127.0.0.1:{self.upstream_port} reuseport backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{UPSTREAM_BODY}';
        }}
    }}""", workers=1)
        popen = subprocess.Popen(
            pinned(CLIENT_CPUS, ["nginx", "-p", str(conf.parent), "-c", str(conf), "-e", "stderr",
                                 "-g", "daemon off;"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self.upstream = Proc("upstream", popen, self.upstream_port)
        wait_for(lambda: http_status(self.upstream_port) == 200, popen, "upstream nginx")

    def start(self, target: str) -> Proc:
        if target == "direct":
            assert self.upstream
            return self.upstream
        port = free_port()
        if target == "nginx":
            conf = self.nginx_conf("nginx", port, f"""
    upstream tool_gate {{
        server 127.0.0.1:{self.upstream_port};
        keepalive 128;
        keepalive_requests 10000000;
        keepalive_timeout 120s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        client_max_body_size 1m;
        client_body_buffer_size 16k;
        location / {{
            proxy_pass http://tool_gate;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Request-Id $request_id;
        }}
    }}""", workers=WORKERS)
            argv = ["nginx", "-p", str(conf.parent), "-c", str(conf), "-e", "stderr",
                    "-g", "daemon off;"]
            env = None
            ready = lambda: http_status(port) == 200  # noqa: E731
            admin = None
        elif target == "haproxy":
            d = self.dir / "haproxy"
            d.mkdir(exist_ok=True)
            conf = d / "haproxy.cfg"
            conf.write_text(f"""
global
    nbthread {WORKERS}
    maxconn 5000
    tune.bufsize 16384

defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
    timeout http-request 10s

frontend gate
    bind 127.0.0.1:{port}
    unique-id-format %[rand,hex]%[rand,hex]
    http-request set-header X-Request-Id %[unique-id]
    default_backend tool_gate

backend tool_gate
    server upstream 127.0.0.1:{self.upstream_port} maxconn 1000
""")
            argv = ["haproxy", "-f", str(conf), "-db"]
            env = None
            ready = lambda: http_status(port) == 200  # noqa: E731
            admin = None
        elif target == "sig-gate":
            admin = free_port()
            argv = [str(GATE), "serve"]
            env = gate_env(port, admin, self.upstream_port)
            ready = lambda: http_status(admin, "/readyz") == 200  # noqa: E731
        else:
            raise ValueError(target)
        popen = subprocess.Popen(
            pinned(PROXY_CPUS, argv), cwd=self.dir, env=env,
            stdout=subprocess.DEVNULL, stderr=open(self.dir / f"{target}.log", "ab"),
            start_new_session=True)
        proc = Proc(target, popen, port, admin)
        self.running.append(proc)
        wait_for(ready, popen, target)
        return proc

    def stop(self, proc: Proc) -> None:
        if proc is self.upstream:
            return
        proc.stop()
        self.running.remove(proc)

    def close(self) -> None:
        for proc in list(self.running):
            proc.stop()
        self.running.clear()
        if self.upstream:
            self.upstream.stop()


# Replay cache bound for the benchmarked gate (see gate_env).
NONCE_CACHE_CAPACITY = 4_000_000


def gate_env(port: int, admin: int, upstream: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GATE_", "INTERSERVICE_", "REQUIRE_SIGNATURE", "TOOL_GATE_"))}
    env.update({
        "INTERSERVICE_HMAC_SECRET": SECRET,
        "GATE_LISTEN": f"127.0.0.1:{port}",
        "GATE_ADMIN_LISTEN": f"127.0.0.1:{admin}",
        "GATE_UPSTREAM": f"http://127.0.0.1:{upstream}",
        "GATE_LOG_FORMAT": "json",
        # Every request of a round carries a fresh nonce, kept for the 300 s window: a round
        # (the closed loop, then three open-loop rates) sends about 850,000 on this machine, so
        # the default million would fill during the last rate and the gate would fail closed
        # with 503 replay cache full, which is not the path being measured.
        "GATE_NONCE_CACHE_CAPACITY": str(NONCE_CACHE_CAPACITY),
    })
    return env


def wait_for(ready, popen: subprocess.Popen, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            sys.exit(f"bench: {what} exited with {popen.returncode} before it was ready")
        if ready():
            return
        time.sleep(0.01)
    sys.exit(f"bench: {what} not ready after {timeout} s")


# ---------------------------------------------------------------------------------------------
# load

@dataclass
class SignedBatch:
    """A directory of pre-signed requests and how far into it the round has used."""
    dir: Path
    record_len: int
    count: int
    used: int = 0

    def take(self, n: int) -> tuple[int, int]:
        first = self.used
        if first + n > self.count:
            sys.exit(f"bench: out of pre-signed requests ({first}+{n} > {self.count})")
        self.used += n
        return first, n


def sign_batch(workdir: Path, count: int, name: str) -> SignedBatch:
    out = workdir / name
    env = dict(os.environ, INTERSERVICE_HMAC_SECRET=SECRET)
    line = subprocess.run(
        [str(LOADGEN), "sign", "--out", str(out), "--count", str(count),
         "--body", str(workdir / "body.json"), "--target", TARGET_PATH, "--host", HOST],
        env=env, check=True, capture_output=True, text=True).stdout
    meta = json.loads(line)
    return SignedBatch(out, meta["record_len"], meta["count"])


def wrk(port: int, seconds: float, batch: SignedBatch, first: int, count: int) -> dict:
    argv = pinned(CLIENT_CPUS, [
        "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{round(seconds)}s", "--timeout", "5s", "-s", str(LUA),
        f"http://127.0.0.1:{port}/", "--", str(batch.dir), str(batch.record_len), str(first),
        str(count), "1"])
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    line = [l for l in out.splitlines() if l.startswith("{")][-1]
    result = json.loads(line)
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["failed"] = (result["status_errors"] + result["read_errors"] + result["write_errors"]
                        + result["connect_errors"] + result["timeouts"])
    return result


def open_loop(port: int, rate: float, seconds: float, batch: SignedBatch, first: int,
              count: int) -> dict:
    argv = pinned(CLIENT_CPUS, [
        str(LOADGEN), "open", "--addr", f"127.0.0.1:{port}", "--requests", str(batch.dir),
        "--record-len", str(batch.record_len), "--first", str(first), "--count", str(count),
        "--rate", str(rate), "--duration", str(seconds), "--connections", str(OPEN_CONNECTIONS)])
    return json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)


def oha(port: int, rate: float, seconds: float, workdir: Path) -> dict | None:
    """oha at a fixed rate with latency correction. It sends one fixed request over and over,
    so it cannot carry a fresh nonce per request: used for the targets that do not verify."""
    if not OHA.exists():
        return None
    argv = pinned(CLIENT_CPUS, [
        str(OHA), "--no-tui", "--output-format", "json", "-q", str(rate), "--latency-correction",
        "-z", f"{seconds}s", "-c", str(OPEN_CONNECTIONS), "-m", "POST", "-T", "application/json",
        "-D", str(workdir / "body.json"), "-H", f"Host: {HOST}",
        f"http://127.0.0.1:{port}{TARGET_PATH}"])
    try:
        out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=seconds + 30)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        log(f"oha failed: {err}")
        return None
    data = json.loads(out.stdout)
    pct = data.get("latencyPercentiles", {})
    summary = data.get("summary", {})
    codes = data.get("statusCodeDistribution", {})
    return {
        "rate": rate,
        "achieved_rate": summary.get("requestsPerSec"),
        "p50_us": (pct.get("p50") or 0) * 1e6,
        "p99_us": (pct.get("p99") or 0) * 1e6,
        "p999_us": (pct.get("p99.9") or 0) * 1e6,
        "non_2xx": sum(v for k, v in codes.items() if not k.startswith("2")),
    }


def metric(admin_port: int, name: str) -> float:
    with socket.create_connection(("127.0.0.1", admin_port), timeout=2) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    for line in data.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


# ---------------------------------------------------------------------------------------------
# phases

def calibrate(lab: Lab, workdir: Path) -> dict[str, float]:
    """Short closed-loop runs per target, two interleaved passes, keeping each target's best:
    sizes the pre-signed batches and picks the fixed rates of the open-loop runs (fractions of
    the slowest proxy's maximum). Noise on a shared machine only ever lowers a maximum, so the
    best of two is the steadier estimate."""
    seconds = 2 if QUICK else 3
    batch = sign_batch(workdir, 400_000, "calibrate")
    best: dict[str, float] = {}
    for _ in range(1 if QUICK else 2):
        for target in TARGETS:
            proc = lab.start(target)
            batch.used = 0
            first, count = batch.take(batch.count)
            r = wrk(proc.port, seconds, batch, first, count)
            best[target] = max(best.get(target, 0.0), r["rps"])
            log(f"calibration {target:9s} {r['rps']:9.0f} req/s (failed {r['failed']})")
            lab.stop(proc)
    return best


def run_round(lab: Lab, workdir: Path, index: int, rates: list[float], per_run: int) -> dict:
    """One round: every target started fresh and side by side (idle proxies cost nothing),
    then measured in turn in short slices (closed loop), and rate by rate (open loop), so the
    machine's noise, which drifts over tens of seconds, falls on all of them alike."""
    order = list(TARGETS[index % len(TARGETS):] + TARGETS[:index % len(TARGETS)])
    per_sec = per_run // (WARMUP_SECS + CLOSED_SECS)
    slice_secs = CLOSED_SECS // SLICES
    need = per_run + sum(int(r * OPEN_SECS) + 1 for r in rates) + 10
    batch = sign_batch(workdir, need, f"round{index}")
    # Every target reads the same records in the same order (identical bytes on the wire);
    # sig-gate, a process of its own, sees each nonce once.
    cursor = {t: 0 for t in order}

    def take(target: str, n: int) -> tuple[int, int]:
        first = cursor[target]
        if first + n > batch.count:
            sys.exit(f"bench: out of pre-signed requests ({first}+{n} > {batch.count})")
        cursor[target] += n
        return first, n

    procs = {t: lab.start(t) for t in order}
    pids = {t: procs[t].pids() for t in order}
    res: dict[str, dict] = {t: {"rss_fresh_kib": status_kib(pids[t], "VmRSS"),
                                "workers": threads(procs[t].popen.pid) if t == "sig-gate" else None}
                            for t in order}
    for t in order:
        wrk(procs[t].port, WARMUP_SECS, batch, *take(t, per_sec * WARMUP_SECS))
    gate = procs.get("sig-gate")
    entries0 = metric(gate.admin_port, "sig_gate_nonce_cache_entries")
    rss0 = status_kib(pids["sig-gate"], "VmRSS")
    slices: dict[str, list[dict]] = {t: [] for t in order}
    for _ in range(SLICES):
        for t in order:
            cpu0 = cpu_seconds(pids[t])
            t0 = time.monotonic()
            r = wrk(procs[t].port, slice_secs, batch, *take(t, per_sec * slice_secs))
            r["wall"] = time.monotonic() - t0
            r["cpu"] = cpu_seconds(pids[t]) - cpu0
            slices[t].append(r)
    res["sig-gate"]["replay_entries_added"] = (
        metric(gate.admin_port, "sig_gate_nonce_cache_entries") - entries0)
    res["sig-gate"]["replay_rss_delta_kib"] = status_kib(pids["sig-gate"], "VmRSS") - rss0
    for t in order:
        sl = slices[t]
        requests = sum(x["requests"] for x in sl)
        cpu = sum(x["cpu"] for x in sl)
        res[t]["closed"] = {
            "requests": requests,
            "rps": requests / (sum(x["duration_us"] for x in sl) / 1e6),
            # Latency percentiles cannot be merged exactly across runs: median of the slices.
            **{k: statistics.median(x[k] for x in sl)
               for k in ("lat_p50_us", "lat_p99_us", "lat_p999_us")},
            "failed": sum(x["failed"] for x in sl),
            "wrapped": sum(x["wrapped"] for x in sl),
            "slices_rps": [x["rps"] for x in sl],
            "slices_cpu_us": [x["cpu"] * 1e6 / max(x["requests"], 1) for x in sl],
        }
        res[t]["cpu_us_per_req"] = cpu * 1e6 / max(requests, 1)
        res[t]["cpu_util"] = cpu / sum(x["wall"] for x in sl)
        res[t]["open"] = []
    for rate in rates:
        for t in order:
            c0 = cpu_seconds(pids[t])
            o = open_loop(procs[t].port, rate, OPEN_SECS, batch, *take(t, int(rate * OPEN_SECS) + 1))
            o["cpu_us_per_req"] = (cpu_seconds(pids[t]) - c0) * 1e6 / max(o["completed"], 1)
            res[t]["open"].append(o)
    if index == 0:
        # The cross-check of the open-loop generator: first round only, targets that do not
        # verify (oha repeats one request, so it cannot carry fresh nonces).
        for t in order:
            if t != "sig-gate":
                res[t]["oha"] = [oha(procs[t].port, rate, OPEN_SECS, workdir) for rate in rates]
    for t in order:
        res[t]["peak_rss_kib"] = status_kib(pids[t], "VmHWM")
    res["sig-gate"]["rejected"] = metric(gate.admin_port,
                                         'sig_gate_requests_total{outcome="rejected"}')
    res["sig-gate"]["replay_entries_end"] = metric(gate.admin_port, "sig_gate_nonce_cache_entries")
    for t in order:
        lab.stop(procs[t])
    mid = len(rates) // 2
    for t in order:
        r = res[t]
        log(f"round {index + 1} {t:9s} {r['closed']['rps']:9.0f} req/s  "
            f"{r['cpu_us_per_req']:6.1f} us cpu/req  p99@{rate_label(rates[mid])} "
            f"{r['open'][mid]['p99_us']:7.0f} us  peak {r['peak_rss_kib'] / 1024:5.1f} MiB"
            + (f"  failed {r['closed']['failed']}" if r["closed"]["failed"] else ""))
    return res


def rate_label(rate: float) -> str:
    return f"{rate / 1000:g}k" if rate >= 1000 else f"{rate:g}"


def startup_times(lab: Lab) -> dict[str, list[float]]:
    """Spawn to ready: sig-gate's first 200 on /readyz; nginx's and HAProxy's first proxied 200."""
    out: dict[str, list[float]] = {t: [] for t in PROXIES}
    for target in PROXIES:  # one unmeasured start each: binaries and libraries into page cache
        time_to_ready(lab, target)
    # Precise measurement: poll every 0.5 ms from spawn.
    for _ in range(STARTS):
        for target in PROXIES:
            out[target].append(time_to_ready(lab, target))
    return out


def time_to_ready(lab: Lab, target: str) -> float:
    port = free_port()
    admin = free_port()
    d = lab.dir
    if target == "sig-gate":
        argv, env = [str(GATE), "serve"], gate_env(port, admin, lab.upstream_port)
        probe_port, path = admin, "/readyz"
    else:
        # Reuse the configs written by Lab.start with a fresh port.
        env = None
        probe_port, path = port, "/"
        if target == "nginx":
            conf = (d / "nginx" / "nginx.conf").read_text()
            conf = re.sub(r"listen 127\.0\.0\.1:\d+", f"listen 127.0.0.1:{port}", conf)
            (d / "nginx" / "start.conf").write_text(conf)
            argv = ["nginx", "-p", str(d / "nginx"), "-c", str(d / "nginx" / "start.conf"),
                    "-e", "stderr", "-g", "daemon off;"]
        else:
            conf = (d / "haproxy" / "haproxy.cfg").read_text()
            conf = re.sub(r"bind 127\.0\.0\.1:\d+", f"bind 127.0.0.1:{port}", conf)
            (d / "haproxy" / "start.cfg").write_text(conf)
            argv = ["haproxy", "-f", str(d / "haproxy" / "start.cfg"), "-db"]
    t0 = time.perf_counter()
    popen = subprocess.Popen(pinned(PROXY_CPUS, argv), cwd=d, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while True:
            if http_status(probe_port, path, timeout=0.2) == 200:
                return (time.perf_counter() - t0) * 1000
            if popen.poll() is not None:
                sys.exit(f"bench: {target} exited during the startup measurement")
            if time.perf_counter() - t0 > 10:
                sys.exit(f"bench: {target} not ready within 10 s")
            time.sleep(0.0005)
    finally:
        Proc(target, popen, port).stop()


def idle_rss(lab: Lab, workdir: Path) -> dict[str, dict]:
    """VmRSS of each proxy holding IDLE_CONNECTIONS keep-alive connections, each of which has
    carried one signed request; median of IDLE_REPEATS fresh starts."""
    batch = sign_batch(workdir, IDLE_CONNECTIONS * len(PROXIES) * IDLE_REPEATS, "idle")
    out = {}
    for target in PROXIES:
        samples = []
        for _ in range(IDLE_REPEATS):
            proc = lab.start(target)
            before = status_kib(proc.pids(), "VmRSS")
            first, count = batch.take(IDLE_CONNECTIONS)
            child = subprocess.Popen(pinned(CLIENT_CPUS, [
                str(LOADGEN), "idle", "--addr", f"127.0.0.1:{proc.port}", "--requests",
                str(batch.dir), "--record-len", str(batch.record_len), "--first", str(first),
                "--count", str(count), "--connections", str(IDLE_CONNECTIONS), "--hold", "3"]),
                stdout=subprocess.PIPE, text=True)
            opened = json.loads(child.stdout.readline())
            time.sleep(1.0)
            rss = status_kib(proc.pids(), "VmRSS")
            still = json.loads(child.stdout.readline())
            child.wait()
            lab.stop(proc)
            samples.append({"rss_kib": rss, "rss_before_kib": before, **opened, **still})
        samples.sort(key=lambda x: x["rss_kib"])
        out[target] = dict(samples[len(samples) // 2], samples_kib=[x["rss_kib"] for x in samples])
        m = out[target]
        log(f"idle {target:9s} {IDLE_CONNECTIONS} keep-alive connections: "
            f"{m['rss_kib'] / 1024:.1f} MiB median of {len(samples)} "
            f"({', '.join(f'{x / 1024:.1f}' for x in m['samples_kib'])}; ok {m['ok']}, "
            f"still open {m['still_open']})")
    return out


def replay_memory() -> dict:
    out = subprocess.run([str(LOADGEN), "replay-mem", "--entries", str(REPLAY_ENTRIES)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def criterion_ratio() -> dict | None:
    group = ROOT / "target" / "criterion" / "verify_1KiB_POST"
    try:
        raw = json.loads((group / "raw_crypto" / "new" / "estimates.json").read_text())
        full = json.loads((group / "full_verification" / "new" / "estimates.json").read_text())
    except OSError:
        return None
    r, f = raw["mean"]["point_estimate"], full["mean"]["point_estimate"]
    return {"raw_ns": r, "full_ns": f, "ratio": f / r}


# ---------------------------------------------------------------------------------------------
# machine

def machine() -> dict:
    def first(cmd: list[str]) -> str:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    commit = first(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "crates",
                            "Cargo.toml", "Cargo.lock"], capture_output=True, text=True).stdout
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "mem_gib": round(int(mem) / 1024 / 1024),
        "kernel": platform.release(),
        "os": first(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "nginx": first(["nginx", "-v"]).replace("nginx version: ", ""),
        "haproxy": first(["haproxy", "-v"]).split(" - ")[0],
        "wrk": first(["wrk", "--version"]).split(" [")[0],
        "oha": first([str(OHA), "--version"]) if OHA.exists() else None,
        "rustc": first(["rustc", "--version"]),
        "sig_gate": commit + (" (with uncommitted changes in src/ or crates/)" if dirty.strip() else ""),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


# ---------------------------------------------------------------------------------------------

def main() -> int:
    started = time.monotonic()
    # SIGTERM or SIGHUP (a closed terminal, a timeout) must still run the cleanup below, or the
    # proxies started here would outlive the benchmark.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    for tool in ("nginx", "haproxy", "wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing (bench/install.sh installs it)")
    for path in (GATE, LOADGEN):
        if not path.exists():
            sys.exit(f"bench: {path} is missing (bench/bench.sh builds it)")
    if not OHA.exists():
        log("oha is not available: the oha cross-check of the open-loop figures is skipped")
    nice = int(os.environ.get("BENCH_NICE", "-10"))
    if nice and os.geteuid() == 0:
        # Every process of the benchmark (proxies, upstream, generators) inherits this, alike:
        # other work on a shared machine then disturbs the measurements less.
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 65536), hard), hard))

    stamp = time.strftime("%Y%m%dT%H%M%S")
    results_dir = BENCH / ".results" / stamp
    results_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="sig-gate-bench-"))
    os.chmod(workdir, 0o755)
    body = ('{"tool":"search","args":{"q":"' + "x" * 1024)[:1024 - 3] + '"}}'
    assert len(body) == 1024
    (workdir / "body.json").write_text(body)
    log(f"proxies pinned to CPU {PROXY_CPUS} ({WORKERS} worker each); "
        f"load generators and upstream on CPU {CLIENT_CPUS}; work dir {workdir}")

    lab = Lab(workdir)
    data: dict = {"machine": machine(), "quick": QUICK, "rounds": ROUNDS,
                  "settings": {"warmup_secs": WARMUP_SECS, "closed_secs": CLOSED_SECS,
                               "open_secs": OPEN_SECS, "connections": CONNECTIONS, "slices": SLICES,
                               "open_connections": OPEN_CONNECTIONS, "workers": WORKERS,
                               "proxy_cpus": PROXY_CPUS, "client_cpus": CLIENT_CPUS,
                               "idle_connections": IDLE_CONNECTIONS, "idle_repeats": IDLE_REPEATS,
                               "starts": STARTS,
                               "upstream_body_bytes": len(UPSTREAM_BODY),
                               "rate_fractions": RATE_FRACTIONS}}
    try:
        lab.start_upstream()
        best = calibrate(lab, workdir)
        slowest = min(best[t] for t in PROXIES)
        rates = [max(100.0, round(slowest * f, -2)) for f in RATE_FRACTIONS]
        data["calibration"] = best
        data["rates"] = rates
        log("open-loop rates: " + ", ".join(f"{r:.0f}" for r in rates) + " req/s")
        fastest = max(best.values())
        per_run = int(fastest * (WARMUP_SECS + CLOSED_SECS) * 1.6) + 1000
        data["round_results"] = []
        for index in range(ROUNDS):
            data["round_results"].append(run_round(lab, workdir, index, rates, per_run))
        data["startup_ms"] = startup_times(lab)
        log("startup to ready (median ms): " + ", ".join(
            f"{t} {statistics.median(v):.1f}" for t, v in data["startup_ms"].items()))
        data["idle"] = idle_rss(lab, workdir)
        data["replay"] = replay_memory()
        data["criterion"] = criterion_ratio()
    finally:
        lab.close()
    data["wall_secs"] = time.monotonic() - started
    data["finished"] = time.strftime("%Y-%m-%d %H:%M %Z")
    (results_dir / "results.json").write_text(json.dumps(data, indent=1))
    summary = report.summarize(data)
    print(report.console(summary))
    if os.environ.get("BENCH_NO_DOCS") != "1":
        (ROOT / "docs" / "benchmarks.md").write_text(report.markdown(data, summary))
        (ROOT / "docs" / "benchmarks.svg").write_text(report.svg(summary))
        log("wrote docs/benchmarks.md and docs/benchmarks.svg")
    shutil.rmtree(workdir, ignore_errors=True)
    log(f"raw results in {results_dir.relative_to(ROOT)}/results.json; "
        f"wall time {data['wall_secs']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
