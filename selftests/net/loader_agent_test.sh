#!/usr/bin/env bash
# The agent (`bertha-load serve`) in a network namespace, and unprivileged clients (uid nobody,
# build/examples/agent_attach through AgentClient) asking it for flows:
#  - a caller the policy allows gets its flow: status shows it, and it counts traffic;
#  - a caller on a port the policy does not allow, and root (held to the policy like anyone), are
#    refused with a message that names the policy file;
#  - a client that is killed (-9), and one that exits, give their references back; the last one
#    takes everything of ours off the interface;
#  - the agent killed (-9) while a client's flow is attached: the pinned dispatcher stays attached
#    and counting; the agent restarted with the same policy re-adopts the state (status is the
#    same; a new client's attach joins the same chain) and counting goes on.
# Pins go to a bpffs mounted on a temporary directory in the root mount namespace (BERTHA_BPFFS).
# Everything (namespaces, mount, pins, processes, the socket) is removed on exit, also on failure.
set -Eeuo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
BL=$BUILD/bertha-load
CLIENT_BIN=$BUILD/examples/agent_attach
UDP=selftests/net/udp_tool.py
N=100
PORT=7100       # the port the policy allows
OTHER_PORT=7101 # one it does not
for b in "$BL" "$CLIENT_BIN"; do
    [ -x "$b" ] || { echo "FAIL  missing $b (run make)"; exit 1; }
done
command -v setpriv >/dev/null || { echo "FAIL  setpriv (util-linux) is missing"; exit 1; }
source selftests/net/netns.sh
source selftests/net/loader_lib.sh

# SIGTERM to a process we started; it must exit within 5 s. Its exit status goes to TERM_RC
# (not printed: `wait` works only in this shell, not in a $(...) subshell).
TERM_RC=
term_wait() { # PID
    kill -TERM "$1"
    for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
    ! kill -0 "$1" 2>/dev/null || fail "process $1 did not exit within 5 s of SIGTERM"
    TERM_RC=0
    wait "$1" || TERM_RC=$?
    netns_untrack "$1"
}
# When the test fails, the cleanup shows the agent's log.
loader_on_failure() {
    [ -s "$T/agent.log" ] || return 0
    echo "---- the agent's log"
    cat "$T/agent.log"
}

loader_setup ldagt loader-agent "loader agent test"
chmod 755 "$T" # uid nobody reaches the socket and the client binary in here
SOCK=$T/agent.sock
POLICY=$T/policy
cp "$CLIENT_BIN" "$T/agent_attach" # the build tree may not be reachable for nobody
chmod 755 "$T/agent_attach"
NOBODY_UID=$(id -u nobody)
cat >"$POLICY" <<EOF
# loader_agent_test: nobody may count on the test's interface, on one port; nobody else anything
allow uid=$NOBODY_UID iface=$IF_A port=$PORT stage=count
EOF
chmod 644 "$POLICY"

# "chain refs stage_prog_id dispatcher_prog_id" of the flow xdp udp/PORT, or "none".
flow_state() {
    status_json
    python3 -c 'import json, sys
for s in json.load(open(sys.argv[1]))["interfaces"]:
    for c in s["chains"]:
        if c["flow"]["hook"] == "xdp" and c["flow"]["port"] == int(sys.argv[2]):
            print(c["chain"], c["refs"], c["stages"][0]["prog_id"], s["xdp"]["prog_id"]); sys.exit()
print("none")' "$T/status.json" "$1"
}
# Wait (at most 5 s) for flow_state PORT to be WANT.
expect_flow() { # WHAT PORT WANT
    local v
    for _ in $(seq 1 50); do
        v=$(flow_state "$2")
        [ "$v" = "$3" ] && break
        sleep 0.1
    done
    [ "$v" = "$3" ] || fail "$1: flow udp/$2 is '$v' (chain refs stage dispatcher), expected '$3'"
    ok "$1"
}
stage_pass() { # the count stage's pass on xdp udp/PORT ("none": no such flow)
    bl --json stats --iface "$IF_A" >"$T/stats.json"
    python3 -c 'import json, sys
r = [r for r in json.load(open(sys.argv[1]))["rows"]
     if r["flow"] and r["flow"]["hook"] == "xdp" and r["flow"]["port"] == int(sys.argv[2])]
print(r[0]["counters"]["pass"] if r else "none")' "$T/stats.json" "$1"
}
# N datagrams from B to A:PORT; all must arrive at a receiver on A.
to_a() { # PORT COUNT
    local log=$T/recv.log pid got
    ip netns exec "$NS_A" python3 "$UDP" recv --bind "$ADDR_A:$1" --seconds 5 --expect "$2" \
        >"$log" 2>&1 &
    pid=$!
    netns_track $pid
    netns_wait_for $pid "$log" "listening on" || fail "the receiver on $ADDR_A:$1 did not start"
    in_b python3 "$UDP" send --to "$ADDR_A:$1" --count "$2" >/dev/null || fail "send failed"
    wait $pid || true
    netns_untrack $pid
    got=$(sed -n 's/^received //p' "$log")
    [ "$got" = "$2" ] || fail "$2 datagrams sent to $ADDR_A:$1, ${got:-none} arrived"
}
expect_pass() { # WHAT WANT
    local v
    v=$(stage_pass $PORT)
    [ "$v" = "$2" ] || fail "$1: the count stage's pass is $v, expected $2"
    ok "$1 (pass = $v)"
}
xdp_prog_on_link() { # the XDP program id on the interface, 0 when none
    ip -n "$NS_A" -j link show dev "$IF_A" | python3 -c 'import json, sys
print(json.load(sys.stdin)[0].get("xdp", {}).get("prog", {}).get("id", 0))'
}

# The agent, in host A, by its own pid (ip netns exec execs it). It logs at info level.
AGENT=
start_agent() {
    ip netns exec "$NS_A" "$BL" serve --policy "$POLICY" --socket "$SOCK" >"$T/agent.log" 2>&1 &
    AGENT=$!
    netns_track $AGENT
    netns_wait_for $AGENT "$T/agent.log" "listening" || fail "the agent did not start"
}
# A client as uid nobody, holding its flow until SIGTERM; its pid is CLIENT, its output $T/NAME.
CLIENT=
start_client() { # NAME PORT
    ip netns exec "$NS_A" setpriv --reuid=nobody --regid=nogroup --clear-groups \
        "$T/agent_attach" --socket "$SOCK" --iface "$IF_A" --port "$2" --stage count \
        --ignore-stdin </dev/null >"$T/$1" 2>&1 &
    CLIENT=$!
    netns_track $CLIENT
    netns_wait_for $CLIENT "$T/$1" "attached chain" || fail "client $1 got no flow"
}
# A client that must be refused: prints the refusal. USER: nobody or root.
refused_client() { # USER PORT
    local rc=0 run=()
    [ "$1" = root ] || run=(setpriv --reuid="$1" --regid=nogroup --clear-groups)
    ip netns exec "$NS_A" timeout 10 "${run[@]}" "$T/agent_attach" --socket "$SOCK" \
        --iface "$IF_A" --port "$2" --stage count --ignore-stdin </dev/null >"$T/refused" 2>&1 ||
        rc=$?
    [ "$rc" -eq 1 ] ||
        fail "$1 asking for udp/$2: exit $rc, expected 1 (refused): $(cat "$T/refused")"
    cat "$T/refused"
}

start_agent
ok "agent listening on $SOCK (pid $AGENT)"

# ---- a caller the policy allows ------------------------------------------------------------
start_client c1 $PORT
c1=$CLIENT
chain=$(sed -n 's/^attached chain \([0-9]*\) .*/\1/p' "$T/c1")
echo "      $(head -1 "$T/c1")"
state=$(flow_state $PORT)
read -r _ refs stage_id disp_id <<<"$state"
if [ "$state" = none ] || [ "$refs" != 1 ] || [ "$(xdp_prog_on_link)" != "$disp_id" ]; then
    fail "after nobody's attach: flow '$state', XDP on the link: $(xdp_prog_on_link)"
fi
ok "nobody (uid $NOBODY_UID) got xdp udp/$PORT: chain $chain, 1 reference," \
    "dispatcher $disp_id on the link"
grep -q "uid $NOBODY_UID pid $c1: attached chain $chain" "$T/agent.log" ||
    fail "the agent's log does not record the attach: $(cat "$T/agent.log")"
to_a $PORT $N
expect_pass "the agent's flow counts traffic" $N

# ---- callers the policy does not allow -----------------------------------------------------
msg=$(refused_client nobody $OTHER_PORT)
grep -q "no rule in $POLICY allows it" <<<"$msg" || fail "refusal does not name the policy: $msg"
[ "$(flow_state $OTHER_PORT)" = none ] || fail "a flow on udp/$OTHER_PORT exists after the refusal"
ok "nobody on udp/$OTHER_PORT refused: ${msg#agent_attach: }"
msg=$(refused_client root $PORT)
if ! grep -q "no rule in $POLICY allows it" <<<"$msg" || ! grep -q "uid 0 " <<<"$msg"; then
    fail "root's refusal does not name the policy and uid 0: $msg"
fi
ok "root (uid 0) on udp/$PORT refused as well: ${msg#agent_attach: }"
expect_flow "the refusals changed nothing" $PORT "$chain 1 $stage_id $disp_id"

# ---- clients that go away give their references back ---------------------------------------
start_client c2 $PORT
c2=$CLIENT
expect_flow "a second client's attach of the same flow: the same chain, 2 references" $PORT \
    "$chain 2 $stage_id $disp_id"
kill -9 $c2
wait $c2 2>/dev/null || true
netns_untrack $c2
expect_flow "the second client killed (-9): its reference is released" $PORT \
    "$chain 1 $stage_id $disp_id"
term_wait $c1
[ "$TERM_RC" -eq 0 ] || fail "the first client exited $TERM_RC on SIGTERM: $(cat "$T/c1")"
expect_flow "the first client exited: its flow is gone" $PORT none
status_json
json_check "...and with it everything on $IF_A (no pins, no roots)" "$T/status.json" '
if j["interfaces"]: p.append("status shows " + json.dumps(j["interfaces"]))'
[ "$(xdp_prog_on_link)" = 0 ] || fail "XDP program $(xdp_prog_on_link) is still on $IF_A"
ok "no XDP program on $IF_A"

# ---- the agent killed while a client's flow is attached, then restarted --------------------
start_client c3 $PORT
c3=$CLIENT
state=$(flow_state $PORT)
read -r chain refs stage_id disp_id <<<"$state"
[ "$refs" = 1 ] || fail "client c3's flow: '$state'"
to_a $PORT $N
expect_pass "client c3's flow counts" $N
kill -9 $AGENT
wait $AGENT 2>/dev/null || true
netns_untrack $AGENT
[ "$(xdp_prog_on_link)" = "$disp_id" ] ||
    fail "with the agent killed, XDP on the link is $(xdp_prog_on_link), not $disp_id"
to_a $PORT $N
expect_pass "agent killed (-9): the dispatcher stays attached and the flow counts on" $((2 * N))
start_agent
grep -q "stale socket" "$T/agent.log" ||
    fail "the restarted agent did not say it replaced the dead one's socket: $(cat "$T/agent.log")"
expect_flow "agent restarted (it replaced the stale socket): the same chain, programs, reference" \
    $PORT "$chain 1 $stage_id $disp_id"
to_a $PORT $N
expect_pass "...and counting goes on" $((3 * N))
start_client c4 $PORT
c4=$CLIENT
expect_flow "the restarted agent re-adopted the flow: a new client's attach joins chain $chain" \
    $PORT "$chain 2 $stage_id $disp_id"
netns_stop $c4
netns_untrack $c4
expect_flow "...and it releases that client's reference when it exits" $PORT \
    "$chain 1 $stage_id $disp_id"
# c3's reference belonged to the killed agent's connection: nobody releases it automatically
# (agent.hpp); the operator does.
netns_stop $c3
netns_untrack $c3
expect_flow "the killed agent's client left: its reference stays until an operator's detach" \
    $PORT "$chain 1 $stage_id $disp_id"
bl detach --iface "$IF_A" --all >/dev/null
expect_flow "detach --all removed it" $PORT none
[ "$(xdp_prog_on_link)" = 0 ] || fail "XDP program $(xdp_prog_on_link) is still on $IF_A"

term_wait $AGENT
[ "$TERM_RC" -eq 0 ] || fail "the agent exited $TERM_RC on SIGTERM"
[ ! -e "$SOCK" ] || fail "the agent left its socket $SOCK behind"
ok "agent stopped by SIGTERM: exit 0, socket removed"
echo "loader agent across namespaces: all checks passed"
