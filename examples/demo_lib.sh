# Shared by the demo scripts (examples/echo/demo.sh, examples/kv/demo.sh): messages, stopping a
# process this script started (by its pid only), and two hosts joined by a veth pair. Sourced.

say() { printf '%s\n' "$*"; }
die() {
    printf 'demo: %s\n' "$*" >&2
    exit 1
}

# True while the process runs (a zombie, exited but not yet reaped, counts as gone).
alive() {
    local pid=$1 _comm state
    [[ -r /proc/$pid/stat ]] || return 1
    read -r _ _comm state _ <"/proc/$pid/stat" 2>/dev/null || return 1
    [[ $state != Z ]]
}

# stop_pid PID SECONDS: SIGTERM (the process prints its summary and cleans up), SIGKILL if it is
# still there after SECONDS, then reap it. Nothing for an empty PID.
stop_pid() {
    local pid=$1 tenths=$(($2 * 10)) i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < tenths; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
}

# make_pair SRV_NS CLI_NS SRV_IF CLI_IF SRV_IP CLI_IP: two namespaces joined by a veth pair whose
# ends are created directly inside them (nothing appears on the host), addresses /24, all up.
make_pair() {
    local sns=$1 cns=$2 sif=$3 cif=$4 sip=$5 cip=$6 ns
    ip netns add "$sns"
    ip netns add "$cns"
    ip link add "$sif" netns "$sns" type veth peer name "$cif" netns "$cns"
    ip -n "$sns" addr add "$sip/24" dev "$sif"
    ip -n "$cns" addr add "$cip/24" dev "$cif"
    for ns in "$sns" "$cns"; do ip -n "$ns" link set lo up; done
    ip -n "$sns" link set "$sif" up
    ip -n "$cns" link set "$cif" up
}
