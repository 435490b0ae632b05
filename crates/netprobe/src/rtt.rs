//! Which clock a round trip is measured with. Pure, so the fallback rule is tested with numbers.
use std::time::{Duration, Instant};

/// Why a sample could not use the kernel timestamp pair.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fallback {
    pub tx_missing: bool,
    pub rx_missing: bool,
    /// Both stamps present but RX before TX or further apart than the timeout (a CLOCK_REALTIME step).
    pub inconsistent: bool,
}

impl Fallback {
    pub fn any(&self) -> bool {
        self.tx_missing || self.rx_missing || self.inconsistent
    }
}

/// RTT in nanoseconds of an answered probe: kernel RX stamp minus kernel TX stamp when both
/// exist and agree; otherwise the engine's CLOCK_MONOTONIC readings taken right before
/// `sendmsg` and right after `recvmsg`, with the reason.
pub fn reply_rtt(
    tx_stamp_ns: Option<i64>,
    rx_stamp_ns: Option<i64>,
    sent_at: Instant,
    replied_at: Instant,
    timeout: Duration,
) -> (u64, Fallback) {
    let mut why = Fallback {
        tx_missing: tx_stamp_ns.is_none(),
        rx_missing: rx_stamp_ns.is_none(),
        inconsistent: false,
    };
    if let (Some(tx), Some(rx)) = (tx_stamp_ns, rx_stamp_ns) {
        match rx.checked_sub(tx) {
            Some(rtt) if rtt >= 0 && (rtt as u128) <= timeout.as_nanos() => {
                return (rtt as u64, why)
            }
            _ => why.inconsistent = true,
        }
    }
    let monotonic = replied_at.saturating_duration_since(sent_at).as_nanos();
    (u64::try_from(monotonic).unwrap_or(u64::MAX), why)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(3);

    fn clocks(user_rtt_us: u64) -> (Instant, Instant) {
        let sent = Instant::now();
        (sent, sent + Duration::from_micros(user_rtt_us))
    }

    #[test]
    fn kernel_pair_wins_over_user_clock() {
        let (s, r) = clocks(90);
        let (rtt, why) = reply_rtt(Some(1_000_000_000), Some(1_000_031_250), s, r, TIMEOUT);
        assert_eq!(rtt, 31_250);
        assert!(!why.any());
    }

    #[test]
    fn missing_stamps_fall_back_to_monotonic_and_say_why() {
        let (s, r) = clocks(90);
        assert_eq!(
            reply_rtt(None, Some(5), s, r, TIMEOUT),
            (
                90_000,
                Fallback {
                    tx_missing: true,
                    ..Default::default()
                }
            )
        );
        assert_eq!(
            reply_rtt(Some(5), None, s, r, TIMEOUT),
            (
                90_000,
                Fallback {
                    rx_missing: true,
                    ..Default::default()
                }
            )
        );
        let (_, both) = reply_rtt(None, None, s, r, TIMEOUT);
        assert!(both.tx_missing && both.rx_missing);
    }

    #[test]
    fn a_clock_step_is_inconsistent() {
        let (s, r) = clocks(90);
        let backwards = reply_rtt(Some(2_000), Some(1_000), s, r, TIMEOUT);
        assert_eq!(
            backwards,
            (
                90_000,
                Fallback {
                    inconsistent: true,
                    ..Default::default()
                }
            )
        );
        let too_long = reply_rtt(Some(0), Some(3_000_000_001), s, r, TIMEOUT);
        assert!(too_long.1.inconsistent);
        assert!(
            reply_rtt(Some(i64::MIN), Some(i64::MAX), s, r, TIMEOUT)
                .1
                .inconsistent,
            "overflow"
        );
        assert!(
            !reply_rtt(Some(0), Some(3_000_000_000), s, r, TIMEOUT)
                .1
                .any(),
            "exactly the timeout is fine"
        );
    }
}
