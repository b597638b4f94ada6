#!/usr/bin/env bash
# `kv load` against a 4-shard `kv server` and against memcached, on loopback: a closed-loop run
# after --preload and an open-loop (Poisson) run on each. Checks values, never timing: replies
# came back, no unexpected replies, every get hit after the preload, the requests add up, and
# the reported percentiles are in order (p50 <= p95 <= p99 <= p99.9 <= max).
# Every process is started here, tracked by pid, bounded in time, and stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
KV=$BUILD/examples/kv
MEMCACHED=${MEMCACHED:-/usr/bin/memcached}
[ -x "$KV" ] || { echo "missing $KV (make all)"; exit 1; }

# Ports from the pid (a block apart from kv_test.sh's), so parallel runs do not collide.
port=$((52000 + ($$ % 600) * 16))
log=$(mktemp)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -f "$log" "$log".*
}
trap cleanup EXIT
fails=0
expect() { # name, command...: the command must succeed
    local name=$1
    shift
    if "$@"; then echo "ok    $name"; else echo "FAIL  $name"; fails=$((fails + 1)); fi
}

# check_json FILE PRELOADED OPEN: the report's values (python3 reads the one JSON object).
check_json() {
    python3 - "$@" <<'PY'
import json, sys
path, preloaded, open_loop = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
r = json.load(open(path))
bad = []
if r["replies"] <= 0: bad.append("no replies")
if r["errors"] != 0: bad.append(f'{r["errors"]} errors')
if r["gets"] + r["sets"] + r["errors"] != r["replies"]: bad.append("gets + sets + errors != replies")
if r["hits"] + r["misses"] != r["gets"]: bad.append("hits + misses != gets")
if r["replies"] + r["lost"] != r["sent"]: bad.append("replies + lost != sent")
if r["gets"] <= 0 or r["sets"] <= 0: bad.append("the 90/10 mix sent no gets or no sets")
if preloaded and r["hits"] != r["gets"]: bad.append(f'{r["misses"]} misses after --preload')
if r["mode"] != ("open" if open_loop else "closed"): bad.append(f'mode {r["mode"]}')
l = r["latency_us"]
order = [l["p50"], l["p95"], l["p99"], l["p99_9"], l["max"]]
if not (0 < l["min"] <= order[0]) or order != sorted(order): bad.append(f"percentiles out of order: {l}")
if l["count"] != r["replies"] - r["errors"]: bad.append("latency samples != good replies")
if r["throughput_rps"] <= 0: bad.append("no throughput")
print(("  " + "; ".join(bad)) if bad else
      f'  {r["replies"]} replies ({r["hits"]}/{r["gets"]} gets hit, {r["lost"]} lost), '
      f'{r["throughput_rps"]:.0f}/s, p50 {l["p50"]:.1f} p99 {l["p99"]:.1f} p99.9 {l["p99_9"]:.1f} '
      f'max {l["max"]:.1f} us')
sys.exit(1 if bad else 0)
PY
}

# run_pair NAME ADDR: closed loop with --preload, then open loop at a modest rate.
run_pair() {
    local name=$1 addr=$2
    local rc=0
    timeout 60 "$KV" load --server "$addr" --preload --mode closed --window 8 --keys 2000 \
        --dist zipf --warmup-s 0.2 --duration-s 1 --json >"$log.closed" || rc=$?
    expect "$name: closed loop after --preload exits 0" test "$rc" -eq 0
    expect "$name: closed loop report" check_json "$log.closed" 1 0
    rc=0
    # The keys are still there from the preload: every get hits in the open-loop run too.
    timeout 60 "$KV" load --server "$addr" --mode open --rate 2000 --keys 2000 --warmup-s 0.2 \
        --duration-s 1 --json >"$log.open" || rc=$?
    expect "$name: open loop (Poisson, 2000/s) exits 0" test "$rc" -eq 0
    expect "$name: open loop report" check_json "$log.open" 1 1
    # About rate x duration requests in the measured second (Poisson: sd ~45; 10 sd allowed).
    expect "$name: open loop sent ~2000 requests in 1 s" python3 -c "
import json, sys; s = json.load(open('$log.open'))['sent']; print('  sent', s); sys.exit(abs(s - 2000) > 450)"
}

"$KV" server --bind 127.0.0.1 --port "$port" --shards 4 --duration-s 120 >"$log" 2>&1 &
pids+=("$!")
for _ in $(seq 50); do grep -q "listening" "$log" && break; sleep 0.1; done
grep -q "listening, 4 shards" "$log" || { echo "server did not start:"; cat "$log"; exit 1; }
run_pair "kv shard 0" "127.0.0.1:$((port + 1))"

# Nothing listening: exit 1, everything lost.
rc=0
timeout 30 "$KV" load --server "127.0.0.1:$port" --duration-s 0.3 --warmup-s 0 --timeout-ms 100 \
    --json >"$log.none" 2>/dev/null || rc=$?
expect "no server on the service port: exit 1" test "$rc" -eq 1
expect "no server: replies 0, lost > 0" python3 -c "
import json, sys; r = json.load(open('$log.none')); sys.exit(not (r['replies'] == 0 and r['lost'] > 0))"

if [ -x "$MEMCACHED" ]; then
    mport=$((port + 10))
    "$MEMCACHED" -U "$mport" -p 0 -l 127.0.0.1 -u nobody -t 1 >"$log.mc" 2>&1 &
    pids+=("$!")
    up=0
    for _ in $(seq 50); do
        if timeout 2 "$KV" get --server "127.0.0.1:$mport" --timeout-ms 100 probe.$$ >/dev/null 2>&1 ||
            [ $? -eq 1 ]; then up=1; break; fi
        sleep 0.1
    done
    expect "memcached answers on UDP port $mport" test "$up" -eq 1
    run_pair "memcached" "127.0.0.1:$mport"
    # Values over 1400 bytes: memcached answers in numbered datagrams (seq i of n).
    rc=0
    timeout 60 "$KV" load --server "127.0.0.1:$mport" --preload --keys 200 --value-size 3000 \
        --warmup-s 0 --duration-s 0.5 --json >"$log.big" || rc=$?
    expect "memcached: 3000-byte values over several datagrams exit 0" test "$rc" -eq 0
    expect "memcached: 3000-byte values report" check_json "$log.big" 1 0
else
    echo "skip  memcached: $MEMCACHED is not installed (apt-get install memcached)"
fi

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "kv load: all checks passed"
