#!/usr/bin/env bash
# Sharding a memcached service end to end, with real memcached processes as the shards: host A
# runs four memcached (UDP ports BASE..BASE+3) and the shard router (examples/kv_proxy) on the
# service port SVC; host B's client (examples/kv: replies matched by request id, from any port)
# sends every request to SVC.
#   1. The router alone: each key is stored in exactly the memcached of its shard, computed here
#      independently (a plain FNV-1a in Python; the router and the stage use bertha/kv.h's), and
#      in no other; get/add/delete follow; a get over keys of several shards is split and its
#      values merged.
#   2. With the XDP `shard` stage attached on SVC (bertha-load): the same placement, but the
#      stage rewrites the destination port of each steerable request to its shard's, so those
#      requests never reach the router (its counters do not move); the get spanning shards is
#      passed on by the stage (`pass`), and the router splits it as before. Counters exact.
#   3. Detaching leaves nothing: no XDP program, no pins.
# Pins under the test's own bpffs; processes ended by pid; everything removed on exit.
set -Eeuo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
KV=$BUILD/examples/kv
PROXY=$BUILD/examples/kv_proxy
BL=$BUILD/bertha-load
for b in "$KV" "$PROXY" "$BL"; do [ -x "$b" ] || { echo "missing $b (run make)"; exit 1; }; done
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

ip netns exec "$NS_A" "$PROXY" --listen "$ADDR_A:$SVC" --shards-at "$ADDR_A" --base $BASE \
    --shards $SHARDS --duration-s 120 >"$T/proxy.log" 2>&1 &
proxy=$!
netns_track $proxy
netns_wait_for $proxy "$T/proxy.log" "listening on" || { echo "FAIL  the router did not start"; exit 1; }
ok "router (kv_proxy) on $ADDR_A:$SVC"

kv_b() { ip netns exec "$NS_B" timeout 5 "$KV" "$@"; }

# shard_of KEY: the independent reference (FNV-1a 32 over every byte, modulo the shard count).
shard_of() {
    python3 -c 'import sys
h = 2166136261
for b in sys.argv[1].encode(): h = ((h ^ b) * 16777619) & 0xffffffff
print(h % int(sys.argv[2]))' "$1" "$SHARDS"
}

# place TAG: set keys through SVC; each must be in exactly its shard. Sets $placed (requests).
place() {
    local tag=$1 k i n=0
    local keys=()
    for n in $(seq 1 24); do keys+=("$tag:$n:$RANDOM"); done
    keys+=("$tag" "$tag$(printf 'x%.0s' $(seq 1 $((250 - ${#tag}))))") # short, and 250 bytes
    placed=0
    for k in "${keys[@]}"; do
        if kv_b set --server "$ADDR_A:$SVC" "$k" "value-of-$k" >"$T/set.out" 2>&1; then
            placed=$((placed + 1))
        else
            bad "$tag: set ${k:0:40} through udp/$SVC: $(cat "$T/set.out")"
        fi
    done
    # Where is each key? Every shard asked for all of them, four keys per get (a reply must fit
    # one datagram of memcached's: the client does not join numbered ones).
    printf '%s\n' "${keys[@]}" >"$T/keys"
    for i in $(seq 0 $((SHARDS - 1))); do
        : >"$T/shard-$i.out"
        for ((n = 0; n < ${#keys[@]}; n += 4)); do
            kv_b get --server "$ADDR_A:$((BASE + i))" --timeout-ms 500 "${keys[@]:n:4}" \
                >>"$T/shard-$i.out" 2>&1 || true
        done
    done
    python3 - "$T" "$SHARDS" "$tag" <<'PY' || rc=1
import sys
t, shards, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def shard_of(key):  # the independent reference: FNV-1a 32 over every byte, modulo the shards
    h = 2166136261
    for b in key.encode(): h = ((h ^ b) * 16777619) & 0xffffffff
    return h % shards
keys = open(f"{t}/keys").read().split("\n")[:-1]
found = {k: [] for k in keys}
for i in range(shards):
    for line in open(f"{t}/shard-{i}.out"):
        if " flags=" not in line: continue
        key, rest = line.split(" flags=", 1)
        value = rest.split(": ", 1)[1].rstrip("\n") if ": " in rest else ""
        if key in found: found[key].append((i, value))
problems = []
for k, where in found.items():
    want = shard_of(k)
    if [i for i, _ in where] != [want]:
        problems.append(f"{k[:40]}: in shards {[i for i, _ in where]}, expected only {want}")
    elif where[0][1] != f"value-of-{k}":
        problems.append(f"{k[:40]}: wrong value {where[0][1][:40]!r}")
if problems:
    print(f"FAIL  {tag}: " + "; ".join(problems[:5])); sys.exit(1)
print(f"ok    {tag}: {len(keys)} keys set through the service port, each in exactly its shard (FNV-1a mod {shards})")
PY
    # get, add, delete of the first key follow it; three more requests
    k=${keys[0]}
    kv_b get --server "$ADDR_A:$SVC" "$k" | grep -qF "value-of-$k" && ok "$tag: get through udp/$SVC" ||
        bad "$tag: get through udp/$SVC"
    kv_b add --server "$ADDR_A:$SVC" "$k" other >/dev/null 2>&1 && bad "$tag: add of an existing key was stored" ||
        ok "$tag: add of an existing key: NOT_STORED"
    kv_b delete --server "$ADDR_A:$SVC" "$k" >/dev/null && ok "$tag: delete through udp/$SVC" ||
        bad "$tag: delete through udp/$SVC"
    kv_b get --server "$ADDR_A:$((BASE + $(shard_of "$k")))" --timeout-ms 500 "$k" >/dev/null 2>&1 &&
        bad "$tag: the deleted key is still in its shard" || true
    placed=$((placed + 3))
}

# span TAG: a get over keys of several shards through SVC returns every value (split, merged).
span() {
    local tag=$1 keys=() seen="" k s n
    for n in $(seq 1 64); do
        k="$tag:span:$n"
        s=$(shard_of "$k")
        case " $seen " in *" $s "*) continue ;; esac
        seen="$seen $s"
        keys+=("$k")
        kv_b set --server "$ADDR_A:$((BASE + s))" "$k" "v-$k" >/dev/null || bad "$tag: set $k on shard $s"
    done
    if kv_b get --server "$ADDR_A:$SVC" "${keys[@]}" >"$T/span.out" 2>&1 &&
        [ "$(grep -c '^.*: v-' "$T/span.out")" = "${#keys[@]}" ]; then
        ok "$tag: a get of ${#keys[@]} keys on ${#keys[@]} shards through udp/$SVC: every value back"
    else
        bad "$tag: get spanning shards: $(cat "$T/span.out")"
    fi
}

place router
router_requests=$placed
span router

# ---- 2. the XDP stage in front of the router ------------------------------------------------
bl attach --iface "$IF_A" --port $SVC --stage "shard:shards=$SHARDS,base=$BASE" >/dev/null
ok "shard stage attached on $IF_A udp/$SVC (shards=$SHARDS, base=$BASE)"
place xdp
steered=$placed
span xdp

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

# ---- the router's counters: it saw part 1, and of part 2 only the spanning get --------------
netns_stop $proxy
netns_untrack $proxy
python3 - "$T/proxy.log" "$router_requests" <<'PY' || rc=1
import re, sys
line = [l for l in open(sys.argv[1]) if l.startswith("kv_proxy: requests")]
if not line:
    print("FAIL  the router printed no counters: " + open(sys.argv[1]).read()[-300:]); sys.exit(1)
c = {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", line[-1])}
want_fwd = int(sys.argv[2])
problems = []
if c["forwarded"] != want_fwd:
    problems.append(f"forwarded {c['forwarded']}, expected {want_fwd} (part 1 only: the stage steered part 2's)")
if c["split"] != 2: problems.append(f"split {c['split']}, expected 2 (one spanning get per part)")
if c["merged"] != 2: problems.append(f"merged {c['merged']}, expected 2")
if c["expired"] or c["busy"]: problems.append(f"expired {c['expired']}, busy {c['busy']}")
if problems:
    print("FAIL  router counters: " + "; ".join(problems)); sys.exit(1)
print(f"ok    router counters: forwarded {c['forwarded']} (part 1 only), split 2, merged 2")
PY

[ $rc -eq 0 ] || exit 1
echo "sharding with memcached shards, the router and the XDP stage: all checks passed"
