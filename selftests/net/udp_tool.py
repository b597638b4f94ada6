#!/usr/bin/env python3
"""A tiny UDP sender and receiver (and a ping) for the namespace tests, bounded in count and time.

  udp_tool.py send --to 198.18.1.1:7001 --count 100 [--sport 7300] [--bind ADDR] [--size 64]
      sends COUNT datagrams (from SPORT when given), pausing 1 ms every 32 so that a veth's
      XDP ring never overflows; prints "sent N".
  udp_tool.py recv --bind 198.18.1.1:7001 --seconds 5 [--expect N]
      prints "listening on ADDR:PORT" once bound, then counts datagrams until EXPECT arrived or
      SECONDS passed; prints "received N". Exit status 0 either way: the caller judges N.
  udp_tool.py ping --to 198.18.1.1 --count 3
      ICMP echo requests (a raw socket: root), one every 0.2 s, each waiting at most 1 s for its
      reply; prints "N of M replies" and exits 0 only when every one came back. (Debian's
      minimal images have no ping.)
"""
import argparse
import os
import socket
import struct
import sys
import time


def addr(text):
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"'{text}' is not ADDR:PORT")
    return host, int(port)


def bounded(lo, hi):
    def parse(text):
        v = float(text)
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{text} is not in [{lo}, {hi}]")
        return v
    return parse


def send(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if a.sport or a.bind:
        s.bind((a.bind or "0.0.0.0", a.sport))
    payload = bytes(range(256)) * (a.size // 256 + 1)
    sent = 0
    for i in range(int(a.count)):
        s.sendto(payload[: a.size], a.to)
        sent += 1
        # Paced, not a burst: under qemu (TCG) on a busy host the receiving veth's NAPI can be
        # starved for milliseconds, and a burst overflows its ring (vmtest once lost 15 of 100
        # at 32 per ms). The tests count exactly what arrives, so nothing may be dropped on
        # the way for want of pacing.
        if i % 8 == 7:
            time.sleep(0.002)
    print(f"sent {sent}", flush=True)


def recv(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(a.bind)
    print(f"listening on {a.bind[0]}:{a.bind[1]}", flush=True)
    deadline = time.monotonic() + a.seconds
    got = 0
    while a.expect is None or got < a.expect:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            s.recv(65535)
        except socket.timeout:
            break
        got += 1
    print(f"received {got}", flush=True)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ping(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    replies = 0
    for seq in range(int(a.count)):
        body = struct.pack("!HH", ident, seq) + b"bertha-ping"
        msg = struct.pack("!BBH", 8, 0, 0) + body
        s.sendto(struct.pack("!BBH", 8, 0, checksum(msg)) + body, (a.to, 0))
        deadline = time.monotonic() + 1.0
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                pkt, src = s.recvfrom(2048)
            except socket.timeout:
                break
            icmp = pkt[(pkt[0] & 0x0F) * 4:]  # after the IP header
            if src[0] == a.to and icmp[0] == 0 and struct.unpack("!HH", icmp[4:8]) == (ident, seq):
                replies += 1
                break
        time.sleep(0.2)
    print(f"{replies} of {int(a.count)} replies", flush=True)
    return 0 if replies == int(a.count) else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    ps = sub.add_parser("send")
    ps.add_argument("--to", type=addr, required=True)
    ps.add_argument("--count", type=bounded(1, 100000), required=True)
    ps.add_argument("--sport", type=int, default=0)
    ps.add_argument("--bind", default="")
    ps.add_argument("--size", type=int, default=64, choices=range(0, 1473), metavar="0..1472")
    pr = sub.add_parser("recv")
    pr.add_argument("--bind", type=addr, required=True)
    pr.add_argument("--seconds", type=bounded(0.1, 120), required=True)
    pr.add_argument("--expect", type=int, default=None)
    pp = sub.add_parser("ping")
    pp.add_argument("--to", required=True)
    pp.add_argument("--count", type=bounded(1, 100), default=3)
    a = p.parse_args()
    return {"send": send, "recv": recv, "ping": ping}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
