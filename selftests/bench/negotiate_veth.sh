#!/usr/bin/env bash
# negotiate across two hosts: network namespaces joined by a veth pair (198.18.0.0/15), the
# server (build/bench/negotiate server) in one, the client in the other, each pinned to its own
# CPU. Writes $BUILD/bench/negotiate.json (client figures, with the server's counters) and
# negotiate.server.json (the server's exit report). selftests/bench/run calls it after the
# binaries; arguments go to the client (e.g. --quick, which writes negotiate.quick.json).
# Removes the namespaces and ends the server (by pid) on exit, failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
BIN=$BUILD/bench/negotiate
[ -x "$BIN" ] || { echo "negotiate_veth: $BIN is missing (make $BIN)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "negotiate_veth: needs root (network namespaces)" >&2; exit 1; }

out=$BUILD/bench/negotiate.json
srv_out=$BUILD/bench/negotiate.server.json
for a in "$@"; do
    if [ "$a" = --quick ]; then # a smoke run must not overwrite a real one
        out=$BUILD/bench/negotiate.quick.json
        srv_out=$BUILD/bench/negotiate.server.quick.json
    fi
done

source selftests/net/netns.sh
netns_pair nego
log=$(mktemp)
trap 'netns_cleanup; rm -f "$log"' EXIT
port=7100

# `ip netns exec` execs the binary, so $! is the server itself (what cleanup ends).
ip netns exec "$NS_A" "$BIN" server --bind "$ADDR_A:$port" --seconds 300 --out "$srv_out.tmp" \
    >"$log" 2>&1 &
srv=$!
netns_track $srv
netns_wait_for $srv "$log" "listening on" || exit 1
cat "$log"

rc=0
ip netns exec "$NS_B" "$BIN" client --server "$ADDR_A:$port" --stop-server \
    --label "veth $NS_B ($ADDR_B) -> $NS_A ($ADDR_A), server and client processes" \
    --out "$out" "$@" || rc=$?

# The client asked the server to stop; it writes its report and exits (bounded: 5 s).
for _ in $(seq 1 100); do
    kill -0 $srv 2>/dev/null || break
    sleep 0.05
done
kill $srv 2>/dev/null || true
wait $srv 2>/dev/null || true
[ -s "$srv_out.tmp" ] && mv "$srv_out.tmp" "$srv_out" && echo "wrote $srv_out"
rm -f "$srv_out.tmp"
exit $rc
