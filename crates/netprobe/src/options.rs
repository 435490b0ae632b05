//! Per-target probe options (the `/probe` parameters `size`, `ttl`, `tos`, `df`, `source`):
//! checked here, carried per packet (control messages, and the send socket's fragmentation
//! setting for IPv4 DF), never a socket of their own.
use crate::engine::ProbeKind;
use crate::wire::icmp::PAYLOAD_LEN;
use std::net::IpAddr;

/// The smallest ICMP payload: the in-flight key and the token a reply must carry back.
pub const MIN_SIZE: u16 = 12;
/// The largest: an IPv4 packet that fits a 9,000-byte jumbo frame whole.
pub const MAX_SIZE: u16 = 8972;

/// How one target's probes differ from the default; `Default` is the default probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct ProbeOptions {
    /// ICMP payload bytes (MIN_SIZE..=MAX_SIZE); None: PAYLOAD_LEN (56).
    pub size: Option<u16>,
    /// IPv4 TTL or IPv6 hop limit (1..=255); None: the system's default.
    pub ttl: Option<u8>,
    /// IPv4 TOS byte or IPv6 traffic class; None: 0.
    pub tos: Option<u8>,
    /// Some(true): never fragmented (IPv4 DF set, path MTU ignored; IPv6 IPV6_DONTFRAG);
    /// Some(false): may be fragmented (IPv4 DF clear); None: the kernel's default (path MTU
    /// discovery: IPv4 DF set).
    pub df: Option<bool>,
    /// Source address (one of this host's); None: the routing table's choice.
    pub source: Option<IpAddr>,
}

impl ProbeOptions {
    pub fn is_default(&self) -> bool {
        *self == ProbeOptions::default()
    }

    /// ICMP payload bytes of these probes.
    pub fn payload_len(&self) -> usize {
        self.size.map_or(PAYLOAD_LEN, usize::from)
    }

    /// Why these options cannot be probes of `addr` with `kind`, if they cannot.
    pub fn check(&self, addr: IpAddr, kind: ProbeKind) -> Result<(), String> {
        if let Some(size) = self.size {
            if matches!(kind, ProbeKind::Tcp { .. }) {
                return Err("size applies to ICMP probes only (a SYN carries no payload)".into());
            }
            if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
                return Err(format!("size must be between {MIN_SIZE} and {MAX_SIZE} bytes, got {size}"));
            }
        }
        if self.ttl == Some(0) {
            return Err("ttl must be between 1 and 255".into());
        }
        if let Some(source) = self.source {
            if source.is_ipv4() != addr.is_ipv4() {
                return Err(format!("source {source} is not of the family of {addr}"));
            }
            if source.is_unspecified() || source.is_multicast() {
                return Err(format!("source {source} cannot send probes"));
            }
        }
        Ok(())
    }
}

/// Whether a kernel release ("5.15.0-91-generic") is at least `major.minor`.
pub fn release_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts =
        release.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// Whether this kernel's unprivileged IPv6 ping sockets honour the per-packet options (hop
/// limit, traffic class, source, DONTFRAG): they ignored those control messages before Linux
/// 5.18, and the probes would leave as default ones under their own series.
pub fn ping6_takes_options() -> bool {
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a valid utsname for uname to fill.
    if unsafe { libc::uname(&mut name) } != 0 {
        return false;
    }
    // SAFETY: uname NUL-terminates `release`.
    let release = unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) }.to_string_lossy();
    release_at_least(&release, 5, 18)
}

impl ProbeOptions {
    /// Whether any option goes as a control message (what old IPv6 ping sockets dropped).
    pub fn has_packet_options(&self) -> bool {
        self.ttl.is_some() || self.tos.is_some() || self.source.is_some() || self.df.is_some()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_releases() {
        assert!(super::release_at_least("5.18.0", 5, 18));
        assert!(super::release_at_least("6.1.0-28-amd64", 5, 18));
        assert!(!super::release_at_least("5.15.0-91-generic", 5, 18));
        assert!(!super::release_at_least("5.14.0-427.el9.x86_64", 5, 18));
        assert!(!super::release_at_least("", 5, 18));
    }

    use super::*;

    #[test]
    fn checks() {
        let v4: IpAddr = "198.18.0.1".parse().unwrap();
        let v6: IpAddr = "2001:2::1".parse().unwrap();
        let ok = ProbeOptions { size: Some(1472), ttl: Some(1), tos: Some(0xb8), df: Some(true), source: Some(v4) };
        assert!(ok.check(v4, ProbeKind::Icmp).is_ok());
        assert!(ProbeOptions::default().is_default());
        assert_eq!(ProbeOptions::default().payload_len(), 56);
        let refused = |o: ProbeOptions, addr, kind| o.check(addr, kind).unwrap_err();
        assert!(refused(ProbeOptions { size: Some(11), ..ok }, v4, ProbeKind::Icmp).contains("between 12 and 8972"));
        assert!(refused(ProbeOptions { size: Some(8973), ..ok }, v4, ProbeKind::Icmp).contains("8972"));
        assert!(refused(ProbeOptions { size: Some(100), ..Default::default() }, v4, ProbeKind::Tcp { port: 80 })
            .contains("ICMP"));
        assert!(refused(ProbeOptions { ttl: Some(0), ..Default::default() }, v4, ProbeKind::Icmp).contains("ttl"));
        assert!(
            refused(ProbeOptions { source: Some(v4), ..Default::default() }, v6, ProbeKind::Icmp).contains("family")
        );
        assert!(refused(
            ProbeOptions { source: Some("0.0.0.0".parse().unwrap()), ..Default::default() },
            v4,
            ProbeKind::Icmp
        )
        .contains("cannot"));
    }
}
