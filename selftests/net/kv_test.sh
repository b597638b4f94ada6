#!/usr/bin/env bash
# The kv example against itself and against memcached, on loopback:
#  - `kv server --shards 4`: `kv check` (memcached's semantics for get/gets/set/add/replace/
#    delete, key bounds, error replies, noreply, several commands per datagram) passes on every
#    shard port; the shards keep separate tables; the service port answers only through the shard
#    chunnel (a plain datagram there gets nothing: negotiation comes first); malformed
#    frames (short, multi-packet) are dropped or refused and the shard keeps answering;
#  - if /usr/bin/memcached is installed: the same `kv check` passes on memcached's UDP port,
#    and the same request datagrams get byte-identical replies from a kv shard and memcached.
# Every process is started here, tracked by pid, bounded in time, and stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
KV=$BUILD/examples/kv
MEMCACHED=${MEMCACHED:-/usr/bin/memcached}
[ -x "$KV" ] || { echo "missing $KV (make all)"; exit 1; }

# Ports from the pid, so parallel runs do not collide: P (service), P+1..P+4 (shards), P+10.
port=$((20000 + ($$ % 2000) * 16))
log=$(mktemp)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -f "$log" "$log.mc"
}
trap cleanup EXIT
fails=0
expect() { # name, command...: the command must succeed
    local name=$1
    shift
    if "$@"; then echo "ok    $name"; else echo "FAIL  $name"; fails=$((fails + 1)); fi
}

"$KV" server --bind 127.0.0.1 --port "$port" --shards 4 --duration-s 120 >"$log" 2>&1 &
srv=$!
pids+=("$srv")
for _ in $(seq 50); do grep -q "listening" "$log" && break; sleep 0.1; done
grep -q "listening, 4 shards on ports $((port + 1))-$((port + 4))" "$log" ||
    { echo "server did not start:"; cat "$log"; exit 1; }

for i in 0 1 2 3; do
    expect "kv check on shard $i (port $((port + 1 + i)))" \
        timeout 30 "$KV" check --server "127.0.0.1:$((port + 1 + i))"
done

# The shards are separate tables: a key set through shard 1 is not on shard 2.
k="sep.$$"
expect "set through shard 1" timeout 5 "$KV" set --server "127.0.0.1:$((port + 2))" "$k" one
expect "get through shard 1 finds it" timeout 5 "$KV" get --server "127.0.0.1:$((port + 2))" "$k"
rc=0
timeout 5 "$KV" get --server "127.0.0.1:$((port + 3))" "$k" >/dev/null || rc=$?
expect "get through shard 2 misses it (exit 1)" test "$rc" -eq 1
rc=0
timeout 5 "$KV" get --server "127.0.0.1:$port" --timeout-ms 300 "$k" >/dev/null 2>&1 || rc=$?
expect "a plain get to the service port gets no answer: it negotiates first (exit 2)" test "$rc" -eq 2
# Through the shard chunnel (proxy here: lo has no native XDP), a key stored by one client is
# found by another that hashes it itself (shard/client): both put it on the same shard.
expect "set through the service port (shard chunnel)" \
    timeout 10 "$KV" set --server "127.0.0.1:$port" --shard auto "chunnel.$$" two
expect "shard/client finds it where the proxy put it" \
    timeout 10 "$KV" get --server "127.0.0.1:$port" --shard client "chunnel.$$"

# Malformed frames, straight on the wire.
frames() {
    python3 - "$1" <<'PY'
import socket, struct, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.3)
def ask(rid, body, seq=0, total=1, raw=None):
    s.sendto(raw if raw is not None else struct.pack(">HHHH", rid, seq, total, 0) + body,
             ("127.0.0.1", port))
    out = []
    try:
        while True:
            d = s.recv(70000)
            out.append((struct.unpack(">H", d[:2])[0], d[8:]))
    except socket.timeout:
        pass
    return out
bad = []
if ask(0, b"", raw=b"\x00\x01get"): bad.append("a 5-byte datagram was answered")
if ask(0, b"", raw=b""): bad.append("an empty datagram was answered")
r = ask(9, b"get a\r\n", seq=0, total=2)
if r != [(9, b"SERVER_ERROR multi-packet request not supported\r\n")]: bad.append(f"multi-packet: {r}")
r = ask(10, b"get a\r\n", seq=1, total=1)
if r != [(10, b"SERVER_ERROR multi-packet request not supported\r\n")]: bad.append(f"seq 1: {r}")
# a 60000-byte value fits one reply datagram; two of them do not
big = b"v" * 60000
r = ask(12, b"set big.%d 0 0 60000\r\n" % port + big + b"\r\n")
if r != [(12, b"STORED\r\n")]: bad.append(f"set of 60000 bytes: {r[:1]!r:.80}")
r = ask(13, b"get big.%d\r\n" % port)
if r != [(13, b"VALUE big.%d 0 60000\r\n" % port + big + b"\r\nEND\r\n")]: bad.append("get of 60000 bytes")
r = ask(14, b"get big.%d big.%d\r\n" % (port, port))
if r != [(14, b"SERVER_ERROR response too large for one datagram\r\n")]: bad.append(f"oversized reply: {r!r:.80}")
r = ask(11, b"get nothing.here\r\n")
if r != [(11, b"END\r\n")]: bad.append(f"still answering: {r}")
print("\n".join(bad) or "malformed frames handled")
sys.exit(1 if bad else 0)
PY
}
expect "short frames dropped, multi-packet refused, 60000-byte values, oversized replies refused" frames $((port + 1))
kill -0 "$srv" || { echo "FAIL  the server died"; fails=$((fails + 1)); }

if [ -x "$MEMCACHED" ]; then
    mport=$((port + 10))
    # -p 0: no TCP; -U: UDP on our own port; bounded by the cleanup trap and the script timeout.
    "$MEMCACHED" -U "$mport" -p 0 -l 127.0.0.1 -u nobody -t 1 >"$log.mc" 2>&1 &
    pids+=("$!")
    up=0
    for _ in $(seq 50); do
        if timeout 2 "$KV" get --server "127.0.0.1:$mport" --timeout-ms 100 probe.$$ >/dev/null 2>&1 ||
            [ $? -eq 1 ]; then up=1; break; fi
        sleep 0.1
    done
    expect "memcached answers on UDP port $mport" test "$up" -eq 1
    expect "kv check on memcached $("$MEMCACHED" -V)" \
        timeout 30 "$KV" check --server "127.0.0.1:$mport"
    # The same datagrams to a kv shard and to memcached: the replies must be the same bytes
    # (memcached may split them over several datagrams with the request's id: joined here).
    differential() {
        python3 - "$1" "$2" "$$" <<'PY'
import socket, struct, sys
ours, theirs, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.25)
rid = [1000]
def ask(port, body):
    rid[0] += 1
    s.sendto(struct.pack(">HHHH", rid[0], 0, 1, 0) + body, ("127.0.0.1", port))
    out = b""
    try:
        while True:
            d = s.recv(70000)
            if struct.unpack(">H", d[:2])[0] == rid[0]: out += d[8:]
    except socket.timeout:
        pass
    return out
k = f"diff{pid}.".encode()
cases = [
    b"get " + k + b"a\r\n",
    b"set " + k + b"a 5 0 3\r\nabc\r\n",
    b"get " + k + b"a\r\n",
    b"add " + k + b"a 0 0 1\r\nx\r\n",
    b"add " + k + b"b 9 0 2\r\nbb\r\n",
    b"replace " + k + b"c 0 0 1\r\nx\r\n",
    b"replace " + k + b"b 1 0 3\r\nbbb\r\n",
    b"get " + k + b"a " + k + b"missing " + k + b"b\r\n",
    b"delete " + k + b"b\r\n",
    b"delete " + k + b"b\r\n",
    b"delete " + k + b"a 0\r\n",
    b"delete " + k + b"a 10\r\n",
    b"set " + k + b"n 0 0 1 noreply\r\nz\r\nget " + k + b"n\r\n",
    b"get " + k + b"n\n",
    b"set " + k + b"e 0 0 0\r\n\r\nget " + k + b"e\r\n",
    b"get " + k + b"x" * (250 - len(k)) + b"\r\n",
    b"get " + k + b"x" * (251 - len(k)) + b"\r\n",
    b"set " + k + b"x" * (251 - len(k)) + b" 0 0 1\r\nx\r\n",
    b"set " + k + b"a 0 0 2\r\nabcd\r\n",
    b"set " + k + b"a zz 0 1\r\nx\r\n",
    b"set " + k + b"a 0 0 -1\r\n",
    b"set " + k + b"a 0 0\r\n",
    b"set " + k + b"a 0 0 1 noreply extra\r\nx\r\n",
    b"bogus\r\n",
    b"\r\n",
    b"get\r\n",
    b"GET x\r\n",
]
bad = 0
for body in cases:
    a, b = ask(ours, body), ask(theirs, body)
    same = a == b
    bad += not same
    print(("same " if same else "DIFF ") + repr(body[:60]) + (f"\n   kv:        {a!r}\n   memcached: {b!r}" if not same else f" -> {a[:60]!r}"))
print(f"{len(cases) - bad} of {len(cases)} request datagrams answered identically")
sys.exit(1 if bad else 0)
PY
    }
    expect "kv shard and memcached give byte-identical replies" differential $((port + 1)) "$mport"
else
    echo "skip  memcached comparison: $MEMCACHED is not installed (apt-get install memcached)"
fi

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "kv: all checks passed"
