//! Engine-wide counters: written by the engine thread only, read by anyone at any time.
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! engine_counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        #[derive(Debug, Default)]
        pub struct EngineCounters { $($(#[doc = $doc])* pub $name: AtomicU64,)* }

        /// A copy of the engine counters at one instant.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct CountersSnapshot { $($(#[doc = $doc])* pub $name: u64,)* }

        impl EngineCounters {
            pub fn snapshot(&self) -> CountersSnapshot {
                CountersSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

engine_counters! {
    /// Echo requests the kernel accepted.
    packets_sent,
    /// Echo replies carrying our identifier (matched or not).
    packets_received,
    /// sendmsg failures (each is also a failed probe of its target).
    send_errors,
    /// Sends the kernel had no room for (ENOBUFS, EAGAIN, ENOMEM): the probe waited and went
    /// again, it is not lost.
    send_deferred,
    /// `ppoll` failures of the engine loop (other than EINTR), retried.
    poll_errors,
    /// recvmsg failures other than "nothing to read".
    receive_errors,
    /// Replies whose key, token, sequence or source did not match a probe of ours.
    replies_foreign,
    /// Second and later replies to one probe.
    replies_duplicate,
    /// Replies that came after their probe had timed out.
    replies_late,
    /// Of those, replies whose receive stamp is within the timeout of their probe's send: a probe
    /// ended as lost although its answer came in time (none, unless the engine is wrong or the
    /// real-time clock was stepped back).
    late_within_timeout,
    /// ICMP errors that quote one of our probes.
    icmp_errors,
    /// ICMP errors that quote our identifier but match no probe in flight.
    icmp_errors_unmatched,
    /// Packets that passed the filters but did not parse (truncated, bad checksum).
    packets_malformed,
    /// Replies whose probe got no kernel transmit timestamp: RTT from the monotonic clock.
    tx_timestamp_missing,
    /// Replies without a kernel receive timestamp: RTT from the monotonic clock.
    rx_timestamp_missing,
    /// Kernel stamps out of order or beyond the timeout (clock step): RTT from the monotonic clock.
    timestamp_inconsistent,
    /// Transmit timestamps that matched no probe in flight.
    tx_timestamps_unmatched,
    /// Packets the kernel dropped because a receive socket's buffer was full (`SO_RXQ_OVFL`):
    /// answers, mostly, whose probes then end as lost although the network delivered them.
    receive_queue_drops,
    /// Probes not sent because the in-flight table was full.
    inflight_full,
    /// Answered probes whose RTT came from the NIC's clock (`-hard`).
    rtt_hardware,
    /// Answered probes whose RTT came from kernel software stamps.
    rtt_software,
    /// Answered probes whose RTT came from the engine's monotonic clock.
    rtt_monotonic,
    /// How late probes left against their schedule: sum, and the worst, in nanoseconds.
    send_delay_sum_ns,
    send_delay_max_ns,
    /// Probes that left more than 100 us, 1 ms, 10 ms late: bursts and stalls, per window.
    send_delay_over_100us,
    send_delay_over_1ms,
    send_delay_over_10ms,
}

impl EngineCounters {
    /// One writer (the engine thread): a plain load and store, no locked read-modify-write.
    /// Readers on other threads see each value whole (a 64-bit atomic store), at worst one
    /// update late.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    pub fn raise(counter: &AtomicU64, n: u64) {
        if n > counter.load(Ordering::Relaxed) {
            counter.store(n, Ordering::Relaxed);
        }
    }
}
