//! The copy of a sent probe that a transmit timestamp carries when
//! `SOF_TIMESTAMPING_OPT_TSONLY` is off.
//!
//! Only Linux >= 6.13 tags a stamp with the probe's own key (`SCM_TS_OPT_ID`); older kernels
//! report the socket's counter, which drifts when a send fails after the kernel took an id.
//! The looped copy names its probe on every kernel, as linuxptp and chrony rely on: it is
//! the frame as the egress driver stamped it. Its L2 header has no length we can know
//! (Ethernet, VLAN tags, none on TUN, anything on other link types), so the frame is read
//! from its end: our frames are never padded, so the probe is the last bytes and its IP
//! header sits right before it. Because the start is guessed from the end, the IP header
//! is held to exactly what we send; that is what tells a probe from look-alike bytes.
use super::icmp::{types, Family, MIN_PROBE_LEN, PROBE_LEN};
use super::ipv4::PROTO_ICMP;
use super::tcp::{self, PROTO_TCP, SYN_LEN};
use super::ParseError;
use crate::checksum;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const IPV4_HEADER_LEN: usize = 20;
const NEXT_HEADER_ICMPV6: u8 = 58;
/// Version 4, IHL 5: the kernel adds no options to what we send.
const IPV4_VER_IHL: u8 = 0x45;
/// MF and the fragment offset; DF and the reserved bit say nothing about fragmentation.
const IPV4_FRAGMENTED: u16 = 0x3fff;
/// Our SYN is all header (options included): a data offset in 32-bit words.
const SYN_DATA_OFFSET: u8 = (SYN_LEN / 4) as u8;

/// What a looped probe says about itself: the fields the engine keys in-flight probes by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Looped {
    /// An ICMP or ICMPv6 echo request (`wire::icmp::EchoRepr`). On ping sockets `ident` is
    /// the one the kernel wrote, not the one we asked for.
    Echo { ident: u16, seq: u16, key: u32, token: u64 },
    /// A TCP SYN; `seq` is its initial sequence number.
    Syn { src_port: u16, dst_port: u16, seq: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopedProbe {
    pub dst: IpAddr,
    pub probe: Looped,
}

/// Parses the packet copy of a transmit timestamp: any L2 header, then an IPv4 header
/// without options or an IPv6 header without extension headers (`family`), then a 64-byte
/// echo request or (`tcp`) a 40-byte SYN, which ends the frame.
///
/// Errors, for counting: `Truncated` when the frame is too short, or the bytes before the
/// probe are not an IP header framing exactly that probe (version, header length,
/// total/payload length; as `ipv4::Ipv4Header` answers for a wrong version); `BadChecksum`
/// for the IPv4 header or ICMPv4 checksum; `Fragment` for any IPv4 fragment; `NotIcmp`
/// for another protocol, or a transport header other than our probe's.
pub fn parse_looped(frame: &[u8], family: Family, tcp: bool) -> Result<LoopedProbe, ParseError> {
    parse_looped_sized(frame, family, tcp, PROBE_LEN)
}

/// As `parse_looped`, for an echo request of `echo_len` bytes (probes with a `size`): the
/// frame is read from its end, so the caller tries each length its probes have.
pub fn parse_looped_sized(frame: &[u8], family: Family, tcp: bool, echo_len: usize) -> Result<LoopedProbe, ParseError> {
    let mut rest = frame;
    if tcp {
        let syn = take_last::<SYN_LEN>(&mut rest)?;
        let dst = ip_header(rest, family, PROTO_TCP, SYN_LEN)?;
        Ok(LoopedProbe { dst, probe: parse_syn(syn)? })
    } else {
        if echo_len < MIN_PROBE_LEN || frame.len() < echo_len {
            return Err(ParseError::Truncated);
        }
        let (before, echo) = frame.split_at(frame.len() - echo_len);
        let protocol = match family {
            Family::V4 => PROTO_ICMP,
            Family::V6 => NEXT_HEADER_ICMPV6,
        };
        let dst = ip_header(before, family, protocol, echo_len)?;
        Ok(LoopedProbe { dst, probe: parse_echo(echo, family)? })
    }
}

/// Cuts the last `N` bytes off `rest`. Fixed-size arrays from here on keep every later
/// index checked at compile time, so no input can make the parser index out of bounds.
fn take_last<'a, const N: usize>(rest: &mut &'a [u8]) -> Result<&'a [u8; N], ParseError> {
    let (head, tail) = rest.split_last_chunk::<N>().ok_or(ParseError::Truncated)?;
    *rest = head;
    Ok(tail)
}

/// Validates the IP header that ends `before_probe` and returns its destination.
fn ip_header(before_probe: &[u8], family: Family, protocol: u8, probe_len: usize) -> Result<IpAddr, ParseError> {
    let mut rest = before_probe;
    match family {
        Family::V4 => ipv4_header(take_last::<IPV4_HEADER_LEN>(&mut rest)?, protocol, probe_len).map(IpAddr::V4),
        Family::V6 => {
            let dst = take_last::<16>(&mut rest)?;
            let _src = take_last::<16>(&mut rest)?;
            let fixed = take_last::<8>(&mut rest)?;
            ipv6_fixed(fixed, protocol, probe_len)?;
            Ok(IpAddr::V6(Ipv6Addr::from(*dst)))
        }
    }
}

fn ipv4_header(h: &[u8; IPV4_HEADER_LEN], protocol: u8, probe_len: usize) -> Result<Ipv4Addr, ParseError> {
    let [ver_ihl, _tos, len0, len1, _id0, _id1, frag0, frag1, _ttl, proto, .., d0, d1, d2, d3] = *h;
    if ver_ihl != IPV4_VER_IHL {
        return Err(ParseError::Truncated);
    }
    // The kernel checksums the header before the driver sees it; a valid sum is what makes
    // 20 bytes guessed from the tail an IPv4 header rather than the end of something else.
    if !checksum::verify(h) {
        return Err(ParseError::BadChecksum);
    }
    if usize::from(u16::from_be_bytes([len0, len1])) != IPV4_HEADER_LEN + probe_len {
        return Err(ParseError::Truncated);
    }
    // A fragment's tail is not a whole probe, whatever its bytes look like.
    if u16::from_be_bytes([frag0, frag1]) & IPV4_FRAGMENTED != 0 {
        return Err(ParseError::Fragment);
    }
    if proto != protocol {
        return Err(ParseError::NotIcmp);
    }
    Ok(Ipv4Addr::new(d0, d1, d2, d3))
}

/// The first 8 bytes of the IPv6 header: version, traffic class, flow label, payload
/// length, next header, hop limit.
fn ipv6_fixed(h: &[u8; 8], next_header: u8, probe_len: usize) -> Result<(), ParseError> {
    let [ver_tc, _, _, _, len0, len1, next, _hop_limit] = *h;
    if ver_tc >> 4 != 6 {
        return Err(ParseError::Truncated);
    }
    // IPv6 has no header checksum: the exact payload length is what ties these 40 bytes
    // to the probe behind them.
    if usize::from(u16::from_be_bytes([len0, len1])) != probe_len {
        return Err(ParseError::Truncated);
    }
    if next != next_header {
        return Err(ParseError::NotIcmp);
    }
    Ok(())
}

fn parse_echo(m: &[u8], family: Family) -> Result<Looped, ParseError> {
    let Some(&[ty, code, _, _, i0, i1, s0, s1, k0, k1, k2, k3, t0, t1, t2, t3, t4, t5, t6, t7]) =
        m.first_chunk::<MIN_PROBE_LEN>()
    else {
        return Err(ParseError::Truncated);
    };
    let request = match family {
        Family::V4 => types::V4_ECHO_REQUEST,
        Family::V6 => types::V6_ECHO_REQUEST,
    };
    if ty != request || code != 0 {
        return Err(ParseError::NotIcmp);
    }
    // ICMPv4 is summed in software before the driver; ICMPv6 sums may still be pending
    // when the copy is taken, so only IPv4 can insist.
    if family == Family::V4 && !checksum::verify(m) {
        return Err(ParseError::BadChecksum);
    }
    Ok(Looped::Echo {
        ident: u16::from_be_bytes([i0, i1]),
        seq: u16::from_be_bytes([s0, s1]),
        key: u32::from_be_bytes([k0, k1, k2, k3]),
        token: u64::from_be_bytes([t0, t1, t2, t3, t4, t5, t6, t7]),
    })
}

fn parse_syn(s: &[u8; SYN_LEN]) -> Result<Looped, ParseError> {
    // No checksum check: raw IPv6 sockets fill it in (IPV6_CHECKSUM), and the ISN is a
    // secret-derived key the caller still has to find in flight.
    let seg = tcp::parse(s, None)?;
    let [_, _, _, _, _, _, _, _, _, _, _, _, data_offset, ..] = *s;
    let kind = seg.flags & (tcp::flags::SYN | tcp::flags::ACK | tcp::flags::RST | tcp::flags::FIN);
    // A shorter header would make our options payload: not a SYN we send.
    if kind != tcp::flags::SYN || data_offset >> 4 != SYN_DATA_OFFSET {
        return Err(ParseError::NotIcmp);
    }
    Ok(Looped::Syn { src_port: seg.src_port, dst_port: seg.dst_port, seq: seg.seq })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::icmp::{emit_echo_request, EchoRepr};
    use crate::wire::tcp::{emit_syn, SynRepr};

    const SRC4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const DST4: Ipv4Addr = Ipv4Addr::new(198, 19, 200, 7);
    const SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
    const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0x8000, 0, 0, 0xab, 0x9);

    // Every byte distinct, so a field read from a neighbour's offset cannot pass.
    const ECHO: EchoRepr = EchoRepr { ident: 0xa1a2, seq: 0xb1b2, key: 0xc1c2_c3c4, token: 0xd1d2_d3d4_d5d6_d7d8 };
    const SYN: SynRepr = SynRepr {
        src_port: 0xe1e2,
        dst_port: 443,
        seq: 0xf1f2_f3f4,
        window: 64240,
        mss: 1460,
        window_scale: 7,
        ts_val: 0x1122_3344,
    };
    const FAMILIES: [Family; 2] = [Family::V4, Family::V6];
    const L2_LENS: [usize; 9] = [0, 1, 3, 4, 14, 18, 20, 22, 45];

    fn dst(family: Family) -> IpAddr {
        match family {
            Family::V4 => IpAddr::V4(DST4),
            Family::V6 => IpAddr::V6(DST6),
        }
    }

    fn src(family: Family) -> IpAddr {
        match family {
            Family::V4 => IpAddr::V4(SRC4),
            Family::V6 => IpAddr::V6(SRC6),
        }
    }

    fn echo_bytes(family: Family, repr: &EchoRepr) -> Vec<u8> {
        let mut buf = [0u8; PROBE_LEN];
        emit_echo_request(family, repr, &mut buf);
        buf.to_vec()
    }

    /// As the engine writes them: IPv4 checksummed here, IPv6 left to the kernel.
    fn syn_bytes(family: Family, repr: &SynRepr) -> Vec<u8> {
        let mut buf = [0u8; SYN_LEN];
        let addrs = (family == Family::V4).then(|| (src(family), dst(family)));
        emit_syn(repr, addrs, &mut buf);
        buf.to_vec()
    }

    fn probe_bytes(family: Family, tcp: bool) -> Vec<u8> {
        if tcp {
            syn_bytes(family, &SYN)
        } else {
            echo_bytes(family, &ECHO)
        }
    }

    fn protocol(family: Family, tcp: bool) -> u8 {
        match (family, tcp) {
            (_, true) => PROTO_TCP,
            (Family::V4, false) => PROTO_ICMP,
            (Family::V6, false) => NEXT_HEADER_ICMPV6,
        }
    }

    fn ipv4_header(protocol: u8, total_len: u16, frag: u16) -> [u8; 20] {
        let mut h = [0u8; 20];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&total_len.to_be_bytes());
        h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        h[6..8].copy_from_slice(&frag.to_be_bytes());
        h[8] = 64;
        h[9] = protocol;
        h[12..16].copy_from_slice(&SRC4.octets());
        h[16..20].copy_from_slice(&DST4.octets());
        fix_ipv4_checksum(&mut h);
        h
    }

    fn fix_ipv4_checksum(h: &mut [u8]) {
        h[10..12].copy_from_slice(&[0, 0]);
        let sum = checksum::internet_checksum(&h[..20]);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
    }

    fn ipv6_header(next: u8, payload_len: u16) -> [u8; 40] {
        let mut h = [0u8; 40];
        // Traffic class and flow label set, to show they are not read.
        h[..4].copy_from_slice(&[0x6b, 0x81, 0x23, 0x45]);
        h[4..6].copy_from_slice(&payload_len.to_be_bytes());
        h[6] = next;
        h[7] = 64;
        h[8..24].copy_from_slice(&SRC6.octets());
        h[24..40].copy_from_slice(&DST6.octets());
        h
    }

    fn ip_header(family: Family, protocol: u8, payload_len: usize) -> Vec<u8> {
        match family {
            Family::V4 => ipv4_header(protocol, (20 + payload_len) as u16, 0x4000).to_vec(),
            Family::V6 => ipv6_header(protocol, payload_len as u16).to_vec(),
        }
    }

    fn packet(family: Family, tcp: bool) -> Vec<u8> {
        let probe = probe_bytes(family, tcp);
        let mut p = ip_header(family, protocol(family, tcp), probe.len());
        p.extend_from_slice(&probe);
        p
    }

    /// Realistic link headers where the length names one (Ethernet, 802.1Q, QinQ), filler
    /// otherwise.
    fn l2(len: usize, family: Family) -> Vec<u8> {
        let ethertype: [u8; 2] = match family {
            Family::V4 => [0x08, 0x00],
            Family::V6 => [0x86, 0xdd],
        };
        let macs = [0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
        let mut h = Vec::new();
        match len {
            14 => {
                h.extend_from_slice(&macs);
                h.extend_from_slice(&ethertype);
            }
            18 => {
                h.extend_from_slice(&macs);
                h.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
                h.extend_from_slice(&ethertype);
            }
            22 => {
                h.extend_from_slice(&macs);
                h.extend_from_slice(&[0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x64]);
                h.extend_from_slice(&ethertype);
            }
            _ => h.extend((0..len).map(|i| 0x45 ^ i as u8)),
        }
        assert_eq!(h.len(), len);
        h
    }

    fn frame_of(l2_len: usize, family: Family, packet: &[u8]) -> Vec<u8> {
        let mut f = l2(l2_len, family);
        f.extend_from_slice(packet);
        f
    }

    fn frame(l2_len: usize, family: Family, tcp: bool) -> Vec<u8> {
        frame_of(l2_len, family, &packet(family, tcp))
    }

    fn expected(family: Family, tcp: bool) -> LoopedProbe {
        let probe = if tcp {
            Looped::Syn { src_port: SYN.src_port, dst_port: SYN.dst_port, seq: SYN.seq }
        } else {
            Looped::Echo { ident: ECHO.ident, seq: ECHO.seq, key: ECHO.key, token: ECHO.token }
        };
        LoopedProbe { dst: dst(family), probe }
    }

    fn cases() -> impl Iterator<Item = (Family, bool)> {
        FAMILIES.into_iter().flat_map(|f| [(f, false), (f, true)])
    }

    /// xorshift64 (Marsaglia): enough to spread bytes, no dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn byte(&mut self) -> u8 {
            (self.next() >> 32) as u8
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn every_link_header_length_parses_alike() {
        for (family, tcp) in cases() {
            for len in L2_LENS {
                let f = frame(len, family, tcp);
                assert_eq!(parse_looped(&f, family, tcp), Ok(expected(family, tcp)), "{family:?} tcp={tcp} l2={len}");
            }
        }
    }

    #[test]
    fn link_header_contents_never_matter() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for (family, tcp) in cases() {
            let p = packet(family, tcp);
            for _ in 0..200 {
                let mut f: Vec<u8> = (0..rng.below(64)).map(|_| rng.byte()).collect();
                f.extend_from_slice(&p);
                assert_eq!(parse_looped(&f, family, tcp), Ok(expected(family, tcp)));
            }
        }
    }

    #[test]
    fn every_field_round_trips() {
        let echoes = [
            EchoRepr { ident: 0, seq: 0, key: 0, token: 0 },
            EchoRepr { ident: u16::MAX, seq: u16::MAX, key: u32::MAX, token: u64::MAX },
            ECHO,
        ];
        let syns = [
            SynRepr { src_port: 0, dst_port: 0, seq: 0, ..SYN },
            SynRepr { src_port: u16::MAX, dst_port: u16::MAX, seq: u32::MAX, ..SYN },
            SYN,
        ];
        for family in FAMILIES {
            for e in &echoes {
                let mut f = frame_of(14, family, &ip_header(family, protocol(family, false), PROBE_LEN));
                f.extend_from_slice(&echo_bytes(family, e));
                let want = Looped::Echo { ident: e.ident, seq: e.seq, key: e.key, token: e.token };
                assert_eq!(parse_looped(&f, family, false), Ok(LoopedProbe { dst: dst(family), probe: want }));
            }
            for s in &syns {
                let mut f = frame_of(14, family, &ip_header(family, PROTO_TCP, SYN_LEN));
                f.extend_from_slice(&syn_bytes(family, s));
                let want = Looped::Syn { src_port: s.src_port, dst_port: s.dst_port, seq: s.seq };
                assert_eq!(parse_looped(&f, family, true), Ok(LoopedProbe { dst: dst(family), probe: want }));
            }
        }
    }

    #[test]
    fn the_family_and_protocol_asked_for_must_match() {
        for (family, tcp) in cases() {
            let f = frame(14, family, tcp);
            let other = if family == Family::V4 { Family::V6 } else { Family::V4 };
            assert!(parse_looped(&f, other, tcp).is_err(), "{family:?} tcp={tcp} read as {other:?}");
            assert!(parse_looped(&f, family, !tcp).is_err(), "{family:?} tcp={tcp} read as tcp={}", !tcp);
        }
    }

    #[test]
    fn v4_header_checksum_must_hold() {
        for tcp in [false, true] {
            let mut f = frame(14, Family::V4, tcp);
            f[14 + 11] ^= 0x01;
            assert_eq!(parse_looped(&f, Family::V4, tcp), Err(ParseError::BadChecksum));
            // A changed field with the old sum: the copy is not the header we sent.
            let mut f = frame(14, Family::V4, tcp);
            f[14 + 8] -= 1;
            assert_eq!(parse_looped(&f, Family::V4, tcp), Err(ParseError::BadChecksum));
        }
    }

    #[test]
    fn v4_header_shape_is_exact() {
        for tcp in [false, true] {
            let probe_len = probe_bytes(Family::V4, tcp).len();
            let good = frame(14, Family::V4, tcp);
            let with = |at: usize, value: u8| {
                let mut f = good.clone();
                f[14 + at] = value;
                fix_ipv4_checksum(&mut f[14..]);
                parse_looped(&f, Family::V4, tcp)
            };
            let total = 20 + probe_len as u8;
            assert_eq!(with(3, total + 1), Err(ParseError::Truncated), "total length one long");
            assert_eq!(with(3, total - 1), Err(ParseError::Truncated), "total length one short");
            assert_eq!(with(2, 1), Err(ParseError::Truncated), "total length off by 256");
            assert_eq!(with(0, 0x46), Err(ParseError::Truncated), "IHL 6");
            assert_eq!(with(0, 0x65), Err(ParseError::Truncated), "version 6");
            assert_eq!(with(9, 17), Err(ParseError::NotIcmp), "UDP");
            let swapped = if tcp { PROTO_ICMP } else { PROTO_TCP };
            assert_eq!(with(9, swapped), Err(ParseError::NotIcmp), "the other probe protocol");
            assert_eq!(with(6, 0x20), Err(ParseError::Fragment), "MF, offset 0");
            assert_eq!(with(6, 0x00).map(|p| p.dst), Ok(IpAddr::V4(DST4)), "DF clear is still whole");
            let mut later = good.clone();
            later[14 + 6..14 + 8].copy_from_slice(&[0x00, 0x01]);
            fix_ipv4_checksum(&mut later[14..]);
            assert_eq!(parse_looped(&later, Family::V4, tcp), Err(ParseError::Fragment), "offset 8");
        }
    }

    #[test]
    fn v6_header_shape_is_exact() {
        for tcp in [false, true] {
            let probe_len = probe_bytes(Family::V6, tcp).len() as u8;
            let good = frame(14, Family::V6, tcp);
            let with = |at: usize, value: u8| {
                let mut f = good.clone();
                f[14 + at] = value;
                parse_looped(&f, Family::V6, tcp)
            };
            assert_eq!(with(5, probe_len + 1), Err(ParseError::Truncated), "payload length one long");
            assert_eq!(with(5, probe_len - 1), Err(ParseError::Truncated), "payload length one short");
            assert_eq!(with(4, 1), Err(ParseError::Truncated), "payload length off by 256");
            assert_eq!(with(0, 0x4b), Err(ParseError::Truncated), "version 4");
            assert_eq!(with(6, 17), Err(ParseError::NotIcmp), "UDP");
            assert_eq!(with(6, 0), Err(ParseError::NotIcmp), "hop-by-hop options: not what we send");
            assert_eq!(with(6, 44), Err(ParseError::NotIcmp), "fragment header");
            let swapped = if tcp { NEXT_HEADER_ICMPV6 } else { PROTO_TCP };
            assert_eq!(with(6, swapped), Err(ParseError::NotIcmp), "the other probe protocol");
        }
    }

    #[test]
    fn only_echo_requests_of_the_family_are_probes() {
        for family in FAMILIES {
            let good = frame(14, family, false);
            let icmp = good.len() - PROBE_LEN;
            let with = |at: usize, value: u8| {
                let mut f = good.clone();
                f[icmp + at] = value;
                if family == Family::V4 {
                    f[icmp + 2..icmp + 4].copy_from_slice(&[0, 0]);
                    let sum = checksum::internet_checksum(&f[icmp..]);
                    f[icmp + 2..icmp + 4].copy_from_slice(&sum.to_be_bytes());
                }
                parse_looped(&f, family, false)
            };
            let (reply, foreign_request) = match family {
                Family::V4 => (types::V4_ECHO_REPLY, types::V6_ECHO_REQUEST),
                Family::V6 => (types::V6_ECHO_REPLY, types::V4_ECHO_REQUEST),
            };
            assert_eq!(with(0, reply), Err(ParseError::NotIcmp), "echo reply");
            assert_eq!(with(0, foreign_request), Err(ParseError::NotIcmp), "the other family's request");
            assert_eq!(with(1, 1), Err(ParseError::NotIcmp), "code 1");
            assert_eq!(with(25, 0).map(|p| p.probe), Ok(expected(family, false).probe), "fill is not checked");
        }
    }

    #[test]
    fn icmp_checksum_is_required_on_v4_only() {
        let mut v4 = frame(14, Family::V4, false);
        let at = v4.len() - PROBE_LEN + 3;
        v4[at] ^= 0x80;
        assert_eq!(parse_looped(&v4, Family::V4, false), Err(ParseError::BadChecksum));

        // Left zero by the emitter, or filled by the kernel: either way the same probe.
        let mut v6 = frame(14, Family::V6, false);
        let at = v6.len() - PROBE_LEN + 2;
        assert_eq!(&v6[at..at + 2], &[0, 0]);
        assert_eq!(parse_looped(&v6, Family::V6, false), Ok(expected(Family::V6, false)));
        v6[at..at + 2].copy_from_slice(&[0x5a, 0xa5]);
        assert_eq!(parse_looped(&v6, Family::V6, false), Ok(expected(Family::V6, false)));
    }

    #[test]
    fn only_bare_syns_are_probes() {
        for family in FAMILIES {
            let good = frame(14, family, true);
            let seg = good.len() - SYN_LEN;
            let with = |at: usize, value: u8| {
                let mut f = good.clone();
                f[seg + at] = value;
                parse_looped(&f, family, true)
            };
            use tcp::flags::{ACK, FIN, RST, SYN as SYN_FLAG};
            assert_eq!(with(13, SYN_FLAG | ACK), Err(ParseError::NotIcmp), "SYN-ACK");
            assert_eq!(with(13, RST | ACK), Err(ParseError::NotIcmp), "RST");
            assert_eq!(with(13, SYN_FLAG | RST), Err(ParseError::NotIcmp), "SYN with RST");
            assert_eq!(with(13, SYN_FLAG | FIN), Err(ParseError::NotIcmp), "SYN with FIN");
            assert_eq!(with(13, ACK), Err(ParseError::NotIcmp), "bare ACK");
            assert_eq!(with(12, 0x50), Err(ParseError::NotIcmp), "20-byte header: options would be payload");
            assert_eq!(with(12, 0xb0), Err(ParseError::Truncated), "header longer than the segment");
            // ECN negotiation bits belong to a SYN the kernel could send: still ours.
            assert_eq!(with(13, SYN_FLAG | 0xc0).map(|p| p.probe), Ok(expected(family, true).probe));
        }
    }

    #[test]
    fn a_frame_one_byte_short_is_refused() {
        for (family, tcp) in cases() {
            let f = frame(0, family, tcp);
            assert_eq!(parse_looped(&f[1..], family, tcp), Err(ParseError::Truncated), "{family:?} tcp={tcp}");
            // Losing the last byte instead shifts every field by one.
            let f = frame(14, family, tcp);
            assert!(parse_looped(&f[..f.len() - 1], family, tcp).is_err(), "{family:?} tcp={tcp}");
        }
    }

    #[test]
    fn no_prefix_of_a_frame_parses() {
        for (family, tcp) in cases() {
            for len in L2_LENS {
                let f = frame(len, family, tcp);
                for end in 0..f.len() {
                    assert!(parse_looped(&f[..end], family, tcp).is_err(), "{family:?} tcp={tcp} l2={len} ..{end}");
                }
            }
        }
    }

    #[test]
    fn suffixes_parse_until_the_ip_header_is_cut() {
        for (family, tcp) in cases() {
            let f = frame(22, family, tcp);
            let packet_len = packet(family, tcp).len();
            for start in 0..=f.len() {
                let got = parse_looped(&f[start..], family, tcp);
                if f.len() - start >= packet_len {
                    assert_eq!(got, Ok(expected(family, tcp)));
                } else {
                    assert_eq!(got, Err(ParseError::Truncated), "{family:?} tcp={tcp} {start}..");
                }
            }
        }
    }

    #[test]
    fn any_bit_flip_in_a_v4_echo_packet_is_caught() {
        // Header and ICMP checksums together cover every bit after the link header, and a
        // one's-complement sum catches any single flipped bit.
        let f = frame(14, Family::V4, false);
        for byte in 14..f.len() {
            for bit in 0..8 {
                let mut g = f.clone();
                g[byte] ^= 1 << bit;
                assert!(parse_looped(&g, Family::V4, false).is_err(), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn random_bytes_never_panic_and_never_parse() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        for _ in 0..5000 {
            let len = rng.below(200);
            let bytes: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            for (family, tcp) in cases() {
                assert!(parse_looped(&bytes, family, tcp).is_err(), "{bytes:02x?}");
            }
        }
    }

    /// The probe fields read at their offsets from the end, with none of the parser's checks.
    fn naive(f: &[u8], family: Family, tcp: bool) -> LoopedProbe {
        let probe_len = if tcp { SYN_LEN } else { PROBE_LEN };
        let (ip, probe) = f.split_at(f.len() - probe_len);
        let dst = match family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&ip[ip.len() - 4..]).unwrap())),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&ip[ip.len() - 16..]).unwrap())),
        };
        let be = |r: std::ops::Range<usize>| probe[r].iter().fold(0u64, |a, &b| a << 8 | u64::from(b));
        let probe = if tcp {
            Looped::Syn { src_port: be(0..2) as u16, dst_port: be(2..4) as u16, seq: be(4..8) as u32 }
        } else {
            Looped::Echo { ident: be(4..6) as u16, seq: be(6..8) as u16, key: be(8..12) as u32, token: be(12..20) }
        };
        LoopedProbe { dst, probe }
    }

    #[test]
    fn random_corruption_never_panics_and_never_invents_a_probe() {
        // Whatever survives corruption must be what its bytes say, in the shape we send.
        let mut rng = XorShift(0x0123_4567_89ab_cdef);
        for (family, tcp) in cases() {
            let good = frame(18, family, tcp);
            let probe_start = good.len() - probe_bytes(family, tcp).len();
            let mut parsed = 0;
            for _ in 0..3000 {
                let mut f = good.clone();
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(f.len());
                    f[at] = rng.byte();
                }
                let Ok(p) = parse_looped(&f, family, tcp) else { continue };
                parsed += 1;
                assert_eq!(p, naive(&f, family, tcp));
                let ip = &f[18..probe_start];
                match family {
                    Family::V4 => {
                        assert!(checksum::verify(ip));
                        assert_eq!(ip[..4], [0x45, 0, 0, 20 + (f.len() - probe_start) as u8]);
                        assert_eq!((ip[6] & 0x3f, ip[7], ip[9]), (0, 0, protocol(family, tcp)));
                    }
                    Family::V6 => {
                        assert_eq!((ip[0] >> 4, ip[4], ip[5]), (6, 0, (f.len() - probe_start) as u8));
                        assert_eq!(ip[6], protocol(family, tcp));
                    }
                }
                let probe = &f[probe_start..];
                if tcp {
                    assert_eq!((probe[12] >> 4, probe[13] & 0x17), (10, tcp::flags::SYN));
                } else {
                    let request = if family == Family::V4 { 8 } else { 128 };
                    assert_eq!(probe[..2], [request, 0]);
                }
            }
            // Some corruption lands in the link header or the fill: the test must see both sides.
            assert!(parsed > 0 && parsed < 3000, "{family:?} tcp={tcp}: {parsed}");
        }
    }

    #[test]
    fn a_sized_echo_is_read_at_its_own_length() {
        // A 1,000-byte probe behind an Ethernet header and its IPv4 header.
        let mut echo = vec![0u8; 8 + 1000];
        let repr = EchoRepr { ident: 7, seq: 9, key: 0x0102_0304, token: 42 };
        emit_echo_request(Family::V4, &repr, &mut echo);
        let mut frame = vec![0u8; 14];
        let total = (20 + echo.len()) as u16;
        let mut ip = [0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, PROTO_ICMP, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        let sum = checksum::internet_checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&echo);
        let want = LoopedProbe {
            dst: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
            probe: Looped::Echo { ident: 7, seq: 9, key: 0x0102_0304, token: 42 },
        };
        assert_eq!(parse_looped_sized(&frame, Family::V4, false, 1008), Ok(want));
        assert!(parse_looped(&frame, Family::V4, false).is_err(), "not at the default length");
        assert!(parse_looped_sized(&frame, Family::V4, false, 1007).is_err(), "a wrong length finds no header");
        for len in [0, 19, 20, frame.len(), frame.len() + 1] {
            let _ = parse_looped_sized(&frame, Family::V4, false, len);
        }
    }
}
