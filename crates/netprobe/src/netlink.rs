//! The interface of each family's default route, learnt from rtnetlink instead of reading
//! the whole routing table every second: on a full-table BGP host that table is a million
//! lines. A monitor socket brings changes as they happen, and the table is only dumped again
//! when notifications cannot be trusted (overrun, or a link/address change after which IPv4
//! flushes routes without telling). Parsing is pure; `RouteMonitor` is the IO, driven by the
//! engine's own `ppoll` loop.
use libc::{RTA_MULTIPATH, RTA_OIF, RTA_PRIORITY, RTA_TABLE, RTN_UNICAST, RT_TABLE_MAIN};
use libc::{RTM_DELADDR, RTM_DELLINK, RTM_DELROUTE, RTM_GETROUTE, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE};
use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};
use socket2::{SockFilter, Socket};
use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

const NLMSG_HDRLEN: usize = 16;
const RTMSG_LEN: usize = 12;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_DUMP: u16 = 0x300;
const NETLINK_GET_STRICT_CHK: libc::c_int = 12;
const GROUPS: libc::c_int = libc::RTMGRP_LINK
    | libc::RTMGRP_IPV4_IFADDR
    | libc::RTMGRP_IPV4_ROUTE
    | libc::RTMGRP_IPV6_IFADDR
    | libc::RTMGRP_IPV6_ROUTE;
/// One read: a dump chunk is at most 32 KiB, a notification far less.
const READ_LEN: usize = 64 << 10;
/// Reads per socket and call, so that one call never holds the engine for long.
const MAX_READS: usize = 16;
const RCVBUF_FORCE: usize = 32 << 20;
const RCVBUF: usize = 4 << 20;

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}
fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off.checked_add(2)?)?.try_into().ok().map(u16::from_ne_bytes)
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off.checked_add(4)?)?.try_into().ok().map(u32::from_ne_bytes)
}
fn i32_at(b: &[u8], off: usize) -> Option<i32> {
    u32_at(b, off).map(|v| v as i32)
}

/// One netlink message; borrowed, so that skipping the uninteresting ones costs no copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NlMsg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Walks a datagram of netlink messages. It trusts no length: a short or inconsistent one
/// ends the walk, so a bad datagram costs the rest of itself, never a panic or a hang.
pub fn messages(mut b: &[u8]) -> impl Iterator<Item = NlMsg<'_>> {
    std::iter::from_fn(move || {
        let len = u32_at(b, 0)? as usize;
        let payload = b.get(NLMSG_HDRLEN..len)?;
        let msg = NlMsg { ty: u16_at(b, 4)?, flags: u16_at(b, 6)?, seq: u32_at(b, 8)?, payload };
        b = b.get(align4(len)..).unwrap_or(&[]);
        Some(msg)
    })
}

/// Route attributes (type, payload), with the same distrust of lengths.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(b, 0)?);
        let attr = (u16_at(b, 2)? & 0x3fff, b.get(4..len)?);
        b = b.get(align4(len)..).unwrap_or(&[]);
        Some(attr)
    })
}

/// A default route of the main table that can carry traffic: what the engine would use when
/// it is not told an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRoute {
    pub ipv6: bool,
    pub oif: u32,
    pub metric: u32,
}

/// What a message means to us. Everything the engine does not care about is `Other`, and a
/// route that is not a usable default is `route: None`, so callers need no netlink knowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `replace` (NLM_F_REPLACE) says the kernel dropped the route of the same metric, which
    /// it does not notify separately.
    Route {
        new: bool,
        replace: bool,
        route: Option<DefaultRoute>,
    },
    /// `change` is the mask of flags that changed; 0 for events that touch no state routes
    /// depend on (wireless events, MTU or statistics updates).
    Link {
        new: bool,
        index: i32,
        flags: u32,
        change: u32,
    },
    /// Only that it happened: a removed address can flush IPv4 routes silently.
    Addr {
        new: bool,
    },
    /// End of a dump, with its positive errno (0: complete).
    Done(i32),
    /// Positive errno of a request (0 is an acknowledgement).
    Error(i32),
    /// The kernel dropped messages for us: only a dump can tell what they said.
    Overrun,
    Other,
}

/// One place that knows the netlink layouts, so the monitor logic reads as plain decisions.
pub fn parse(msg: &NlMsg<'_>) -> Event {
    let p = msg.payload;
    match msg.ty {
        NLMSG_DONE => Event::Done(i32_at(p, 0).map_or(0, i32::wrapping_neg)),
        NLMSG_ERROR => Event::Error(i32_at(p, 0).map_or(libc::EIO, i32::wrapping_neg)),
        NLMSG_OVERRUN => Event::Overrun,
        RTM_NEWROUTE | RTM_DELROUTE => Event::Route {
            new: msg.ty == RTM_NEWROUTE,
            replace: msg.flags & NLM_F_REPLACE != 0,
            route: default_route(p),
        },
        RTM_NEWLINK | RTM_DELLINK => match (i32_at(p, 4), u32_at(p, 8), u32_at(p, 12)) {
            (Some(index), Some(flags), Some(change)) => {
                Event::Link { new: msg.ty == RTM_NEWLINK, index, flags, change }
            }
            _ => Event::Other,
        },
        RTM_NEWADDR | RTM_DELADDR => Event::Addr { new: msg.ty == RTM_NEWADDR },
        _ => Event::Other,
    }
}

#[cfg(test)]
thread_local! {
    /// Route messages parsed on this thread: [headers, bodies (attributes read), notified].
    static ROUTE_PARSES: std::cell::Cell<[u64; 3]> = const { std::cell::Cell::new([0; 3]) };
}
fn note(_slot: usize) {
    #[cfg(test)]
    ROUTE_PARSES.with(|c| {
        let mut v = c.get();
        v[_slot] += 1;
        c.set(v);
    });
}

/// Decides from the 12-byte header alone for all but default routes: under BGP churn nearly
/// every message is a prefix, and its attributes are never looked at.
fn default_route(p: &[u8]) -> Option<DefaultRoute> {
    note(0);
    let hdr = p.get(..RTMSG_LEN)?;
    let ipv6 = match i32::from(hdr[0]) {
        libc::AF_INET => false,
        libc::AF_INET6 => true,
        _ => return None,
    };
    if hdr[1] != 0 || hdr[7] != RTN_UNICAST {
        return None;
    }
    note(1);
    let (mut table, mut oif, mut first_hop, mut metric) = (u32::from(hdr[4]), None, None, 0);
    for (ty, data) in attrs(p.get(RTMSG_LEN..)?) {
        match ty {
            RTA_TABLE => table = u32_at(data, 0)?,
            RTA_OIF => oif = u32_at(data, 0),
            RTA_PRIORITY => metric = u32_at(data, 0)?,
            // struct rtnexthop { len u16, flags u8, hops u8, ifindex i32 }
            RTA_MULTIPATH if u16_at(data, 0)? >= 8 => first_hop = u32_at(data, 4),
            _ => {}
        }
    }
    let oif = oif.or(first_hop).filter(|&i| i != 0)?;
    (table == u32::from(RT_TABLE_MAIN)).then_some(DefaultRoute { ipv6, oif, metric })
}

/// The default routes of each family, keyed by (oif, metric) as the kernel would tell them
/// apart for our purpose, so that `best` is what the kernel picks for an unbound socket.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DefaultRoutes {
    /// (metric, oif) per family: ordered so that the first is the best.
    by_family: [BTreeSet<(u32, u32)>; 2],
}

impl DefaultRoutes {
    /// `replace` mirrors NLM_F_REPLACE: the kernel swapped out the route with that metric and
    /// sends no RTM_DELROUTE for it.
    pub fn add(&mut self, r: DefaultRoute, replace: bool) {
        let set = &mut self.by_family[usize::from(r.ipv6)];
        if replace {
            set.retain(|&(metric, _)| metric != r.metric);
        }
        set.insert((r.metric, r.oif));
    }

    /// Keyed like `add`, so that an RTM_DELROUTE finds the entry its RTM_NEWROUTE made.
    pub fn remove(&mut self, r: DefaultRoute) {
        self.by_family[usize::from(r.ipv6)].remove(&(r.metric, r.oif));
    }

    /// Lowest metric wins; a tie goes to the lowest ifindex so that the answer never depends
    /// on the order messages came in.
    pub fn best(&self, ipv6: bool) -> Option<u32> {
        self.by_family[usize::from(ipv6)].first().map(|&(_, oif)| oif)
    }
}

/// What a call to `on_readable` found, so the engine redoes only the work that depends on it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    /// `default_ifindex` of a family differs from what the previous call left.
    pub default_routes: bool,
    /// A link or an address appeared, went or changed: names may map to other indexes.
    pub links: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dump {
    Idle,
    Running { ipv6: bool, seq: u32 },
}

enum Read {
    Data(usize),
    Empty,
    /// Notifications were lost (ENOBUFS) or cut (longer than our buffer).
    Lost,
    Failed,
}

/// Keeps the default routes current from rtnetlink inside the engine's `ppoll` loop: never
/// blocks, bounds the work of one call, and only dumps the table when it must.
pub struct RouteMonitor {
    /// Multicast notifications; a filter keeps non-default routes in the kernel.
    notify: Socket,
    /// Dump requests and replies only, so replies never interleave with notifications.
    dump: Socket,
    buf: Vec<u8>,
    live: DefaultRoutes,
    /// The dump being assembled; replaces `live` only when complete for both families.
    pending: DefaultRoutes,
    state: Dump,
    seq: u32,
    /// A resync is owed: now if none runs, else once the current one ends.
    want_resync: bool,
    /// The last dump failed; it is retried only once a notification says something changed.
    failed: bool,
    more: bool,
    reported: [Option<u32>; 2],
    resyncs: u64,
}

fn nl_socket(groups: libc::c_int) -> io::Result<Socket> {
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket::socket(AddressFamily::Netlink, SockType::Raw, flags, SockProtocol::NetlinkRoute)?;
    socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups as u32))?;
    Ok(Socket::from(fd))
}

/// cBPF: drop RTM_NEWROUTE/RTM_DELROUTE whose rtm_dst_len is not 0, keep everything else.
/// Under BGP churn these are nearly all notifications; dropped here, they cost us no wakeup,
/// no copy and no buffer space (so no overrun and no resync either).
fn route_filter() -> [SockFilter; 9] {
    // nlmsg_type is host-endian; the types we test are < 256, so one byte tells.
    let (lo, hi) = if cfg!(target_endian = "little") { (4, 5) } else { (5, 4) };
    let ld = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    [
        SockFilter::new(ld, 0, 0, hi),
        SockFilter::new(jeq, 0, 5, 0), // type >= 256: accept
        SockFilter::new(ld, 0, 0, lo),
        SockFilter::new(jeq, 1, 0, u32::from(RTM_NEWROUTE)),
        SockFilter::new(jeq, 0, 2, u32::from(RTM_DELROUTE)), // not a route: accept
        SockFilter::new(ld, 0, 0, NLMSG_HDRLEN as u32 + 1),  // rtm_dst_len
        SockFilter::new(jeq, 0, 1, 0),
        SockFilter::new(ret, 0, 0, u32::MAX),
        SockFilter::new(ret, 0, 0, 0),
    ]
}

fn read(sock: &Socket, buf: &mut [u8]) -> Read {
    // MSG_TRUNC makes netlink return the datagram's full length, so a cut one is seen.
    match socket::recv(sock.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC) {
        Ok(n) if n > buf.len() => Read::Lost,
        Ok(n) => Read::Data(n),
        Err(Errno::EINTR) => Read::Data(0),
        Err(Errno::EAGAIN) => Read::Empty,
        Err(Errno::ENOBUFS) => Read::Lost,
        Err(_) => Read::Failed,
    }
}

impl RouteMonitor {
    /// Opens both sockets and asks for the first dump; `resyncs()` stays 0 until it is in.
    pub fn open() -> io::Result<Self> {
        let notify = nl_socket(GROUPS)?;
        if socket::setsockopt(&notify, sockopt::RcvBufForce, &RCVBUF_FORCE).is_err() {
            // A smaller buffer only means earlier overruns, which a resync repairs.
            let _ = notify.set_recv_buffer_size(RCVBUF);
        }
        // Without the filter every BGP update wakes us, and is still skipped cheaply.
        let _ = notify.attach_filter(&route_filter());
        let dump = nl_socket(0)?;
        // Strict checking (Linux >= 4.20) lets the kernel dump only the main table's unicast
        // routes; older kernels ignore the filter fields and dump all, which parsing handles.
        let on: libc::c_int = 1;
        // SAFETY: a valid fd and a live c_int of the size passed.
        unsafe {
            let val = (&on as *const libc::c_int).cast();
            let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            libc::setsockopt(dump.as_raw_fd(), libc::SOL_NETLINK, NETLINK_GET_STRICT_CHK, val, len);
        }
        let mut m = RouteMonitor {
            notify,
            dump,
            buf: vec![0; READ_LEN],
            live: DefaultRoutes::default(),
            pending: DefaultRoutes::default(),
            state: Dump::Idle,
            seq: 0,
            want_resync: false,
            failed: false,
            more: false,
            reported: [None; 2],
            resyncs: 0,
        };
        m.start_dump(false)?;
        Ok(m)
    }

    /// Both are polled for POLLIN: notifications on one, dump replies on the other.
    pub fn fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.notify.as_fd(), self.dump.as_fd()]
    }

    /// None also before the first resync is in; `resyncs()` tells the two apart.
    pub fn default_ifindex(&self, ipv6: bool) -> Option<u32> {
        self.live.best(ipv6)
    }

    /// The per-call bound left data queued: call again without waiting for POLLIN, since
    /// the fd may already have been reported readable.
    pub fn needs_read(&self) -> bool {
        self.more
    }

    /// Complete resyncs so far: 0 means the table is not known yet; a fast-climbing count
    /// (worth exporting) means link churn or notification overruns.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// Call when either fd is readable or `needs_read()`; never blocks.
    pub fn on_readable(&mut self) -> Changes {
        let mut buf = std::mem::take(&mut self.buf);
        let mut links = false;
        self.maybe_start_resync();
        self.more = self.drain(&mut buf, true, &mut links) | self.drain(&mut buf, false, &mut links);
        self.maybe_start_resync();
        self.buf = buf;
        let best = [self.live.best(false), self.live.best(true)];
        let default_routes = best != self.reported;
        self.reported = best;
        Changes { default_routes, links }
    }

    /// Reads one socket until it is empty or the bound is hit; true in the latter case.
    fn drain(&mut self, buf: &mut [u8], dump: bool, links: &mut bool) -> bool {
        // The dump socket is read even when idle: replies of a dump given up on are dropped
        // rather than left to keep the fd readable.
        for _ in 0..MAX_READS {
            match (read(if dump { &self.dump } else { &self.notify }, buf), dump) {
                (Read::Data(n), true) => self.on_dump(buf.get(..n).unwrap_or(&[])),
                (Read::Data(n), false) => *links |= self.on_notify(buf.get(..n).unwrap_or(&[])),
                (Read::Empty, _) | (Read::Failed, false) => return false,
                (Read::Lost | Read::Failed, true) => self.dump_failed(),
                (Read::Lost, false) => self.request_resync(),
            }
        }
        true
    }

    fn request_resync(&mut self) {
        self.want_resync = true;
        self.failed = false;
    }

    fn maybe_start_resync(&mut self) {
        if self.want_resync && !self.failed && self.state == Dump::Idle {
            self.want_resync = false;
            if self.start_dump(false).is_err() {
                self.dump_failed();
            }
        }
    }

    fn start_dump(&mut self, ipv6: bool) -> Result<(), Errno> {
        if !ipv6 {
            self.pending = DefaultRoutes::default();
        }
        self.seq = self.seq.wrapping_add(1);
        let mut req = [0u8; NLMSG_HDRLEN + RTMSG_LEN];
        req[0..4].copy_from_slice(&((NLMSG_HDRLEN + RTMSG_LEN) as u32).to_ne_bytes());
        req[4..6].copy_from_slice(&RTM_GETROUTE.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        req[16] = if ipv6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
        req[20] = RT_TABLE_MAIN;
        req[23] = RTN_UNICAST;
        socket::send(self.dump.as_raw_fd(), &req, MsgFlags::empty())?;
        self.state = Dump::Running { ipv6, seq: self.seq };
        Ok(())
    }

    fn dump_failed(&mut self) {
        self.state = Dump::Idle;
        self.pending = DefaultRoutes::default();
        self.want_resync = true;
        self.failed = true;
    }

    fn on_dump(&mut self, data: &[u8]) {
        let Dump::Running { ipv6, seq } = self.state else { return };
        for msg in messages(data).filter(|m| m.seq == seq) {
            if msg.flags & NLM_F_DUMP_INTR != 0 {
                // The table changed while being dumped: finish, then dump again.
                self.want_resync = true;
            }
            match parse(&msg) {
                Event::Route { new: true, route: Some(r), .. } => self.pending.add(r, false),
                Event::Done(0) if !ipv6 => {
                    if self.start_dump(true).is_err() {
                        self.dump_failed();
                    }
                    return;
                }
                Event::Done(0) => {
                    self.live = std::mem::take(&mut self.pending);
                    self.state = Dump::Idle;
                    self.resyncs += 1;
                    return;
                }
                Event::Done(_) => return self.dump_failed(),
                Event::Error(e) if e != 0 => return self.dump_failed(),
                _ => {}
            }
        }
    }

    /// Applies notifications; true when a link or address changed.
    fn on_notify(&mut self, data: &[u8]) -> bool {
        self.failed = false;
        let mut links = false;
        for msg in messages(data) {
            match parse(&msg) {
                Event::Route { new, replace, route } => {
                    note(2);
                    let Some(r) = route else {
                        // A default replaced by an unusable one (blackhole...) took a route
                        // of ours with it: which one, only a dump can tell.
                        if replace && msg.payload.get(1) == Some(&0) {
                            self.request_resync();
                        }
                        continue;
                    };
                    let running = self.state != Dump::Idle;
                    for table in [Some(&mut self.live), running.then_some(&mut self.pending)].into_iter().flatten() {
                        if new {
                            table.add(r, replace);
                        } else {
                            table.remove(r);
                        }
                    }
                    // The dump may already hold the old state of this route.
                    self.want_resync |= running;
                }
                Event::Link { new, change, .. } => {
                    links = true;
                    // IPv4 flushes the routes of a link going down without RTM_DELROUTE.
                    if !new || change != 0 {
                        self.request_resync();
                    }
                }
                Event::Addr { new } => {
                    links = true;
                    // Removing an address can flush IPv4 routes, again silently.
                    if !new {
                        self.request_resync();
                    }
                }
                Event::Overrun => self.request_resync(),
                _ => {}
            }
        }
        links
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{poll, PollFd, PollFlags};
    use std::io::Write;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    fn nlmsg(ty: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = ((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&[7, 0, 0, 0, 0, 0, 0, 0]); // seq, pid
        m.extend_from_slice(payload);
        m.resize(align4(m.len()), 0);
        m
    }
    fn rta(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut a = ((4 + data.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(data);
        a.resize(align4(a.len()), 0);
        a
    }
    fn u32a(ty: u16, v: u32) -> Vec<u8> {
        rta(ty, &v.to_ne_bytes())
    }
    fn route(ty: u16, family: i32, dst_len: u8, table: u8, rtype: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut p = vec![family as u8, dst_len, 0, 0, table, 3, 0, rtype, 0, 0, 0, 0];
        p.extend(attrs.concat());
        nlmsg(ty, 0, &p)
    }
    fn event(buf: &[u8]) -> Event {
        let all: Vec<NlMsg> = messages(buf).collect();
        assert_eq!(all.len(), 1);
        parse(&all[0])
    }
    fn default_of(buf: &[u8]) -> Option<DefaultRoute> {
        match event(buf) {
            Event::Route { route, .. } => route,
            e => panic!("not a route: {e:?}"),
        }
    }
    fn dr(ipv6: bool, oif: u32, metric: u32) -> DefaultRoute {
        DefaultRoute { ipv6, oif, metric }
    }
    fn parses() -> [u64; 3] {
        ROUTE_PARSES.with(|c| c.get())
    }
    const V4: i32 = libc::AF_INET;
    const V6: i32 = libc::AF_INET6;

    #[test]
    fn route_messages() {
        let gw = rta(5, &[198, 18, 1, 2]);
        let v4 = route(RTM_NEWROUTE, V4, 0, 254, 1, &[gw, u32a(RTA_OIF, 3), u32a(RTA_PRIORITY, 100)]);
        let want = Event::Route { new: true, replace: false, route: Some(dr(false, 3, 100)) };
        assert_eq!(event(&v4), want);
        let mut replaced = v4.clone();
        replaced[6..8].copy_from_slice(&NLM_F_REPLACE.to_ne_bytes());
        assert!(matches!(event(&replaced), Event::Route { replace: true, .. }));
        let v6 = route(RTM_DELROUTE, V6, 0, 254, 1, &[u32a(RTA_OIF, 4)]);
        assert_eq!(event(&v6), Event::Route { new: false, replace: false, route: Some(dr(true, 4, 0)) });
        // struct rtnexthop { len, flags, hops, ifindex } twice: the first one counts.
        let hops: Vec<u8> = [7i32, 9].iter().flat_map(|i| [&[8u8, 0, 0, 0][..], &i.to_ne_bytes()].concat()).collect();
        let mp = route(RTM_NEWROUTE, V6, 0, 254, 1, &[u32a(RTA_PRIORITY, 5), rta(RTA_MULTIPATH, &hops)]);
        assert_eq!(default_of(&mp), Some(dr(true, 7, 5)));
        let mp_oif = route(RTM_NEWROUTE, V4, 0, 254, 1, &[rta(RTA_MULTIPATH, &hops), u32a(RTA_OIF, 2)]);
        assert_eq!(default_of(&mp_oif), Some(dr(false, 2, 0)));
        // RTA_TABLE overrides rtm_table (252 = RT_TABLE_COMPAT stands in for ids > 255).
        let compat = route(RTM_NEWROUTE, V4, 0, 252, 1, &[u32a(RTA_TABLE, 254), u32a(RTA_OIF, 3)]);
        assert_eq!(default_of(&compat), Some(dr(false, 3, 0)));
        let vrf = route(RTM_NEWROUTE, V4, 0, 254, 1, &[u32a(RTA_TABLE, 1000), u32a(RTA_OIF, 3)]);
        assert_eq!(default_of(&vrf), None);
        assert_eq!(default_of(&route(RTM_NEWROUTE, V4, 0, 100, 1, &[u32a(RTA_OIF, 3)])), None);
        // local, blackhole, unreachable (the IPv6 one on lo), prohibit, throw.
        for rtype in [2, 6, 7, 8, 9] {
            assert_eq!(default_of(&route(RTM_NEWROUTE, V6, 0, 254, rtype, &[u32a(RTA_OIF, 1)])), None);
        }
        assert_eq!(default_of(&route(RTM_NEWROUTE, V4, 0, 254, 1, &[u32a(RTA_PRIORITY, 1)])), None, "no oif");
        assert_eq!(default_of(&route(RTM_NEWROUTE, 28, 0, 254, 1, &[u32a(RTA_OIF, 1)])), None, "MPLS");
        assert_eq!(default_of(&route(RTM_NEWROUTE, V4, 0, 254, 1, &[vec![0; 8]])), None, "zero-length attr");
        assert_eq!(default_of(&nlmsg(RTM_NEWROUTE, 0, &[2, 0, 0])), None, "short rtmsg");
        // A prefix is decided on its header: its attributes are never read.
        let before = parses();
        let prefix = route(RTM_NEWROUTE, V4, 24, 254, 1, &[u32a(RTA_TABLE, 254), u32a(RTA_OIF, 3)]);
        assert_eq!(default_of(&prefix), None);
        let after = parses();
        assert_eq!((after[0] - before[0], after[1] - before[1]), (1, 0));
    }

    #[test]
    fn link_address_and_control_messages() {
        let mut ifi = vec![0u8, 0, 1, 0];
        ifi.extend([5i32.to_ne_bytes(), 0x1043u32.to_ne_bytes(), 1u32.to_ne_bytes()].concat());
        assert_eq!(event(&nlmsg(RTM_NEWLINK, 0, &ifi)), Event::Link { new: true, index: 5, flags: 0x1043, change: 1 });
        assert!(matches!(event(&nlmsg(RTM_DELLINK, 0, &ifi)), Event::Link { new: false, index: 5, .. }));
        assert_eq!(event(&nlmsg(RTM_NEWLINK, 0, &ifi[..12])), Event::Other);
        assert_eq!(event(&nlmsg(RTM_NEWADDR, 0, &[10, 64, 0, 0, 1, 0, 0, 0])), Event::Addr { new: true });
        assert_eq!(event(&nlmsg(RTM_DELADDR, 0, &[2, 24, 0, 0, 1, 0, 0, 0])), Event::Addr { new: false });
        assert_eq!(event(&nlmsg(NLMSG_DONE, 2, &0i32.to_ne_bytes())), Event::Done(0));
        assert_eq!(event(&nlmsg(NLMSG_DONE, 2, &(-4i32).to_ne_bytes())), Event::Done(4));
        assert_eq!(event(&nlmsg(NLMSG_DONE, 2, &[])), Event::Done(0));
        let err = [(-16i32).to_ne_bytes().to_vec(), nlmsg(RTM_GETROUTE, 0x301, &[])].concat();
        assert_eq!(event(&nlmsg(NLMSG_ERROR, 0, &err)), Event::Error(16));
        assert_eq!(event(&nlmsg(NLMSG_ERROR, 0, &[0; 20])), Event::Error(0));
        assert_eq!(event(&nlmsg(NLMSG_OVERRUN, 0, &[])), Event::Overrun);
        assert_eq!(event(&nlmsg(1, 0, &[])), Event::Other);
    }

    #[test]
    fn truncated_and_random_input_ends_the_walk() {
        let link = nlmsg(RTM_NEWLINK, 0, &[0; 16]);
        let v6 = route(RTM_NEWROUTE, V6, 0, 254, 1, &[u32a(RTA_OIF, 4), u32a(RTA_PRIORITY, 1024)]);
        let buf = [v6, link, nlmsg(NLMSG_DONE, 2, &[0; 4])].concat();
        let full: Vec<NlMsg> = messages(&buf).collect();
        assert_eq!(full.len(), 3);
        for n in 0..buf.len() {
            let got: Vec<NlMsg> = messages(&buf[..n]).collect();
            assert_eq!(got[..], full[..got.len()], "prefix {n}");
            got.iter().for_each(|m| assert_ne!(parse(m), Event::Overrun));
        }
        for len in [0u32, 1, 15, 1000, u32::MAX] {
            let mut bad = buf.clone();
            bad[0..4].copy_from_slice(&len.to_ne_bytes());
            assert_eq!(messages(&bad).count(), 0, "len {len}");
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let mut junk: Vec<u8> = (0..next() % 200).map(|_| next() as u8).collect();
            if junk.len() >= 4 && next() % 2 == 0 {
                let small = (next() % junk.len() as u64) as u32; // a plausible length
                junk[0..4].copy_from_slice(&small.to_ne_bytes());
            }
            let mut count = 0;
            for m in messages(&junk) {
                count += 1;
                let _ = parse(&NlMsg { ty: [RTM_NEWROUTE, RTM_NEWLINK, m.ty][count % 3], ..m });
            }
            assert!(count * NLMSG_HDRLEN <= junk.len());
        }
    }

    #[test]
    fn default_routes_table() {
        let mut t = DefaultRoutes::default();
        assert_eq!(t.best(false), None);
        t.add(dr(false, 5, 200), false);
        t.add(dr(false, 3, 100), false);
        assert_eq!(t.best(false), Some(3));
        t.add(dr(false, 2, 100), false);
        t.add(dr(false, 3, 100), false);
        assert_eq!(t.best(false), Some(2), "a tie goes to the lowest ifindex");
        t.remove(dr(false, 2, 100));
        assert_eq!(t.best(false), Some(3));
        t.add(dr(false, 9, 100), true);
        assert_eq!(t.best(false), Some(9), "NLM_F_REPLACE drops the route of the same metric");
        t.remove(dr(false, 9, 100));
        t.remove(dr(false, 1, 1));
        assert_eq!(t.best(false), Some(5));
        assert_eq!(t.best(true), None);
        t.add(dr(true, 7, 1024), false);
        assert_eq!((t.best(false), t.best(true)), (Some(5), Some(7)));
    }

    fn ip_with(args: &str, input: &str) {
        let bin = ["/usr/sbin/ip", "/sbin/ip"].into_iter().find(|p| std::path::Path::new(p).exists());
        let mut child = Command::new(bin.expect("no ip(8) in /usr/sbin or /sbin"))
            .args(args.split_whitespace())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ip");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write to ip");
        let out = child.wait_with_output().expect("wait for ip");
        assert!(out.status.success(), "ip {args}: {}", String::from_utf8_lossy(&out.stderr));
    }
    fn ip(args: &str) {
        ip_with(args, "");
    }
    fn ifindex(name: &str) -> u32 {
        let c = std::ffi::CString::new(name).expect("name");
        // SAFETY: a NUL-terminated string.
        let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
        assert_ne!(i, 0, "no link {name}");
        i
    }
    fn settled(m: &RouteMonitor) -> bool {
        m.state == Dump::Idle && !m.want_resync && !m.needs_read()
    }
    fn wait(m: &mut RouteMonitor, what: &str, cond: impl Fn(&RouteMonitor) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            m.on_readable();
            if cond(m) {
                return;
            }
            let state = (m.default_ifindex(false), m.default_ifindex(true), m.resyncs(), m.state);
            assert!(Instant::now() < deadline, "timed out waiting for {what}: (v4, v6, resyncs, dump) = {state:?}");
            if !m.needs_read() {
                let [a, b] = m.fds();
                let _ = poll(&mut [PollFd::new(a, PollFlags::POLLIN), PollFd::new(b, PollFlags::POLLIN)], 100u16);
            }
        }
    }

    #[test]
    fn follows_the_kernel_in_a_private_network_namespace() {
        let t = std::thread::spawn(|| {
            // SAFETY: no pointers; moves only this thread (and the `ip` it forks) to a new netns.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                let e = io::Error::last_os_error();
                panic!("unshare(CLONE_NEWNET) failed ({e}): this test must run as root (CAP_SYS_ADMIN)");
            }
            in_private_namespace();
        });
        if let Err(e) = t.join() {
            std::panic::resume_unwind(e);
        }
    }

    fn in_private_namespace() {
        ip("link set lo up");
        for (a, b) in [("va", "vb"), ("vc", "vd"), ("vx", "vy")] {
            ip(&format!("link add {a} type veth peer name {b}"));
            if a == "va" {
                // No address event when va goes down, so only the link event can start the
                // resync that notices IPv4's silent flush.
                ip("link set va addrgenmode none");
                std::fs::write("/proc/sys/net/ipv6/conf/va/keep_addr_on_down", "1").expect("keep_addr_on_down");
            }
            ip(&format!("link set {a} up"));
            ip(&format!("link set {b} up"));
        }
        ip("addr add 198.18.1.1/24 dev va");
        ip("addr add 198.18.2.1/24 dev vc");
        ip("addr add 198.18.3.1/24 dev vx");
        ip("-6 addr add 2001:2:0:1::1/64 dev va nodad");
        ip("-6 addr add 2001:2:0:2::1/64 dev vc nodad");
        let (va, vc) = (ifindex("va"), ifindex("vc"));
        assert!(va < vc, "the replace check below relies on it");
        let mut m = RouteMonitor::open().expect("open the route monitor");
        wait(&mut m, "the first resync", |m| m.resyncs() > 0);
        assert_eq!((m.default_ifindex(false), m.default_ifindex(true)), (None, None));
        let gateways = [(false, "-4", "198.18.1.2", "198.18.2.2"), (true, "-6", "2001:2:0:1::2", "2001:2:0:2::2")];
        for (v6, f, ga, gc) in gateways {
            ip(&format!("{f} route add default via {ga} dev va metric 100"));
            ip(&format!("{f} route add default via {gc} dev vc metric 200"));
            wait(&mut m, "the lowest metric", |m| m.default_ifindex(v6) == Some(va));
            // Takes the place of va's metric-100 route; no RTM_DELROUTE says so.
            ip(&format!("{f} route replace default via {gc} dev vc metric 100"));
            wait(&mut m, "a replaced route", |m| m.default_ifindex(v6) == Some(vc));
            ip(&format!("{f} route del default via {gc} dev vc metric 100"));
            ip(&format!("{f} route add default via {ga} dev va metric 150"));
            wait(&mut m, "a deleted route", |m| m.default_ifindex(v6) == Some(va));
        }
        // A blackhole takes the place of va's route: not usable, but va's route is gone.
        ip("route replace blackhole default metric 150");
        wait(&mut m, "a route replaced by a blackhole", |m| m.default_ifindex(false) == Some(vc));
        ip("route del blackhole default metric 150");
        ip("route add default via 198.18.1.2 dev va metric 150");
        wait(&mut m, "va again", |m| m.default_ifindex(false) == Some(va));
        // IPv4 flushes va's routes without RTM_DELROUTE.
        ip("link set va down");
        let both_vc = |m: &RouteMonitor| (m.default_ifindex(false), m.default_ifindex(true)) == (Some(vc), Some(vc));
        wait(&mut m, "a link set down", both_vc);

        wait(&mut m, "quiet", settled);
        let (before, resyncs) = (parses(), m.resyncs());
        let script: String =
            (0..2000).map(|i| format!("route add 198.19.{}.{}/32 dev vc\n", i / 250, i % 250 + 1)).collect();
        ip_with("-batch -", &script);
        // A removed address forces a resync, which dumps the 2,000 routes as well.
        ip("addr del 198.18.3.1/24 dev vx");
        wait(&mut m, "a resync after the batch", |m| m.resyncs() > resyncs && settled(m));
        let after = parses();
        let [headers, bodies, notified] = [0, 1, 2].map(|i| after[i] - before[i]);
        assert!(headers >= 2000, "the dump should have carried the batch: {headers} route messages");
        assert!(bodies <= 8, "only default routes should have their attributes read: {bodies}");
        assert!(notified < 100, "the socket filter should keep prefix notifications in the kernel: {notified}");
        assert!(both_vc(&m));

        // Overflow a tiny buffer with address events (which alone start no resync): the lost
        // notifications must be made up for by one.
        m.notify.set_recv_buffer_size(0).expect("shrink the receive buffer");
        let resyncs = m.resyncs();
        ip_with("-batch -", &(1..=200).map(|i| format!("addr add 198.18.4.{i}/32 dev vx\n")).collect::<String>());
        wait(&mut m, "a resync after an overrun", |m| m.resyncs() > resyncs && settled(m));
        assert!(both_vc(&m));

        // A failed dump is retried after the next change; until then nothing stays readable.
        let resyncs = m.resyncs();
        ip("addr del 198.18.4.1/32 dev vx");
        wait(&mut m, "a resync to start", |m| m.state != Dump::Idle);
        let Dump::Running { seq, .. } = m.state else { unreachable!() };
        let mut err = nlmsg(NLMSG_ERROR, 0, &[(-libc::EBUSY).to_ne_bytes(), [0; 4]].concat());
        err[8..12].copy_from_slice(&seq.to_ne_bytes());
        m.on_dump(&err);
        let dump_fd_quiet = |m: &RouteMonitor| poll(&mut [PollFd::new(m.fds()[1], PollFlags::POLLIN)], 0u16) == Ok(0);
        wait(&mut m, "the abandoned dump to be drained", |m| dump_fd_quiet(m) && !m.needs_read());
        assert!(m.state == Dump::Idle && m.want_resync && m.resyncs() == resyncs);
        ip("addr del 198.18.4.2/32 dev vx");
        wait(&mut m, "the retried resync", |m| m.resyncs() > resyncs && settled(m));
        assert!(both_vc(&m));
    }
}
