//! The engine thread: targets, the schedule and pacer, probes in flight, transmit stamps,
//! deadlines and outcomes, shared by both kinds of probe.
use super::{family_of, Command, IcmpMode, ProbeKind, Proto, Shared, TargetId, TargetSnapshot, TcpTransports};
use crate::cmsg::{self, OptIdCmsg};
use crate::config::{EngineConfig, Interface, StampKeyMode};
use crate::counters::EngineCounters;
use crate::inflight::{Ended, InFlight, Key, Lookup, Probe, Reply};
use crate::ports::PortPool;
use crate::recv_batch::{self, RecvBatch};
use crate::routes;
use crate::rtt;
use crate::schedule::{self, SendQueue};
use crate::sockets::FamilySockets;
use crate::stats::{Outcome, TargetStats};
use crate::token::TokenKey;
use crate::wire::icmp::Family;
use nix::sys::eventfd::EventFd;
use socket2::SockAddr;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) struct Target {
    pub id: TargetId,
    pub addr: IpAddr,
    pub kind: ProbeKind,
    /// Next ICMP sequence number.
    pub seq: u16,
    pub stats: TargetStats,
}

/// How transmit timestamps are tied to probes on one socket.
enum StampKeys {
    /// `SCM_TS_OPT_ID` on each send (Linux >= 6.13): the stamp carries the probe's own key.
    PerSend,
    /// Older kernels: the socket counts timestamped sends from 0; `ring[n % len]` holds the
    /// key of the n-th. A send error is taken not to consume a number.
    Counter { next: u32, ring: Vec<u32> },
}

const COUNTER_RING: usize = 1 << 16;

impl StampKeys {
    fn counter() -> Self {
        StampKeys::Counter { next: 0, ring: vec![u32::MAX; COUNTER_RING] }
    }
}

struct Transport {
    sockets: FamilySockets,
    keys: StampKeys,
    /// The receive socket's drop count as last reported (`SO_RXQ_OVFL`).
    drops_seen: u32,
}

/// Transports by slot: ICMP v4, ICMP v6, TCP v4, TCP v6.
const SLOTS: usize = 4;

fn slot(proto: Proto, family: Family) -> usize {
    let p = match proto {
        Proto::Icmp => 0,
        Proto::Tcp => 2,
    };
    p + usize::from(family == Family::V6)
}

fn slot_info(i: usize) -> (Proto, Family) {
    let proto = if i < 2 { Proto::Icmp } else { Proto::Tcp };
    (proto, if i.is_multiple_of(2) { Family::V4 } else { Family::V6 })
}

pub(super) fn proto_of(kind: ProbeKind) -> Proto {
    match kind {
        ProbeKind::Icmp => Proto::Icmp,
        ProbeKind::Tcp { .. } => Proto::Tcp,
    }
}

/// How often the interfaces probes leave from are checked (default route, interface index).
const INTERFACE_CHECK: Duration = Duration::from_secs(1);

/// Packets handled per socket per loop turn, so one busy socket cannot starve the rest.
pub(super) const BATCH: usize = 256;
/// How far the pacer may catch up after the thread was late.
const PACER_CATCH_UP: Duration = Duration::from_millis(1);
/// The shortest sleep between two turns that send: probes due closer together than this leave
/// together, up to this late. At 50,000 probes/s a wake-up per probe took a fifth of the engine
/// thread (measured with perf; see the README's benchmarks); a turn then sends a few probes.
const SEND_QUANTUM: Duration = Duration::from_micros(100);
/// Messages one receive call reads at most.
const RECV_BATCH: usize = 32;
/// Windows computed between two looks at the schedule while answering a snapshot.
const SNAPSHOT_CHUNK: usize = 16;
/// The longest probe written (an ICMP echo request of 64 bytes; a SYN is 40).
pub(super) const MAX_PROBE_LEN: usize = 64;
// So that taking a probe-sized chunk of the packet buffer can never fail.
const _: () = assert!(MAX_PROBE_LEN >= crate::wire::icmp::PROBE_LEN && MAX_PROBE_LEN >= crate::wire::tcp::SYN_LEN);

/// An answer to a probe, as the protocol code recognised it.
pub(super) struct Answer {
    pub key: Key,
    /// Must equal the probe's token.
    pub token: u64,
    pub from: Option<IpAddr>,
    /// What the probe must have been sent as (protocol and port).
    pub kind: ProbeKind,
    /// Must equal the probe's `seq` (ICMP sequence, or TCP source port).
    pub seq: u16,
    pub reply: Reply,
}

pub(super) struct EngineLoop {
    pub config: EngineConfig,
    pub icmp_mode: IcmpMode,
    transports: [Option<Transport>; SLOTS],
    pub ports: Option<PortPool>,
    commands: Receiver<Command>,
    wake: Arc<EventFd>,
    pub shared: Arc<Shared>,
    pub targets: Vec<Option<Target>>,
    free_targets: Vec<usize>,
    /// Slot of each target (u32: a map entry of 8 bytes).
    index_of: HashMap<TargetId, u32>,
    schedule: SendQueue<(u32, TargetId)>,
    pub inflight: InFlight,
    deadlines: VecDeque<(Instant, Key)>,
    pacer_next: Instant,
    gap: Duration,
    /// When a turn last sent a probe (see SEND_QUANTUM).
    last_send_turn: Instant,
    pub tokens: TokenKey,
    pub packet: [u8; MAX_PROBE_LEN],
    opt_id: OptIdCmsg,
    /// Messages read by one `recvmmsg` (taken out while they are handled).
    batch: RecvBatch,
    stopping: bool,
    pub started: Instant,
    /// The interface index each family's sockets are bound to (IPv4, IPv6).
    pub bound: [Option<u32>; 2],
    next_interface_check: Instant,
    /// The source address the kernel routes from towards a TCP IPv4 target, and when it was
    /// looked up (the SYN's checksum covers it). Kept here, not in `Target`, so ICMP targets
    /// do not carry it; stale entries go with the interface check.
    pub route_sources: HashMap<IpAddr, (IpAddr, Instant)>,
}

impl EngineLoop {
    pub fn new(
        config: EngineConfig,
        icmp_mode: IcmpMode,
        v4: Option<FamilySockets>,
        v6: Option<FamilySockets>,
        commands: Receiver<Command>,
        wake: Arc<EventFd>,
        shared: Arc<Shared>,
    ) -> Self {
        let started = Instant::now();
        let mut engine = EngineLoop {
            gap: Duration::from_secs(1) / config.max_pps,
            config,
            icmp_mode,
            transports: [None, None, None, None],
            ports: None,
            commands,
            wake,
            shared,
            targets: Vec::new(),
            free_targets: Vec::new(),
            index_of: HashMap::new(),
            schedule: SendQueue::new(started),
            inflight: InFlight::default(),
            deadlines: VecDeque::new(),
            pacer_next: Instant::now(),
            last_send_turn: Instant::now(),
            tokens: TokenKey::new(),
            packet: [0; MAX_PROBE_LEN],
            opt_id: OptIdCmsg::new(),
            batch: RecvBatch::new(RECV_BATCH),
            stopping: false,
            started,
            bound: [None, None],
            next_interface_check: Instant::now(),
            route_sources: HashMap::new(),
        };
        engine.add_transport(Proto::Icmp, Family::V4, v4);
        engine.add_transport(Proto::Icmp, Family::V6, v6);
        engine
    }

    fn add_transport(&mut self, proto: Proto, family: Family, sockets: Option<FamilySockets>) {
        let keys = match self.config.stamp_keys {
            StampKeyMode::Auto => StampKeys::PerSend,
            StampKeyMode::Counter => StampKeys::counter(),
        };
        self.transports[slot(proto, family)] = sockets.map(|sockets| Transport { sockets, keys, drops_seen: 0 });
        if let Some(t) = &self.transports[slot(proto, family)] {
            // A transport opened later joins its family's binding. Without CAP_NET_RAW it cannot.
            let _ = t.sockets.bind_to_interface(self.bound[usize::from(family == Family::V6)]);
        }
    }

    /// Binds each family's sockets to the interface it should leave from: the named one, or
    /// the one of the default route. A named interface that is gone keeps its old binding, so
    /// probes fail to send (and count so) until it is back.
    fn follow_interfaces(&mut self) {
        for (i, family) in [Family::V4, Family::V6].into_iter().enumerate() {
            let choice = if family == Family::V4 { &self.config.interface4 } else { &self.config.interface6 };
            let index_of = |name: &str| nix::net::if_::if_nametoindex(name).ok();
            let want = match choice {
                Interface::Routed => continue,
                Interface::Named(name) => match index_of(name) {
                    Some(index) => Some(index),
                    None => continue,
                },
                Interface::Auto => routes::current_default(family == Family::V6).and_then(|n| index_of(&n)),
            };
            if want == self.bound[i] {
                continue;
            }
            self.bound[i] = want;
            // Sources were looked up through the old interface.
            self.route_sources.retain(|dst, _| family_of(*dst) != family);
            for proto in [Proto::Icmp, Proto::Tcp] {
                if let Some(t) = &self.transports[slot(proto, family)] {
                    // Fails only without CAP_NET_RAW (unprivileged mode, or after -drop): the
                    // sockets then keep their binding, and a stale one shows as send errors.
                    let _ = t.sockets.bind_to_interface(want);
                }
            }
        }
    }

    pub fn counters(&self, proto: Proto) -> &EngineCounters {
        self.shared.counters(proto)
    }

    pub fn run(&mut self) -> io::Result<()> {
        // Precise wake-ups for pacing: the default 50 us timer slack would blur the schedule.
        // SAFETY: prctl with integer arguments only affects this thread.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        while !self.stopping {
            self.handle_commands();
            if self.stopping {
                break;
            }
            if Instant::now() >= self.next_interface_check {
                self.follow_interfaces();
                self.forget_stale_sources(Instant::now());
                self.next_interface_check = Instant::now() + INTERFACE_CHECK;
            }
            self.send_due(Instant::now());
            self.expire(Instant::now());
            self.wait()?;
        }
        Ok(())
    }

    fn wait(&mut self) -> io::Result<()> {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        if let Some((due, _)) = self.schedule.peek() {
            next = Some(due.max(self.pacer_next).max(self.last_send_turn + SEND_QUANTUM));
        }
        if let Some((deadline, _)) = self.deadlines.front() {
            next = Some(next.map_or(*deadline, |n| n.min(*deadline)));
        }
        next = Some(next.map_or(self.next_interface_check, |n| n.min(self.next_interface_check)));
        let timeout = next.map(|n| {
            let d = n.saturating_duration_since(now);
            libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: d.subsec_nanos() as libc::c_long }
        });
        let pollfd = |fd: i32, events: i16| libc::pollfd { fd, events, revents: 0 };
        // The wake-up, then per transport its receive and send socket (-1 = absent, ignored).
        let mut fds = [pollfd(-1, 0); 1 + 2 * SLOTS];
        fds[0] = pollfd(self.wake.as_fd().as_raw_fd(), libc::POLLIN);
        for (i, t) in self.transports.iter().enumerate() {
            if let Some(t) = t {
                fds[1 + 2 * i] = pollfd(t.sockets.rx_fd().as_raw_fd(), libc::POLLIN);
                // Transmit timestamps raise POLLERR, which poll reports unasked.
                fds[2 + 2 * i] = pollfd(t.sockets.tx_fd().as_raw_fd(), 0);
            }
        }
        let ts_ptr = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `fds` and `ts_ptr` are valid for the call; no signal mask is passed.
        let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ts_ptr, std::ptr::null()) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
        }
        if fds[0].revents != 0 {
            let _ = self.wake.read();
        }
        for i in 0..SLOTS {
            let (proto, family) = slot_info(i);
            if fds[1 + 2 * i].revents != 0 {
                match proto {
                    Proto::Icmp => self.receive_icmp(family),
                    Proto::Tcp => self.receive_tcp(family),
                }
            }
            if fds[2 + 2 * i].revents != 0 {
                self.receive_tx_stamps(i);
            }
        }
        Ok(())
    }

    fn handle_commands(&mut self) {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Track { id, addr, kind } => self.track(id, addr, kind),
                Command::Untrack { id } => self.untrack(id),
                Command::Snapshot { ids, reply } => {
                    // A window takes microseconds; hundreds of them must not hold back due probes.
                    let mut out = Vec::with_capacity(ids.len());
                    for chunk in ids.chunks(SNAPSHOT_CHUNK) {
                        out.extend(chunk.iter().map(|id| self.snapshot(*id)));
                        self.send_due(Instant::now());
                    }
                    let _ = reply.send(out);
                }
                Command::OpenTcp(TcpTransports { v4, v6, ports }) => {
                    self.add_transport(Proto::Tcp, Family::V4, v4);
                    self.add_transport(Proto::Tcp, Family::V6, v6);
                    self.ports = Some(ports);
                }
                Command::Stop => self.stopping = true,
            }
            // Thousands of targets added or removed at once still leave the due probes on time.
            self.send_due(Instant::now());
        }
    }

    fn track(&mut self, id: TargetId, addr: IpAddr, kind: ProbeKind) {
        let target = Target { id, addr, kind, seq: 0, stats: TargetStats::default() };
        let index = match self.free_targets.pop() {
            Some(i) => {
                self.targets[i] = Some(target);
                i
            }
            None => {
                self.targets.push(Some(target));
                self.targets.len() - 1
            }
        };
        self.index_of.insert(id, index as u32);
        // Its slot's fixed phase in the round: targets spread evenly, and nobody else's moves.
        let fraction = schedule::phase_fraction(index);
        let due = schedule::first_due(self.started, Instant::now(), self.config.interval, fraction);
        self.schedule.add(due, (index as u32, id));
    }

    fn untrack(&mut self, id: TargetId) {
        if let Some(index) = self.index_of.remove(&id).map(|i| i as usize) {
            self.targets[index] = None;
            self.free_targets.push(index);
        }
    }

    fn snapshot(&mut self, id: TargetId) -> Option<TargetSnapshot> {
        let index = *self.index_of.get(&id)? as usize;
        let target = self.targets.get_mut(index)?.as_mut()?;
        Some(TargetSnapshot { counters: target.stats.counters(), window: target.stats.window() })
    }

    pub fn target(&self, index: usize) -> Option<&Target> {
        self.targets.get(index)?.as_ref()
    }

    pub fn target_mut(&mut self, index: usize, id: TargetId) -> Option<&mut Target> {
        self.targets.get_mut(index)?.as_mut().filter(|t| t.id == id)
    }

    fn send_due(&mut self, now: Instant) {
        for _ in 0..BATCH {
            let Some((due, (slot, id))) = self.schedule.peek() else {
                return;
            };
            let index = slot as usize;
            if due > now || self.pacer_next > now {
                return;
            }
            self.schedule.pop();
            if self.target_mut(index, id).is_none() {
                continue; // untracked since it was scheduled
            }
            self.last_send_turn = now;
            self.pacer_next = self.pacer_next.max(now.checked_sub(PACER_CATCH_UP).unwrap_or(now)) + self.gap;
            let late = Instant::now().saturating_duration_since(due).as_nanos() as u64;
            if let Some(kind) = self.targets.get(index).and_then(|t| t.as_ref()).map(|t| t.kind) {
                let c = self.counters(proto_of(kind));
                EngineCounters::add(&c.send_delay_sum_ns, late);
                EngineCounters::raise(&c.send_delay_max_ns, late);
                for (over_ns, counter) in [
                    (100_000, &c.send_delay_over_100us),
                    (1_000_000, &c.send_delay_over_1ms),
                    (10_000_000, &c.send_delay_over_10ms),
                ] {
                    if late > over_ns {
                        EngineCounters::add(counter, 1);
                    }
                }
            }
            self.send_probe(index, id, now);
            let mut next = due + self.config.interval;
            if next < now {
                next = now; // the pps cap cannot keep up: send as soon as the pacer allows
            }
            self.schedule.put_back(next, (slot, id));
        }
    }

    fn send_probe(&mut self, index: usize, id: TargetId, now: Instant) {
        let Some(target) = self.target_mut(index, id) else {
            return;
        };
        let (kind, addr) = (target.kind, target.addr);
        let proto = proto_of(kind);
        let seq = match kind {
            ProbeKind::Icmp => {
                let seq = target.seq;
                target.seq = seq.wrapping_add(1);
                seq
            }
            ProbeKind::Tcp { .. } => match self.ports.as_mut() {
                Some(p) => p.next_port(),
                None => return self.fail_send(proto, index, id, None),
            },
        };
        let probe = Probe {
            target_index: index as u32,
            target_id: id,
            tcp: proto == Proto::Tcp,
            seq,
            token: 0,
            sent_at: now,
            deadline: now + self.config.timeout,
            tx_stamp_ns: None,
            tx_hw_ns: None,
            reply: None,
        };
        let Some(key) = self.inflight.insert(probe) else {
            EngineCounters::add(&self.counters(proto).inflight_full, 1);
            return self.finish_target(index, id, Outcome::SendError);
        };
        let written = match kind {
            ProbeKind::Icmp => Ok(self.write_echo(key, seq, addr)),
            ProbeKind::Tcp { port } => self.write_syn(key, seq, addr, port, now),
        };
        let (len, token) = match written {
            Ok(w) => w,
            Err(_) => return self.fail_send(proto, index, id, Some(key)),
        };
        if let Some(p) = self.inflight.get_mut(key) {
            p.token = token;
        }
        // The fallback clock reading, as close to sendmsg as it gets.
        let sent_at = Instant::now();
        match self.transmit(proto, index, id, key, len) {
            Ok(()) => {
                EngineCounters::add(&self.counters(proto).packets_sent, 1);
                if let Some(p) = self.inflight.get_mut(key) {
                    p.sent_at = sent_at;
                    p.deadline = sent_at + self.config.timeout;
                    self.deadlines.push_back((p.deadline, key));
                }
            }
            Err(_) => self.fail_send(proto, index, id, Some(key)),
        }
    }

    /// A probe that could not be sent: a final outcome, counted.
    fn fail_send(&mut self, proto: Proto, index: usize, id: TargetId, key: Option<Key>) {
        EngineCounters::add(&self.counters(proto).send_errors, 1);
        if let Some(key) = key {
            self.inflight.remove(key, Ended::Other);
        }
        self.finish_target(index, id, Outcome::SendError);
    }

    fn transmit(&mut self, proto: Proto, index: usize, id: TargetId, key: Key, len: usize) -> io::Result<()> {
        let Some(target) = self.targets.get(index).and_then(|t| t.as_ref()).filter(|t| t.id == id) else {
            return Ok(());
        };
        let Some(t) = self.transports[slot(proto, family_of(target.addr))].as_mut() else {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "no socket for this family"));
        };
        // Built per send rather than kept: 128 bytes a target otherwise.
        let dst = &SockAddr::from(SocketAddr::new(target.addr, 0));
        let packet = &self.packet[..len];
        if let StampKeys::PerSend = t.keys {
            match t.sockets.send(dst, packet, Some(self.opt_id.set(key.0))) {
                // This kernel has no SCM_TS_OPT_ID: mirror the socket's own counter from now on.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => t.keys = StampKeys::counter(),
                other => return other,
            }
        }
        if let StampKeys::Counter { next, ring } = &mut t.keys {
            t.sockets.send(dst, packet, None)?;
            ring[*next as usize % COUNTER_RING] = key.0;
            *next = next.wrapping_add(1);
        }
        Ok(())
    }

    pub fn finish_target(&mut self, index: usize, id: TargetId, outcome: Outcome) {
        if let Some(t) = self.target_mut(index, id) {
            t.stats.record(outcome);
        }
    }

    /// Ends a probe whose reply and transmit stamp are both in, or whose deadline passed.
    fn finish(&mut self, key: Key) {
        let Some(probe) = self.inflight.get_mut(key).copied() else {
            return;
        };
        let proto = if probe.tcp { Proto::Tcp } else { Proto::Icmp };
        let outcome = match probe.reply {
            Some(reply) => {
                let stamps = rtt::Stamps {
                    tx_sw: probe.tx_stamp_ns,
                    rx_sw: reply.rx_stamp_ns,
                    tx_hw: probe.tx_hw_ns,
                    rx_hw: reply.rx_hw_ns,
                };
                let (rtt_ns, clock, why) = rtt::choose_rtt(stamps, probe.sent_at, reply.at, self.config.timeout);
                let c = self.counters(proto);
                let by_clock = match clock {
                    rtt::Clock::Hardware => &c.rtt_hardware,
                    rtt::Clock::Software => &c.rtt_software,
                    rtt::Clock::Monotonic => &c.rtt_monotonic,
                };
                EngineCounters::add(by_clock, 1);
                for (happened, counter) in [
                    (why.tx_missing, &c.tx_timestamp_missing),
                    (why.rx_missing, &c.rx_timestamp_missing),
                    (why.inconsistent, &c.timestamp_inconsistent),
                ] {
                    if happened {
                        EngineCounters::add(counter, 1);
                    }
                }
                Outcome::Reply { rtt_ns, closed: reply.closed }
            }
            None => Outcome::Timeout,
        };
        let ended = if probe.reply.is_some() { Ended::Replied } else { Ended::Other };
        self.inflight.remove(key, ended);
        self.finish_target(probe.target_index as usize, probe.target_id, outcome);
    }

    /// Whether a probe has every stamp worth waiting for: its reply, the software transmit
    /// stamp, and with `-hard` the hardware one (a probe still missing some ends at its deadline).
    fn complete(&self, p: &Probe) -> bool {
        p.reply.is_some() && p.tx_stamp_ns.is_some() && (!self.config.hard || p.tx_hw_ns.is_some())
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, key)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            self.finish(key); // a no-op for probes that already ended
        }
    }

    /// Records an answer to a probe, or counts why it changes nothing. `authentic` tells
    /// whether a packet whose probe record is gone was still ours (then it is late).
    pub fn on_answer(&mut self, proto: Proto, a: Answer, authentic: impl FnOnce(&Self) -> bool) {
        let c = self.shared.counters(proto);
        match self.inflight.lookup(a.key, a.token) {
            Lookup::Live => {}
            Lookup::Ended(Ended::Replied) => return EngineCounters::add(&c.replies_duplicate, 1),
            Lookup::Ended(Ended::Other) => return EngineCounters::add(&c.replies_late, 1),
            Lookup::Unknown => {
                let counter = if authentic(self) { &c.replies_late } else { &c.replies_foreign };
                return EngineCounters::add(counter, 1);
            }
        }
        let Some(probe) = self.inflight.get(a.key) else {
            return;
        };
        let target = self.target(probe.target_index as usize).filter(|t| t.id == probe.target_id);
        let matches = target.is_some_and(|t| Some(t.addr) == a.from && t.kind == a.kind) && probe.seq == a.seq;
        if !matches {
            return EngineCounters::add(&c.replies_foreign, 1);
        }
        let Some(probe) = self.inflight.get_mut(a.key) else {
            return;
        };
        if probe.reply.is_some() {
            return EngineCounters::add(&c.replies_duplicate, 1);
        }
        probe.reply = Some(a.reply);
        let probe = *probe;
        if self.complete(&probe) {
            self.finish(a.key);
        }
        // Otherwise the transmit stamp is still on its way: it ends the probe, or the deadline does.
    }

    /// An ICMP error quoting a probe: when it matches one in flight, that probe ends lost.
    pub fn on_quoted_error(&mut self, proto: Proto, key: Key, token: u64, dst: IpAddr, kind: ProbeKind, seq: u16) {
        let c = self.shared.counters(proto);
        if self.inflight.lookup(key, token) != Lookup::Live {
            return EngineCounters::add(&c.icmp_errors_unmatched, 1);
        }
        let Some(probe) = self.inflight.get(key).copied() else {
            return;
        };
        let target = self.target(probe.target_index as usize).filter(|t| t.id == probe.target_id);
        let matches = target.is_some_and(|t| t.addr == dst && t.kind == kind) && probe.seq == seq;
        if probe.reply.is_some() || !matches {
            return EngineCounters::add(&c.icmp_errors_unmatched, 1);
        }
        EngineCounters::add(&c.icmp_errors, 1);
        self.inflight.remove(key, Ended::Other);
        self.finish_target(probe.target_index as usize, probe.target_id, Outcome::IcmpError);
    }

    /// Hands what a transport has queued (its send socket's error queue when `tx_stamps`) to
    /// `handle`, a `recvmmsg` at a time, each message with when its batch was read; up to
    /// BATCH messages a turn. A read failure is counted and ends the turn for that socket.
    pub(super) fn drain(
        &mut self,
        proto: Proto,
        family: Family,
        tx_stamps: bool,
        mut handle: impl FnMut(&mut Self, recv_batch::Message<'_>, Instant),
    ) {
        let mut batch = std::mem::take(&mut self.batch);
        let mut handled = 0;
        while handled < BATCH {
            let Some(t) = self.transports[slot(proto, family)].as_ref() else {
                break;
            };
            let read =
                if tx_stamps { t.sockets.recv_tx_stamps(&mut batch) } else { t.sockets.recv_replies(&mut batch) };
            let at = Instant::now();
            let n = match read {
                Ok(n) => n,
                Err(_) => {
                    EngineCounters::add(&self.counters(proto).receive_errors, 1);
                    break;
                }
            };
            for m in (0..n).filter_map(|i| batch.message(i)) {
                handle(self, m, at);
            }
            handled += n;
            if n < batch.capacity() {
                break; // the queue is empty
            }
        }
        self.batch = batch;
    }

    /// Counts what a receive socket reports it dropped for a full buffer since the last report.
    pub fn count_receive_drops(&mut self, proto: Proto, family: Family, reported: Option<u32>) {
        let Some(total) = reported else {
            return;
        };
        let Some(t) = self.transports[slot(proto, family)].as_mut() else {
            return;
        };
        let new = total.wrapping_sub(t.drops_seen);
        t.drops_seen = total;
        EngineCounters::add(&self.shared.counters(proto).receive_queue_drops, u64::from(new));
    }

    /// Drains one transport's error queue of transmit timestamps.
    fn receive_tx_stamps(&mut self, slot_index: usize) {
        let (proto, family) = slot_info(slot_index);
        self.drain(proto, family, true, |engine, m, _| engine.on_tx_stamp(slot_index, proto, m.ctrl));
    }

    fn on_tx_stamp(&mut self, slot_index: usize, proto: Proto, ctrl: &[u8]) {
        let info = cmsg::parse(ctrl);
        // With -hard (OPT_TX_SWHW) the software and the hardware stamp come as two messages.
        let Some(err) = info.extended_err.filter(|e| e.is_tx_timestamp()) else {
            return;
        };
        if info.software.is_none() && info.hardware.is_none() {
            return;
        }
        let Some(t) = self.transports[slot_index].as_ref() else {
            return;
        };
        let key = match &t.keys {
            StampKeys::PerSend => Key(err.data),
            StampKeys::Counter { ring, .. } => Key(ring[err.data as usize % COUNTER_RING]),
        };
        let fresh = |have: Option<i64>, got: Option<crate::cmsg::Timestamp>| have.is_none() || got.is_none();
        match self.inflight.get_mut(key) {
            Some(p) if fresh(p.tx_stamp_ns, info.software) && fresh(p.tx_hw_ns, info.hardware) => {
                p.tx_stamp_ns = p.tx_stamp_ns.or(info.software.map(|t| t.0));
                p.tx_hw_ns = p.tx_hw_ns.or(info.hardware.map(|t| t.0));
                let probe = *p;
                if self.complete(&probe) {
                    self.finish(key);
                }
            }
            _ => EngineCounters::add(&self.counters(proto).tx_timestamps_unmatched, 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tracked target costs this much of the engine's resident memory (issue 7 budgets
    /// under 1 KiB a target for the whole process; `npm run bench` measures the whole).
    #[test]
    fn a_target_stays_within_its_memory_budget() {
        let size = std::mem::size_of::<Option<Target>>();
        println!("Option<Target>: {size} bytes");
        assert!(size <= 640, "{size}");
    }
}
