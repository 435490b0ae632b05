"""Packet building shared by the lab's Python helpers (forge.py, responder.py)."""
import struct


def checksum(data: bytes) -> int:
    """RFC 1071 internet checksum."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: bytes, dst: bytes, payload: bytes, protocol: int = 1) -> bytes:
    """An IPv4 header (DF, TTL 64; the kernel fills in id and checksum) before `payload`."""
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, protocol, 0, src, dst) + payload
