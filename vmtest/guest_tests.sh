#!/usr/bin/env bash
# Runs inside a vmtest guest (the host's / read-only, fresh tmpfs on /tmp and /run, bpffs on
# /sys/fs/bpf), from the repository root: the kernel-facing tests of the project on the guest's
# kernel. vmtest/run starts it (its default command); it can also be run by hand in a guest:
#   vmtest/run -k 6.1 -- bash vmtest/guest_tests.sh            # everything on 6.1
#   vmtest/run -k 6.1 -- VMTEST_ONLY=net/echo bash vmtest/guest_tests.sh
#
# Prints, in order: discovery's report (what this kernel has and lacks); one line per test:
#   ok    NAME
#   FAIL  NAME  detail (followed by the indented tail of its log)
#   n/a   NAME  reason (never counted as passed)
# and last one line vmtest/run parses:  VMTEST-SUMMARY passed=N failed=N na=N
#
#   bpf/CASE         every test case of $BUILD/selftests/bpf_tests
#   unit/CASE        the unit binary's kernel-facing cases (io_uring udp, discovery, offload, AF_XDP sockets)
#   net/NAME         selftests/net/NAME_test.sh (namespaces, veth, bpffs under /tmp)
# VMTEST_ONLY=PATTERN (shell glob on NAME, e.g. 'bpf/*' or 'net/echo') runs a subset.
set -u
cd "$(dirname "$0")/.."
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
BUILD=${BUILD:-build}
ONLY=${VMTEST_ONLY:-*}
LOGS=/tmp/vmtest-logs # shared with the host by vmtest/run (build/vmtest/logs-KERNEL); build/ is read-only here
mkdir -p "$LOGS"
passed=0 failed=0 na=0
XDP_FEATURES="not probed" # "yes", or "no: discovery's reason" (set by the veth probe below)

ok() { printf 'ok    %s\n' "$1"; passed=$((passed + 1)); }
bad() { printf 'FAIL  %-40s %s\n' "$1" "$2"; failed=$((failed + 1)); }
notapp() { printf 'n/a   %-40s %s\n' "$1" "$2"; na=$((na + 1)); }
want() { case $1 in $ONLY) return 0 ;; esac; return 1; }
# group PREFIX: VMTEST_ONLY may select something in PREFIX/ (e.g. '*', '*xsk*', 'bpf/*', 'unit/probe*').
group() { case $ONLY in '*'* | "$1"/*) return 0 ;; esac; return 1; }

# ---- discovery first: what this kernel has and lacks ----------------------------------------
echo "== discovery (bertha probe) on $(uname -r)"
if [ -x "$BUILD/bertha-load" ]; then
    timeout 60 "$BUILD/bertha-load" probe 2>&1 | sed 's/^/  /'
    # ...and a veth, whose native XDP / AF_XDP answers (and how they were found: xdp-features or
    # a trial attach) depend on the kernel. Removed again before the tests.
    if ip link add vmtprobe0 type veth peer name vmtprobe1 2>/dev/null; then
        ip link set vmtprobe0 up && ip link set vmtprobe1 up
        echo "== discovery of a veth (bertha-load probe --iface vmtprobe0)"
        timeout 60 "$BUILD/bertha-load" probe --iface vmtprobe0 2>&1 | sed -n '/^interface/,/^needs/p' |
            grep -v '^needs' | sed 's/^/  /'
        # The features the n/a rules below depend on, as discovery found them (not by version).
        XDP_FEATURES=$(timeout 60 "$BUILD/bertha-load" probe --json --iface vmtprobe0 2>/dev/null |
            python3 -c 'import json, re, sys
i = json.load(sys.stdin)["interface"]
why = i["xdp_native"]["reason"]
m = re.search(r"xdp-features unavailable: ([^]]*)", why) # the trial attach says why not
print("yes" if i["xdp_method"] == "xdp-features" else "no: " + (m.group(1) if m else why).replace("|", "/"))' 2>&1)
        ip link del vmtprobe0
    fi
elif [ -x "$BUILD/examples/probe" ]; then
    timeout 60 "$BUILD/examples/probe" 2>&1 | sed 's/^/  /'
else
    echo "  (no $BUILD/bertha-load nor $BUILD/examples/probe: build with make all)"
fi
echo "== tests"

# ---- doctest binaries: one line per test case ------------------------------------------------
# run_doctest PREFIX BIN [doctest filters...]: lists the cases, runs them once, and reports each
# case as ok, or FAIL with the lines doctest printed for it (a failed load carries the verifier
# log in the loader's error, which doctest prints with the failed check).
run_doctest() {
    local prefix=$1 bin=$2
    shift 2
    local log=$LOGS/${prefix}.log list=$LOGS/${prefix}.list
    if [ ! -x "$bin" ]; then
        bad "$prefix" "missing binary $bin (make all)"
        return
    fi
    "$bin" "$@" --list-test-cases --no-colors=true 2>/dev/null |
        grep -v -e '^=\{20,\}$' -e '^\[doctest\]' >"$list"
    local names=() n all=0
    while IFS= read -r n; do
        [ -n "$n" ] || continue
        all=$((all + 1))
        want "$prefix/$n" && names+=("$n")
    done <"$list"
    [ ${#names[@]} -gt 0 ] || return 0
    local filter=()
    # A subset (VMTEST_ONLY): doctest filters on names; '\,' keeps a comma in a name.
    [ ${#names[@]} -eq "$all" ] ||
        filter=(--test-case="$(printf '%s\n' "${names[@]}" | sed 's/,/\\,/g' | paste -sd, -)")
    timeout 600 "$bin" "$@" --no-colors=true "${filter[@]}" >"$log" 2>&1
    local rc=$?
    # Failed cases: doctest prints a block per report, between lines of '=', headed
    # "TEST CASE:  NAME"; a failure's block has an ERROR (a MESSAGE's block has none).
    local failed_names
    failed_names=$(awk '
        /^=====+$/ { if (name != "" && err) print name; name = ""; err = 0; next }
        /^TEST CASE:  / { name = substr($0, 13) }
        / ERROR: |FATAL ERROR|TEST CASE FAILED|^[^ ].*: ERROR:/ { err = 1 }
        END { if (name != "" && err) print name }' "$log" | sort -u)
    for n in "${names[@]}"; do
        if grep -qxF -- "$n" <<<"$failed_names"; then
            bad "$prefix/$n" "log: $log"
            awk -v n="TEST CASE:  $n" '
                /^=====+$/ { p = 0; next }
                $0 == n { p = 1 }
                p' "$log" | head -60 | sed 's/^/      /'
        else
            ok "$prefix/$n"
        fi
    done
    local summary
    summary=$(grep -E '^\[doctest\] test cases:' "$log" | tail -1)
    if [ -z "$summary" ]; then
        bad "$prefix" "exited $rc without a doctest summary (crash or timeout); log: $log"
        tail -30 "$log" | sed 's/^/      /'
    elif [ "$rc" -ne 0 ] && [ -z "$failed_names" ]; then
        bad "$prefix" "exited $rc with no failed case; log: $log"
        tail -30 "$log" | sed 's/^/      /'
    fi
}

if group bpf; then
    run_doctest bpf "$BUILD/selftests/bpf_tests"
fi
if group unit; then
    # io_uring udp, discovery (XDP/AF_XDP/TC probes on real interfaces), the offload
    # framework's attach/detach and AF_XDP sockets on veth: the unit cases that depend on the kernel.
    run_doctest unit "$BUILD/selftests/unit_tests" \
        --source-file='*udp_test.cpp,*discovery_test.cpp,*offload_test.cpp,*xsk_socket_test.cpp'
fi

# ---- selftests/net: one line per script ----------------------------------------------------
# na_reason NAME: why a script cannot run at all on this kernel, or nothing. (None so far: every
# script runs on 6.1 and 6.12; see partial_na for checks within a script.)
na_reason() {
    case $1 in
    *) ;;
    esac
}
# partial_na NAME: "REASON|CHECK-REGEX|MODE" when some of a script's checks need a feature this
# kernel lacks. If the script's only failed checks ("FAIL <check>" lines) match CHECK-REGEX, they
# are one n/a line with REASON; any other failed check is a FAIL as usual. MODE "goes-on": the
# script runs its other checks after such a failure, so it is also "ok" for those; MODE "stops":
# the script ends at the first failure, so the whole script is n/a (its later checks did not run).
partial_na() {
    case $1 in
    net/offload_conn)
        # Its last part: an unprivileged server gets count/xdp through the agent. Without
        # privilege, native XDP on the veth is known only from xdp-features (Linux 6.3+): without
        # them discovery says "not determined" and negotiation rightly picks count/userspace.
        [ "$XDP_FEATURES" = yes ] ||
            echo "the unprivileged-server part needs xdp-features, which discovery did not find on $(uname -r) (${XDP_FEATURES#no: }): without them discovery cannot tell native XDP without privilege and the server falls back to count/userspace|^FAIL +(unprivileged server \((close|crash)\) did not attach count/xdp through the agent|bertha-load stats failed: .*nothing of Bertha's here)|goes-on"
        ;;
    net/discovery)
        # Native XDP of a veth comes from xdp-features (the netdev netlink family, Linux 6.3+)
        # when the probe may not trial-attach (without privilege, or with a program already
        # attached); the test checks those answers.
        [ "$XDP_FEATURES" = yes ] ||
            echo "needs xdp-features, which discovery did not find on $(uname -r) (${XDP_FEATURES#no: })|^FAIL (veth towards the peer, xdp-features|existing generic program, xdp-features still answer|unprivileged):|goes-on"
        ;;
    esac
}
for t in selftests/net/*_test.sh; do
    [ -e "$t" ] || continue
    name=net/$(basename "$t" _test.sh)
    want "$name" || continue
    # Userspace only (the kv example, its load generator and its memcached backend): nothing
    # there depends on the kernel's BPF, XDP or AF_XDP, and `make test` runs them. The shard
    # chunnel's kernel-facing part is the shard stage on a veth service port, which net/shard_xdp
    # runs here; the rest of net/shard_chunnel is userspace (negotiation, relay), and its ~30 s
    # natively would be minutes under emulation, past vmtest's budget.
    case $name in net/kv | net/kv_load | net/kv_memcached_backend | net/shard_chunnel) continue ;; esac
    why=$(na_reason "$name")
    if [ -n "$why" ]; then
        notapp "$name" "$why"
        continue
    fi
    log=$LOGS/$(basename "$t" .sh).log
    t0=$SECONDS
    BUILD=$BUILD timeout 300 bash "$t" >"$log" 2>&1
    rc=$?
    if [ "$rc" -eq 0 ]; then
        ok "$name ($((SECONDS - t0))s)"
        continue
    fi
    pna=$(partial_na "$name") # REASON|REGEX|MODE; REGEX has '|' of its own
    pna_why=${pna%%|*} pna_re=${pna#*|} pna_mode=${pna##*|}
    pna_re=${pna_re%|*}
    fails=$(grep -E '^FAIL' "$log" | sort -u)
    if [ -n "$pna_why" ] && [ "$rc" -ne 124 ] && [ -n "$fails" ] &&
        ! grep -qvE "$pna_re" <<<"$fails"; then
        nf=$(grep -c . <<<"$fails")
        if [ "$pna_mode" = goes-on ]; then
            ok "$name (all checks but $nf n/a ones; $((SECONDS - t0))s)"
            notapp "$name: $nf check(s)" "$pna_why:"
        else
            notapp "$name" "$pna_why ($(grep -cE '^ *ok ' "$log") checks before it passed):"
        fi
        sed -E 's/^FAIL +/      /' <<<"$fails"
        continue
    fi
    bad "$name" "exit $rc ($((SECONDS - t0))s)$([ "$rc" -eq 124 ] && echo ', timed out'); log: $log"
    # The failed checks with the lines that explain them, then the end of the log.
    grep -E -A4 '^ *FAIL' "$log" | grep -vE '^ *"|^ *[]{}[],?$' | head -40 | sed 's/^/      /'
    echo "      -- end of log:"
    tail -15 "$log" | sed 's/^/      /'
done

echo "VMTEST-SUMMARY passed=$passed failed=$failed na=$na"
[ "$failed" -eq 0 ]
