# Source this after netns.sh: what the tests of bertha-load across namespaces share. The test sets
# BL (the bertha-load binary) and runs under `set -Eeuo pipefail`; host A ($NS_A, $IF_A) is the
# one the loader works on (host B's interface is cleaned up too). loader_cleanup removes
# everything (processes, what the loader attached, namespaces, the bpffs, the temp dir, lock
# files), and loader_setup installs it on EXIT, INT and TERM.
#
#   source selftests/net/netns.sh
#   source selftests/net/loader_lib.sh
#   loader_setup ldx loader-x "loader x test"  # -> $T, netns_pair ldx, bpffs (BERTHA_BPFFS)
#   loader_on_failure() { ...; }               # optional: shown by the cleanup when the test fails
#   bl attach --iface "$IF_A" ...              # bertha-load in host A; a failure ends the test
#   json_check WHAT FILE CODE [ARG...]         # Python assertions over a JSON file
#   status_json                                # `status --json` of $IF_A to $T/status.json

ok() { echo "ok    $*"; }
# To stderr: a failure inside $(...) must still be seen.
fail() { echo "FAIL  $*" >&2; exit 1; }

# loader_setup TAG NAME WHAT: a temp dir $T (/tmp/bertha-NAME.XXXXXX), the namespace pair
# (netns_pair TAG) and a bpffs on $T/bpffs for the pins (netns_bpffs); loader_cleanup on exit,
# and a command that fails under `set -e` is named with its line (ERR). WHAT names the test in
# the cleanup's FAILED line.
LOADER_WHAT=
loader_setup() {
    T=$(mktemp -d "/tmp/bertha-$2.XXXXXX")
    LOADER_WHAT=$3
    netns_pair "$1"
    trap loader_cleanup EXIT
    trap 'exit 130' INT # through the EXIT trap: the cleanup runs once, with this status
    trap 'exit 143' TERM
    trap 'echo "FAIL  line $LINENO: \`$BASH_COMMAND\` exited $?" >&2' ERR
    netns_bpffs "$T/bpffs"
}

# So that a test ending anywhere (passed, failed halfway, INT, TERM) leaves nothing behind: it
# ends our processes, has the loader detach whatever is still on $IF_A, then removes the
# namespaces, the bpffs, the temp dir and the lock files. The test's exit status is kept.
loader_cleanup() {
    local rc=$? p
    trap - EXIT INT TERM ERR
    set +e
    for p in "${NETNS_PIDS[@]}"; do netns_stop "$p"; done
    NETNS_PIDS=()
    if [ -n "${NS_A:-}" ] && ip netns pids "$NS_A" >/dev/null 2>&1; then
        ip netns exec "$NS_A" timeout 10 "$BL" detach --iface "$IF_A" --all >/dev/null 2>&1
    fi
    if [ -n "${NS_B:-}" ] && ip netns pids "$NS_B" >/dev/null 2>&1; then # a test may attach there too
        ip netns exec "$NS_B" timeout 10 "$BL" detach --iface "$IF_B" --all >/dev/null 2>&1
    fi
    netns_cleanup
    mountpoint -q "$T/bpffs" && umount "$T/bpffs"
    if [ "$rc" -ne 0 ] && declare -F loader_on_failure >/dev/null; then
        loader_on_failure
    fi
    rm -rf "$T"
    # The loader's per-interface lock files (never removed by it; the names carry our pid).
    [ -n "${IF_A:-}" ] && rm -f /run/bertha/lock/"$IF_A"@*.lock /run/bertha/lock/"$IF_B"@*.lock
    [ "$rc" -eq 0 ] || echo "$LOADER_WHAT: FAILED (exit $rc)"
    exit "$rc"
}

# bertha-load in host A; a failure names the command and what it said, and ends the test.
bl() {
    local out rc=0
    out=$(ip netns exec "$NS_A" timeout 30 "$BL" "$@" 2>"$T/bl.err") || rc=$?
    [ "$rc" -eq 0 ] || fail "bertha-load $* exited $rc: $(cat "$T/bl.err") $out"
    printf '%s\n' "$out"
}

# Python assertions over a JSON file: CODE sees the object as j and ARGs as a[], and appends
# what is wrong to p.
json_check() { # WHAT FILE CODE [ARG...]
    local what=$1 file=$2 code=$3 why
    shift 3
    why=$(python3 -c "import json, sys
j = json.load(open(sys.argv[1])); a = sys.argv[2:]; p = []
$code
print('; '.join(p))" "$file" "$@") || fail "$what: could not judge $file: $(head -c 300 "$file")"
    [ -z "$why" ] || fail "$what: $why"
    ok "$what"
}

status_json() { bl --json status --iface "$IF_A" >"$T/status.json"; }
