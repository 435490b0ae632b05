//! Which clock a round trip is measured with. Pure, so the fallback rule is tested with numbers.
//! Monotonic times are nanoseconds since the engine started.
//!
//! A kernel pair is checked against the monotonic span from right before `sendmsg` to the
//! answer's arrival (CLOCK_MONOTONIC, which no one steps), less the time the packet took from
//! `sendmsg` to the driver's transmit stamp (the real-time reading before `sendmsg` against
//! that stamp: a queueing discipline's wait, for one). The rest is the pair, give or take the
//! readings; a pair that differs more has a CLOCK_REALTIME step (or a NIC clock jump) inside
//! it, of any size.

/// How far a kernel pair may differ from the monotonic span less the transmit path: the
/// readings that carry the send and the arrival over between the clocks.
pub const READING_NOISE: u64 = 1_000_000;

/// When a probe was sent, on both clocks: CLOCK_MONOTONIC (ns since the engine started) and
/// CLOCK_REALTIME (ns since the epoch), read together right before `sendmsg`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub mono: u64,
    pub real: i64,
}

/// Whether a software pair fits the span from `sent` to `replied_at`: the pair, if it does.
fn fits(tx: i64, rx: i64, sent: Sent, replied_at: u64) -> Option<u64> {
    let pair = u64::try_from(rx.checked_sub(tx)?).ok()?;
    // Signed and wide: with a round trip of a few microseconds, the readings' own error can
    // make the expected value a little negative.
    let tx_path = i128::from(tx) - i128::from(sent.real);
    let expected = i128::from(replied_at) - i128::from(sent.mono) - tx_path;
    ((i128::from(pair) - expected).abs() <= i128::from(READING_NOISE)).then_some(pair)
}

/// Whether a hardware pair fits: the NIC's clock is not the system's (no transmit path to
/// take off), and may run a little apart (1,000 ppm allowed).
fn fits_hardware(tx: i64, rx: i64, span: u64) -> Option<u64> {
    let pair = u64::try_from(rx.checked_sub(tx)?).ok()?;
    (pair <= span + READING_NOISE + span / 1000).then_some(pair)
}

/// Why a sample could not use the kernel timestamp pair.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fallback {
    pub tx_missing: bool,
    pub rx_missing: bool,
    /// Both stamps present but not fitting the monotonic span (a CLOCK_REALTIME step).
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
pub fn reply_rtt(tx_stamp_ns: Option<i64>, rx_stamp_ns: Option<i64>, sent: Sent, replied_at: u64) -> (u64, Fallback) {
    let mut why =
        Fallback { tx_missing: tx_stamp_ns.is_none(), rx_missing: rx_stamp_ns.is_none(), inconsistent: false };
    let span = replied_at.saturating_sub(sent.mono);
    if let (Some(tx), Some(rx)) = (tx_stamp_ns, rx_stamp_ns) {
        match fits(tx, rx, sent, replied_at) {
            Some(rtt) => return (rtt, why),
            None => why.inconsistent = true,
        }
    }
    (span, why)
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
pub fn choose_rtt(s: Stamps, sent: Sent, replied_at: u64) -> (u64, Clock, Fallback) {
    if let (Some(tx), Some(rx)) = (s.tx_hw, s.rx_hw) {
        if let Some(rtt) = fits_hardware(tx, rx, replied_at.saturating_sub(sent.mono)) {
            return (rtt, Clock::Hardware, Fallback::default());
        }
    }
    let (rtt, why) = reply_rtt(s.tx_sw, s.rx_sw, sent, replied_at);
    (rtt, if why.any() { Clock::Monotonic } else { Clock::Software }, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sent at 5 s (monotonic) = 1,000 ns (real time); the answer `user_rtt_us` later.
    fn clocks(user_rtt_us: u64) -> (Sent, u64) {
        let sent = Sent { mono: 5_000_000_000, real: 1_000 };
        (sent, sent.mono + user_rtt_us * 1000)
    }

    #[test]
    fn kernel_pair_wins_over_user_clock() {
        // Stamped 9 us after the real-time reading; 31.25 us there and back; read 90 us after sendmsg.
        let (s, r) = clocks(40);
        let (rtt, why) = reply_rtt(Some(10_000), Some(41_250), s, r);
        assert_eq!(rtt, 31_250);
        assert!(!why.any());
    }

    #[test]
    fn missing_stamps_fall_back_to_monotonic_and_say_why() {
        let (s, r) = clocks(90);
        assert_eq!(reply_rtt(None, Some(5), s, r), (90_000, Fallback { tx_missing: true, ..Default::default() }));
        assert_eq!(reply_rtt(Some(5), None, s, r), (90_000, Fallback { rx_missing: true, ..Default::default() }));
        let (_, both) = reply_rtt(None, None, s, r);
        assert!(both.tx_missing && both.rx_missing);
    }

    #[test]
    fn hardware_pair_first_never_mixed() {
        let (s, r) = clocks(90);
        let all = Stamps { tx_sw: Some(2_000), rx_sw: Some(80_000), tx_hw: Some(5_000_000), rx_hw: Some(5_012_000) };
        assert_eq!(choose_rtt(all, s, r).0, 12_000);
        assert_eq!(choose_rtt(all, s, r).1, Clock::Hardware);
        // The NIC skipped the TX stamp (one outstanding stamp on igb): the software pair, not hw RX - sw TX.
        let skipped = Stamps { tx_hw: None, ..all };
        assert_eq!(choose_rtt(skipped, s, r), (78_000, Clock::Software, Fallback::default()));
        let no_rx_hw = Stamps { rx_hw: None, ..all };
        assert_eq!(choose_rtt(no_rx_hw, s, r).1, Clock::Software);
        // Hardware pair out of order (two NIC clocks): software pair.
        let two_phcs = Stamps { rx_hw: Some(1), ..all };
        assert_eq!(choose_rtt(two_phcs, s, r).1, Clock::Software);
        // Nothing from the kernel at all: the monotonic readings.
        let none = Stamps::default();
        assert_eq!(choose_rtt(none, s, r).0, 90_000);
        assert_eq!(choose_rtt(none, s, r).1, Clock::Monotonic);
    }

    #[test]
    fn a_clock_step_of_any_size_is_inconsistent() {
        let ms = |n: i64| n * 1_000_000;
        let (s, r) = clocks(20_000); // 20 ms from sendmsg to the arrival, stamped at once
        let tx = s.real;
        let backwards = reply_rtt(Some(tx + 2_000), Some(tx + 1_000), s, r);
        assert_eq!(backwards, (20_000_000, Fallback { inconsistent: true, ..Default::default() }));
        assert!(reply_rtt(Some(tx), Some(tx + ms(3_000)), s, r).1.inconsistent, "a 3 s step forward");
        assert!(reply_rtt(Some(tx), Some(tx + ms(70)), s, r).1.inconsistent, "a 50 ms step forward");
        assert!(reply_rtt(Some(tx), Some(tx + ms(10)), s, r).1.inconsistent, "a 10 ms step back");
        assert!(reply_rtt(Some(i64::MIN), Some(i64::MAX), s, r).1.inconsistent, "overflow");
        assert!(reply_rtt(Some(tx - ms(2)), Some(tx + ms(18)), s, r).1.inconsistent, "stamped 2 ms before it was sent");
        // A round trip of 8 us whose readings err by 10 us the other way is still the pair.
        let (s2, r2) = (Sent { mono: 5_000_000_000, real: 1_000 }, 5_000_000_000 + 2_000);
        assert_eq!(reply_rtt(Some(1_000 + 4_000), Some(1_000 + 12_000), s2, r2), (8_000, Fallback::default()));
        assert_eq!(reply_rtt(Some(tx), Some(tx + ms(20)), s, r), (20_000_000, Fallback::default()));
        let noise = READING_NOISE as i64;
        assert!(!reply_rtt(Some(tx), Some(tx + ms(20) + noise), s, r).1.any());
        assert!(reply_rtt(Some(tx), Some(tx + ms(20) + noise + 1), s, r).1.inconsistent);
        assert!(!reply_rtt(Some(tx), Some(tx + ms(20) - noise), s, r).1.any());
        assert!(reply_rtt(Some(tx), Some(tx + ms(20) - noise - 1), s, r).1.inconsistent);
    }

    #[test]
    fn a_wait_in_a_local_queue_is_not_in_the_rtt() {
        // Held 15 ms in a queueing discipline, then 5 ms there and back: the pair is 5 ms.
        let ms = |n: i64| n * 1_000_000;
        let (s, r) = clocks(20_000);
        let tx = s.real + ms(15);
        assert_eq!(reply_rtt(Some(tx), Some(tx + ms(5)), s, r), (5_000_000, Fallback::default()));
    }
}
