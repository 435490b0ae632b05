//! Per-target statistics: monotonic counters for PromQL over any range, and a ring of the
//! most recent samples for the window gauges (see `window`).
use crate::window::{self, Window};

/// Samples kept for the window gauges, as in the reference exporter.
pub const RING_LEN: usize = 250;
/// RTTs are kept in the ring in units of 10 ns, so one sample costs 4 bytes.
const RING_UNIT_NS: u64 = 10;
const LOST: u32 = u32::MAX;

/// Counters since the target was first tracked. Sums are u128 nanoseconds: no overflow
/// and no precision loss for any realistic life time.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Probes whose outcome is final (answered, timed out, unsendable or answered by an ICMP error).
    pub sent: u64,
    /// Probes answered: an echo reply, a SYN-ACK, or a RST.
    pub received: u64,
    /// Of `received`, TCP probes answered by a RST: the host is up, the port closed.
    pub closed: u64,
    pub rtt_sum_ns: u128,
    pub rtt_sq_sum_ns2: u128,
    /// Probes answered by an ICMP error (unreachable, time exceeded, ...) instead of a reply.
    pub icmp_errors: u64,
    /// Probes the kernel refused to send (no route, address gone, ENOBUFS, ...).
    pub send_errors: u64,
}

/// How a probe ended. Every variant is final and counts in `sent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered; `closed` for a TCP RST.
    Reply {
        rtt_ns: u64,
        closed: bool,
    },
    Timeout,
    IcmpError,
    SendError,
}

#[derive(Debug, Clone)]
pub struct TargetStats {
    counters: Counters,
    ring: Box<[u32; RING_LEN]>,
    /// Index of the next write.
    head: usize,
    /// Samples written to the ring, capped at RING_LEN.
    filled: usize,
    /// How many of the newest samples the window may look at (the change rule shrinks it).
    limit: usize,
}

impl Default for TargetStats {
    fn default() -> Self {
        Self { counters: Counters::default(), ring: Box::new([LOST; RING_LEN]), head: 0, filled: 0, limit: 0 }
    }
}

impl TargetStats {
    pub fn record(&mut self, outcome: Outcome) {
        let c = &mut self.counters;
        c.sent += 1;
        let slot = match outcome {
            Outcome::Reply { rtt_ns, closed } => {
                c.received += 1;
                c.closed += u64::from(closed);
                let ns = u128::from(rtt_ns);
                c.rtt_sum_ns = c.rtt_sum_ns.saturating_add(ns);
                c.rtt_sq_sum_ns2 = c.rtt_sq_sum_ns2.saturating_add(ns * ns);
                u32::try_from(rtt_ns / RING_UNIT_NS).unwrap_or(LOST - 1).min(LOST - 1)
            }
            Outcome::Timeout => LOST,
            Outcome::IcmpError => {
                c.icmp_errors += 1;
                LOST
            }
            Outcome::SendError => {
                c.send_errors += 1;
                LOST
            }
        };
        self.ring[self.head] = slot;
        self.head = (self.head + 1) % RING_LEN;
        self.filled = (self.filled + 1).min(RING_LEN);
        self.limit = (self.limit + 1).min(RING_LEN);
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Samples from newest to oldest, `None` for a lost probe, RTT in seconds otherwise.
    fn newest_first(&self) -> impl Iterator<Item = Option<f64>> + '_ {
        (0..self.filled).map(move |age| {
            let idx = (self.head + RING_LEN - 1 - age) % RING_LEN;
            match self.ring[idx] {
                LOST => None,
                units => Some((u64::from(units) * RING_UNIT_NS) as f64 / 1e9),
            }
        })
    }

    /// Computes the window gauges. May narrow the window for later calls, as the change rule says.
    pub fn window(&mut self) -> Window {
        let samples: Vec<Option<f64>> = self.newest_first().take(self.limit).collect();
        let (w, sticky_limit) = window::compute(&samples);
        if let Some(limit) = sticky_limit {
            self.limit = limit;
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_follow_outcomes() {
        let mut s = TargetStats::default();
        s.record(Outcome::Reply { rtt_ns: 1_000, closed: false });
        s.record(Outcome::Reply { rtt_ns: 3_000, closed: true });
        s.record(Outcome::Timeout);
        s.record(Outcome::IcmpError);
        s.record(Outcome::SendError);
        let c = s.counters();
        assert_eq!((c.sent, c.received, c.icmp_errors, c.send_errors), (5, 2, 1, 1));
        assert_eq!(c.rtt_sum_ns, 4_000);
        assert_eq!(c.rtt_sq_sum_ns2, 10_000_000);
    }

    #[test]
    fn sums_do_not_overflow() {
        // Three 30 s replies: the squared sum (2.7e21 ns^2) is past what u64 holds.
        let mut s = TargetStats::default();
        for _ in 0..3 {
            s.record(Outcome::Reply { rtt_ns: 30_000_000_000, closed: false });
        }
        assert_eq!(s.counters().rtt_sq_sum_ns2, 3 * 900_000_000_000_000_000_000);
        assert!(s.counters().rtt_sq_sum_ns2 > u128::from(u64::MAX));
    }

    #[test]
    fn ring_keeps_the_newest_250() {
        let mut s = TargetStats::default();
        for i in 0..300u64 {
            s.record(Outcome::Reply { rtt_ns: (i + 1) * 1_000, closed: false });
        }
        let newest: Vec<_> = s.newest_first().collect();
        assert_eq!(newest.len(), RING_LEN);
        assert_eq!(newest[0], Some(300e-6));
        assert_eq!(newest[RING_LEN - 1], Some(51e-6));
    }
}
