#!/usr/bin/env python3
"""On the lab peer, answers each of the first COUNT SYN probes from PROBER to TARGET with three
forged SYN-ACKs that acknowledge the probe's sequence number exactly but come from the wrong
address, from the wrong port, or go to the wrong (another of the exporter's) source port. None
may count as an answer. The peer's kernel answers the real one itself. Prints how many it forged.
Usage: forge_tcp.py TARGET OTHER PROBER COUNT (IPv4 lab addresses only)."""
import socket
import struct
import sys

from labpackets import checksum, ipv4


def synack(src: bytes, dst: bytes, sport: int, dport: int, ack: int) -> bytes:
    header = struct.pack("!HHIIBBHHH", sport, dport, 0x1234_5678, ack, 5 << 4, 0x12, 64240, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(header))
    return header[:16] + struct.pack("!H", checksum(pseudo + header)) + header[18:]


def main() -> None:
    target, other, prober, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    for net in (target, other, prober):
        if not net.startswith("198.18."):
            sys.exit(f"refusing to use {net}: not a lab address")
    listen = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    send = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    t, o, p = (socket.inet_aton(a) for a in (target, other, prober))
    print("listening", flush=True)
    forged = 0
    handled = 0
    while handled < count:
        packet = listen.recv(65535)
        ihl = (packet[0] & 0x0F) * 4
        if packet[12:16] != p or packet[16:20] != t:
            continue
        sport, dport, seq = struct.unpack("!HHI", packet[ihl : ihl + 8])
        if packet[ihl + 13] & 0x3F != 0x02:  # SYN only
            continue
        ack = (seq + 1) & 0xFFFF_FFFF
        for src, s_port, d_port in ((o, dport, sport), (t, dport + 1, sport), (t, dport, sport ^ 1)):
            segment = synack(src, p, s_port, d_port, ack)
            send.sendto(ipv4(src, p, segment, protocol=6), (prober, 0))
            forged += 1
        handled += 1
    print(f"forged {forged}", flush=True)


if __name__ == "__main__":
    main()
