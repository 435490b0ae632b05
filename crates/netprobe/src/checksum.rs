//! RFC 1071 internet checksum: ICMPv4 messages, and TCP segments under their pseudo-header
//! (on raw IPv6 sockets the kernel computes ICMPv6 and, with IPV6_CHECKSUM, TCP checksums).
use std::net::IpAddr;

/// Ones-complement sum of 16-bit big-endian words, folded, not yet inverted.
fn ones_complement_sum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    fold(sum)
}

/// The value to write into a checksum field that holds zero while this is computed.
pub fn internet_checksum(data: &[u8]) -> u16 {
    !ones_complement_sum(data)
}

fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Ones-complement sum of the TCP/UDP pseudo-header (RFC 793 for IPv4, RFC 8200 for IPv6).
fn pseudo_header_sum(src: IpAddr, dst: IpAddr, protocol: u8, length: usize) -> u16 {
    let mut sum: u64 = u64::from(protocol);
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks_exact(2) {
            sum += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            add(&s.octets());
            add(&d.octets());
        }
        (s, d) => {
            add(&to_v6(s).octets());
            add(&to_v6(d).octets());
        }
    }
    let len = length as u64;
    fold(sum + (len >> 16) + (len & 0xffff))
}

fn to_v6(a: IpAddr) -> std::net::Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Checksum of a transport segment (its checksum field zero) under the pseudo-header.
pub fn transport_checksum(src: IpAddr, dst: IpAddr, protocol: u8, segment: &[u8]) -> u16 {
    let pseudo = pseudo_header_sum(src, dst, protocol, segment.len());
    !fold(u64::from(pseudo) + u64::from(ones_complement_sum(segment)))
}

/// True when a received segment's checksum is right under the pseudo-header.
pub fn verify_transport(src: IpAddr, dst: IpAddr, protocol: u8, segment: &[u8]) -> bool {
    let pseudo = pseudo_header_sum(src, dst, protocol, segment.len());
    fold(u64::from(pseudo) + u64::from(ones_complement_sum(segment))) == 0xffff
}

/// True when `data`, checksum field included, sums to all ones.
pub fn verify(data: &[u8]) -> bool {
    ones_complement_sum(data) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // The worked example of RFC 1071 section 3: sum 0xddf2, checksum !0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(internet_checksum(&[0xab]), internet_checksum(&[0xab, 0x00]));
    }

    #[test]
    fn echo_request_fixture_verifies() {
        // ICMP echo request, ident 0x1c46, seq 1, payload "abcdefgh" (checksum 0x4a23).
        let packet = [0x08, 0x00, 0x4a, 0x23, 0x1c, 0x46, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68];
        let mut zeroed = packet;
        zeroed[2] = 0;
        zeroed[3] = 0;
        let sum = internet_checksum(&zeroed);
        assert_eq!(sum.to_be_bytes(), [packet[2], packet[3]]);
        assert!(verify(&packet));
        let mut corrupted = packet;
        corrupted[9] ^= 1;
        assert!(!verify(&corrupted));
    }
}
