//! ICMP and ICMPv6 echo probes, echo replies, and the error messages that quote a probe.
//!
//! Every probe carries, after the 8-byte echo header, a payload of `PAYLOAD_LEN` bytes:
//! the engine's in-flight key (u32) and a random token (u64), then a fixed fill. A reply
//! matches a probe only when identifier, sequence, key and token all agree.
use super::ipv4::{self, Ipv4Header};
use super::{tcp, ParseError};
use crate::checksum;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const HEADER_LEN: usize = 8;
pub const PAYLOAD_LEN: usize = 56;
pub const PROBE_LEN: usize = HEADER_LEN + PAYLOAD_LEN;
/// The shortest probe: header, key and token.
pub const MIN_PROBE_LEN: usize = 20;
const FILL: &[u8] = b"icmp-exporter ";

pub mod types {
    pub const V4_ECHO_REPLY: u8 = 0;
    pub const V4_DEST_UNREACHABLE: u8 = 3;
    pub const V4_ECHO_REQUEST: u8 = 8;
    pub const V4_TIME_EXCEEDED: u8 = 11;
    pub const V4_PARAMETER_PROBLEM: u8 = 12;
    pub const V6_DEST_UNREACHABLE: u8 = 1;
    pub const V6_PACKET_TOO_BIG: u8 = 2;
    pub const V6_TIME_EXCEEDED: u8 = 3;
    pub const V6_PARAMETER_PROBLEM: u8 = 4;
    pub const V6_ECHO_REQUEST: u8 = 128;
    pub const V6_ECHO_REPLY: u8 = 129;
}

mod field {
    use std::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const SEQ: Range<usize> = 6..8;
    pub const KEY: Range<usize> = 8..12;
    pub const TOKEN: Range<usize> = 12..20;
    pub const FILL_START: usize = 20;
}

const IPV6_HEADER_LEN: usize = 40;
const IPV6_NEXT_HEADER: usize = 6;
const IPV6_DST: std::ops::Range<usize> = 24..40;
const NEXT_HEADER_ICMPV6: u8 = 58;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// What identifies one probe on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoRepr {
    pub ident: u16,
    pub seq: u16,
    pub key: u32,
    pub token: u64,
}

/// The probe an ICMP error quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoted {
    Echo {
        ident: u16,
        seq: u16,
        /// Key and token, when the quote is long enough to hold them (routers may quote only 8 bytes).
        key_token: Option<(u32, u64)>,
    },
    Tcp {
        src_port: u16,
        dst_port: u16,
        seq: u32,
    },
}

/// An ICMP error that quotes an echo request or a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotedError {
    pub icmp_type: u8,
    pub code: u8,
    /// The destination of the quoted probe.
    pub original_dst: IpAddr,
    pub quoted: Quoted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    EchoReply(EchoRepr),
    Error(QuotedError),
    /// Anything else that got through the socket filters.
    Other,
}

/// Writes an echo request of `buf.len()` bytes (at least `MIN_PROBE_LEN`: the header, key
/// and token; the rest is fill). For ICMPv6 the checksum is left zero: the kernel fills it in
/// on raw ICMPv6 sockets (RFC 3542).
pub fn emit_echo_request(family: Family, repr: &EchoRepr, buf: &mut [u8]) {
    if buf.len() < MIN_PROBE_LEN {
        return;
    }
    buf[field::TYPE] = match family {
        Family::V4 => types::V4_ECHO_REQUEST,
        Family::V6 => types::V6_ECHO_REQUEST,
    };
    buf[field::CODE] = 0;
    buf[field::CHECKSUM].copy_from_slice(&[0, 0]);
    buf[field::IDENT].copy_from_slice(&repr.ident.to_be_bytes());
    buf[field::SEQ].copy_from_slice(&repr.seq.to_be_bytes());
    buf[field::KEY].copy_from_slice(&repr.key.to_be_bytes());
    buf[field::TOKEN].copy_from_slice(&repr.token.to_be_bytes());
    for (i, b) in buf[field::FILL_START..].iter_mut().enumerate() {
        *b = FILL[i % FILL.len()];
    }
    if family == Family::V4 {
        let sum = checksum::internet_checksum(&buf[..]);
        buf[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    }
}

fn be16(b: &[u8], r: std::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([b[r.start], b[r.start + 1]])
}

/// Ident, seq and (when the message is long enough) key and token of an echo message.
type EchoFields = (u16, u16, Option<(u32, u64)>);

fn echo_fields(icmp: &[u8]) -> Result<EchoFields, ParseError> {
    if icmp.len() < HEADER_LEN {
        return Err(ParseError::Truncated);
    }
    let key_token = if icmp.len() >= field::TOKEN.end {
        let mut key = [0u8; 4];
        key.copy_from_slice(&icmp[field::KEY]);
        let mut token = [0u8; 8];
        token.copy_from_slice(&icmp[field::TOKEN]);
        Some((u32::from_be_bytes(key), u64::from_be_bytes(token)))
    } else {
        None
    };
    Ok((be16(icmp, field::IDENT), be16(icmp, field::SEQ), key_token))
}

fn echo_reply(icmp: &[u8]) -> Result<Message, ParseError> {
    match echo_fields(icmp)? {
        (ident, seq, Some((key, token))) => Ok(Message::EchoReply(EchoRepr { ident, seq, key, token })),
        // A reply with our identifier (the socket filter passed it) too short to carry our
        // payload cannot answer a probe: cut on the way, or forged. Counted as malformed.
        (_, _, None) => Err(ParseError::Truncated),
    }
}

/// Parses what a raw IPv4 ICMP socket delivers: the IPv4 header, then the ICMP message.
/// Returns the sender and the message.
pub fn parse_v4(packet: &[u8]) -> Result<(Ipv4Addr, Message), ParseError> {
    let ip = Ipv4Header::new_checked(packet)?;
    if ip.protocol() != ipv4::PROTO_ICMP {
        return Err(ParseError::NotIcmp);
    }
    if ip.is_later_fragment() {
        return Err(ParseError::Fragment);
    }
    Ok((ip.src(), parse_v4_message(ip.payload())?))
}

/// Parses an ICMPv4 message without its IP header, as an unprivileged ICMP ("ping") socket
/// delivers it.
pub fn parse_v4_message(icmp: &[u8]) -> Result<Message, ParseError> {
    if icmp.len() < HEADER_LEN {
        return Err(ParseError::Truncated);
    }
    if !checksum::verify(icmp) {
        return Err(ParseError::BadChecksum);
    }
    Ok(match icmp[field::TYPE] {
        types::V4_ECHO_REPLY => echo_reply(icmp)?,
        t @ (types::V4_DEST_UNREACHABLE | types::V4_TIME_EXCEEDED | types::V4_PARAMETER_PROBLEM) => {
            quoted_v4(t, icmp[field::CODE], &icmp[HEADER_LEN..])?
        }
        _ => Message::Other,
    })
}

/// The quoted probe: an echo request of `echo_type`, or a TCP segment.
fn quoted_probe(protocol: u8, echo_type: u8, transport: &[u8]) -> Result<Option<Quoted>, ParseError> {
    match protocol {
        ipv4::PROTO_ICMP | NEXT_HEADER_ICMPV6 if transport.first() == Some(&echo_type) => {
            let (ident, seq, key_token) = echo_fields(transport)?;
            Ok(Some(Quoted::Echo { ident, seq, key_token }))
        }
        tcp::PROTO_TCP => {
            let (src_port, dst_port, seq) = tcp::parse_quoted(transport)?;
            Ok(Some(Quoted::Tcp { src_port, dst_port, seq }))
        }
        _ => Ok(None),
    }
}

fn quoted_v4(icmp_type: u8, code: u8, quote: &[u8]) -> Result<Message, ParseError> {
    let inner = Ipv4Header::new_checked(quote)?;
    let Some(quoted) = quoted_probe(inner.protocol(), types::V4_ECHO_REQUEST, inner.payload())? else {
        return Ok(Message::Other);
    };
    Ok(Message::Error(QuotedError { icmp_type, code, original_dst: IpAddr::V4(inner.dst()), quoted }))
}

/// Parses what a raw ICMPv6 socket delivers: the ICMPv6 message alone (the kernel has
/// already verified its checksum; the sender comes from the socket address).
pub fn parse_v6(icmp: &[u8]) -> Result<Message, ParseError> {
    if icmp.len() < HEADER_LEN {
        return Err(ParseError::Truncated);
    }
    match icmp[field::TYPE] {
        types::V6_ECHO_REPLY => echo_reply(icmp),
        t @ (types::V6_DEST_UNREACHABLE
        | types::V6_PACKET_TOO_BIG
        | types::V6_TIME_EXCEEDED
        | types::V6_PARAMETER_PROBLEM) => quoted_v6(t, icmp[field::CODE], &icmp[HEADER_LEN..]),
        _ => Ok(Message::Other),
    }
}

fn quoted_v6(icmp_type: u8, code: u8, quote: &[u8]) -> Result<Message, ParseError> {
    if quote.len() < IPV6_HEADER_LEN {
        return Err(ParseError::Truncated);
    }
    // Probes carry no extension headers, so the quoted probe follows the fixed header.
    let Some(quoted) = quoted_probe(quote[IPV6_NEXT_HEADER], types::V6_ECHO_REQUEST, &quote[IPV6_HEADER_LEN..])? else {
        return Ok(Message::Other);
    };
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&quote[IPV6_DST]);
    Ok(Message::Error(QuotedError { icmp_type, code, original_dst: IpAddr::V6(Ipv6Addr::from(dst)), quoted }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPR: EchoRepr = EchoRepr { ident: 0x1234, seq: 7, key: 0x0010_0003, token: 0x0102_0304_0506_0708 };

    fn request(family: Family) -> [u8; PROBE_LEN] {
        let mut buf = [0u8; PROBE_LEN];
        emit_echo_request(family, &REPR, &mut buf);
        buf
    }

    #[test]
    fn v4_request_bytes() {
        let buf = request(Family::V4);
        assert_eq!(
            &buf[..20],
            &[8, 0, 0xf4, 0x54, 0x12, 0x34, 0x00, 0x07, 0x00, 0x10, 0x00, 0x03, 1, 2, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(&buf[20..34], b"icmp-exporter ");
        assert!(checksum::verify(&buf));
    }

    #[test]
    fn v6_request_leaves_checksum_to_kernel() {
        let buf = request(Family::V6);
        assert_eq!(&buf[..4], &[128, 0, 0, 0]);
        assert_eq!(&buf[4..8], &[0x12, 0x34, 0x00, 0x07]);
    }

    /// The reply a peer sends: same bytes, type 0, checksum fixed up.
    fn v4_reply_packet() -> Vec<u8> {
        let mut icmp = request(Family::V4).to_vec();
        icmp[0] = 0;
        icmp[2] = 0;
        icmp[3] = 0;
        let sum = checksum::internet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut packet = vec![0x45, 0, 0, 84, 0, 0, 0, 0, 64, 1, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1];
        packet.extend_from_slice(&icmp);
        packet
    }

    #[test]
    fn v4_reply_roundtrip() {
        let (src, msg) = parse_v4(&v4_reply_packet()).unwrap();
        assert_eq!(src, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(msg, Message::EchoReply(REPR));
    }

    #[test]
    fn v4_message_without_ip_header() {
        let packet = v4_reply_packet();
        assert_eq!(parse_v4_message(&packet[20..]).unwrap(), Message::EchoReply(REPR));
        assert_eq!(parse_v4_message(&packet[20..27]).unwrap_err(), ParseError::Truncated);
    }

    #[test]
    fn v4_reply_with_bad_checksum_is_rejected() {
        let mut p = v4_reply_packet();
        p[40] ^= 0xff;
        assert_eq!(parse_v4(&p).unwrap_err(), ParseError::BadChecksum);
    }

    #[test]
    fn v4_truncated_inputs_never_panic() {
        let p = v4_reply_packet();
        for len in 0..p.len() {
            let _ = parse_v4(&p[..len]);
        }
        assert_eq!(parse_v4(&p[..27]).unwrap_err(), ParseError::Truncated);
    }

    #[test]
    fn v4_short_reply_is_malformed() {
        // A reply with only 8 payload bytes cannot carry key and token.
        let mut icmp = vec![0u8, 0, 0, 0, 0x12, 0x34, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8];
        let sum = checksum::internet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut packet = vec![0x45, 0, 0, 36, 0, 0, 0, 0, 64, 1, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1];
        packet.extend_from_slice(&icmp);
        assert_eq!(parse_v4(&packet).unwrap_err(), ParseError::Truncated);
    }

    #[test]
    fn v4_destination_unreachable_quotes_the_probe() {
        // Host unreachable from a router 198.18.0.254 quoting our request to 198.18.200.1.
        let probe = request(Family::V4);
        let mut quote = vec![0x45, 0, 0, 84, 0, 0, 0x40, 0, 63, 1, 0, 0, 198, 18, 0, 1, 198, 18, 200, 1];
        quote.extend_from_slice(&probe);
        let mut icmp = vec![3, 1, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&quote);
        let sum = checksum::internet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 198, 18, 0, 254, 198, 18, 0, 1];
        packet.extend_from_slice(&icmp);
        let (src, msg) = parse_v4(&packet).unwrap();
        assert_eq!(src, Ipv4Addr::new(198, 18, 0, 254));
        assert_eq!(
            msg,
            Message::Error(QuotedError {
                icmp_type: 3,
                code: 1,
                original_dst: IpAddr::V4(Ipv4Addr::new(198, 18, 200, 1)),
                quoted: Quoted::Echo { ident: REPR.ident, seq: REPR.seq, key_token: Some((REPR.key, REPR.token)) },
            })
        );
    }

    #[test]
    fn v4_error_with_minimal_quote_has_no_key() {
        let probe = request(Family::V4);
        let mut icmp = vec![11, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&[0x45, 0, 0, 84, 0, 0, 0x40, 0, 1, 1, 0, 0, 198, 18, 0, 1, 198, 18, 200, 1]);
        icmp.extend_from_slice(&probe[..8]);
        let sum = checksum::internet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 198, 18, 0, 254, 198, 18, 0, 1];
        packet.extend_from_slice(&icmp);
        match parse_v4(&packet).unwrap().1 {
            Message::Error(e) => {
                assert_eq!(e.icmp_type, 11);
                assert_eq!(e.quoted, Quoted::Echo { ident: REPR.ident, seq: 7, key_token: None });
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn v6_reply_and_error() {
        let mut reply = request(Family::V6);
        reply[0] = 129;
        assert_eq!(parse_v6(&reply).unwrap(), Message::EchoReply(REPR));

        let mut ip6 = vec![0x60, 0, 0, 0, 0, 64, 58, 64];
        ip6.extend_from_slice(&[0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        ip6.extend_from_slice(&[0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99]);
        let mut icmp = vec![1, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&ip6);
        icmp.extend_from_slice(&request(Family::V6));
        match parse_v6(&icmp).unwrap() {
            Message::Error(e) => {
                assert_eq!(e.icmp_type, 1);
                assert_eq!(e.code, 3);
                assert_eq!(e.original_dst, "2001:2::99".parse::<IpAddr>().unwrap());
                assert_eq!(
                    e.quoted,
                    Quoted::Echo { ident: REPR.ident, seq: REPR.seq, key_token: Some((REPR.key, REPR.token)) }
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        for len in 0..icmp.len() {
            let _ = parse_v6(&icmp[..len]);
        }
    }

    #[test]
    fn errors_quoting_syns() {
        let mut syn = [0u8; tcp::SYN_LEN];
        let repr = tcp::SynRepr {
            src_port: 61001,
            dst_port: 22,
            seq: 77,
            window: 64240,
            mss: 1460,
            window_scale: 7,
            ts_val: 1,
        };
        tcp::emit_syn(&repr, None, &mut syn);
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&[0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 128, 9]);
        icmp.extend_from_slice(&syn[..8]);
        let sum = checksum::internet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 198, 18, 128, 9, 198, 18, 0, 1];
        packet.extend_from_slice(&icmp);
        let quoted = Quoted::Tcp { src_port: 61001, dst_port: 22, seq: 77 };
        match parse_v4(&packet).unwrap().1 {
            Message::Error(e) => {
                assert_eq!((e.icmp_type, e.code, e.quoted), (3, 3, quoted));
                assert_eq!(e.original_dst, "198.18.128.9".parse::<IpAddr>().unwrap());
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut v6 = vec![1, 4, 0, 0, 0, 0, 0, 0, 0x60, 0, 0, 0, 0, 40, 6, 64];
        v6.extend_from_slice(&[0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        v6.extend_from_slice(&[0x20, 0x01, 0, 2, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
        v6.extend_from_slice(&syn);
        match parse_v6(&v6).unwrap() {
            Message::Error(e) => assert_eq!(e.quoted, quoted),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn v6_other_types_are_other() {
        assert_eq!(parse_v6(&[135, 0, 0, 0, 0, 0, 0, 0]).unwrap(), Message::Other);
    }
}
