//! Per-probe tokens that only this engine can produce: a keyed hash (SipHash with a random
//! key per engine) of what names the probe. To anyone else they look random; to the engine
//! they prove that a reply answers one of its own probes even after that probe's record is
//! gone, which is how a late reply is told apart from a foreign one.
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;

pub struct TokenKey(RandomState);

impl TokenKey {
    pub fn new() -> Self {
        TokenKey(RandomState::new())
    }

    pub fn token(&self, key: u32, seq: u16, dst: IpAddr) -> u64 {
        self.0.hash_one((key, seq, dst))
    }

    /// What a SYN's initial sequence number is XORed with: the in-flight key can be recovered
    /// from the answer's acknowledgement number, yet the ISN looks random to everyone else.
    pub fn tcp_mask(&self, dst: IpAddr, dst_port: u16, src_port: u16) -> u32 {
        self.0.hash_one((dst, dst_port, src_port, "tcp")) as u32
    }
}

impl Default for TokenKey {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_key_sequence_and_address() {
        let k = TokenKey::new();
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        let t = k.token(7, 1, a);
        assert_eq!(t, k.token(7, 1, a), "deterministic for one engine");
        assert_ne!(t, k.token(8, 1, a));
        assert_ne!(t, k.token(7, 2, a));
        assert_ne!(t, k.token(7, 1, b));
        assert_ne!(t, TokenKey::new().token(7, 1, a), "another engine has another key");
    }
}
