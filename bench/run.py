#!/usr/bin/env python3
"""The load benchmark behind `make bench`: sig-gate against nginx and HAProxy, measured in the
same run on this machine, written to docs/benchmarks.md and docs/benchmarks.svg.

Targets, each in front of the same upstream (nginx answering `return 200` with a small JSON
body): direct (no proxy), nginx `proxy_pass` with upstream keepalive, HAProxy, and sig-gate
with full verification and replay protection. Each is measured at every worker count of
BENCH_WORKERS: nginx `worker_processes N`, HAProxy `nbthread N`, sig-gate `GATE_WORKERS=N`, all
pinned to the same N CPUs (see `Layout`); the load generator and the upstream run on the other
CPUs, or share the proxy's when none are left.

Two more sig-gate targets, in the same rounds: `sig-gate-redis`, the same gate and the same
requests with the replay store on a Redis server the round starts on a free loopback port
(persistence off, pinned beside the upstream, its own CPU measured); and `sig-gate-ed25519`,
the gate with a key registry holding one Ed25519 caller key, sent requests signed version 2
with it (closed loop only: throughput and CPU per request).

Beside each proxy's CPU per request, the closed-loop runs record the load generator's and the
upstream's, and the context switches per request of all three (slept and preempted): on
shared CPUs those say how much each costs the others.

On one CPU left for them, the load generator, the upstream and Redis can hold the closed loop
below what the gate could do, and then `sig-gate-redis`'s throughput reads their CPU rather
than the gate's. So each round at one worker also runs sig-gate and sig-gate-redis under a CPU
limit (a CFS quota of CAPPED_CPUS, what a Kubernetes CPU limit sets): the gate's limit is then
the closed loop's, as in a pod at its limit with Redis on other machines, and the throughput
ratio reads what the store costs the gate. It needs a writable cgroup `cpu` controller (v1 or
v2, as root); without one it is skipped and the report says why.

Environment:
  BENCH_QUICK=1     smoke run: one short round per worker count (about four minutes here)
  BENCH_ROUNDS=N    interleaved rounds (default 3: with the Redis and Ed25519 targets, each
                    round takes about two minutes per worker count, and `make bench` as a
                    whole must stay under 25 minutes on a 2-CPU machine)
  BENCH_WORKERS     worker counts to measure (default "1,2"; each at most the CPUs available)
  BENCH_NO_DOCS=1   print the table but leave docs/ untouched
  BENCH_OHA         1: build oha into bench/.tools when it is not there, for the cross-check of
                    the open-loop generator (by default the cross-check runs only when oha is
                    there already: its build takes longer than the benchmark's own builds);
                    0: skip the cross-check
  BENCH_NICE        niceness of every benchmark process when run as root (default -10; 0: off)
  BENCH_STARTED     Unix time `make bench` started (bench/bench.sh sets it): the report's
                    end-to-end wall time then includes the builds and criterion

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
# oha's cross-check runs when bench/.tools holds oha, unless BENCH_OHA=0 (BENCH_OHA=1 builds it).
USE_OHA = os.environ.get("BENCH_OHA") != "0" and OHA.exists()
LUA = BENCH / "wrk" / "signed.lua"

sys.path.insert(0, str(BENCH))
import report  # noqa: E402  (bench/report.py: markdown and SVG)

QUICK = os.environ.get("BENCH_QUICK") == "1"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1" if QUICK else "3"))
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
CAPPED_CPUS = 0.5          # the gate's CPU limit in the capped comparison
CAPPED_PERIOD_US = 100_000  # its CFS period, the one a Kubernetes CPU limit sets (a shorter
                            # one made the gate's CPU per request swing by half between rounds)
SECRET = "bench-secret-not-for-production-0123456789abcdef"
TARGET_PATH = "/tools/call?session=42&stream=false"
HOST = "tool-gate.internal"
UPSTREAM_BODY = '{"ok":true,"result":"bench"}'

PROXIES = ("nginx", "haproxy", "sig-gate")
# sig-gate with the Redis replay store, and with Ed25519 signature version 2.
REDIS = "sig-gate-redis"
ED25519 = "sig-gate-ed25519"
VARIANTS = (REDIS, ED25519)
TARGETS = ("direct",) + PROXIES + VARIANTS
# Targets that verify: each sees a nonce once, and oha (one fixed request) cannot load them.
GATES = ("sig-gate",) + VARIANTS
CLOSED_ONLY = (ED25519,)  # no open-loop runs (its rates would be another table's)
ED_KEY_ID = "bench-caller-ed25519"
AUDIENCE = "tool-gate-bench"


def log(message: str) -> None:
    print(f"bench: {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# CPUs

@dataclass(frozen=True)
class Layout:
    """Where one worker count runs: every proxy gets `workers` workers pinned to the last
    `workers` CPUs; the load generators and the upstream get the CPUs left, or, when none are
    left, share the proxy's (then the generator's own CPU, reported, competes with the proxy's)."""
    workers: int
    proxy_cpus: str
    client_cpus: str

    @property
    def shared(self) -> bool:
        return self.proxy_cpus == self.client_cpus

    @property
    def cpus(self) -> list[int]:
        """Every CPU this layout runs on, proxies' and clients'."""
        return sorted({int(c) for c in f"{self.proxy_cpus},{self.client_cpus}".split(",")})


def layout(workers: int) -> Layout:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("bench: needs at least 2 CPUs (proxy on one, load generator on another)")
    if not 1 <= workers <= len(cpus):
        sys.exit(f"bench: {workers} workers need as many CPUs; this machine has {len(cpus)}")
    proxy = cpus[-workers:]
    client = cpus[:-workers] or cpus
    return Layout(workers, ",".join(map(str, proxy)), ",".join(map(str, client)))


WORKER_COUNTS = [int(w) for w in os.environ.get("BENCH_WORKERS", "1,2").split(",")]
LAYOUTS = [layout(w) for w in WORKER_COUNTS]


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


def cpu_jiffies(cpus: list[int]) -> list[tuple[int, int]]:
    """(busy, total) clock ticks of each of these CPUs so far, from `/proc/stat`. Idle and
    iowait are the not-busy part. Interrupts and softirqs count as busy (loopback TCP is largely
    softirq work), and so does steal (the hypervisor running another machine): either way the
    CPU was not free for the benchmark's processes."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = [int(f) for f in fields[:8]]  # guest time is inside user time already
            times[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    return [times[c] for c in cpus]


def cpu_jiffies_since(before: list[tuple[int, int]], cpus: list[int]) -> list[tuple[int, int]]:
    """(busy, total) clock ticks of each of these CPUs since `before` (`cpu_jiffies(cpus)`)."""
    return [(busy - busy0, total - total0)
            for (busy0, total0), (busy, total) in zip(before, cpu_jiffies(cpus))]


def busy_shares(cpus: list[int], readings: list[list[tuple[int, int]]]) -> dict[str, float]:
    """How busy each CPU was over these readings (`cpu_jiffies_since`, one per run), by CPU
    number: its busy ticks over all its ticks. In a closed loop the CPU near 1.00 is where the
    loop is held, whoever ran on it (bench/analysis.md)."""
    return {str(cpu): sum(r[i][0] for r in readings) / max(sum(r[i][1] for r in readings), 1)
            for i, cpu in enumerate(cpus)}


def context_switches(pids: list[int]) -> tuple[int, int]:
    """Context switches of these processes' threads so far: voluntary (the thread slept, in
    `epoll_wait` for a proxy) and involuntary (it was preempted, on these CPUs mostly by a
    neighbour woken by its own send). A thread that ends between two readings takes its
    counts with it; the proxies' threads live as long as the process."""
    voluntary = involuntary = 0
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                lines = (task / "status").read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                if line.startswith("voluntary_ctxt_switches:"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    involuntary += int(line.split()[1])
    return voluntary, involuntary


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


class CpuLimit:
    """A cgroup with a CFS quota, as a Kubernetes CPU limit sets for a container: the processes
    started in it (`wrap`) get at most `cpus` CPUs of time in each period, all their threads
    together. cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us`)."""

    def __init__(self, path: Path, cpus: float):
        self.path = path
        self.cpus = cpus

    @staticmethod
    def create(cpus: float, period_us: int) -> CpuLimit | str:
        """The cgroup, or why it cannot be made (no cgroup `cpu` controller this process may
        write: not root, or a container without one delegated)."""
        quota_us = int(cpus * period_us)
        name = f"sig-gate-bench-{os.getpid()}"
        v2 = Path("/sys/fs/cgroup")
        v1 = Path("/sys/fs/cgroup/cpu")
        try:
            if (v2 / "cgroup.controllers").exists():
                if "cpu" not in (v2 / "cgroup.controllers").read_text().split():
                    return "cgroup v2 without the cpu controller"
                if "cpu" not in (v2 / "cgroup.subtree_control").read_text().split():
                    (v2 / "cgroup.subtree_control").write_text("+cpu")
                path = v2 / name
                path.mkdir()
                (path / "cpu.max").write_text(f"{quota_us} {period_us}")
            elif (v1 / "cpu.cfs_quota_us").exists():
                path = v1 / name
                path.mkdir()
                (path / "cpu.cfs_period_us").write_text(str(period_us))
                (path / "cpu.cfs_quota_us").write_text(str(quota_us))
            else:
                return "no cgroup cpu controller under /sys/fs/cgroup"
        except OSError as err:
            return f"cannot set a CPU quota: {err}"
        return CpuLimit(path, cpus)

    def wrap(self, argv: list[str]) -> list[str]:
        """argv started inside the cgroup (it moves itself in, then becomes argv)."""
        return ["sh", "-c", f'echo $$ > {self.path / "cgroup.procs"} && exec "$@"', "sh"] + argv

    def throttling(self) -> tuple[int, int]:
        """(periods, periods in which the quota ran out) so far, from `cpu.stat`."""
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        return int(stat["nr_periods"]), int(stat["nr_throttled"])

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass


class Lab:
    """Configs in a temp dir, the upstream, and each target started on demand, all at one
    worker count (`layout`)."""

    def __init__(self, workdir: Path, layout: Layout):
        self.layout = layout
        self.dir = workdir / f"workers{layout.workers}"
        self.dir.mkdir(exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.upstream_port = free_port()
        self.upstream: Proc | None = None
        self.running: list[Proc] = []
        # The Redis server of the running sig-gate-redis, started and stopped with it.
        self.redis: Proc | None = None
        self.ed_key = workdir / "caller-ed25519.pem"
        self.registry = self.dir / "keys.toml"
        self.write_registry()

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
            pinned(self.layout.client_cpus, ["nginx", "-p", str(conf.parent), "-c", str(conf), "-e", "stderr",
                                 "-g", "daemon off;"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self.upstream = Proc("upstream", popen, self.upstream_port)
        wait_for(lambda: http_status(self.upstream_port) == 200, popen, "upstream nginx")

    def start(self, target: str, gate_workers: int | None = None,
              limit: CpuLimit | None = None) -> Proc:
        """Start `target`; sig-gate with `gate_workers` workers instead of the layout's when
        given (bench/ab.py compares worker counts on one layout); inside `limit`'s cgroup when
        given."""
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
        listen 127.0.0.1:{port} reuseport backlog=4096;
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
    }}""", workers=self.layout.workers)
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
    nbthread {self.layout.workers}
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
        elif target in GATES:
            admin = free_port()
            argv = [str(GATE), "serve"]
            env = gate_env(port, admin, self.upstream_port, gate_workers or self.layout.workers)
            if target == REDIS:
                self.start_redis()
                env["GATE_REPLAY_STORE"] = f"redis://127.0.0.1:{self.redis.port}"
            elif target == ED25519:
                self.write_registry()
                env["GATE_KEYS_FILE"] = str(self.registry)
                env["GATE_AUDIENCE"] = AUDIENCE
            ready = lambda: http_status(admin, "/readyz") == 200  # noqa: E731
        else:
            raise ValueError(target)
        argv = pinned(self.layout.proxy_cpus, argv)
        popen = subprocess.Popen(
            limit.wrap(argv) if limit else argv, cwd=self.dir, env=env,
            stdout=subprocess.DEVNULL, stderr=open(self.dir / f"{target}.log", "ab"),
            start_new_session=True)
        proc = Proc(target, popen, port, admin)
        self.running.append(proc)
        wait_for(ready, popen, target)
        return proc

    def start_redis(self) -> None:
        """A fresh Redis for sig-gate-redis on a free loopback port, persistence off, pinned
        beside the upstream (a store is a backing service, like the upstream)."""
        assert self.redis is None, "one sig-gate-redis at a time"
        port = free_port()
        d = self.dir / "redis"
        d.mkdir(exist_ok=True)
        popen = subprocess.Popen(
            pinned(self.layout.client_cpus, [
                "redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                "--appendonly", "no", "--dir", str(d), "--daemonize", "no",
                "--loglevel", "warning"]),
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "redis.log", "ab"),
            start_new_session=True)
        self.redis = Proc("redis", popen, port)
        wait_for(lambda: redis_ping(port), popen, "redis-server")

    def write_registry(self) -> None:
        """The key registry of sig-gate-ed25519: one Ed25519 caller key, made once per run
        with `sig-gate keygen` (the bench's signer reads the private key)."""
        if not self.ed_key.exists():
            public = subprocess.run([str(GATE), "keygen", "--ed25519", "--out", str(self.ed_key)],
                                    check=True, capture_output=True, text=True).stdout.strip()
            (self.ed_key.parent / "caller-ed25519.pub").write_text(public)
        public = (self.ed_key.parent / "caller-ed25519.pub").read_text()
        self.registry.write_text(f"""[[key]]
id = "{ED_KEY_ID}"
caller = "bench-caller"
alg = "ed25519"
public_key = "{public}"
""")

    def stop(self, proc: Proc) -> None:
        if proc is self.upstream:
            return
        proc.stop()
        self.running.remove(proc)
        if proc.name == REDIS and self.redis:
            self.redis.stop()
            self.redis = None

    def close(self) -> None:
        for proc in list(self.running):
            self.stop(proc)
        if self.upstream:
            self.upstream.stop()


# Replay cache bound for the benchmarked gate (see gate_env).
NONCE_CACHE_CAPACITY = 4_000_000


def gate_env(port: int, admin: int, upstream: int, workers: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GATE_", "INTERSERVICE_", "REQUIRE_SIGNATURE", "TOOL_GATE_"))}
    env.update({
        "INTERSERVICE_HMAC_SECRET": SECRET,
        "GATE_LISTEN": f"127.0.0.1:{port}",
        "GATE_ADMIN_LISTEN": f"127.0.0.1:{admin}",
        "GATE_UPSTREAM": f"http://127.0.0.1:{upstream}",
        "GATE_LOG_FORMAT": "json",
        "GATE_WORKERS": str(workers),
        # Every request of a round carries a fresh nonce, kept for the 300 s window: a round
        # (the closed loop, then three open-loop rates) sends about 850,000 on this machine, so
        # the default million would fill during the last rate and the gate would fail closed
        # with 503 replay cache full, which is not the path being measured.
        "GATE_NONCE_CACHE_CAPACITY": str(NONCE_CACHE_CAPACITY),
    })
    return env


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


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


class Cursors:
    """Each target's own place in the batch of pre-signed requests it reads: targets sharing a
    batch read the same records in the same order (identical bytes on the wire), and each
    gate, a process with a replay store of its own, sees each nonce once."""

    def __init__(self, batch_of: dict[str, SignedBatch]):
        self.batch_of = batch_of
        self.at = dict.fromkeys(batch_of, 0)

    def take(self, target: str, n: int) -> tuple[SignedBatch, int, int]:
        batch, first = self.batch_of[target], self.at[target]
        if first + n > batch.count:
            sys.exit(f"bench: out of pre-signed requests ({first}+{n} > {batch.count})")
        self.at[target] += n
        return batch, first, n


def sign_batch(workdir: Path, count: int, name: str, ed_key: Path | None = None) -> SignedBatch:
    """`count` requests signed version 1 with the shared secret, or version 2 with the Ed25519
    caller key `ed_key` (sig-gate-ed25519's)."""
    out = workdir / name
    env = dict(os.environ, INTERSERVICE_HMAC_SECRET=SECRET)
    v2 = (["--ed25519-key", str(ed_key), "--key-id", ED_KEY_ID, "--audience", AUDIENCE]
          if ed_key else [])
    line = subprocess.run(
        [str(LOADGEN), "sign", "--out", str(out), "--count", str(count),
         "--body", str(workdir / "body.json"), "--target", TARGET_PATH, "--host", HOST] + v2,
        env=env, check=True, capture_output=True, text=True).stdout
    meta = json.loads(line)
    return SignedBatch(out, meta["record_len"], meta["count"])


def measured_child(argv: list[str]) -> tuple[str, dict]:
    """Run a load generator to completion: its stdout, and the CPU seconds (user and system)
    and context switches it used (it is this process's only child running meanwhile)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return out, {
        "gen_cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "gen_switches": [after.ru_nvcsw - before.ru_nvcsw, after.ru_nivcsw - before.ru_nivcsw],
    }


def wrk(cpus: str, port: int, seconds: float, batch: SignedBatch, first: int, count: int) -> dict:
    argv = pinned(cpus, [
        "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{round(seconds)}s", "--timeout", "5s", "-s", str(LUA),
        f"http://127.0.0.1:{port}/", "--", str(batch.dir), str(batch.record_len), str(first),
        str(count), "1"])
    out, usage = measured_child(argv)
    line = [l for l in out.splitlines() if l.startswith("{")][-1]
    result = json.loads(line) | usage
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["failed"] = (result["status_errors"] + result["read_errors"] + result["write_errors"]
                        + result["connect_errors"] + result["timeouts"])
    return result


def open_loop(cpus: str, port: int, rate: float, seconds: float, batch: SignedBatch, first: int,
              count: int) -> dict:
    argv = pinned(cpus, [
        str(LOADGEN), "open", "--addr", f"127.0.0.1:{port}", "--requests", str(batch.dir),
        "--record-len", str(batch.record_len), "--first", str(first), "--count", str(count),
        "--rate", str(rate), "--duration", str(seconds), "--connections", str(OPEN_CONNECTIONS)])
    out, usage = measured_child(argv)
    return json.loads(out) | usage


def oha(cpus: str, port: int, rate: float, seconds: float, workdir: Path) -> dict | None:
    """oha at a fixed rate with latency correction. It sends one fixed request over and over,
    so it cannot carry a fresh nonce per request: used for the targets that do not verify."""
    if not USE_OHA:
        return None
    argv = pinned(cpus, [
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

def measured_wrk(lab: Lab, port: int, seconds: float, work: tuple[SignedBatch, int, int],
                 pids: list[int], upstream_pids: list[int], store_pids: list[int]) -> dict:
    """One closed-loop wrk run against the target on `port`, with what it cost beside wrk's own
    figures: the target's CPU seconds and context switches (`pids`), the upstream's, the
    store's CPU (`store_pids`: its Redis, or none), and each CPU's busy and total ticks."""
    cpu0, up0, store0 = (cpu_seconds(p) for p in (pids, upstream_pids, store_pids))
    sw0, up_sw0 = context_switches(pids), context_switches(upstream_pids)
    jiffies0 = cpu_jiffies(lab.layout.cpus)
    t0 = time.monotonic()
    r = wrk(lab.layout.client_cpus, port, seconds, *work)
    r["wall"] = time.monotonic() - t0
    r["cpu"] = cpu_seconds(pids) - cpu0
    r["upstream_cpu"] = cpu_seconds(upstream_pids) - up0
    r["store_cpu"] = cpu_seconds(store_pids) - store0
    r["switches"] = [b - a for a, b in zip(sw0, context_switches(pids))]
    r["upstream_switches"] = [b - a for a, b in zip(up_sw0, context_switches(upstream_pids))]
    r["cpu_jiffies"] = cpu_jiffies_since(jiffies0, lab.layout.cpus)
    return r


def calibrate(lab: Lab, workdir: Path) -> dict[str, float]:
    """Short closed-loop runs per target, two interleaved passes, keeping each target's best:
    sizes the pre-signed batches and picks the fixed rates of the open-loop runs (fractions of
    the slowest proxy's maximum). Noise on a shared machine only ever lowers a maximum, so the
    best of two is the steadier estimate."""
    seconds = 2 if QUICK else 3
    cpus = lab.layout.client_cpus
    batch = sign_batch(workdir, 400_000, f"calibrate-w{lab.layout.workers}")
    # Ed25519 verification costs several times an HMAC: fewer requests do for its runs.
    ed_batch = sign_batch(workdir, 90_000 * lab.layout.workers,
                          f"calibrate-ed-w{lab.layout.workers}", lab.ed_key)
    best: dict[str, float] = {}
    for _ in range(1 if QUICK else 2):
        for target in TARGETS:
            proc = lab.start(target)
            b = ed_batch if target == ED25519 else batch
            b.used = 0
            first, count = b.take(b.count)
            r = wrk(cpus, proc.port, seconds, b, first, count)
            best[target] = max(best.get(target, 0.0), r["rps"])
            log(f"calibration, {lab.layout.workers} worker(s): {target:9s} {r['rps']:9.0f} req/s "
                f"(failed {r['failed']})")
            lab.stop(proc)
    shutil.rmtree(batch.dir, ignore_errors=True)
    shutil.rmtree(ed_batch.dir, ignore_errors=True)
    return best


def run_round(lab: Lab, workdir: Path, index: int, rates: list[float], per_run: dict[str, int],
              cross_check: bool) -> dict:
    """One round at one worker count: every target started fresh and side by side (idle
    proxies cost nothing), then measured in turn in short slices (closed loop), and rate by
    rate (open loop), so the machine's noise, which drifts over tens of seconds, falls on all of
    them alike. With `cross_check`, oha runs the open-loop rates too (nginx, HAProxy, direct).
    `per_run`: the requests one closed-loop run may need, per target."""
    cpus = lab.layout.client_cpus
    order = list(TARGETS[index % len(TARGETS):] + TARGETS[:index % len(TARGETS)])
    per_sec = {t: per_run[t] // (WARMUP_SECS + CLOSED_SECS) for t in order}
    slice_secs = CLOSED_SECS // SLICES
    open_need = sum(int(r * OPEN_SECS) + 1 for r in rates)
    need = max(per_run[t] for t in order if t != ED25519) + open_need + 10
    shared = sign_batch(workdir, need, f"round{index}-w{lab.layout.workers}")
    ed = sign_batch(workdir, per_run[ED25519] + 10, f"round{index}-ed-w{lab.layout.workers}",
                    lab.ed_key)
    # Every target but sig-gate-ed25519 reads the shared batch.
    take = Cursors({t: ed if t == ED25519 else shared for t in order}).take

    procs = {t: lab.start(t) for t in order}
    pids = {t: procs[t].pids() for t in order}
    upstream_pids = lab.upstream.pids()
    redis_pids = lab.redis.pids() if lab.redis else []
    res: dict[str, dict] = {t: {"rss_fresh_kib": status_kib(pids[t], "VmRSS"),
                                "threads": threads(procs[t].popen.pid) if t in GATES else None}
                            for t in order}
    for t in order:
        wrk(cpus, procs[t].port, WARMUP_SECS, *take(t, per_sec[t] * WARMUP_SECS))
    gate = procs.get("sig-gate")
    entries0 = metric(gate.admin_port, "sig_gate_nonce_cache_entries")
    rss0 = status_kib(pids["sig-gate"], "VmRSS")
    slices: dict[str, list[dict]] = {t: [] for t in order}
    for _ in range(SLICES):
        for t in order:
            slices[t].append(measured_wrk(
                lab, procs[t].port, slice_secs, take(t, per_sec[t] * slice_secs), pids[t],
                upstream_pids, redis_pids if t == REDIS else []))
    res["sig-gate"]["replay_entries_added"] = (
        metric(gate.admin_port, "sig_gate_nonce_cache_entries") - entries0)
    res["sig-gate"]["replay_rss_delta_kib"] = status_kib(pids["sig-gate"], "VmRSS") - rss0
    for t in order:
        sl = slices[t]
        requests = sum(x["requests"] for x in sl)
        cpu = sum(x["cpu"] for x in sl)
        wall = sum(x["wall"] for x in sl)
        gen_cpu = sum(x["gen_cpu"] for x in sl)
        upstream_cpu = sum(x["upstream_cpu"] for x in sl)
        store_cpu = sum(x["store_cpu"] for x in sl)
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
        res[t]["cpu_util"] = cpu / wall
        # The load generator's own CPU (wrk), and the upstream's: what the proxy shares the
        # machine with. A generator near one whole CPU is the limit, not the proxy.
        res[t]["gen_cpu_us_per_req"] = gen_cpu * 1e6 / max(requests, 1)
        res[t]["gen_cpu_util"] = gen_cpu / wall
        res[t]["upstream_cpu_us_per_req"] = upstream_cpu * 1e6 / max(requests, 1)
        # How busy each CPU was, which tells the proxy's limit from its neighbours'.
        res[t]["cpus_busy"] = busy_shares(lab.layout.cpus, [x["cpu_jiffies"] for x in sl])
        if t == REDIS:
            # Redis's own CPU, beside the gate's: the store's share of a request.
            res[t]["store_cpu_us_per_req"] = store_cpu * 1e6 / max(requests, 1)
        # Context switches per request, [voluntary, involuntary], of the proxy, the upstream and
        # the generator: where the CPUs are shared, each wake-up of one of them can preempt
        # another, and both sides pay for the switch (bench/analysis.md, "2 workers").
        for key in ("switches", "upstream_switches", "gen_switches"):
            res[t][f"{key}_per_req"] = [sum(x[key][i] for x in sl) / max(requests, 1)
                                        for i in (0, 1)]
        res[t]["open"] = []
    for rate in rates:
        for t in order:
            if t in CLOSED_ONLY:
                continue
            c0 = cpu_seconds(pids[t])
            s0 = cpu_seconds(redis_pids) if t == REDIS else 0.0
            o = open_loop(cpus, procs[t].port, rate, OPEN_SECS,
                          *take(t, int(rate * OPEN_SECS) + 1))
            o["cpu_us_per_req"] = (cpu_seconds(pids[t]) - c0) * 1e6 / max(o["completed"], 1)
            o["gen_cpu_us_per_req"] = o["gen_cpu"] * 1e6 / max(o["completed"], 1)
            if t == REDIS:
                o["store_cpu_us_per_req"] = ((cpu_seconds(redis_pids) - s0) * 1e6
                                             / max(o["completed"], 1))
            res[t]["open"].append(o)
    if cross_check:
        # The cross-check of the open-loop generator: targets that do not verify (oha repeats
        # one request, so it cannot carry fresh nonces).
        for t in order:
            if t not in GATES:
                res[t]["oha"] = [oha(cpus, procs[t].port, rate, OPEN_SECS, workdir)
                                 for rate in rates]
    for t in order:
        res[t]["peak_rss_kib"] = status_kib(pids[t], "VmHWM")
    for t in GATES:
        res[t]["rejected"] = metric(procs[t].admin_port,
                                    'sig_gate_requests_total{outcome="rejected"}')
    res["sig-gate"]["replay_entries_end"] = metric(gate.admin_port, "sig_gate_nonce_cache_entries")
    for t in order:
        lab.stop(procs[t])
    shutil.rmtree(shared.dir, ignore_errors=True)
    shutil.rmtree(ed.dir, ignore_errors=True)
    mid = len(rates) // 2
    for t in order:
        r = res[t]
        p99 = f"{r['open'][mid]['p99_us']:7.0f} us" if r["open"] else "      - us"
        log(f"round {index + 1} {lab.layout.workers}w {t:16s} {r['closed']['rps']:9.0f} req/s  "
            f"{r['cpu_us_per_req']:6.1f} us cpu/req  gen {r['gen_cpu_util']:4.2f} CPU  "
            f"p99@{rate_label(rates[mid])} {p99}  peak {r['peak_rss_kib'] / 1024:5.1f} MiB"
            + (f"  store {r['store_cpu_us_per_req']:.1f} us cpu/req" if t == REDIS else "")
            + (f"  failed {r['closed']['failed']}" if r["closed"]["failed"] else ""))
    return res


def capped_round(lab: Lab, workdir: Path, index: int, per_run: dict[str, int],
                 limit: CpuLimit) -> dict:
    """sig-gate and sig-gate-redis under `limit`, closed loop, in turns of one slice each as in
    `run_round`: the throughput each holds when its own CPU is the limit, and how often the
    quota ran out (a gate seldom throttled was not at its limit, and its figure reads something
    else)."""
    order = ["sig-gate", REDIS] if index % 2 == 0 else [REDIS, "sig-gate"]
    per_sec = per_run["sig-gate"] // (WARMUP_SECS + CLOSED_SECS)
    slice_secs = CLOSED_SECS // SLICES
    batch = sign_batch(workdir, per_run["sig-gate"] + 10, f"capped{index}")
    # Both read the same records (sig-gate-redis with a fresh Redis of its own).
    take = Cursors(dict.fromkeys(order, batch)).take

    procs = {t: lab.start(t, limit=limit) for t in order}
    pids = {t: procs[t].pids() for t in order}
    upstream_pids = lab.upstream.pids()
    redis_pids = lab.redis.pids() if lab.redis else []
    for t in order:
        wrk(lab.layout.client_cpus, procs[t].port, WARMUP_SECS, *take(t, per_sec * WARMUP_SECS))
    slices: dict[str, list[dict]] = {t: [] for t in order}
    for _ in range(SLICES):
        for t in order:
            periods0, throttled0 = limit.throttling()
            r = measured_wrk(lab, procs[t].port, slice_secs, take(t, per_sec * slice_secs),
                             pids[t], upstream_pids, redis_pids if t == REDIS else [])
            periods, throttled = limit.throttling()
            r["periods"], r["throttled"] = periods - periods0, throttled - throttled0
            slices[t].append(r)
    for t in order:
        lab.stop(procs[t])
    shutil.rmtree(batch.dir, ignore_errors=True)
    res = {}
    for t in order:
        sl = slices[t]
        requests = sum(x["requests"] for x in sl)
        res[t] = {
            "requests": requests,
            "rps": requests / (sum(x["duration_us"] for x in sl) / 1e6),
            "cpu_us_per_req": sum(x["cpu"] for x in sl) * 1e6 / max(requests, 1),
            "store_cpu_us_per_req": (sum(x["store_cpu"] for x in sl) * 1e6 / max(requests, 1)
                                     if t == REDIS else None),
            "throttled": sum(x["throttled"] for x in sl) / max(sum(x["periods"] for x in sl), 1),
            "cpus_busy": busy_shares(lab.layout.cpus, [x["cpu_jiffies"] for x in sl]),
            "failed": sum(x["failed"] for x in sl),
        }
        log(f"round {index + 1} {lab.layout.workers}w {t:16s} at {limit.cpus:g} CPU: "
            f"{res[t]['rps']:9.0f} req/s  {res[t]['cpu_us_per_req']:6.1f} us cpu/req  "
            f"throttled in {res[t]['throttled']:.0%} of periods"
            + (f"  store {res[t]['store_cpu_us_per_req']:.1f} us cpu/req" if t == REDIS else "")
            + (f"  failed {res[t]['failed']}" if res[t]["failed"] else ""))
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
        argv = [str(GATE), "serve"]
        env = gate_env(port, admin, lab.upstream_port, lab.layout.workers)
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
    popen = subprocess.Popen(pinned(lab.layout.proxy_cpus, argv), cwd=d, env=env,
                             stdout=subprocess.DEVNULL,
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
            child = subprocess.Popen(pinned(lab.layout.client_cpus, [
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


def criterion_ratio(group_name: str = "verify_1KiB_POST") -> dict | None:
    """Full verification against the raw crypto of one group of `crates/gate/benches/verify.rs`,
    from criterion's last run (bench/bench.sh runs it just before)."""
    group = ROOT / "target" / "criterion" / group_name
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
        "oha": first([str(OHA), "--version"]) if USE_OHA else None,
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
    for tool in ("nginx", "haproxy", "wrk", "taskset", "redis-server"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing (bench/install.sh installs it)")
    for path in (GATE, LOADGEN):
        if not path.exists():
            sys.exit(f"bench: {path} is missing (bench/bench.sh builds it)")
    if not USE_OHA:
        log("oha's cross-check of the open-loop figures is skipped: "
            + ("BENCH_OHA=0" if OHA.exists() else
               "bench/.tools has no oha (BENCH_OHA=1 builds it, once: about 7 minutes here)"))
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
    for lay in LAYOUTS:
        log(f"{lay.workers} worker(s): proxies pinned to CPU {lay.proxy_cpus}; load generators "
            f"and upstream on CPU {lay.client_cpus}")
    log(f"work dir {workdir}")

    labs = {lay.workers: Lab(workdir, lay) for lay in LAYOUTS}
    data: dict = {"machine": machine(), "quick": QUICK, "rounds": ROUNDS,
                  "workers": WORKER_COUNTS,
                  "layouts": {str(lay.workers): {"proxy_cpus": lay.proxy_cpus,
                                                 "client_cpus": lay.client_cpus,
                                                 "shared": lay.shared} for lay in LAYOUTS},
                  "settings": {"warmup_secs": WARMUP_SECS, "closed_secs": CLOSED_SECS,
                               "open_secs": OPEN_SECS, "connections": CONNECTIONS, "slices": SLICES,
                               "open_connections": OPEN_CONNECTIONS,
                               "idle_connections": IDLE_CONNECTIONS, "idle_repeats": IDLE_REPEATS,
                               "starts": STARTS,
                               "upstream_body_bytes": len(UPSTREAM_BODY),
                               "rate_fractions": RATE_FRACTIONS}}
    by_workers: dict[str, dict] = {}
    data["by_workers"] = by_workers
    # The capped comparison (module documentation), at one worker when that is measured.
    capped_workers = 1 if 1 in labs else None
    limit = CpuLimit.create(CAPPED_CPUS, CAPPED_PERIOD_US) if capped_workers else None
    if isinstance(limit, str):
        log(f"sig-gate and sig-gate-redis at a CPU limit: skipped ({limit})")
        data["capped"] = {"skipped": limit}
        limit = None
    elif limit:
        data["capped"] = {"cpus": CAPPED_CPUS, "period_us": CAPPED_PERIOD_US,
                          "workers": capped_workers, "round_results": []}
    try:
        for workers, lab in labs.items():
            lab.start_upstream()
            best = calibrate(lab, workdir)
            slowest = min(best[t] for t in PROXIES)
            rates = [max(100.0, round(slowest * f, -2)) for f in RATE_FRACTIONS]
            # Requests one closed-loop run may need: 1.6 times the calibrated maximum (sig-gate
            # with Ed25519 by its own, the others by the fastest target, as they share one set
            # of signed requests).
            def enough(rps: float) -> int:
                return int(rps * (WARMUP_SECS + CLOSED_SECS) * 1.6) + 1000
            fastest = max(v for t, v in best.items() if t != ED25519)
            by_workers[str(workers)] = {
                "calibration": best, "rates": rates, "round_results": [],
                "per_run": {t: enough(best[ED25519] if t == ED25519 else fastest)
                            for t in TARGETS}}
            log(f"{workers} worker(s): open-loop rates " + ", ".join(f"{r:.0f}" for r in rates)
                + " req/s")
        for index in range(ROUNDS):
            # Worker counts take turns within each round too, in alternating order.
            counts = WORKER_COUNTS if index % 2 == 0 else WORKER_COUNTS[::-1]
            for workers in counts:
                block = by_workers[str(workers)]
                block["round_results"].append(run_round(
                    labs[workers], workdir, index, block["rates"], block["per_run"],
                    cross_check=index == 0 and workers == WORKER_COUNTS[0]))
                if limit and workers == capped_workers:
                    data["capped"]["round_results"].append(capped_round(
                        labs[workers], workdir, index, block["per_run"], limit))
        # Startup and idle memory as a sidecar with the most CPUs measured would run.
        largest = labs[max(WORKER_COUNTS)]
        data["startup_ms"] = startup_times(largest)
        data["startup_workers"] = largest.layout.workers
        log("startup to ready (median ms): " + ", ".join(
            f"{t} {statistics.median(v):.1f}" for t, v in data["startup_ms"].items()))
        data["idle"] = idle_rss(largest, workdir)
        data["replay"] = replay_memory()
        data["criterion"] = criterion_ratio()
        data["criterion_ed25519"] = criterion_ratio("verify_ed25519_v2_1KiB_POST")
    finally:
        for lab in labs.values():
            lab.close()
        if limit:
            limit.remove()
        # Signed batches of hundreds of MB: removed however the run ended.
        shutil.rmtree(workdir, ignore_errors=True)
    data["wall_secs"] = time.monotonic() - started
    if os.environ.get("BENCH_STARTED"):
        # From `make bench`'s start: the builds and criterion included.
        data["total_secs"] = time.time() - float(os.environ["BENCH_STARTED"])
    data["finished"] = time.strftime("%Y-%m-%d %H:%M %Z")
    (results_dir / "results.json").write_text(json.dumps(data, indent=1))
    summary = report.summarize(data)
    print(report.console(summary))
    if os.environ.get("BENCH_NO_DOCS") != "1":
        (ROOT / "docs" / "benchmarks.md").write_text(report.markdown(data, summary))
        (ROOT / "docs" / "benchmarks.svg").write_text(report.svg(summary))
        log("wrote docs/benchmarks.md and docs/benchmarks.svg")
    log(f"raw results in {results_dir.relative_to(ROOT)}/results.json; "
        f"wall time {data['wall_secs']:.0f} s"
        + (f", {data['total_secs']:.0f} s since make bench started" if "total_secs" in data
           else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
