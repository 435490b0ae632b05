//! Source ports of TCP probes. They lie outside `ip_local_port_range`, so the kernel never
//! picks them for a connection of its own, and each is held by a bound (never listening)
//! socket, so no other program can bind it: a SYN-ACK or RST sent to one of them can only be
//! an answer to a probe, and the kernel, finding no connection, answers a SYN-ACK with a RST
//! (the peer keeps no half-open connection).
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;

/// How many source ports probes rotate through.
pub const POOL_SIZE: u16 = 128;

/// The ports to use given `ip_local_port_range` (`lo`, `hi`): just above it, or just below
/// it when there is no room above. Pure.
pub fn choose_range(lo: u16, hi: u16) -> Option<RangeInclusive<u16>> {
    if u32::from(hi) + u32::from(POOL_SIZE) <= 65535 {
        Some(hi + 1..=hi + POOL_SIZE)
    } else if lo > 1024 + POOL_SIZE {
        Some(lo - POOL_SIZE..=lo - 1)
    } else {
        None
    }
}

/// Reads `net.ipv4.ip_local_port_range` (shared by IPv6) of this network namespace.
pub fn local_port_range() -> io::Result<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")?;
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) if lo <= hi => Ok((lo, hi)),
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, format!("ip_local_port_range {text:?}"))),
    }
}

pub fn probe_port_range() -> io::Result<RangeInclusive<u16>> {
    let (lo, hi) = local_port_range()?;
    choose_range(lo, hi).ok_or_else(|| {
        io::Error::other(format!("no room for {POOL_SIZE} probe ports outside ip_local_port_range {lo}-{hi}"))
    })
}

pub struct PortPool {
    ports: Vec<u16>,
    /// Held for their binding only.
    _held: Vec<Socket>,
}

fn hold(addr: SocketAddr) -> io::Result<Socket> {
    let domain = if addr.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let s = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&SockAddr::from(addr))?;
    Ok(s)
}

impl PortPool {
    /// Binds every port of `range` it can (for IPv4 and, where available, IPv6); ports in use
    /// by someone else are skipped.
    pub fn open(range: RangeInclusive<u16>) -> io::Result<PortPool> {
        let mut ports = Vec::new();
        let mut held = Vec::new();
        let mut last_err = None;
        for port in range {
            match hold(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))) {
                Ok(v4) => {
                    match hold(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))) {
                        Ok(v6) => held.push(v6),
                        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                            last_err = Some(e);
                            continue;
                        }
                        Err(_) => {} // no IPv6 on this host: the IPv4 binding is all there is to hold
                    }
                    held.push(v4);
                    ports.push(port);
                }
                Err(e) => last_err = Some(e),
            }
        }
        if ports.is_empty() {
            return Err(last_err.unwrap_or_else(|| io::Error::other("empty port range")));
        }
        Ok(PortPool { ports, _held: held })
    }

    /// The ports held. Probes take them round robin (`lifecycle`), so one target reuses a
    /// 4-tuple only every `len()` probes.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    pub fn len(&self) -> usize {
        self.ports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn above_the_local_range_or_below_it() {
        assert_eq!(choose_range(32768, 60999), Some(61000..=61127));
        assert_eq!(choose_range(32768, 65535), Some(32640..=32767));
        assert_eq!(choose_range(1024, 65500), None);
    }

    #[test]
    fn pool_holds_its_ports() {
        // Ports far from the usual ranges, on loopback-free wildcard binds only.
        let pool = PortPool::open(64001..=64004);
        let Ok(pool) = pool else { return }; // something else holds them: nothing to check
        let taken = pool.ports()[0];
        let again = hold(SocketAddr::from((Ipv4Addr::UNSPECIFIED, taken)));
        assert_eq!(again.unwrap_err().kind(), io::ErrorKind::AddrInUse, "the pool holds port {taken}");
    }
}
