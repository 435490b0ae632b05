//! The engine: a handle for the caller, and one dedicated thread that owns the sockets and
//! runs a single poll loop (paced sends, replies, transmit timestamps, timeouts). The caller
//! talks to it through a channel plus an eventfd; it never shares a lock with the hot path.
use crate::cmsg::{self, OptIdCmsg};
use crate::config::{EngineConfig, StampKeyMode};
use crate::counters::{CountersSnapshot, EngineCounters};
use crate::inflight::{Ended, InFlight, Key, Lookup, Probe, Reply};
use crate::rtt;
use crate::sockets::{FamilySockets, Received};
use crate::stats::{Counters, Outcome, TargetStats};
use crate::token::TokenKey;
use crate::window::Window;
use crate::wire::icmp::{self, EchoRepr, Family, Message, PROBE_LEN};
use nix::sys::eventfd::{EfdFlags, EventFd};
use socket2::SockAddr;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub type TargetId = u32;

/// What a scrape reads for one target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetSnapshot {
    pub counters: Counters,
    pub window: Window,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// Sockets could not be opened or configured (missing CAP_NET_RAW, ...).
    Start(String),
    /// No socket of this family could be opened (IPv6 disabled, ...).
    FamilyUnavailable(Family),
    /// The address can never answer a probe (unspecified, multicast, broadcast).
    Unusable(IpAddr),
    /// The engine was stopped or its thread failed.
    Stopped(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Start(m) => write!(f, "cannot start the probing engine: {m}"),
            EngineError::FamilyUnavailable(Family::V4) => {
                f.write_str("IPv4 probing is not available on this host")
            }
            EngineError::FamilyUnavailable(Family::V6) => {
                f.write_str("IPv6 probing is not available on this host")
            }
            EngineError::Unusable(a) => write!(
                f,
                "{a} cannot be probed (unspecified, multicast or broadcast address)"
            ),
            EngineError::Stopped(m) => write!(f, "the probing engine is not running: {m}"),
        }
    }
}

impl std::error::Error for EngineError {}

enum Command {
    Track {
        id: TargetId,
        addr: IpAddr,
    },
    Untrack {
        id: TargetId,
    },
    Snapshot {
        ids: Vec<TargetId>,
        reply: SyncSender<Vec<Option<TargetSnapshot>>>,
    },
    Stop,
}

struct Shared {
    counters: EngineCounters,
    /// Set when the engine thread ended abnormally.
    failure: Mutex<Option<String>>,
}

pub struct Engine {
    commands: Mutex<Sender<Command>>,
    wake: Arc<EventFd>,
    thread: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
    next_id: AtomicU32,
    has_v4: bool,
    has_v6: bool,
    warnings: Vec<String>,
}

fn usable(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    }
}

impl Engine {
    /// Opens the sockets on the calling thread (so a missing privilege is reported here)
    /// and starts the engine thread.
    pub fn start(config: EngineConfig) -> Result<Engine, EngineError> {
        config
            .validate()
            .map_err(|e| EngineError::Start(e.to_string()))?;
        let v4 = FamilySockets::open(Family::V4, config.identifier);
        let v6 = FamilySockets::open(Family::V6, config.identifier);
        let (v4, v6) = match (v4, v6) {
            (Err(e4), Err(e6)) => {
                let hint = if e4.kind() == io::ErrorKind::PermissionDenied {
                    " (raw ICMP sockets need CAP_NET_RAW)"
                } else {
                    ""
                };
                return Err(EngineError::Start(format!("IPv4: {e4}; IPv6: {e6}{hint}")));
            }
            (v4, v6) => (v4, v6),
        };
        let mut warnings = Vec::new();
        if let Err(e) = &v4 {
            warnings.push(format!("IPv4 probing is disabled: {e}"));
        }
        if let Err(e) = &v6 {
            warnings.push(format!("IPv6 probing is disabled: {e}"));
        }
        let (v4, v6) = (v4.ok(), v6.ok());
        let wake = Arc::new(
            EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                .map_err(|e| EngineError::Start(format!("eventfd: {e}")))?,
        );
        let shared = Arc::new(Shared {
            counters: EngineCounters::default(),
            failure: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel();
        let (has_v4, has_v6) = (v4.is_some(), v6.is_some());
        let mut engine_loop = EngineLoop::new(config, v4, v6, rx, wake.clone(), shared.clone());
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("netprobe".into())
            .spawn(move || {
                let result =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine_loop.run()));
                let failure = match result {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!("engine loop failed: {e}")),
                    Err(panic) => Some(format!(
                        "engine thread panicked: {}",
                        panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default()
                    )),
                };
                if let Some(f) = failure {
                    if let Ok(mut slot) = thread_shared.failure.lock() {
                        *slot = Some(f);
                    }
                }
            })
            .map_err(|e| EngineError::Start(format!("spawning the engine thread: {e}")))?;
        Ok(Engine {
            commands: Mutex::new(tx),
            wake,
            thread: Mutex::new(Some(thread)),
            shared,
            next_id: AtomicU32::new(1),
            has_v4,
            has_v6,
            warnings,
        })
    }

    /// What did not work at start without preventing it (a family without sockets).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn stopped_error(&self) -> EngineError {
        let why = self.shared.failure.lock().ok().and_then(|f| f.clone());
        EngineError::Stopped(why.unwrap_or_else(|| "stopped".into()))
    }

    fn send(&self, cmd: Command) -> Result<(), EngineError> {
        let sent = self
            .commands
            .lock()
            .map_err(|_| self.stopped_error())?
            .send(cmd);
        sent.map_err(|_| self.stopped_error())?;
        // A failed write means the counter is already non-zero: the thread will wake anyway.
        let _ = self.wake.write(1);
        Ok(())
    }

    /// Starts probing `addr`; returns the id to read its statistics with.
    pub fn track(&self, addr: IpAddr) -> Result<TargetId, EngineError> {
        if !usable(addr) {
            return Err(EngineError::Unusable(addr));
        }
        match addr {
            IpAddr::V4(_) if !self.has_v4 => {
                return Err(EngineError::FamilyUnavailable(Family::V4))
            }
            IpAddr::V6(_) if !self.has_v6 => {
                return Err(EngineError::FamilyUnavailable(Family::V6))
            }
            _ => {}
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.send(Command::Track { id, addr })?;
        Ok(id)
    }

    pub fn untrack(&self, id: TargetId) -> Result<(), EngineError> {
        self.send(Command::Untrack { id })
    }

    /// Statistics of each id, `None` for an id that is not tracked.
    pub fn snapshot(&self, ids: Vec<TargetId>) -> Result<Vec<Option<TargetSnapshot>>, EngineError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Command::Snapshot { ids, reply })?;
        answer
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| self.stopped_error())
    }

    pub fn counters(&self) -> CountersSnapshot {
        self.shared.counters.snapshot()
    }

    /// Why the engine thread ended, if it ended abnormally.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Stops the thread and closes the sockets. Idempotent.
    pub fn stop(&self) {
        let _ = self.send(Command::Stop);
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Target {
    id: TargetId,
    addr: IpAddr,
    dst: SockAddr,
    seq: u16,
    stats: TargetStats,
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
        StampKeys::Counter {
            next: 0,
            ring: vec![u32::MAX; COUNTER_RING],
        }
    }
}

struct FamilyState {
    sockets: FamilySockets,
    keys: StampKeys,
}

/// Packets handled per socket per loop turn, so one busy socket cannot starve the rest.
const BATCH: usize = 256;
/// How far the pacer may catch up after the thread was late.
const PACER_CATCH_UP: Duration = Duration::from_millis(1);

struct EngineLoop {
    config: EngineConfig,
    v4: Option<FamilyState>,
    v6: Option<FamilyState>,
    commands: Receiver<Command>,
    wake: Arc<EventFd>,
    shared: Arc<Shared>,
    targets: Vec<Option<Target>>,
    free_targets: Vec<usize>,
    index_of: HashMap<TargetId, usize>,
    schedule: BinaryHeap<Reverse<(Instant, usize, TargetId)>>,
    inflight: InFlight,
    deadlines: VecDeque<(Instant, Key)>,
    pacer_next: Instant,
    gap: Duration,
    rng: u64,
    tokens: TokenKey,
    packet: [u8; PROBE_LEN],
    opt_id: OptIdCmsg,
    buf: Vec<u8>,
    ctrl: Vec<u8>,
    stopping: bool,
}

fn seed() -> u64 {
    let mut s = [0u8; 8];
    // SAFETY: writes at most 8 bytes into `s`.
    let n = unsafe { libc::getrandom(s.as_mut_ptr().cast(), s.len(), 0) };
    let from_kernel = u64::from_ne_bytes(s);
    if n == 8 && from_kernel != 0 {
        from_kernel
    } else {
        (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1))
            | 1
    }
}

impl EngineLoop {
    fn new(
        config: EngineConfig,
        v4: Option<FamilySockets>,
        v6: Option<FamilySockets>,
        commands: Receiver<Command>,
        wake: Arc<EventFd>,
        shared: Arc<Shared>,
    ) -> Self {
        let keys = || match config.stamp_keys {
            StampKeyMode::Auto => StampKeys::PerSend,
            StampKeyMode::Counter => StampKeys::counter(),
        };
        let state = |sockets| FamilyState {
            sockets,
            keys: keys(),
        };
        EngineLoop {
            gap: Duration::from_secs(1) / config.max_pps,
            config,
            v4: v4.map(state),
            v6: v6.map(state),
            commands,
            wake,
            shared,
            targets: Vec::new(),
            free_targets: Vec::new(),
            index_of: HashMap::new(),
            schedule: BinaryHeap::new(),
            inflight: InFlight::default(),
            deadlines: VecDeque::new(),
            pacer_next: Instant::now(),
            rng: seed(),
            tokens: TokenKey::new(),
            packet: [0; PROBE_LEN],
            opt_id: OptIdCmsg::new(),
            buf: vec![0; 65536],
            ctrl: vec![0; 512],
            stopping: false,
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: cheap, and tokens only need to be unpredictable to other hosts' traffic.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn counters(&self) -> &EngineCounters {
        &self.shared.counters
    }

    fn run(&mut self) -> io::Result<()> {
        // Precise wake-ups for pacing: the default 50 us timer slack would blur the schedule.
        // SAFETY: prctl with integer arguments only affects this thread.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        while !self.stopping {
            self.handle_commands();
            if self.stopping {
                break;
            }
            let now = Instant::now();
            self.send_due(now);
            self.expire(Instant::now());
            self.wait()?;
        }
        Ok(())
    }

    fn wait(&mut self) -> io::Result<()> {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        if let Some(Reverse((due, _, _))) = self.schedule.peek() {
            next = Some((*due).max(self.pacer_next));
        }
        if let Some((deadline, _)) = self.deadlines.front() {
            next = Some(next.map_or(*deadline, |n| n.min(*deadline)));
        }
        let timeout = next.map(|n| {
            let d = n.saturating_duration_since(now);
            libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            }
        });
        let pollfd = |fd: i32, events: i16| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // Slots: wake-up, then receive and send socket per family (-1 = absent, ignored by poll).
        let mut fds = [
            pollfd(self.wake.as_fd().as_raw_fd(), libc::POLLIN),
            pollfd(-1, 0),
            pollfd(-1, 0),
            pollfd(-1, 0),
            pollfd(-1, 0),
        ];
        for (i, fam) in [&self.v4, &self.v6].into_iter().enumerate() {
            if let Some(fam) = fam {
                fds[1 + 2 * i] = pollfd(fam.sockets.rx_fd().as_raw_fd(), libc::POLLIN);
                // Transmit timestamps raise POLLERR, which poll reports unasked.
                fds[2 + 2 * i] = pollfd(fam.sockets.tx_fd().as_raw_fd(), 0);
            }
        }
        let ts_ptr = timeout
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `fds` and `ts_ptr` are valid for the call; no signal mask is passed.
        let rc = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                ts_ptr,
                std::ptr::null(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        if fds[0].revents != 0 {
            let _ = self.wake.read();
        }
        for (i, family) in [Family::V4, Family::V6].into_iter().enumerate() {
            if fds[1 + 2 * i].revents != 0 {
                self.receive_replies(family);
            }
            if fds[2 + 2 * i].revents != 0 {
                self.receive_tx_stamps(family);
            }
        }
        Ok(())
    }

    fn handle_commands(&mut self) {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Track { id, addr } => self.track(id, addr),
                Command::Untrack { id } => self.untrack(id),
                Command::Snapshot { ids, reply } => {
                    let out = ids.iter().map(|id| self.snapshot(*id)).collect();
                    let _ = reply.send(out);
                }
                Command::Stop => self.stopping = true,
            }
        }
    }

    fn track(&mut self, id: TargetId, addr: IpAddr) {
        let target = Target {
            id,
            addr,
            dst: SockAddr::from(SocketAddr::new(addr, 0)),
            seq: 0,
            stats: TargetStats::default(),
        };
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
        self.index_of.insert(id, index);
        // A random phase within one interval spreads targets tracked together over the round.
        let frac = (self.random() >> 11) as f64 / (1u64 << 53) as f64;
        let due = Instant::now() + self.config.interval.mul_f64(frac);
        self.schedule.push(Reverse((due, index, id)));
    }

    fn untrack(&mut self, id: TargetId) {
        if let Some(index) = self.index_of.remove(&id) {
            self.targets[index] = None;
            self.free_targets.push(index);
        }
    }

    fn snapshot(&mut self, id: TargetId) -> Option<TargetSnapshot> {
        let index = *self.index_of.get(&id)?;
        let target = self.targets.get_mut(index)?.as_mut()?;
        Some(TargetSnapshot {
            counters: target.stats.counters(),
            window: target.stats.window(),
        })
    }

    fn target_mut(&mut self, index: usize, id: TargetId) -> Option<&mut Target> {
        self.targets.get_mut(index)?.as_mut().filter(|t| t.id == id)
    }

    fn send_due(&mut self, now: Instant) {
        for _ in 0..BATCH {
            let Some(Reverse((due, index, id))) = self.schedule.peek().copied() else {
                return;
            };
            if due > now || self.pacer_next > now {
                return;
            }
            self.schedule.pop();
            if self.target_mut(index, id).is_none() {
                continue; // untracked since it was scheduled
            }
            self.pacer_next = self
                .pacer_next
                .max(now.checked_sub(PACER_CATCH_UP).unwrap_or(now))
                + self.gap;
            self.send_probe(index, id, now);
            let mut next = due + self.config.interval;
            if next < now {
                next = now; // the pps cap cannot keep up: send as soon as the pacer allows
            }
            self.schedule.push(Reverse((next, index, id)));
        }
    }

    fn send_probe(&mut self, index: usize, id: TargetId, now: Instant) {
        let Some(target) = self.target_mut(index, id) else {
            return;
        };
        let (seq, addr) = (target.seq, target.addr);
        target.seq = target.seq.wrapping_add(1);
        let family = if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        };
        let probe = Probe {
            target_index: index as u32,
            target_id: id,
            seq,
            token: 0,
            sent_at: now,
            deadline: now + self.config.timeout,
            tx_stamp_ns: None,
            reply: None,
        };
        let Some(key) = self.inflight.insert(probe) else {
            EngineCounters::add(&self.counters().inflight_full, 1);
            self.finish_target(index, id, Outcome::SendError);
            return;
        };
        let token = self.tokens.token(key.0, seq, addr);
        if let Some(p) = self.inflight.get_mut(key) {
            p.token = token;
        }
        let repr = EchoRepr {
            ident: self.config.identifier,
            seq,
            key: key.0,
            token,
        };
        icmp::emit_echo_request(family, &repr, &mut self.packet);
        // The fallback clock reading, as close to sendmsg as it gets.
        let sent_at = Instant::now();
        match self.transmit(family, index, id, key) {
            Ok(()) => {
                EngineCounters::add(&self.counters().packets_sent, 1);
                if let Some(p) = self.inflight.get_mut(key) {
                    p.sent_at = sent_at;
                    p.deadline = sent_at + self.config.timeout;
                    self.deadlines.push_back((p.deadline, key));
                }
            }
            Err(_) => {
                EngineCounters::add(&self.counters().send_errors, 1);
                self.inflight.remove(key, Ended::Other);
                self.finish_target(index, id, Outcome::SendError);
            }
        }
    }

    fn transmit(&mut self, family: Family, index: usize, id: TargetId, key: Key) -> io::Result<()> {
        let Some(dst) = self
            .targets
            .get(index)
            .and_then(|t| t.as_ref())
            .filter(|t| t.id == id)
            .map(|t| &t.dst)
        else {
            return Ok(());
        };
        let fam = match family {
            Family::V4 => self.v4.as_mut(),
            Family::V6 => self.v6.as_mut(),
        };
        let Some(fam) = fam else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "address family not available",
            ));
        };
        if let StampKeys::PerSend = fam.keys {
            match fam
                .sockets
                .send(dst, &self.packet, Some(self.opt_id.set(key.0)))
            {
                // This kernel has no SCM_TS_OPT_ID: mirror the socket's own counter from now on.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    fam.keys = StampKeys::Counter {
                        next: 0,
                        ring: vec![u32::MAX; COUNTER_RING],
                    };
                }
                other => return other,
            }
        }
        if let StampKeys::Counter { next, ring } = &mut fam.keys {
            fam.sockets.send(dst, &self.packet, None)?;
            ring[*next as usize % COUNTER_RING] = key.0;
            *next = next.wrapping_add(1);
        }
        Ok(())
    }

    fn finish_target(&mut self, index: usize, id: TargetId, outcome: Outcome) {
        if let Some(t) = self.target_mut(index, id) {
            t.stats.record(outcome);
        }
    }

    /// Ends a probe whose reply and transmit stamp are both in, or whose deadline passed.
    fn finish(&mut self, key: Key) {
        let Some(probe) = self.inflight.get_mut(key).copied() else {
            return;
        };
        let outcome = match probe.reply {
            Some(reply) => {
                let (rtt_ns, why) = rtt::reply_rtt(
                    probe.tx_stamp_ns,
                    reply.rx_stamp_ns,
                    probe.sent_at,
                    reply.at,
                    self.config.timeout,
                );
                let c = &self.shared.counters;
                for (happened, counter) in [
                    (why.tx_missing, &c.tx_timestamp_missing),
                    (why.rx_missing, &c.rx_timestamp_missing),
                    (why.inconsistent, &c.timestamp_inconsistent),
                ] {
                    if happened {
                        EngineCounters::add(counter, 1);
                    }
                }
                Outcome::Reply { rtt_ns }
            }
            None => Outcome::Timeout,
        };
        let ended = if probe.reply.is_some() {
            Ended::Replied
        } else {
            Ended::Other
        };
        self.inflight.remove(key, ended);
        self.finish_target(probe.target_index as usize, probe.target_id, outcome);
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

    /// Reads one message from a socket of `family` into the shared buffers (the send
    /// socket's error queue when `tx_stamps`). None when there is nothing more to read; a
    /// failure is counted.
    fn read_one(&mut self, family: Family, tx_stamps: bool) -> Option<(Received, Instant)> {
        let fam = match family {
            Family::V4 => self.v4.as_ref(),
            Family::V6 => self.v6.as_ref(),
        }?;
        let result = if tx_stamps {
            fam.sockets.recv_tx_stamp(&mut self.buf, &mut self.ctrl)
        } else {
            fam.sockets.recv_reply(&mut self.buf, &mut self.ctrl)
        };
        let at = Instant::now();
        match result {
            Ok(r) => Some((r, at)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(_) => {
                EngineCounters::add(&self.counters().receive_errors, 1);
                None
            }
        }
    }

    fn receive_replies(&mut self, family: Family) {
        for _ in 0..BATCH {
            let Some((r, at)) = self.read_one(family, false) else {
                return;
            };
            let info = cmsg::parse(&self.ctrl[..r.ctrl_len.min(self.ctrl.len())]);
            let data = &self.buf[..r.len.min(self.buf.len())];
            let parsed = match family {
                Family::V4 => icmp::parse_v4(data).map(|(src, m)| (Some(IpAddr::V4(src)), m)),
                Family::V6 => icmp::parse_v6(data).map(|m| (r.src, m)),
            };
            match parsed {
                Ok((src, Message::EchoReply(echo))) => {
                    EngineCounters::add(&self.counters().packets_received, 1);
                    self.on_reply(src, echo, info.software.map(|t| t.0), at);
                }
                Ok((_, Message::Error(err))) => self.on_icmp_error(err),
                Ok((_, Message::Other)) => {}
                Err(_) => EngineCounters::add(&self.counters().packets_malformed, 1),
            }
        }
    }

    fn on_reply(
        &mut self,
        src: Option<IpAddr>,
        echo: EchoRepr,
        rx_stamp_ns: Option<i64>,
        at: Instant,
    ) {
        let key = Key(echo.key);
        let c = &self.shared.counters;
        if echo.ident != self.config.identifier {
            EngineCounters::add(&c.replies_foreign, 1);
            return;
        }
        match self.inflight.lookup(key, echo.token) {
            Lookup::Live => {}
            Lookup::Ended(Ended::Replied) => return EngineCounters::add(&c.replies_duplicate, 1),
            Lookup::Ended(Ended::Other) => return EngineCounters::add(&c.replies_late, 1),
            // Its record is gone (the slot has been reused since): only a reply to one of
            // our own probes can carry the token the engine would compute for it.
            Lookup::Unknown => {
                let ours =
                    src.is_some_and(|a| self.tokens.token(echo.key, echo.seq, a) == echo.token);
                return EngineCounters::add(
                    if ours {
                        &c.replies_late
                    } else {
                        &c.replies_foreign
                    },
                    1,
                );
            }
        }
        let Some(probe) = self.inflight.get_mut(key) else {
            return;
        };
        let expected = self
            .targets
            .get(probe.target_index as usize)
            .and_then(|t| t.as_ref())
            .map(|t| t.addr);
        if probe.seq != echo.seq || src.is_none() || src != expected {
            EngineCounters::add(&c.replies_foreign, 1);
            return;
        }
        if probe.reply.is_some() {
            EngineCounters::add(&c.replies_duplicate, 1);
            return;
        }
        probe.reply = Some(Reply { rx_stamp_ns, at });
        if probe.tx_stamp_ns.is_some() {
            self.finish(key);
        }
        // Otherwise the transmit stamp is still on its way: it ends the probe, or the deadline does.
    }

    fn on_icmp_error(&mut self, err: icmp::QuotedError) {
        let c = &self.shared.counters;
        let Some((key, token)) = err
            .key_token
            .filter(|_| err.ident == self.config.identifier)
        else {
            return EngineCounters::add(&c.icmp_errors_unmatched, 1);
        };
        let key = Key(key);
        if self.inflight.lookup(key, token) != Lookup::Live {
            return EngineCounters::add(&c.icmp_errors_unmatched, 1);
        }
        let Some(probe) = self.inflight.get_mut(key).copied() else {
            return;
        };
        let expected = self
            .targets
            .get(probe.target_index as usize)
            .and_then(|t| t.as_ref())
            .map(|t| t.addr);
        if probe.reply.is_some() || Some(err.original_dst) != expected || probe.seq != err.seq {
            return EngineCounters::add(&c.icmp_errors_unmatched, 1);
        }
        EngineCounters::add(&c.icmp_errors, 1);
        self.inflight.remove(key, Ended::Other);
        self.finish_target(
            probe.target_index as usize,
            probe.target_id,
            Outcome::IcmpError,
        );
    }

    fn receive_tx_stamps(&mut self, family: Family) {
        for _ in 0..BATCH {
            let Some((r, _)) = self.read_one(family, true) else {
                return;
            };
            let info = cmsg::parse(&self.ctrl[..r.ctrl_len.min(self.ctrl.len())]);
            let (Some(err), Some(stamp)) = (info.extended_err, info.software) else {
                continue;
            };
            if !err.is_tx_timestamp() {
                continue;
            }
            let Some(fam) = (if family == Family::V4 {
                &self.v4
            } else {
                &self.v6
            }) else {
                return;
            };
            let key = match &fam.keys {
                StampKeys::PerSend => Key(err.data),
                StampKeys::Counter { ring, .. } => Key(ring[err.data as usize % COUNTER_RING]),
            };
            match self.inflight.get_mut(key) {
                Some(p) if p.tx_stamp_ns.is_none() => {
                    p.tx_stamp_ns = Some(stamp.0);
                    if p.reply.is_some() {
                        self.finish(key);
                    }
                }
                _ => EngineCounters::add(&self.counters().tx_timestamps_unmatched, 1),
            }
        }
    }
}
