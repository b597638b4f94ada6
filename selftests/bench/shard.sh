#!/usr/bin/env bash
# shard: a sharded memcached service across a veth pair, three ways of reaching the right shard.
# Host A (a network namespace) runs four memcached processes as the shards (UDP ports
# BASE..BASE+3) and the shard router (examples/kv_proxy) on the service port SVC, all pinned to
# CPU 0; host B runs the load generator (examples/kv load), pinned to CPU 1. Variants:
#   client  the client hashes each key and sends straight to its shard's port (kv load --shards):
#           what shard/client does; the shards answer directly
#   proxy   everything goes to SVC; the router forwards to the shard and relays the reply
#           (mcrouter-style: shard/proxy); the baseline of the ratios
#   xdp     everything goes to SVC; the XDP `shard` stage (bertha-load) rewrites the destination
#           port to the key's shard, so the kernel delivers the request to that memcached; the
#           router only sees what the stage passes on (nothing, here)
# Per variant and repetition (order rotated): a closed loop (--window in flight) for throughput
# and its latency percentiles, and an open loop at --rate for latency under a fixed offered
# load; plus CPU 0's busy time per reply in the closed loop (the server side's cost). Keys are
# preloaded once (their placement is the same for every variant: one hash). Gets 90%, Zipf 0.99
# over 10,000 keys, 16-byte keys, 32-byte values.
#
#   selftests/bench/shard.sh [--quick] [--reps N] [--seconds S] [--window W] [--rate R]
#
# Writes $BUILD/bench/shard.json and shard.tsv (--quick: shard.quick.*). Needs root. Removes
# the namespaces, the bpffs and every process it started (by pid), also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
KV=$BUILD/examples/kv
PROXY=$BUILD/examples/kv_proxy
BL=$BUILD/bertha-load
for b in "$KV" "$PROXY" "$BL"; do [ -x "$b" ] || { echo "shard: $b is missing (make)" >&2; exit 1; }; done
command -v memcached >/dev/null || { echo "shard: memcached is missing (make deps)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "shard: needs root (network namespaces)" >&2; exit 1; }

reps=5 seconds=3 window=32 rate=40000 out=$BUILD/bench/shard.json
while [ $# -gt 0 ]; do
    case $1 in
    --quick) reps=1 seconds=0.5 out=$BUILD/bench/shard.quick.json ;;
    --reps) reps=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    --window) window=$2; shift ;;
    --rate) rate=$2; shift ;;
    *) echo "usage: $0 [--quick] [--reps N] [--seconds S] [--window W] [--rate R]" >&2; exit 2 ;;
    esac
    shift
done

source selftests/net/netns.sh
netns_pair shbench
work=$(mktemp -d /tmp/bertha-shard-bench-XXXXXX)
cleanup() {
    netns_cleanup
    mountpoint -q "$work/bpffs" && umount "$work/bpffs"
    rm -rf "$work"
    rm -f /run/bertha/lock/"$IF_A"@*.lock
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
netns_bpffs "$work/bpffs"
SHARDS=4 BASE=12000 SVC=11211
LOAD=(--dist zipf --keys 10000 --key-size 16 --value-size 32 --get-ratio 0.9 --timeout-ms 500)

for i in $(seq 0 $((SHARDS - 1))); do
    ip netns exec "$NS_A" taskset -c 0 memcached -U $((BASE + i)) -p 0 -l "$ADDR_A" -u nobody -t 1 \
        >"$work/memcached-$i.log" 2>&1 &
    netns_track $!
done
ip netns exec "$NS_A" taskset -c 0 "$PROXY" --listen "$ADDR_A:$SVC" --shards-at "$ADDR_A" \
    --base $BASE --shards $SHARDS >"$work/proxy.log" 2>&1 &
netns_track $!
netns_wait_for $! "$work/proxy.log" "listening on" >/dev/null
sleep 0.3 # the memcached processes bind at start; the preload retries what is lost anyway
in_b taskset -c 1 "$KV" load --server "$ADDR_A:$BASE" --shards $SHARDS --base $BASE "${LOAD[@]}" \
    --preload --duration-s 0.2 --warmup-s 0 --json >"$work/preload.json" ||
    { echo "shard: preload failed: $(cat "$work/preload.json")" >&2; exit 1; }

cpu0_busy() { awk '$1 == "cpu0" { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; } # jiffies

# run VARIANT REP: one closed-loop and one open-loop trial; appends JSON lines to trials.
run() {
    local v=$1 rep=$2 dest=(--server "$ADDR_A:$SVC") b0 b1
    [ "$v" = client ] && dest=(--server "$ADDR_A:$BASE" --shards $SHARDS --base $BASE)
    if [ "$v" = xdp ]; then
        ip netns exec "$NS_A" "$BL" attach --iface "$IF_A" --port $SVC \
            --stage "shard:shards=$SHARDS,base=$BASE" >/dev/null
    fi
    b0=$(cpu0_busy)
    in_b taskset -c 1 "$KV" load "${dest[@]}" "${LOAD[@]}" --mode closed --window "$window" \
        --warmup-s 0.3 --duration-s "$seconds" --json >"$work/closed.json" 2>"$work/closed.err" || true
    b1=$(cpu0_busy)
    in_b taskset -c 1 "$KV" load "${dest[@]}" "${LOAD[@]}" --mode open --rate "$rate" \
        --warmup-s 0.3 --duration-s "$seconds" --json >"$work/open.json" 2>"$work/open.err" || true
    if [ "$v" = xdp ]; then
        ip netns exec "$NS_A" "$BL" --json stats --iface "$IF_A" >"$work/stats.json"
        ip netns exec "$NS_A" "$BL" detach --iface "$IF_A" --port $SVC >/dev/null
    else
        echo '{"rows": []}' >"$work/stats.json"
    fi
    python3 - "$v" "$rep" "$work/closed.json" "$work/open.json" "$work/stats.json" \
        "$((b1 - b0))" "$(getconf CLK_TCK)" >>"$work/trials.jsonl" <<'PY'
import json, sys
v, rep, closed, opn, stats, jiffies, hz = sys.argv[1:8]
def load(p):
    try: return json.load(open(p))
    except Exception as e: return {"error": str(e)}
c, o, st = load(closed), load(opn), load(stats)
shard = [r["counters"] for r in st.get("rows", []) if r.get("stage") == "shard"]
# CPU 0's busy time covers the whole closed-loop run (warm-up included): per reply of that run.
replies = (c.get("throughput_rps") or 0) * ((c.get("warmup_s") or 0) + (c.get("duration_s") or 0))
print(json.dumps({"variant": v, "rep": int(rep), "closed": c, "open": o,
                  "server_cpu_us_per_reply": (int(jiffies) / int(hz) * 1e6 / replies) if replies else None,
                  "stage": shard[0] if shard else None}))
PY
}

variants=(client proxy xdp)
: >"$work/trials.jsonl"
for rep in $(seq 1 "$reps"); do
    order=()
    for k in 0 1 2; do order+=("${variants[$(((rep - 1 + k) % 3))]}"); done
    echo "  rep $rep/$reps: ${order[*]}"
    for v in "${order[@]}"; do run "$v" "$rep"; done
done
cp "$work/proxy.log" "$work/proxy.final.log" 2>/dev/null || true

python3 - "$work/trials.jsonl" "$out" "$reps" "$seconds" "$window" "$rate" <<'PY'
import json, statistics, sys, os, platform
path, out, reps, seconds, window, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
trials = [json.loads(l) for l in open(path)]
def med(xs):
    xs = [x for x in xs if x is not None]
    return (statistics.median(xs), min(xs), max(xs)) if xs else (None, None, None)
by = {}
for t in trials: by.setdefault(t["variant"], []).append(t)
def paired(v, f):
    r = []
    for rep in range(1, reps + 1):
        a = [f(t) for t in by.get(v, []) if t["rep"] == rep]
        b = [f(t) for t in by.get("proxy", []) if t["rep"] == rep]
        if a and b and a[0] and b[0]: r.append(a[0] / b[0])
    return med(r)
summary = {}
for v in ("client", "proxy", "xdp"):
    ts = by.get(v, [])
    g = lambda f: med([f(t) for t in ts])
    summary[v] = {
        "closed_replies_per_s": g(lambda t: t["closed"].get("throughput_rps")),
        "closed_p50_us": g(lambda t: t["closed"].get("latency_us", {}).get("p50")),
        "closed_p99_us": g(lambda t: t["closed"].get("latency_us", {}).get("p99")),
        "open_p50_us": g(lambda t: t["open"].get("latency_us", {}).get("p50")),
        "open_p95_us": g(lambda t: t["open"].get("latency_us", {}).get("p95")),
        "open_p99_us": g(lambda t: t["open"].get("latency_us", {}).get("p99")),
        "open_lost": g(lambda t: t["open"].get("lost")),
        "server_cpu_us_per_reply": g(lambda t: t["server_cpu_us_per_reply"]),
        "throughput_paired_to_proxy": paired(v, lambda t: t["closed"].get("throughput_rps")),
        "errors": sum((t["closed"].get("errors") or 0) + (t["open"].get("errors") or 0) for t in ts),
    }
doc = {"benchmark": "shard", "what": "a sharded memcached service over veth: client-side, proxy, XDP steering",
       "baseline": "proxy", "quick": out.endswith(".quick.json"),
       "config": {"reps": reps, "seconds": seconds, "window": window, "open_rate": rate, "shards": 4,
                  "keys": 10000, "dist": "zipf 0.99", "get_ratio": 0.9, "key_size": 16, "value_size": 32},
       "host": {"kernel": platform.release(), "cpus_online": os.cpu_count()},
       "summary": summary, "trials": trials}
os.makedirs(os.path.dirname(out), exist_ok=True)
json.dump(doc, open(out, "w"), indent=1)
tsv = out[:-5] + ".tsv"
with open(tsv, "w") as f:
    f.write("variant\treplies_per_s\tpaired\tclosed_p99_us\topen_p99_us\tcpu_us\n")
    for v, s in summary.items():
        f.write(f"{v}\t{s['closed_replies_per_s'][0]}\t{s['throughput_paired_to_proxy'][0]}\t{s['closed_p99_us'][0]}\t{s['open_p99_us'][0]}\t{s['server_cpu_us_per_reply'][0]}\n")
fmt = lambda m, d=1: "-" if m[0] is None else (f"{m[0]:.{d}f} ({m[1]:.{d}f}-{m[2]:.{d}f})")
print(f"closed loop, {window} in flight; open loop at {rate:.0f}/s; medians over {reps} rep(s) (min-max); paired = / proxy in the same rep")
print(f"{'variant':8} {'replies/s':>28} {'paired to proxy':>22} {'closed p50/p99 us':>20} {'open p50/p95/p99 us':>24} {'srv CPU us/reply':>17}")
for v, s in summary.items():
    print(f"{v:8} {fmt(s['closed_replies_per_s'], 0):>28} {fmt(s['throughput_paired_to_proxy'], 2):>22} "
          f"{(s['closed_p50_us'][0] or 0):>9.1f}/{(s['closed_p99_us'][0] or 0):<9.1f} "
          f"{(s['open_p50_us'][0] or 0):>7.1f}/{(s['open_p95_us'][0] or 0):.1f}/{(s['open_p99_us'][0] or 0):<7.1f} "
          f"{(s['server_cpu_us_per_reply'][0] or 0):>12.2f}  errors {s['errors']}")
print(f"wrote {out}\nwrote {tsv}")
PY
