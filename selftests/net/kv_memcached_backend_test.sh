#!/usr/bin/env bash
# `kv server --backend memcached`: the shards are real memcached processes, started and stopped
# by the server. Host A runs the server (198.18.x.1), host B the clients, over a veth pair:
#   1. three shards come up on ports P+1..P+3, each a memcached the server reports by pid;
#      `kv check` passes on every shard port; a key set on shard 0 reads back from shard 0 and
#      is missing on shard 1 (separate processes);
#   2. SIGTERM stops the server (exit 0), every memcached ended by SIGTERM (exit status 0, as
#      the server reports), and none of its pids or ports is left;
#   3. a shard port already taken: the start fails (exit 1) naming the shard and the port, and
#      the shard it had already started is gone;
#   4. a missing memcached binary: exit 1 saying how to install it;
#   5. the server killed with SIGKILL takes its memcached processes with it.
# Every process is started here, tracked by pid, bounded in time, and stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
KV=$BUILD/examples/kv
[ -x "$KV" ] || { echo "missing $KV (make all)"; exit 1; }
command -v memcached >/dev/null || { echo "memcached is missing (make deps installs it)"; exit 1; }
source selftests/net/netns.sh

netns_pair kvmc
T=$(mktemp -d)
trap 'netns_cleanup; rm -rf "$T"' EXIT
chmod 755 "$T" # the server runs memcached (and the fake one below) as nobody when root
mkdir "$T/tmp"
export TMPDIR=$T/tmp # where the server puts memcached's logs
port=$((30000 + ($$ % 2000) * 8)) # from the pid: `pgrep -f` below cannot see another run's
fails=0
expect() { # name, command...: the command must succeed
    local name=$1
    shift
    if "$@"; then echo "ok    $name"; else echo "FAIL  $name"; fails=$((fails + 1)); fi
}
# memcached processes serving one of our shard ports, whatever started them
memcached_on() {
    local p pids=""
    for p in "$@"; do pids+=" $(pgrep -f -- "memcached -U $p -p 0" || true)"; done
    echo $pids
}
alive() { # pid...: all running
    local p
    for p in "$@"; do kill -0 "$p" 2>/dev/null || return 1; done
}
none_alive() {
    local p
    for p in "$@"; do ! kill -0 "$p" 2>/dev/null || return 1; done
}
# wait_gone PID SECONDS: wait for a process we started to exit; its exit status in $rc
wait_gone() {
    local i
    for i in $(seq 1 $(($2 * 20))); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
    rc=0
    { wait "$1"; } 2>/dev/null || rc=$?
}
ports=("$((port + 1))" "$((port + 2))" "$((port + 3))")

# ---- 1. three memcached shards ---------------------------------------------------------------
ip netns exec "$NS_A" "$KV" server --backend memcached --bind "$ADDR_A" --port "$port" \
    --shards 3 --duration-s 120 >"$T/server.log" 2>&1 &
srv=$!
netns_track "$srv"
netns_wait_for "$srv" "$T/server.log" "listening, 3 shards on ports ${ports[0]}-${ports[2]}"
mapfile -t mc < <(sed -n 's/.*(memcached pid \([0-9]*\))$/\1/p' "$T/server.log")
expect "the server reports 3 memcached pids (${mc[*]})" test "${#mc[@]}" -eq 3
expect "they run" alive "${mc[@]}"
for i in 0 1 2; do
    expect "shard $i's pid is the memcached on UDP port ${ports[i]}" \
        test "$(memcached_on "${ports[i]}")" = "${mc[i]}"
    expect "kv check on shard $i ($ADDR_A:${ports[i]}, from host B)" \
        in_b timeout 30 "$KV" check --server "$ADDR_A:${ports[i]}"
done
k="mc.$$" v="value.$$"
expect "set on shard 0" in_b timeout 5 "$KV" set --server "$ADDR_A:${ports[0]}" "$k" "$v" --flags 5
out=$(in_b timeout 5 "$KV" get --server "$ADDR_A:${ports[0]}" "$k" || true)
expect "get on shard 0 returns it ($out)" test "$out" = "$k flags=5 bytes=${#v}: $v"
rc=0
in_b timeout 5 "$KV" get --server "$ADDR_A:${ports[1]}" "$k" >/dev/null || rc=$?
expect "get on shard 1 misses it (exit 1)" test "$rc" -eq 1

# ---- 2. SIGTERM stops the server and every memcached ------------------------------------------
kill -TERM "$srv"
wait_gone "$srv" 10
netns_untrack "$srv"
expect "the server exits 0 on SIGTERM" test "$rc" -eq 0
for i in 0 1 2; do
    expect "shard $i: memcached pid ${mc[i]} ended by SIGTERM (status 0)" \
        grep -q "shard $i: memcached pid ${mc[i]} exited with status 0" "$T/server.log"
done
expect "none of the memcached pids is left" none_alive "${mc[@]}"
expect "no memcached on ports ${ports[*]}" test -z "$(memcached_on "${ports[@]}")"

# ---- 3. a shard port already taken --------------------------------------------------------------
ip netns exec "$NS_A" python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("bound", flush=True)
time.sleep(30)' "$ADDR_A" "${ports[1]}" >"$T/holder.log" 2>&1 &
holder=$!
netns_track "$holder"
netns_wait_for "$holder" "$T/holder.log" bound
rc=0
ip netns exec "$NS_A" timeout 20 "$KV" server --backend memcached --bind "$ADDR_A" \
    --port "$port" --shards 3 >"$T/taken.log" 2>&1 || rc=$?
expect "a taken shard port: exit 1" test "$rc" -eq 1
expect "...and the error names shard 1, its port and the cause ($(tail -1 "$T/taken.log"))" \
    grep -q "shard 1: UDP port $ADDR_A:${ports[1]} is already taken: Address already in use" \
    "$T/taken.log"
expect "...and no memcached is left (shard 0's had been started)" \
    test -z "$(memcached_on "${ports[@]}")"
expect "...and it never printed 'listening'" bash -c "! grep -q listening '$T/taken.log'"
netns_stop "$holder"
netns_untrack "$holder"

# ---- 4. no memcached binary ---------------------------------------------------------------------
rc=0
ip netns exec "$NS_A" timeout 20 "$KV" server --backend memcached --memcached-bin "$T/none" \
    --bind "$ADDR_A" --port "$port" --shards 1 >"$T/nobin.log" 2>&1 || rc=$?
expect "no memcached binary: exit 1, 'apt-get install memcached' ($(tail -1 "$T/nobin.log"))" \
    bash -c "[ $rc -eq 1 ] && grep -q 'apt-get install memcached' '$T/nobin.log'"

# ---- 4b. a memcached that exits at once ----------------------------------------------------------
printf '#!/bin/sh\necho "fake memcached: refusing $*" >&2\nexit 3\n' >"$T/fake-memcached"
chmod +x "$T/fake-memcached"
rc=0
ip netns exec "$NS_A" timeout 20 "$KV" server --backend memcached --memcached-bin "$T/fake-memcached" \
    --bind "$ADDR_A" --port "$port" --shards 2 >"$T/fake.log" 2>&1 || rc=$?
expect "a memcached that exits 3: exit 1, with its port, status and log ($(tail -1 "$T/fake.log"))" \
    bash -c "[ $rc -eq 1 ] && grep -q 'shard 0: memcached on $ADDR_A UDP port ${ports[0]} exited with status 3; its log ends: fake memcached: refusing -U ${ports[0]}' '$T/fake.log'"

# ---- 5. SIGKILL of the server takes its memcached processes with it ---------------------------
ip netns exec "$NS_A" "$KV" server --backend memcached --bind "$ADDR_A" --port "$port" \
    --shards 3 --duration-s 120 >"$T/server2.log" 2>&1 &
srv=$!
netns_track "$srv"
netns_wait_for "$srv" "$T/server2.log" "listening, 3 shards"
mapfile -t mc < <(sed -n 's/.*(memcached pid \([0-9]*\))$/\1/p' "$T/server2.log")
expect "a second server reports 3 running memcached pids" \
    bash -c "[ ${#mc[@]} -eq 3 ] && kill -0 ${mc[*]}"
{ kill -KILL "$srv" && wait "$srv"; } 2>/dev/null || true # SIGKILL: the wait is short
netns_untrack "$srv"
for _ in $(seq 1 40); do [ -z "$(memcached_on "${ports[@]}")" ] && break; sleep 0.05; done
expect "after SIGKILL of the server no memcached is left" test -z "$(memcached_on "${ports[@]}")"
for p in "${mc[@]}"; do kill -0 "$p" 2>/dev/null && kill -KILL "$p"; done # only on a failure
expect "a clean stop removed memcached's logs; only the SIGKILLed server's 3 remain" \
    test "$(find "$T/tmp" -name 'bertha-kv-memcached-*' | wc -l)" -eq 3

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "kv memcached backend: all checks passed"
