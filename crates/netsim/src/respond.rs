//! What a simulated host answers: echo replies, ICMP errors quoting the request, SYN-ACKs and
//! RSTs. Pure functions over the IP packets a TUN device carries (no link header).
use netprobe::checksum::{internet_checksum, transport_checksum};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_ICMPV6: u8 = 58;
/// How much of a request an ICMPv4 error quotes (RFC 1812: as much as fits in 576 bytes).
const V4_QUOTE: usize = 576 - 20 - 8;
const V6_QUOTE: usize = 1280 - 40 - 8;

/// A request a simulated host may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Echo {
        src: IpAddr,
        dst: IpAddr,
    },
    Syn {
        src: IpAddr,
        dst: IpAddr,
        src_port: u16,
        dst_port: u16,
        seq: u32,
    },
    /// Anything else well formed (our kernel's RSTs, neighbour discovery, ...).
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// The IP header length, protocol, source and destination of a packet.
struct Ip {
    header_len: usize,
    protocol: u8,
    src: IpAddr,
    dst: IpAddr,
}

fn ip(packet: &[u8]) -> Result<Ip, Malformed> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let header_len = usize::from(packet[0] & 0x0f) * 4;
            if header_len < 20 || packet.len() < header_len {
                return Err(Malformed);
            }
            let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
            if total < header_len || total > packet.len() || !header_ok(packet, header_len) {
                return Err(Malformed);
            }
            let a = |o: usize| IpAddr::V4(Ipv4Addr::new(packet[o], packet[o + 1], packet[o + 2], packet[o + 3]));
            Ok(Ip { header_len, protocol: packet[9], src: a(12), dst: a(16) })
        }
        Some(6) => {
            if packet.len() < 40 {
                return Err(Malformed);
            }
            let a = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&packet[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            Ok(Ip { header_len: 40, protocol: packet[6], src: a(8), dst: a(24) })
        }
        _ => Err(Malformed),
    }
}

/// An IPv4 header is right when it sums to all ones.
fn header_ok(packet: &[u8], header_len: usize) -> bool {
    netprobe::checksum::verify(&packet[..header_len])
}

/// Classifies a packet the exporter sent. Bad checksums and truncations are `Malformed`.
pub fn classify(packet: &[u8]) -> Result<Request, Malformed> {
    let h = ip(packet)?;
    let payload = &packet[h.header_len..];
    match (h.protocol, h.src.is_ipv4()) {
        (PROTO_ICMP, true) | (PROTO_ICMPV6, false) => {
            if payload.len() < 8 {
                return Err(Malformed);
            }
            let ok = if h.src.is_ipv4() {
                netprobe::checksum::verify(payload)
            } else {
                netprobe::checksum::verify_transport(h.src, h.dst, PROTO_ICMPV6, payload)
            };
            if !ok {
                return Err(Malformed);
            }
            let echo_request = if h.src.is_ipv4() { 8 } else { 128 };
            Ok(if payload[0] == echo_request { Request::Echo { src: h.src, dst: h.dst } } else { Request::Other })
        }
        (PROTO_TCP, _) => {
            if payload.len() < 20 {
                return Err(Malformed);
            }
            // No checksum check: the prober's own stack may hand over a partial (offloaded) one.
            let flags = payload[13];
            if flags & 0x17 != 0x02 {
                return Ok(Request::Other); // only a bare SYN (no ACK, RST, FIN) starts a probe
            }
            Ok(Request::Syn {
                src: h.src,
                dst: h.dst,
                src_port: u16::from_be_bytes([payload[0], payload[1]]),
                dst_port: u16::from_be_bytes([payload[2], payload[3]]),
                seq: u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]),
            })
        }
        _ => Ok(Request::Other),
    }
}

fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload_len: usize) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((20 + payload_len) as u16).to_be_bytes());
    h[6] = 0x40;
    h[8] = 64;
    h[9] = protocol;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let sum = internet_checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h
}

fn ipv6_header(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload_len: usize) -> [u8; 40] {
    let mut h = [0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    h[6] = next;
    h[7] = 64;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h
}

/// Wraps `payload` (checksum field at `sum_at` zeroed) in an IP header from `src` to `dst`,
/// filling in the checksum (ICMPv4: plain; ICMPv6 and TCP: with the pseudo-header).
fn packet(src: IpAddr, dst: IpAddr, protocol: u8, mut payload: Vec<u8>, sum_at: usize) -> Vec<u8> {
    let sum = match protocol {
        PROTO_ICMP => internet_checksum(&payload),
        _ => transport_checksum(src, dst, protocol, &payload),
    };
    payload[sum_at..sum_at + 2].copy_from_slice(&sum.to_be_bytes());
    let mut out = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4_header(s, d, protocol, payload.len()).to_vec(),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6_header(s, d, protocol, payload.len()).to_vec(),
        _ => Vec::new(),
    };
    out.extend_from_slice(&payload);
    out
}

/// The echo reply to an echo request: same identifier, sequence and payload.
pub fn echo_reply(request: &[u8]) -> Result<Vec<u8>, Malformed> {
    if !matches!(classify(request)?, Request::Echo { .. }) {
        return Err(Malformed);
    }
    let h = ip(request)?;
    let mut icmp = request[h.header_len..].to_vec();
    icmp[0] = if h.src.is_ipv4() { 0 } else { 129 };
    icmp[2..4].copy_from_slice(&[0, 0]);
    let protocol = if h.src.is_ipv4() { PROTO_ICMP } else { PROTO_ICMPV6 };
    Ok(packet(h.dst, h.src, protocol, icmp, 2))
}

/// An ICMP error from the probed host quoting the request: destination unreachable (host)
/// or time exceeded.
pub fn icmp_error(request: &[u8], time_exceeded: bool) -> Result<Vec<u8>, Malformed> {
    let h = ip(request)?;
    let (kind, code, quote, protocol) = match (h.src.is_ipv4(), time_exceeded) {
        (true, false) => (3, 1, V4_QUOTE, PROTO_ICMP),
        (true, true) => (11, 0, V4_QUOTE, PROTO_ICMP),
        (false, false) => (1, 3, V6_QUOTE, PROTO_ICMPV6),
        (false, true) => (3, 0, V6_QUOTE, PROTO_ICMPV6),
    };
    let mut icmp = vec![kind, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&request[..request.len().min(quote)]);
    Ok(packet(h.dst, h.src, protocol, icmp, 2))
}

/// The answer to a SYN: a SYN-ACK with an MSS option (port open) or a RST (port closed).
pub fn syn_answer(request: &[u8], open: bool, our_seq: u32) -> Result<Vec<u8>, Malformed> {
    let h = ip(request)?;
    let Request::Syn { src_port, dst_port, seq, .. } = classify(request)? else { return Err(Malformed) };
    let ack = seq.wrapping_add(1);
    let mut tcp = Vec::with_capacity(24);
    tcp.extend_from_slice(&dst_port.to_be_bytes());
    tcp.extend_from_slice(&src_port.to_be_bytes());
    tcp.extend_from_slice(&(if open { our_seq } else { 0 }).to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    if open {
        tcp.extend_from_slice(&[0x60, 0x12, 0xfa, 0xf0, 0, 0, 0, 0, 2, 4, 0x05, 0xb4]);
    // SYN|ACK, MSS 1460
    } else {
        tcp.extend_from_slice(&[0x50, 0x14, 0, 0, 0, 0, 0, 0]); // RST|ACK
    }
    Ok(packet(h.dst, h.src, PROTO_TCP, tcp, 16))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netprobe::wire::icmp::{self as wire_icmp, EchoRepr, Family, Message, Quoted, PROBE_LEN};
    use netprobe::wire::tcp::{self as wire_tcp, SynRepr, SYN_LEN};

    const PROBER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const HOST4: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 5);
    const REPR: EchoRepr = EchoRepr { ident: 9, seq: 3, key: 77, token: 1234 };

    fn echo_request_v4() -> Vec<u8> {
        let mut icmp = [0u8; PROBE_LEN];
        wire_icmp::emit_echo_request(Family::V4, &REPR, &mut icmp);
        let mut p = ipv4_header(PROBER4, HOST4, PROTO_ICMP, PROBE_LEN).to_vec();
        p.extend_from_slice(&icmp);
        p
    }

    fn echo_request_v6() -> Vec<u8> {
        let (src, dst): (Ipv6Addr, Ipv6Addr) = ("2001:2::1".parse().unwrap(), "2001:2:0:c000::5".parse().unwrap());
        let mut icmp = [0u8; PROBE_LEN];
        wire_icmp::emit_echo_request(Family::V6, &REPR, &mut icmp);
        let sum = transport_checksum(IpAddr::V6(src), IpAddr::V6(dst), PROTO_ICMPV6, &icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut p = ipv6_header(src, dst, PROTO_ICMPV6, PROBE_LEN).to_vec();
        p.extend_from_slice(&icmp);
        p
    }

    #[test]
    fn echo_v4_roundtrip_through_the_exporters_parser() {
        let req = echo_request_v4();
        assert_eq!(classify(&req), Ok(Request::Echo { src: IpAddr::V4(PROBER4), dst: IpAddr::V4(HOST4) }));
        let reply = echo_reply(&req).unwrap();
        assert_eq!(wire_icmp::parse_v4(&reply), Ok((HOST4, Message::EchoReply(REPR))));
    }

    #[test]
    fn echo_v6_reply_checksums_under_the_pseudo_header() {
        let req = echo_request_v6();
        assert!(matches!(classify(&req), Ok(Request::Echo { .. })));
        let reply = echo_reply(&req).unwrap();
        let (src, dst): (IpAddr, IpAddr) = ("2001:2:0:c000::5".parse().unwrap(), "2001:2::1".parse().unwrap());
        assert!(netprobe::checksum::verify_transport(src, dst, PROTO_ICMPV6, &reply[40..]));
        assert_eq!(wire_icmp::parse_v6(&reply[40..]), Ok(Message::EchoReply(REPR)));
    }

    #[test]
    fn errors_quote_the_request() {
        let err = icmp_error(&echo_request_v4(), false).unwrap();
        match wire_icmp::parse_v4(&err).unwrap().1 {
            Message::Error(e) => {
                assert_eq!((e.icmp_type, e.code), (3, 1));
                assert_eq!(e.quoted, Quoted::Echo { ident: 9, seq: 3, key_token: Some((77, 1234)) });
            }
            other => panic!("{other:?}"),
        }
        let err6 = icmp_error(&echo_request_v6(), true).unwrap();
        assert!(matches!(wire_icmp::parse_v6(&err6[40..]), Ok(Message::Error(e)) if e.icmp_type == 3));
    }

    #[test]
    fn syn_gets_synack_or_rst() {
        let mut seg = [0u8; SYN_LEN];
        let syn =
            SynRepr { src_port: 61000, dst_port: 443, seq: 41, window: 64240, mss: 1460, window_scale: 7, ts_val: 0 };
        wire_tcp::emit_syn(&syn, Some((IpAddr::V4(PROBER4), IpAddr::V4(HOST4))), &mut seg);
        let mut req = ipv4_header(PROBER4, HOST4, PROTO_TCP, SYN_LEN).to_vec();
        req.extend_from_slice(&seg);
        assert_eq!(
            classify(&req),
            Ok(Request::Syn {
                src: IpAddr::V4(PROBER4),
                dst: IpAddr::V4(HOST4),
                src_port: 61000,
                dst_port: 443,
                seq: 41
            })
        );
        let open = syn_answer(&req, true, 999).unwrap();
        let a = wire_tcp::parse(&open[20..], Some((IpAddr::V4(HOST4), IpAddr::V4(PROBER4)))).unwrap();
        assert!(a.is_syn_ack() && a.ack == 42 && a.seq == 999 && a.dst_port == 61000 && a.src_port == 443);
        let closed = syn_answer(&req, false, 0).unwrap();
        let r = wire_tcp::parse(&closed[20..], Some((IpAddr::V4(HOST4), IpAddr::V4(PROBER4)))).unwrap();
        assert!(r.is_rst() && r.ack == 42);
    }

    #[test]
    fn bad_packets_are_malformed_never_a_panic() {
        let mut req = echo_request_v4();
        req[30] ^= 0xff; // ICMP checksum now wrong
        assert_eq!(classify(&req), Err(Malformed));
        let good = echo_request_v4();
        for len in 0..good.len() {
            let _ = classify(&good[..len]);
            let _ = echo_reply(&good[..len]);
        }
        assert_eq!(classify(&[0x45]), Err(Malformed));
        assert_eq!(classify(&[]), Err(Malformed));
        assert_eq!(classify(&[0x70; 40]), Err(Malformed));
    }
}
