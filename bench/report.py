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
LABEL = {"direct": "direct (no proxy)", "nginx": "nginx", "haproxy": "HAProxy",
         "sig-gate": "sig-gate"}
COLOR = {"direct": "#9e9e9e", "nginx": "#4a8f3c", "haproxy": "#3f6fb5", "sig-gate": "#d9541e"}

STARTUP_TARGET_MS = 100
IDLE_TARGET_MIB = 32
REPLAY_TARGET_BYTES = 48
CRITERION_TARGET = 1.3


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def rate_label(rate: float) -> str:
    return f"{rate / 1000:g}k" if rate >= 1000 else f"{rate:g}"


# ---------------------------------------------------------------------------------------------
# summary

def summarize(data: dict) -> dict:
    rounds = data["round_results"]
    rates = data["rates"]
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
            "peak_rss_mib": med([r["peak_rss_kib"] / 1024 for r in rs]) if t != "direct" else None,
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
            entry["workers"] = rs[0].get("workers")
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

    r_n, r_h = ratios["nginx"], ratios["haproxy"]
    check("CPU per request <= nginx and <= HAProxy",
          f"{r_n['cpu_us']:.2f}x nginx, {r_h['cpu_us']:.2f}x HAProxy",
          r_n["cpu_us"] <= 1 and r_h["cpu_us"] <= 1,
          f"closed loop; {targets['sig-gate']['cpu_us']:.1f} vs {targets['nginx']['cpu_us']:.1f} "
          f"and {targets['haproxy']['cpu_us']:.1f} us")
    check("Throughput >= both", f"{r_n['rps']:.2f}x nginx, {r_h['rps']:.2f}x HAProxy",
          r_n["rps"] >= 1 and r_h["rps"] >= 1, "closed loop, wrk")
    worst_p99 = [max(r_n["open_p99"][i], r_h["open_p99"][i]) for i in range(len(rates))]
    check("p99 <= both (open loop, every fixed rate)",
          ", ".join(f"{rate_label(rate)}/s: {r_n['open_p99'][i]:.2f}x / {r_h['open_p99'][i]:.2f}x"
                    for i, rate in enumerate(rates)),
          all(w <= 1 for w in worst_p99), "sig-gate p99 / nginx p99, / HAProxy p99")
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

    return {"targets": targets, "ratios": ratios, "rates": rates, "startup": startup,
            "idle": idle, "idle_detail": idle_detail, "replay": replay, "criterion": crit,
            "checks": checks}


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
    lines = ["", f"{'target':18s} {'req/s':>9s} {'cpu µs/req':>10s} {'peak MiB':>9s}  "
             + "  ".join(f"p99@{rate_label(r)}/s" for r in s["rates"])]
    for t in TARGETS:
        e = s["targets"][t]
        lines.append(f"{LABEL[t]:18s} {e['rps']:9.0f} {fmt(e['cpu_us']):>10s} "
                     f"{fmt(e['peak_rss_mib']):>9s}  "
                     + "  ".join(f"{fmt_us(o['p99']):>10s}" for o in e["open"]))
    for other in OTHERS:
        r = s["ratios"][other]
        lines.append(f"sig-gate / {LABEL[other]:8s}: req/s {r['rps']:.2f}x, cpu {r['cpu_us']:.2f}x, "
                     "p99 " + ", ".join(f"{v:.2f}x" for v in r["open_p99"])
                     + f", peak RSS {r['peak_rss']:.2f}x")
    for c in s["checks"]:
        lines.append(f"[{'met' if c['met'] else 'MISSED'}] {c['name']}: {c['value']}")
    for t in TARGETS:
        e = s["targets"][t]
        if e["failed"] or e["wrapped"]:
            lines.append(f"WARNING: {LABEL[t]}: {e['failed']} failed or non-2xx requests, "
                         f"{e['wrapped']} wrap-arounds of the pre-signed requests")
    return "\n".join(lines)


def markdown(data: dict, s: dict) -> str:
    m = data["machine"]
    st = data["settings"]
    rates = s["rates"]
    T = s["targets"]
    out = []
    w = out.append
    w("# Benchmarks: sig-gate against nginx and HAProxy\n")
    w("Generated by `make bench` (`bench/bench.sh`, `bench/run.py`); do not edit by hand, rerun "
      "it. The analysis at the end comes from `bench/analysis.md`.\n")
    w(f"Run: {data.get('finished', '?')}, {data['rounds']} interleaved round(s)"
      + (" (**BENCH_QUICK smoke run: short runs, one round; not for quoting**)" if data["quick"] else "")
      + f", {data['wall_secs'] / 60:.1f} min of measurement.\n")

    w("## Result\n")
    w("Each figure is the median over the rounds. Ratios are sig-gate's figure divided by the "
      "other proxy's, computed within each round and then the median taken; ✗ marks a ratio "
      "where sig-gate is behind.\n")
    w("| | direct (no proxy) | nginx | HAProxy | sig-gate | sig-gate ÷ nginx | sig-gate ÷ HAProxy |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    rn, rh = s["ratios"]["nginx"], s["ratios"]["haproxy"]

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
    w("| failed or non-2xx requests, all runs | " + " | ".join(
        f"{T[t]['failed']:,}" for t in TARGETS) + " | | |")
    w("")
    held = T["sig-gate"].get("replay_entries_end")
    if held:
        w(f"sig-gate's peak RSS includes its replay cache, which held {held:,.0f} nonces at the "
          "end of each run (every request of the run; see the memory per entry below).\n")
    w("![sig-gate, nginx and HAProxy: throughput, CPU per request, p99 latency, peak memory]"
      "(benchmarks.svg)\n")

    w("## Targets\n")
    w("| target | measured | met | how |")
    w("| --- | --- | --- | --- |")
    for c in s["checks"]:
        w(f"| {c['name']} | {c['value']} | {'yes' if c['met'] else '**no**'} | {c['detail']} |")
    w("")

    w("## Other figures\n")
    if s["startup"]:
        w("Startup to ready, from spawn to the first 200 (sig-gate: `/readyz`; nginx and HAProxy: "
          "first proxied request), polling every 0.5 ms; median (min-max) of "
          f"{st['starts']} starts:\n")
        w("| | nginx | HAProxy | sig-gate |")
        w("| --- | ---: | ---: | ---: |")
        w("| startup to ready, ms | " + " | ".join(
            f"{s['startup'][t]['median']:.1f} ({s['startup'][t]['min']:.1f}-{s['startup'][t]['max']:.1f})"
            for t in PROXIES) + " |\n")
    if s["idle"]:
        w(f"RSS with {st['idle_connections']:,} idle keep-alive connections (each opened, one "
          "signed 1 KiB POST answered 200, then left idle), VmRSS of every process of the proxy, "
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
          "same rates, same body). oha repeats one fixed request, so it cannot carry a fresh "
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
        w("oha was not available in this run (it failed to build or was disabled), so the "
          "open-loop figures come from bench/loadgen alone.\n")

    w("## Method\n")
    w(f"- **Machine**: {m['cpu']}, {m['cpus']} CPUs, {m['mem_gib']} GiB, {m['os']}, Linux "
      f"{m['kernel']}; load average {' '.join(m['loadavg'])} at the start. The machine is shared "
      "(other work runs on it), so rounds are interleaved and every ratio is taken within a "
      "round.")
    w(f"- **Versions**: sig-gate {m['sig_gate']} (release build, `cargo build --release --locked`), "
      f"{m['nginx']}, {m['haproxy']}, {m['wrk']}"
      + (f", {m['oha']}" if m.get("oha") else "") + f", {m['rustc']}.")
    w(f"- **Workers and CPUs**: every proxy runs **{st['workers']} worker pinned to CPU "
      f"{st['proxy_cpus']}** with `taskset`: nginx `worker_processes {st['workers']}` (plus its idle "
      f"master), HAProxy `nbthread {st['workers']}`, sig-gate's tokio runtime, which sizes itself "
      f"from the CPUs it may use ({T['sig-gate'].get('workers')} threads in the process: one "
      "worker, the rest idle). The load generators and the upstream share CPU "
      f"{st['client_cpus']}. Work on the shared machine takes CPU from both sides alike.")
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
      "divided by the requests completed.")
    w(f"- **Open loop** (latency below the knee): fixed rates of {', '.join(rate_label(r) for r in rates)} "
      "req/s" + (" (" + ", ".join(f"{f:.0%}" for f in st["rate_fractions"])
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
    w(f"- **Rounds**: {data['rounds']}. In each round every target is started fresh and all run "
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


# ---------------------------------------------------------------------------------------------
# SVG

def svg(s: dict) -> str:
    T = s["targets"]
    rates = s["rates"]
    mid = len(rates) // 2
    R = s["ratios"]
    panels = [
        ("Max throughput", "req/s, higher is better", {t: T[t]["rps"] for t in TARGETS},
         lambda v: f"{v / 1000:.1f}k", (R["nginx"]["rps"], R["haproxy"]["rps"])),
        ("Proxy CPU per request", "µs, lower is better", {t: T[t]["cpu_us"] for t in PROXIES},
         lambda v: f"{v:.1f}", (R["nginx"]["cpu_us"], R["haproxy"]["cpu_us"])),
        (f"p99 latency at {rate_label(rates[mid])} req/s", "µs, open loop, lower is better",
         {t: T[t]["open"][mid]["p99"] for t in TARGETS}, lambda v: f"{v:.0f}",
         (R["nginx"]["open_p99"][mid], R["haproxy"]["open_p99"][mid])),
        ("Peak RSS", "MiB, lower is better", {t: T[t]["peak_rss_mib"] for t in PROXIES},
         lambda v: f"{v:.1f}", (R["nginx"]["peak_rss"], R["haproxy"]["peak_rss"])),
    ]
    pw, ph, top, gap = 230, 250, 70, 20
    width = len(panels) * (pw + gap) + gap
    line_h = 260
    height = top + ph + 75 + line_h + 40
    e = []
    a = e.append
    a(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
      f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">')
    a(f'<rect width="{width}" height="{height}" fill="#ffffff"/>')
    a(f'<text x="{gap}" y="26" font-size="17" font-weight="bold">sig-gate vs nginx vs HAProxy '
      '(1 worker each, same upstream, 1 KiB signed POST)</text>')
    a(f'<text x="{gap}" y="46" fill="#555">Medians over interleaved rounds; sig-gate does full '
      'HMAC verification and replay protection on every request.</text>')
    for p, (title, unit, values, show, (vs_n, vs_h)) in enumerate(panels):
        x0 = gap + p * (pw + gap)
        a(f'<text x="{x0}" y="{top}" font-weight="bold">{html.escape(title)}</text>')
        a(f'<text x="{x0}" y="{top + 15}" fill="#666" font-size="11">{html.escape(unit)}</text>')
        vals = {t: v for t, v in values.items() if v is not None}
        vmax = max(vals.values()) * 1.15 if vals else 1
        base = top + ph
        bw = (pw - 20) / len(TARGETS)
        a(f'<line x1="{x0}" y1="{base}" x2="{x0 + pw - 10}" y2="{base}" stroke="#333"/>')
        for i, t in enumerate(TARGETS):
            bx = x0 + 5 + i * bw
            if t not in vals:
                a(f'<text x="{bx + bw / 2:.1f}" y="{base - 6}" text-anchor="middle" fill="#aaa">'
                  'n/a</text>')
            else:
                h = (ph - 40) * vals[t] / vmax
                a(f'<rect x="{bx + 4:.1f}" y="{base - h:.1f}" width="{bw - 8:.1f}" height="{h:.1f}" '
                  f'fill="{COLOR[t]}"/>')
                a(f'<text x="{bx + bw / 2:.1f}" y="{base - h - 5:.1f}" text-anchor="middle" '
                  f'font-size="11">{html.escape(show(vals[t]))}</text>')
            a(f'<text x="{bx + bw / 2:.1f}" y="{base + 15}" text-anchor="middle" font-size="10.5">'
              f'{html.escape("direct" if t == "direct" else LABEL[t])}</text>')
        a(f'<text x="{x0}" y="{base + 32}" font-size="10.5" fill="{COLOR["sig-gate"]}">'
          f'sig-gate: {vs_n:.2f}x nginx, {vs_h:.2f}x HAProxy</text>')

    # p50 and p99 against the offered rate.
    y0 = top + ph + 75
    x0 = gap + 50
    lw = width - x0 - 200
    a(f'<text x="{gap}" y="{y0 - 10}" font-weight="bold">Open-loop latency against offered rate '
      '(solid p99, dashed p50; log scale)</text>')
    pts = [(t, [o for o in T[t]["open"]]) for t in TARGETS]
    # Log scale: one stall must not flatten everything else.
    values = [o[k] for _, os_ in pts for o in os_ for k in ("p50", "p99") if o[k]]
    lo = 10 ** math.floor(math.log10(max(min(values), 1)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    ybase = y0 + line_h - 30
    span = line_h - 40

    def ypos(v):
        return ybase - span * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    a(f'<line x1="{x0}" y1="{ybase}" x2="{x0 + lw}" y2="{ybase}" stroke="#333"/>')
    a(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{ybase}" stroke="#333"/>')
    tick = lo
    while tick <= hi:
        y = ypos(tick)
        a(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10">'
          f'{html.escape(tick_label(tick))}</text>')
        if tick > lo:
            a(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + lw}" y2="{y:.1f}" stroke="#eee"/>')
        tick *= 10
    rmax = max(rates)

    def xy(rate, v):
        return x0 + lw * rate / (rmax * 1.08), ypos(v)

    for r in rates:
        x, _ = xy(r, 0)
        a(f'<text x="{x:.1f}" y="{ybase + 15}" text-anchor="middle" font-size="10">'
          f'{rate_label(r)}/s</text>')
    for t, os_ in pts:
        for key, dash in (("p99", ""), ("p50", ' stroke-dasharray="4 3"')):
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(o["rate"], o[key]) for o in os_))
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
