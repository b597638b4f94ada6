#!/usr/bin/env bash
# `make demo`: two hosts (network namespaces joined by a veth pair), an echo server on one and
# a client on the other: a bare UDP stack (io_uring), five noop chunnels on top of it, and the
# same bare stack over AF_XDP (the xsk base: kernel bypass for the echo's one flow).
# Run from the repository root as `BUILD=build examples/echo/demo.sh` (make demo does this).
# Everything it creates carries this shell's pid and is removed on exit, failure or Ctrl-C.
set -euo pipefail
source "$(dirname "$0")/../demo_lib.sh"

BUILD=${BUILD:-build}
ECHO_BIN=$BUILD/examples/echo
COUNT=${DEMO_COUNT:-400000} # messages per run
SIZE=64                     # bytes per message
WINDOW=32                   # messages in flight
RUNS=(udp:0 udp:5 xsk:0)    # the stacks compared, BASE:NOOPS at each end

# 198.18.0.0/15 is reserved for benchmarking (RFC 2544): these addresses cannot collide with
# a real network, and the demo sends to nothing it did not assign itself.
SRV_NS=bertha-demo-$$-srv
CLI_NS=bertha-demo-$$-cli
SRV_IP=198.18.0.1
CLI_IP=198.18.0.2
PORT=7000

server_pid=

# Stop the server this script started (by its pid only).
stop_server() {
    stop_pid "$server_pid" 3
    server_pid=
}

# Runs once, on every way out. INT and TERM only choose the exit status; EXIT does the work,
# with those signals ignored so that a second Ctrl-C cannot cut the cleanup short.
cleanup() {
    local rc=$?
    trap '' INT TERM
    stop_server
    ip netns del "$SRV_NS" 2>/dev/null || true # deleting a namespace removes its veth end
    ip netns del "$CLI_NS" 2>/dev/null || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ $(id -u) == 0 ]] || die "needs root to create network namespaces (try: sudo make demo)"
[[ -x $ECHO_BIN ]] || die "$ECHO_BIN is missing: build it with 'make $ECHO_BIN'"
command -v ip >/dev/null || die "needs 'ip' from iproute2"
command -v python3 >/dev/null || die "needs python3 to print the comparison table"

cat <<EOF
Bertha echo demo
  Two hosts on this machine: network namespaces $SRV_NS ($SRV_IP) and
  $CLI_NS ($CLI_IP), joined by a virtual Ethernet cable (veth).
  The server echoes every UDP message back to its sender. The client keeps $WINDOW messages
  of $SIZE bytes in flight, checks every echo (sequence number, size, contents) and times its
  round trip. Both talk through a Bertha stack of chunnels.
  Run 1: nothing above the udp base (io_uring: batched sends, receives straight into buffers
  shared with the kernel).
  Run 2: five 'noop' chunnels at each end; each reads every byte of every message, as a real
  chunnel would, so the difference from run 1 is what the stack costs.
  Run 3: the same application over the xsk base: the XDP dispatcher hands the echo's one UDP
  flow to AF_XDP sockets (copy mode on veth), bypassing the kernel's UDP and socket layers;
  ARP, ping and other ports still go to the kernel. Same code, one option: --base xsk.
  msg/s: echoes completed per second. RTT: send to echo back, in microseconds
  (p50: half were faster; p99: 99 in 100 were faster).

EOF

# ---- the two hosts --------------------------------------------------------------------------
make_pair "$SRV_NS" "$CLI_NS" veth-srv veth-cli "$SRV_IP" "$CLI_IP"

client() { ip netns exec "$CLI_NS" "$ECHO_BIN" client --server "$SRV_IP:$PORT" "$@"; }

# start_server BASE NOOPS
start_server() {
    ip netns exec "$SRV_NS" "$ECHO_BIN" server --bind "$SRV_IP:$PORT" --base "$1" --noops "$2" &
    server_pid=$!
    local i
    # Ready when one echo comes back; bounded to about 10 s.
    for ((i = 0; i < 50; i++)); do
        alive "$server_pid" || die "the echo server exited before answering"
        if client --base "$1" --noops "$2" --count 1 --timeout-ms 100 --max-seconds 1 --json \
            >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    die "the echo server did not answer within 10 s"
}

results=()
for run in "${RUNS[@]}"; do
    base=${run%:*} k=${run#*:}
    say "== $k noop chunnel(s) above $base, at each end =="
    start_server "$base" "$k"
    if ! out=$(client --base "$base" --noops "$k" --count "$COUNT" --size "$SIZE" \
        --window "$WINDOW" --progress --json); then
        say "$out"
        die "the client with $k noops over $base failed"
    fi
    results+=("$out")
    python3 -c 'import json, sys; print("echo client: stack", json.loads(sys.argv[1])["stack"])' \
        "$out"
    stop_server
    say ""
done

# ---- the comparison -------------------------------------------------------------------------
python3 - "${results[@]}" <<'EOF'
import json, sys

runs = [json.loads(a) for a in sys.argv[1:]]
print("Results (client side; RTT in microseconds)")
print(f"  {'stack at each end':<24}{'msg/s':>10}{'Mbit/s':>9}{'p50':>9}{'p99':>9}"
      f"{'p99.9':>9}{'lost':>7}{'errors':>8}")
def base_of(r):
    return "xsk" if r["stack"].split(" > ")[-1].startswith("xsk") else "udp"
for r in runs:
    b = base_of(r)
    name = b if r["noops"] == 0 else f"{r['noops']} x noop > {b}"
    t = r["rtt_us"]
    print(f"  {name:<24}{r['msgs_per_s']:>10.0f}{r['mbit_per_s']:>9.1f}{t['p50']:>9.1f}"
          f"{t['p99']:>9.1f}{t['p99_9']:>9.1f}{r['lost']:>7}{r['errors']:>8}")
udp = next(r for r in runs if base_of(r) == "udp" and r["noops"] == 0)
stacked = next(r for r in runs if base_of(r) == "udp" and r["noops"] > 0)
xsk = next(r for r in runs if base_of(r) == "xsk")
ratio = stacked["msgs_per_s"] / udp["msgs_per_s"]
extra = stacked["rtt_us"]["p50"] - udp["rtt_us"]["p50"]
print(f"  {stacked['noops']} noops: {ratio:.2f}x the throughput of bare udp, "
      f"{extra:+.1f} us at the median.")
print(f"  xsk: {xsk['msgs_per_s'] / udp['msgs_per_s']:.2f}x the throughput of udp, "
      f"p50 RTT {xsk['rtt_us']['p50']:.1f} us against {udp['rtt_us']['p50']:.1f} us "
      f"(AF_XDP in copy mode: the kernel still copies each frame; veth has no zero-copy).")
print("  One run each on a shared machine: differences of a few percent are noise;")
print("  `make bench` repeats such runs and reports medians.")
EOF
