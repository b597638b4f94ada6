#!/usr/bin/env python3
"""datapath's report: reads the trials datapath.sh ran (a manifest of client outputs and CPU
readings), prints the table and writes datapath.json (configuration, host, summary, every raw
trial) and datapath.tsv (for datapath.gp). Figures are reported, never judged: the exit status
is 0 whatever they are (1 only when there is nothing to report).

Per trial: msgs/s = valid echoes / the client's measured seconds; RTT p50/p99 from the client's
histogram (examples/echo, datapath_mmsg: the same log-linear histogram, ~1% buckets) or from
sockperf's own percentiles (--full-rtt: round trip; sockperf's default "latency" is half of
it); server CPU-us per echoed message = the server's on-CPU time (all threads, schedstat)
across the client run / the messages echoed in it; client CPU-us per message = the client
process's user + sys time (bash `time`, start-up included) / its messages. With
CONFIG_IRQ_TIME_ACCOUNTING off, softirq work counts to the task it interrupts.
"""
import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time

DESCRIBE = {
    "xsk": "examples/echo --base xsk: AF_XDP through Bertha's XDP dispatcher, copy mode on veth",
    "udp": "examples/echo --base udp: io_uring (multishot recvmsg, batched sendmsg) [baseline]",
    "mmsg": "build/bench/datapath_mmsg: blocking recvmmsg/sendmmsg, no Bertha datapath code",
    "sockperf": "Debian's sockperf: blocking recvfrom/sendto; throughput = ping-pong in bursts "
    "of the window (send W, wait for all W)",
}


def nan():
    return float("nan")


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return nan()


def summary(values):
    v = [x for x in values if not math.isnan(x)]
    if not v:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(v), "min": min(v), "max": max(v)}


def clean(x):
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [clean(v) for v in x]
    return x


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def parse_json_client(text):
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                pass
    return None


def parse_sockperf(text):
    """sockperf ping-pong --full-rtt: its [Valid Duration] counts and RTT percentiles (us)."""
    def grab(pattern, cast=float):
        m = re.search(pattern, text)
        return cast(m.group(1)) if m else None

    valid = re.search(r"\[Valid Duration\] RunTime=([\d.]+) sec; SentMessages=(\d+); "
                      r"ReceivedMessages=(\d+)", text)
    total = re.search(r"\[Total Run\] RunTime=([\d.]+) sec; Warm up time=(\d+) msec; "
                      r"SentMessages=(\d+); ReceivedMessages=(\d+)", text)
    if not valid:
        return None
    p = {}
    for key, label in (("p25", "25.000"), ("p50", "50.000"), ("p90", "90.000"),
                       ("p99", "99.000"), ("p99_9", "99.900")):
        p[key] = grab(r"percentile " + re.escape(label) + r" =\s*([\d.]+)")
    p["min"] = grab(r"<MIN> observation =\s*([\d.]+)")
    p["max"] = grab(r"<MAX> observation =\s*([\d.]+)")
    seconds, received = float(valid.group(1)), int(valid.group(3))
    return {
        "valid_seconds": seconds,
        "valid_sent": int(valid.group(2)),
        "received": received,
        "msgs_per_s": received / seconds if seconds > 0 else nan(),
        "total_seconds": float(total.group(1)) if total else None,
        "warmup_ms": int(total.group(2)) if total else None,
        "total_received": int(total.group(4)) if total else received,
        "avg_rtt_us": grab(r"avg-rtt=([\d.]+)"),
        "dropped": grab(r"# dropped messages = (\d+)", int),
        "duplicated": grab(r"# duplicated messages = (\d+)", int),
        "out_of_order": grab(r"# out-of-order messages = (\d+)", int),
        "rtt_us": p,
        "half_rtt_us": {k: (v / 2 if v is not None else None) for k, v in p.items()},
        "summary_line": grab(r"(Summary: [^\n]*)", str),
    }


STAT = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_shares(path, t):
    """Per CPU, the share of each kind of time across the client run (/proc/stat). io_uring
    waits count as iowait: idle + iowait is the idle CPU."""
    def lines(p):
        return {l.split()[0]: [int(x) for x in l.split()[1:9]] for l in read(p).splitlines()
                if l.startswith("cpu")}
    a, b = lines(path + ".stat0"), lines(path + ".stat1")
    out = {}
    for cpu in a:
        if cpu not in b:
            continue
        d = [y - x for x, y in zip(a[cpu], b[cpu])]
        total = sum(d)
        if total <= 0:
            continue
        share = {k: v / total for k, v in zip(STAT, d)}
        share["idle"] += share.pop("iowait")
        share["user"] += share.pop("nice")
        out[cpu] = share
    return out


def load_trials(manifest, a_cpu, b_cpu):
    trials = []
    for line in read(manifest).splitlines():
        f = line.split("\t")
        if len(f) != 11:
            continue
        rep, order, variant, size, mode, window, path, tcli, before, after, run = f
        user, sys_ = (tcli.split() + ["-", "-"])[:2]
        b, a = before.split(), after.split()
        rc, t0, t1 = run.split()
        t = {
            "rep": rep if rep == "warmup" else int(rep),
            "order": int(order),
            "variant": variant,
            "size": int(size),
            "mode": mode,
            "window": int(window),
            "exit": int(rc),
            "wall_s": num(t1) - num(t0),
            "client_user_s": num(user),
            "client_sys_s": num(sys_),
            "server_cpu_ns": num(a[0]) - num(b[0]),
            "server_utime_ticks": num(a[1]) - num(b[1]),
            "server_stime_ticks": num(a[2]) - num(b[2]),
        }
        t["cpus"] = cpu_shares(path, t)
        out = read(path) + read(path + ".err")
        if variant == "sockperf":
            sp = parse_sockperf(out)
            t["sockperf"] = sp
            if sp:
                t.update(msgs_per_s=sp["msgs_per_s"], rtt_p50_us=num(sp["rtt_us"]["p50"]),
                         rtt_p99_us=num(sp["rtt_us"]["p99"]), received=sp["received"],
                         lost=sp["dropped"] or 0, seconds=sp["valid_seconds"])
                echoed = sp["total_received"]
        else:
            c = parse_json_client(read(path))
            t["client"] = c
            if c:
                t.update(msgs_per_s=num(c.get("msgs_per_s")),
                         rtt_p50_us=num(c["rtt_us"]["p50"]), rtt_p99_us=num(c["rtt_us"]["p99"]),
                         received=c.get("received", 0), lost=c.get("lost", 0),
                         errors=c.get("errors", 0), seconds=num(c.get("seconds")))
                echoed = c.get("received", 0)
        if "msgs_per_s" not in t or not t.get("received"):
            t.update(msgs_per_s=nan(), rtt_p50_us=nan(), rtt_p99_us=nan(), received=0)
            t["error"] = (out.strip().splitlines() or ["no output"])[-1][:300]
            echoed = 0
        # Load from elsewhere on each CPU: its busy share minus our process's own.
        wall = t["wall_s"]
        srv_own = t["server_cpu_ns"] / 1e9 / wall if wall > 0 else nan()
        cli_own = (t["client_user_s"] + t["client_sys_s"]) / wall if wall > 0 else nan()
        own = {f"cpu{a_cpu}": srv_own, f"cpu{b_cpu}": cli_own}
        if a_cpu == b_cpu:
            own = {f"cpu{a_cpu}": srv_own + cli_own}
        for cpu, sh in t["cpus"].items():
            if cpu in own and not math.isnan(own[cpu]):
                sh["other"] = max(0.0, 1 - sh["idle"] - own[cpu])
        if echoed:
            t["server_cpu_us_per_msg"] = t["server_cpu_ns"] / 1e3 / echoed
            t["client_cpu_us_per_msg"] = (t["client_user_s"] + t["client_sys_s"]) * 1e6 / echoed
            ticks = t["server_utime_ticks"] + t["server_stime_ticks"]
            t["server_sys_share"] = t["server_stime_ticks"] / ticks if ticks > 0 else nan()
        else:
            t["server_cpu_us_per_msg"] = t["client_cpu_us_per_msg"] = nan()
            t["server_sys_share"] = nan()
        trials.append(t)
    return trials


def share_summary(trials, cpu):
    """Median share of each kind of time on one CPU over the given trials."""
    out = {}
    for k in ("user", "system", "softirq", "irq", "steal", "idle", "other"):
        v = [t["cpus"][cpu][k] for t in trials
             if t["cpus"].get(cpu, {}).get(k) is not None]
        out[k] = statistics.median(v) if v else None
    return out


def summarize(trials, variants, sizes, reps, baseline, cpus):
    measured = [t for t in trials if t["rep"] != "warmup"]

    def series(v, size, mode, key):
        out = [nan()] * reps
        for t in measured:
            if t["variant"] == v and t["size"] == size and t["mode"] == mode:
                out[t["rep"]] = num(t.get(key))
        return out

    def paired(a, b):
        return [x / y if y and not math.isnan(y) else nan() for x, y in zip(a, b)]

    cells = []
    for size in sizes:
        for mode in ("throughput", "pingpong"):
            base_rate = series(baseline, size, mode, "msgs_per_s")
            base_p50 = series(baseline, size, mode, "rtt_p50_us")
            for v in variants:
                rate = series(v, size, mode, "msgs_per_s")
                p50 = series(v, size, mode, "rtt_p50_us")
                p99 = series(v, size, mode, "rtt_p99_us")
                mine = [t for t in measured
                        if t["variant"] == v and t["size"] == size and t["mode"] == mode]
                cells.append({
                    "variant": v, "size": size, "mode": mode,
                    "window": mine[0]["window"] if mine else None,
                    "msgs_per_s": summary(rate),
                    "msgs_per_s_paired_to_udp": summary(paired(rate, base_rate)),
                    "rtt_p50_us": summary(p50),
                    "rtt_p99_us": summary(p99),
                    "rtt_p50_paired_to_udp": summary(paired(p50, base_p50)),
                    "server_cpu_us_per_msg": summary(series(v, size, mode,
                                                            "server_cpu_us_per_msg")),
                    "client_cpu_us_per_msg": summary(series(v, size, mode,
                                                            "client_cpu_us_per_msg")),
                    "server_sys_share": summary(series(v, size, mode, "server_sys_share")),
                    "cpu_us_per_msg_paired_to_udp": summary(paired(
                        [x + y for x, y in zip(series(v, size, mode, "server_cpu_us_per_msg"),
                                               series(v, size, mode, "client_cpu_us_per_msg"))],
                        [x + y for x, y in zip(
                            series(baseline, size, mode, "server_cpu_us_per_msg"),
                            series(baseline, size, mode, "client_cpu_us_per_msg"))])),
                    "cpu_time_shares": {role: share_summary(mine, f"cpu{n}")
                                        for role, n in cpus.items()},
                    "trials": len(mine),
                    "failed": sum(1 for t in mine if not t.get("received")),
                    "lost": sum(int(t.get("lost") or 0) for t in mine),
                    "errors": sum(int(t.get("errors") or 0) for t in mine),
                })
    return cells


def cell(cells, v, size, mode):
    for c in cells:
        if c["variant"] == v and c["size"] == size and c["mode"] == mode:
            return c
    return None


def goals(trials, cells, sizes, reps):
    out = []
    small = min(sizes)
    c = cell(cells, "xsk", small, "throughput")
    if c and c["msgs_per_s_paired_to_udp"]["median"] is not None:
        r = c["msgs_per_s_paired_to_udp"]
        out.append({"goal": f"xsk >= 2x udp messages/s at {small} B",
                    "figure": r, "met": r["median"] >= 2})
    measured = [t for t in trials if t["rep"] != "warmup"]
    for size in sizes:
        x = [nan()] * reps
        s = [nan()] * reps
        for t in measured:
            if t["size"] == size and t["mode"] == "pingpong":
                if t["variant"] == "xsk":
                    x[t["rep"]] = num(t.get("rtt_p50_us"))
                if t["variant"] == "sockperf":
                    s[t["rep"]] = num(t.get("rtt_p50_us"))
        r = summary([a / b if b and not math.isnan(b) else nan() for a, b in zip(x, s)])
        if r["median"] is not None:
            out.append({"goal": f"xsk p50 RTT < sockperf's (kernel path) at {size} B",
                        "figure": r, "xsk_p50_us": summary(x)["median"],
                        "sockperf_p50_us": summary(s)["median"], "met": r["median"] < 1})
    return out


def fmt(s, spec="{:.0f}"):
    if s["median"] is None:
        return "-"
    return (spec + " (" + spec + "-" + spec + ")").format(s["median"], s["min"], s["max"])


def f1(x, spec="{:.2f}"):
    return "-" if x is None else spec.format(x)


def print_table(a, cells, gl, variants, sizes):
    q = " [--quick: a smoke run; the numbers mean nothing]" if a.quick else ""
    print(f"\ndatapath: UDP echo across veth, both ends running the variant; baseline: "
          f"{a.baseline}{q}")
    print(f"server CPU {a.server_cpu}, client CPU {a.client_cpu}; {a.reps} rep(s) x {a.seconds} s "
          f"per trial (sockperf -t {a.sockperf_seconds}, of which ~0.45 s is its warm-up); "
          f"variants alternated, order rotated")
    print("figures: median over reps (min-max); paired = variant / udp within each rep, median "
          "(min-max);\nCPU: us per echoed message, server (all threads, on-CPU time) and client "
          "(user+sys, start-up included)\n")
    print(f"throughput: closed loop, {a.window} messages in flight (sockperf: bursts of "
          f"{a.window}); messages/s")
    hdr = f"{'size':>5}  {'variant':<9} {'msgs/s (min-max)':<27} {'paired to udp':<22} " \
          f"{'srv CPU':>8} {'cli CPU':>8} {'CPU paired to udp':<22}"
    print(hdr)
    for size in sizes:
        for v in variants:
            c = cell(cells, v, size, "throughput")
            if not c:
                continue
            print(f"{size:>5}  {v:<9} {fmt(c['msgs_per_s']):<27} "
                  f"{fmt(c['msgs_per_s_paired_to_udp'], '{:.3f}'):<22} "
                  f"{f1(c['server_cpu_us_per_msg']['median']):>8} "
                  f"{f1(c['client_cpu_us_per_msg']['median']):>8} "
                  f"{fmt(c['cpu_us_per_msg_paired_to_udp'], '{:.3f}'):<22}"
                  + (f"  ({c['failed']} failed)" if c["failed"] else "")
                  + (f"  ({c['lost']} lost)" if c["lost"] else ""))
    print("\nping-pong: 1 message in flight; round-trip time, us (sockperf: its --full-rtt "
          "percentiles; half of them is its default 'latency')")
    print(f"{'size':>5}  {'variant':<9} {'p50 (min-max)':<24} {'p99 (min-max)':<27} "
          f"{'p50 paired to udp':<22} {'msgs/s':>8}")
    for size in sizes:
        for v in variants:
            c = cell(cells, v, size, "pingpong")
            if not c:
                continue
            print(f"{size:>5}  {v:<9} {fmt(c['rtt_p50_us'], '{:.1f}'):<24} "
                  f"{fmt(c['rtt_p99_us'], '{:.1f}'):<27} "
                  f"{fmt(c['rtt_p50_paired_to_udp'], '{:.3f}'):<22} "
                  f"{f1(c['msgs_per_s']['median'], '{:.0f}'):>8}"
                  + (f"  ({c['failed']} failed)" if c["failed"] else ""))
    print("\nwhere the time goes in the throughput runs: each CPU's time by kind over the run "
          "(/proc/stat, median;\nidle includes iowait, where io_uring waits; other = the CPU's "
          "busy time not spent by our process\non it: other work on a shared machine, and "
          "softirqs run by ksoftirqd)")
    print(f"{'size':>5}  {'variant':<9} {'server CPU: usr  sys  si  idle other':<38} "
          f"{'client CPU: usr  sys  si  idle other':<38}")
    for size in sizes:
        for v in variants:
            c = cell(cells, v, size, "throughput")
            if not c:
                continue
            parts = []
            for role in ("server_cpu", "client_cpu"):
                sh = c["cpu_time_shares"][role]
                parts.append(" ".join("   -" if sh[k] is None else f"{sh[k] * 100:3.0f}%"
                                      for k in ("user", "system", "softirq", "idle", "other")))
            print(f"{size:>5}  {v:<9} {'':<11}{parts[0]:<27} {'':<11}{parts[1]:<27}")
    sp = [cell(cells, "sockperf", s, "pingpong") for s in sizes]
    if any(c and c["rtt_p50_us"]["median"] is not None for c in sp):
        print("\nsockperf ping-pong in its own terms (half-RTT = its default 'latency'): " +
              "; ".join(f"{c['size']} B p50 half-RTT {c['rtt_p50_us']['median'] / 2:.1f} us, "
                        f"p99 {c['rtt_p99_us']['median'] / 2:.1f} us"
                        for c in sp if c and c["rtt_p50_us"]["median"] is not None))
    if gl:
        print("\ngoals:")
        for g in gl:
            print(f"  {g['goal']}: {fmt(g['figure'], '{:.3f}')} -> "
                  f"{'met' if g['met'] else 'not met'}")
    print("\nvariants:")
    for v in variants:
        print(f"  {v:<9} {DESCRIBE[v]}")
    print()


def write_tsv(path, cells, variants, sizes):
    cols = ["size"]
    for v in variants:
        cols += [v, f"{v}_lo", f"{v}_hi", f"{v}_p50", f"{v}_p50_lo", f"{v}_p50_hi", f"{v}_p99",
                 f"{v}_p99_lo", f"{v}_p99_hi"]
    rows = ["\t".join(cols)]

    def g(x):
        return "nan" if x is None else f"{x:.2f}"

    for size in sizes:
        r = [str(size)]
        for v in variants:
            t = cell(cells, v, size, "throughput")
            p = cell(cells, v, size, "pingpong")
            for s in (t["msgs_per_s"], p["rtt_p50_us"], p["rtt_p99_us"]):
                r += [g(s["median"]), g(s["min"]), g(s["max"])]
        rows.append("\t".join(r))
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(rows) + "\n")
    os.replace(path + ".tmp", path)


def host():
    cpu = ""
    for line in read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    try:
        sp = subprocess.run(["sockperf", "--version"], capture_output=True, text=True,
                            timeout=5)
        spv = re.search(r"version\s+#?([\w.\-]+)", sp.stdout + sp.stderr)
        spv = spv.group(1) if spv else None
    except (OSError, subprocess.SubprocessError):
        spv = None
    return {"kernel": platform.release(), "cpu": cpu, "cpus_online": os.cpu_count(),
            "sockperf": spv, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("manifest", "servers", "out", "baseline", "variants", "sizes", "label"):
        p.add_argument("--" + name, required=True)
    for name in ("window", "reps", "server-cpu", "client-cpu", "quick"):
        p.add_argument("--" + name, type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--sockperf-seconds", type=int, required=True)
    a = p.parse_args()
    a.quick = bool(a.quick)
    variants = a.variants.split(",")
    sizes = [int(s) for s in a.sizes.split(",")]

    trials = load_trials(a.manifest, a.server_cpu, a.client_cpu)
    if not trials:
        print("datapath: no trial ran", file=sys.stderr)
        return 1
    cpus = {"server_cpu": a.server_cpu, "client_cpu": a.client_cpu}
    cells = summarize(trials, variants, sizes, a.reps, a.baseline, cpus)
    gl = goals(trials, cells, sizes, a.reps)
    print_table(a, cells, gl, variants, sizes)

    servers = []
    for line in read(a.servers).splitlines():
        f = line.split("\t")
        if len(f) == 4:
            log = read(f[2]).strip().splitlines()
            servers.append({"rep": f[0], "variant": f[1], "xdp_after_stop": f[3],
                            "log": [l for l in log if l.strip()][-6:]})
    doc = {
        "benchmark": "datapath",
        "what": "UDP echo across a veth pair between two network namespaces, four datapaths; "
                "throughput (closed loop) and ping-pong RTT per message size",
        "baseline": a.baseline,
        "quick": a.quick,
        "config": {"reps": a.reps, "seconds": a.seconds, "sockperf_seconds": a.sockperf_seconds,
                   "window": a.window, "sizes": sizes, "variants": variants,
                   "server_cpu": a.server_cpu, "client_cpu": a.client_cpu, "label": a.label,
                   "order": "per rep: each variant's server started, its trials (per size: "
                            "throughput then ping-pong), its server stopped; variant order "
                            "rotated per rep; a warm-up block per variant first (not --quick)"},
        "host": host(),
        "variants": {v: DESCRIBE[v] for v in variants},
        "summary": cells,
        "goals": gl,
        "servers": servers,
        "trials": trials,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out + ".tmp", "w") as f:
        json.dump(clean(doc), f, indent=1)
        f.write("\n")
    os.replace(a.out + ".tmp", a.out)
    tsv = a.out[:-5] + ".tsv" if a.out.endswith(".json") else a.out + ".tsv"
    write_tsv(tsv, cells, variants, sizes)
    print(f"wrote {a.out}\nwrote {tsv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
