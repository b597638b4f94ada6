#!/usr/bin/env bash
# The shard chunnel end to end, negotiated: host A runs `kv server --backend memcached` (four
# real memcached processes as the shards, UDP ports SVC+1..SVC+4, and the shard chunnel's
# listener on the service port SVC); host B's `kv` client connects to SVC with --shard.
#   1. auto against a server that can run XDP: negotiation picks shard/xdp, the server attaches
#      the `shard` stage for the client's flow; memcached's semantics hold through it (kv check),
#      a preload through it places every key in exactly its shard (an independent FNV-1a here),
#      and the server's log shows the stage steered the requests and the relay carried only
#      the get spanning shards (split, merged).
#   2. --shard client: shard/client; the client sends to the shards' ports itself (nothing
#      relayed, nothing steered); the same placement, a get spanning shards merged.
#   2b. IPv6: a server on an IPv6 address; auto gets shard/xdp, and the stage steers.
#   3. A server with --no-xdp: --shard proxy, every request relayed (a get spanning shards split
#      and merged); auto gets shard/proxy; --shard xdp is refused, by name.
#   4. The server stopped: no XDP program, no pin, no memcached left.
set -Eeuo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
KV=$BUILD/examples/kv
BL=$BUILD/bertha-load
for b in "$KV" "$BL"; do [ -x "$b" ] || { echo "missing $b (run make)"; exit 1; }; done
command -v memcached >/dev/null || { echo "memcached is missing (make deps installs it)"; exit 1; }
source selftests/net/netns.sh
source selftests/net/loader_lib.sh

loader_setup shc shard-chunnel "the shard chunnel, negotiated, with memcached shards"
SHARDS=4 SVC=11211 BASE=11212 KEYS=40
rc=0
bad() {
    echo "FAIL  $*"
    rc=1
}
kv_b() { ip netns exec "$NS_B" timeout 20 "$KV" "$@"; }

# start_server [ARGS]: the kv server on A, waited for; sets $server.
start_server() {
    ip netns exec "$NS_A" "$KV" server --backend memcached --bind "$ADDR_A" --port $SVC \
        --shards $SHARDS --idle-s 1 --duration-s 120 "$@" >"$T/server.log" 2>&1 &
    server=$!
    netns_track $server
    netns_wait_for $server "$T/server.log" "kv server: listening" ||
        { echo "FAIL  the kv server did not start: $(cat "$T/server.log")"; exit 1; }
}
stop_server() {
    netns_stop $server
    netns_untrack $server
}

# all_closed: wait (up to 5 s) until the server closed every connection it accepted (it closes
# one idle for 1 s and prints what its relay and the stage did).
all_closed() {
    local n
    for n in $(seq 1 50); do
        [ "$(grep -c '^kv server: client connected' "$T/server.log")" = \
            "$(grep -c '^kv server: closed' "$T/server.log")" ] && return 0
        sleep 0.1
    done
    return 1
}

# placement TAG: after a preload through the chunnel (key:00..key:KEYS-1), every key is in
# exactly its shard's memcached, asked directly on its port.
placement() {
    local tag=$1 i n keys=()
    for ((n = 0; n < KEYS; n++)); do keys+=("$(printf 'key:%02d' $n)"); done
    for i in $(seq 0 $((SHARDS - 1))); do
        : >"$T/shard-$i.out"
        for ((n = 0; n < KEYS; n += 8)); do
            kv_b get --server "$ADDR_A:$((BASE + i))" --timeout-ms 500 "${keys[@]:n:8}" \
                >>"$T/shard-$i.out" 2>&1 || true
        done
    done
    printf '%s\n' "${keys[@]}" >"$T/keys"
    python3 - "$T" "$SHARDS" "$tag" <<'PY' || rc=1
import sys
t, shards, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def shard_of(key):  # independent: FNV-1a 32 over every byte, modulo the shards
    h = 2166136261
    for b in key.encode(): h = ((h ^ b) * 16777619) & 0xffffffff
    return h % shards
keys = open(f"{t}/keys").read().split()
where = {k: [] for k in keys}
for i in range(shards):
    for line in open(f"{t}/shard-{i}.out"):
        if " flags=" in line:
            k = line.split(" flags=", 1)[0]
            if k in where: where[k].append(i)
bad = [f"{k}: in {v}, expected only {shard_of(k)}" for k, v in where.items() if v != [shard_of(k)]]
if bad:
    print(f"FAIL  {tag}: " + "; ".join(bad[:5])); sys.exit(1)
used = sorted({shard_of(k) for k in keys})
print(f"ok    {tag}: {len(keys)} keys preloaded through the chunnel, each in exactly its shard (shards {used})")
PY
}

# session MODE WANT: kv check, a preload, a get spanning shards, each through --shard MODE; the
# client must report WANT as its shard implementation.
session() {
    local mode=$1 want=$2
    # (Keys an earlier session stored stay where they are: a key this session misplaced would
    # then be found on two shards, which placement reports.)
    if kv_b check --server "$ADDR_A:$SVC" --shard "$mode" >"$T/check.out" 2>&1; then
        if grep -q "^kv check: via $want" "$T/check.out"; then
            ok "--shard $mode: $want; kv check $(tail -1 "$T/check.out" | sed 's/.*: //')"
        else
            bad "--shard $mode: expected $want: $(grep via "$T/check.out")"
        fi
    else
        bad "--shard $mode: kv check: $(grep -A1 FAIL "$T/check.out" || tail -2 "$T/check.out")"
    fi
    if kv_b load --server "$ADDR_A:$SVC" --shard "$mode" --keys $KEYS --key-size 6 --preload \
        --duration-s 0.2 --warmup-s 0 --json >"$T/load.json" 2>"$T/load.err"; then
        ok "--shard $mode: preload and 0.2 s of load ($(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j["replies"], "replies,", j["errors"], "errors, via", j["via"].split(" > ")[0])' "$T/load.json"))"
    else
        bad "--shard $mode: kv load: $(cat "$T/load.err") $(cat "$T/load.json")"
    fi
    placement "--shard $mode"
    # a get over keys of every shard: one reply with every value
    if kv_b get --server "$ADDR_A:$SVC" --shard "$mode" key:00 key:01 key:02 key:03 key:04 \
        key:05 key:06 key:07 >"$T/span.out" 2>&1 && [ "$(grep -c flags= "$T/span.out")" = 8 ]; then
        ok "--shard $mode: a get of 8 keys over several shards: every value back"
    else
        bad "--shard $mode: get spanning shards: $(cat "$T/span.out")"
    fi
}

start_server
grep -q "shard 3 on $ADDR_A port $((BASE + 3)) (memcached pid" "$T/server.log" &&
    ok "$SHARDS memcached shards on $ADDR_A:$BASE..$((BASE + SHARDS - 1)), the chunnel on udp/$SVC" ||
    bad "server start: $(cat "$T/server.log")"

# ---- 1. auto: shard/xdp -----------------------------------------------------------------------
session auto "shard/xdp (the server runs it)"
all_closed || bad "the server did not close every connection: $(grep '^kv server' "$T/server.log" | tail -4)"
# The get spanning shards: the stage passed it on, the relay split it.
if grep "^kv server: closed shard/xdp" "$T/server.log" | grep -q "relayed 0 whole, split 1,"; then
    ok "shard/xdp: the get spanning shards went to the relay (split 1)"
else
    bad "shard/xdp spanning get: $(grep 'closed shard/xdp' "$T/server.log")"
fi
# The load's connection: the stage steered every request (preload and load), the relay none.
n=$(grep "^kv server: closed shard/xdp" "$T/server.log" | grep "relayed 0 whole, split 0" |
    sed -n 's/.*steered by xdp \([0-9]*\)$/\1/p' | sort -n | tail -1)
if [ -n "$n" ] && [ "$n" -ge $KEYS ]; then
    ok "shard/xdp: the stage steered all $n requests of the load's connection, the relay none"
else
    bad "shard/xdp: no connection whose requests the stage steered: $(grep 'closed shard/xdp' "$T/server.log")"
fi

# ---- 2. client ---------------------------------------------------------------------------------
session client "shard/client (4 shards on ports $BASE..$((BASE + 3)))"
all_closed || bad "the server did not close every connection"
grep -q "^kv server: closed shard/client (the client runs it) > udp/io_uring (idle for 1 s)$" \
    "$T/server.log" && ok "shard/client: the server's connections relay nothing" ||
    bad "shard/client on the server: $(grep 'closed shard/client' "$T/server.log")"

# ---- 2b. IPv6: the stage steers it too --------------------------------------------------------
octet=$(cut -d. -f3 <<<"$ADDR_A")
A6="2001:2:0:$octet::1" B6="2001:2:0:$octet::2" # RFC 5180's benchmarking range
ip -n "$NS_A" addr add "$A6/64" dev "$IF_A" nodad
ip -n "$NS_B" addr add "$B6/64" dev "$IF_B" nodad
stop_server
ip netns exec "$NS_A" "$KV" server --backend memcached --bind "$A6" --port $SVC --shards $SHARDS \
    --idle-s 1 --duration-s 120 >"$T/server.log" 2>&1 &
server=$!
netns_track $server
netns_wait_for $server "$T/server.log" "kv server: listening" ||
    { echo "FAIL  the IPv6 kv server did not start: $(cat "$T/server.log")"; exit 1; }
if kv_b check --server "[$A6]:$SVC" --shard auto >"$T/check.out" 2>&1 &&
    grep -q "^kv check: via shard/xdp" "$T/check.out"; then
    ok "IPv6: shard/xdp; kv check $(tail -1 "$T/check.out" | sed 's/.*: //')"
else
    bad "IPv6, auto: $(grep -A1 FAIL "$T/check.out" || tail -2 "$T/check.out")"
fi
all_closed || bad "the IPv6 server did not close its connection"
n=$(sed -n 's/^kv server: closed shard\/xdp.*steered by xdp \([0-9]*\)$/\1/p' "$T/server.log" | tail -1)
[ -n "$n" ] && [ "$n" -gt 20 ] && ok "IPv6: the stage steered $n requests" ||
    bad "IPv6: the stage steered nothing: $(grep closed "$T/server.log")"

# ---- 3. a server that does not offer xdp: proxy -----------------------------------------------
# (A server running shard/xdp steers every client's requests on the service port, so the relay
# is seen carrying everything only where the server runs without it.)
stop_server
start_server --no-xdp
session proxy "shard/proxy (the server runs it)"
all_closed || bad "the server did not close every connection"
n=$(grep "^kv server: closed shard/proxy" "$T/server.log" | grep "steered by xdp 0$" |
    sed -n 's/.*relayed \([0-9]*\) whole, split 0,.*/\1/p' | sort -n | tail -1)
if [ -n "$n" ] && [ "$n" -ge $KEYS ]; then
    ok "shard/proxy: the relay carried all $n requests of the load's connection, nothing steered"
else
    bad "shard/proxy: $(grep 'closed shard/proxy' "$T/server.log")"
fi
grep "^kv server: closed shard/proxy" "$T/server.log" | grep -q "relayed 0 whole, split 1," &&
    ok "shard/proxy: the relay split the get spanning shards" ||
    bad "shard/proxy: no split get: $(grep 'closed shard/proxy' "$T/server.log")"
# One thread serves every client: a client offering more than the relay can carry (150k/s
# against ~55k) must not starve a newcomer (a busy relay returns to the server's loop after
# each pass, so the listener and the other connections get their turn).
ip netns exec "$NS_B" timeout 20 "$KV" load --server "$ADDR_A:$SVC" --shard proxy --keys $KEYS \
    --key-size 6 --warmup-s 0 --duration-s 2.5 --mode open --rate 150000 --timeout-ms 200 --json \
    >"$T/busy.json" 2>&1 &
busy=$!
sleep 0.5
kv_b check --server "$ADDR_A:$SVC" --shard auto >"$T/check.out" 2>&1 &&
    grep -q "^kv check: via shard/proxy" "$T/check.out" &&
    ok "--no-xdp server: auto gets shard/proxy, while another client overloads the relay" ||
    bad "--no-xdp server, auto, beside an overloading client: $(grep -A1 FAIL "$T/check.out" || tail -2 "$T/check.out")"
wait $busy || true # it loses requests, by design
replies=$(sed -n 's/.*"replies":\([0-9]*\).*/\1/p' "$T/busy.json")
[ "${replies:-0}" -gt 10000 ] && ok "the overloading client: $replies replies" ||
    bad "the overloading client: $(cat "$T/busy.json")"
if kv_b check --server "$ADDR_A:$SVC" --shard xdp >"$T/check.out" 2>&1; then
    bad "--no-xdp server: --shard xdp was not refused"
elif grep -q "this client offered xdp; the server accepts proxy, client" "$T/check.out"; then
    ok "--no-xdp server: --shard xdp refused, by name"
else
    bad "--no-xdp server, --shard xdp: $(cat "$T/check.out")"
fi
pids=$(grep -o "memcached pid [0-9]*" "$T/server.log" | awk '{print $3}')
stop_server

# ---- 4. nothing left -----------------------------------------------------------------------------
if ip -n "$NS_A" link show dev "$IF_A" | grep -q xdp; then
    bad "an XDP program is still attached to $IF_A"
else
    ok "server stopped: no XDP program on $IF_A"
fi
left=$(find "$BERTHA_BPFFS" -mindepth 1 2>/dev/null || true)
[ -z "$left" ] && ok "nothing pinned" || bad "pins remain: $left"
alive=""
for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
[ -z "$alive" ] && ok "no memcached left" || bad "memcached still running:$alive"
exit $rc
