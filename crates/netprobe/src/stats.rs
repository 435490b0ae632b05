//! Per-target statistics: monotonic counters for PromQL over any range, and a ring of the
//! most recent samples for the window gauges (see `window`).
use crate::ring::{SampleRing, RING_LEN};
use crate::window::{self, Window};

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

#[derive(Debug, Clone, Default)]
pub struct TargetStats {
    counters: Counters,
    /// The last 250 samples, for the window gauges (as many as the reference keeps).
    ring: SampleRing,
    /// How many of the newest samples the window may look at (the change rule shrinks it).
    limit: u8,
}

impl TargetStats {
    pub fn record(&mut self, outcome: Outcome) {
        let c = &mut self.counters;
        c.sent += 1;
        let sample = match outcome {
            Outcome::Reply { rtt_ns, closed } => {
                c.received += 1;
                c.closed += u64::from(closed);
                let ns = u128::from(rtt_ns);
                c.rtt_sum_ns = c.rtt_sum_ns.saturating_add(ns);
                c.rtt_sq_sum_ns2 = c.rtt_sq_sum_ns2.saturating_add(ns * ns);
                Some(rtt_ns)
            }
            Outcome::Timeout => None,
            Outcome::IcmpError => {
                c.icmp_errors += 1;
                None
            }
            Outcome::SendError => {
                c.send_errors += 1;
                None
            }
        };
        self.ring.push(sample);
        self.limit = (usize::from(self.limit) + 1).min(RING_LEN) as u8;
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Computes the window gauges. May narrow the window for later calls, as the change rule says.
    pub fn window(&mut self) -> Window {
        let samples: Vec<Option<f64>> = self.ring.newest_first().take(usize::from(self.limit)).collect();
        let (w, sticky_limit) = window::compute(&samples);
        if let Some(limit) = sticky_limit {
            self.limit = limit.min(RING_LEN) as u8;
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
}
