"""Turn bench/run.py's raw results into the summary, docs/benchmarks.md and the SVG chart.

Every figure is a median over the interleaved rounds; every ratio is computed within each round
(sig-gate against the proxy measured minutes before or after it on the same machine) and the
median of those per-round ratios is reported.

`python3 bench/report.py RESULTS.json` rewrites the docs from a saved run.
"""

from __future__ import annotations

import html
import math
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("direct", "nginx", "haproxy", "sig-gate")
PROXIES = ("nginx", "haproxy", "sig-gate")
OTHERS = ("nginx", "haproxy")
# sig-gate with the Redis replay store, and with Ed25519 version 2 signatures: compared with
# sig-gate's own row (memory store, HMAC version 1), measured in the same rounds.
REDIS = "sig-gate-redis"
ED25519 = "sig-gate-ed25519"
VARIANTS = (REDIS, ED25519)
LABEL = {"direct": "direct (no proxy)", "nginx": "nginx", "haproxy": "HAProxy",
         "sig-gate": "sig-gate", REDIS: "sig-gate, Redis store",
         ED25519: "sig-gate, Ed25519 v2"}
COLOR = {"direct": "#9e9e9e", "nginx": "#4a8f3c", "haproxy": "#3f6fb5", "sig-gate": "#d9541e"}

STARTUP_TARGET_MS = 100
IDLE_TARGET_MIB = 32
REPLAY_TARGET_BYTES = 48
CRITERION_TARGET = 1.3
CRITERION_ED25519_TARGET = 1.1
# The Redis store against the memory store (issue 4/8): the gate's CPU per request at most
# 1.3 times, throughput at least 0.8 times.
REDIS_CPU_TARGET = 1.3
REDIS_RPS_TARGET = 0.8


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def rate_label(rate: float) -> str:
    return f"{rate / 1000:g}k" if rate >= 1000 else f"{rate:g}"


# ---------------------------------------------------------------------------------------------
# summary

def blocks_of(data: dict) -> dict[int, dict]:
    """The measurements at each worker count (a results file from before worker counts holds
    one block, at one worker)."""
    if "by_workers" in data:
        return {int(w): b for w, b in data["by_workers"].items()}
    return {1: {"rates": data["rates"], "round_results": data["round_results"],
                "calibration": data.get("calibration", {})}}


def cpus_busy(rs: list[dict]) -> dict[str, float] | None:
    """How busy each CPU was in one target's closed-loop runs, the median over the rounds;
    None for results files from before it was recorded."""
    if not all("cpus_busy" in r for r in rs):
        return None
    return {cpu: med([r["cpus_busy"][cpu] for r in rs]) for cpu in rs[0]["cpus_busy"]}


def fmt_busy(busy: dict[str, float] | None) -> str:
    return " / ".join(f"{v:.2f}" for v in busy.values()) if busy else "-"


def busy_label(B: dict) -> str:
    """"CPU 0 / CPU 1" for the CPUs `fmt_busy` lists, as the results name them."""
    for b in B.values():
        for e in b["targets"].values():
            if e.get("cpus_busy"):
                return " / ".join(f"CPU {cpu}" for cpu in e["cpus_busy"])
    return "each CPU"


def summarize_block(block: dict) -> dict:
    """Targets and ratios at one worker count."""
    rounds = block["round_results"]
    rates = block["rates"]
    targets = {}
    for t in TARGETS:
        rs = [r[t] for r in rounds]
        entry = {
            "rps": med([r["closed"]["rps"] for r in rs]),
            "rps_min": min(r["closed"]["rps"] for r in rs),
            "rps_max": max(r["closed"]["rps"] for r in rs),
            "closed_p50": med([r["closed"]["lat_p50_us"] for r in rs]),
            "closed_p99": med([r["closed"]["lat_p99_us"] for r in rs]),
            "closed_p999": med([r["closed"]["lat_p999_us"] for r in rs]),
            "cpu_us": med([r["cpu_us_per_req"] for r in rs]) if t != "direct" else None,
            "cpu_us_runs": [r["cpu_us_per_req"] for r in rs] if t != "direct" else None,
            "cpu_util": med([r["cpu_util"] for r in rs]),
            "cpu_us_best": (min(x for r in rs for x in r["closed"].get("slices_cpu_us",
                                                                        [r["cpu_us_per_req"]]))
                            if t != "direct" else None),
            "gen_cpu_us": med([r.get("gen_cpu_us_per_req") for r in rs]),
            "gen_cpu_util": med([r.get("gen_cpu_util") for r in rs]),
            "upstream_cpu_us": (med([r.get("upstream_cpu_us_per_req") for r in rs])
                                if t != "direct" else None),
            "cpus_busy": cpus_busy(rs),
            "peak_rss_mib": med([r["peak_rss_kib"] / 1024 for r in rs]) if t != "direct" else None,
            # [voluntary, involuntary] per request; absent from results files before them.
            **{key: ([med([r[key][i] for r in rs]) for i in (0, 1)]
                     if all(key in r for r in rs) else None)
               for key in ("switches_per_req", "upstream_switches_per_req",
                           "gen_switches_per_req")},
            "failed": sum(r["closed"]["failed"] + sum(o["non_2xx"] + o["errors"] for o in r["open"])
                          for r in rs),
            "wrapped": sum(r["closed"]["wrapped"] for r in rs),
            "open": [],
            "oha": [],
        }
        for i, rate in enumerate(rates):
            os_ = [r["open"][i] for r in rs]
            entry["open"].append({
                "rate": rate,
                "achieved": med([o["achieved_rate"] for o in os_]),
                "p50": med([o["p50_us"] for o in os_]),
                "p99": med([o["p99_us"] for o in os_]),
                "p999": med([o["p999_us"] for o in os_]),
                "cpu_us": med([o["cpu_us_per_req"] for o in os_]) if t != "direct" else None,
                "gen_cpu_us": med([o.get("gen_cpu_us_per_req") for o in os_]),
                "send_lag_p99": med([o.get("send_lag_p99_us") for o in os_]),
            })
            ohas = [r["oha"][i] for r in rs if r.get("oha") and r["oha"][i]]
            if ohas:
                entry["oha"].append({
                    "rate": rate,
                    "p50": med([o["p50_us"] for o in ohas]),
                    "p99": med([o["p99_us"] for o in ohas]),
                    "p999": med([o["p999_us"] for o in ohas]),
                    "non_2xx": sum(o["non_2xx"] for o in ohas),
                })
        if t == "sig-gate":
            added = sum(r.get("replay_entries_added", 0) for r in rs)
            delta = sum(r.get("replay_rss_delta_kib", 0) for r in rs)
            entry["replay_rss_bytes_per_entry"] = delta * 1024 / added if added else None
            entry["rejected"] = sum(r.get("rejected", 0) for r in rs)
            entry["replay_entries_end"] = med([r.get("replay_entries_end") for r in rs])
        targets[t] = entry

    ratios = {}
    for other in OTHERS:
        def per_round(fn):
            return med([fn(r["sig-gate"], r[other]) for r in rounds])
        ratios[other] = {
            "rps": per_round(lambda s, o: s["closed"]["rps"] / o["closed"]["rps"]),
            "cpu_us": per_round(lambda s, o: s["cpu_us_per_req"] / o["cpu_us_per_req"]),
            "closed_p99": per_round(lambda s, o: s["closed"]["lat_p99_us"] / o["closed"]["lat_p99_us"]),
            "cpu_us_best": targets["sig-gate"]["cpu_us_best"] / targets[other]["cpu_us_best"],
            "peak_rss": per_round(lambda s, o: s["peak_rss_kib"] / o["peak_rss_kib"]),
            "open_p50": [per_round(lambda s, o, i=i: s["open"][i]["p50_us"] / o["open"][i]["p50_us"])
                         for i in range(len(rates))],
            "open_p99": [per_round(lambda s, o, i=i: s["open"][i]["p99_us"] / o["open"][i]["p99_us"])
                         for i in range(len(rates))],
            "open_p999": [per_round(lambda s, o, i=i: s["open"][i]["p999_us"] / o["open"][i]["p999_us"])
                          for i in range(len(rates))],
            "open_cpu": [per_round(lambda s, o, i=i: s["open"][i]["cpu_us_per_req"]
                                   / o["open"][i]["cpu_us_per_req"]) for i in range(len(rates))],
        }
    variants = {}
    for v in VARIANTS:
        if not all(v in r for r in rounds):
            continue  # a results file from before the variant rows
        rs = [r[v] for r in rounds]
        variants[v] = {
            "rps": med([r["closed"]["rps"] for r in rs]),
            "cpu_us": med([r["cpu_us_per_req"] for r in rs]),
            "cpu_us_best": min(x for r in rs for x in r["closed"]["slices_cpu_us"]),
            "store_cpu_us": med([r.get("store_cpu_us_per_req") for r in rs]),
            "gen_cpu_util": med([r.get("gen_cpu_util") for r in rs]),
            "cpus_busy": cpus_busy(rs),
            "closed_p99": med([r["closed"]["lat_p99_us"] for r in rs]),
            "peak_rss_mib": med([r["peak_rss_kib"] / 1024 for r in rs]),
            "failed": sum(r["closed"]["failed"] + sum(o["non_2xx"] + o["errors"] for o in r["open"])
                          for r in rs),
            "rejected": sum(r.get("rejected", 0) for r in rs),
            "open": [{"rate": rate,
                      "p99": med([r["open"][i]["p99_us"] for r in rs]),
                      "cpu_us": med([r["open"][i]["cpu_us_per_req"] for r in rs]),
                      "store_cpu_us": med([r["open"][i].get("store_cpu_us_per_req") for r in rs])}
                     for i, rate in enumerate(rates) if all(r["open"] for r in rs)],
            # Against sig-gate's row (memory store, HMAC v1) of the same round.
            "rps_ratio": med([r[v]["closed"]["rps"] / r["sig-gate"]["closed"]["rps"]
                              for r in rounds]),
            "cpu_ratio": med([r[v]["cpu_us_per_req"] / r["sig-gate"]["cpu_us_per_req"]
                              for r in rounds]),
            "open_p99_ratio": [med([r[v]["open"][i]["p99_us"] / r["sig-gate"]["open"][i]["p99_us"]
                                    for r in rounds])
                               for i in range(len(rates)) if all(r[v]["open"] for r in rounds)],
        }
    return {"targets": targets, "ratios": ratios, "rates": rates, "variants": variants}


def summarize_capped(capped: dict | None) -> dict | None:
    """sig-gate with the memory store and with Redis, each under the same CPU limit (bench/run.py,
    `capped_round`): medians over the rounds, ratios per round. None for results files from
    before it; {"skipped": why} when the run could not set a CPU limit."""
    if not capped or "skipped" in capped:
        return capped
    rounds = capped["round_results"]
    if not rounds:
        return None
    out = {"cpus": capped["cpus"], "workers": capped["workers"]}
    for t in ("sig-gate", REDIS):
        rs = [r[t] for r in rounds]
        out[t] = {"rps": med([r["rps"] for r in rs]),
                  "cpu_us": med([r["cpu_us_per_req"] for r in rs]),
                  "store_cpu_us": med([r["store_cpu_us_per_req"] for r in rs]),
                  "throttled": med([r["throttled"] for r in rs]),
                  "cpus_busy": cpus_busy(rs),
                  "failed": sum(r["failed"] for r in rs)}
    out["rps_ratio"] = med([r[REDIS]["rps"] / r["sig-gate"]["rps"] for r in rounds])
    out["cpu_ratio"] = med([r[REDIS]["cpu_us_per_req"] / r["sig-gate"]["cpu_us_per_req"]
                            for r in rounds])
    return out


def summarize(data: dict) -> dict:
    blocks = {w: summarize_block(b) for w, b in sorted(blocks_of(data).items())}
    capped = summarize_capped(data.get("capped"))
    workers = sorted(blocks)
    startup = {t: {"median": med(v), "min": min(v), "max": max(v)}
               for t, v in data.get("startup_ms", {}).items() if v}
    idle = {t: v["rss_kib"] / 1024 for t, v in data.get("idle", {}).items()}
    idle_detail = data.get("idle", {})
    replay = data.get("replay")
    replay_full = replay["points"][-1]["bytes_per_entry"] if replay else None
    crit = data.get("criterion")

    checks = []

    def check(name, value, ok, detail):
        checks.append({"name": name, "value": value, "met": ok, "detail": detail})

    # The load targets, the most workers first (issue 20's targets are at 2 workers).
    for n in reversed(workers):
        b = blocks[n]
        T, rates = b["targets"], b["rates"]
        r_n, r_h = b["ratios"]["nginx"], b["ratios"]["haproxy"]
        at = f" ({workers_label(n)})"
        check("CPU per request <= nginx and <= HAProxy" + at,
              f"{r_n['cpu_us']:.2f}x nginx, {r_h['cpu_us']:.2f}x HAProxy",
              r_n["cpu_us"] <= 1 and r_h["cpu_us"] <= 1,
              f"closed loop; {T['sig-gate']['cpu_us']:.1f} vs {T['nginx']['cpu_us']:.1f} "
              f"and {T['haproxy']['cpu_us']:.1f} us")
        check("Throughput >= both" + at, f"{r_n['rps']:.2f}x nginx, {r_h['rps']:.2f}x HAProxy",
              r_n["rps"] >= 1 and r_h["rps"] >= 1, "closed loop, wrk")
        worst_p99 = [max(r_n["open_p99"][i], r_h["open_p99"][i]) for i in range(len(rates))]
        check("p99 <= both (open loop, every fixed rate)" + at,
              ", ".join(f"{rate_label(rate)}/s: {r_n['open_p99'][i]:.2f}x / {r_h['open_p99'][i]:.2f}x"
                        for i, rate in enumerate(rates)),
              all(w <= 1 for w in worst_p99), "sig-gate p99 / nginx p99, / HAProxy p99")
    # The Redis store against the memory store, at each worker count.
    for n in reversed(workers):
        red = blocks[n]["variants"].get(REDIS)
        if not red:
            continue
        mem = blocks[n]["targets"]["sig-gate"]
        at = f" ({workers_label(n)})"
        check(f"Redis store: gate CPU per request <= {REDIS_CPU_TARGET}x the memory store's" + at,
              f"{red['cpu_ratio']:.2f}x", red["cpu_ratio"] <= REDIS_CPU_TARGET,
              f"closed loop; {red['cpu_us']:.1f} vs {mem['cpu_us']:.1f} us, plus "
              f"{fmt(red['store_cpu_us'])} us in Redis")
        check(f"Redis store: throughput >= {REDIS_RPS_TARGET}x the memory store's" + at,
              f"{red['rps_ratio']:.2f}x", red["rps_ratio"] >= REDIS_RPS_TARGET,
              f"closed loop; {red['rps']:,.0f} vs {mem['rps']:,.0f} req/s"
              + (f"; busy time of {busy_label(blocks)}: {fmt_busy(red['cpus_busy'])} "
                 "(the CPU nearest 1 holds the loop)" if red["cpus_busy"] else ""))
    if capped and "skipped" not in capped:
        at = (f" ({workers_label(capped['workers'])}, the gate at a CPU limit of "
              f"{capped['cpus']:g} CPU)")
        check(f"Redis store: throughput >= {REDIS_RPS_TARGET}x the memory store's" + at,
              f"{capped['rps_ratio']:.2f}x", capped["rps_ratio"] >= REDIS_RPS_TARGET,
              f"closed loop; {capped[REDIS]['rps']:,.0f} vs {capped['sig-gate']['rps']:,.0f} "
              f"req/s, quota spent in {capped[REDIS]['throttled']:.0%} and "
              f"{capped['sig-gate']['throttled']:.0%} of periods")
    if "sig-gate" in startup:
        s = startup["sig-gate"]
        check(f"Startup to ready < {STARTUP_TARGET_MS} ms", f"{s['median']:.1f} ms",
              s["median"] < STARTUP_TARGET_MS,
              f"median of {len(data['startup_ms']['sig-gate'])} starts, "
              f"{s['min']:.1f}-{s['max']:.1f} ms")
    if "sig-gate" in idle:
        d = idle_detail["sig-gate"]
        check(f"RSS < {IDLE_TARGET_MIB} MiB with 1,000 idle keep-alive connections",
              f"{idle['sig-gate']:.1f} MiB", idle["sig-gate"] < IDLE_TARGET_MIB,
              f"{d['open']} connections open, {d['ok']} answered 200, {d['still_open']} still open "
              f"at the end" + (", samples " + ", ".join(f"{x / 1024:.1f}" for x in d["samples_kib"])
                               + " MiB" if d.get("samples_kib") else ""))
    if replay_full is not None:
        check(f"Replay cache memory per entry (aim < {REPLAY_TARGET_BYTES} B)",
              f"{replay_full:.1f} B", replay_full < REPLAY_TARGET_BYTES,
              f"heap bytes at {replay['capacity']:,} entries (the default capacity)")
    if crit:
        check(f"Criterion: full verification <= {CRITERION_TARGET}x raw crypto",
              f"{crit['ratio']:.2f}x", crit["ratio"] <= CRITERION_TARGET,
              f"{crit['full_ns']:.0f} ns vs {crit['raw_ns']:.0f} ns")
    crit_ed = data.get("criterion_ed25519")
    if crit_ed:
        check(f"Criterion: Ed25519 v2 full verification <= {CRITERION_ED25519_TARGET}x ring's "
              "verify plus the body hash", f"{crit_ed['ratio']:.2f}x",
              crit_ed["ratio"] <= CRITERION_ED25519_TARGET,
              f"{crit_ed['full_ns']:.0f} ns vs {crit_ed['raw_ns']:.0f} ns")

    return {"workers": workers, "blocks": blocks, "startup": startup,
            "idle": idle, "idle_detail": idle_detail, "replay": replay, "criterion": crit,
            "capped": capped, "checks": checks}


def workers_label(n: int) -> str:
    return f"{n} worker" + ("" if n == 1 else "s")


# ---------------------------------------------------------------------------------------------
# text

def fmt_us(us) -> str:
    if us is None:
        return "-"
    return f"{us / 1000:.2f} ms" if us >= 10_000 else f"{us:.0f} µs"


def tick_label(us: float) -> str:
    if us >= 1e6:
        return f"{us / 1e6:g} s"
    return f"{us / 1e3:g} ms" if us >= 1e3 else f"{us:g} µs"


def fmt(v, spec=".1f", dash="-") -> str:
    return dash if v is None else format(v, spec)


def ratio_cell(v, lower_is_better: bool) -> str:
    if v is None:
        return "-"
    v2 = round(v, 2)
    better = v2 <= 1 if lower_is_better else v2 >= 1
    return f"{v:.2f}x" + ("" if better else " ✗")


def console(s: dict) -> str:
    lines = []
    for n in s["workers"]:
        b = s["blocks"][n]
        lines += ["", f"{workers_label(n)}:",
                  f"{'target':18s} {'req/s':>9s} {'cpu µs/req':>10s} {'wrk CPUs':>8s} "
                  f"{'peak MiB':>9s}  " + "  ".join(f"p99@{rate_label(r)}/s" for r in b["rates"])]
        for t in TARGETS:
            e = b["targets"][t]
            lines.append(f"{LABEL[t]:18s} {e['rps']:9.0f} {fmt(e['cpu_us']):>10s} "
                         f"{fmt(e['gen_cpu_util'], '.2f'):>8s} {fmt(e['peak_rss_mib']):>9s}  "
                         + "  ".join(f"{fmt_us(o['p99']):>10s}" for o in e["open"]))
        for other in OTHERS:
            r = b["ratios"][other]
            lines.append(f"sig-gate / {LABEL[other]:8s}: req/s {r['rps']:.2f}x, cpu {r['cpu_us']:.2f}x, "
                         "p99 " + ", ".join(f"{v:.2f}x" for v in r["open_p99"])
                         + f", peak RSS {r['peak_rss']:.2f}x")
        for v, e in b["variants"].items():
            lines.append(f"{LABEL[v]:18s} {e['rps']:9.0f} {fmt(e['cpu_us']):>10s} "
                         f"{fmt(e['gen_cpu_util'], '.2f'):>8s} {fmt(e['peak_rss_mib']):>9s}  "
                         + "  ".join(f"{fmt_us(o['p99']):>10s}" for o in e["open"]))
            lines.append(f"{LABEL[v]} / sig-gate: req/s {e['rps_ratio']:.2f}x, gate cpu "
                         f"{e['cpu_ratio']:.2f}x"
                         + (f", Redis {e['store_cpu_us']:.1f} µs cpu/req" if e["store_cpu_us"]
                            else "")
                         + (", p99 " + ", ".join(f"{x:.2f}x" for x in e["open_p99_ratio"])
                            if e["open_p99_ratio"] else ""))
            if e["failed"]:
                lines.append(f"WARNING: {LABEL[v]}: {e['failed']} failed or non-2xx requests")
        for t in TARGETS:
            e = b["targets"][t]
            if e["failed"] or e["wrapped"]:
                lines.append(f"WARNING: {LABEL[t]}: {e['failed']} failed or non-2xx requests, "
                             f"{e['wrapped']} wrap-arounds of the pre-signed requests")
    c = s["capped"]
    if c and "skipped" not in c:
        lines += ["", f"{workers_label(c['workers'])}, "
                      f"the gate at a CPU limit of {c['cpus']:g} CPU:"]
        for t in ("sig-gate", REDIS):
            e = c[t]
            lines.append(f"{LABEL[t]:22s} {e['rps']:9.0f} req/s {fmt(e['cpu_us']):>6s} µs cpu/req"
                         f"  quota spent in {e['throttled']:.0%} of periods"
                         + (f", Redis {e['store_cpu_us']:.1f} µs cpu/req" if e["store_cpu_us"]
                            else ""))
        lines.append(f"{LABEL[REDIS]} / sig-gate: req/s {c['rps_ratio']:.2f}x, gate cpu "
                     f"{c['cpu_ratio']:.2f}x")
    elif c:
        lines += ["", f"the gate at a CPU limit: not measured ({c['skipped']})"]
    lines.append("")
    for c in s["checks"]:
        lines.append(f"[{'met' if c['met'] else 'MISSED'}] {c['name']}: {c['value']}")
    return "\n".join(lines)


def markdown(data: dict, s: dict) -> str:
    m = data["machine"]
    st = data["settings"]
    layouts = data.get("layouts", {})
    workers = s["workers"]
    B = s["blocks"]
    out = []
    w = out.append
    w("# Benchmarks: sig-gate against nginx and HAProxy\n")
    w("Generated by `make bench` (`bench/bench.sh`, `bench/run.py`); do not edit by hand, rerun "
      "it. The analysis at the end comes from `bench/analysis.md`.\n")
    w(f"Run: {data.get('finished', '?')}, {data['rounds']} interleaved round(s) at "
      + " and ".join(workers_label(n) for n in workers)
      + (" (**BENCH_QUICK smoke run: short runs, one round; not for quoting**)" if data["quick"] else "")
      + f", {data['wall_secs'] / 60:.1f} min of measurement"
      + (f"; `make bench` took {data['total_secs'] / 60:.1f} min end to end (builds, criterion, "
         "load benchmark)" if data.get("total_secs") else "") + ".\n")

    w("## Result\n")
    w("Every proxy at each worker count: nginx `worker_processes N`, HAProxy `nbthread N`, "
      "sig-gate `GATE_WORKERS=N`, pinned to the same N CPUs, every target receiving the same "
      "signed bytes. Each figure is the median over the rounds. Ratios are sig-gate's figure "
      "divided by the other proxy's, computed within each round and then the median taken; ✗ "
      "marks a ratio where sig-gate is behind. The load generator's own CPU is in the table: "
      "wrk runs one thread, so near 1.00 CPUs it, not the proxy, is the limit. So is the busy "
      "time of each CPU: in a closed loop the CPU near 1.00 holds the throughput, whichever "
      "process on it spends the time.\n")
    w("| | workers | direct (no proxy) | nginx | HAProxy | sig-gate | sig-gate ÷ nginx | "
      "sig-gate ÷ HAProxy |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")

    def scaled(name, cell, ratio=None, lower=True):
        for i, n in enumerate(workers):
            b = B[n]
            T, R = b["targets"], b["ratios"]
            ratios = ("| | |" if ratio is None else
                      f"| {ratio_cell(ratio(R['nginx']), lower)} | {ratio_cell(ratio(R['haproxy']), lower)} |")
            w(f"| {name if i == 0 else ''} | {n} | "
              + " | ".join(cell(T[t], b) for t in TARGETS) + " " + ratios)

    scaled("max throughput, req/s (closed loop)", lambda e, b: f"{e['rps']:,.0f}",
           lambda r: r["rps"], lower=False)
    scaled("proxy CPU per request, µs (closed loop)", lambda e, b: fmt(e["cpu_us"]),
           lambda r: r["cpu_us"])
    scaled("proxy CPU per request, µs (least disturbed slice)",
           lambda e, b: fmt(e["cpu_us_best"]), lambda r: r["cpu_us_best"])
    scaled("load generator (wrk) CPU per request, µs", lambda e, b: fmt(e["gen_cpu_us"]))
    scaled("load generator (wrk) CPU use, CPUs", lambda e, b: fmt(e["gen_cpu_util"], ".2f"))
    scaled("upstream CPU per request, µs", lambda e, b: fmt(e["upstream_cpu_us"]))
    scaled(f"busy time of {busy_label(B)}, whoever runs there (closed loop)",
           lambda e, b: fmt_busy(e["cpus_busy"]))
    mid_of = lambda b: len(b["rates"]) // 2  # noqa: E731
    scaled(f"p99 latency at {st['rate_fractions'][len(st['rate_fractions']) // 2]:.0%} of the "
           "slowest proxy's maximum (open loop)",
           lambda e, b: fmt_us(e["open"][mid_of(b)]["p99"]),
           lambda r: r["open_p99"][len(r["open_p99"]) // 2])
    if len(workers) > 1:
        lo, hi = workers[0], workers[-1]
        w(f"| throughput at {hi} ÷ at {lo} worker(s) | | " + " | ".join(
            f"{B[hi]['targets'][t]['rps'] / B[lo]['targets'][t]['rps']:.2f}x" for t in TARGETS)
          + " | | |")
        w(f"| CPU per request at {hi} ÷ at {lo} worker(s) | | - | " + " | ".join(
            f"{B[hi]['targets'][t]['cpu_us'] / B[lo]['targets'][t]['cpu_us']:.2f}x" for t in PROXIES)
          + " | | |")
    w("")
    w("![sig-gate, nginx and HAProxy at 1 and 2 workers: throughput, CPU per request, the load "
      "generator's CPU, p99 latency](benchmarks.svg)\n")

    w("## Targets\n")
    w("| target | measured | met | how |")
    w("| --- | --- | --- | --- |")
    for c in s["checks"]:
        w(f"| {c['name']} | {c['value']} | {'yes' if c['met'] else '**no**'} | {c['detail']} |")
    w("")
    if any(B[n]["variants"] for n in workers):
        variants_section(w, B, workers)
    if s["capped"]:
        capped_section(w, s["capped"])

    for n in reversed(workers):
        b = B[n]
        T, rates = b["targets"], b["rates"]
        lay = layouts.get(str(n), {})
        w(f"## At {workers_label(n)}\n")
        if lay:
            w(f"Proxies on CPU {lay['proxy_cpus']}; load generators and upstream on CPU "
              f"{lay['client_cpus']}"
              + (" (the same CPUs: none is left over, so they compete with the proxy)"
                 if lay.get("shared") else "") + ".\n")
        w("| | direct (no proxy) | nginx | HAProxy | sig-gate | sig-gate ÷ nginx | sig-gate ÷ HAProxy |")
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        rn, rh = b["ratios"]["nginx"], b["ratios"]["haproxy"]

        def row(name, values, rn_v, rh_v, lower):
            w(f"| {name} | " + " | ".join(values) + f" | {ratio_cell(rn_v, lower)} | "
              f"{ratio_cell(rh_v, lower)} |")

        row("max throughput, req/s (closed loop)", [f"{T[t]['rps']:,.0f}" for t in TARGETS],
            rn["rps"], rh["rps"], False)
        row("proxy CPU per request, µs (closed loop)", [fmt(T[t]["cpu_us"]) for t in TARGETS],
            rn["cpu_us"], rh["cpu_us"], True)
        row("proxy CPU per request, µs (closed loop, least disturbed slice)",
            [fmt(T[t]["cpu_us_best"]) for t in TARGETS], rn["cpu_us_best"], rh["cpu_us_best"], True)
        mid = len(rates) // 2
        row(f"proxy CPU per request, µs (at {rate_label(rates[mid])} req/s)",
            [fmt(T[t]["open"][mid]["cpu_us"]) for t in TARGETS], rn["open_cpu"][mid],
            rh["open_cpu"][mid], True)
        for i, rate in enumerate(rates):
            for key, label in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
                row(f"{label} latency at {rate_label(rate)} req/s (open loop)",
                    [fmt_us(T[t]["open"][i][key]) for t in TARGETS],
                    rn[f"open_{key}"][i], rh[f"open_{key}"][i], True)
        row("p99 latency at max throughput (closed loop, 64 connections)",
            [fmt_us(T[t]["closed_p99"]) for t in TARGETS], rn["closed_p99"], rh["closed_p99"], True)
        row("peak RSS, MiB (VmHWM)", [fmt(T[t]["peak_rss_mib"]) for t in TARGETS],
            rn["peak_rss"], rh["peak_rss"], True)
        switch_rows = (("switches_per_req", "the proxy's"), ("upstream_switches_per_req",
                        "the upstream's"), ("gen_switches_per_req", "the load generator's"))
        for key, whose in switch_rows:
            if T["sig-gate"][key] is None:
                continue
            for i, how in ((1, "preempted (involuntary)"), (0, "slept (voluntary)")):
                w(f"| {whose} context switches per request, {how}, closed loop | " + " | ".join(
                    "-" if key == "switches_per_req" and t == "direct" else fmt(T[t][key][i], ".3f")
                    for t in TARGETS) + " | | |")
        w("| failed or non-2xx requests, all runs | " + " | ".join(
            f"{T[t]['failed']:,}" for t in TARGETS) + " | | |")
        w("")
        held = T["sig-gate"].get("replay_entries_end")
        if held:
            w(f"sig-gate's peak RSS includes its replay cache, which held {held:,.0f} nonces at "
              "the end of each run (every request of the run; see the memory per entry below).\n")

    # The cross-checks below ran at the first worker count.
    T = B[workers[0]]["targets"]
    w("## Other figures\n")
    at_workers = workers_label(data.get("startup_workers", 1))
    if s["startup"]:
        w("Startup to ready, from spawn to the first 200 (sig-gate: `/readyz`; nginx and HAProxy: "
          f"first proxied request), at {at_workers}, polling every 0.5 ms; median (min-max) of "
          f"{st['starts']} starts:\n")
        w("| | nginx | HAProxy | sig-gate |")
        w("| --- | ---: | ---: | ---: |")
        w("| startup to ready, ms | " + " | ".join(
            f"{s['startup'][t]['median']:.1f} ({s['startup'][t]['min']:.1f}-{s['startup'][t]['max']:.1f})"
            for t in PROXIES) + " |\n")
    if s["idle"]:
        w(f"RSS with {st['idle_connections']:,} idle keep-alive connections (each opened, one "
          f"signed 1 KiB POST answered 200, then left idle), at {at_workers}, VmRSS of every "
          "process of the proxy, "
          f"median of {st.get('idle_repeats', 1)} fresh start(s):\n")
        w("| | nginx | HAProxy | sig-gate |")
        w("| --- | ---: | ---: | ---: |")
        w("| RSS, MiB | " + " | ".join(f"{s['idle'][t]:.1f}" for t in PROXIES) + " |")
        w("| RSS before the connections, MiB | " + " | ".join(
            f"{s['idle_detail'][t]['rss_before_kib'] / 1024:.1f}" for t in PROXIES) + " |\n")
    if s["replay"]:
        pts = s["replay"]["points"]
        w("Replay cache memory per entry. Heap accounting: `bench/loadgen replay-mem` fills the "
          f"gate's own `NonceCache` (capacity {s['replay']['capacity']:,}) with verified "
          "requests under a counting global allocator and divides the live heap bytes by the "
          "entries. The table grows by doubling, so the cost per entry depends on how full it "
          "is:\n")
        w("| entries | " + " | ".join(f"{p['entries']:,}" for p in pts) + " |")
        w("| --- | " + " | ".join("---:" for _ in pts) + " |")
        w("| heap bytes per entry | " + " | ".join(f"{p['bytes_per_entry']:.1f}" for p in pts)
          + " |\n")
        if s["replay"].get("slowest_admit_us"):
            w(f"The slowest single admission while filling it took "
              f"{s['replay']['slowest_admit_us']:,.0f} µs, at entry "
              f"{s['replay']['slowest_admit_at']:,}. A shard grows and sweeps a few slots per "
              "admission (its entries move into the doubled table 256 slots at a time), so "
              "what remains is the allocation of a new table or scheduling noise; with one "
              "worker, a stall there stalls the whole process.\n")
        refusal = s["replay"].get("full_refusal_us")
        if refusal is not None:
            w(f"Once the cache is full of live nonces, each further signed request took "
              + (f"{refusal / 1000:.1f} ms to refuse (503, fail closed): far more than an "
                 "insert, the sign of a sweep of the whole table per refusal."
                 if refusal > 100 else
                 f"{refusal:.1f} µs to refuse (503, fail closed): no sweep while nothing in "
                 "the table can have expired.") + "\n")
        rss_b = T["sig-gate"].get("replay_rss_bytes_per_entry")
        if rss_b:
            w(f"Cross-check in the running gate: its RSS grew by {rss_b:.1f} bytes per nonce "
              "admitted during the closed-loop runs (VmRSS delta over the "
              "`sig_gate_nonce_cache_entries` delta; includes allocator slack).\n")
    if s["criterion"]:
        c = s["criterion"]
        w(f"Criterion (`crates/gate/benches/verify.rs`, run by `make bench` just before): full verification "
          f"{c['full_ns']:.0f} ns, raw crypto {c['raw_ns']:.0f} ns, ratio {c['ratio']:.2f}x.\n")
    oha_rows = [t for t in TARGETS if T[t]["oha"]]
    if oha_rows:
        w("Cross-check of the open-loop generator against oha (`-q RATE --latency-correction`, "
          f"same rates, same body; at {workers_label(workers[0])}). oha repeats one fixed request, so it cannot carry a fresh "
          "nonce per request and is run only against the targets that do not verify:\n")
        w("oha's figures run higher across the board: it paces its sends on tokio's "
          "millisecond timer, so requests leave in bursts, and its own client does more work "
          "per request on the shared CPU. The comparison is a sanity check of the ordering, "
          "not of the absolute values.\n")
        w("| target | rate | bench/loadgen p50 / p99 / p99.9 | oha p50 / p99 / p99.9 |")
        w("| --- | ---: | --- | --- |")
        for t in oha_rows:
            for i, o in enumerate(T[t]["oha"]):
                mine = T[t]["open"][i]
                w(f"| {LABEL[t]} | {rate_label(o['rate'])}/s | {fmt_us(mine['p50'])} / "
                  f"{fmt_us(mine['p99'])} / {fmt_us(mine['p999'])} | {fmt_us(o['p50'])} / "
                  f"{fmt_us(o['p99'])} / {fmt_us(o['p999'])} |")
        w("")
    else:
        w("oha was not available in this run (not built: `BENCH_OHA=1 make bench` builds it "
          "once; or its build failed, or `BENCH_OHA=0`), so the open-loop figures come from "
          "bench/loadgen alone.\n")

    w("## Method\n")
    w(f"- **Machine**: {m['cpu']}, {m['cpus']} CPUs, {m['mem_gib']} GiB, {m['os']}, Linux "
      f"{m['kernel']}; load average {' '.join(m['loadavg'])} at the start. The machine is shared "
      "(other work runs on it), so rounds are interleaved and every ratio is taken within a "
      "round.")
    w(f"- **Versions**: sig-gate {m['sig_gate']} (release build, `cargo build --release --locked`), "
      f"{m['nginx']}, {m['haproxy']}, {m['wrk']}"
      + (f", {m['oha']}" if m.get("oha") else "") + f", {m['rustc']}.")
    placement = "; ".join(
        f"{workers_label(n)}: proxies on CPU {layouts[str(n)]['proxy_cpus']}, load generators and "
        f"upstream on CPU {layouts[str(n)]['client_cpus']}" for n in workers if str(n) in layouts)
    w("- **Workers and CPUs**: at N workers every proxy runs **N workers pinned to the same N "
      "CPUs** with `taskset`: nginx `worker_processes N` with `reuseport` on its listener (one "
      "socket per worker; plus its idle master), HAProxy `nbthread N` (its threads share one "
      "listener and spread connections themselves), sig-gate `GATE_WORKERS=N` (one socket per "
      "worker with `SO_REUSEPORT`, each worker a thread with a current-thread tokio runtime; "
      "plus its idle main thread, which serves `/metrics`). " + placement + ". When no CPU is "
      "left over for the load generators and the upstream they share the proxy's, so the "
      "generator's own CPU, reported, is part of the picture; the generator costs the same for "
      "every target, since every target receives the same bytes. Work on the shared machine "
      "takes CPU from all sides alike.")
    w("- **Upstream**, the same for every target: nginx, one worker, `return 200` with a "
      f"{st.get('upstream_body_bytes', '?')}-byte JSON body, keep-alive, access log off, on "
      "loopback.")
    w("- **Proxies**: nginx `proxy_pass` to an `upstream` block with `keepalive 128`, HTTP/1.1 "
      "upstream, `X-Forwarded-For` and `X-Request-Id` set; HAProxy in HTTP mode with "
      "`http-reuse always`, `option forwardfor` and an `X-Request-Id`; sig-gate with its defaults "
      "(full verification, replay protection on with the default capacity of 1,000,000 and the "
      "default 300 s skew window, `X-Forwarded-For`, `X-Request-Id`, metrics). Access logs off "
      "everywhere; sig-gate logs nothing per valid request.")
    w("- **Load**: `POST /tools/call?session=42&stream=false` with a 1,024-byte JSON body and the "
      "four `X-Gate-*` signature headers. Requests are signed just before each round with the "
      "gate's own signer (`bench/loadgen sign`), each with a unique nonce; every target receives "
      "the same bytes (nginx and HAProxy forward the signature headers unread). wrk replays them "
      "through `bench/wrk/signed.lua`, which never repeats a request within a run (a repeat would "
      "be a 401 replay at sig-gate and fail the run).")
    w(f"- **Closed loop** (max throughput): wrk, 1 thread, {st['connections']} connections, "
      f"{st['warmup_secs']} s warm-up then {st['closed_secs']} s measured. CPU per request = "
      "utime + stime of every process of the proxy from `/proc/<pid>/stat` over the measured run, "
      "divided by the requests completed. The load generator's CPU is wrk's own utime + stime "
      "(from `getrusage` of the finished child), the upstream's from `/proc` as for the proxies. "
      "Context switches per request over the same runs: every thread's `voluntary_ctxt_switches` "
      "(it slept: a proxy waiting in `epoll_wait`) and `nonvoluntary_ctxt_switches` (it was "
      "preempted) from `/proc/<pid>/task/*/status`, wrk's from the same `getrusage`. Where the "
      "CPUs are shared, each time one of them wakes another the woken one may preempt whoever "
      "runs, and both pay for the switch.")
    w("- **Open loop** (latency below the knee): fixed rates of " + "; ".join(
        ", ".join(rate_label(r) for r in B[n]["rates"]) + f" at {workers_label(n)}"
        for n in workers) + " req/s" + (" (" + ", ".join(f"{f:.0%}" for f in st["rate_fractions"])
                 + " of the slowest proxy's maximum in short calibration runs)"
                 if st.get("rate_fractions") else "") + ", "
      f"{st['open_secs']} s each, {st['open_connections']} connections, by `bench/loadgen open`: "
      "it paces sends with a timerfd (µs precision) and measures each latency from the request's "
      "intended send time, so a stalled target is charged for the requests queued behind the "
      "stall (no coordinated omission), as oha's `--latency-correction` does. oha cannot send a "
      "fresh nonce per request, hence this generator. The generator shares its CPU with the "
      "upstream, and its own scheduling delay is part of every figure: the direct row is the "
      "floor of the measurement.")
    w("- **Peak RSS**: VmHWM summed over the proxy's processes at the end of its run "
      "(nginx: master + worker).")
    w(f"- **Rounds**: {data['rounds']}, each measuring every worker count in turn (alternating "
      "which goes first). In each round every target is started fresh and all run "
      "side by side (an idle proxy costs nothing), each is warmed up, then they take turns: "
      f"the closed-loop time in {st.get('slices', 1)} slice(s) per target, the open-loop runs "
      "rate by rate; the order rotates from round to round. Noise on a shared machine drifts "
      "over tens of seconds, so turns this short put it on every target alike. The "
      "'least disturbed slice' row is each proxy's lowest CPU per request over all slices: "
      "interference only ever adds CPU time, so it is the closest to the intrinsic cost.")
    w(f"- Raw figures: `bench/.results/<time>/results.json` (not committed).\n")

    analysis = ROOT / "bench" / "analysis.md"
    if analysis.exists():
        w(analysis.read_text().rstrip() + "\n")
    return "\n".join(out)


def variants_section(w, B: dict, workers: list[int]) -> None:
    """sig-gate with the Redis replay store and with Ed25519 version 2, against its own row."""
    w("## Replay store and signature version\n")
    w("sig-gate three ways, in the same rounds as the table above: its row there (the "
      "in-memory replay cache, HMAC version 1); the same gate and the same requests with "
      "`GATE_REPLAY_STORE=redis://` on a Redis server the round starts on loopback (persistence "
      "off, pinned with the upstream, one `SET NX PX` per request; Redis's own CPU is a column of "
      "its own); and the gate with a key registry (`GATE_KEYS_FILE`, `GATE_AUDIENCE`) holding one "
      "Ed25519 caller key, sent requests signed version 2 with that key (closed loop only). "
      "Ratios are to the memory/HMAC row, per round, median.\n")
    rates_of = {n: B[n]["rates"] for n in workers}
    nrates = max(len(r) for r in rates_of.values())
    w("| | workers | max throughput, req/s | ÷ memory | gate CPU per request, µs | ÷ memory | "
      f"Redis CPU per request, µs | busy time of {busy_label(B)} | "
      + " | ".join(f"p99 at rate {i + 1} (open loop)" for i in range(nrates))
      + " | failed or non-2xx |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
      + " | ".join("---:" for _ in range(nrates)) + " | ---: |")
    for name in ("sig-gate",) + VARIANTS:
        for i, n in enumerate(workers):
            b = B[n]
            if name == "sig-gate":
                e = b["targets"]["sig-gate"]
                cells = [f"{e['rps']:,.0f}", "", fmt(e["cpu_us"]), "", "-",
                         fmt_busy(e["cpus_busy"])]
                p99s = [f"{fmt_us(o['p99'])} at {rate_label(o['rate'])}/s" for o in e["open"]]
                failed = e["failed"]
                label = "memory store, HMAC v1"
            else:
                e = b["variants"].get(name)
                if not e:
                    continue
                cells = [f"{e['rps']:,.0f}", ratio_cell(e["rps_ratio"], False), fmt(e["cpu_us"]),
                         ratio_cell(e["cpu_ratio"], True), fmt(e["store_cpu_us"]),
                         fmt_busy(e["cpus_busy"])]
                p99s = [f"{fmt_us(o['p99'])} ({ratio_cell(r, True)})"
                        for o, r in zip(e["open"], e["open_p99_ratio"])]
                failed = e["failed"]
                label = "Redis store, HMAC v1" if name == REDIS else "memory store, Ed25519 v2"
            p99s += ["-"] * (nrates - len(p99s))
            w(f"| {label if i == 0 else ''} | {n} | " + " | ".join(cells) + " | "
              + " | ".join(p99s) + f" | {failed:,} |")
    w("")
    w("✗ marks a ratio where the variant is behind the memory/HMAC row; the targets of the Redis "
      f"row are {REDIS_CPU_TARGET}x the gate's CPU and {REDIS_RPS_TARGET}x the throughput "
      "(Targets, above). Version 2 Ed25519 has no load target: its cost is the signature check, "
      "which criterion compares with ring's own verify (Targets).\n")


def capped_section(w, c: dict) -> None:
    """The memory and Redis stores with the gate at a CPU limit, or why that was not measured."""
    w("### Redis store with the gate at its CPU limit\n")
    if "skipped" in c:
        w(f"Not measured in this run: {c['skipped']} (the comparison needs a writable cgroup "
          "`cpu` controller, as root).\n")
        return
    w(f"In the rows above at {workers_label(c['workers'])}, the load generator, the upstream and "
      "Redis share one CPU, and with Redis that CPU holds the closed loop (its busy time), not "
      "the gate's. Here the same two gates run with a CFS quota of "
      f"{c['cpus']:g} CPU (what a Kubernetes CPU limit sets), so that the gate's own CPU is the "
      "limit in both, as in a pod at its limit with Redis on other machines: the throughput "
      "ratio then reads what the shared store costs the gate. \"Quota spent\" is the share of "
      "CFS periods in which the gate used all of its quota; near 100 % the gate was at its "
      "limit. Closed loop, medians over the rounds, ratios per round.\n")
    w(f"| | max throughput, req/s | ÷ memory | gate CPU per request, µs | ÷ memory | "
      f"Redis CPU per request, µs | quota spent | busy time of "
      f"{' / '.join(f'CPU {cpu}' for cpu in (c['sig-gate']['cpus_busy'] or {}))} | "
      "failed or non-2xx |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for t, label in (("sig-gate", "memory store"), (REDIS, "Redis store")):
        e = c[t]
        ratios = (["", ""] if t == "sig-gate" else
                  [ratio_cell(c["rps_ratio"], False), ratio_cell(c["cpu_ratio"], True)])
        w(f"| {label} | {e['rps']:,.0f} | {ratios[0]} | {fmt(e['cpu_us'])} | {ratios[1]} | "
          f"{fmt(e['store_cpu_us'])} | {e['throttled']:.0%} | {fmt_busy(e['cpus_busy'])} | "
          f"{e['failed']:,} |")
    w("")


# ---------------------------------------------------------------------------------------------
# SVG

def svg(s: dict) -> str:
    workers = s["workers"]
    B = s["blocks"]
    hi = workers[-1]
    mid_p99 = lambda n, t: B[n]["targets"][t]["open"][len(B[n]["rates"]) // 2]["p99"]  # noqa: E731
    panels = [
        ("Max throughput", "req/s, higher is better", TARGETS,
         lambda n, t: B[n]["targets"][t]["rps"], lambda v: f"{v / 1000:.0f}k", "rps"),
        ("Proxy CPU per request", "µs, lower is better", PROXIES,
         lambda n, t: B[n]["targets"][t]["cpu_us"], lambda v: f"{v:.1f}", "cpu_us"),
        ("Load generator (wrk) CPU", "CPUs in use; 1.0 = its one thread is the limit", TARGETS,
         lambda n, t: B[n]["targets"][t]["gen_cpu_util"], lambda v: f"{v:.2f}", None),
        ("p99 latency, middle fixed rate", "µs, open loop, lower is better", TARGETS,
         mid_p99, lambda v: f"{v:.0f}" if v < 10_000 else f"{v / 1000:.0f}ms", "p99"),
    ]
    pw, ph, top, gap = 270, 250, 84, 20
    width = len(panels) * (pw + gap) + gap
    line_h = 260
    height = top + ph + 90 + line_h + 40
    e = []
    a = e.append
    a(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
      f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">')
    a(f'<rect width="{width}" height="{height}" fill="#ffffff"/>')
    a(f'<text x="{gap}" y="26" font-size="17" font-weight="bold">sig-gate vs nginx vs HAProxy at '
      + " and ".join(workers_label(n) for n in workers)
      + ' (same upstream, same signed 1 KiB POST bytes)</text>')
    a(f'<text x="{gap}" y="46" fill="#555">Medians over interleaved rounds; sig-gate does full '
      'HMAC verification and replay protection on every request. In each group, one bar per '
      'worker count: ' + ", ".join(f"{'lighter' if i < len(workers) - 1 else 'solid'} = "
                                  f"{workers_label(n)}" for i, n in enumerate(workers))
      + '.</text>')
    for p, (title, unit, targets, value, show, ratio_key) in enumerate(panels):
        x0 = gap + p * (pw + gap)
        a(f'<text x="{x0}" y="{top}" font-weight="bold">{html.escape(title)}</text>')
        a(f'<text x="{x0}" y="{top + 15}" fill="#666" font-size="11">{html.escape(unit)}</text>')
        vals = {(n, t): value(n, t) for n in workers for t in targets}
        vals = {k: v for k, v in vals.items() if v is not None}
        vmax = max(vals.values()) * 1.18 if vals else 1
        base = top + ph
        gw = (pw - 10) / len(targets)
        bw = (gw - 8) / len(workers)
        a(f'<line x1="{x0}" y1="{base}" x2="{x0 + pw - 10}" y2="{base}" stroke="#333"/>')
        for i, t in enumerate(targets):
            gx = x0 + 4 + i * gw
            for j, n in enumerate(workers):
                bx = gx + j * bw
                v = vals.get((n, t))
                if v is None:
                    continue
                h = (ph - 45) * v / vmax
                opacity = "1" if j == len(workers) - 1 else "0.45"
                a(f'<rect x="{bx + 1:.1f}" y="{base - h:.1f}" width="{bw - 2:.1f}" '
                  f'height="{h:.1f}" fill="{COLOR[t]}" fill-opacity="{opacity}"/>')
                a(f'<text x="{bx + bw / 2:.1f}" y="{base - h - 4:.1f}" text-anchor="middle" '
                  f'font-size="9">{html.escape(show(v))}</text>')
                a(f'<text x="{bx + bw / 2:.1f}" y="{base + 11}" text-anchor="middle" '
                  f'font-size="9" fill="#666">{n}</text>')
            a(f'<text x="{gx + (gw - 8) / 2:.1f}" y="{base + 25}" text-anchor="middle" '
              f'font-size="10.5">{html.escape("direct" if t == "direct" else LABEL[t])}</text>')
        if ratio_key:
            def ratio(r):
                return r["open_p99"][len(r["open_p99"]) // 2] if ratio_key == "p99" else r[ratio_key]
            for k, n in enumerate(reversed(workers)):
                r = B[n]["ratios"]
                a(f'<text x="{x0}" y="{base + 42 + 14 * k}" font-size="10.5" '
                  f'fill="{COLOR["sig-gate"]}">sig-gate, {workers_label(n)}: '
                  f'{ratio(r["nginx"]):.2f}x nginx, {ratio(r["haproxy"]):.2f}x HAProxy</text>')

    # p99 against the offered rate, per worker count.
    y0 = top + ph + 90
    x0 = gap + 50
    lw = width - x0 - 230
    a(f'<text x="{gap}" y="{y0 - 10}" font-weight="bold">Open-loop p99 latency against offered '
      'rate (solid ' + workers_label(hi) + (f", dashed {workers_label(workers[0])}"
                                           if len(workers) > 1 else "")
      + '; log scale)</text>')
    series = [(n, t, B[n]["targets"][t]["open"]) for n in workers for t in TARGETS]
    values = [o["p99"] for _, _, os_ in series for o in os_ if o["p99"]]
    lo = 10 ** math.floor(math.log10(max(min(values), 1)))
    top_v = 10 ** math.ceil(math.log10(max(values)))
    ybase = y0 + line_h - 30
    span = line_h - 40

    def ypos(v):
        return ybase - span * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(top_v) - math.log10(lo))

    a(f'<line x1="{x0}" y1="{ybase}" x2="{x0 + lw}" y2="{ybase}" stroke="#333"/>')
    a(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{ybase}" stroke="#333"/>')
    tick = lo
    while tick <= top_v:
        y = ypos(tick)
        a(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10">'
          f'{html.escape(tick_label(tick))}</text>')
        if tick > lo:
            a(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + lw}" y2="{y:.1f}" stroke="#eee"/>')
        tick *= 10
    rmax = max(o["rate"] for _, _, os_ in series for o in os_) * 1.08
    rmin = min(o["rate"] for _, _, os_ in series for o in os_) * 0.85

    def xy(rate, v):
        return x0 + lw * (rate - rmin) / (rmax - rmin), ypos(v)

    # The worker counts' rates lie close together (each a fraction of its own calibration):
    # the axis is labelled with the most workers' rates.
    for r in B[hi]["rates"]:
        x, _ = xy(r, lo)
        a(f'<text x="{x:.1f}" y="{ybase + 15}" text-anchor="middle" font-size="10">'
          f'{rate_label(r)}/s</text>')
    for n, t, os_ in series:
        dash = "" if n == hi else ' stroke-dasharray="4 3"'
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(o["rate"], o["p99"]) for o in os_))
        a(f'<polyline points="{path}" fill="none" stroke="{COLOR[t]}" stroke-width="2"{dash}/>')
    for i, t in enumerate(TARGETS):
        ly = y0 + 10 + i * 20
        a(f'<rect x="{x0 + lw + 20}" y="{ly}" width="14" height="10" fill="{COLOR[t]}"/>')
        a(f'<text x="{x0 + lw + 40}" y="{ly + 9}">{html.escape(LABEL[t])}</text>')
    a("</svg>")
    return "\n".join(e) + "\n"


if __name__ == "__main__":
    data = json.loads(Path(sys.argv[1]).read_text())
    summary = summarize(data)
    print(console(summary))
    (ROOT / "docs" / "benchmarks.md").write_text(markdown(data, summary))
    (ROOT / "docs" / "benchmarks.svg").write_text(svg(summary))
