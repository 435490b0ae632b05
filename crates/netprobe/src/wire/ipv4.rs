//! The few IPv4 header fields the engine reads from raw-socket receives and ICMP error quotes.
use super::ParseError;
use std::net::Ipv4Addr;

mod field {
    pub const VER_IHL: usize = 0;
    pub const FLAGS_FRAG: std::ops::Range<usize> = 6..8;
    pub const PROTOCOL: usize = 9;
    pub const SRC: std::ops::Range<usize> = 12..16;
    pub const DST: std::ops::Range<usize> = 16..20;
}

pub const PROTO_ICMP: u8 = 1;
const MIN_HEADER_LEN: usize = 20;

/// An IPv4 header whose length was checked once; accessors cannot go out of bounds.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Header<'a> {
    bytes: &'a [u8],
    header_len: usize,
}

impl<'a> Ipv4Header<'a> {
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let first = *bytes.get(field::VER_IHL).ok_or(ParseError::Truncated)?;
        if first >> 4 != 4 {
            return Err(ParseError::Truncated);
        }
        let header_len = usize::from(first & 0x0f) * 4;
        if header_len < MIN_HEADER_LEN || bytes.len() < header_len {
            return Err(ParseError::Truncated);
        }
        Ok(Self { bytes, header_len })
    }

    pub fn header_len(&self) -> usize {
        self.header_len
    }
    pub fn protocol(&self) -> u8 {
        self.bytes[field::PROTOCOL]
    }
    /// True for every fragment but the first: those carry no transport header.
    pub fn is_later_fragment(&self) -> bool {
        let v = u16::from_be_bytes([self.bytes[field::FLAGS_FRAG.start], self.bytes[field::FLAGS_FRAG.start + 1]]);
        v & 0x1fff != 0
    }
    pub fn src(&self) -> Ipv4Addr {
        let s = &self.bytes[field::SRC];
        Ipv4Addr::new(s[0], s[1], s[2], s[3])
    }
    pub fn dst(&self) -> Ipv4Addr {
        let d = &self.bytes[field::DST];
        Ipv4Addr::new(d[0], d[1], d[2], d[3])
    }
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[self.header_len..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // IPv4 header of an echo reply 198.18.0.2 -> 198.18.0.1, protocol ICMP, then 4 payload bytes.
    const REPLY: [u8; 24] = [
        0x45, 0x00, 0x00, 0x54, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 198, 18, 0, 2, 198, 18, 0, 1, 0xde,
        0xad, 0xbe, 0xef,
    ];

    #[test]
    fn parses_fields() {
        let h = Ipv4Header::new_checked(&REPLY).unwrap();
        assert_eq!(h.header_len(), 20);
        assert_eq!(h.protocol(), PROTO_ICMP);
        assert_eq!(h.src(), Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(h.dst(), Ipv4Addr::new(198, 18, 0, 1));
        assert!(!h.is_later_fragment());
        assert_eq!(h.payload(), &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn options_extend_the_header() {
        let mut with_options = [0u8; 28];
        with_options[..20].copy_from_slice(&REPLY[..20]);
        with_options[0] = 0x46; // IHL 6: 4 bytes of options
        with_options[24..].copy_from_slice(&[1, 2, 3, 4]);
        let h = Ipv4Header::new_checked(&with_options).unwrap();
        assert_eq!(h.header_len(), 24);
        assert_eq!(h.payload(), &[1, 2, 3, 4]);
    }

    #[test]
    fn rejects_truncated_and_bad_versions() {
        assert_eq!(Ipv4Header::new_checked(&REPLY[..19]).unwrap_err(), ParseError::Truncated);
        assert_eq!(Ipv4Header::new_checked(&[]).unwrap_err(), ParseError::Truncated);
        let mut v6 = REPLY;
        v6[0] = 0x65;
        assert!(Ipv4Header::new_checked(&v6).is_err());
        let mut short_ihl = REPLY;
        short_ihl[0] = 0x44;
        assert!(Ipv4Header::new_checked(&short_ihl).is_err());
    }

    #[test]
    fn detects_later_fragments() {
        let mut frag = REPLY;
        frag[6] = 0x20; // MF set, offset 0: a first fragment still has the ICMP header
        assert!(!Ipv4Header::new_checked(&frag).unwrap().is_later_fragment());
        frag[7] = 0x10; // offset 16*8
        assert!(Ipv4Header::new_checked(&frag).unwrap().is_later_fragment());
    }
}
