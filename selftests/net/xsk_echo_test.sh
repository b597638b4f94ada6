#!/usr/bin/env bash
# The xsk base across two real hosts (network namespaces joined by veth): examples/echo with
# --base xsk (AF_XDP kernel bypass for its one flow, through the XDP dispatcher's xsk stage) and
# --base udp (io_uring) on either end, IPv4 and IPv6, 64 and 1400 bytes; every message back,
# intact (the client checks each echo). While an xsk server runs, the rest of the interface
# still reaches the kernel: ping, a udp echo server on another port. Without privilege
# `--base auto` falls back to udp and says why at debug level, `--base xsk` refuses with the
# reason. A burst that overruns the rings does not wedge the socket. An offload above an xsk
# listener (count/xdp) ends its chain in the listener's sockets. When the servers stop, nothing
# of ours remains: no XDP program on the link, no pin, no AF_XDP socket.
#
# Pins go to a bpffs this test mounts under its own temp dir (BERTHA_BPFFS). Everything is
# removed on exit, also on failure; every wait and every run is bounded.
set -Eeuo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
ECHO=$BUILD/examples/echo
BL=$BUILD/bertha-load
for b in "$ECHO" "$BL" "$BUILD/examples/count" "$BUILD/examples/xsk_echo"; do
    [ -x "$b" ] || { echo "missing $b (run make)"; exit 1; }
done
source selftests/net/netns.sh
source selftests/net/loader_lib.sh

loader_setup xsk xsk "xsk echo across namespaces" # $T, the pair, a bpffs for the pins
work=$T
octet=$(cut -d. -f3 <<<"$ADDR_A")
A6="2001:2:0:$octet::1" B6="2001:2:0:$octet::2" # RFC 5180's benchmarking range
ip -n "$NS_A" addr add "$A6/64" dev "$IF_A" nodad
ip -n "$NS_B" addr add "$B6/64" dev "$IF_B" nodad

rc=0
bad() {
    echo "FAIL  $*"
    rc=1
}

# start_server NAME ADDR:PORT BASE: an echo server in host A (pid in $SRV, tracked).
start_server() {
    BERTHA_LOG=debug ip netns exec "$NS_A" "$ECHO" server --bind "$2" --base "$3" \
        --duration-s 120 >"$work/$1.log" 2>&1 &
    SRV=$!
    netns_track $SRV
    netns_wait_for $SRV "$work/$1.log" "listening on" || { bad "server $1: did not start"; exit 1; }
}
stop_server() { # PID
    netns_stop "$1"
    netns_untrack "$1"
}

# client NAME SERVER BASE SIZE COUNT WANT_STACK [extra args]: run a client in host B and check
# its JSON report: every message back, none corrupt, the stack it should have.
client() {
    local name=$1 server=$2 base=$3 size=$4 count=$5 want=$6
    shift 6
    ip netns exec "$NS_B" timeout 30 "$ECHO" client --server "$server" --base "$base" \
        --size "$size" --count "$count" --window 32 --max-seconds 20 --json "$@" \
        >"$work/$name.json" 2>"$work/$name.err" || true
    python3 - "$work/$name.json" "$count" "$want" "$name" <<'PY' || rc=1
import json, sys
path, count, want, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
try:
    text = open(path).read()
    r = json.loads(text)
except Exception as e:
    print(f"FAIL  {name}: no JSON report ({e})"); sys.exit(1)
p = []
if r.get("error"): p.append("error: " + r["error"])
if r["received"] != count: p.append(f"received {r['received']} of {count}")
if r["errors"]: p.append(f"{r['errors']} corrupt or duplicate echoes")
if not r["stack"].startswith(want): p.append(f"stack '{r['stack']}', expected '{want}...'")
if p:
    print(f"FAIL  {name}: " + "; ".join(p)); sys.exit(1)
print(f"ok    {name}: {count} of {count} back over {r['stack']}, p50 {r['rtt_us']['p50']:.0f} us")
PY
}

XSK="xsk/af_xdp (copy" # the base's description on veth (copy mode: veth has no zero-copy)

# ---- IPv4: an xsk server; udp and xsk clients; 64 and 1400 bytes -----------------------------
start_server srv4 "$ADDR_A:7000" xsk
srv4=$SRV
grep -q "stack $XSK" "$work/srv4.log" && ok "server runs on xsk: $(grep -o 'stack .*' "$work/srv4.log")" ||
    bad "server stack: $(cat "$work/srv4.log")"
for size in 64 1400; do
    client "v4-udp-$size" "$ADDR_A:7000" udp "$size" 5000 "udp/io_uring"
    client "v4-xsk-$size" "$ADDR_A:7000" xsk "$size" 5000 "$XSK"
done

# ---- the rest of the interface still reaches the kernel while the xsk server runs ------------
if ip netns exec "$NS_B" python3 selftests/net/udp_tool.py ping --to "$ADDR_A" --count 3 \
    >"$work/ping.log" 2>&1; then
    ok "ping to $ADDR_A answered by the kernel while the xsk flow runs"
else
    bad "ping: $(cat "$work/ping.log")"
fi
start_server other "$ADDR_A:7001" udp
other=$SRV
client "another port, another app (udp server on 7001)" "$ADDR_A:7001" udp 64 2000 "udp/io_uring"
client "the xsk flow still answers beside it" "$ADDR_A:7000" xsk 64 2000 "$XSK"
stop_server $other

# ---- a burst larger than the rings does not wedge the socket ---------------------------------
# 4096 messages in flight at once against 2048-entry rings: some may be dropped (counted lost);
# afterwards the same server must answer a normal run completely.
ip netns exec "$NS_B" timeout 30 "$ECHO" client --server "$ADDR_A:7000" --base xsk --size 64 \
    --count 40000 --window 4096 --max-seconds 10 --timeout-ms 500 --json >"$work/burst.json" \
    2>&1 || true
python3 - "$work/burst.json" <<'PY' || true
import json, sys
try:
    r = json.load(open(sys.argv[1]))
    print(f"      burst of 4096 in flight: {r['received']} back, {r['lost']} lost of {r['sent']} sent")
except Exception as e:
    print(f"      burst: no report ({e})")
PY
client "after the burst" "$ADDR_A:7000" xsk 64 2000 "$XSK"
stop_server $srv4

# ---- IPv6 ------------------------------------------------------------------------------------
start_server srv6 "[$A6]:7002" xsk
srv6=$SRV
client "v6-udp-64" "[$A6]:7002" udp 64 3000 "udp/io_uring"
client "v6-xsk-1400" "[$A6]:7002" xsk 1400 3000 "$XSK"
stop_server $srv6

# ---- without privilege: auto falls back to udp, xsk refuses with the reason ------------------
start_server srv-auto "$ADDR_A:7003" auto
srva=$SRV
grep -q "stack $XSK" "$work/srv-auto.log" && ok "server --base auto as root: xsk" ||
    bad "server --base auto as root did not choose xsk: $(cat "$work/srv-auto.log")"
chmod 755 "$work"
cp "$ECHO" "$work/echo" && chmod 755 "$work/echo"
if ip netns exec "$NS_B" setpriv --reuid=nobody --regid=nogroup --clear-groups \
    env BERTHA_LOG=debug BERTHA_AGENT_SOCKET="$work/no-agent.sock" timeout 30 "$work/echo" client \
    --server "$ADDR_A:7003" --base auto --count 2000 --json >"$work/nobody.json" \
    2>"$work/nobody.err"; then
    stack=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["stack"])' "$work/nobody.json")
    if [ "$stack" = "udp/io_uring" ] && grep -q "xsk/af_xdp" "$work/nobody.err"; then
        ok "unprivileged --base auto fell back to udp; debug log: $(grep -m1 'xsk/af_xdp' "$work/nobody.err" | cut -c1-160)"
    else
        bad "unprivileged --base auto: stack '$stack'; log: $(cat "$work/nobody.err")"
    fi
else
    bad "unprivileged --base auto client failed: $(cat "$work/nobody.json" "$work/nobody.err")"
fi
if ip netns exec "$NS_B" setpriv --reuid=nobody --regid=nogroup --clear-groups \
    env BERTHA_AGENT_SOCKET="$work/no-agent.sock" timeout 30 "$work/echo" client \
    --server "$ADDR_A:7003" --base xsk --count 10 >"$work/nobody-xsk.log" 2>&1; then
    bad "unprivileged --base xsk ran: $(cat "$work/nobody-xsk.log")"
elif grep -q "xsk" "$work/nobody-xsk.log"; then
    ok "unprivileged --base xsk refused: $(grep -m1 'xsk' "$work/nobody-xsk.log" | sed 's/^ *//' | cut -c1-200)"
else
    bad "unprivileged --base xsk failed without saying why: $(cat "$work/nobody-xsk.log")"
fi
stop_server $srva

# ---- XskSocket without chunnels (examples/xsk_echo): the loader's [xsk] chain and set_xsk -----
ip netns exec "$NS_A" "$BUILD/examples/xsk_echo" --iface "$IF_A" --bind "$ADDR_A:7004" \
    --duration-s 60 >"$work/xsk_echo.log" 2>&1 &
xe=$!
netns_track $xe
netns_wait_for $xe "$work/xsk_echo.log" "echoing" || { bad "xsk_echo did not start"; exit 1; }
client "xsk_echo example (no chunnels)" "$ADDR_A:7004" udp 64 3000 "udp/io_uring"
stop_server $xe
grep -q "echoed 3000 datagrams" "$work/xsk_echo.log" && ok "xsk_echo: echoed 3000, stopped cleanly" ||
    bad "xsk_echo: $(cat "$work/xsk_echo.log")"

# ---- an offload above an xsk listener: its chain ends in the listener's sockets --------------
# examples/count --base xsk: the listener's flow has the chain [xsk]; an accepted peer's count/xdp
# chain is [count -> xsk:sockets=<the listener's chain>], so the peer's datagrams are counted in
# XDP and still reach the listener over AF_XDP.
COUNT_BIN=$BUILD/examples/count
BERTHA_LOG=debug ip netns exec "$NS_A" "$COUNT_BIN" server --listen "$ADDR_A:7300" --base xsk \
    >"$work/count-srv.log" 2>&1 &
csrv=$!
netns_track $csrv
netns_wait_for $csrv "$work/count-srv.log" "listening on" || { bad "count server did not start"; exit 1; }
if ip netns exec "$NS_B" timeout 20 "$COUNT_BIN" client --server "$ADDR_A:7300" --messages 10 \
    >"$work/count-cli.log" 2>&1 && grep -q "round 1: sent 10 echoed 10" "$work/count-cli.log"; then
    ok "count client over an xsk listener: 10 sent, 10 echoed"
else
    bad "count client: $(cat "$work/count-cli.log")"
fi
for _ in $(seq 1 100); do grep -q "received 10 count 10 (count/xdp)" "$work/count-srv.log" && break; sleep 0.05; done
grep -q "received 10 count 10 (count/xdp)" "$work/count-srv.log" &&
    ok "count/xdp counted 10 of 10 before the redirect into the listener's socket" ||
    bad "count server: $(grep -v '^bertha debug' "$work/count-srv.log" | tail -5)"
ip netns exec "$NS_A" "$BUILD/bertha-load" --json status --iface "$IF_A" >"$work/count-status.json" 2>&1 || true
python3 - "$work/count-status.json" <<'PY' || rc=1
import json, sys
try:
    st = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"FAIL  bertha-load status: {e}: {open(sys.argv[1]).read()[:300]}"); sys.exit(1)
chains = {(c["flow"]["peer"] is not None): c for i in st["interfaces"] for c in i["chains"]}
listener, peer = chains.get(False), chains.get(True)
def text(c): return " -> ".join(s["name"] + (":" + s["config"] if s["config"] else "") for s in c["stages"])
problems = []
if not listener or text(listener) != "xsk": problems.append(f"listener chain: {listener and text(listener)}")
if not peer or not listener or text(peer) != f"count -> xsk:sockets={listener['chain']}":
    problems.append(f"peer chain: {peer and text(peer)}")
if problems: print("FAIL  chains: " + "; ".join(problems)); sys.exit(1)
print(f"ok    chains: udp/7300 [{text(listener)}], its peer [{text(peer)}]")
PY
stop_server $csrv

# ---- nothing of ours remains -----------------------------------------------------------------
for side in A B; do
    ns=NS_$side ifn=IF_$side
    if ip -n "${!ns}" link show dev "${!ifn}" | grep -q xdp; then
        bad "host $side: an XDP program is still attached: $(ip -n "${!ns}" link show dev "${!ifn}" | grep xdp)"
    else
        ok "host $side: no XDP program on ${!ifn}"
    fi
    if [ -n "$(ip netns exec "${!ns}" ss -a --xdp 2>/dev/null | tail -n +2)" ]; then
        bad "host $side: AF_XDP sockets remain: $(ip netns exec "${!ns}" ss -a --xdp)"
    else
        ok "host $side: no AF_XDP socket"
    fi
done
left=$(find "$BERTHA_BPFFS" -mindepth 1 2>/dev/null || true)
[ -z "$left" ] && ok "nothing pinned (no chain, no XSKMAP)" || bad "pins remain: $left"

if [ $rc -ne 0 ]; then
    for f in "$work"/*.log "$work"/*.err; do [ -e "$f" ] && { echo "---- $f"; tail -20 "$f"; }; done
    echo "xsk echo across namespaces: FAILED"
    exit 1
fi
echo "xsk echo across namespaces: all checks passed"
