//! Which clock a round trip is measured with. Pure, so the fallback rule is tested with numbers.
//! Monotonic times are nanoseconds since the engine started; `limit` is the longest round
//! trip a probe's record can have lived (a kernel pair further apart is a clock step).

/// Why a sample could not use the kernel timestamp pair.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fallback {
    pub tx_missing: bool,
    pub rx_missing: bool,
    /// Both stamps present but RX before TX or further apart than the limit (a CLOCK_REALTIME step).
    pub inconsistent: bool,
}

impl Fallback {
    pub fn any(&self) -> bool {
        self.tx_missing || self.rx_missing || self.inconsistent
    }
}

/// RTT in nanoseconds of an answered probe: kernel RX stamp minus kernel TX stamp when both
/// exist and agree; otherwise the engine's CLOCK_MONOTONIC readings taken right before
/// `sendmsg` and at the answer's arrival, with the reason.
pub fn reply_rtt(
    tx_stamp_ns: Option<i64>,
    rx_stamp_ns: Option<i64>,
    sent_at: u64,
    replied_at: u64,
    limit: u64,
) -> (u64, Fallback) {
    let mut why =
        Fallback { tx_missing: tx_stamp_ns.is_none(), rx_missing: rx_stamp_ns.is_none(), inconsistent: false };
    if let (Some(tx), Some(rx)) = (tx_stamp_ns, rx_stamp_ns) {
        match rx.checked_sub(tx) {
            Some(rtt) if rtt >= 0 && (rtt as u64) <= limit => return (rtt as u64, why),
            _ => why.inconsistent = true,
        }
    }
    (replied_at.saturating_sub(sent_at), why)
}

/// Which clock an answered probe's RTT came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The NIC's clock: hardware TX and RX stamps (`-hard`).
    Hardware,
    /// Kernel software stamps.
    Software,
    /// The engine's CLOCK_MONOTONIC readings (no usable kernel pair).
    Monotonic,
}

/// Stamps of one probe: software ones always requested, hardware ones with `-hard`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stamps {
    pub tx_sw: Option<i64>,
    pub rx_sw: Option<i64>,
    pub tx_hw: Option<i64>,
    pub rx_hw: Option<i64>,
}

/// RTT of an answered probe: the hardware pair when both hardware stamps exist and agree
/// (same NIC clock), else the software pair, else the monotonic readings. A hardware stamp is
/// never subtracted from a software one.
pub fn choose_rtt(s: Stamps, sent_at: u64, replied_at: u64, limit: u64) -> (u64, Clock, Fallback) {
    if let (Some(tx), Some(rx)) = (s.tx_hw, s.rx_hw) {
        if let Some(rtt) = rx.checked_sub(tx).filter(|r| *r >= 0 && (*r as u64) <= limit) {
            return (rtt as u64, Clock::Hardware, Fallback::default());
        }
    }
    let (rtt, why) = reply_rtt(s.tx_sw, s.rx_sw, sent_at, replied_at, limit);
    (rtt, if why.any() { Clock::Monotonic } else { Clock::Software }, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: u64 = 3_000_000_000;

    fn clocks(user_rtt_us: u64) -> (u64, u64) {
        let sent = 5_000_000_000;
        (sent, sent + user_rtt_us * 1000)
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
            (90_000, Fallback { tx_missing: true, ..Default::default() })
        );
        assert_eq!(
            reply_rtt(Some(5), None, s, r, TIMEOUT),
            (90_000, Fallback { rx_missing: true, ..Default::default() })
        );
        let (_, both) = reply_rtt(None, None, s, r, TIMEOUT);
        assert!(both.tx_missing && both.rx_missing);
    }

    #[test]
    fn hardware_pair_first_never_mixed() {
        let (s, r) = clocks(90);
        let all = Stamps { tx_sw: Some(1_000), rx_sw: Some(40_000), tx_hw: Some(5_000_000), rx_hw: Some(5_012_000) };
        assert_eq!(choose_rtt(all, s, r, TIMEOUT).0, 12_000);
        assert_eq!(choose_rtt(all, s, r, TIMEOUT).1, Clock::Hardware);
        // The NIC skipped the TX stamp (one outstanding stamp on igb): the software pair, not hw RX - sw TX.
        let skipped = Stamps { tx_hw: None, ..all };
        assert_eq!(choose_rtt(skipped, s, r, TIMEOUT), (39_000, Clock::Software, Fallback::default()));
        let no_rx_hw = Stamps { rx_hw: None, ..all };
        assert_eq!(choose_rtt(no_rx_hw, s, r, TIMEOUT).1, Clock::Software);
        // Hardware pair out of order (two NIC clocks): software pair.
        let two_phcs = Stamps { rx_hw: Some(1), ..all };
        assert_eq!(choose_rtt(two_phcs, s, r, TIMEOUT).1, Clock::Software);
        // Nothing from the kernel at all: the monotonic readings.
        let none = Stamps::default();
        assert_eq!(choose_rtt(none, s, r, TIMEOUT).0, 90_000);
        assert_eq!(choose_rtt(none, s, r, TIMEOUT).1, Clock::Monotonic);
    }

    #[test]
    fn a_clock_step_is_inconsistent() {
        let (s, r) = clocks(90);
        let backwards = reply_rtt(Some(2_000), Some(1_000), s, r, TIMEOUT);
        assert_eq!(backwards, (90_000, Fallback { inconsistent: true, ..Default::default() }));
        let too_long = reply_rtt(Some(0), Some(3_000_000_001), s, r, TIMEOUT);
        assert!(too_long.1.inconsistent);
        assert!(reply_rtt(Some(i64::MIN), Some(i64::MAX), s, r, TIMEOUT).1.inconsistent, "overflow");
        assert!(!reply_rtt(Some(0), Some(3_000_000_000), s, r, TIMEOUT).1.any(), "exactly the timeout is fine");
    }
}
