#!/usr/bin/env python3
"""A slow echo responder for the lab peer: answers every IPv4 echo request for a lab address
after DELAY_MS (run it where the kernel's own replies are off: net.ipv4.icmp_echo_ignore_all=1),
and stops by itself after SECONDS. Prints "ready" once it listens. Usage: responder.py DELAY_MS SECONDS"""
import heapq
import select
import socket
import struct
import sys
import time

from labpackets import checksum, ipv4


def main() -> None:
    delay, seconds = float(sys.argv[1]) / 1000, float(sys.argv[2])
    listen = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    send = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    end = time.monotonic() + seconds
    due: list = []
    print("ready", flush=True)
    while time.monotonic() < end:
        timeout = max(0.0, min(end, due[0][0] if due else end) - time.monotonic())
        ready, _, _ = select.select([listen], [], [], timeout)
        if ready:
            packet = listen.recv(65535)
            ihl = (packet[0] & 0x0F) * 4
            src, dst = packet[12:16], packet[16:20]
            icmp = packet[ihl:]
            if len(icmp) >= 8 and icmp[0] == 8 and dst[:2] == bytes([198, 18]) and src[:2] == bytes([198, 18]):
                reply = b"\0\0\0\0" + icmp[4:]
                reply = reply[:2] + struct.pack("!H", checksum(reply)) + reply[4:]
                heapq.heappush(due, (time.monotonic() + delay, id(reply), ipv4(dst, src, reply), socket.inet_ntoa(src)))
        while due and due[0][0] <= time.monotonic():
            _, _, packet, to = heapq.heappop(due)
            send.sendto(packet, (to, 0))


if __name__ == "__main__":
    main()
