# Source this: two hosts as network namespaces joined by one veth pair, addresses from
# 198.18.0.0/15 only. Names carry the pid so parallel runs never collide. (Note for pinning
# tests: every `ip netns exec` remounts /sys, so bpffs must be mounted inside the same exec that
# pins, or outside /sys: netns_bpffs.) netns_cleanup removes everything and is safe to call
# twice, and netns_pair installs it on EXIT, INT and TERM.
#
#   source selftests/net/netns.sh
#   netns_pair demo            # -> $NS_A $NS_B, $ADDR_A $ADDR_B (198.18.<n>.1 / .2)
#   in_a cmd...                # run in host A;  in_b cmd...
#   netns_track $pid           # a process to end (by pid) at cleanup
#   netns_untrack $pid         # ...one that has ended, or that you end: netns_stop $pid
#   netns_bpffs $dir           # a bpffs for pins every `ip netns exec` sees (BERTHA_BPFFS)

NETNS_PIDS=()
NETNS_NAMES=()

netns_cleanup() {
    local pid ns
    for pid in "${NETNS_PIDS[@]}"; do
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    NETNS_PIDS=()
    for ns in "${NETNS_NAMES[@]}"; do
        ip netns del "$ns" 2>/dev/null # takes its veth end, and so the pair, with it
    done
    NETNS_NAMES=()
}

netns_track() { NETNS_PIDS+=("$1"); }

# netns_untrack PID: a tracked process that has ended (waited for), so that the cleanup does not
# signal its pid, which the system may have given to another process by then.
netns_untrack() {
    local p keep=()
    for p in "${NETNS_PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    NETNS_PIDS=("${keep[@]}")
}

# netns_stop PID: end a process we started (by pid): SIGTERM, at most 3 s, then SIGKILL, so that
# one that ignores SIGTERM cannot hang the test. It stays tracked: netns_untrack it.
netns_stop() {
    kill "$1" 2>/dev/null || return 0
    for _ in $(seq 1 60); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# netns_bpffs DIR: mount a bpffs on DIR (in the root mount namespace, which every `ip netns exec`
# shares, unlike its own /sys/fs/bpf) and point the loader's pins at it: BERTHA_BPFFS=DIR/bertha.
# Pins then outlive the exec that made them, and the system's /sys/fs/bpf is left alone. The
# caller unmounts it at cleanup.
netns_bpffs() {
    mkdir -p "$1"
    mount -t bpf bpf "$1"
    export BERTHA_BPFFS=$1/bertha
}

# netns_wait_for PID LOG TEXT: wait (at most 5 s) until LOG contains TEXT, e.g. a server's
# "listening on" line; fails with the log when PID exits first or time runs out.
netns_wait_for() {
    local pid=$1 log=$2 text=$3
    for _ in $(seq 1 100); do
        grep -q "$text" "$log" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    grep -q "$text" "$log" 2>/dev/null && return 0
    echo "process $pid never printed '$text':" >&2
    cat "$log" >&2
    return 1
}

# netns_pair TAG [SUBNET_OCTET]: host A gets 198.18.<octet>.1/24, host B .2/24.
netns_pair() {
    local tag=$1 octet=${2:-$(($$ % 200 + 1))}
    NS_A="bertha-$tag-$$-a"
    NS_B="bertha-$tag-$$-b"
    ADDR_A="198.18.$octet.1"
    ADDR_B="198.18.$octet.2"
    trap 'netns_cleanup' EXIT
    trap 'netns_cleanup; exit 130' INT
    trap 'netns_cleanup; exit 143' TERM
    NETNS_NAMES+=("$NS_A" "$NS_B")
    ip netns add "$NS_A"
    ip netns add "$NS_B"
    local va="vb$$a" vb="vb$$b" # veth names: at most 15 characters
    ip link add "$va" netns "$NS_A" type veth peer name "$vb" netns "$NS_B"
    ip -n "$NS_A" addr add "$ADDR_A/24" dev "$va"
    ip -n "$NS_B" addr add "$ADDR_B/24" dev "$vb"
    ip -n "$NS_A" link set lo up
    ip -n "$NS_B" link set lo up
    ip -n "$NS_A" link set "$va" up
    ip -n "$NS_B" link set "$vb" up
    IF_A=$va
    IF_B=$vb
}

# For commands in the foreground. To start a background process whose pid you track, run
# `ip netns exec "$NS_A" cmd ... &` directly: `in_a cmd &` backgrounds a subshell, and $! would be
# the subshell, not the process (killing it would leave the process running).
in_a() { ip netns exec "$NS_A" "$@"; }
in_b() { ip netns exec "$NS_B" "$@"; }
