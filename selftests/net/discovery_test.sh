#!/usr/bin/env bash
# Discovery on a real veth pair between two namespaces: `probe --peer` finds the veth that routes
# to the peer, reports native XDP, AF_XDP copy mode, no zero-copy (with the reason), TC, and
# leaves no XDP program behind (also with the trial-attach fallback). An XDP program already
# attached is reported and never disturbed; without privilege the probe still answers, with
# reasons; a loopback peer maps to lo; an unroutable peer is an error that says so.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
PROBE=$BUILD/examples/probe
XDP_OBJ=$BUILD/bpf/passcount.bpf.o
source selftests/net/netns.sh

netns_pair disc
fails=0

# check NAME JSON PYTHON-ASSERTIONS: the assertions see the report as `r`, and the names
# `ifname`; each failing assertion is printed.
check() {
    local name=$1 json=$2 code=$3
    if python3 - "$json" "$IF_A" "$name" "$code" <<'PY'; then echo "ok   $name"; else fails=$((fails + 1)); fi
import json, sys
r = json.loads(sys.argv[1])
ifname, name, code = sys.argv[2], sys.argv[3], sys.argv[4]
problems = []
for expr in [l.strip() for l in code.strip().splitlines() if l.strip()]:
    try:
        ok = eval(expr, {"r": r, "ifname": ifname})
    except Exception as e:
        ok, expr = False, f"{expr} raised {e!r}"
    if not ok: problems.append(expr)
if problems:
    print(f"FAIL {name}:\n  " + "\n  ".join(problems))
    print(json.dumps(r, indent=1))
    sys.exit(1)
PY
}

# No XDP program on IF_A (ip -d link shows "prog/xdp" and an xdp mode word when one is there).
no_xdp_left() {
    local what=$1 link
    link=$(in_a ip -d link show dev "$IF_A")
    if grep -Eq 'prog/xdp|xdpgeneric|xdpdrv|xdpoffload|xdp[[:space:]]' <<<"$link"; then
        echo "FAIL $what: an XDP program was left on $IF_A:"
        echo "$link"
        fails=$((fails + 1))
    else
        echo "ok   $what: no XDP program left on $IF_A"
    fi
}

echo "== probe from A towards B ($ADDR_B) over $IF_A"
out=$(in_a "$PROBE" --peer "$ADDR_B:7000" --json)
check "veth towards the peer, xdp-features" "$out" '
r["route"]["ifname"] == ifname
r["interface"]["name"] == ifname
r["interface"]["driver"] == "veth"
r["interface"]["xdp_method"] == "xdp-features"
"basic" in r["interface"]["xdp_features"]
r["interface"]["xdp_native"]["available"]
r["interface"]["xdp_generic"]["available"]
r["interface"]["af_xdp_copy"]["available"]
not r["interface"]["af_xdp_zerocopy"]["available"]
"xsk-zerocopy" in r["interface"]["af_xdp_zerocopy"]["reason"]
r["interface"]["xdp_attached"] == []
r["tcx"]["available"] or r["clsact"]["available"]
r["needs"]["tc"]["available"] and r["needs"]["xdp"]["available"] and r["needs"]["af_xdp"]["available"]
r["needs"]["privilege"]["available"] and r["needs"]["btf"]["available"]
all(v["available"] or v["reason"] for v in r["needs"].values())'
no_xdp_left "xdp-features probe"

echo "== the pre-6.3 fallback, forced: a trial attach in driver mode, detached at once"
out=$(in_a "$PROBE" --peer "$ADDR_B:7000" --json --xdp-method trial)
check "trial attach on veth" "$out" '
r["interface"]["xdp_method"] == "trial-attach"
r["interface"]["xdp_native"]["available"]
"detached at once" in r["interface"]["xdp_native"]["reason"]'
no_xdp_left "trial-attach probe"

echo "== a program already attached (generic mode) is reported and left alone"
if in_a ip link set dev "$IF_A" xdpgeneric obj "$XDP_OBJ" sec xdp; then
    id_before=$(in_a ip -d link show dev "$IF_A" | sed -nE 's/.*prog\/xdp id ([0-9]+).*/\1/p')
    out=$(in_a "$PROBE" --peer "$ADDR_B:7000" --json --xdp-method trial)
    check "existing generic program, trial skipped" "$out" "
len(r['interface']['xdp_attached']) == 1
r['interface']['xdp_attached'][0]['mode'] == 'generic'
r['interface']['xdp_attached'][0]['id'] == int('${id_before:-0}')
r['interface']['xdp_attached'][0]['name'] == 'bertha_passcnt'
not r['interface']['xdp_native']['available']
'not to disturb it' in r['interface']['xdp_native']['reason']"
    out=$(in_a "$PROBE" --peer "$ADDR_B:7000" --json)
    check "existing generic program, xdp-features still answer" "$out" '
r["interface"]["xdp_native"]["available"]'
    id_after=$(in_a ip -d link show dev "$IF_A" | sed -nE 's/.*prog\/xdp id ([0-9]+).*/\1/p')
    if [ -n "$id_before" ] && [ "$id_before" = "$id_after" ]; then
        echo "ok   the attached program (id $id_before) is still there"
    else
        echo "FAIL the attached program changed: before '$id_before', after '$id_after'"
        fails=$((fails + 1))
    fi
    in_a ip link set dev "$IF_A" xdpgeneric off
    no_xdp_left "after removing the test's own program"
else
    echo "FAIL could not attach $XDP_OBJ with ip link (iproute2 without libbpf?)"
    fails=$((fails + 1))
fi

echo "== a program already attached in native mode answers the trial itself, and stays"
if in_a ip link set dev "$IF_A" xdpdrv obj "$XDP_OBJ" sec xdp; then
    id_before=$(in_a ip -d link show dev "$IF_A" | sed -nE 's/.*prog\/xdp id ([0-9]+).*/\1/p')
    out=$(in_a "$PROBE" --peer "$ADDR_B:7000" --json --xdp-method trial)
    check "existing native program" "$out" "
r['interface']['xdp_attached'] == [{'id': int('${id_before:-0}'), 'mode': 'native', 'name': 'bertha_passcnt'}]
r['interface']['xdp_native']['available']
'already attached' in r['interface']['xdp_native']['reason']"
    # Without privilege the program is still reported, by id (names need CAP_SYS_ADMIN).
    out=$(in_a setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
        --bounding-set=-all "$PROBE" --peer "$ADDR_B:7000" --json)
    check "existing native program, seen without privilege" "$out" "
r['interface']['xdp_attached'] == [{'id': int('${id_before:-0}'), 'mode': 'native', 'name': ''}]"
    id_after=$(in_a ip -d link show dev "$IF_A" | sed -nE 's/.*prog\/xdp id ([0-9]+).*/\1/p')
    if [ -n "$id_before" ] && [ "$id_before" = "$id_after" ]; then
        echo "ok   the native program (id $id_before) is still there"
    else
        echo "FAIL the native program changed: before '$id_before', after '$id_after'"
        fails=$((fails + 1))
    fi
    in_a ip link set dev "$IF_A" xdpdrv off
    no_xdp_left "after removing the test's own native program"
else
    echo "FAIL could not attach $XDP_OBJ in driver mode with ip link"
    fails=$((fails + 1))
fi

echo "== without privilege: every 'no' has a reason, the interface facts stay"
out=$(in_a setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
    --bounding-set=-all "$PROBE" --peer "$ADDR_B:7000" --json)
check "unprivileged" "$out" '
r["euid"] == 65534
not r["privileged"]["available"] and "CAP_NET_ADMIN" in r["privileged"]["reason"]
not r["bpf_xdp"]["available"] and r["bpf_xdp"]["reason"]
not r["af_xdp"]["available"] and "CAP_NET_RAW" in r["af_xdp"]["reason"]
r["tcx"]["reason"] and r["clsact"]["reason"] and r["btf"]["available"]
r["interface"]["name"] == ifname
r["interface"]["xdp_native"]["available"]
not r["interface"]["af_xdp_copy"]["available"]
not r["needs"]["privilege"]["available"] and "agent" in r["needs"]["privilege"]["reason"]
not r["needs"]["xdp"]["available"] and r["needs"]["xdp"]["reason"]
not r["needs"]["tc"]["available"] and r["needs"]["tc"]["reason"]
not r["needs"]["af_xdp"]["available"] and r["needs"]["af_xdp"]["reason"]
all(v["available"] or v["reason"] for v in r["needs"].values())'
no_xdp_left "unprivileged probe"

echo "== a loopback peer maps to lo"
out=$(in_a "$PROBE" --peer 127.0.0.1:7000 --json)
check "loopback" "$out" '
r["interface"]["name"] == "lo"
not r["interface"]["xdp_native"]["available"] and r["interface"]["xdp_native"]["reason"]
not r["needs"]["xdp"]["available"]'

echo "== an unroutable peer (no default route in the namespace) is an error that says so"
if err=$(in_a "$PROBE" --peer 198.19.255.1:7000 2>&1); then
    echo "FAIL probe towards an unroutable peer succeeded: $err"
    fails=$((fails + 1))
elif grep -q "no route to 198.19.255.1" <<<"$err"; then
    echo "ok   unroutable: $err"
else
    echo "FAIL unroutable peer, unexpected message: $err"
    fails=$((fails + 1))
fi

echo "== the text table has one line per feature"
in_a "$PROBE" --peer "$ADDR_B:7000" | tee /dev/stderr | grep -qE "^  xdp native +yes" ||
    { echo "FAIL the table has no 'xdp native yes' line"; fails=$((fails + 1)); }

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "discovery across namespaces: all checks passed"
