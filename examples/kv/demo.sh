#!/usr/bin/env bash
# `make demo`: the key-value service of issue 7 across two hosts (network namespaces joined by a
# veth pair). The server runs four memcached processes as shards behind the `shard` chunnel's
# service port; the client negotiates which implementation of the chunnel carries its requests:
# shard/xdp (an XDP stage on the server's interface steers each request to its shard),
# shard/client (the client hashes the key and sends to the shard's port itself) or shard/proxy
# (a userspace relay in the server). It shows the negotiation, the loader attaching the stage,
# a short load through each, and a table comparing them.
# Run from the repository root as `BUILD=build examples/kv/demo.sh` (make demo does this).
# Everything it creates carries this shell's pid and is removed on exit, failure or Ctrl-C.
set -euo pipefail
source "$(dirname "$0")/../demo_lib.sh"

BUILD=${BUILD:-build}
KV=$BUILD/examples/kv
BL=$BUILD/bertha-load
SHARDS=4
SVC=11211                      # the service port; the shards are on SVC+1..SVC+SHARDS
WINDOW=32                      # requests in flight
WARMUP=0.5                     # seconds of load before measuring
DURATION=${DEMO_DURATION:-3}   # seconds measured per implementation
KEYS=10000                     # Zipf(0.99) over key:0..key:9999, 16-byte keys, 32-byte values

# 198.18.0.0/15 is reserved for benchmarking (RFC 2544): these addresses cannot collide with a
# real network, and the demo sends to nothing it did not assign itself.
octet=$(($$ % 200 + 1))
SRV_NS=bertha-kvdemo-$$-srv
CLI_NS=bertha-kvdemo-$$-cli
SRV_IF=kvd$$s # interface names: at most 15 characters
CLI_IF=kvd$$c
SRV_IP=198.18.$octet.1
CLI_IP=198.18.$octet.2

# The server and its memcached shards on CPU 0, the client on CPU 1: on a 2-core machine they
# then do not take turns on one core.
SRV_CPU=0
CLI_CPU=$(($(nproc) > 1 ? 1 : 0))

server_pid=
T=
ns_made=

# Stop the server this script started (by its pid only).
stop_server() {
    stop_pid "$server_pid" 5
    server_pid=
}

# Runs once, on every way out. INT and TERM only choose the exit status; EXIT does the work, with
# those signals ignored so that a second Ctrl-C cannot cut the cleanup short.
cleanup() {
    local rc=$?
    trap '' INT TERM PIPE
    set +e
    stop_server
    if [[ -n $ns_made ]]; then
        # Whatever a killed server could have left on its interface goes with the loader's
        # detach; deleting the namespaces removes the veth pair.
        if [[ -x $BL ]] && ip netns pids "$SRV_NS" >/dev/null 2>&1; then
            ip netns exec "$SRV_NS" timeout 10 "$BL" detach --iface "$SRV_IF" --all \
                >/dev/null 2>&1
        fi
        ip netns del "$SRV_NS" 2>/dev/null
        ip netns del "$CLI_NS" 2>/dev/null
        rm -f /run/bertha/lock/"$SRV_IF"@*.lock /run/bertha/lock/"$CLI_IF"@*.lock
    fi
    if [[ -n $T ]]; then
        mountpoint -q "$T/bpffs" && umount "$T/bpffs"
        rm -rf "$T"
    fi
    [[ $rc == 0 ]] || printf 'demo: stopped (exit %s); everything it created is removed\n' "$rc" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ $(id -u) == 0 ]] || die "needs root to create network namespaces (try: sudo make demo)"
for b in "$KV" "$BL"; do
    [[ -x $b ]] || die "$b is missing: build it with 'make $b'"
done
for c in ip taskset python3 memcached mountpoint; do
    command -v "$c" >/dev/null || die "needs '$c' (make deps installs what is missing)"
done

cat <<EOF
Bertha key-value demo (issue 7)
  Two hosts on this machine: network namespaces $SRV_NS ($SRV_IP) and
  $CLI_NS ($CLI_IP), joined by a virtual Ethernet cable (veth).
  The server runs $SHARDS memcached processes as the shards of one key-value service (UDP ports
  $((SVC + 1))..$((SVC + SHARDS))); clients talk to the service port $SVC through the 'shard' chunnel,
  which sends each request to the shard that owns its key. Client and server negotiate which
  implementation of the chunnel does that:
    shard/xdp     an XDP stage on the server's interface, attached by the loader, rewrites each
                  request's destination port to its shard's as the packet arrives: the kernel
                  delivers it straight to that memcached, no userspace process in between.
    shard/client  the client hashes the key and sends to the shard's port itself (it must know
                  the shards; the server does nothing).
    shard/proxy   a userspace relay in the server receives every request on port $SVC and
                  forwards it to its shard (one more hop, two more system calls per request).
  Same application code for all three; only the negotiated implementation differs.
  Server and memcached on CPU $SRV_CPU, client on CPU $CLI_CPU.

EOF

# ---- the two hosts --------------------------------------------------------------------------
T=$(mktemp -d /tmp/bertha-kv-demo.XXXXXX)
ns_made=1
make_pair "$SRV_NS" "$CLI_NS" "$SRV_IF" "$CLI_IF" "$SRV_IP" "$CLI_IP"
# The loader pins its maps and links on a bpffs of our own: every `ip netns exec` remounts /sys,
# so one mounted outside it is seen by all of them, and the system's /sys/fs/bpf is left alone.
mkdir "$T/bpffs"
mount -t bpf bpf "$T/bpffs"
export BERTHA_BPFFS=$T/bpffs/bertha

# Each client command is bounded by timeout. --foreground keeps it in our process group, so that
# Ctrl-C reaches it: bash acts on a SIGINT that arrived while it waited for a command only if
# that command died of it too.
kv_cli() { ip netns exec "$CLI_NS" taskset -c "$CLI_CPU" timeout --foreground 30 "$KV" "$@"; }
bl_srv() { ip netns exec "$SRV_NS" timeout --foreground 10 "$BL" "$@"; }
indent() { sed 's/^/    /'; }

# start_server LOG READY [ARGS]: the kv server (and so its memcached shards) in the server's
# namespace on CPU $SRV_CPU; waits (at most 10 s) for a line of its log matching READY: the
# shard chunnel's listener starts after the "listening" line, and with xdp it first has the
# loader attach the stage (one "shard/xdp: ..." line, whether it could or not). `ip netns exec`
# and taskset exec the server, so $! is the server's own pid.
start_server() {
    local log=$1 ready=$2 i
    shift 2
    ip netns exec "$SRV_NS" taskset -c "$SRV_CPU" "$KV" server --backend memcached \
        --bind "$SRV_IP" --port "$SVC" --shards "$SHARDS" --idle-s 1 "$@" >"$log" 2>&1 &
    server_pid=$!
    for ((i = 0; i < 100; i++)); do
        grep -qs "$ready" "$log" && return 0
        alive "$server_pid" || break
        sleep 0.1
    done
    cat "$log" >&2
    die "the kv server did not start"
}

# wait_closed LOG: until the server closed (after 1 s idle) every connection it accepted, at
# most 5 s; its "closed" line carries the relay's and the stage's counts.
wait_closed() {
    local i
    for ((i = 0; i < 50; i++)); do
        [[ $(grep -c '^kv server: client connected' "$1") == \
            $(grep -c '^kv server: closed' "$1") ]] && return 0
        sleep 0.1
    done
    return 1
}

# negotiate MODE WANT LOG: kv check through --shard MODE; one line: what the client offered,
# what the server picked (its "client connected" line), what the client runs ("kv check: via"),
# and how many of the semantic checks passed. A pick other than WANT is said, not fatal.
negotiate() {
    local mode=$1 want=$2 log=$3 before via picked result offered passed failed i note=
    before=$(grep -c '^kv server: client connected' "$log" || true)
    if ! kv_cli check --server "$SRV_IP:$SVC" --shard "$mode" >"$T/check.out" 2>&1; then
        cat "$T/check.out" >&2
        die "kv check --shard $mode failed"
    fi
    via=$(sed -n 's/^kv check: via \([^ ]*\).*/\1/p' "$T/check.out" | head -1)
    result=$(tail -1 "$T/check.out")
    passed=$(sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed.*/\1/p' <<<"$result")
    failed=$(sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed.*/\2/p' <<<"$result")
    picked=
    for ((i = 0; i < 20; i++)); do
        picked=$(grep '^kv server: client connected' "$log" | sed -n "$((before + 1))p" |
            sed -n 's/^kv server: client connected: \([^ ]*\).*/\1/p')
        [[ -n $picked ]] && break
        sleep 0.1
    done
    # What each --shard offers, in its order of preference (shard::chunnel() and
    # chunnel_client_first() in chunnels/shard/shard.hpp); the server takes the first it runs.
    case $mode in
    auto) offered="xdp, proxy, client" ;;
    client) offered="client, xdp, proxy" ;;
    *) offered="$mode" ;;
    esac
    [[ $picked == "$want" && $via == "$want" ]] || note="  (expected $want)"
    printf '  --shard %-7s offered %-19s -> server picked %-13s (client runs %s); kv check %s/%s passed%s\n' \
        "$mode" "$offered" "${picked:-?}" "${via:-?}" "${passed:-?}" \
        "$((${passed:-0} + ${failed:-0}))" "$note"
}

# load MODE NAME: the closed-loop load through --shard MODE, progress lines shown; JSON kept.
load() {
    local mode=$1 name=$2
    say "  kv load --shard $mode: preload $KEYS keys, ${WARMUP} s warm-up, $DURATION s measured"
    # (In a subshell: a redirection of a function call would be the script's own stderr until
    # the call returns, and a cleanup run from there would write into the pipe.)
    if ! (kv_cli load --server "$SRV_IP:$SVC" --shard "$mode" --mode closed --window "$WINDOW" \
        --keys "$KEYS" --dist zipf --key-size 16 --value-size 32 --preload \
        --warmup-s "$WARMUP" --duration-s "$DURATION" --progress --json \
        >"$T/load-$name.json") 2> >(indent >&2); then
        cat "$T/load-$name.json" >&2
        die "kv load --shard $mode failed"
    fi
    sleep 0.1 # let the progress lines (a process substitution) drain before the next line
    python3 - "$T/load-$name.json" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
lat = j["latency_us"]
print(f"  via {j['via']}: {j['throughput_rps']:.0f} replies/s, p50 {lat['p50']:.1f} us, "
      f"p99 {lat['p99']:.1f} us, {j['errors']} errors, {j['lost']} lost")
EOF
}

# ---- 1. the server, with the stage attached -----------------------------------------------------
say "== 1. The server: $SHARDS memcached shards, the shard chunnel on udp/$SVC =="
start_server "$T/server-xdp.log" '^kv server: shard/xdp'
grep -q '^kv server: shard/xdp: the shard stage is on' "$T/server-xdp.log" ||
    { cat "$T/server-xdp.log" >&2; die "the server could not attach the shard stage (XDP)"; }
indent <"$T/server-xdp.log"
say "  The loader (in the server's process) attached the XDP dispatcher and the shard stage to"
say "  $SRV_IF; bertha-load status --iface $SRV_IF:"
bl_srv status --iface "$SRV_IF" 2>&1 | indent
say ""

# ---- 2. negotiation -----------------------------------------------------------------------------
say "== 2. Negotiation: kv check (memcached's semantics, case by case) through each =="
say "  The client offers implementations in its order of preference; the server picks the first"
say "  it runs (this one runs all three). The proxy's turn comes with the restarted server in 3."
negotiate auto shard/xdp "$T/server-xdp.log"
negotiate client shard/client "$T/server-xdp.log"
say ""

# ---- 3. load: xdp and client against this server --------------------------------------------------
say "== 3. Load: closed loop, $WINDOW requests in flight, Zipf keys, 90% gets =="
say " shard/xdp:"
load auto xdp
say " shard/client:"
load client client
wait_closed "$T/server-xdp.log" || say "  (the server had not closed every connection after 5 s)"
bl_srv stats --iface "$SRV_IF" >"$T/stats.out" 2>&1 || true
steered=$(grep '^kv server: closed shard/xdp' "$T/server-xdp.log" |
    sed -n 's/.*steered by xdp \([0-9]*\)$/\1/p' | sort -n | tail -1)
xdp_closed=$(grep '^kv server: closed shard/xdp' "$T/server-xdp.log" |
    grep "steered by xdp ${steered:-x}$" | tail -1 | sed 's/^kv server: //')
stop_server

# ---- the proxy: a server that does not offer xdp ---------------------------------------------
say " shard/proxy: the server restarted with --no-xdp (it offers proxy and client only):"
start_server "$T/server-proxy.log" '^kv server: listening' --no-xdp
negotiate auto shard/proxy "$T/server-proxy.log"
load auto proxy
wait_closed "$T/server-proxy.log" || say "  (the server had not closed every connection after 5 s)"
# The load's connection: the one whose relay carried the most.
relayed=$(grep '^kv server: closed shard/proxy' "$T/server-proxy.log" |
    sed -n 's/.*relayed \([0-9]*\) whole.*/\1/p' | sort -n | tail -1)
proxy_closed=$(grep '^kv server: closed shard/proxy' "$T/server-proxy.log" |
    grep "relayed ${relayed:-x} whole" | tail -1 | sed 's/^kv server: //')
stop_server
say ""

# ---- 4. the comparison ----------------------------------------------------------------------------
say "== 4. Results (client side; latency in microseconds; baseline: shard/proxy) =="
python3 - "$T" <<'EOF'
import json, sys
t = sys.argv[1]
runs = [(name, json.load(open(f"{t}/load-{name}.json"))) for name in ("xdp", "client", "proxy")]
base = dict(runs)["proxy"]["throughput_rps"]
print(f"  {'implementation':<16}{'replies/s':>11}{'p50':>9}{'p99':>9}{'x proxy':>9}{'lost':>7}{'errors':>8}")
for name, j in runs:
    lat = j["latency_us"]
    ratio = j["throughput_rps"] / base if base else float("nan")
    print(f"  {'shard/' + name:<16}{j['throughput_rps']:>11.0f}{lat['p50']:>9.1f}{lat['p99']:>9.1f}"
          f"{ratio:>8.2f}x{j['lost']:>7}{j['errors']:>8}")
EOF
say ""
say "  The stage's and the relay's counts, from the server's log when each connection closed:"
say "    ${xdp_closed:-(no closed shard/xdp line)}"
say "    ${proxy_closed:-(no closed shard/proxy line)}"
say "  bertha-load stats --iface $SRV_IF, after the xdp and client loads:"
indent <"$T/stats.out" | indent
cat <<EOF

What this shows
  With shard/xdp the stage steered ${steered:-?} requests of the load's connection and the relay none:
  the kernel delivered each request straight to its shard's memcached, so the server's side
  costs what memcached costs, as with shard/client, where the client does the routing itself.
  With shard/proxy the relay carried ${relayed:-?} requests: each one crosses into a userspace process
  and out again (a receive and a send, and a second trip through the UDP stack) before memcached
  sees it, and on two cores that relay competes with memcached for CPU $SRV_CPU. shard/xdp keeps the
  service port, so clients need not know the shards, at close to the cost of shard/client.
  One short run each on a shared machine: a few percent either way is noise; the shard
  benchmark (selftests/bench/shard.sh, make bench) repeats such runs and reports medians.
EOF
