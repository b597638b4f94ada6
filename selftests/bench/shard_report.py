#!/usr/bin/env python3
"""shard.sh's report: reads the trials it recorded (one JSON object a line: kind closed / open /
stage, variant, rep, rate, and the load generator's JSON as "result"; kv load and kv_tcp_load
write the same fields) and writes shard.json (configuration, summary, every trial), shard.tsv
(the sweep: one row per variant and offered rate, for shard.gp) and a table on stdout.

Per sweep point the medians over repetitions of achieved throughput and p50/p95/p99. A
repetition that was skipped (the variant saturated at a lower rate), failed, or lost more than
1% of its requests counts as achieved 0 and p99 infinite (a loss is a reply later than the
400 ms timeout). A variant sustains a rate under a p99 bound when the median p99 is below the
bound and the median achieved throughput is at least 97% of the offered rate; its figure is the
highest such offered rate (the sweep's grid, not an interpolation). The same is done per
repetition, for paired ratios (median, min-max over repetitions).

  shard_report.py TRIALS.jsonl OUT.json --reps N --seconds S --warmup S --window W
                  --rates R1,R2,... --bound-us B --variants V1,V2,... --connections C
"""
import argparse
import json
import math
import os
import platform
import statistics

INF = math.inf
SUSTAIN = 0.97  # achieved / offered


def med(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None, None
    return statistics.median(xs), min(xs), max(xs)


def point(result, rate):
    """One open-loop trial -> (achieved, p50, p95, p99, lost, lag p99); failures as saturated."""
    if not result or result.get("skipped") or not result.get("replies"):
        return 0.0, INF, INF, INF, None, None
    lat = result.get("latency_us", {})
    sent = result.get("sent") or 0
    lost = result.get("lost") or 0
    frac = lost / sent if sent else 1.0
    p99 = lat.get("p99") if frac <= 0.01 else INF
    p95 = lat.get("p95") if frac <= 0.05 else INF
    p50 = lat.get("p50") if frac <= 0.5 else INF
    if result.get("errors"):
        p99 = INF
    lag = (result.get("send_lag_us") or {}).get("p99")
    return result.get("throughput_rps") or 0.0, p50, p95, p99, lost, lag


def sustained(points, rates, bound):
    """The highest offered rate with p99 < bound and achieved >= 97%; 0 when none."""
    best = 0
    for r in rates:
        p = points.get(r)
        if p and p["p99"] < bound and p["achieved"] >= SUSTAIN * r:
            best = r
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trials")
    ap.add_argument("out")
    for a in ("--reps", "--window", "--connections"):
        ap.add_argument(a, type=int, required=True)
    for a in ("--seconds", "--warmup", "--bound-us"):
        ap.add_argument(a, type=float, required=True)
    ap.add_argument("--rates", required=True)
    ap.add_argument("--variants", required=True)
    a = ap.parse_args()
    rates = [int(float(r)) for r in a.rates.split(",")]
    variants = a.variants.split(",")
    bounds = sorted({a.bound_us, 500.0}, reverse=True)
    trials = []
    if a.trials.endswith(".json"):  # a report again from an earlier shard.json's trials
        trials = json.load(open(a.trials))["trials"]
    else:
        for line in open(a.trials):
            try:
                trials.append(json.loads(line))
            except ValueError:
                pass  # a trial whose client wrote half a line: counted as missing
    reps = list(range(1, a.reps + 1))

    def find(kind, v, rep, rate=0):
        for t in trials:
            if t["kind"] == kind and t["variant"] == v and t["rep"] == rep and t["rate"] == rate:
                return t
        return None

    summary = {}
    per_rep = {}  # variant -> rep -> {rate: point}
    for v in variants:
        closed = [find("closed", v, rep) for rep in reps]
        closed = [t for t in closed if t]

        def cg(f):
            return med([f(t) for t in closed])

        def cpu(t):
            r = t.get("result") or {}
            replies = (r.get("throughput_rps") or 0) * ((r.get("warmup_s") or 0) + (r.get("duration_s") or 0))
            return t["cpu0_jiffies"] / t["hz"] * 1e6 / replies if replies else None

        s = {
            "closed_replies_per_s": cg(lambda t: (t.get("result") or {}).get("throughput_rps")),
            "closed_p50_us": cg(lambda t: (t.get("result") or {}).get("latency_us", {}).get("p50")),
            "closed_p99_us": cg(lambda t: (t.get("result") or {}).get("latency_us", {}).get("p99")),
            "server_cpu_us_per_reply": cg(cpu),
            "errors": sum(((t.get("result") or {}).get("errors") or 0) for t in trials if t["variant"] == v
                          and t["kind"] in ("closed", "open")),
            "sweep": [],
        }
        per_rep[v] = {}
        for rep in reps:
            per_rep[v][rep] = {}
            for r in rates:
                t = find("open", v, rep, r)
                if t is None:
                    continue
                ach, p50, p95, p99, lost, lag = point(t.get("result"), r)
                per_rep[v][rep][r] = {"achieved": ach, "p50": p50, "p95": p95, "p99": p99,
                                      "lost": lost, "lag_p99": lag}
        points = {}
        for r in rates:
            ps = [per_rep[v][rep][r] for rep in reps if r in per_rep[v][rep]]
            if not ps:
                continue
            m = {k: med([p[k] for p in ps]) for k in ("achieved", "p50", "p95", "p99")}
            points[r] = {"achieved": m["achieved"][0], "p99": m["p99"][0]}
            s["sweep"].append({
                "offered": r, "reps": len(ps),
                "run": sum(1 for p in ps if p["lost"] is not None),
                "achieved": m["achieved"], "p50_us": m["p50"], "p95_us": m["p95"], "p99_us": m["p99"],
                "lost": med([p["lost"] for p in ps])[0],
                # how far behind its schedule the client sent (p99): a large one means the load
                # generator, not the server, made (part of) the tail
                "send_lag_p99_us": med([p["lag_p99"] for p in ps])[0],
            })
        s["sustained"] = {str(int(b)): sustained(points, rates, b) for b in bounds}
        s["sustained_per_rep"] = {
            str(int(b)): [sustained(per_rep[v][rep], rates, b) for rep in reps] for b in bounds}
        # The XDP stage's counters at the end of each repetition (summed over its rows).
        stage = [t.get("result") for t in trials if t["kind"] == "stage" and t["variant"] == v]
        if stage:
            tot = {}
            for st in stage:
                for row in (st or {}).get("rows", []):
                    if row.get("stage") == "shard":
                        for k, x in row.get("counters", {}).items():
                            if isinstance(x, (int, float)):
                                tot[k] = tot.get(k, 0) + x
            s["stage_counters_all_reps"] = tot
        s["retried_trials"] = sum(1 for t in trials if t["variant"] == v and (t.get("attempts") or 1) > 1)
        s["trials_busy_before"] = sum(1 for t in trials if t["variant"] == v and t["kind"] != "stage"
                                      and (t.get("busy_before_pct") or 0) > 20)
        summary[v] = s

    # Paired to proxy (closed-loop throughput, per repetition).
    for v in variants:
        rs = []
        for rep in reps:
            x, y = find("closed", v, rep), find("closed", "proxy", rep)
            xv = ((x or {}).get("result") or {}).get("throughput_rps")
            yv = ((y or {}).get("result") or {}).get("throughput_rps")
            if xv and yv:
                rs.append(xv / yv)
        summary[v]["closed_paired_to_proxy"] = med(rs)

    # The figure: ratios of sustained rates under each bound.
    lowest = min(rates)
    ratios = {}
    pairs = [("xdp", "proxy"), ("xdp", "client"), ("xdp", "twemproxy"), ("client", "proxy"),
             ("proxy", "twemproxy")]
    for b in bounds:
        key = str(int(b))
        ratios[key] = {}
        for x, y in pairs:
            if x not in summary or y not in summary:
                continue
            sx, sy = summary[x]["sustained"][key], summary[y]["sustained"][key]
            paired = [px / py for px, py in zip(summary[x]["sustained_per_rep"][key],
                                                summary[y]["sustained_per_rep"][key]) if py]
            ratios[key][f"{x}/{y}"] = {
                "ratio": sx / sy if sy else None,
                # y sustains none of the rates: the ratio is at least x's rate over the lowest
                "at_least": (sx / lowest) if (not sy and sx) else None,
                "paired": med(paired),
            }

    doc = {
        "benchmark": "shard",
        "what": "a sharded memcached service over veth (4 memcached on CPU 0, load on CPU 1): "
                "client-side, proxy, XDP steering and twemproxy, an open-loop sweep",
        "baseline": "proxy",
        "quick": a.out.endswith(".quick.json"),
        "config": {"reps": a.reps, "seconds": a.seconds, "warmup_s": a.warmup, "window": a.window,
                   "rates": rates, "bounds_us": bounds, "sustain_fraction": SUSTAIN,
                   "variants": variants, "tcp_connections": a.connections, "shards": 4,
                   "keys": 10000, "dist": "zipf 0.99", "get_ratio": 0.9, "key_size": 16,
                   "value_size": 32, "timeout_ms": 400},
        "host": {"kernel": platform.release(), "cpus_online": os.cpu_count()},
        "summary": summary, "ratios": ratios, "trials": trials,
    }

    def clean(x):  # JSON has no infinity: null
        if isinstance(x, float) and math.isinf(x):
            return None
        if isinstance(x, dict):
            return {k: clean(y) for k, y in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(y) for y in x]
        return x

    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(clean(doc), f, indent=1)
    tsv = a.out[:-5] + ".tsv"

    def num(x):
        return "NaN" if x is None or (isinstance(x, float) and math.isinf(x)) else f"{x:.1f}"

    with open(tsv, "w") as f:
        f.write("variant\toffered\tachieved\tachieved_min\tachieved_max\tp50_us\tp95_us\tp99_us"
                "\tp99_min\tp99_max\treps\tsend_lag_p99_us\n")
        for v in variants:
            for p in summary[v]["sweep"]:
                f.write(f"{v}\t{p['offered']}\t{num(p['achieved'][0])}\t{num(p['achieved'][1])}\t"
                        f"{num(p['achieved'][2])}\t{num(p['p50_us'][0])}\t{num(p['p95_us'][0])}\t"
                        f"{num(p['p99_us'][0])}\t{num(p['p99_us'][1])}\t{num(p['p99_us'][2])}\t"
                        f"{p['run']}\t{num(p['send_lag_p99_us'])}\n")

    def us(x):
        if x is None:
            return "-"
        return "sat" if math.isinf(x) else f"{x:.0f}"

    def rng(m, d=0):
        return "-" if m[0] is None else f"{m[0]:.{d}f} ({m[1]:.{d}f}-{m[2]:.{d}f})"

    print(f"closed loop, {a.window} in flight; medians over {a.reps} rep(s) (min-max); "
          f"paired = / proxy in the same rep")
    print(f"{'variant':10} {'replies/s':>28} {'paired to proxy':>20} {'p50/p99 us':>14} "
          f"{'srv CPU us/reply':>17}")
    for v in variants:
        s = summary[v]
        print(f"{v:10} {rng(s['closed_replies_per_s']):>28} {rng(s['closed_paired_to_proxy'], 2):>20} "
              f"{us(s['closed_p50_us'][0]):>6}/{us(s['closed_p99_us'][0]):<7} "
              f"{(s['server_cpu_us_per_reply'][0] or 0):>14.2f}   errors {s['errors']}, "
              f"trials on a busy machine {s['trials_busy_before']}, retried {s['retried_trials']}")
    print(f"\nopen loop (Poisson), achieved req/s, p95 / p99 us and [the client's send lag p99 us] "
          f"per offered rate\n(medians; sat = saturated: skipped, failed or >1% lost)")
    print(f"{'offered':>8}" + "".join(f" {v:>30}" for v in variants))
    for r in rates:
        row = f"{r:>8}"
        for v in variants:
            p = next((p for p in summary[v]["sweep"] if p["offered"] == r), None)
            cell = "-" if p is None else (
                f"{p['achieved'][0]:.0f} {us(p['p95_us'][0])}/{us(p['p99_us'][0])} "
                f"[{us(p['send_lag_p99_us'])}]")
            row += f" {cell:>30}"
        print(row)
    for b in bounds:
        key = str(int(b))
        print(f"\np99 < {b:.0f} us and achieved >= {SUSTAIN:.0%} of offered: highest offered rate "
              f"(per rep)")
        for v in variants:
            print(f"  {v:10} {summary[v]['sustained'][key]:>8}   {summary[v]['sustained_per_rep'][key]}")
        for name, r in ratios[key].items():
            val = (f"{r['ratio']:.2f}" if r["ratio"] is not None else
                   (f">= {r['at_least']:.1f} (denominator sustains no rate)" if r["at_least"] else "-"))
            print(f"  {name:18} {val:>8}   paired {rng(r['paired'], 2)}")
    print(f"wrote {a.out}\nwrote {tsv}")


if __name__ == "__main__":
    main()
