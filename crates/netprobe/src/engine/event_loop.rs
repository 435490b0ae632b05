//! The engine thread: the shell around the probe lifecycle (`crate::lifecycle`). It owns the
//! sockets and does every syscall: it hands the lifecycle the time, what became of each send,
//! every stamp and answer it reads (parsed), and when each socket queue was read empty; it
//! sends what the lifecycle hands out. Its loop: commands, then expire and send, then wait in
//! `ppoll` and read every queue that has something.
use super::{family_of, Command, IcmpMode, ProbeKind, Proto, Shared, TcpTransports};
use crate::cmsg::{self, SendCmsg};
use crate::config::{EngineConfig, Interface};
use crate::counters::EngineCounters;
use crate::inflight::Key;
use crate::lifecycle::{Lifecycle, LifecycleConfig, Nanos, ReadTime, SendResult, Transmit};
use crate::netlink::RouteMonitor;
use crate::options::ProbeOptions;
use crate::ports::PortPool;
use crate::recv_batch::{self, RecvBatch};
use crate::routes;
use crate::sockets::{FamilySockets, StampMatching};
use crate::wire::icmp::Family;
use crate::wire::looped::{self, Looped, LoopedProbe};
use nix::sys::eventfd::EventFd;
use socket2::SockAddr;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Transport {
    sockets: FamilySockets,
    /// The receive socket's drop count as last reported (`SO_RXQ_OVFL`).
    drops_seen: u32,
    /// The send socket's path MTU setting (`IP_MTU_DISCOVER` / `IPV6_MTU_DISCOVER`): as it is
    /// now, and as it was opened (what probes without `df` get). None until a probe with `df`
    /// asked for a change.
    pmtu: Option<(i32, i32)>,
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

/// How often looked-up TCP source addresses are aged out (and, only where the route monitor
/// could not be opened, the default route read again).
const INTERFACE_CHECK: Duration = Duration::from_secs(1);
/// How long the start waits for the route monitor's first table.
const FIRST_ROUTES: Duration = Duration::from_secs(1);

/// Packets handled per socket per loop turn, so one busy socket cannot starve the rest.
pub(super) const BATCH: usize = 256;
/// Messages one receive call reads at most.
const RECV_BATCH: usize = 32;
/// Windows computed between two looks at the sockets and the schedule while answering a snapshot.
const SNAPSHOT_CHUNK: usize = 16;
/// The longest probe written (an ICMP echo request of 64 bytes; a SYN is 40).
pub(super) const MAX_PROBE_LEN: usize = crate::wire::icmp::HEADER_LEN + crate::options::MAX_SIZE as usize;
// So that taking a probe-sized chunk of the packet buffer can never fail.
const _: () = assert!(MAX_PROBE_LEN >= crate::wire::icmp::PROBE_LEN && MAX_PROBE_LEN >= crate::wire::tcp::SYN_LEN);
/// The engine thread's timer slack (the kernel's default): small against a turn (`TURN_MIN`).
const TIMER_SLACK_NS: u64 = 50_000;
/// How long the loop rests after `ppoll` failed (other than EINTR) before it tries again.
const POLL_RETRY: Duration = Duration::from_millis(1);

/// The queues of transport `slot` in the lifecycle's numbering: its receive queue, and its
/// send socket's error queue.
fn rx_queue(slot: usize) -> usize {
    2 * slot
}
fn tx_queue(slot: usize) -> usize {
    2 * slot + 1
}

/// CLOCK_REALTIME in nanoseconds since the epoch (the clock of software kernel stamps).
pub(super) fn realtime_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// CLOCK_MONOTONIC (lifecycle time) and CLOCK_REALTIME read together: the real-time reading
/// between two monotonic ones that are at most 20 us apart (a thread preempted between two
/// readings would pair them wrongly by as long as it waited, and make a good kernel pair look
/// inconsistent). After three tries, the closest pair seen.
fn clock_pair(origin: Instant) -> (Nanos, i64) {
    let now = || u64::try_from(origin.elapsed().as_nanos()).unwrap_or(Nanos::MAX);
    let mut best: Option<(u64, Nanos, i64)> = None;
    for _ in 0..3 {
        let before = now();
        let real = realtime_ns();
        let after = now();
        let width = after.saturating_sub(before);
        if best.is_none_or(|(w, _, _)| width < w) {
            best = Some((width, before + width / 2, real));
        }
        if width <= 20_000 {
            break;
        }
    }
    best.map_or((now(), realtime_ns()), |(_, mono, real)| (mono, real))
}

/// Whether a send error is this host's lack of room: the probe never left, and goes again.
fn congested(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN | libc::ENOMEM))
}

pub(super) struct EngineLoop {
    pub config: EngineConfig,
    pub icmp_mode: IcmpMode,
    transports: [Option<Transport>; SLOTS],
    pub ports: Option<PortPool>,
    commands: Receiver<Command>,
    wake: Arc<EventFd>,
    pub shared: Arc<Shared>,
    /// The probe lifecycle: everything but the syscalls.
    pub core: Lifecycle,
    /// The monotonic clock's zero for the lifecycle's times.
    pub origin: Instant,
    pub packet: Box<[u8]>,
    send_cmsg: SendCmsg,
    /// Messages read by one `recvmmsg` (taken out while they are handled).
    batch: RecvBatch,
    stopping: bool,
    /// The interface index each family's sockets are bound to (IPv4, IPv6).
    pub bound: [Option<u32>; 2],
    /// Route and link changes from netlink, when a family follows the default route or a named
    /// interface (`-interface4/6`, `-hard`): the table is never read whole once a second.
    routes: Option<RouteMonitor>,
    next_interface_check: Instant,
    /// The source address the kernel routes from towards a TCP IPv4 target, and when it was
    /// looked up (the SYN's checksum covers it). Kept here, not per target, so ICMP targets
    /// do not carry it; stale entries go with the interface check.
    pub route_sources: HashMap<IpAddr, (IpAddr, Instant)>,
    pub route_source_probe: super::tcp::RouteSourceProbe,
    /// Whether the last look left a queue with more than BATCH messages unread.
    left_unread: bool,
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
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let core_config = LifecycleConfig {
            interval: ns(config.interval),
            timeout: ns(config.timeout),
            gap: 1_000_000_000 / u64::from(config.max_pps.max(1)),
            hard: config.hard,
        };
        let mut engine = EngineLoop {
            core: Lifecycle::new(core_config, shared.clone()).with_histograms(config.histograms.clone()),
            config,
            icmp_mode,
            transports: [None, None, None, None],
            ports: None,
            commands,
            wake,
            shared,
            origin: Instant::now(),
            packet: vec![0; MAX_PROBE_LEN].into_boxed_slice(),
            send_cmsg: SendCmsg::new(),
            batch: RecvBatch::new(RECV_BATCH),
            stopping: false,
            bound: [None, None],
            routes: None,
            next_interface_check: Instant::now(),
            route_sources: HashMap::new(),
            route_source_probe: Default::default(),
            left_unread: false,
        };
        engine.add_transport(Proto::Icmp, Family::V4, v4);
        engine.add_transport(Proto::Icmp, Family::V6, v6);
        engine.open_route_monitor();
        engine.follow_interfaces();
        engine
    }

    /// Opens the route monitor if any family follows a route or an interface, and waits (a
    /// bounded while) for its first table so the first probes already leave the right way.
    fn open_route_monitor(&mut self) {
        let follows = [&self.config.interface4, &self.config.interface6].iter().any(|c| **c != Interface::Routed);
        if !follows {
            return;
        }
        // Where netlink is refused, the default route is read from /proc every second instead.
        let Ok(mut monitor) = RouteMonitor::open() else { return };
        let deadline = Instant::now() + FIRST_ROUTES;
        while monitor.resyncs() == 0 && Instant::now() < deadline {
            let [a, b] = monitor.fds();
            let mut fds = [a, b].map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            // SAFETY: two valid pollfds for the call.
            unsafe { libc::poll(fds.as_mut_ptr(), 2, 10) };
            monitor.on_readable();
        }
        self.routes = Some(monitor);
    }

    /// Now, in the lifecycle's time.
    pub fn now(&self) -> Nanos {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(Nanos::MAX)
    }

    fn add_transport(&mut self, proto: Proto, family: Family, sockets: Option<FamilySockets>) {
        let i = slot(proto, family);
        self.transports[i] = sockets.map(|sockets| Transport { sockets, drops_seen: 0, pmtu: None });
        if let Some(t) = &self.transports[i] {
            // A transport opened later joins its family's binding. Without CAP_NET_RAW it cannot.
            let _ = t.sockets.bind_to_interface(self.bound[usize::from(family == Family::V6)]);
            let now = self.now();
            self.core.queue_opened(rx_queue(i), now);
            self.core.queue_opened(tx_queue(i), now);
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
                Interface::Auto => match &self.routes {
                    // No table from netlink yet (its first dump failed or is slow): read it once.
                    Some(m) if m.resyncs() == 0 => {
                        routes::current_default(family == Family::V6).and_then(|n| index_of(&n))
                    }
                    Some(m) => m.default_ifindex(family == Family::V6),
                    None => routes::current_default(family == Family::V6).and_then(|n| index_of(&n)),
                },
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
        // Turns fall on a grid of at least a millisecond: the default 50 us of timer slack
        // lets the kernel merge this thread's wake-ups with others' without moving a turn
        // by more than a small share of it.
        // SAFETY: prctl with integer arguments only affects this thread.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, TIMER_SLACK_NS as libc::c_ulong) };
        // A short slice so a turn is not kept waiting behind a busy core's running task
        // (sched.rs). Best effort: without it turns are only later on a busy host.
        let _ = crate::sched::request_slice(crate::sched::ENGINE_SLICE_NS);
        while !self.stopping {
            if self.config.panic_after.is_some_and(|after| self.origin.elapsed() >= after) {
                panic!("injected failure (ICMP_EXPORTER_TEST_ENGINE_PANIC_MS)");
            }
            self.handle_commands();
            if self.stopping {
                break;
            }
            if Instant::now() >= self.next_interface_check {
                if self.routes.is_none() {
                    self.follow_interfaces();
                }
                self.forget_stale_sources(Instant::now());
                self.next_interface_check = Instant::now() + INTERFACE_CHECK;
            }
            // What is due leaves first (reading a turn's answers takes a while at high rates,
            // and nothing sent depends on them), then every queue is read, then what has
            // expired ends (it needs the queues read after its expiry).
            self.send_due();
            self.look();
            self.core.expire(self.now());
            if self.core.give_back_memory(self.now()) {
                release_free_memory();
            }
            self.sleep();
        }
        Ok(())
    }

    /// Ends what has expired (as far as every queue has been read), then sends what is due.
    fn turn(&mut self) {
        self.core.expire(self.now());
        self.send_due();
    }

    /// Sends what is due now, up to BATCH probes.
    fn send_due(&mut self) {
        for _ in 0..BATCH {
            let Some(tx) = self.core.poll_transmit(self.now()) else {
                break;
            };
            self.send(tx);
        }
    }

    /// When the loop must look at its own business next: the route monitor's table aged, and
    /// (where there is no monitor) the default route read again. Nothing, when there is none.
    fn next_housekeeping(&self) -> Option<Nanos> {
        let needed = self.routes.is_none() || !self.route_sources.is_empty();
        let at = self.next_interface_check.saturating_duration_since(self.origin).as_nanos();
        needed.then(|| u64::try_from(at).unwrap_or(Nanos::MAX))
    }

    /// Sleeps until the next turn of the schedule (a send or an expiry, on the turn grid), a
    /// command, or a route change. Answers and stamps do not wake it: the next turn reads them,
    /// and their numbers come from the kernel's stamps, not from when they are read.
    fn sleep(&mut self) {
        let now = self.now();
        // Not waiting at all: more route messages than one call takes, or a queue that had
        // more than a turn reads (BATCH), read on at once rather than let it fill.
        let busy = self.routes.as_ref().is_some_and(RouteMonitor::needs_read) || std::mem::take(&mut self.left_unread);
        let wake_at = if busy {
            Some(now)
        } else {
            [self.core.next_wake(now), self.next_housekeeping()].into_iter().flatten().min()
        };
        let timeout = wake_at.map(|at| {
            let d = at.saturating_sub(now);
            libc::timespec { tv_sec: (d / 1_000_000_000) as libc::time_t, tv_nsec: (d % 1_000_000_000) as libc::c_long }
        });
        let pollfd = |fd: i32| libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // The wake-up, then the route monitor's two sockets (-1 = absent, ignored).
        let mut fds = [pollfd(self.wake.as_fd().as_raw_fd()), pollfd(-1), pollfd(-1)];
        if let Some(m) = &self.routes {
            for (i, fd) in m.fds().iter().enumerate() {
                fds[1 + i] = pollfd(fd.as_raw_fd());
            }
        }
        let timeout_ptr = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `fds` and `timeout` are valid for the call; no signal mask is passed.
        let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ptr, std::ptr::null()) };
        if self.poll_failed(rc) {
            return;
        }
        if fds[0].revents != 0 {
            let _ = self.wake.read();
        }
        let routes_ready = fds[1..].iter().any(|f| f.revents != 0);
        if let Some(m) = self.routes.as_mut().filter(|m| routes_ready || m.needs_read()) {
            let changes = m.on_readable();
            if changes.default_routes || changes.links {
                self.follow_interfaces();
            }
        }
    }

    /// Whether a `ppoll` that returned `rc` failed (counted, and after a short rest, tried
    /// again by the loop: a failed wait must never end the engine).
    fn poll_failed(&mut self, rc: libc::c_int) -> bool {
        let failed = if self.config.failing_polls > 0 {
            self.config.failing_polls -= 1;
            Some(io::Error::from_raw_os_error(libc::ENOMEM))
        } else {
            (rc < 0).then(io::Error::last_os_error)
        };
        match failed {
            Some(e) if e.kind() != io::ErrorKind::Interrupted => {
                EngineCounters::add(&self.shared.counters(Proto::Icmp).poll_errors, 1);
                std::thread::sleep(POLL_RETRY);
                true
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Looks at every socket queue (one `ppoll` that does not wait) and reads every one that
    /// has something; tells the lifecycle how far each queue has been read.
    fn look(&mut self) {
        let before = self.now();
        let pollfd = |fd: i32, events: i16| libc::pollfd { fd, events, revents: 0 };
        // Per transport its receive and send socket (-1 = absent, ignored).
        let mut fds = [pollfd(-1, 0); 2 * SLOTS];
        for (i, t) in self.transports.iter().enumerate() {
            if let Some(t) = t {
                fds[2 * i] = pollfd(t.sockets.rx_fd().as_raw_fd(), libc::POLLIN);
                // Transmit timestamps raise POLLERR, which poll reports unasked.
                fds[2 * i + 1] = pollfd(t.sockets.tx_fd().as_raw_fd(), 0);
            }
        }
        let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `fds` and `zero` are valid for the call; no signal mask is passed.
        let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &zero, std::ptr::null()) };
        if self.poll_failed(rc) {
            return;
        }
        // A socket poll found empty was empty at its look, which came after `before`.
        // Transmit stamps first: a stamp can move its probe's expiry later (it waited in a local
        // queue), which an answer or error read in the same turn must be judged against.
        for i in 0..SLOTS {
            if self.transports[i].is_none() {
                continue;
            }
            if fds[2 * i + 1].revents == 0 {
                self.core.queue_drained(tx_queue(i), before);
            } else {
                self.receive_tx_stamps(i);
            }
        }
        for i in 0..SLOTS {
            if self.transports[i].is_none() {
                continue;
            }
            let (proto, family) = slot_info(i);
            if fds[2 * i].revents == 0 {
                self.core.queue_drained(rx_queue(i), before);
            } else {
                match proto {
                    Proto::Icmp => self.receive_icmp(family),
                    Proto::Tcp => self.receive_tcp(family),
                }
            }
        }
    }

    fn handle_commands(&mut self) {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Track { id, addr, kind, options } => {
                    let now = self.now();
                    self.core.track_with(id, addr, kind, options, now);
                }
                Command::Untrack { id } => self.core.untrack(id, self.now()),
                Command::Snapshot { ids, reply } => {
                    // A window takes microseconds; a snapshot of 100,000 must not hold back due
                    // probes, nor leave answers and stamps waiting in the socket buffers. Each
                    // chunk reads the queues first: answers wait for the next turn, and a
                    // scrape should see those that came since the last one.
                    let mut out = Vec::with_capacity(ids.len());
                    for chunk in ids.chunks(SNAPSHOT_CHUNK) {
                        self.look();
                        self.turn();
                        out.extend(chunk.iter().map(|id| self.core.snapshot(*id)));
                    }
                    let _ = reply.send(out);
                }
                Command::OpenTcp(TcpTransports { v4, v6, ports }) => {
                    self.add_transport(Proto::Tcp, Family::V4, v4);
                    self.add_transport(Proto::Tcp, Family::V6, v6);
                    self.core.set_tcp_ports(ports.ports().to_vec());
                    self.ports = Some(ports);
                }
                Command::Stop => {
                    if self.config.hang_on_stop {
                        // Injected for tests: never returns, as a hung thread would not.
                        loop {
                            std::thread::sleep(Duration::from_secs(3600));
                        }
                    }
                    self.stopping = true;
                }
            }
            // Thousands of targets added or removed at once still leave the due probes on time.
            self.turn();
        }
    }

    /// Writes and sends one probe, and tells the lifecycle what became of it.
    fn send(&mut self, tx: Transmit) {
        let options = self.core.options_of(tx.target_index as usize);
        let written = match tx.kind {
            ProbeKind::Icmp => Ok(self.write_echo(&tx, &options)),
            ProbeKind::Tcp { port } => self.write_syn(&tx, port, options.source),
        };
        // The fallback clock readings, as close to sendmsg as they get.
        let (at, real) = clock_pair(self.origin);
        let result = match written {
            Err(_) => SendResult::Failed,
            Ok(len) => match self.transmit(&tx, len, &options) {
                Ok(()) => SendResult::Sent { at, real },
                Err(e) if congested(&e) => SendResult::Congested,
                Err(_) => SendResult::Failed,
            },
        };
        self.core.on_sent(tx.key, result, at);
    }

    fn transmit(&mut self, tx: &Transmit, len: usize, options: &ProbeOptions) -> io::Result<()> {
        let proto = crate::lifecycle::proto_of(tx.kind);
        let Some(t) = self.transports[slot(proto, family_of(tx.addr))].as_mut() else {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "no socket for this family"));
        };
        set_df(t, tx.addr.is_ipv6(), options.df)?;
        // Built per send rather than kept: 128 bytes a target otherwise.
        let dst = &SockAddr::from(SocketAddr::new(tx.addr, 0));
        let packet = &self.packet[..len];
        // Decided once at start (a send error never changes it): the key in the control
        // message, or nothing (the stamp comes with a copy of the packet).
        let opt_id = (t.sockets.matching == StampMatching::OptId).then_some(tx.key.0);
        let ctrl = self.send_cmsg.build(opt_id, options, tx.addr.is_ipv6());
        t.sockets.send(dst, packet, (!ctrl.is_empty()).then_some(ctrl))
    }

    /// Hands what a transport has queued (its send socket's error queue when `tx_stamps`) to
    /// `handle`, a `recvmmsg` at a time, each message with the monotonic and real-time clock
    /// read right after its batch; up to BATCH messages a turn. When a read comes back short
    /// the queue was empty: the lifecycle is told so. A read failure is counted and ends the
    /// turn for that socket.
    pub(super) fn drain(
        &mut self,
        proto: Proto,
        family: Family,
        tx_stamps: bool,
        mut handle: impl FnMut(&mut Self, recv_batch::Message<'_>, ReadTime),
    ) {
        let i = slot(proto, family);
        let queue = if tx_stamps { tx_queue(i) } else { rx_queue(i) };
        let mut batch = std::mem::take(&mut self.batch);
        let mut handled = 0;
        while handled < BATCH {
            let Some(t) = self.transports[i].as_ref() else {
                break;
            };
            let asked_at = self.now();
            let got = if tx_stamps { t.sockets.recv_tx_stamps(&mut batch) } else { t.sockets.recv_replies(&mut batch) };
            let (mono, real) = clock_pair(self.origin);
            let read = ReadTime { mono, real, floor: self.core.drained_at(queue) };
            let n = match got {
                Ok(n) => n,
                Err(_) => {
                    EngineCounters::add(&self.counters(proto).receive_errors, 1);
                    break;
                }
            };
            if n == 0 && tx_stamps {
                // POLLERR with an empty error queue: a pending socket error (an ICMP error
                // report) that would wake every poll until read.
                if let Some(t) = self.transports[i].as_ref() {
                    let _ = t.sockets.tx.take_error();
                }
            }
            for m in (0..n).filter_map(|i| batch.message(i)) {
                handle(self, m, read);
            }
            handled += n;
            if n < batch.capacity() {
                // Everything queued before this read began has been read.
                self.core.queue_drained(queue, asked_at);
                break;
            }
        }
        if handled >= BATCH {
            self.core.queue_busy(queue);
            self.left_unread = true;
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
        self.drain(proto, family, true, |engine, m, _| engine.on_tx_stamp(slot_index, proto, family, m));
    }

    fn on_tx_stamp(&mut self, slot_index: usize, proto: Proto, family: Family, m: recv_batch::Message<'_>) {
        let info = cmsg::parse(m.ctrl);
        // With -hard (OPT_TX_SWHW) the software and the hardware stamp come as two messages.
        // Anything else on the error queue (ICMP errors, with IP_RECVERR) is not a stamp.
        let Some(err) = info.extended_err.filter(|e| e.is_tx_timestamp()) else {
            return;
        };
        let Some(t) = self.transports[slot_index].as_ref() else {
            return;
        };
        let (key, token) = match t.sockets.matching {
            StampMatching::OptId => (Key(err.data), None),
            StampMatching::Packet => match self.parse_looped(m.data, family, proto == Proto::Tcp) {
                Ok(LoopedProbe { probe: Looped::Echo { key, token, .. }, .. }) => (Key(key), Some(token)),
                Ok(LoopedProbe { dst, probe: Looped::Syn { src_port, dst_port, seq } }) => {
                    (self.syn_key(dst, dst_port, src_port, seq), Some(u64::from(seq)))
                }
                Err(_) => return EngineCounters::add(&self.counters(proto).tx_timestamps_unmatched, 1),
            },
        };
        self.core.on_tx_stamp(proto, key, token, info.software.map(|t| t.0), info.hardware.map(|t| t.0));
    }
}

impl EngineLoop {
    /// A transmit stamp's packet copy, read as a probe of the default length or, failing that,
    /// of each other length tracked targets send (`size`).
    fn parse_looped(&self, frame: &[u8], family: Family, tcp: bool) -> Result<LoopedProbe, crate::wire::ParseError> {
        match looped::parse_looped(frame, family, tcp) {
            Err(e) if !tcp => self
                .core
                .sized_echo_lens()
                .find_map(|len| looped::parse_looped_sized(frame, family, false, len).ok())
                .ok_or(e),
            parsed => parsed,
        }
    }
}

/// Hands memory the engine freed back to the kernel: glibc keeps freed chunks of its heap
/// (below its mmap threshold) for reuse until asked. A no-op elsewhere.
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes a byte count and only changes the allocator's free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// DF is the send socket's path MTU setting, so it is switched when a probe wants another one
/// than the last one sent (probes with `df` are rare; the common case costs a comparison).
/// `df` true: the path MTU ignored (`IP_PMTUDISC_PROBE`: IPv4 DF set; `IPV6_PMTUDISC_PROBE`,
/// with `IPV6_DONTFRAG` per packet): a probe too big for the path is answered by
/// "fragmentation needed" / "packet too big" every time, never refused here for a cached path
/// MTU; too big for this host's link it is a send error. IPv4 `df` false: never DF
/// (`IP_PMTUDISC_DONT`). None (and IPv6 false): the setting the socket was opened with.
fn set_df(t: &mut Transport, v6: bool, df: Option<bool>) -> io::Result<()> {
    let (level, name, probe, dont) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, libc::IPV6_PMTUDISC_PROBE, None)
    } else {
        (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_PROBE, Some(libc::IP_PMTUDISC_DONT))
    };
    let (now, opened) = match (t.pmtu, df) {
        (None, None) => return Ok(()),
        (Some(p), _) => p,
        (None, Some(_)) => {
            let v = crate::sockets::getsockopt_int(&t.sockets.tx, level, name)?;
            (v, v)
        }
    };
    let wanted = match df {
        Some(true) => probe,
        Some(false) => dont.unwrap_or(opened),
        None => opened,
    };
    if wanted != now {
        crate::sockets::setsockopt(&t.sockets.tx, level, name, &wanted)?;
    }
    t.pmtu = Some((wanted, opened));
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Which send errors are this host's lack of room (the probe goes again, no outcome) and
    /// which are refusals for good (a send error, in `sent`).
    #[test]
    fn only_a_lack_of_room_defers_a_probe() {
        let e = super::io::Error::from_raw_os_error;
        for errno in [libc::ENOBUFS, libc::EAGAIN, libc::ENOMEM] {
            assert!(super::congested(&e(errno)), "{errno}");
        }
        for errno in [libc::EPERM, libc::EACCES, libc::EHOSTUNREACH, libc::ENETUNREACH, libc::EINVAL, libc::EMSGSIZE] {
            assert!(!super::congested(&e(errno)), "{errno}");
        }
    }

    /// Every tracked target costs this much of the engine's resident memory (issue 7 budgets
    /// under 1 KiB a target for the whole process; `npm run bench` measures the whole).
    #[test]
    fn a_target_stays_within_its_memory_budget() {
        let size = std::mem::size_of::<Option<crate::lifecycle::Target>>();
        println!("Option<Target>: {size} bytes");
        assert!(size <= 640, "{size}");
    }
}
