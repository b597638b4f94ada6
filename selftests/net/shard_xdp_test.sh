#!/usr/bin/env bash
# The shard offload end to end, with real memcached processes as the shards: host A runs four
# memcached (UDP ports BASE..BASE+3), and bertha-load attaches the `shard` stage on the service
# port SVC of A's interface (XDP). Host B's client sends every request to SVC; the stage rewrites
# the destination port to the key's shard, so the request lands straight in that memcached,
# which answers from its own port (examples/kv's client matches replies by request id, from any
# port). Checked:
#   - every key is stored in exactly the memcached of its shard, computed here independently (a
#     plain FNV-1a in Python; the stage uses bertha/kv.h's), and in no other;
#   - get/delete/add through SVC reach the same shard;
#   - the stage's counters: one `hit` per steered request; a multi-key get whose keys span
#     shards is passed on untouched (`pass`), never dropped or misrouted (nothing listens on
#     SVC yet: the userspace proxy comes with the shard chunnel);
#   - detaching leaves nothing: no XDP program, no pins.
# Pins under the test's own bpffs; processes ended by pid; everything removed on exit.
set -Eeuo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
KV=$BUILD/examples/kv
BL=$BUILD/bertha-load
for b in "$KV" "$BL"; do [ -x "$b" ] || { echo "missing $b (run make)"; exit 1; }; done
command -v memcached >/dev/null || { echo "memcached is missing (make deps installs it)"; exit 1; }
source selftests/net/netns.sh
source selftests/net/loader_lib.sh

loader_setup shx shard-xdp "shard offload with memcached shards" # $T, the pair, a bpffs
SHARDS=4 BASE=12000 SVC=11211
rc=0
bad() {
    echo "FAIL  $*"
    rc=1
}

# ---- the shards: real memcached, UDP only, on A's address ------------------------------------
for i in $(seq 0 $((SHARDS - 1))); do
    ip netns exec "$NS_A" memcached -U $((BASE + i)) -p 0 -l "$ADDR_A" -u nobody -t 1 \
        >"$T/memcached-$i.log" 2>&1 &
    netns_track $!
done
for i in $(seq 0 $((SHARDS - 1))); do # ready when a version of a missing key answers
    for _ in $(seq 1 50); do
        ip netns exec "$NS_B" timeout 2 "$KV" get --server "$ADDR_A:$((BASE + i))" --timeout-ms 100 \
            probe.$$ >/dev/null 2>&1 && break
        [ $? -eq 1 ] && break # answered: missing
        sleep 0.1
    done
done
ok "$SHARDS memcached shards on $ADDR_A:$BASE..$((BASE + SHARDS - 1))"

bl attach --iface "$IF_A" --port $SVC --stage "shard:shards=$SHARDS,base=$BASE" >/dev/null
ok "shard stage attached on $IF_A udp/$SVC (shards=$SHARDS, base=$BASE)"

kv_b() { ip netns exec "$NS_B" timeout 5 "$KV" "$@"; }

# shard_of KEY: the independent reference (FNV-1a 32 over every byte, modulo the shard count).
shard_of() {
    python3 -c 'import sys
h = 2166136261
for b in sys.argv[1].encode(): h = ((h ^ b) * 16777619) & 0xffffffff
print(h % int(sys.argv[2]))' "$1" "$SHARDS"
}

# ---- set through the service port: each key lands in its shard only --------------------------
keys=()
for n in $(seq 1 24); do keys+=("user:$n:$RANDOM"); done
keys+=("k" "$(printf 'x%.0s' $(seq 1 250))") # 1 and 250 bytes
steered=0
for k in "${keys[@]}"; do
    if ! kv_b set --server "$ADDR_A:$SVC" "$k" "value-of-$k" >"$T/set.out" 2>&1; then
        bad "set ${k:0:40} through udp/$SVC: $(cat "$T/set.out")"
        continue
    fi
    steered=$((steered + 1))
    want=$(shard_of "$k")
    for i in $(seq 0 $((SHARDS - 1))); do
        if kv_b get --server "$ADDR_A:$((BASE + i))" --timeout-ms 500 "$k" >"$T/get.out" 2>&1; then
            [ "$i" = "$want" ] || bad "key ${k:0:40} found in shard $i, expected only in shard $want"
            grep -qF "value-of-$k" "$T/get.out" || bad "key ${k:0:40}: wrong value in shard $i: $(cut -c1-120 "$T/get.out")"
        else
            [ "$i" != "$want" ] || bad "key ${k:0:40} is not in its shard $want: $(cat "$T/get.out")"
        fi
    done
done
[ $rc -eq 0 ] && ok "${#keys[@]} keys set through udp/$SVC, each in exactly its shard (FNV-1a mod $SHARDS)"

# ---- get, add and delete through the service port follow the same keys -----------------------
k=${keys[0]}
kv_b get --server "$ADDR_A:$SVC" "$k" | grep -qF "value-of-$k" && steered=$((steered + 1)) &&
    ok "get through udp/$SVC finds the key in its shard" || bad "get through udp/$SVC"
if kv_b add --server "$ADDR_A:$SVC" "$k" other >/dev/null 2>&1; then
    bad "add of an existing key was stored"
else
    steered=$((steered + 1)) && ok "add of an existing key: NOT_STORED from its shard"
fi
kv_b delete --server "$ADDR_A:$SVC" "$k" >/dev/null && steered=$((steered + 1)) &&
    ok "delete through udp/$SVC" || bad "delete through udp/$SVC"
kv_b get --server "$ADDR_A:$((BASE + $(shard_of "$k")))" --timeout-ms 500 "$k" >/dev/null 2>&1 &&
    bad "the deleted key is still in its shard" || ok "the key is gone from its shard"

# ---- a multi-key get spanning shards is passed on untouched (no proxy listens yet) ----------
a=x b=
for n in $(seq 1 200); do # two keys on different shards
    if [ "$(shard_of "span:$n")" != "$(shard_of span:0)" ]; then b="span:$n"; break; fi
done
a=span:0
kv_b get --server "$ADDR_A:$SVC" --timeout-ms 300 "$a" "$b" >/dev/null 2>&1 || true

# ---- the stage's counters ------------------------------------------------------------------
ip netns exec "$NS_A" "$BL" --json stats --iface "$IF_A" >"$T/stats.json"
python3 - "$T/stats.json" "$steered" <<'PY' || rc=1
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
want_hits = int(sys.argv[2])
c = [r["counters"] for r in rows if r.get("stage") == "shard"]
if len(c) != 1:
    print(f"FAIL  expected one shard stage in the stats, got {len(c)}"); sys.exit(1)
c = c[0]
problems = []
if c["hit"] != want_hits: problems.append(f"hit {c['hit']}, expected {want_hits} steered requests")
if c["pass"] != 1: problems.append(f"pass {c['pass']}, expected 1 (the multi-key get spanning shards)")
if c["error"] != 0: problems.append(f"error {c['error']}")
if problems:
    print("FAIL  shard counters: " + "; ".join(problems)); sys.exit(1)
print(f"ok    shard counters: hit {c['hit']} (every steered request), pass 1 (the get spanning shards), error 0")
PY

# ---- detach: nothing left ------------------------------------------------------------------
bl detach --iface "$IF_A" --port $SVC >/dev/null
if ip -n "$NS_A" link show dev "$IF_A" | grep -q xdp; then
    bad "an XDP program is still attached after detach"
else
    ok "detached: no XDP program on $IF_A"
fi
left=$(find "$BERTHA_BPFFS" -mindepth 1 2>/dev/null || true)
[ -z "$left" ] && ok "nothing pinned" || bad "pins remain: $left"

[ $rc -eq 0 ] || exit 1
echo "shard offload with memcached shards: all checks passed"
