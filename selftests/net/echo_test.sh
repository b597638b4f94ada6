#!/usr/bin/env bash
# Echo across two real hosts (network namespaces joined by veth): the client's stack of noop
# chunnels over io_uring udp gets every message back, intact, at 64 and 1400 bytes, with 0 and
# 3 chunnels on both ends. Checks values from the client's JSON report, not just exit codes.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
ECHO=$BUILD/examples/echo
source selftests/net/netns.sh

netns_pair echo
log=$(mktemp)
trap 'netns_cleanup; rm -f "$log" "$log.server"' EXIT
port=7000
fails=0
for noops in 0 3; do
    # Not `in_a ... &`: that backgrounds a subshell, and $! would not be the server.
    # `ip netns exec` execs the binary, so here $! is the server itself.
    ip netns exec "$NS_A" "$ECHO" server --bind "$ADDR_A:$port" --noops "$noops" \
        --duration-s 60 >"$log.server" 2>&1 &
    srv=$!
    netns_track $srv
    netns_wait_for $srv "$log.server" "listening on" || exit 1
    for size in 64 1400; do
        out=$(in_b "$ECHO" client --server "$ADDR_A:$port" --noops "$noops" --count 20000 \
            --size "$size" --window 32 --max-seconds 20 --json) || true
        echo "noops=$noops size=$size: $out"
        python3 - "$out" "$noops" "$size" <<'PY' || fails=$((fails + 1))
import json, sys
r = json.loads(sys.argv[1])
noops, size = int(sys.argv[2]), int(sys.argv[3])
problems = []
if r["received"] != 20000: problems.append(f"received {r['received']} of 20000")
if r["errors"] != 0: problems.append(f"{r['errors']} corrupt or duplicate replies")
if r["lost"] != 0: problems.append(f"{r['lost']} lost")
want = " > ".join(["noop/passthrough"] * noops + ["udp/io_uring"])
if r["stack"] != want: problems.append(f"stack is '{r['stack']}', expected '{want}'")
if not (0 < r["rtt_us"]["p50"] <= r["rtt_us"]["p99"]): problems.append("implausible RTT percentiles")
if problems:
    print(f"FAIL noops={noops} size={size}: " + "; ".join(problems)); sys.exit(1)
PY
    done
    kill $srv
    wait $srv 2>/dev/null || true
    if kill -0 $srv 2>/dev/null; then echo "server $srv did not stop"; exit 1; fi
    port=$((port + 1))
done
[ "$fails" -eq 0 ] || { echo "$fails case(s) failed"; exit 1; }
echo "echo across namespaces: all cases passed"
