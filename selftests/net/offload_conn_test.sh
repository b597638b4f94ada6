#!/usr/bin/env bash
# Connections use the offload framework, across two real hosts (network namespaces joined by
# veth): a server whose stack has count::chunnel() negotiates count/xdp with a client on the
# other host, attaches the XDP `count` stage for that connection's flow (in-process: the test
# runs as root), and the stage counts exactly the messages the client sent — seen by the server
# itself (counts(conn)) and by `bertha-load --json status/stats`. When the server closes the
# connection (SIGUSR1 to examples/count), nothing of ours remains: no XDP program on the link,
# no pin in the bpffs. Then two server processes with different flows (ports) share the
# interface: one closes, the other keeps its chain and keeps counting. Last, a server without
# privilege (uid nobody) gets the same offload through the agent (`bertha-load serve`), and gives
# it back when it closes the connection and when it crashes.
#
# Pins go to a bpffs this test mounts under its own temp dir (BERTHA_BPFFS), so they survive
# across `ip netns exec` processes (each of which remounts /sys). Everything is removed on exit,
# also on failure; every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
BIN=$BUILD/examples/count
CLI=$BUILD/bertha-load
for b in "$BIN" "$CLI"; do [ -x "$b" ] || { echo "missing $b (run make)"; exit 1; }; done
source selftests/net/netns.sh

netns_pair offc
work=$(mktemp -d /tmp/bertha-offc-XXXXXX)
mounted=
cleanup() {
    netns_cleanup # ends the servers and clients, removes the namespaces (and so the veth)
    [ -n "$mounted" ] && umount -l "$work/bpffs" 2>/dev/null
    rm -rf "$work"
    rm -f /run/bertha/lock/"$IF_A"@*.lock /run/bertha/lock/"$IF_B"@*.lock
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
netns_bpffs "$work/bpffs"
mounted=1
export BERTHA_LOG=debug

rc=0
ok() { echo "ok    $*"; }
bad() {
    echo "FAIL  $*"
    rc=1
}

# start_server NAME PORT: examples/count server in host A, its pid in $SRV (tracked for cleanup).
start_server() {
    ip netns exec "$NS_A" "$BIN" server --listen "$ADDR_A:$2" >"$work/$1.log" 2>&1 &
    SRV=$!
    netns_track $SRV
    netns_wait_for $SRV "$work/$1.log" "listening on" || exit 1
}

# wait_line FILE TEXT [SECONDS]: until FILE has a line with TEXT (default 10 s).
wait_line() {
    for _ in $(seq 1 $((${3:-10} * 20))); do
        grep -qF -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "no '$2' in $1 within ${3:-10} s:" >&2
    sed 's/^/      /' "$1" >&2
    return 1
}

cli_json() { ip netns exec "$NS_A" "$CLI" --json "$@" --iface "$IF_A"; }

# check_flows "PORT=PASS ..." : exactly these count flows on IF_A, with these pass counters, in
# both `status` (chains, stages) and `stats` (counters).
check_flows() {
    local want=$1
    cli_json status >"$work/status.json" || { bad "bertha-load status failed"; cat "$work/status.json"; return; }
    if ! cli_json stats >"$work/stats.json" 2>"$work/stats.err"; then
        if [ -n "$want" ]; then bad "bertha-load stats failed: $(cat "$work/stats.json" "$work/stats.err")"; return; fi
        echo '{"rows": []}' >"$work/stats.json"
    fi
    python3 - "$work/status.json" "$work/stats.json" "$want" "$ADDR_B" <<'PY' || rc=1
import json, sys
status, stats, want, peer_addr = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3], sys.argv[4]
want = {int(p): int(n) for p, n in (w.split("=") for w in want.split())}
chains = {}
for iface in status["interfaces"]:
    for c in iface["chains"]:
        chains[c["flow"]["port"]] = c
counts = {r["flow"]["port"]: r["counters"]["pass"] for r in stats["rows"]
          if r["chain"] is not None and r["stage"] == "count"}
problems = []
if sorted(chains) != sorted(want):
    problems.append(f"status shows flows on ports {sorted(chains)}, expected {sorted(want)}")
for port, n in want.items():
    c = chains.get(port)
    if not c: continue
    stages = [s["name"] for s in c["stages"]]
    if stages != ["count"]: problems.append(f"port {port}: chain stages {stages}, not ['count']")
    if c["flow"]["hook"] != "xdp": problems.append(f"port {port}: hook {c['flow']['hook']}")
    peer = c["flow"]["peer"] or ""
    if not peer.startswith(peer_addr + ":"): problems.append(f"port {port}: peer {peer!r}, not the client {peer_addr}")
    if c["refs"] != 1: problems.append(f"port {port}: {c['refs']} references, not 1")
    if counts.get(port) != n: problems.append(f"port {port}: count pass {counts.get(port)}, expected {n}")
if problems:
    print("FAIL  " + "; ".join(problems)); sys.exit(1)
print("ok    bertha-load status/stats: " + (", ".join(f"udp/{p} count pass={n}" for p, n in sorted(want.items())) or "no flows"))
PY
}

# nothing_left: no XDP program on the link, nothing pinned under our bpffs.
nothing_left() {
    if ip -n "$NS_A" link show dev "$IF_A" | grep -q xdp; then
        bad "$1: an XDP program is still attached: $(ip -n "$NS_A" link show dev "$IF_A" | grep xdp)"
    else
        ok "$1: no XDP program on $IF_A"
    fi
    local left
    left=$(find "$BERTHA_BPFFS" -mindepth 1 2>/dev/null || true)
    if [ -n "$left" ]; then bad "$1: pins remain: $left"; else ok "$1: nothing pinned under the test's bpffs"; fi
}

# ---- one connection: counted while open, gone when closed ------------------------------------
start_server srv1 7300
srv1=$SRV
if ip netns exec "$NS_B" timeout 20 "$BIN" client --server "$ADDR_A:7300" --messages 10 \
    >"$work/cli1.log" 2>&1 && grep -q "round 1: sent 10 echoed 10" "$work/cli1.log"; then
    ok "client sent 10 messages and got 10 echoes"
else
    bad "client: $(cat "$work/cli1.log")"
fi
if grep -q "connected count/xdp (peer runs it)" "$work/cli1.log"; then
    ok "client: negotiated count/xdp, run by the server"
else
    bad "client stack: $(head -1 "$work/cli1.log")"
fi
if wait_line "$work/srv1.log" "received 10 count 10 (count/xdp)"; then
    ok "server: count/xdp counted 10 of 10 (its own counts(conn), read through the loader)"
else
    bad "server did not count 10 with count/xdp"
fi
if grep -q "attached count as chain" "$work/srv1.log" &&
    grep -q "offloads attach in-process" "$work/srv1.log"; then
    ok "server log: attached in-process"
else
    bad "server log does not say how it attached"
fi
if ip -n "$NS_A" link show dev "$IF_A" | grep -q xdp; then
    ok "XDP dispatcher attached on $IF_A"
else
    bad "no XDP program on $IF_A while the connection is open"
fi
check_flows "7300=10"

kill -USR1 $srv1
wait_line "$work/srv1.log" "closed 1" || bad "server did not close its connection"
nothing_left "after the server closed the connection"
kill -TERM $srv1
wait $srv1 2>/dev/null || true

# ---- two processes, two flows on one interface: one closes, the other keeps counting ---------
start_server srv2 7301
srv2=$SRV
start_server srv3 7302
srv3=$SRV
ip netns exec "$NS_B" timeout 20 "$BIN" client --server "$ADDR_A:7301" --messages 5 \
    >"$work/cli2.log" 2>&1 || bad "client of 7301: $(cat "$work/cli2.log")"
# Not under `timeout` (it would take the SIGUSR1 itself): the client bounds its own waits.
ip netns exec "$NS_B" "$BIN" client --server "$ADDR_A:7302" --messages 5 --rounds 2 \
    >"$work/cli3.log" 2>&1 &
cli3=$!
netns_track $cli3
wait_line "$work/cli3.log" "waiting" || bad "client of 7302 did not finish its first round"
wait_line "$work/srv2.log" "received 5 count 5 (count/xdp)" || bad "server 7301 did not count 5"
wait_line "$work/srv3.log" "received 5 count 5 (count/xdp)" || bad "server 7302 did not count 5"
check_flows "7301=5 7302=5"

kill -USR1 $srv2
wait_line "$work/srv2.log" "closed 1" || bad "server 7301 did not close its connection"
check_flows "7302=5"
kill -USR1 $cli3 # its second round
for _ in $(seq 1 200); do kill -0 $cli3 2>/dev/null || break; sleep 0.05; done
wait $cli3 2>/dev/null || bad "client of 7302, second round: $(cat "$work/cli3.log")"
grep -q "round 2: sent 5 echoed 5" "$work/cli3.log" || bad "client of 7302: $(cat "$work/cli3.log")"
if wait_line "$work/srv3.log" "received 10 count 10 (count/xdp)"; then
    ok "server 7302 kept counting after 7301 closed: 10 of 10"
else
    bad "server 7302 did not keep counting"
fi
check_flows "7302=10"
kill -USR1 $srv3
wait_line "$work/srv3.log" "closed 1" || bad "server 7302 did not close its connection"
nothing_left "after both servers closed"

kill -TERM $srv2 $srv3
wait $srv2 $srv3 2>/dev/null || true

# ---- an unprivileged server: its offload goes through the agent ------------------------------
# uid nobody may not load BPF; discovery finds the agent, count/xdp is still chosen, and the
# flow is attached by `bertha-load serve` on its behalf. Closing the connection gives the
# reference back; so does a server that crashes (-9) with its connection open.
chmod 755 "$work" # nobody reaches the socket and the binary in here
cp "$BIN" "$work/count"
chmod 755 "$work/count"
echo "allow uid=$(id -u nobody) iface=$IF_A port=7400 stage=count" >"$work/policy"
chmod 644 "$work/policy"
ip netns exec "$NS_A" "$CLI" serve --policy "$work/policy" --socket "$work/agent.sock" \
    >"$work/agent.log" 2>&1 &
agent=$!
netns_track $agent
netns_wait_for $agent "$work/agent.log" "listening" || exit 1
start_nobody_server() { # NAME
    ip netns exec "$NS_A" setpriv --reuid=nobody --regid=nogroup --clear-groups \
        env BERTHA_AGENT_SOCKET="$work/agent.sock" "$work/count" server --listen "$ADDR_A:7400" \
        >"$work/$1.log" 2>&1 &
    SRV=$!
    netns_track $SRV
    netns_wait_for $SRV "$work/$1.log" "listening on" || exit 1
}
for round in close crash; do
    start_nobody_server "srv-$round"
    srv=$SRV
    ip netns exec "$NS_B" timeout 20 "$BIN" client --server "$ADDR_A:7400" --messages 10 \
        >"$work/cli-$round.log" 2>&1 || bad "client of the unprivileged server: $(cat "$work/cli-$round.log")"
    wait_line "$work/srv-$round.log" "received 10 count" || bad "unprivileged server: no 10 messages"
    if grep -q "offloads attach through the agent" "$work/srv-$round.log" &&
        grep -q "accepted: count/xdp" "$work/srv-$round.log"; then
        ok "unprivileged server ($round): count/xdp attached through the agent"
    else
        bad "unprivileged server ($round) did not attach count/xdp through the agent"
    fi
    check_flows "7400=10"
    if [ $round = close ]; then
        kill -USR1 $srv
        wait_line "$work/srv-$round.log" "closed 1" || bad "unprivileged server did not close"
        nothing_left "after the unprivileged server closed its connection"
        kill -TERM $srv
    else
        kill -9 $srv
        wait $srv 2>/dev/null || true
        for _ in $(seq 1 100); do # the agent notices the closed socket and detaches
            ip -n "$NS_A" link show dev "$IF_A" | grep -q xdp || break
            sleep 0.05
        done
        nothing_left "after the unprivileged server crashed with its connection open"
    fi
    wait $srv 2>/dev/null || true
done

if [ $rc -ne 0 ]; then
    for f in "$work"/srv*.log "$work"/agent.log; do [ -e "$f" ] && { echo "---- $f"; tail -30 "$f"; }; done
    echo "offload connections across namespaces: FAILED"
    exit 1
fi
echo "offload connections across namespaces: all checks passed"
