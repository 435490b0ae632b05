//! The simulator: decides what each request gets (by its host's profile and a seeded random
//! stream), schedules the answers on a heap by due time, and keeps the ground truth.
use crate::profile::{Dist, ErrorKind, Hosts, Profile, TcpAction};
use crate::respond::{self, Request};
use crate::truth::Truth;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A copy of an answer follows the original this much later.
const DUPLICATE_GAP: Duration = Duration::from_micros(100);

/// An answer waiting for its time.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    due: Instant,
    order: u64,
    packet: Vec<u8>,
    /// For answers that count as replies (not errors, not copies): the host and when the
    /// request came, so the truth holds the delay actually applied.
    reply_of: Option<(IpAddr, Instant)>,
}

pub struct Sim {
    hosts: Hosts,
    pub truth: Truth,
    queue: BinaryHeap<Reverse<Pending>>,
    order: u64,
    rng: u64,
    started: Instant,
}

impl Sim {
    pub fn new(hosts: Hosts, started: Instant) -> Sim {
        let rng = if hosts.seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { hosts.seed };
        Sim { hosts, truth: Truth::default(), queue: BinaryHeap::new(), order: 0, rng, started }
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn delay(&mut self, p: &Profile) -> Duration {
        let jitter = match p.jitter {
            Dist::Uniform => (2.0 * self.uniform() - 1.0) * p.jitter_ms,
            Dist::Normal => {
                // Box-Muller.
                let (u1, u2) = (self.uniform().max(f64::MIN_POSITIVE), self.uniform());
                (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * p.jitter_ms
            }
        };
        Duration::from_secs_f64(((p.delay_ms + jitter).max(0.0)) / 1000.0)
    }

    fn schedule(&mut self, due: Instant, packet: Vec<u8>, reply_of: Option<(IpAddr, Instant)>) {
        self.order += 1;
        self.queue.push(Reverse(Pending { due, order: self.order, packet, reply_of }));
    }

    /// Takes one packet the prober sent.
    pub fn handle(&mut self, packet: &[u8], now: Instant) {
        let request = match respond::classify(packet) {
            Ok(r) => r,
            Err(_) => {
                self.truth.malformed += 1;
                return;
            }
        };
        let (dst, tcp_port) = match request {
            Request::Echo { dst, .. } => (dst, None),
            Request::Syn { dst, dst_port, .. } => (dst, Some(dst_port)),
            Request::Other => {
                self.truth.ignored += 1;
                return;
            }
        };
        let elapsed = now.saturating_duration_since(self.started).as_millis() as u64;
        let Some(profile) = self.hosts.profile(dst, elapsed).cloned() else {
            self.truth.ignored += 1;
            return;
        };
        self.truth.host(dst).requests += 1;
        if self.uniform() < profile.loss {
            self.truth.host(dst).dropped += 1;
            return;
        }
        let action = tcp_port.map(|port| profile.tcp_action(port));
        if action == Some(TcpAction::Silence) {
            self.truth.host(dst).dropped += 1;
            return;
        }
        let as_error = self.uniform() < profile.icmp_error;
        let answer = if as_error {
            respond::icmp_error(packet, profile.error == ErrorKind::TimeExceeded)
        } else if let Some(action) = action {
            let seq = (self.uniform() * f64::from(u32::MAX)) as u32;
            respond::syn_answer(packet, action == TcpAction::Synack, seq)
        } else {
            respond::echo_reply(packet)
        };
        let Ok(answer) = answer else {
            self.truth.malformed += 1;
            return;
        };
        let mut delay = self.delay(&profile);
        if self.uniform() < profile.reorder {
            delay += Duration::from_secs_f64(profile.reorder_ms / 1000.0);
            self.truth.host(dst).reordered += 1;
        }
        let host = self.truth.host(dst);
        if as_error {
            host.errors += 1;
        } else {
            host.replies += 1;
        }
        if self.uniform() < profile.duplicate {
            self.truth.host(dst).duplicates += 1;
            self.schedule(now + delay + DUPLICATE_GAP, answer.clone(), None);
        }
        self.schedule(now + delay, answer, (!as_error).then_some((dst, now)));
    }

    /// The next answer due by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        match self.queue.peek() {
            Some(Reverse(p)) if p.due <= now => self.queue.pop().map(|Reverse(p)| self.sent(p, now)),
            _ => None,
        }
    }

    /// Books an answer as sent at `now`: the delay it really got goes into the truth (the
    /// scheduled one plus however late this thread was), and so does the lateness.
    fn sent(&mut self, p: Pending, now: Instant) -> Vec<u8> {
        let late = now.saturating_duration_since(p.due).as_nanos() as f64;
        self.truth.late_sum_ns += late;
        self.truth.late_sq_sum_ns2 += late * late;
        self.truth.late_max_ns = self.truth.late_max_ns.max(late);
        self.truth.sent += 1;
        if let Some((host, received)) = p.reply_of {
            let ns = now.saturating_duration_since(received).as_nanos() as f64;
            let h = self.truth.host(host);
            h.delay_sum_ns += ns;
            h.delay_sq_sum_ns2 += ns * ns;
        }
        p.packet
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(p)| p.due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Config;

    fn sim(json: &str) -> (Sim, Instant) {
        let start = Instant::now();
        (Sim::new(Hosts::new(serde_json::from_str::<Config>(json).unwrap()).unwrap(), start), start)
    }

    fn echo_request(dst: [u8; 4]) -> Vec<u8> {
        use netprobe::wire::icmp::{emit_echo_request, EchoRepr, Family, PROBE_LEN};
        let mut icmp = [0u8; PROBE_LEN];
        emit_echo_request(Family::V4, &EchoRepr { ident: 1, seq: 2, key: 3, token: 4 }, &mut icmp);
        let mut h = vec![0x45, 0, 0, 84, 0, 0, 0x40, 0, 64, 1, 0, 0, 198, 18, 0, 1];
        h.extend_from_slice(&dst);
        let sum = netprobe::checksum::internet_checksum(&h);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        h.extend_from_slice(&icmp);
        h
    }

    #[test]
    fn delays_and_loss_follow_the_profile_and_the_truth_adds_up() {
        let (mut s, t0) = sim(
            r#"{"seed": 3, "hosts": [{"prefix": "198.18.200.0/24", "delay_ms": 20, "jitter_ms": 2, "loss": 0.3, "duplicate": 0.1}]}"#,
        );
        let n = 10_000;
        for _ in 0..n {
            s.handle(&echo_request([198, 18, 200, 1]), t0);
        }
        let h = s.truth.hosts.values().next().unwrap().clone();
        assert_eq!(h.requests, n);
        assert_eq!(h.dropped + h.replies, n);
        let loss = h.dropped as f64 / n as f64;
        assert!((loss - 0.3).abs() < 5.0 * (0.21f64 / n as f64).sqrt(), "loss {loss}");
        // Sent at each answer's due time exactly: the truth then holds the applied delays.
        let mut answers = 0;
        while let Some(due) = s.next_due().filter(|d| *d <= t0 + Duration::from_millis(23)) {
            assert!(s.pop_due(due).is_some());
            answers += 1;
        }
        assert_eq!(answers as u64, h.replies + h.duplicates, "every answer due within delay + jitter");
        assert!(s.pop_due(t0 + Duration::from_secs(1)).is_none());
        let h = s.truth.hosts.values().next().unwrap().clone();
        let mean_ms = h.delay_sum_ns / h.replies as f64 / 1e6;
        assert!((mean_ms - 20.0).abs() < 0.1, "mean delay {mean_ms} ms");
        assert_eq!(s.truth.late_max_ns, 0.0);
    }

    #[test]
    fn reordered_answers_are_overtaken() {
        let (mut s, t0) = sim(
            r#"{"seed": 1, "hosts": [{"prefix": "198.18.200.0/24", "delay_ms": 1, "reorder": 0.5, "reorder_ms": 10}]}"#,
        );
        for i in 0..100u64 {
            s.handle(&echo_request([198, 18, 200, 1]), t0 + Duration::from_millis(i));
        }
        let h = s.truth.hosts.values().next().unwrap().clone();
        assert!(h.reordered > 30 && h.reordered < 70, "{}", h.reordered);
        // Answers leave in due order; a held-back one is due after requests that came later.
        let mut dues = Vec::new();
        while let Some(due) = s.next_due() {
            assert!(s.pop_due(due).is_some());
            dues.push(due);
        }
        assert!(dues.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(dues.len(), 100);
        assert!(
            *dues.last().unwrap() > t0 + Duration::from_millis(100),
            "held-back answers leave after the last request's"
        );
    }

    #[test]
    fn unknown_hosts_and_garbage_are_counted_not_answered() {
        let (mut s, t0) = sim(r#"{"hosts": [{"prefix": "198.18.200.0/24"}]}"#);
        s.handle(&echo_request([198, 18, 9, 9]), t0);
        s.handle(&[0x45, 0, 0], t0);
        assert_eq!((s.truth.ignored, s.truth.malformed), (1, 1));
        assert!(s.next_due().is_none());
    }
}
