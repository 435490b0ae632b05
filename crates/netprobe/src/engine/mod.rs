//! The engine: a handle for the caller, and one dedicated thread that owns the sockets and
//! runs a single poll loop (paced sends, replies, transmit timestamps, timeouts). The caller
//! talks to it through a channel plus an eventfd; it never shares a lock with the hot path.
//!
//! ICMP echo and TCP SYN are two kinds of probe over the same scheduler, in-flight table,
//! timestamps and statistics (`event_loop`); `icmp` and `tcp` hold what differs: how a probe
//! is written and how an answer is recognised.
mod event_loop;
mod icmp;
mod tcp;

pub use crate::lifecycle::Answer;

use crate::config::{EngineConfig, Interface, StampKeyMode};
use crate::counters::{CountersSnapshot, EngineCounters};
use crate::histogram::NativeBuckets;
use crate::hwstamp;
use crate::options::ProbeOptions;
use crate::ports::{self, PortPool};
use crate::routes;
use crate::sockets::{FamilySockets, StampMatching};
use crate::stats::Counters;
use crate::window::Window;
use crate::wire::icmp::Family;
use event_loop::EngineLoop;
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub type TargetId = u32;

/// What is sent to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Icmp,
    Tcp { port: u16 },
}

/// How ICMP probes are sent: raw sockets (CAP_NET_RAW), or unprivileged ICMP datagram
/// ("ping") sockets when the process lacks it and `net.ipv4.ping_group_range` allows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpMode {
    Raw,
    Datagram,
}

/// Which protocol's engine counters to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Icmp,
    Tcp,
}

/// What a scrape reads for one target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSnapshot {
    pub counters: Counters,
    pub window: Window,
    /// Cumulative classic bucket counts, one per configured bound (+Inf is `counters.received`).
    pub classic: Vec<u64>,
    /// The native histogram, when configured.
    pub native: Option<NativeBuckets>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineError {
    /// Sockets could not be opened or configured (missing CAP_NET_RAW, ...).
    Start(String),
    /// No socket of this family could be opened (IPv6 disabled, ...).
    FamilyUnavailable(Family),
    /// The address can never answer a probe (unspecified, multicast, broadcast).
    Unusable(IpAddr),
    /// TCP port 0.
    InvalidPort,
    /// Probe options these probes cannot have (why).
    InvalidOptions(String),
    /// TCP SYN probing cannot work here (why).
    TcpUnavailable(String),
    /// The engine was stopped or its thread failed.
    Stopped(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Start(m) => write!(f, "cannot start the probing engine: {m}"),
            EngineError::FamilyUnavailable(Family::V4) => f.write_str("IPv4 probing is not available on this host"),
            EngineError::FamilyUnavailable(Family::V6) => f.write_str("IPv6 probing is not available on this host"),
            EngineError::Unusable(a) => write!(f, "{a} cannot be probed (unspecified, multicast or broadcast address)"),
            EngineError::InvalidPort => f.write_str("TCP port must be between 1 and 65535"),
            EngineError::TcpUnavailable(m) => write!(f, "TCP SYN probing is not available: {m}"),
            EngineError::InvalidOptions(m) => f.write_str(m),
            EngineError::Stopped(m) => write!(f, "the probing engine is not running: {m}"),
        }
    }
}

impl std::error::Error for EngineError {}

/// The TCP sockets, opened on the caller's thread when the first TCP target comes.
pub(crate) struct TcpTransports {
    v4: Option<FamilySockets>,
    v6: Option<FamilySockets>,
    ports: PortPool,
}

/// What `Engine::snapshot_with` calls with the statistics, or with why there are none.
pub type SnapshotCallback = Box<dyn FnOnce(Result<Vec<Option<TargetSnapshot>>, EngineError>) + Send>;

/// Where the engine thread sends a snapshot: to a caller blocked on a channel (`snapshot`), or
/// into a callback it runs itself (`snapshot_with`: no thread sits waiting for the answer).
pub(crate) enum Reply {
    Channel(SyncSender<Vec<Option<TargetSnapshot>>>),
    Callback(CallbackReply),
}

impl Reply {
    /// Err when nobody waits for the answer any more.
    pub(crate) fn send(self, out: Vec<Option<TargetSnapshot>>) -> Result<(), ()> {
        match self {
            Reply::Channel(tx) => tx.send(out).map_err(|_| ()),
            Reply::Callback(mut c) => {
                if let Some(done) = c.done.take() {
                    done(Ok(out));
                }
                Ok(())
            }
        }
    }
}

/// A callback that is called exactly once: with the answer, or, dropped unanswered (the
/// engine stopped or failed with the command queued), with the engine's failure.
pub(crate) struct CallbackReply {
    done: Option<SnapshotCallback>,
    shared: Arc<Shared>,
}

impl Drop for CallbackReply {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let why = self.shared.failure();
            done(Err(EngineError::Stopped(why.unwrap_or_else(|| "stopped".into()))));
        }
    }
}

enum Command {
    Track { id: TargetId, addr: IpAddr, kind: ProbeKind, options: ProbeOptions },
    Untrack { id: TargetId },
    Snapshot { ids: Vec<TargetId>, reply: Reply },
    OpenTcp(TcpTransports),
    Stop,
}

/// What the engine thread shares with its handle: counters, and why it failed.
#[derive(Debug, Default)]
pub struct Shared {
    icmp: EngineCounters,
    tcp: EngineCounters,
    /// Set when the engine thread ended abnormally.
    failure: Mutex<Failure>,
}

/// Why the engine thread ended abnormally, and who is waiting to hear it: one lock for both,
/// so a listener registered as the thread fails is called exactly once.
#[derive(Default)]
struct Failure {
    reason: Option<String>,
    listener: Option<FailureListener>,
}

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failure").field("reason", &self.reason).field("listener", &self.listener.is_some()).finish()
    }
}

/// Called once, on the engine thread (or on the registering thread if the engine had
/// already failed), with why the engine thread ended.
pub type FailureListener = Box<dyn FnOnce(String) + Send>;

impl Shared {
    fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.reason.clone())
    }

    /// Records why the engine thread ended and tells the listener, if there is one.
    fn fail(&self, reason: String) {
        let listener = match self.failure.lock() {
            Ok(mut f) => {
                f.reason = Some(reason.clone());
                f.listener.take()
            }
            Err(_) => None,
        };
        if let Some(tell) = listener {
            tell(reason);
        }
    }

    pub fn counters(&self, proto: Proto) -> &EngineCounters {
        match proto {
            Proto::Icmp => &self.icmp,
            Proto::Tcp => &self.tcp,
        }
    }
}

enum TcpState {
    NotOpen,
    Open { v4: bool, v6: bool },
    Failed(String),
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
    /// Source ports for TCP probes (outside ip_local_port_range), if there is room for them.
    tcp_ports: Result<RangeInclusive<u16>, String>,
    tcp: Mutex<TcpState>,
    icmp_mode: IcmpMode,
    hard: bool,
    stamps: StampKeyMode,
    /// How transmit stamps are tied to probes on this kernel (decided at start).
    stamp_matching: StampMatching,
    /// NIC settings `-hard` changed, undone by `stop`.
    hw_changes: Mutex<Vec<hwstamp::Change>>,
}

fn usable(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    }
}

fn family_of(addr: IpAddr) -> Family {
    if addr.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

/// NIC settings to put back when dropped, unless disarmed.
struct HwRestore(Vec<hwstamp::Change>);

impl HwRestore {
    fn disarm(mut self) -> Vec<hwstamp::Change> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for HwRestore {
    fn drop(&mut self) {
        for change in &self.0 {
            let _ = hwstamp::restore(change);
        }
    }
}

/// `-hard`: binds each family to an interface (the default route's unless one is named) and
/// configures every such interface to stamp all packets. Err names the interface and what it
/// lacks; any interface already changed is put back first.
fn enable_hardware_stamps(config: &mut EngineConfig) -> Result<Vec<hwstamp::Change>, EngineError> {
    let mut names = Vec::new();
    for (choice, ipv6) in [(&mut config.interface4, false), (&mut config.interface6, true)] {
        if *choice == Interface::Routed {
            *choice = Interface::Auto;
        }
        let name = match choice {
            Interface::Named(n) => Some(n.clone()),
            _ => routes::current_default(ipv6),
        };
        if let Some(n) = name.filter(|n| !names.contains(n)) {
            names.push(n);
        }
    }
    if names.is_empty() {
        return Err(EngineError::Start(
            "-hard needs an interface: there is no default route; name one with -interface4 or -interface6".into(),
        ));
    }
    let mut changes = Vec::new();
    for name in names {
        match hwstamp::enable(&name) {
            Ok(change) => changes.extend(change),
            Err(why) => {
                for c in &changes {
                    let _ = hwstamp::restore(c);
                }
                return Err(EngineError::Start(why));
            }
        }
    }
    Ok(changes)
}

/// Why neither raw nor unprivileged ICMP sockets could be opened, naming what is missing.
fn no_icmp_socket_reason() -> String {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
        .map(|r| r.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unreadable".into());
    // SAFETY: getegid has no preconditions.
    let gid = unsafe { libc::getegid() };
    format!(
        "raw ICMP sockets need CAP_NET_RAW, and unprivileged ICMP sockets are not allowed: \
         net.ipv4.ping_group_range is \"{range}\", which does not include group {gid} \
         (run with CAP_NET_RAW, or e.g. sysctl -w net.ipv4.ping_group_range=\"{gid} {gid}\")"
    )
}

/// Port 0 is never a probe source, so a filter on it matches nothing.
const NO_PORTS: RangeInclusive<u16> = 0..=0;

impl Engine {
    /// Opens the ICMP sockets on the calling thread (so a missing privilege is reported here)
    /// and starts the engine thread. TCP sockets are opened with the first TCP target.
    pub fn start(mut config: EngineConfig) -> Result<Engine, EngineError> {
        config.validate().map_err(|e| EngineError::Start(e.to_string()))?;
        for (flag, choice) in [("-interface4", &config.interface4), ("-interface6", &config.interface6)] {
            if let Interface::Named(name) = choice {
                nix::net::if_::if_nametoindex(name.as_str())
                    .map_err(|_| EngineError::Start(format!("interface {name:?} ({flag}) does not exist")))?;
            }
        }
        let tcp_ports = ports::probe_port_range().map_err(|e| e.to_string());
        let filter_ports = tcp_ports.clone().unwrap_or(NO_PORTS);
        // Put back by the guard if anything below fails; handed to the engine on success.
        let hw_guard = HwRestore(if config.hard { enable_hardware_stamps(&mut config)? } else { Vec::new() });
        let mut icmp_mode = IcmpMode::Raw;
        let stamps = config.stamp_keys;
        let mut v4 = FamilySockets::open_icmp(Family::V4, config.identifier, &filter_ports, config.hard, stamps);
        let mut v6 = FamilySockets::open_icmp(Family::V6, config.identifier, &filter_ports, config.hard, stamps);
        if let (Err(e4), Err(_)) = (&v4, &v6) {
            if e4.kind() != io::ErrorKind::PermissionDenied {
                let e6 = v6.as_ref().err().map(ToString::to_string).unwrap_or_default();
                return Err(EngineError::Start(format!("IPv4: {e4}; IPv6: {e6}")));
            }
            // No CAP_NET_RAW: unprivileged ICMP sockets, if ping_group_range lets us.
            icmp_mode = IcmpMode::Datagram;
            v4 = FamilySockets::open_ping(Family::V4, stamps);
            v6 = FamilySockets::open_ping(Family::V6, stamps);
            if let (Err(_), Err(_)) = (&v4, &v6) {
                return Err(EngineError::Start(no_icmp_socket_reason()));
            }
        }
        let mut warnings = Vec::new();
        if let Err(e) = &v4 {
            warnings.push(format!("IPv4 probing is disabled: {e}"));
        }
        if let Err(e) = &v6 {
            warnings.push(format!("IPv6 probing is disabled: {e}"));
        }
        if let Err(e) = &tcp_ports {
            warnings.push(format!("TCP SYN probing is disabled: {e}"));
        }
        let (v4, v6) = (v4.ok(), v6.ok());
        let stamp_matching = v4.as_ref().or(v6.as_ref()).map_or(StampMatching::Packet, |s| s.matching);
        let wake = Arc::new(
            EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                .map_err(|e| EngineError::Start(format!("eventfd: {e}")))?,
        );
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel();
        let (has_v4, has_v6) = (v4.is_some(), v6.is_some());
        let config_hard = config.hard;
        let mut engine_loop = EngineLoop::new(config, icmp_mode, v4, v6, rx, wake.clone(), shared.clone());
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("netprobe".into())
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine_loop.run()));
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
                    thread_shared.fail(f);
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
            tcp_ports,
            tcp: Mutex::new(TcpState::NotOpen),
            icmp_mode,
            hard: config_hard,
            stamps,
            stamp_matching,
            hw_changes: Mutex::new(hw_guard.disarm()),
        })
    }

    /// Raw ICMP sockets, or the unprivileged datagram fallback.
    pub fn icmp_mode(&self) -> IcmpMode {
        self.icmp_mode
    }

    /// How transmit stamps are tied to their probes: `SCM_TS_OPT_ID` (Linux >= 6.13), or the
    /// copy of the packet each stamp comes with.
    pub fn stamp_matching(&self) -> StampMatching {
        self.stamp_matching
    }

    /// What did not work at start without preventing it (a family without sockets).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn stopped_error(&self) -> EngineError {
        let why = self.shared.failure();
        EngineError::Stopped(why.unwrap_or_else(|| "stopped".into()))
    }

    fn send(&self, cmd: Command) -> Result<(), EngineError> {
        let sent = self.commands.lock().map_err(|_| self.stopped_error())?.send(cmd);
        sent.map_err(|_| self.stopped_error())?;
        // A failed write means the counter is already non-zero: the thread will wake anyway.
        let _ = self.wake.write(1);
        Ok(())
    }

    /// Opens the TCP sockets the first time they are needed; says which families have them.
    fn ensure_tcp(&self) -> Result<(bool, bool), EngineError> {
        let mut state = self.tcp.lock().map_err(|_| self.stopped_error())?;
        if let TcpState::NotOpen = *state {
            *state = match self.open_tcp() {
                Ok(transports) => {
                    let families = (transports.v4.is_some(), transports.v6.is_some());
                    self.send(Command::OpenTcp(transports))?;
                    TcpState::Open { v4: families.0, v6: families.1 }
                }
                Err(why) => TcpState::Failed(why),
            };
        }
        match &*state {
            TcpState::Open { v4, v6 } => Ok((*v4, *v6)),
            TcpState::Failed(why) => Err(EngineError::TcpUnavailable(why.clone())),
            TcpState::NotOpen => Err(EngineError::TcpUnavailable("not opened".into())),
        }
    }

    fn open_tcp(&self) -> Result<TcpTransports, String> {
        let range = self.tcp_ports.clone()?;
        let ports = PortPool::open(range.clone()).map_err(|e| format!("holding source ports {range:?}: {e}"))?;
        let v4 = FamilySockets::open_tcp(Family::V4, &range, self.hard, self.stamps);
        let v6 = FamilySockets::open_tcp(Family::V6, &range, self.hard, self.stamps);
        match (v4, v6) {
            (Err(e4), Err(_)) if e4.kind() == io::ErrorKind::PermissionDenied => {
                Err("SYN probing needs CAP_NET_RAW (raw TCP sockets)".into())
            }
            (Err(e4), Err(e6)) => Err(format!("raw TCP sockets: IPv4: {e4}; IPv6: {e6}")),
            (v4, v6) => Ok(TcpTransports { v4: v4.ok(), v6: v6.ok(), ports }),
        }
    }

    /// Opens the TCP sockets now rather than with the first TCP target: for a process about to
    /// drop its privileges, after which raw sockets can no longer be opened.
    pub fn prepare_tcp(&self) -> Result<(), EngineError> {
        self.ensure_tcp().map(|_| ())
    }

    /// Starts probing `addr`; returns the id to read its statistics with.
    pub fn track(&self, addr: IpAddr, kind: ProbeKind) -> Result<TargetId, EngineError> {
        self.track_with(addr, kind, ProbeOptions::default())
    }

    /// Starts probing `addr` with probes that carry `options`.
    pub fn track_with(&self, addr: IpAddr, kind: ProbeKind, options: ProbeOptions) -> Result<TargetId, EngineError> {
        if !usable(addr) {
            return Err(EngineError::Unusable(addr));
        }
        options.check(addr, kind).map_err(EngineError::InvalidOptions)?;
        if self.icmp_mode == IcmpMode::Datagram
            && kind == ProbeKind::Icmp
            && addr.is_ipv6()
            && options.has_packet_options()
            && !crate::options::ping6_takes_options()
        {
            return Err(EngineError::InvalidOptions(
                "ttl, tos, df and source need Linux 5.18 for IPv6 probes without CAP_NET_RAW (unprivileged ping sockets ignored them before)"
                    .into(),
            ));
        }
        let family = family_of(addr);
        let (v4, v6) = match kind {
            ProbeKind::Icmp => (self.has_v4, self.has_v6),
            ProbeKind::Tcp { port: 0 } => return Err(EngineError::InvalidPort),
            ProbeKind::Tcp { .. } => self.ensure_tcp()?,
        };
        if (family == Family::V4 && !v4) || (family == Family::V6 && !v6) {
            return Err(EngineError::FamilyUnavailable(family));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.send(Command::Track { id, addr, kind, options })?;
        Ok(id)
    }

    pub fn untrack(&self, id: TargetId) -> Result<(), EngineError> {
        self.send(Command::Untrack { id })
    }

    /// Statistics of each id, `None` for an id that is not tracked.
    pub fn snapshot(&self, ids: Vec<TargetId>) -> Result<Vec<Option<TargetSnapshot>>, EngineError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(Command::Snapshot { ids, reply: Reply::Channel(reply) })?;
        answer.recv_timeout(Duration::from_secs(10)).map_err(|_| self.stopped_error())
    }

    /// As `snapshot`, without waiting: `done` is called once, on the engine thread with the
    /// statistics, or with the reason there are none (on this thread if the engine has stopped).
    /// For a caller with an event loop, whose thread must not block on the engine's.
    pub fn snapshot_with(&self, ids: Vec<TargetId>, done: SnapshotCallback) {
        let reply = Reply::Callback(CallbackReply { done: Some(done), shared: self.shared.clone() });
        // Refused, the command is dropped here and its reply calls `done` with the failure.
        let _ = self.send(Command::Snapshot { ids, reply });
    }

    pub fn counters(&self, proto: Proto) -> CountersSnapshot {
        self.shared.counters(proto).snapshot()
    }

    /// Why the engine thread ended, if it ended abnormally.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure()
    }

    /// `listener` is called once with the reason when the engine thread ends abnormally
    /// (a panic or a failed loop; never for `stop`); at once if it already has. Replaces the
    /// listener registered before, if it has not been called.
    pub fn on_failure(&self, listener: FailureListener) {
        let already = match self.shared.failure.lock() {
            Ok(mut f) => match f.reason.clone() {
                Some(reason) => Some(reason),
                None => {
                    f.listener = Some(listener);
                    return;
                }
            },
            Err(_) => None,
        };
        if let Some(reason) = already {
            listener(reason);
        }
    }

    /// Stops the thread, closes the sockets, and puts back the NIC settings `-hard` changed.
    /// Idempotent.
    pub fn stop(&self) -> Result<(), EngineError> {
        let _ = self.send(Command::Stop);
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        let mut hung = false;
        if let Some(h) = handle {
            // A thread that does not end (a bug) is left behind rather than waited for for
            // ever: the NIC settings are put back all the same, and the caller hears of it.
            let deadline = Instant::now() + STOP_WAIT;
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
            } else {
                hung = true;
            }
        }
        if let Ok(mut changes) = self.hw_changes.lock() {
            for change in changes.drain(..) {
                // Without CAP_NET_ADMIN (after -drop) this fails: the NIC keeps stamping, which
                // turns nothing off for anyone else.
                let _ = hwstamp::restore(&change);
            }
        }
        if hung {
            return Err(EngineError::Stopped(format!(
                "the engine thread did not stop within {} s",
                STOP_WAIT.as_secs()
            )));
        }
        Ok(())
    }
}

/// How long `stop` waits for the engine thread to end.
const STOP_WAIT: Duration = Duration::from_secs(5);

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
