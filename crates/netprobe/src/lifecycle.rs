//! The probe lifecycle, without IO: targets, the schedule and pacer, probes in flight,
//! transmit stamps, answers, deadlines, outcomes and statistics, as one state machine that
//! takes events (the time, what became of a send, a stamp, an answer, a queue read empty) and
//! hands out probes to send. The engine thread (`engine::event_loop`) is the shell that does
//! the syscalls around it; the model test (`tests` below) drives it with a simulated kernel.
//!
//! Times are nanoseconds of CLOCK_MONOTONIC since the engine started (`Nanos`); kernel stamps
//! are nanoseconds of their own clock (CLOCK_REALTIME for software stamps).
//!
//! What makes the numbers exact by construction:
//! - A probe ends exactly once: with its reply and transmit stamp, with an ICMP error quoting
//!   it, with a refused send, or at its expiry. A deadline names its probe by serial number, so
//!   it can never end a later probe that reuses the slot (a key's generation wraps).
//! - A probe expires only once every socket queue has been read empty at a moment after its
//!   expiry (`queue_drained`): an answer the kernel queued in time is always read before the
//!   probe is given up, however late the engine runs.
//! - Whether an answer was in time is decided by its round trip as measured (the kernel's
//!   stamps), never by when the engine looked: late means an RTT above the timeout.
//! - A send the kernel had no room for (ENOBUFS, EAGAIN) is not an outcome: the probe goes
//!   again (local congestion is not network loss).
use crate::counters::EngineCounters;
use crate::engine::{ProbeKind, Proto, Shared, TargetId, TargetSnapshot};
use crate::histogram::HistogramLayout;
use crate::inflight::{Ended, InFlight, Key, Lookup, Probe, Reply, MAX_SLOTS};
use crate::options::ProbeOptions;
use crate::rtt;
use crate::schedule::{self, SendQueue};
use crate::stats::{Outcome, TargetStats};
use crate::token::TokenKey;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

/// Nanoseconds of CLOCK_MONOTONIC since the engine started.
pub type Nanos = u64;

/// How long an unanswered probe is kept past its timeout before it ends. The timeout runs from
/// the monotonic reading before `sendmsg` until the transmit stamp is in, then from the moment
/// the stamp says the packet left (a wait in a queueing discipline of this host is not the
/// network's); an answer the kernel stamps at the very end of the timeout reaches its socket a
/// little after that. Answers within the grace are judged by their RTT: above the timeout, late.
pub const GRACE: Nanos = 5_000_000;
/// A probe's expiry moves to follow its transmit stamp only when the stamp is this much later
/// than `sendmsg` (it waited in a local queue): shorter waits are within the grace.
pub const EXTEND_OVER: Nanos = 1_000_000;
/// A queue read in full this many turns in a row without ever being found empty, for at least
/// `FLOOD_SPAN`, is flooded (packets that pass the socket filters, faster than they are read):
/// probes then expire as if it had been read (a backlog after a stall drains in far fewer).
const FLOOD_TURNS: u32 = 200;
const FLOOD_SPAN: Nanos = 1_000_000_000;
/// The turn grid. The engine wakes only on the send schedule: since every RTT comes from the
/// kernel's stamps, when it reads an answer does not change its number, so one wake-up sends
/// what is due and reads every answer and stamp that came meanwhile. Turns fall on a grid of
/// `turn` nanoseconds (fixed points in time: multiples of it since the engine started): a
/// probe leaves in the first turn at or after its phase, which makes that grid point its slot
/// (lateness is counted from it). The grid is as coarse as about `TURN_PROBES` probes a turn
/// allow, between `TURN_MIN` and `TURN_MAX`, and divides the interval so that slots stay put
/// round after round. At 1,000 probes/s a turn sends about ten and the engine wakes 100 times
/// a second instead of three times a probe (see the README's benchmarks).
pub const TURN_MIN: Nanos = 1_000_000;
pub const TURN_MAX: Nanos = 10_000_000;
const TURN_PROBES: u64 = 32;
const TURN_CHOICES: [Nanos; 4] = [10_000_000, 5_000_000, 2_000_000, 1_000_000];

/// The turn length for `targets` targets probed every `interval`, at most one probe each
/// `gap` (`1 / max_pps`): the longest of `TURN_CHOICES` that holds no more than about
/// `TURN_PROBES` probes and divides the interval (1 ms where none does).
pub fn turn_length(targets: usize, interval: Nanos, gap: Nanos) -> Nanos {
    let spacing = (interval / (targets as u64).max(1)).max(gap);
    let most = spacing.saturating_mul(TURN_PROBES);
    TURN_CHOICES.into_iter().find(|&t| t <= most && interval.is_multiple_of(t)).unwrap_or(TURN_MIN)
}

/// `t` rounded up to the turn grid of `turn`.
fn on_grid(t: Nanos, turn: Nanos) -> Nanos {
    t.div_ceil(turn).saturating_mul(turn)
}
/// How long sending pauses after the kernel had no room for a probe, doubled while it keeps
/// refusing, up to the longest. A full backlog drains in microseconds, a slow queueing
/// discipline takes milliseconds.
const CONGESTION_BACKOFF: Nanos = 100_000;
const CONGESTION_BACKOFF_MAX: Nanos = 64_000_000;

/// Socket queues a probe's answers can wait in: per transport (ICMP v4, ICMP v6, TCP v4, TCP
/// v6) the receive queue and the send socket's error queue (transmit stamps).
pub const QUEUES: usize = 8;

/// The most probes in flight `max_pps` and `timeout` can lead to: every probe sent within one
/// expiry span (an expiry is noticed up to a turn late), plus what the pacer lets one turn send
/// at once to catch up (a turn's worth).
pub fn peak_in_flight(max_pps: u32, timeout: Nanos) -> u64 {
    let span = u128::from(timeout + GRACE + 2 * TURN_MAX);
    (u128::from(max_pps) * span).div_ceil(1_000_000_000).min(u128::from(u64::MAX)) as u64 + 1
}

/// When an answer arrived, in monotonic time: the moment it was read (`read_mono`), less how
/// long it had waited in its socket queue by the kernel's receive stamp against a real-time
/// reading taken with it (`read_real`). The monotonic fallback RTT then leaves out how late
/// the engine read the answer. Without a stamp, or with one the clocks do not agree on (a
/// clock step), the moment it was read.
pub fn arrival(rx_stamp: Option<i64>, read_mono: Nanos, read_real: i64) -> Nanos {
    match rx_stamp.and_then(|rx| read_real.checked_sub(rx)) {
        Some(waited) if waited >= 0 && (waited as u64) <= read_mono => read_mono - waited as u64,
        _ => read_mono,
    }
}

/// When a batch of messages was read: the two clocks right after the read, and the last moment
/// its queue was known to be empty before it (nothing in the batch can have arrived earlier).
#[derive(Debug, Clone, Copy)]
pub struct ReadTime {
    pub mono: Nanos,
    pub real: i64,
    pub floor: Nanos,
}

/// How much earlier than its queue was last found empty a message may have been stamped: the
/// kernel stamps a packet when it takes it in and queues it to the socket later in the same
/// softirq, which on a loaded host runs late (milliseconds, in ksoftirqd).
const STAMP_TO_QUEUE: Nanos = 1_000_000_000;

impl ReadTime {
    /// A message's arrival (see `arrival`), not much before its queue was last found empty: a
    /// real-time step while it waited cannot place it far earlier than it can have come.
    pub fn arrival(&self, rx_stamp: Option<i64>) -> Nanos {
        arrival(rx_stamp, self.mono, self.real).max(self.floor.saturating_sub(STAMP_TO_QUEUE))
    }
}

/// Whether the in-flight table can hold what a configuration can put in flight.
pub fn fits_in_flight(max_pps: u32, timeout: Nanos) -> bool {
    peak_in_flight(max_pps, timeout) <= MAX_SLOTS as u64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleConfig {
    pub interval: Nanos,
    pub timeout: Nanos,
    /// `1 / max_pps`.
    pub gap: Nanos,
    /// `-hard`: a probe waits for its NIC transmit stamp too.
    pub hard: bool,
}

#[derive(Debug)]
pub struct Target {
    pub id: TargetId,
    pub addr: IpAddr,
    pub kind: ProbeKind,
    /// Next ICMP sequence number.
    pub seq: u16,
    pub stats: TargetStats,
    /// Its probes differ from the default ones (`Lifecycle::options_of` says how): a flag in
    /// what was padding, so that a default target pays nothing for options.
    pub custom: bool,
}

/// A probe to send now. It is in flight from the moment it is handed out: report what became
/// of its send with `on_sent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub key: Key,
    pub serial: u64,
    pub target_index: u32,
    pub addr: IpAddr,
    pub kind: ProbeKind,
    /// ICMP sequence number, or TCP source port.
    pub seq: u16,
    /// The ICMP payload token, or the SYN's initial sequence number.
    pub token: u64,
}

/// What became of a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendResult {
    /// The kernel took it: CLOCK_MONOTONIC (since start) and CLOCK_REALTIME readings taken
    /// right before `sendmsg`.
    Sent { at: Nanos, real: i64 },
    /// No room in a buffer or queue of this host (ENOBUFS, EAGAIN, ENOMEM): the probe never
    /// left and goes again.
    Congested,
    /// Refused for good (no route, a firewall, the interface gone...): a final outcome.
    Failed,
}

/// An answer to a probe, as the protocol code recognised it.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
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

/// An ICMP error quoting a probe, as the protocol code recognised it.
#[derive(Debug, Clone, Copy)]
pub struct QuotedErrorReport {
    pub key: Key,
    /// Must equal the probe's token (the ICMP payload token, or the SYN's sequence number).
    pub token: u64,
    /// The quoted packet's destination: must be the probe's target.
    pub dst: IpAddr,
    /// What the probe must have been sent as.
    pub kind: ProbeKind,
    /// Must equal the probe's `seq` (ICMP sequence, or TCP source port).
    pub seq: u16,
    /// When it arrived (see `arrival`).
    pub at: Nanos,
}

/// One finished probe, for the model test's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub serial: u64,
    pub target: TargetId,
    pub outcome: Outcome,
    /// Whether its target was still tracked (and so recorded it).
    pub recorded: bool,
}

pub(crate) fn proto_of(kind: ProbeKind) -> Proto {
    match kind {
        ProbeKind::Icmp => Proto::Icmp,
        ProbeKind::Tcp { .. } => Proto::Tcp,
    }
}

/// The length of a target's echo requests when `size` makes it other than the default.
fn sized_echo_len(kind: ProbeKind, options: &ProbeOptions) -> Option<usize> {
    let len = crate::wire::icmp::HEADER_LEN + options.payload_len();
    (kind == ProbeKind::Icmp && len != crate::wire::icmp::PROBE_LEN).then_some(len)
}

pub struct Lifecycle {
    config: LifecycleConfig,
    /// What every target's histograms keep.
    histograms: HistogramLayout,
    /// Echo request lengths other than the default that tracked targets send, with how many
    /// targets send each: what a transmit stamp's packet copy may end with.
    echo_lens: Vec<(usize, u32)>,
    /// The options of the targets whose probes are not the default ones.
    options: HashMap<TargetId, ProbeOptions>,
    shared: Arc<Shared>,
    tokens: TokenKey,
    targets: Vec<Option<Target>>,
    /// Slots freed by untracked targets, taken again lowest first: the occupied slots stay
    /// the first N, whose phases split the round evenly (see `schedule`).
    free_targets: BinaryHeap<Reverse<usize>>,
    /// Slot of each target (u32: a map entry of 8 bytes).
    index_of: HashMap<TargetId, u32>,
    schedule: SendQueue<(u32, TargetId)>,
    inflight: InFlight,
    /// `(expiry, key, serial)` in expiry order (every probe has the same timeout).
    deadlines: VecDeque<(Nanos, Key, u64)>,
    /// Expiries moved later once a transmit stamp showed the packet left late (a wait in a
    /// local queue): `(expiry, key, serial)`, earliest first.
    extended: BinaryHeap<Reverse<(Nanos, u32, u64)>>,
    next_serial: u64,
    pacer_next: Nanos,
    /// The turn grid's step for the targets tracked now (see `turn_length`).
    turn: Nanos,
    /// How long a probe the kernel had no room for waits before it goes again: doubled while
    /// sends keep being refused, back to the shortest after one goes.
    backoff: Nanos,
    /// The turn (`now / turn`) in which the backoff was last doubled: it doubles once a turn
    /// at most, as the probes of one turn leave together and meet the same full queue.
    backoff_turn: Nanos,
    /// Probes the kernel had no room for, with their own due times, held until `held_until`:
    /// then they go back in line where their due times put them, ahead of younger probes, so
    /// the room a slow local queue has goes round every target (a retry timed afresh, or given
    /// up at the target's next turn, queues behind the same targets every round: some never
    /// get a turn).
    held: Vec<(Nanos, (u32, TargetId))>,
    held_until: Nanos,
    /// TCP source ports, used in turn.
    ports: Vec<u16>,
    next_port: usize,
    /// Per queue: whether its socket exists, and the latest moment it was known to be empty
    /// (everything queued before was read).
    queue_present: [bool; QUEUES],
    drained: [Nanos; QUEUES],
    /// Turns in a row that read a queue in full without finding it empty.
    busy_turns: [u32; QUEUES],
    /// When the tables are looked at for memory to give back, after targets left: once their
    /// queued sends and probes in flight are gone (see `give_back_memory`).
    shrink_at: Option<Nanos>,
    log: Option<Vec<Finished>>,
}

/// Shrinks a table by the engine's rule (`schedule::shrunk_capacity`).
macro_rules! shrink {
    ($table:expr) => {
        if let Some(c) = schedule::shrunk_capacity($table.capacity(), $table.len()) {
            $table.shrink_to(c);
        }
    };
}

impl Lifecycle {
    /// Every target's histograms keep what `layout` says (none but the native one by default).
    pub fn with_histograms(mut self, layout: HistogramLayout) -> Self {
        self.histograms = layout;
        self
    }

    pub fn new(config: LifecycleConfig, shared: Arc<Shared>) -> Self {
        Lifecycle {
            config,
            histograms: HistogramLayout::default(),
            echo_lens: Vec::new(),
            options: HashMap::new(),
            shared,
            tokens: TokenKey::new(),
            targets: Vec::new(),
            free_targets: BinaryHeap::new(),
            index_of: HashMap::new(),
            schedule: SendQueue::new(),
            inflight: InFlight::default(),
            deadlines: VecDeque::new(),
            extended: BinaryHeap::new(),
            next_serial: 0,
            pacer_next: 0,
            turn: turn_length(0, config.interval, config.gap),
            backoff: CONGESTION_BACKOFF,
            backoff_turn: Nanos::MAX,
            held: Vec::new(),
            held_until: 0,
            ports: Vec::new(),
            next_port: 0,
            queue_present: [false; QUEUES],
            drained: [0; QUEUES],
            busy_turns: [0; QUEUES],
            shrink_at: None,
            log: None,
        }
    }

    pub fn tokens(&self) -> &TokenKey {
        &self.tokens
    }

    fn counters(&self, proto: Proto) -> &EngineCounters {
        self.shared.counters(proto)
    }

    /// Keeps every finished probe in a log (`take_log`), for tests.
    pub fn enable_log(&mut self) {
        self.log = Some(Vec::new());
    }

    pub fn take_log(&mut self) -> Vec<Finished> {
        self.log.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The TCP source ports to use (the engine holds them).
    pub fn set_tcp_ports(&mut self, ports: Vec<u16>) {
        self.ports = ports;
    }

    /// Says that a socket queue exists from now on (`now`: it is empty as it opens).
    pub fn queue_opened(&mut self, queue: usize, now: Nanos) {
        if let Some(p) = self.queue_present.get_mut(queue) {
            *p = true;
            self.drained[queue] = self.drained[queue].max(now);
        }
    }

    /// Says that everything queue `queue` held at `at` has been read.
    pub fn queue_drained(&mut self, queue: usize, at: Nanos) {
        if let Some(d) = self.drained.get_mut(queue) {
            *d = (*d).max(at);
            self.busy_turns[queue] = 0;
        }
    }

    /// The latest moment queue `queue` was known to be empty.
    pub fn drained_at(&self, queue: usize) -> Nanos {
        self.drained.get(queue).copied().unwrap_or(0)
    }

    /// Says that a turn read as much of queue `queue` as it may and left some.
    pub fn queue_busy(&mut self, queue: usize) {
        if let Some(b) = self.busy_turns.get_mut(queue) {
            *b = b.saturating_add(1);
        }
    }

    /// Up to when every queue is known to have been read (a flooded one: up to a while ago).
    fn drained_until(&self, now: Nanos) -> Nanos {
        let mark = |q: usize| {
            let flooded = self.busy_turns[q] >= FLOOD_TURNS && now.saturating_sub(self.drained[q]) >= FLOOD_SPAN;
            if flooded {
                self.drained[q].max(now - FLOOD_SPAN)
            } else {
                self.drained[q]
            }
        };
        (0..QUEUES).filter(|&q| self.queue_present[q]).map(mark).min().unwrap_or(Nanos::MAX)
    }

    pub fn track(&mut self, id: TargetId, addr: IpAddr, kind: ProbeKind, now: Nanos) {
        self.track_with(id, addr, kind, ProbeOptions::default(), now);
    }

    /// Tracks a target whose probes carry `options` (checked by the caller).
    pub fn track_with(&mut self, id: TargetId, addr: IpAddr, kind: ProbeKind, options: ProbeOptions, now: Nanos) {
        if let Some(len) = sized_echo_len(kind, &options) {
            match self.echo_lens.iter_mut().find(|(l, _)| *l == len) {
                Some((_, n)) => *n += 1,
                None => self.echo_lens.push((len, 1)),
            }
        }
        let custom = !options.is_default();
        if custom {
            self.options.insert(id, options);
        }
        let target = Target { id, addr, kind, seq: 0, stats: TargetStats::default(), custom };
        let index = match self.free_targets.pop().map(|Reverse(i)| i) {
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
        self.turn = turn_length(self.index_of.len(), self.config.interval, self.config.gap);
        // Its slot's fixed phase in the round: targets spread evenly, and nobody else's moves.
        let due = schedule::first_due(now, self.config.interval, schedule::phase_fraction(index));
        self.schedule.add(due, (index as u32, id));
    }

    pub fn untrack(&mut self, id: TargetId, now: Nanos) {
        if let Some(index) = self.index_of.remove(&id).map(|i| i as usize) {
            let gone = self.targets[index].take();
            let options = gone.as_ref().filter(|t| t.custom).and_then(|t| self.options.remove(&t.id));
            if let Some(len) = gone.zip(options).and_then(|(t, o)| sized_echo_len(t.kind, &o)) {
                if let Some(at) = self.echo_lens.iter().position(|(l, _)| *l == len) {
                    self.echo_lens[at].1 -= 1;
                    if self.echo_lens[at].1 == 0 {
                        self.echo_lens.swap_remove(at);
                    }
                }
            }
            self.free_targets.push(Reverse(index));
            self.turn = turn_length(self.index_of.len(), self.config.interval, self.config.gap);
            // Its queued send leaves the queue within an interval, its probes in flight within
            // the timeout (and a turn).
            let settled = now + self.config.interval + self.config.timeout + 2 * TURN_MAX;
            self.shrink_at = Some(self.shrink_at.map_or(settled, |at| at.max(settled)));
        }
    }

    /// After targets left (a burst expiring): the slots past the last target are dropped,
    /// and every table holding less than a quarter of its allocation is shrunk. Returns
    /// whether it was time to look (then the allocator may give the freed memory back).
    pub fn give_back_memory(&mut self, now: Nanos) -> bool {
        if self.shrink_at.is_none_or(|at| now < at) {
            return false;
        }
        self.shrink_at = None;
        // Freed slots are taken again lowest first, so after a burst the tail is empty.
        let used = self.targets.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
        if used < self.targets.len() {
            self.targets.truncate(used);
            self.free_targets.retain(|Reverse(i)| *i < used);
        }
        shrink!(self.targets);
        shrink!(self.free_targets);
        shrink!(self.index_of);
        shrink!(self.options);
        self.schedule.shrink();
        shrink!(self.deadlines);
        shrink!(self.extended);
        shrink!(self.held);
        true
    }

    /// How the probes of the target in slot `index` are sent.
    pub fn options_of(&self, index: usize) -> ProbeOptions {
        match self.target(index) {
            Some(t) if t.custom => self.options.get(&t.id).copied().unwrap_or_default(),
            _ => ProbeOptions::default(),
        }
    }

    /// Echo request lengths besides the default that tracked targets send.
    pub fn sized_echo_lens(&self) -> impl Iterator<Item = usize> + '_ {
        self.echo_lens.iter().map(|(l, _)| *l)
    }

    /// Slots of the target table (taken and free) and its allocation, for tests.
    pub fn target_table(&self) -> (usize, usize) {
        (self.targets.len(), self.targets.capacity())
    }

    /// What a scrape reads of a target. Reading changes nothing.
    pub fn snapshot(&self, id: TargetId) -> Option<TargetSnapshot> {
        let index = *self.index_of.get(&id)? as usize;
        let target = self.targets.get(index)?.as_ref()?;
        Some(TargetSnapshot {
            counters: target.stats.counters(),
            window: target.stats.window(),
            classic: target.stats.classic_buckets(&self.histograms),
            native: self.histograms.native.then(|| target.stats.native_buckets(&self.histograms)),
        })
    }

    pub fn target(&self, index: usize) -> Option<&Target> {
        self.targets.get(index)?.as_ref()
    }

    fn target_mut(&mut self, index: usize, id: TargetId) -> Option<&mut Target> {
        self.targets.get_mut(index)?.as_mut().filter(|t| t.id == id)
    }

    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// When the shell should wake next, at `now`: the turn of the next send (at once when one is
    /// due), or of the next expiry. An expiry that has come already waits for a queue to be read
    /// empty after it, which the next turn does: its wake-up is the next turn, so a queue that
    /// cannot be read (failing reads) never makes the shell spin.
    pub fn next_wake(&self, now: Nanos) -> Option<Nanos> {
        let queued = self.schedule.peek().map(|(due, _)| due);
        let held = self.held.iter().map(|(due, _)| (*due).max(self.held_until)).min();
        let send = [queued, held].into_iter().flatten().min().map(|due| on_grid(due.max(self.pacer_next), self.turn));
        let expiry = self.next_expiry().map(|at| on_grid(at, self.turn)).map(|at| {
            if at <= now {
                on_grid(now + 1, self.turn)
            } else {
                at
            }
        });
        // A shrink due with nothing else to wake for still gets its wake-up.
        let shrink = self.shrink_at.map(|at| on_grid(at.max(now + 1), self.turn));
        [send, expiry, shrink].into_iter().flatten().min()
    }

    /// The turn grid's step now.
    pub fn turn(&self) -> Nanos {
        self.turn
    }

    /// When the next probe in flight expires.
    pub fn next_expiry(&self) -> Option<Nanos> {
        let fifo = self.deadlines.front().map(|(at, _, _)| *at);
        let moved = self.extended.peek().map(|Reverse((at, _, _))| *at);
        match (fifo, moved) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next probe to send at `now`, if one is due and the pacer allows it.
    pub fn poll_transmit(&mut self, now: Nanos) -> Option<Transmit> {
        if now >= self.held_until {
            for (due, item) in self.held.drain(..) {
                self.schedule.add(due, item);
            }
        }
        loop {
            let (due, (slot, id)) = self.schedule.peek()?;
            // Not before its slot, the turn it belongs to, even in a turn a command started.
            if on_grid(due, self.turn) > now || self.pacer_next > now {
                return None;
            }
            self.schedule.pop();
            let index = slot as usize;
            let Some(target) = self.target_mut(index, id) else {
                continue; // untracked since it was scheduled
            };
            let (kind, addr) = (target.kind, target.addr);
            let seq = match kind {
                ProbeKind::Icmp => {
                    let seq = target.seq;
                    target.seq = seq.wrapping_add(1);
                    Some(seq)
                }
                ProbeKind::Tcp { .. } => self.take_port(),
            };
            // A turn may send as many as `-maxpps` allows over one turn, so the cap holds
            // over any span of a turn or more.
            self.pacer_next = self.pacer_next.max(now.saturating_sub(self.turn)) + self.config.gap;
            let serial = self.next_serial;
            self.next_serial += 1;
            let Some(seq) = seq else {
                // No source port to send a SYN from.
                EngineCounters::add(&self.counters(Proto::Tcp).send_errors, 1);
                self.end(index, id, serial, Outcome::SendError);
                self.schedule_next(due, slot, id, now);
                continue;
            };
            let probe = Probe {
                target_index: slot,
                target_id: id,
                tcp: matches!(kind, ProbeKind::Tcp { .. }),
                seq,
                token: 0,
                serial,
                due,
                sent_at: now,
                sent_rt: i64::MIN,
                expiry: Nanos::MAX,
                tx_stamp_ns: None,
                tx_hw_ns: None,
                reply: None,
                error_at: None,
            };
            let Some(key) = self.inflight.insert(probe) else {
                EngineCounters::add(&self.counters(proto_of(kind)).inflight_full, 1);
                self.end(index, id, serial, Outcome::SendError);
                self.schedule_next(due, slot, id, now);
                continue;
            };
            let token = match kind {
                ProbeKind::Icmp => self.tokens.token(key.0, seq, addr),
                ProbeKind::Tcp { port } => u64::from(key.0 ^ self.tokens.tcp_mask(addr, port, seq)),
            };
            if let Some(p) = self.inflight.get_mut(key) {
                p.token = token;
            }
            return Some(Transmit { key, serial, target_index: slot, addr, kind, seq, token });
        }
    }

    fn take_port(&mut self) -> Option<u16> {
        let port = *self.ports.get(self.next_port % self.ports.len().max(1))?;
        self.next_port = self.next_port.wrapping_add(1);
        Some(port)
    }

    fn count_lateness(&self, proto: Proto, late: Nanos) {
        let c = self.counters(proto);
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

    /// Puts a target back at its next turn: its phase one round after `due` (or after a retry
    /// that moved it off its phase, the next time its phase comes round).
    fn schedule_next(&mut self, due: Nanos, slot: u32, id: TargetId, now: Nanos) {
        let phase = schedule::phase_fraction(slot as usize);
        let next = schedule::first_due(due + 1, self.config.interval, phase);
        // A probe that left after its next one was due (it waited for room here, or for the
        // pps cap) is followed at the target's next phase from now, not at once: two probes of
        // one target in one turn would be a burst, and take another's room.
        let next = if next <= now { schedule::first_due(now, self.config.interval, phase) } else { next };
        self.schedule.put_back(next.max(now), (slot, id));
    }

    /// What became of the send of a probe `poll_transmit` handed out.
    pub fn on_sent(&mut self, key: Key, result: SendResult, now: Nanos) {
        let Some(probe) = self.inflight.get(key).copied() else {
            return;
        };
        let proto = if probe.tcp { Proto::Tcp } else { Proto::Icmp };
        let (index, id, slot) = (probe.target_index as usize, probe.target_id, probe.target_index);
        match result {
            SendResult::Sent { at, real } => {
                // How late it left against its schedule (a probe that had to wait for room here
                // counts once, when it leaves).
                self.count_lateness(proto, at.saturating_sub(on_grid(probe.due, self.turn)));
                self.backoff = CONGESTION_BACKOFF;
                EngineCounters::add(&self.counters(proto).packets_sent, 1);
                let expiry = at + self.config.timeout + GRACE;
                if let Some(p) = self.inflight.get_mut(key) {
                    p.sent_at = at;
                    p.sent_rt = real;
                    p.expiry = expiry;
                }
                // Monotonic readings never go back, so the queue stays in expiry order.
                self.deadlines.push_back((expiry, key, probe.serial));
                self.schedule_next(probe.due, slot, id, now);
            }
            SendResult::Congested => {
                EngineCounters::add(&self.counters(proto).send_deferred, 1);
                self.inflight.remove(key, Ended::Other);
                // This probe alone waits (others go: a queue full for one destination must not
                // stop the rest), and tries again in a later turn, in line by its own due time:
                // ahead of younger probes, so the room a slow local queue has goes round every
                // target. It never left, so it is neither sent nor lost until it leaves.
                self.held.push((probe.due, (slot, id)));
                self.held_until = self.held_until.max(on_grid(now + self.backoff, self.turn));
                if self.backoff_turn != now / self.turn {
                    self.backoff_turn = now / self.turn;
                    self.backoff = (self.backoff * 2).min(CONGESTION_BACKOFF_MAX);
                }
            }
            SendResult::Failed => {
                self.count_lateness(proto, now.saturating_sub(on_grid(probe.due, self.turn)));
                EngineCounters::add(&self.counters(proto).send_errors, 1);
                self.inflight.remove(key, Ended::Other);
                self.end(index, id, probe.serial, Outcome::SendError);
                self.schedule_next(probe.due, slot, id, now);
            }
        }
    }

    /// Records a probe's final outcome on its target (if still tracked).
    fn end(&mut self, index: usize, id: TargetId, serial: u64, outcome: Outcome) {
        let target = self.targets.get_mut(index).and_then(Option::as_mut).filter(|t| t.id == id);
        let recorded = match target {
            Some(t) => {
                t.stats.record(outcome, &self.histograms);
                true
            }
            None => false,
        };
        if let Some(log) = self.log.as_mut() {
            log.push(Finished { serial, target: id, outcome, recorded });
        }
    }

    /// Whether a probe has every stamp worth waiting for: its reply, the software transmit
    /// stamp, and with `-hard` the hardware one (a probe still missing some ends at expiry).
    fn complete(&self, p: &Probe) -> bool {
        p.reply.is_some() && p.tx_stamp_ns.is_some() && (!self.config.hard || p.tx_hw_ns.is_some())
    }

    /// Ends a probe whose reply and transmit stamps are in, or whose expiry came.
    fn finish(&mut self, key: Key) {
        let Some(probe) = self.inflight.get(key).copied() else {
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
                let sent = rtt::Sent { mono: probe.sent_at, real: probe.sent_rt };
                let (rtt_ns, clock, why) = rtt::choose_rtt(stamps, sent, reply.at);
                let c = self.counters(proto);
                // Arrived after the probe's expiry (read late only because the engine ran late),
                // or with an RTT above the timeout: lost, and the answer counts as late. When the
                // kernel took it decides, not when it was read.
                if reply.at > probe.expiry || rtt_ns > self.config.timeout {
                    EngineCounters::add(&c.replies_late, 1);
                    Outcome::Timeout
                } else {
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
            }
            // An ICMP error that came after the expiry as it stood then: in time if the expiry
            // moved past it since (the transmit stamp showed a wait in a local queue).
            None => match probe.error_at {
                Some(at) if at <= probe.expiry => {
                    EngineCounters::add(&self.counters(proto).icmp_errors, 1);
                    Outcome::IcmpError
                }
                Some(_) => {
                    EngineCounters::add(&self.counters(proto).icmp_errors_unmatched, 1);
                    Outcome::Timeout
                }
                None => Outcome::Timeout,
            },
        };
        if probe.reply.is_some() && probe.error_at.is_some() {
            EngineCounters::add(&self.counters(proto).icmp_errors_unmatched, 1);
        }
        let ended = match outcome {
            Outcome::Reply { .. } => Ended::Replied,
            Outcome::IcmpError => Ended::Errored,
            _ if probe.reply.is_some() => Ended::Replied,
            _ => Ended::Other,
        };
        self.inflight.remove(key, ended);
        self.end(probe.target_index as usize, probe.target_id, probe.serial, outcome);
    }

    /// Ends the probes whose expiry has come, as far as every queue has been read: a probe
    /// whose answer may still wait in a queue is kept until that queue is read.
    pub fn expire(&mut self, now: Nanos) {
        let until = now.min(self.drained_until(now));
        loop {
            let fifo = self.deadlines.front().copied().filter(|(at, _, _)| *at <= until);
            let moved =
                self.extended.peek().map(|Reverse((at, k, s))| (*at, Key(*k), *s)).filter(|(at, _, _)| *at <= until);
            let (expiry, key, serial) = match (fifo, moved) {
                (Some(f), Some(m)) if m.0 < f.0 => {
                    self.extended.pop();
                    m
                }
                (Some(f), _) => {
                    self.deadlines.pop_front();
                    f
                }
                (None, Some(m)) => {
                    self.extended.pop();
                    m
                }
                (None, None) => break,
            };
            // Ended already, its slot serves a later probe (same key after a wrap), or its
            // expiry was moved: not this entry's to end.
            if self.inflight.get(key).is_some_and(|p| p.serial == serial && p.expiry == expiry) {
                self.finish(key);
            }
        }
        // Deadlines of probes that ended already (answered, most of them) go too, however far
        // off: the next expiry is then a live probe's, and the engine never wakes for the dead.
        let live = |inflight: &InFlight, at: Nanos, key: Key, serial: u64| {
            inflight.get(key).is_some_and(|p| p.serial == serial && p.expiry == at)
        };
        while let Some(&(at, key, serial)) = self.deadlines.front() {
            if live(&self.inflight, at, key, serial) {
                break;
            }
            self.deadlines.pop_front();
        }
        while let Some(&Reverse((at, key, serial))) = self.extended.peek() {
            if live(&self.inflight, at, Key(key), serial) {
                break;
            }
            self.extended.pop();
        }
    }

    /// A kernel transmit stamp for the probe `key` names (with the probe's token when the
    /// stamp came with a copy of the packet).
    pub fn on_tx_stamp(&mut self, proto: Proto, key: Key, token: Option<u64>, sw: Option<i64>, hw: Option<i64>) {
        if sw.is_none() && hw.is_none() {
            return;
        }
        let fresh = |have: Option<i64>, got: Option<i64>| have.is_none() || got.is_none();
        let matched = match self.inflight.get_mut(key) {
            Some(p)
                if p.tcp == (proto == Proto::Tcp)
                    && token.is_none_or(|t| t == p.token)
                    // A stamp taken before this probe was sent belongs to an earlier one.
                    && sw.is_none_or(|s| s >= p.sent_rt)
                    && fresh(p.tx_stamp_ns, sw)
                    && fresh(p.tx_hw_ns, hw) =>
            {
                p.tx_stamp_ns = p.tx_stamp_ns.or(sw);
                p.tx_hw_ns = p.tx_hw_ns.or(hw);
                Some(*p)
            }
            _ => None,
        };
        if let (Some(p), Some(sw)) = (matched, sw) {
            self.extend_expiry(key, &p, sw);
        }
        match matched {
            Some(probe) if self.complete(&probe) => self.finish(key),
            Some(_) => {}
            None => EngineCounters::add(&self.counters(proto).tx_timestamps_unmatched, 1),
        }
    }

    /// A packet that left late (it waited in a queueing discipline of this host) gets its
    /// timeout from when it left, as long as it left within the timeout: an answer's RTT runs
    /// from the transmit stamp, and the wait was this host's, not the network's.
    fn extend_expiry(&mut self, key: Key, p: &Probe, tx_stamp: i64) {
        let Ok(waited) = u64::try_from(tx_stamp.saturating_sub(p.sent_rt)) else {
            return;
        };
        if waited > self.config.timeout {
            return; // left after its timeout: lost here already
        }
        if waited <= EXTEND_OVER {
            // The grace covers it: an answer in time still comes GRACE - EXTEND_OVER before
            // the expiry. Moving every probe's expiry by the microseconds between `sendmsg` and
            // its stamp cost a heap push and pop per probe (4 % of the engine at 100,000/s).
            return;
        }
        let expiry = p.sent_at + waited + self.config.timeout + GRACE;
        if expiry > p.expiry {
            if let Some(probe) = self.inflight.get_mut(key) {
                probe.expiry = expiry;
            }
            self.extended.push(Reverse((expiry, key.0, p.serial)));
        }
    }

    /// Records an answer to a probe, or counts why it changes nothing. `authentic` tells
    /// whether a packet whose probe record is gone was still ours (then it is late).
    pub fn on_answer(&mut self, proto: Proto, a: Answer, authentic: impl FnOnce(&TokenKey) -> bool) {
        let c = self.shared.counters(proto);
        match self.inflight.lookup(a.key, a.token) {
            Lookup::Live => {}
            Lookup::Ended(Ended::Replied) => return EngineCounters::add(&c.replies_duplicate, 1),
            // After an ICMP error ended its probe: late, but not a probe lost in time.
            Lookup::Ended(Ended::Errored) => return EngineCounters::add(&c.replies_late, 1),
            Lookup::Ended(Ended::Other) => {
                // A late answer that took no longer than the timeout from its send would be a
                // probe wrongly lost: counted apart, so a benchmark can show there are none.
                let sent_rt = self.inflight.ended_sent_rt(a.key);
                let took = sent_rt.zip(a.reply.rx_stamp_ns).map(|(tx, rx)| rx.saturating_sub(tx));
                if took.is_some_and(|t| t >= 0 && (t as u64) <= self.config.timeout) {
                    EngineCounters::add(&c.late_within_timeout, 1);
                }
                return EngineCounters::add(&c.replies_late, 1);
            }
            Lookup::Unknown => {
                let counter = if authentic(&self.tokens) { &c.replies_late } else { &c.replies_foreign };
                return EngineCounters::add(counter, 1);
            }
        }
        let Some(probe) = self.inflight.get(a.key).copied() else {
            return;
        };
        // A target untracked since keeps its probes to the end (unrecorded): the token still
        // proves the answer is theirs.
        let target = self.target(probe.target_index as usize).filter(|t| t.id == probe.target_id);
        let sent = probe.expiry != Nanos::MAX;
        let matches = target.is_none_or(|t| Some(t.addr) == a.from && t.kind == a.kind) && probe.seq == a.seq;
        if !matches || !sent {
            return EngineCounters::add(&c.replies_foreign, 1);
        }

        if probe.reply.is_some() {
            return EngineCounters::add(&c.replies_duplicate, 1);
        }
        let Some(p) = self.inflight.get_mut(a.key) else {
            return;
        };
        p.reply = Some(a.reply);
        let probe = *p;
        if self.complete(&probe) {
            self.finish(a.key);
        }
        // Otherwise the transmit stamp is still on its way: it ends the probe, or expiry does.
    }

    /// An ICMP error quoting a probe: when it matches one in flight (and came before its
    /// expiry), that probe ends lost.
    pub fn on_quoted_error(&mut self, proto: Proto, e: QuotedErrorReport) {
        let QuotedErrorReport { key, token, dst, kind, seq, at } = e;
        let c = self.shared.counters(proto);
        if self.inflight.lookup(key, token) != Lookup::Live {
            return EngineCounters::add(&c.icmp_errors_unmatched, 1);
        }
        let Some(probe) = self.inflight.get(key).copied() else {
            return;
        };
        let target = self.target(probe.target_index as usize).filter(|t| t.id == probe.target_id);
        let matches = target.is_none_or(|t| t.addr == dst && t.kind == kind) && probe.seq == seq;
        if probe.reply.is_some() || probe.error_at.is_some() || !matches || probe.expiry == Nanos::MAX {
            return EngineCounters::add(&c.icmp_errors_unmatched, 1);
        }
        if at > probe.expiry {
            if probe.tx_stamp_ns.is_some() {
                // Its expiry is final: the error came too late.
                return EngineCounters::add(&c.icmp_errors_unmatched, 1);
            }
            if let Some(p) = self.inflight.get_mut(key) {
                p.error_at = Some(at);
            }
            return; // judged when the probe ends
        }
        EngineCounters::add(&c.icmp_errors, 1);
        self.inflight.remove(key, Ended::Errored);
        self.end(probe.target_index as usize, probe.target_id, probe.serial, Outcome::IcmpError);
    }
}

#[cfg(test)]
mod tests;
