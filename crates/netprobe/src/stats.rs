//! Per-target statistics: monotonic counters for PromQL over any range, and a ring of the
//! most recent samples for the window gauges (see `window`).
use crate::histogram::{HistogramLayout, NativeBuckets, RttHistogram};
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
    /// Every answered probe's RTT since the target was first tracked.
    histogram: RttHistogram,
}

impl TargetStats {
    /// Records a final outcome: counters, window and histograms move together, so that any
    /// snapshot sees the histograms' count equal to `received` and their sum to `rtt_sum_ns`.
    pub fn record(&mut self, outcome: Outcome, layout: &HistogramLayout) {
        let c = &mut self.counters;
        c.sent += 1;
        let sample = match outcome {
            Outcome::Reply { rtt_ns, closed } => {
                c.received += 1;
                c.closed += u64::from(closed);
                let ns = u128::from(rtt_ns);
                c.rtt_sum_ns = c.rtt_sum_ns.saturating_add(ns);
                c.rtt_sq_sum_ns2 = c.rtt_sq_sum_ns2.saturating_add(ns * ns);
                self.histogram.observe(layout, rtt_ns);
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
        self.apply_sticky_split();
    }

    /// The change rule's sticky part, applied as each probe is recorded so that the window is
    /// a function of the outcomes alone: reading the gauges (by one scraper or several, at any
    /// moment) never changes them.
    fn apply_sticky_split(&mut self) {
        if self.ring.lost() == 0 {
            return; // every sample answered: no split scores anything (the common case, O(1))
        }
        let mut answered = [false; RING_LEN];
        let n = usize::from(self.limit);
        for (slot, sample) in answered.iter_mut().zip(self.ring.newest_first().take(n)) {
            *slot = sample.is_some();
        }
        if let Some(limit) = window::sticky(window::change_point(&answered[..n])) {
            self.limit = limit.min(RING_LEN) as u8;
        }
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Cumulative classic bucket counts, one per bound of `layout`.
    pub fn classic_buckets(&self, layout: &HistogramLayout) -> Vec<u64> {
        self.histogram.classic_cumulative(layout)
    }

    pub fn native_buckets(&self, layout: &HistogramLayout) -> NativeBuckets {
        self.histogram.native(layout)
    }

    /// The window gauges now (the newest samples within the limit, narrowed by the change rule).
    pub fn window(&self) -> Window {
        let samples: Vec<Option<f64>> = self.ring.newest_first().take(usize::from(self.limit)).collect();
        window::compute(&samples).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_follow_outcomes() {
        let mut s = TargetStats::default();
        s.record(Outcome::Reply { rtt_ns: 1_000, closed: false }, &HistogramLayout::default());
        s.record(Outcome::Reply { rtt_ns: 3_000, closed: true }, &HistogramLayout::default());
        s.record(Outcome::Timeout, &HistogramLayout::default());
        s.record(Outcome::IcmpError, &HistogramLayout::default());
        s.record(Outcome::SendError, &HistogramLayout::default());
        let c = s.counters();
        assert_eq!((c.sent, c.received, c.icmp_errors, c.send_errors), (5, 2, 1, 1));
        assert_eq!(c.rtt_sum_ns, 4_000);
        assert_eq!(c.rtt_sq_sum_ns2, 10_000_000);
    }

    #[test]
    fn reading_the_window_never_changes_it() {
        // Two copies fed the same outcomes: one read after every probe, one never until the end.
        let mut read_often = TargetStats::default();
        let mut read_once = TargetStats::default();
        let mut seen = Vec::new();
        for i in 0..600u64 {
            // 200 answered, 150 lost (a split that sticks), then answered with some loss.
            let outcome = match i {
                0..=199 => Outcome::Reply { rtt_ns: 1_000_000 + i, closed: false },
                200..=349 => Outcome::Timeout,
                _ if i % 7 == 0 => Outcome::Timeout,
                _ => Outcome::Reply { rtt_ns: 2_000_000, closed: false },
            };
            read_often.record(outcome, &HistogramLayout::default());
            read_once.record(outcome, &HistogramLayout::default());
            seen.push(read_often.window());
        }
        assert_eq!(read_often.window(), read_once.window());
        assert!(seen.iter().any(|w| w.samples < 250 && w.samples >= 100), "a split stuck on the way");
    }

    #[test]
    fn sums_do_not_overflow() {
        // Three 30 s replies: the squared sum (2.7e21 ns^2) is past what u64 holds.
        let mut s = TargetStats::default();
        for _ in 0..3 {
            s.record(Outcome::Reply { rtt_ns: 30_000_000_000, closed: false }, &HistogramLayout::default());
        }
        assert_eq!(s.counters().rtt_sq_sum_ns2, 3 * 900_000_000_000_000_000_000);
        assert!(s.counters().rtt_sq_sum_ns2 > u128::from(u64::MAX));
    }
}
