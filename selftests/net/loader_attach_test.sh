#!/usr/bin/env bash
# bertha-load on a real veth in a network namespace, with traffic from another namespace:
#  1. a `count` flow counts exactly the datagrams sent to its port (they still arrive), traffic
#     to another port is the dispatcher's miss and not the stage's, ping works, and
#     `status --json` shows the interface, native XDP, the flow and its chain;
#  2. flows attached by two processes at once get their own chains; detaching another flow
#     leaves them counting;
#  4. a tc-egress flow counts the datagrams leaving from its source port, and no others;
#  3. `detach --all`, and detaching the last flow (tcx and clsact), leave nothing of ours: no XDP
#     on the link, no tc filter, none of our programs or links in the kernel, no pins.
# Pins go to a bpffs mounted on a temporary directory in the root mount namespace (BERTHA_BPFFS),
# which every `ip netns exec` shares. Everything is removed on exit, also on failure.
set -Eeuo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
BL=$BUILD/bertha-load
UDP=selftests/net/udp_tool.py
N=100 # datagrams per burst: well inside a veth XDP ring
[ -x "$BL" ] || { echo "FAIL  missing $BL (run make)"; exit 1; }
source selftests/net/netns.sh
source selftests/net/loader_lib.sh

loader_setup ldatt loader-attach "loader attach test"

# A Python expression over the JSON object j in FILE.
json_value() { # FILE EXPR
    python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))
print(eval(sys.argv[2]))' "$1" "$2"
}

# One counter from `stats --json`: of the HOOK dispatcher (PORT "-") or of the stage on the
# HOOK flow udp/PORT; "none" when there is no such row.
counter() { # HOOK PORT NAME
    bl --json stats --iface "$IF_A" >"$T/stats.json"
    python3 -c 'import json, sys
hook, port, name = sys.argv[2:5]
for r in json.load(open(sys.argv[1]))["rows"]:
    if r["hook"] == hook and ((port == "-" and r["flow"] is None) or
                              (r["flow"] is not None and str(r["flow"]["port"]) == port)):
        print(r["counters"][name]); break
else:
    print("none")' "$T/stats.json" "$1" "$2" "$3"
}

# Wait (at most 5 s) until a counter reaches WANT, then require exactly WANT.
expect_counter() { # WHAT HOOK PORT NAME WANT
    local what=$1 v
    for _ in $(seq 1 50); do
        v=$(counter "$2" "$3" "$4")
        [ "$v" != none ] && [ "$v" -ge "$5" ] && break
        sleep 0.1
    done
    [ "$v" = "$5" ] || fail "$what: $2 ${3/-/dispatcher} $4 is $v, expected $5"
    ok "$what ($4 = $v)"
}

# COUNT datagrams from FROM_NS to TO_ADDR:PORT (from SPORT, 0: any), counted by a receiver in
# TO_NS. Fails unless all of them arrive.
traffic() { # FROM_NS TO_NS TO_ADDR PORT COUNT SPORT FROM_ADDR
    local log=$T/recv.log pid got
    ip netns exec "$2" python3 "$UDP" recv --bind "$3:$4" --seconds 5 --expect "$5" >"$log" 2>&1 &
    pid=$!
    netns_track $pid
    netns_wait_for $pid "$log" "listening on" || fail "the receiver on $3:$4 did not start"
    ip netns exec "$1" python3 "$UDP" send --to "$3:$4" --count "$5" --sport "$6" \
        --bind "$7" >/dev/null || fail "sending to $3:$4 failed"
    wait $pid || true # it ends by itself: all arrived, or 5 s
    netns_untrack $pid
    got=$(sed -n 's/^received //p' "$log")
    [ "$got" = "$5" ] || fail "$5 datagrams sent to $3:$4, ${got:-none} arrived"
}
to_a() { traffic "$NS_B" "$NS_A" "$ADDR_A" "$1" "$2" 0 ""; } # PORT COUNT
# Datagrams to a port of A nobody listens on (A answers with ICMP; nothing waits for them).
to_a_unheard() { in_b python3 "$UDP" send --to "$ADDR_A:$1" --count "$2" >/dev/null; }

# Every program and link id of ours on the interface, from status (before a detach).
our_ids() {
    status_json
    python3 -c 'import json, sys
for s in json.load(open(sys.argv[1]))["interfaces"]:
    for h in ("xdp", "tc"):
        if s[h]["prog_id"]: print("prog", s[h]["prog_id"])
        if s[h]["link_id"]: print("link", s[h]["link_id"])
    for c in s["chains"]:
        for st in c["stages"]: print("prog", st["prog_id"])' "$T/status.json"
}

# Nothing of ours on the interface: no XDP program, no tc filter, none of IDS (our programs and
# links) left in the kernel (a map holding a program is freed in the background: up to 5 s),
# no pins, and status shows nothing.
expect_nothing_left() { # WHAT IDS
    local what=$1 ids=$2 kind id left
    if ip -n "$NS_A" -j link show dev "$IF_A" | python3 -c \
        'import json, sys; sys.exit(0 if "xdp" in json.load(sys.stdin)[0] else 1)'; then
        fail "$what: an XDP program is still on $IF_A: $(ip -n "$NS_A" link show dev "$IF_A")"
    fi
    # (Captured first: `cmd | grep -q` can fail under pipefail when grep stops reading early.)
    local out
    out=$(in_a bpftool net show dev "$IF_A")
    ! grep -q "^$IF_A(" <<<"$out" || fail "$what: bpftool net still shows: $out"
    out=$(in_a tc filter show dev "$IF_A" egress)
    [ -z "$out" ] || fail "$what: a tc egress filter remains: $out"
    for _ in $(seq 1 50); do
        left=
        while read -r kind id; do
            [ -n "$kind" ] || continue
            bpftool "$kind" show id "$id" >/dev/null 2>&1 && left="$left $kind $id"
        done <<<"$ids"
        [ -z "$left" ] && break
        sleep 0.1
    done
    [ -z "$left" ] || fail "$what: still in the kernel after 5 s:$left"
    ! compgen -G "$BERTHA_BPFFS/$IF_A@*" >/dev/null ||
        fail "$what: pins remain: $(ls -R "$BERTHA_BPFFS")"
    status_json
    json_check "$what: no XDP, no tc filter, none of $(wc -l <<<"$ids") programs/links, no pins" \
        "$T/status.json" '
if j["interfaces"]: p.append("status still shows " + json.dumps(j["interfaces"]))'
}

# One `bertha-load attach` process per PORT, all started at once (the loader's per-interface
# lock serializes them); each must succeed.
attach_at_once() { # PORT...
    local port rc pids=() ports=("$@") i
    for port in "${ports[@]}"; do
        ip netns exec "$NS_A" timeout 30 "$BL" attach --iface "$IF_A" --port "$port" \
            --stage count >"$T/attach.$port.log" 2>&1 &
        pids+=($!)
        netns_track $!
    done
    for i in "${!pids[@]}"; do
        rc=0
        wait "${pids[$i]}" || rc=$?
        netns_untrack "${pids[$i]}"
        [ "$rc" -eq 0 ] || fail "attach of udp/${ports[$i]} (one of ${#ports[@]} at once)" \
            "exited $rc: $(cat "$T/attach.${ports[$i]}.log")"
    done
}

# ---- 1. one flow: counted, delivered; other ports are misses; ping works; status -----------
in_b python3 "$UDP" ping --to "$ADDR_A" --count 1 >/dev/null ||
    fail "no ping from B to A before anything was attached"
out=$(bl attach --iface "$IF_A" --port 7001 --stage count)
echo "      $out"
bl --json status >"$T/status.json" # every interface with pins: only ours in this bpffs
json_check "status --json: $IF_A, native XDP, flow xdp udp/7001 with chain count" "$T/status.json" '
s = [i for i in j["interfaces"] if i["iface"] == a[0]]
if len(s) != 1: p.append(f"{len(s)} entries for {a[0]}")
else:
    s = s[0]
    if not s["xdp"]["attached"]: p.append("xdp not attached")
    if s["xdp"]["mode"] != "native": p.append("xdp mode " + repr(s["xdp"]["mode"]) + ", not native")
    if s["ifindex"] <= 0: p.append("no ifindex")
    c = s["chains"]
    if len(c) != 1: p.append(f"{len(c)} chains, not 1")
    else:
        c = c[0]
        if c["flow"] != {"hook": "xdp", "port": 7001, "peer": None}:
            p.append("flow " + str(c["flow"]))
        if [x["name"] for x in c["stages"]] != ["count"]: p.append("stages " + str(c["stages"]))
        if c["refs"] != 1: p.append("refs " + str(c["refs"]))
        if not c["stages"] or not c["stages"][0]["prog_id"]: p.append("no stage program id")
' "$IF_A"
disp_id=$(json_value "$T/status.json" 'j["interfaces"][0]["xdp"]["prog_id"]')
stage_id=$(json_value "$T/status.json" 'j["interfaces"][0]["chains"][0]["stages"][0]["prog_id"]')
# The kernel agrees: the link runs our dispatcher in driver mode (IFLA_XDP_ATTACHED_DRV = 1),
# and the stage's program is the count stage's XDP program.
ip -n "$NS_A" -j link show dev "$IF_A" | python3 -c 'import json, sys
x = json.load(sys.stdin)[0].get("xdp", {})
ok = x.get("mode") == 1 and x.get("prog", {}).get("id") == int(sys.argv[1])
ok or print(f"ip link: xdp {x}, expected driver mode, program {sys.argv[1]}")
sys.exit(0 if ok else 1)' \
    "$disp_id" || fail "ip link does not show bertha_disp (id $disp_id) in native mode"
out=$(bpftool prog show id "$stage_id")
grep -q "name count_xdp" <<<"$out" || fail "program $stage_id is not count_xdp: $out"
ok "ip link: dispatcher $disp_id in driver mode; chain stage is count_xdp (id $stage_id)"

to_a 7001 $N
ok "$N datagrams to udp/7001 arrived through the chain"
expect_counter "count counted every datagram of its flow" xdp 7001 pass $N
expect_counter "the dispatcher found the flow for each" xdp - hit $N
miss0=$(counter xdp - miss)
to_a_unheard 7009 50
expect_counter "50 datagrams to udp/7009 (no flow) are dispatcher misses" xdp - miss $((miss0 + 50))
expect_counter "...and not counted by the flow's stage" xdp 7001 pass $N
out=$(in_b python3 "$UDP" ping --to "$ADDR_A" --count 3) || true
[ "$out" = "3 of 3 replies" ] || fail "ping B -> A while attached: $out"
ok "ping B -> A while attached: 3 of 3 replies"

# ---- 2. flows of two processes at once; detaching another flow leaves them be --------------
attach_at_once 7002 7003
status_json
before=$(json_value "$T/status.json" \
    'sorted((c["flow"]["port"], c["chain"], c["stages"][0]["prog_id"])
            for c in j["interfaces"][0]["chains"])')
json_check "two processes attached udp/7002 and udp/7003 at once: three flows, three chains" \
    "$T/status.json" '
c = j["interfaces"][0]["chains"]
ports = sorted(x["flow"]["port"] for x in c)
if ports != [7001, 7002, 7003]: p.append(f"flows on ports {ports}")
if len({x["chain"] for x in c}) != len(c):
    p.append("chain ids collide: " + str([x["chain"] for x in c]))'
to_a 7002 $N
expect_counter "udp/7002 counts its own datagrams" xdp 7002 pass $N
bl detach --iface "$IF_A" --port 7001 >/dev/null
status_json
json_check "detach udp/7001: its flow is gone, 7002 and 7003 keep their chains and programs" \
    "$T/status.json" '
s = j["interfaces"][0]
now = sorted((c["flow"]["port"], c["chain"], c["stages"][0]["prog_id"]) for c in s["chains"])
want = [x for x in eval(a[0]) if x[0] != 7001]
if now != want: p.append(f"chains {now}, expected {want}")
if not s["xdp"]["attached"]: p.append("the dispatcher went with it")' "$before"
[ "$(counter xdp 7001 pass)" = none ] || fail "stats still has a row for udp/7001"
to_a 7002 $N
expect_counter "udp/7002 keeps counting after 7001's detach" xdp 7002 pass $((2 * N))
expect_counter "udp/7003 saw none of it" xdp 7003 pass 0
miss0=$(counter xdp - miss)
to_a_unheard 7001 20
expect_counter "udp/7001 is a dispatcher miss now" xdp - miss $((miss0 + 20))

# ---- 4. tc egress: a flow keyed by the source port ----------------------------------------
out=$(bl attach --iface "$IF_A" --port 7300 --hook tc-egress --stage count)
echo "      $out"
bl status | sed 's/^/      /'
status_json
# tcx where the kernel has it (6.6+), else the loader's clsact fallback (vmtest's 6.1).
want_tc=$("$BUILD/bertha-load" probe --json |
    python3 -c 'import json,sys; print("tcx" if json.load(sys.stdin)["tcx"]["available"] else "clsact")')
json_check "status: tc-egress root on $want_tc, flow tc-egress udp/7300 with chain count" \
    "$T/status.json" '
s = j["interfaces"][0]
if not (s["tc"]["attached"] and s["tc"]["mode"] == "'"$want_tc"'"): p.append("tc root " + str(s["tc"]))
c = [x for x in s["chains"] if x["flow"]["hook"] == "tc-egress"]
if len(c) != 1 or c[0]["flow"]["port"] != 7300: p.append(f"tc chains {c}")'
traffic "$NS_A" "$NS_B" "$ADDR_B" 7301 $N 7300 "$ADDR_A"
expect_counter "egress from udp/7300: every datagram counted" tc-egress 7300 pass $N
miss0=$(counter tc-egress - miss)
traffic "$NS_A" "$NS_B" "$ADDR_B" 7301 $N 7302 "$ADDR_A"
expect_counter "egress from udp/7302 (no flow): dispatcher misses" tc-egress - miss $((miss0 + N))
expect_counter "...and not counted by udp/7300's stage" tc-egress 7300 pass $N

# ---- 3. nothing of ours remains: detach --all; the last flow's detach (tcx, clsact) --------
ids=$(our_ids)
bl detach --iface "$IF_A" --all >/dev/null
expect_nothing_left "detach --all (2 XDP flows, 1 tc-egress flow)" "$ids"

# Two processes at once on the bare interface: both need its maps and dispatcher created.
attach_at_once 7001 7002
status_json
json_check "two processes attached at once on the bare interface: one dispatcher, two chains" \
    "$T/status.json" '
s = j["interfaces"]
if len(s) != 1 or not s[0]["xdp"]["attached"]: p.append("interfaces " + json.dumps(s))
elif sorted((c["flow"]["port"], c["chain"]) for c in s[0]["chains"]) not in (
        [(7001, 0), (7002, 1)], [(7001, 1), (7002, 0)]):
    p.append("chains " + json.dumps(s[0]["chains"]))'
to_a 7001 10
expect_counter "re-attached after --all: counts from zero" xdp 7001 pass 10
bl detach --iface "$IF_A" --port 7002 >/dev/null
ids=$(our_ids)
bl detach --iface "$IF_A" --port 7001 >/dev/null
expect_nothing_left "detach of the last flow (XDP)" "$ids"

bl attach --iface "$IF_A" --port 7300 --hook tc-egress --tc-mode clsact --stage count >/dev/null
status_json
json_check "tc-egress root attached as a clsact filter when asked" "$T/status.json" '
t = j["interfaces"][0]["tc"]
if not (t["attached"] and t["mode"] == "clsact"): p.append(f"tc root {t}")'
traffic "$NS_A" "$NS_B" "$ADDR_B" 7301 10 7300 "$ADDR_A"
expect_counter "clsact egress root counts udp/7300" tc-egress 7300 pass 10
ids=$(our_ids)
bl detach --iface "$IF_A" --port 7300 --hook tc-egress >/dev/null
expect_nothing_left "detach of the last flow (tc-egress on clsact)" "$ids"
# The loader created the clsact qdisc (the interface had none), so it removes it again.
if grep -q clsact <<<"$(in_a tc qdisc show dev "$IF_A")"; then
    echo "FAIL  the clsact qdisc the loader created on $IF_A stays after its last flow"; exit 1
fi
echo "ok    the clsact qdisc the loader created is gone with its last flow"
# A qdisc that was there before is somebody else's: it stays.
in_a tc qdisc add dev "$IF_A" clsact
bl attach --iface "$IF_A" --port 7300 --hook tc-egress --tc-mode clsact --stage count >/dev/null
bl detach --iface "$IF_A" --port 7300 --hook tc-egress >/dev/null
if ! grep -q clsact <<<"$(in_a tc qdisc show dev "$IF_A")"; then
    echo "FAIL  a clsact qdisc that was there before the loader was removed with its flow"; exit 1
fi
echo "ok    a clsact qdisc that was there before stays"
in_a tc qdisc del dev "$IF_A" clsact

echo "loader attach/detach across namespaces: all checks passed"
