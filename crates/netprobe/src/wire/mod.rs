//! Packet codecs: typed views over bytes, each a pure function tested with byte fixtures.
pub mod icmp;
pub mod ipv4;
pub mod looped;
pub mod tcp;

/// Why a packet from the network was not understood. Counted, never fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    Truncated,
    BadChecksum,
    NotIcmp,
    Fragment,
}
