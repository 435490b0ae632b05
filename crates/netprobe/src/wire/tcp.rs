//! TCP SYN probes and the segments that answer them (SYN-ACK, RST).
//!
//! A probe is the SYN a Linux stack sends: MSS, SACK-permitted, timestamps, NOP, window
//! scale (40-byte header), no payload and no vanity option, so middleboxes treat it as any
//! other connection attempt.
use super::ParseError;
use crate::checksum;
use std::net::IpAddr;

pub const PROTO_TCP: u8 = 6;
pub const SYN_LEN: usize = 40;
const MIN_HEADER_LEN: usize = 20;

pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

mod field {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const OPTIONS: usize = 20;
}

/// Offset of the checksum field, for `IPV6_CHECKSUM`.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

/// What a SYN probe says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub window: u16,
    pub mss: u16,
    pub window_scale: u8,
    pub ts_val: u32,
}

/// Writes a SYN. The checksum is computed when `addrs` (source, destination) are given;
/// on raw IPv6 sockets the kernel computes it (IPV6_CHECKSUM) and `addrs` is None.
pub fn emit_syn(repr: &SynRepr, addrs: Option<(IpAddr, IpAddr)>, buf: &mut [u8; SYN_LEN]) {
    buf[field::SRC_PORT].copy_from_slice(&repr.src_port.to_be_bytes());
    buf[field::DST_PORT].copy_from_slice(&repr.dst_port.to_be_bytes());
    buf[field::SEQ].copy_from_slice(&repr.seq.to_be_bytes());
    buf[field::ACK].copy_from_slice(&[0; 4]);
    buf[field::DATA_OFFSET] = ((SYN_LEN / 4) as u8) << 4;
    buf[field::FLAGS] = flags::SYN;
    buf[field::WINDOW].copy_from_slice(&repr.window.to_be_bytes());
    buf[field::CHECKSUM].copy_from_slice(&[0, 0]);
    buf[18..20].copy_from_slice(&[0, 0]); // urgent pointer
    let o = field::OPTIONS;
    buf[o..o + 4].copy_from_slice(&[2, 4, (repr.mss >> 8) as u8, repr.mss as u8]); // MSS
    buf[o + 4..o + 6].copy_from_slice(&[4, 2]); // SACK permitted
    buf[o + 6..o + 8].copy_from_slice(&[8, 10]); // timestamps
    buf[o + 8..o + 12].copy_from_slice(&repr.ts_val.to_be_bytes());
    buf[o + 12..o + 16].copy_from_slice(&[0; 4]);
    buf[o + 16..o + 20].copy_from_slice(&[1, 3, 3, repr.window_scale]); // NOP, window scale
    if let Some((src, dst)) = addrs {
        let sum = checksum::transport_checksum(src, dst, PROTO_TCP, &buf[..]);
        buf[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    }
}

/// The header fields of a received segment that matter to a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
}

impl SegmentRepr {
    pub fn is_syn_ack(&self) -> bool {
        self.flags & (flags::SYN | flags::ACK | flags::RST) == flags::SYN | flags::ACK
    }
    pub fn is_rst(&self) -> bool {
        self.flags & flags::RST != 0
    }
}

fn be16(b: &[u8], r: std::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([b[r.start], b[r.start + 1]])
}

fn be32(b: &[u8], r: std::ops::Range<usize>) -> u32 {
    u32::from_be_bytes([b[r.start], b[r.start + 1], b[r.start + 2], b[r.start + 3]])
}

/// Parses a segment's header. With `addrs` (source, destination) the checksum is verified.
pub fn parse(segment: &[u8], addrs: Option<(IpAddr, IpAddr)>) -> Result<SegmentRepr, ParseError> {
    if segment.len() < MIN_HEADER_LEN {
        return Err(ParseError::Truncated);
    }
    let header_len = usize::from(segment[field::DATA_OFFSET] >> 4) * 4;
    if header_len < MIN_HEADER_LEN || header_len > segment.len() {
        return Err(ParseError::Truncated);
    }
    if let Some((src, dst)) = addrs {
        if !checksum::verify_transport(src, dst, PROTO_TCP, segment) {
            return Err(ParseError::BadChecksum);
        }
    }
    Ok(SegmentRepr {
        src_port: be16(segment, field::SRC_PORT),
        dst_port: be16(segment, field::DST_PORT),
        seq: be32(segment, field::SEQ),
        ack: be32(segment, field::ACK),
        flags: segment[field::FLAGS],
    })
}

/// Ports and sequence number of a segment quoted in an ICMP error (8 bytes suffice).
pub fn parse_quoted(quote: &[u8]) -> Result<(u16, u16, u32), ParseError> {
    if quote.len() < 8 {
        return Err(ParseError::Truncated);
    }
    Ok((be16(quote, field::SRC_PORT), be16(quote, field::DST_PORT), be32(quote, field::SEQ)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYN: SynRepr = SynRepr {
        src_port: 61000,
        dst_port: 443,
        seq: 0x0102_0304,
        window: 64240,
        mss: 1460,
        window_scale: 7,
        ts_val: 0x1122_3344,
    };

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn syn_v4_bytes_and_checksum() {
        // Checksum computed independently (Python, RFC 793 pseudo-header).
        let mut buf = [0u8; SYN_LEN];
        emit_syn(&SYN, Some((addr("198.18.0.1"), addr("198.18.128.1"))), &mut buf);
        let expected: [u8; SYN_LEN] = [
            0xee, 0x48, 0x01, 0xbb, 0x01, 0x02, 0x03, 0x04, 0, 0, 0, 0, 0xa0, 0x02, 0xfa, 0xf0, 0x08, 0x78, 0, 0, 2, 4,
            0x05, 0xb4, 4, 2, 8, 10, 0x11, 0x22, 0x33, 0x44, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        assert_eq!(buf, expected);
        assert!(checksum::verify_transport(addr("198.18.0.1"), addr("198.18.128.1"), PROTO_TCP, &buf));
    }

    #[test]
    fn syn_v6_checksum_uses_the_v6_pseudo_header() {
        let mut buf = [0u8; SYN_LEN];
        let v6 = SynRepr { mss: 1440, ..SYN };
        emit_syn(&v6, Some((addr("2001:2::1"), addr("2001:2:0:8000::1"))), &mut buf);
        assert_eq!(&buf[16..18], &[0x54, 0xab], "independently computed");
        let mut left_to_kernel = [0u8; SYN_LEN];
        emit_syn(&v6, None, &mut left_to_kernel);
        assert_eq!(&left_to_kernel[16..18], &[0, 0]);
    }

    #[test]
    fn parses_syn_ack_and_rst() {
        // A SYN-ACK answering SYN above: ports swapped, ack = seq + 1, with a valid checksum.
        let src = addr("198.18.128.1");
        let dst = addr("198.18.0.1");
        let mut seg = vec![
            0x01, 0xbb, 0xee, 0x48, 0xaa, 0xbb, 0xcc, 0xdd, 0x01, 0x02, 0x03, 0x05, 0x50, 0x12, 0xff, 0xff, 0, 0, 0, 0,
        ];
        let sum = checksum::transport_checksum(src, dst, PROTO_TCP, &seg);
        seg[16..18].copy_from_slice(&sum.to_be_bytes());
        let r = parse(&seg, Some((src, dst))).unwrap();
        assert_eq!(r, SegmentRepr { src_port: 443, dst_port: 61000, seq: 0xaabb_ccdd, ack: 0x0102_0305, flags: 0x12 });
        assert!(r.is_syn_ack() && !r.is_rst());
        seg[17] ^= 1;
        assert_eq!(parse(&seg, Some((src, dst))).unwrap_err(), ParseError::BadChecksum);
        assert!(parse(&seg, None).is_ok(), "kernel-verified (IPv6) segments skip the check");

        let rst = SegmentRepr { flags: flags::RST | flags::ACK, ..r };
        assert!(rst.is_rst() && !rst.is_syn_ack());
    }

    #[test]
    fn truncated_segments_never_panic() {
        let mut buf = [0u8; SYN_LEN];
        emit_syn(&SYN, None, &mut buf);
        for len in 0..SYN_LEN {
            let _ = parse(&buf[..len], None);
        }
        assert_eq!(parse(&buf[..39], None).unwrap_err(), ParseError::Truncated, "options cut off");
        let mut bad_offset = buf;
        bad_offset[12] = 0x40;
        assert_eq!(parse(&bad_offset, None).unwrap_err(), ParseError::Truncated);
        assert_eq!(parse_quoted(&buf[..8]).unwrap(), (61000, 443, 0x0102_0304));
        assert!(parse_quoted(&buf[..7]).is_err());
    }
}
