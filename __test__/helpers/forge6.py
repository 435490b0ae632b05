#!/usr/bin/env python3
"""Sends hostile ICMPv6 to the prober from the lab peer: echo replies with the exporter's
identifier from the very address being probed but a key and token of nobody's probe, replies
cut short, and errors quoting an echo request with our identifier but no probe behind it.
Usage: forge6.py SRC DST IDENT COUNT (lab addresses in 2001:2::/48 only)."""
import os
import socket
import struct
import sys

from labpackets import checksum


def icmp6(src: bytes, dst: bytes, kind: int, code: int, rest: bytes, body: bytes) -> bytes:
    msg = struct.pack("!BBH", kind, code, 0) + rest + body
    pseudo = src + dst + struct.pack("!I3xB", len(msg), 58)
    return msg[:2] + struct.pack("!H", checksum(pseudo + msg)) + msg[4:]


def ipv6(src: bytes, dst: bytes, payload: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), 58, 64, src, dst) + payload


def main() -> None:
    src_s, dst_s, ident, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    for net in (src_s, dst_s):
        if not net.startswith("2001:2:"):
            sys.exit(f"refusing to send to or from {net}: not a lab address")
    src, dst = socket.inet_pton(socket.AF_INET6, src_s), socket.inet_pton(socket.AF_INET6, dst_s)
    # IPPROTO_RAW on IPv6: the header is ours (so the source can be the probed address).
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for seq in range(count):
        echo = struct.pack("!HH", ident, seq)
        payload = os.urandom(12) + b"icmp-exporter " * 3
        s.sendto(ipv6(src, dst, icmp6(src, dst, 129, 0, echo, payload)), (dst_s, 0))
        s.sendto(ipv6(src, dst, icmp6(src, dst, 129, 0, echo, payload[:4])), (dst_s, 0))
        quoted = ipv6(dst, src, icmp6(dst, src, 128, 0, echo, payload))
        s.sendto(ipv6(src, dst, icmp6(src, dst, 1, 3, b"\0" * 4, quoted)), (dst_s, 0))


if __name__ == "__main__":
    main()
