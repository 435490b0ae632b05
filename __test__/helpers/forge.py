#!/usr/bin/env python3
"""Sends hostile ICMP to the prober from the lab peer: replies and errors that carry the
exporter's identifier but belong to no probe, with spoofed sources, bad checksums and
truncations. Usage: forge.py SRC DST IDENT COUNT (IPv4, lab addresses only)."""
import os
import socket
import struct
import sys

from labpackets import checksum
from labpackets import ipv4 as ipv4_header


def icmp(kind: int, code: int, rest: bytes, body: bytes, good: bool = True) -> bytes:
    msg = struct.pack("!BBH", kind, code, 0) + rest + body
    c = checksum(msg) ^ (0 if good else 0x5A5A)
    return msg[:2] + struct.pack("!H", c) + msg[4:]


def ipv4(src: str, dst: str, payload: bytes) -> bytes:
    return ipv4_header(socket.inet_aton(src), socket.inet_aton(dst), payload)


def main() -> None:
    src, dst, ident, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    for net in (src, dst):
        if not net.startswith(("198.18.", "198.19.")):
            sys.exit(f"refusing to send to or from {net}: not a lab address")
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for seq in range(count):
        echo = struct.pack("!HH", ident, seq)
        payload = os.urandom(12) + b"icmp-exporter " * 3
        # A well-formed reply from the probed address, with a key and token of nobody's probe.
        s.sendto(ipv4(src, dst, icmp(0, 0, echo, payload)), (dst, 0))
        # The same with a broken checksum, and one cut after 12 bytes.
        s.sendto(ipv4(src, dst, icmp(0, 0, echo, payload, good=False)), (dst, 0))
        s.sendto(ipv4(src, dst, icmp(0, 0, echo, payload[:4])), (dst, 0))
        # An unreachable quoting an echo request with our identifier but no probe behind it.
        quoted = ipv4(dst, src, icmp(8, 0, echo, payload))
        s.sendto(ipv4(src, dst, icmp(3, 1, b"\0" * 4, quoted)), (dst, 0))
        # A router's minimal quote (8 bytes of the echo request): no key, cannot be matched.
        s.sendto(ipv4(src, dst, icmp(11, 0, b"\0" * 4, quoted[:28])), (dst, 0))


if __name__ == "__main__":
    main()
