#!/usr/bin/env bash
# datapath: a UDP echo across a veth pair, four datapaths side by side. Host A (a network
# namespace, 198.18.<n>.1) runs the server, host B (.2) the client; server pinned to one CPU,
# client to another (taskset), the same for every variant. For each message size:
#   throughput  messages/s of a closed loop with --window messages in flight
#   ping-pong   round-trip time p50/p99 with one message in flight
# Variants (both ends run the same one):
#   xsk       examples/echo --base xsk: AF_XDP through Bertha's XDP dispatcher (copy mode: veth)
#   udp       examples/echo --base udp: io_uring, the kernel's UDP path (the baseline)
#   mmsg      build/bench/datapath_mmsg: blocking recvmmsg/sendmmsg, no Bertha datapath code
#   sockperf  Debian's sockperf: `sockperf server`, `sockperf ping-pong --full-rtt` (RTT, its
#             own percentiles); throughput: ping-pong in bursts of --window (send W, wait for
#             all W echoes), the only echo mode it has
# Each repetition runs every variant once, in an order rotated per repetition: its server
# starts, the four trials run (64 B throughput and ping-pong, then 1400 B), its server stops,
# so that no other variant's XDP program sits on the interface while a kernel path runs. Ratios
# are paired: a variant / udp within the same repetition.
#
#   selftests/bench/datapath.sh [--quick] [--reps N] [--seconds S] [--window W]
#                               [--sizes 64,1400] [--variants xsk,udp,mmsg,sockperf]
#                               [--same-cpu] [--out FILE.json]
#
# Writes $BUILD/bench/datapath.json (configuration, host, summary, every raw trial),
# datapath.tsv (read by datapath.gp, which selftests/bench/run draws into datapath.png);
# --quick writes datapath.quick.json/.tsv: one short repetition, a smoke run. --same-cpu (a
# diagnosis, not the benchmark) puts the client on the server's CPU, which takes the cross-CPU
# wake-ups out of ping-pong; it writes datapath.same_cpu[.quick].json/.tsv. Needs root.
# Namespaces, the bpffs and every process it started (ended by pid) go on exit, failure or
# Ctrl-C. Every wait is bounded. It reports; it never judges a figure.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
ECHO=$BUILD/examples/echo
MMSG=$BUILD/bench/datapath_mmsg
REPORT=selftests/bench/datapath_report.py

usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" # the comment above
    exit "${1:-0}"
}
bad_usage() {
    echo "datapath: $* (see --help)" >&2
    exit 2
}

quick=0 same_cpu=0 reps= seconds= window=64 sizes=64,1400 variants=xsk,udp,mmsg,sockperf out=
while [ $# -gt 0 ]; do
    case $1 in
    --quick) quick=1 ;;
    --same-cpu) same_cpu=1 ;;
    --reps) reps=${2:-}; shift ;;
    --seconds) seconds=${2:-}; shift ;;
    --window) window=${2:-}; shift ;;
    --sizes) sizes=${2:-}; shift ;;
    --variants) variants=${2:-}; shift ;;
    --out) out=${2:-}; shift ;;
    -h | --help) usage 0 ;;
    *) bad_usage "unknown argument '$1'" ;;
    esac
    shift
done
if [ $quick = 1 ]; then
    reps=${reps:-1} seconds=${seconds:-0.2}
else
    reps=${reps:-5} seconds=${seconds:-1}
fi
[[ $reps =~ ^[1-9][0-9]?$ ]] || bad_usage "--reps must be 1..99"
[[ $seconds =~ ^[0-9]*\.?[0-9]+$ ]] && python3 -c "import sys; sys.exit(not 0 < $seconds <= 60)" ||
    bad_usage "--seconds must be in (0, 60]"
[[ $window =~ ^[0-9]+$ ]] && [ "$window" -ge 2 ] && [ "$window" -le 1024 ] ||
    bad_usage "--window must be 2..1024"
[[ $sizes =~ ^[0-9]+(,[0-9]+)*$ ]] || bad_usage "--sizes must be a list like 64,1400"
for s in ${sizes//,/ }; do
    [ "$s" -ge 16 ] && [ "$s" -le 1472 ] || bad_usage "sizes: 16..1472 bytes"
done
for v in ${variants//,/ }; do
    case $v in xsk | udp | mmsg | sockperf) ;; *) bad_usage "unknown variant '$v'" ;; esac
done
[[ ,$variants, == *,udp,* ]] || variants="udp,$variants" # the baseline always runs
# sockperf's -t is whole seconds and includes its own 0.4 s warm-up: one more second than ours.
sp_seconds=$(python3 -c "import math; print(max(1, math.ceil($seconds)) + ($quick == 0))")

[ "$(id -u)" = 0 ] || { echo "datapath: needs root (network namespaces, XDP)" >&2; exit 1; }
for b in "$ECHO" "$MMSG"; do
    [ -x "$b" ] || { echo "datapath: $b is missing (make $b)" >&2; exit 1; }
done
command -v python3 >/dev/null || { echo "datapath: needs python3 (make deps)" >&2; exit 1; }
if [[ ,$variants, == *,sockperf,* ]] && ! command -v sockperf >/dev/null; then
    echo "datapath: sockperf is not installed (make deps installs it): no sockperf variant" >&2
    variants=$(echo ",$variants," | sed 's/,sockperf,/,/; s/^,//; s/,$//')
fi
name=datapath
[ $same_cpu = 0 ] || name+=.same_cpu
[ $quick = 0 ] || name+=.quick
if [ -z "$out" ]; then
    out=$BUILD/bench/$name.json # a smoke run (.quick) never overwrites a real one
elif [ -d "$out" ]; then
    out=$out/$name.json
fi

# Server on the first CPU we may use, client on the last (the same one if there is only one).
read -r CPU_S CPU_C < <(python3 -c 'import os; c = sorted(os.sched_getaffinity(0))
print(c[0], c[-1])')
[ $same_cpu = 0 ] || CPU_C=$CPU_S

source selftests/net/netns.sh
netns_pair dp
work=$(mktemp -d /tmp/bertha-datapath-XXXXXX)
mounted=
cleanup() {
    netns_cleanup
    [ -n "$mounted" ] && umount -l "$work/bpffs" 2>/dev/null
    rm -rf "$work"
    rm -f /run/bertha/lock/"$IF_A"@*.lock /run/bertha/lock/"$IF_B"@*.lock
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
netns_bpffs "$work/bpffs" # the xsk base's pins (the dispatcher, its maps) go here
mounted=1
# One run, one build: the tree may be rebuilt while we run (a half-written binary does not
# start, and a new one may not match pins an old one left).
cp "$ECHO" "$work/echo"
cp "$MMSG" "$work/datapath_mmsg"
ECHO=$work/echo MMSG=$work/datapath_mmsg
# Neighbours resolved once, before anything is timed (Debian's minimal images have no ping).
ip netns exec "$NS_B" python3 selftests/net/udp_tool.py ping --to "$ADDR_A" --count 1 >/dev/null ||
    echo "datapath: no ICMP echo from $ADDR_A (carrying on)" >&2

declare -A PORT=([xsk]=7000 [udp]=7001 [mmsg]=7002 [sockperf]=7003)
failures=0
manifest=$work/trials.tsv
servers=$work/servers.tsv
: >"$manifest"
: >"$servers"

# CPU the server has used so far: "ns_on_cpu utime_ticks stime_ticks", all threads of the
# process and of its children (sockperf runs under `timeout`).
srv_cpu() {
    local ns=0 ut=0 st=0 a p t s kids=
    [ -r "/proc/$1/stat" ] || { echo "- - -"; return 0; } # it died: no figure
    read -r kids <"/proc/$1/task/$1/children" 2>/dev/null || true
    for p in $1 $kids; do
        for t in /proc/"$p"/task/*/schedstat; do
            read -r a _ <"$t" 2>/dev/null && ns=$((ns + a))
        done
        s=$(<"/proc/$p/stat") 2>/dev/null || continue
        s=${s##*) }
        set -- $s
        ut=$((ut + ${12})) st=$((st + ${13}))
    done
    echo "$ns $ut $st"
}

# start_server VARIANT LOG: its server in host A on CPU_S; the pid in $SRV (tracked).
start_server() {
    local v=$1 log=$2 ready
    local -a cmd
    case $v in
    xsk | udp) cmd=("$ECHO" server --bind "$ADDR_A:${PORT[$v]}" --base "$v" --duration-s 900)
        ready="listening on" ;;
    mmsg) cmd=("$MMSG" server --bind "$ADDR_A:${PORT[$v]}" --seconds 900)
        ready="listening on" ;;
    sockperf) cmd=(timeout -k 2 900 sockperf server -i "$ADDR_A" -p "${PORT[$v]}")
        ready="block on socket" ;;
    esac
    ip netns exec "$NS_A" taskset -c "$CPU_S" "${cmd[@]}" >"$log" 2>&1 &
    SRV=$!
    netns_track $SRV
    netns_wait_for $SRV "$log" "$ready"
}
stop_server() { # PID VARIANT LOG REP
    netns_stop "$1"
    netns_untrack "$1"
    local xdp=none
    ip -n "$NS_A" link show dev "$IF_A" | grep -q ' xdp' && xdp=left_attached
    [ "$xdp" = none ] || echo "datapath: an XDP program is still on $IF_A after the $2 server" >&2
    printf '%s\t%s\t%s\t%s\n' "$4" "$2" "$3" "$xdp" >>"$servers"
}

# trial REP ORDER VARIANT SIZE MODE SERVER_PID: one client run in host B on CPU_C; its output,
# its CPU (user, sys: bash's `time`), the server's CPU around it and both CPUs' /proc/stat
# lines (user, system, softirq, idle...: anything else running there counts too) are kept.
trial() {
    local rep=$1 order=$2 v=$3 size=$4 mode=$5 srv=$6
    local w=$window
    [ "$mode" = pingpong ] && w=1
    local f=$work/$rep-$v-$size-$mode.out
    local -a cmd
    case $v in
    xsk | udp) cmd=("$ECHO" client --server "$ADDR_A:${PORT[$v]}" --base "$v" --size "$size"
        --window "$w" --count 1099511627776 --max-seconds "$seconds" --json) ;;
    mmsg) cmd=("$MMSG" client --server "$ADDR_A:${PORT[$v]}" --size "$size" --window "$w"
        --seconds "$seconds") ;;
    sockperf) cmd=(sockperf ping-pong -i "$ADDR_A" -p "${PORT[$v]}" -m "$size" -t "$sp_seconds"
        --full-rtt)
        [ "$mode" = throughput ] && cmd+=(-b "$w") ;;
    esac
    local before after rc=0 t0 t1
    before=$(srv_cpu "$srv")
    grep -E "^cpu($CPU_S|$CPU_C) " /proc/stat >"$f.stat0" # the two CPUs' time, by kind
    t0=$(date +%s.%N)
    TIMEFORMAT='%3U %3S'
    { time ip netns exec "$NS_B" taskset -c "$CPU_C" timeout -k 2 $((${sp_seconds%.*} + 30)) \
        "${cmd[@]}" >"$f" 2>"$f.err" || rc=$?; } 2>"$f.time"
    t1=$(date +%s.%N)
    grep -E "^cpu($CPU_S|$CPU_C) " /proc/stat >"$f.stat1"
    after=$(srv_cpu "$srv")
    if [ $rc != 0 ]; then
        echo "datapath: $v $size B $mode: client exited $rc: $(cat "$f.err" "$f" | tail -c 400)" >&2
        failures=$((failures + 1))
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$order" "$v" "$size" "$mode" \
        "$w" "$f" "$(cat "$f.time")" "$before" "$after" "$rc $t0 $t1" >>"$manifest"
}

IFS=, read -r -a VARS <<<"$variants"
IFS=, read -r -a SIZES <<<"$sizes"
echo "datapath: $NS_A ($ADDR_A, server CPU $CPU_S) <- veth -> $NS_B ($ADDR_B, client CPU $CPU_C)"
echo "  variants ${VARS[*]}; sizes ${SIZES[*]} B; window $window;" \
    "$reps rep(s) x ${seconds} s per trial (sockperf -t $sp_seconds)"

# run_block REP VARIANT ORDER: the variant's server, its trials, the server stopped.
run_block() {
    local rep=$1 v=$2 order=$3 log=$work/$1-$2.server.log size
    if ! start_server "$v" "$log"; then
        echo "datapath: the $v server did not start: $(tail -c 500 "$log")" >&2
        netns_stop "$SRV"
        netns_untrack "$SRV"
        failures=$((failures + 1))
        return 0
    fi
    local srv=$SRV
    if [ "$rep" = warmup ]; then
        trial warmup 0 "$v" "${SIZES[0]}" throughput $srv
    else
        for size in "${SIZES[@]}"; do
            trial "$rep" "$order" "$v" "$size" throughput $srv
            trial "$rep" "$order" "$v" "$size" pingpong $srv
        done
    fi
    stop_server $srv "$v" "$log" "$rep"
}

started=$(date +%s)
if [ $quick = 0 ]; then # a warm-up block per variant, not reported
    for v in "${VARS[@]}"; do run_block warmup "$v" 0; done
fi
n=${#VARS[@]}
for ((r = 0; r < reps; r++)); do
    order=()
    for ((i = 0; i < n; i++)); do order+=("${VARS[$(((i + r) % n))]}"); done
    echo "  rep $((r + 1))/$reps: ${order[*]}"
    for ((i = 0; i < n; i++)); do run_block $r "${order[$i]}" $i; done
done
echo "  $(($(date +%s) - started)) s"

python3 "$REPORT" --manifest "$manifest" --servers "$servers" --out "$out" \
    --baseline udp --variants "$variants" --sizes "$sizes" --window "$window" --reps "$reps" \
    --seconds "$seconds" --sockperf-seconds "$sp_seconds" --quick "$quick" \
    --server-cpu "$CPU_S" --client-cpu "$CPU_C" \
    --label "veth $NS_B ($ADDR_B) -> $NS_A ($ADDR_A), server and client processes" ||
    failures=$((failures + 1))
[ $failures = 0 ] || { echo "datapath: $failures step(s) failed (see above)" >&2; exit 1; }
