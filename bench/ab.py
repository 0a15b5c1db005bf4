#!/usr/bin/env python3
"""A/B two sig-gate binaries (and nginx and HAProxy as yardsticks) with the load benchmark's
setup: same upstream, same pre-signed requests, the same workers pinned to the same CPUs
(`bench/run.py`'s layout for `--workers`), interleaved closed-loop runs. For checking a change to
the gate before running the whole `make bench`.

usage: bench/ab.py [--rounds N] [--seconds S] [--workers N] [--no-others] [--cpu-limit CPUS]
                   NAME=BINARY[@W][+redis] [...]
  e.g. bench/ab.py base=target/release/sig-gate new=/tmp/other/target/release/sig-gate
  `@W` runs that binary with GATE_WORKERS=W instead of --workers (same CPUs), e.g.
  bench/ab.py --workers 2 one=target/release/sig-gate@1 two=target/release/sig-gate@2
  `+redis` runs that binary with the replay store on a Redis the run starts (`sig-gate-redis` of
  `bench/run.py`); Redis's own CPU per request is printed beside the gate's, e.g.
  bench/ab.py --no-others memory=target/release/sig-gate redis=target/release/sig-gate+redis
  `--cpu-limit 0.5` runs every proxy under a CFS quota of half a CPU (`make bench`'s capped
  comparison, as root): the proxy's own CPU is then the limit, whatever its neighbours cost.
Prints, per target, the median req/s, proxy CPU µs per request (and Redis's, for `+redis`),
TCP segments sent per request (system-wide `/proc/net/snmp` OutSegs, so load generator and
upstream included), the proxy's context switches per request (preempted, and slept), how busy
each CPU was (`/proc/stat`, whoever ran there: the CPU near 1.00 holds the closed loop), and each
binary's ratio to the first one (per-round ratios, median).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--workers", type=int, default=1,
                        help="workers of every proxy (GATE_WORKERS, worker_processes, nbthread)")
    parser.add_argument("--no-others", action="store_true", help="skip nginx and HAProxy")
    parser.add_argument("--cpu-limit", type=float, metavar="CPUS",
                        help="run every proxy under a CFS quota of this many CPUs")
    parser.add_argument("binaries", nargs="+", metavar="NAME=BINARY")
    args = parser.parse_args()
    gates = dict(b.split("=", 1) for b in args.binaries)
    on_redis = {name for name, spec in gates.items() if spec.endswith("+redis")}
    gates = {name: spec.removesuffix("+redis") for name, spec in gates.items()}
    gate_workers = {name: int(spec.rsplit("@", 1)[1]) if "@" in spec else None
                    for name, spec in gates.items()}
    gates = {name: spec.rsplit("@", 1)[0] for name, spec in gates.items()}
    # SIGTERM or SIGHUP (a closed terminal, a timeout) must still run the cleanup below, or the
    # proxies started here would outlive the benchmark.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    if os.geteuid() == 0:
        os.setpriority(os.PRIO_PROCESS, 0, int(os.environ.get("BENCH_NICE", "-10")))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 65536), hard), hard))

    workdir = Path(tempfile.mkdtemp(prefix="sig-gate-ab-"))
    os.chmod(workdir, 0o755)
    body = ('{"tool":"search","args":{"q":"' + "x" * 1024)[:1024 - 3] + '"}}'
    (workdir / "body.json").write_text(body)
    lab = run.Lab(workdir, run.layout(args.workers))
    cpus = lab.layout.client_cpus
    names = ([] if args.no_others else ["nginx", "haproxy"]) + list(gates)
    results: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    store_cpu: dict[str, list[float]] = {n: [] for n in names}
    segments: dict[str, list[float]] = {n: [] for n in names}
    switches: dict[str, list[list[float]]] = {n: [] for n in names}
    busy: dict[str, list[list[float]]] = {n: [] for n in names}
    per_run = 0
    limit = None
    if args.cpu_limit:
        limit = run.CpuLimit.create(args.cpu_limit, run.CAPPED_PERIOD_US)
        if isinstance(limit, str):
            sys.exit(f"ab: --cpu-limit: {limit}")
    try:
        lab.start_upstream()
        upstream_pids = lab.upstream.pids()
        for r in range(args.rounds):
            batch = run.sign_batch(workdir, max(per_run, 400_000), f"ab{r}")
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                if name in gates:
                    run.GATE = Path(gates[name]).resolve()
                    target = run.REDIS if name in on_redis else "sig-gate"
                    proc = lab.start(target, gate_workers[name], limit=limit)
                else:
                    proc = lab.start(name, limit=limit)
                store_pids = lab.redis.pids() if lab.redis else []
                batch.used = 0
                first, count = batch.take(batch.count)
                run.wrk(cpus, proc.port, 1, batch, first, count // 5)
                s0 = out_segments()
                res = run.measured_wrk(lab, proc.port, args.seconds,
                                       (batch, first + count // 5, count - count // 5),
                                       proc.pids(), upstream_pids, store_pids)
                requests = max(res["requests"], 1)
                cpu = res["cpu"] * 1e6 / requests
                store = res["store_cpu"] * 1e6 / requests
                store_cpu[name].append(store)
                segments[name].append((out_segments() - s0) / requests)
                switches[name].append([n / requests for n in res["switches"]])
                busy[name].append(run.busy_shares(lab.layout.cpus, [res["cpu_jiffies"]]))
                if res["failed"] or res["wrapped"]:
                    print(f"{name}: {res['failed']} failed, wrapped {res['wrapped']}",
                          file=sys.stderr)
                lab.stop(proc)
                results[name].append((res["rps"], cpu))
                per_run = max(per_run, int(res["rps"] * (args.seconds + 1) * 1.5))
                print(f"round {r + 1} {name:10s} {res['rps']:9.0f} req/s {cpu:6.1f} µs/req"
                      + (f" + Redis {store:4.1f} µs/req" if store_pids else ""), flush=True)
    finally:
        lab.close()
        if limit:
            limit.remove()
        # Signed batches of hundreds of MB: removed however the run ended.
        shutil.rmtree(workdir, ignore_errors=True)
    first = list(gates)[0]
    print(f"\n{'target':10s} {'req/s':>9s} {'cpu µs/req':>11s} {'Redis µs/req':>13s}"
          f" {'segs/req':>9s} {'preempted':>9s} {'slept':>6s}"
          f" {'busy ' + '/'.join(map(str, lab.layout.cpus)):>10s}   ratio to {first}: req/s, cpu")
    for name in names:
        rps = statistics.median(x[0] for x in results[name])
        cpu = statistics.median(x[1] for x in results[name])
        rr = statistics.median(a[0] / b[0] for a, b in zip(results[name], results[first]))
        rc = statistics.median(a[1] / b[1] for a, b in zip(results[name], results[first]))
        segs = statistics.median(segments[name])
        store = f"{statistics.median(store_cpu[name]):13.1f}" if name in on_redis else " " * 13
        slept, preempted = (statistics.median(x[i] for x in switches[name]) for i in (0, 1))
        cpus_busy = "/".join(f"{statistics.median(x[str(cpu)] for x in busy[name]):.2f}"
                             for cpu in lab.layout.cpus)
        print(f"{name:10s} {rps:9.0f} {cpu:11.1f} {store} {segs:9.2f} {preempted:9.3f}"
              f" {slept:6.3f} {cpus_busy:>10s}   {rr:.2f}x  {rc:.2f}x")
    return 0


def out_segments() -> int:
    """TCP segments this machine has sent (`/proc/net/snmp`, Tcp OutSegs)."""
    tcp = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
           if line.startswith("Tcp:")]
    return int(tcp[1][tcp[0].index("OutSegs")])


if __name__ == "__main__":
    sys.exit(main())
