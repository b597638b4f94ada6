#!/usr/bin/env bash
# Negotiation across two real hosts (network namespaces joined by veth): a 1-RTT connect, a
# zero-RTT reconnect that the server accepts, a pre-arranged connect, 200 clients connecting at
# once (all must connect and get an echo), and an incompatible client refused with an error
# that names the chunnel. The checks are `negotiate check` (build/bench/negotiate), which asks
# the server for its counters as well; this script also checks the server's exit report, and
# runs selftests/bench/negotiate_veth.sh --quick. No timing is judged.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
BIN=$BUILD/bench/negotiate
[ -x "$BIN" ] || { echo "missing $BIN (run make)"; exit 1; }
source selftests/net/netns.sh

netns_pair negot
log=$(mktemp)
trap 'netns_cleanup; rm -f "$log" "$log.report" "$log.bench" "$log.quick.json" "$log.quick.tsv"' EXIT
port=7200

# `ip netns exec` execs the binary, so $! is the server itself (what cleanup ends by pid). It
# also ends on its own after 120 s, whatever happens here.
ip netns exec "$NS_A" "$BIN" server --bind "$ADDR_A:$port" --seconds 120 --out "$log.report" \
    >"$log" 2>&1 &
srv=$!
netns_track $srv
netns_wait_for $srv "$log" "listening on" || exit 1

rc=0
ip netns exec "$NS_B" timeout 60 "$BIN" check --server "$ADDR_A:$port" --clients 200 || rc=$?

# Stop the server (SIGTERM: it writes its report and exits) and check the report's values.
kill -TERM $srv
for _ in $(seq 1 100); do
    kill -0 $srv 2>/dev/null || break
    sleep 0.05
done
wait $srv 2>/dev/null || true
python3 - "$log.report" <<'PY' || rc=1
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"FAIL  the server's exit report is missing or not JSON: {e}"); sys.exit(1)
problems = []
if r["burst.accepted"] != 200: problems.append(f"burst listener accepted {r['burst.accepted']}, not 200")
if r["neg.accepted"] < 2: problems.append(f"negotiated listener accepted {r['neg.accepted']} (< 2)")
if r["pre.accepted"] < 1: problems.append(f"pre-arranged listener accepted {r['pre.accepted']} (< 1)")
if r["neg.refused"] != 1: problems.append(f"{r['neg.refused']} refusals, not 1")
if r["errors"] != 0: problems.append(f"{r['errors']} server errors, last: {r['last_error']}")
if problems:
    print("FAIL  server report: " + "; ".join(problems)); sys.exit(1)
print("ok    server report: 200 burst peers, 1 refusal, no errors")
PY
# The benchmark's own veth script in its smoke mode (it makes its own namespaces), so that the
# figures `make bench` produces cannot rot unnoticed. Its numbers are not judged.
if ! BUILD=$BUILD selftests/bench/negotiate_veth.sh --quick --out "$log.quick.json" >"$log.bench" 2>&1; then
    echo "FAIL  selftests/bench/negotiate_veth.sh --quick:"
    tail -20 "$log.bench"
    rc=1
else
    echo "ok    selftests/bench/negotiate_veth.sh --quick ran"
fi
[ "$rc" -eq 0 ] || { echo "negotiate across namespaces: FAILED"; exit 1; }
echo "negotiate across namespaces: all checks passed"
