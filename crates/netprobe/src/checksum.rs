//! RFC 1071 internet checksum, used by ICMPv4 (ICMPv6 checksums are computed by the kernel on raw sockets).

/// Ones-complement sum of 16-bit big-endian words, folded, not yet inverted.
fn ones_complement_sum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The value to write into a checksum field that holds zero while this is computed.
pub fn internet_checksum(data: &[u8]) -> u16 {
    !ones_complement_sum(data)
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
        let packet = [
            0x08, 0x00, 0x4a, 0x23, 0x1c, 0x46, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66,
            0x67, 0x68,
        ];
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
