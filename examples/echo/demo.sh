#!/usr/bin/env bash
# `make demo`: two hosts (network namespaces joined by a veth pair), an echo server on one and
# a client on the other, first with a bare UDP stack and then with five noop chunnels on top.
# Run from the repository root as `BUILD=build examples/echo/demo.sh` (make demo does this).
# Everything it creates carries this shell's pid and is removed on exit, failure or Ctrl-C.
set -euo pipefail

BUILD=${BUILD:-build}
ECHO_BIN=$BUILD/examples/echo
COUNT=${DEMO_COUNT:-400000} # messages per run
SIZE=64                     # bytes per message
WINDOW=32                   # messages in flight
NOOPS=(0 5)                 # the stacks compared: noop chunnels above udp, at each end

# 198.18.0.0/15 is reserved for benchmarking (RFC 2544): these addresses cannot collide with
# a real network, and the demo sends to nothing it did not assign itself.
SRV_NS=bertha-demo-$$-srv
CLI_NS=bertha-demo-$$-cli
SRV_IP=198.18.0.1
CLI_IP=198.18.0.2
PORT=7000

server_pid=

say() { printf '%s\n' "$*"; }
die() {
    printf 'demo: %s\n' "$*" >&2
    exit 1
}

# True while the process runs (a zombie, exited but not yet reaped, counts as gone).
alive() {
    local pid=$1 _comm state
    [[ -r /proc/$pid/stat ]] || return 1
    read -r _ _comm state _ <"/proc/$pid/stat" 2>/dev/null || return 1
    [[ $state != Z ]]
}

# Stop the server this script started (by its pid only): SIGTERM lets it print its summary;
# SIGKILL after 3 s if it does not go.
stop_server() {
    local i
    [[ -n $server_pid ]] || return 0
    kill -TERM "$server_pid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        alive "$server_pid" || break
        sleep 0.1
    done
    if alive "$server_pid"; then kill -KILL "$server_pid" 2>/dev/null || true; fi
    wait "$server_pid" 2>/dev/null || true
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
  round trip. Both talk through a Bertha stack of chunnels whose bottom is UDP on io_uring:
  batched sends, and receives straight into buffers shared with the kernel.
  Run 1 has nothing above UDP. Run 2 stacks five 'noop' chunnels at each end; each reads every
  byte of every message, as a real chunnel would, so the difference is what the stack costs.
  msg/s: echoes completed per second. RTT: send to echo back, in microseconds
  (p50: half were faster; p99: 99 in 100 were faster).

EOF

# ---- the two hosts --------------------------------------------------------------------------
ip netns add "$SRV_NS"
ip netns add "$CLI_NS"
# Both veth ends are created directly inside their namespaces: nothing appears on the host.
ip link add veth-srv netns "$SRV_NS" type veth peer name veth-cli netns "$CLI_NS"
ip -n "$SRV_NS" addr add "$SRV_IP/24" dev veth-srv
ip -n "$CLI_NS" addr add "$CLI_IP/24" dev veth-cli
for ns in "$SRV_NS" "$CLI_NS"; do
    ip -n "$ns" link set lo up
done
ip -n "$SRV_NS" link set veth-srv up
ip -n "$CLI_NS" link set veth-cli up

client() { ip netns exec "$CLI_NS" "$ECHO_BIN" client --server "$SRV_IP:$PORT" "$@"; }

start_server() {
    ip netns exec "$SRV_NS" "$ECHO_BIN" server --bind "$SRV_IP:$PORT" --noops "$1" &
    server_pid=$!
    local i
    # Ready when one echo comes back; bounded to about 10 s.
    for ((i = 0; i < 50; i++)); do
        alive "$server_pid" || die "the echo server exited before answering"
        if client --noops "$1" --count 1 --timeout-ms 100 --max-seconds 1 --json \
            >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    die "the echo server did not answer within 10 s"
}

results=()
for k in "${NOOPS[@]}"; do
    say "== $k noop chunnel(s) above udp, at each end =="
    start_server "$k"
    if ! out=$(client --noops "$k" --count "$COUNT" --size "$SIZE" --window "$WINDOW" \
        --progress --json); then
        say "$out"
        die "the client with $k noops failed"
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
for r in runs:
    name = "udp" if r["noops"] == 0 else f"{r['noops']} x noop > udp"
    t = r["rtt_us"]
    print(f"  {name:<24}{r['msgs_per_s']:>10.0f}{r['mbit_per_s']:>9.1f}{t['p50']:>9.1f}"
          f"{t['p99']:>9.1f}{t['p99_9']:>9.1f}{r['lost']:>7}{r['errors']:>8}")
base, stacked = runs[0], runs[-1]
ratio = stacked["msgs_per_s"] / base["msgs_per_s"]
extra = stacked["rtt_us"]["p50"] - base["rtt_us"]["p50"]
print(f"  {stacked['noops']} noops: {ratio:.2f}x the throughput of bare udp, "
      f"{extra:+.1f} us at the median.")
print("  One run each on a shared machine: differences of a few percent are noise;")
print("  `make bench` repeats such runs and reports medians.")
EOF
