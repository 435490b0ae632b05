//! TCP SYN probes: writing them, and reading the TCP sockets (SYN-ACK: port open; RST: port
//! closed, host up). The kernel answers every SYN-ACK with a RST, since no connection of its
//! own uses our held source ports, so the target keeps no half-open connection.
use super::event_loop::EngineLoop;
use super::{family_of, ProbeKind, Proto};
use crate::cmsg;
use crate::counters::EngineCounters;
use crate::inflight::{Key, Reply};
use crate::lifecycle::{Answer, ReadTime, Transmit};
use crate::recv_batch;
use crate::sockets::setsockopt;
use crate::wire::icmp::Family;
use crate::wire::ipv4::Ipv4Header;
use crate::wire::tcp::{self, flags, SynRepr, SYN_LEN};
use socket2::{Domain, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// How long a looked-up source address is trusted before the route is asked again.
const SOURCE_TTL: Duration = Duration::from_secs(5);
/// What Linux advertises in a SYN.
const WINDOW: u16 = 64240;
const WINDOW_SCALE: u8 = 7;

/// A UDP socket per family that asks the kernel which source address it routes from towards a
/// destination (connecting a UDP socket sends nothing). Kept and connected again for each
/// lookup: three or four system calls, where a socket per lookup took five and an allocation.
#[derive(Default)]
pub(super) struct RouteSourceProbe {
    sockets: [Option<Socket>; 2],
}

impl RouteSourceProbe {
    /// The source address the kernel would use towards `dst` from interface `ifindex`.
    fn lookup(&mut self, dst: IpAddr, port: u16, ifindex: Option<u32>) -> io::Result<IpAddr> {
        let slot = &mut self.sockets[usize::from(dst.is_ipv6())];
        if slot.is_none() {
            let domain = if dst.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
            *slot = Some(Socket::new(domain, Type::DGRAM.cloexec(), None)?);
        }
        let Some(s) = slot.as_ref() else {
            return Err(io::Error::other("no route lookup socket"));
        };
        // Dissolve the last association first: connecting a connected UDP socket again keeps
        // the source address the first connect chose. The disconnect also drops the device
        // binding, so the interface is bound again (or not) for every lookup.
        let looked_up = disconnect(s)
            .and_then(|()| match ifindex {
                Some(index) => setsockopt(s, libc::SOL_SOCKET, libc::SO_BINDTOIFINDEX, &(index as libc::c_int)),
                None => Ok(()),
            })
            .and_then(|()| s.connect(&SockAddr::from(SocketAddr::new(dst, port))))
            .and_then(|()| s.local_addr());
        match looked_up {
            Ok(local) => local.as_socket().map(|a| a.ip()).ok_or_else(|| io::Error::other("no source address")),
            Err(e) => {
                // A failed connect can leave the socket in any state: the next lookup opens anew.
                *slot = None;
                Err(e)
            }
        }
    }
}

/// Dissolves a UDP socket's association (`connect` to AF_UNSPEC), which also forgets the
/// source address it chose.
fn disconnect(s: &Socket) -> io::Result<()> {
    // SAFETY: an all-zero sockaddr (family AF_UNSPEC) of its own size, for the call only.
    let unspec: libc::sockaddr = unsafe { std::mem::zeroed() };
    let len = std::mem::size_of::<libc::sockaddr>() as libc::socklen_t;
    // SAFETY: a valid socket and a valid sockaddr of `len` bytes.
    let rc = unsafe { libc::connect(s.as_raw_fd(), &unspec, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl EngineLoop {
    /// The in-flight key a SYN to `dst`:`dst_port` from `src_port` with sequence `isn` carries.
    pub(super) fn syn_key(&self, dst: IpAddr, dst_port: u16, src_port: u16, isn: u32) -> Key {
        Key(isn ^ self.core.tokens().tcp_mask(dst, dst_port, src_port))
    }

    /// The IPv4 source for a SYN's checksum, looked up again every few seconds so an address
    /// change is followed.
    fn source_for(&mut self, dst: IpAddr, port: u16, now: Instant) -> io::Result<IpAddr> {
        if let Some(&(src, at)) = self.route_sources.get(&dst) {
            if now.saturating_duration_since(at) < SOURCE_TTL {
                return Ok(src);
            }
        }
        let looked_up = self.route_source_probe.lookup(dst, port, self.bound[usize::from(dst.is_ipv6())]);
        match &looked_up {
            Ok(src) => self.route_sources.insert(dst, (*src, now)),
            Err(_) => self.route_sources.remove(&dst),
        };
        looked_up
    }

    /// Drops looked-up sources too old to be used again (the targets may be gone).
    pub(super) fn forget_stale_sources(&mut self, now: Instant) {
        self.route_sources.retain(|_, (_, at)| now.saturating_duration_since(*at) < SOURCE_TTL);
    }

    /// Writes the SYN of `tx` (its token is the initial sequence number) into the packet
    /// buffer; returns its length.
    pub(super) fn write_syn(&mut self, tx: &Transmit, dst_port: u16, source: Option<IpAddr>) -> io::Result<usize> {
        let now = Instant::now();
        let dst = tx.addr;
        // IPv6 raw sockets checksum TCP themselves (IPV6_CHECKSUM); IPv4 needs the source:
        // the one the probe is sent from (`source`), or the route's.
        let addrs = match (family_of(dst), source) {
            (Family::V4, Some(source)) => Some((source, dst)),
            (Family::V4, None) => Some((self.source_for(dst, dst_port, now)?, dst)),
            (Family::V6, _) => None,
        };
        let repr = SynRepr {
            src_port: tx.seq,
            dst_port,
            seq: tx.token as u32,
            window: WINDOW,
            mss: if dst.is_ipv4() { 1460 } else { 1440 },
            window_scale: WINDOW_SCALE,
            ts_val: now.saturating_duration_since(self.origin).as_millis() as u32,
        };
        let buf: &mut [u8; SYN_LEN] = (&mut self.packet[..SYN_LEN]).try_into().expect("packet buffer holds a SYN");
        tcp::emit_syn(&repr, addrs, buf);
        Ok(SYN_LEN)
    }

    pub(super) fn receive_tcp(&mut self, family: Family) {
        self.drain(Proto::Tcp, family, false, |engine, m, read| engine.on_tcp_message(family, m, read));
    }

    fn on_tcp_message(&mut self, family: Family, m: recv_batch::Message<'_>, read: ReadTime) {
        let info = cmsg::parse(m.ctrl);
        self.count_receive_drops(Proto::Tcp, family, info.dropped);
        // No checksum check on IPv4: segments from this host's own stack (over lo or veth)
        // carry a partial, offloaded checksum that a raw socket sees unfinished. A wrong
        // answer still has to acknowledge a secret-derived ISN to count. On IPv6 the
        // kernel verifies it (IPV6_CHECKSUM).
        let parsed = match family {
            Family::V4 => Ipv4Header::new_checked(m.data)
                .and_then(|ip| tcp::parse(ip.payload(), None).map(|seg| (Some(IpAddr::V4(ip.src())), seg))),
            Family::V6 => tcp::parse(m.data, None).map(|seg| (m.src, seg)),
        };
        let c = self.counters(Proto::Tcp);
        let Ok((src, seg)) = parsed else {
            return EngineCounters::add(&c.packets_malformed, 1);
        };
        // Only a SYN-ACK or a RST acknowledging our SYN can answer a probe.
        if !(seg.is_syn_ack() || seg.is_rst()) || seg.flags & flags::ACK == 0 {
            return EngineCounters::add(&c.replies_foreign, 1);
        }
        EngineCounters::add(&c.packets_received, 1);
        let Some(from) = src else { return };
        let isn = seg.ack.wrapping_sub(1);
        let answer = Answer {
            key: self.syn_key(from, seg.src_port, seg.dst_port, isn),
            token: u64::from(isn),
            from: src,
            kind: ProbeKind::Tcp { port: seg.src_port },
            seq: seg.dst_port,
            reply: Reply {
                rx_stamp_ns: info.software.map(|t| t.0),
                rx_hw_ns: info.hardware.map(|t| t.0),
                at: read.arrival(info.software.map(|t| t.0)),
                closed: seg.is_rst(),
            },
        };
        // A SYN-ACK retransmitted after its probe's record is gone cannot be told from a
        // stranger's segment: it counts as foreign, and changes nothing either way.
        self.core.on_answer(Proto::Tcp, answer, |_| false);
    }
}
