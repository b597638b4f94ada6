#!/usr/bin/env bash
# shard: a sharded memcached service across a veth pair, four ways of reaching the right shard,
# as an offered-load sweep. Host A (a network namespace) runs four memcached processes as the
# shards (UDP and TCP ports BASE..BASE+3, one thread each) and whatever the variant puts in
# front of them, all pinned to CPU 0; host B runs the load generator, pinned to CPU 1. Variants:
#   client     shard/client: `kv load --shard client` negotiates with the service port and then
#              hashes each key and sends straight to its shard's port; the shards answer directly
#   proxy      shard/proxy: the service (`kv server --backend external --no-xdp`) relays every
#              request to its shard and the reply back (mcrouter-style); the ratios' baseline
#   xdp        shard/xdp: the service attached the XDP `shard` stage on SVC, which rewrites each
#              request's destination port to its shard's, so the kernel delivers it straight to
#              that memcached; the service's relay sees only what the stage passes on
#   All three are the shard chunnel, negotiated by `kv load --shard ...` with `kv server
#   --backend external` on SVC (the four memcached are this script's, on SVC+1..SVC+4).
#   twemproxy  the outside reference: nutcracker (twemproxy 0.5, Debian's) on TCP port TWEM,
#              ketama over the same four memcached (their TCP ports); load from
#              build/bench/kv_tcp_load over TCP connections (memcached text protocol, pipelined).
#              Its key placement is its own (fnv1a_64 + ketama), not bertha's hash: the keys are
#              preloaded through it too, so its gets hit as well
# Each variant is three small functions below: start_V (server side), load_V ARGS... (the
# client command; ARGS are the trial's --mode/--rate/--window/--warmup-s/--duration-s/--json)
# and stop_V. Swap them to change how a variant is reached.
#
# Per repetition (variant order rotated), per variant: start; a closed loop (--window in flight)
# for the maximum throughput, its latency and CPU 0's busy time per reply (the server side's
# cost); then an open loop (Poisson arrivals) at every rate of --rates, lowest first, recording
# achieved throughput and p50/p95/p99 (from the intended send time); stop. Once a rate's achieved
# throughput is below 70% of the offered rate the variant's higher rates are skipped in that
# repetition (they count as failing). The report (shard_report.py) takes medians over
# repetitions per point, and for each p99 bound (--bound-us, and 500 us) the highest offered rate
# each variant sustains: median p99 under the bound and median achieved >= 97% of offered; then
# the ratios xdp / proxy, xdp / client, xdp / twemproxy at that bound.
# Gets 90%, Zipf 0.99 over 10,000 keys, 16-byte keys, 32-byte values, timeout 400 ms.
#
#   selftests/bench/shard.sh [--quick] [--reps N (5)] [--seconds S] [--warmup S] [--window W]
#                            [--rates R1,R2,...] [--bound-us B] [--variants V1,V2,...]
#                            [--connections C] [--spin-us US]
#
# Writes $BUILD/bench/shard.json and shard.tsv (the sweep), and with gnuplot shard.png and
# shard.svg (p99 against achieved throughput; shard.gp). --quick: shard.quick.*, no plot. Needs
# root. Removes the namespaces, the bpffs and every process it started (by pid), also on failure
# or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
KV=$BUILD/examples/kv
BL=$BUILD/bertha-load
TCPLOAD=$BUILD/bench/kv_tcp_load
HERE=selftests/bench

reps=5 seconds=1.5 warmup=0.3 window=32 bound=1000 conns=8 quick=0 QUIET_BUDGET=150 spin=0
rates=10000,20000,30000,40000,60000,80000,100000,120000,150000,180000
variants=client,proxy,xdp,twemproxy
usage="usage: $0 [--quick] [--reps N] [--seconds S] [--warmup S] [--window W] [--rates R,...] [--bound-us B] [--variants V,...] [--connections C] [--spin-us US]"
while [ $# -gt 0 ]; do
    case $1 in
    --quick) quick=1 reps=1 seconds=0.4 warmup=0.1 rates=20000,60000,120000 QUIET_BUDGET=30 ;;
    --reps) reps=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    --window) window=$2; shift ;;
    --rates) rates=$2; shift ;;
    --bound-us) bound=$2; shift ;;
    --variants) variants=$2; shift ;;
    --connections) conns=$2; shift ;;
    --spin-us) spin=$2; shift ;;
    -h | --help) echo "$usage"; exit 0 ;;
    *) echo "$usage" >&2; exit 2 ;;
    esac
    shift
done
out=$BUILD/bench/shard.json
[ $quick = 1 ] && out=$BUILD/bench/shard.quick.json
IFS=, read -ra RATES <<<"$rates"
IFS=, read -ra VARIANTS <<<"$variants"
for v in "${VARIANTS[@]}"; do
    case $v in client | proxy | xdp | twemproxy) ;; *) echo "shard: unknown variant $v" >&2; exit 2 ;; esac
done
need=("$KV")
for v in "${VARIANTS[@]}"; do
    case $v in
    xdp) need+=("$BL") ;;
    twemproxy) need+=("$TCPLOAD") ;;
    esac
done
for b in "${need[@]}"; do [ -x "$b" ] || { echo "shard: $b is missing (make)" >&2; exit 1; }; done
command -v memcached >/dev/null || { echo "shard: memcached is missing (make deps)" >&2; exit 1; }
if [[ ,$variants, == *,twemproxy,* ]] && ! command -v nutcracker >/dev/null; then
    echo "shard: nutcracker (twemproxy) is missing (make deps); run with --variants client,proxy,xdp" >&2
    exit 1
fi
[ "$(id -u)" = 0 ] || { echo "shard: needs root (network namespaces)" >&2; exit 1; }

source selftests/net/netns.sh
netns_pair shbench
work=$(mktemp -d /tmp/bertha-shard-bench-XXXXXX)
cleanup() {
    netns_cleanup
    mountpoint -q "$work/bpffs" && umount "$work/bpffs"
    rm -rf "$work"
    rm -f /run/bertha/lock/"$IF_A"@*.lock
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
netns_bpffs "$work/bpffs"
# Run copies: build/ is shared, and a rebuild replacing a binary mid-run would fail trials.
mkdir "$work/bin"
cp $(printf '%s\n' "${need[@]}" | sort -u) "$work/bin/"
KV=$work/bin/kv BL=$work/bin/bertha-load TCPLOAD=$work/bin/kv_tcp_load
SHARDS=4 SVC=11211 BASE=11212 TWEM=22121
LOAD=(--dist zipf --keys 10000 --key-size 16 --value-size 32 --get-ratio 0.9 --timeout-ms 400)

for i in $(seq 0 $((SHARDS - 1))); do
    ip netns exec "$NS_A" taskset -c 0 memcached -U $((BASE + i)) -p $((BASE + i)) -l "$ADDR_A" \
        -u nobody -t 1 >"$work/memcached-$i.log" 2>&1 &
    netns_track $!
done
sleep 0.3 # the memcached processes bind at start; the preload retries what is lost anyway
in_b taskset -c 1 "$KV" load --server "$ADDR_A:$BASE" --shards $SHARDS --base $BASE "${LOAD[@]}" \
    --preload --duration-s 0.2 --warmup-s 0 --json >"$work/preload.json" ||
    { echo "shard: preload failed: $(cat "$work/preload.json")" >&2; exit 1; }

# ---- the variants: start_V, load_V ARGS..., stop_V ---------------------------------------------
SERVER_PID= NUT_PID=
# The shard chunnel's service on SVC, in front of this script's memcached (kv server --backend
# external); ARGS: --no-xdp for a service that relays everything.
start_service() {
    ip netns exec "$NS_A" taskset -c 0 "$KV" server --backend external --bind "$ADDR_A" \
        --port $SVC --shards $SHARDS "$@" >"$work/service.log" 2>&1 &
    SERVER_PID=$!
    netns_track $SERVER_PID
    netns_wait_for $SERVER_PID "$work/service.log" "kv server: listening" >/dev/null
}
stop_service() {
    netns_stop "$SERVER_PID"
    netns_untrack "$SERVER_PID"
    cat "$work/service.log" >>"$work/service.all.log"
}
load_shard() { # IMPL ARGS...
    local impl=$1
    shift
    in_b timeout 60 taskset -c 1 "$KV" load --server "$ADDR_A:$SVC" --shard "$impl" \
        --spin-us "$spin" "${LOAD[@]}" "$@"
}

start_client() { start_service --no-xdp; }
load_client() { load_shard client "$@"; }
stop_client() { stop_service; }

start_proxy() { start_service --no-xdp; }
load_proxy() { load_shard proxy "$@"; }
stop_proxy() { stop_service; }

start_xdp() { start_service; }
load_xdp() { load_shard xdp "$@"; }
stop_xdp() { # the stage's counters first (the service detaches it when it stops)
    ip netns exec "$NS_A" "$BL" --json stats --iface "$IF_A" >"$work/stats.json" || true
    stop_service
}

start_twemproxy() {
    {
        echo "bench:"
        echo "  listen: $ADDR_A:$TWEM"
        echo "  hash: fnv1a_64"
        echo "  distribution: ketama"
        echo "  timeout: 400"
        echo "  backlog: 1024"
        echo "  preconnect: true"
        echo "  auto_eject_hosts: false"
        echo "  servers:"
        for i in $(seq 0 $((SHARDS - 1))); do echo "   - $ADDR_A:$((BASE + i)):1 shard$i"; done
    } >"$work/nutcracker.yml"
    ip netns exec "$NS_A" taskset -c 0 nutcracker -c "$work/nutcracker.yml" -v 4 \
        -o "$work/nutcracker.log" -p "$work/nutcracker.pid" -a "$ADDR_A" -s 22222 &
    NUT_PID=$!
    netns_track $NUT_PID
    local up=0
    for _ in $(seq 1 100); do # at most 5 s
        in_b bash -c "exec 3<>/dev/tcp/$ADDR_A/$TWEM" 2>/dev/null && { up=1; break; }
        kill -0 "$NUT_PID" 2>/dev/null || break
        sleep 0.05
    done
    [ $up = 1 ] || { echo "shard: nutcracker did not start:" >&2; cat "$work/nutcracker.log" >&2; exit 1; }
    # Its placement is not bertha's: store every key through it too.
    load_twemproxy --preload --warmup-s 0 --duration-s 0.05 --json >"$work/preload.tcp.json" ||
        { echo "shard: preload through nutcracker failed: $(cat "$work/preload.tcp.json")" >&2; exit 1; }
}
load_twemproxy() {
    in_b timeout 60 taskset -c 1 "$TCPLOAD" --server "$ADDR_A:$TWEM" --connections "$conns" "${LOAD[@]}" "$@"
}
stop_twemproxy() {
    netns_stop "$NUT_PID"
    netns_untrack "$NUT_PID"
}

# ---- measurement --------------------------------------------------------------------------------
cpu0_busy() { awk '$1 == "cpu0" { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; } # jiffies
# cpus_busy: "JIFFIES_CPU0 JIFFIES_CPU1" (user, nice, system, irq, softirq).
cpus_busy() { awk '$1 == "cpu0" || $1 == "cpu1" { printf "%d ", $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
# wait_quiet: the machine is shared; before each trial wait until neither CPU was more than 20%
# busy over 0.2 s (between trials ours are idle), at most 20 s per trial and ~40 s per run
# (--quick: ~8 s). An open-loop trial after which a CPU is still busy (someone else's work
# started during it) is run once more; the record keeps the last attempt and how many there were.
# Sets QUIET_WAIT (s waited) and QUIET_BUSY (the busier CPU's % in the last sample).
# busy_now: QUIET_BUSY = the busier CPU's % over the next 0.2 s.
busy_now() {
    local a b
    a=$(cpus_busy)
    sleep 0.2
    b=$(cpus_busy)
    QUIET_BUSY=$(awk -v a="$a" -v b="$b" -v hz="$(getconf CLK_TCK)" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        m = (y[1] - x[1] > y[2] - x[2]) ? y[1] - x[1] : y[2] - x[2]
        printf "%d", m / (0.2 * hz) * 100 }')
}
wait_quiet() {
    local t0=$SECONDS
    while :; do
        busy_now
        [ "$QUIET_BUSY" -le 20 ] && break
        [ $((SECONDS - t0)) -ge 20 ] || [ "$QUIET_BUDGET" -le 0 ] && break
        QUIET_BUDGET=$((QUIET_BUDGET - 1)) # in samples of ~0.25 s
    done
    QUIET_WAIT=$((SECONDS - t0))
}
rps_of() { sed -n 's/.*"throughput_rps":\([0-9.]*\).*/\1/p' "$1" | head -n 1; }

# record KIND VARIANT REP RATE FILE [EXTRA_JSON]: one line of trials.jsonl, the client's JSON
# as "result"; when it wrote none, null and the end of its stderr (FILE with .err for .json).
record() {
    local res=null extra=${6:-}
    if [ -s "$5" ] && [ "$(head -c 1 "$5")" = "{" ]; then
        res=$(head -n 1 "$5")
    else
        extra+=",\"stderr\":$(tail -c 400 "${5%.json}.err" 2>/dev/null |
            python3 -c 'import json, sys; print(json.dumps(sys.stdin.read()))')"
    fi
    printf '{"kind":"%s","variant":"%s","rep":%s,"rate":%s,"quiet_wait_s":%s,"busy_before_pct":%s,"busy_after_pct":%s,"attempts":%s,"result":%s%s}\n' \
        "$1" "$2" "$3" "$4" "${QUIET_WAIT:-0}" "${BUSY_BEFORE:-0}" "${BUSY_AFTER:-0}" "${ATTEMPTS:-1}" \
        "$res" "$extra" >>"$work/trials.jsonl"
}

# run VARIANT REP: the closed loop, then the open-loop sweep.
run() {
    local v=$1 rep=$2 b0 b1 r got skip=0
    "start_$v"
    wait_quiet
    BUSY_BEFORE=$QUIET_BUSY ATTEMPTS=1
    b0=$(cpu0_busy)
    "load_$v" --mode closed --window "$window" --warmup-s "$warmup" \
        --duration-s "$seconds" --json >"$work/closed.json" 2>"$work/closed.err" || true
    b1=$(cpu0_busy)
    BUSY_AFTER=
    record closed "$v" "$rep" 0 "$work/closed.json" \
        ",\"cpu0_jiffies\":$((b1 - b0)),\"hz\":$(getconf CLK_TCK)"
    for r in "${RATES[@]}"; do
        if [ $skip = 1 ]; then
            echo '{"skipped":true}' >"$work/open.json"
        else
            for ATTEMPTS in 1 2; do
                wait_quiet
                BUSY_BEFORE=$QUIET_BUSY
                "load_$v" --mode open --rate "$r" --warmup-s "$warmup" \
                    --duration-s "$seconds" --json >"$work/open.json" 2>"$work/open.err" || true
                busy_now
                BUSY_AFTER=$QUIET_BUSY
                [ "$BUSY_AFTER" -le 20 ] && break
            done
            got=$(rps_of "$work/open.json")
            # Far below the offered rate: the variant is saturated; higher rates only add queueing.
            awk -v g="${got:-0}" -v r="$r" 'BEGIN { exit !(g < 0.7 * r) }' && skip=1
        fi
        record open "$v" "$rep" "$r" "$work/open.json"
    done
    "stop_$v"
    if [ "$v" = xdp ]; then
        python3 -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))' \
            "$work/stats.json" >"$work/stats.line.json" 2>/dev/null || true
        record stage "$v" "$rep" 0 "$work/stats.line.json"
    fi
    printf '    %-9s closed %s replies/s; open: highest rate run %s\n' "$v" \
        "$(rps_of "$work/closed.json")" "$r$([ $skip = 1 ] && echo ' (saturated before it)')"
}

: >"$work/trials.jsonl"
n=${#VARIANTS[@]}
t0=$(date +%s)
for rep in $(seq 1 "$reps"); do
    order=()
    for k in $(seq 0 $((n - 1))); do order+=("${VARIANTS[$(((rep - 1 + k) % n))]}"); done
    echo "  rep $rep/$reps: ${order[*]}"
    for v in "${order[@]}"; do run "$v" "$rep"; done
done
echo "  measured in $(($(date +%s) - t0)) s"

python3 "$HERE/shard_report.py" "$work/trials.jsonl" "$out" --reps "$reps" --seconds "$seconds" \
    --warmup "$warmup" --window "$window" --rates "$rates" --bound-us "$bound" \
    --variants "$variants" --connections "$conns"
if [ $quick = 0 ] && command -v gnuplot >/dev/null; then
    gnuplot -e "dir='$BUILD/bench'" "$HERE/shard.gp" && echo "wrote $BUILD/bench/shard.png, shard.svg"
fi
