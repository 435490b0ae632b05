//! The most recent samples of one target, two bytes each: RTTs in microseconds as 16-bit
//! values sharing one exponent (block floating point). While every RTT in the ring is below
//! 65.5 ms a sample is exact to the microsecond; a longer one makes the whole ring coarser
//! (a step of 2^shift us, 1/32,768 of the largest RTT or finer) until it has left the ring.
//! 250 samples in 500 bytes, against 1 KB for plain u32, is what keeps a target under 1 KiB.

pub const RING_LEN: usize = 250;
const LOST: u16 = u16::MAX;
/// The largest value a sample holds (LOST aside).
const MAX_UNITS: u64 = (LOST - 1) as u64;

#[derive(Debug, Clone)]
pub struct SampleRing {
    samples: [u16; RING_LEN],
    /// Samples are in units of 2^shift microseconds.
    shift: u8,
    /// Index of the next write.
    head: u8,
    /// Samples written, capped at RING_LEN.
    filled: u8,
}

impl Default for SampleRing {
    fn default() -> Self {
        Self { samples: [LOST; RING_LEN], shift: 0, head: 0, filled: 0 }
    }
}

/// `value / 2^by`, rounded to the nearest.
fn shift_rounded(value: u64, by: u8) -> u64 {
    if by == 0 {
        value
    } else {
        (value + (1 << (by - 1))) >> by
    }
}

impl SampleRing {
    /// Appends an answered probe's RTT (`Some`, nanoseconds) or a lost probe (`None`).
    pub fn push(&mut self, rtt_ns: Option<u64>) {
        let sample = match rtt_ns {
            None => LOST,
            Some(ns) => {
                let us = ns.saturating_add(500) / 1000;
                while shift_rounded(us, self.shift) > MAX_UNITS {
                    self.coarsen();
                }
                shift_rounded(us, self.shift) as u16
            }
        };
        self.samples[usize::from(self.head)] = sample;
        self.head = ((usize::from(self.head) + 1) % RING_LEN) as u8;
        self.filled = (usize::from(self.filled) + 1).min(RING_LEN) as u8;
        if self.head == 0 {
            self.refine();
        }
    }

    /// One step coarser for every sample, so a larger RTT fits.
    fn coarsen(&mut self) {
        self.shift += 1;
        for s in self.samples.iter_mut().filter(|s| **s != LOST) {
            *s = shift_rounded(u64::from(*s), 1) as u16;
        }
    }

    /// Once per lap: finer again as far as the samples in the ring allow (the long RTT that
    /// coarsened it may have left). Samples already rounded stay so; new ones are finer.
    fn refine(&mut self) {
        let mut max = self.samples.iter().filter(|s| **s != LOST).max().copied().map_or(0, u64::from);
        while self.shift > 0 && max << 1 <= MAX_UNITS {
            max <<= 1;
            self.shift -= 1;
            for s in self.samples.iter_mut().filter(|s| **s != LOST) {
                *s <<= 1;
            }
        }
    }

    /// How many samples the ring holds.
    pub fn filled(&self) -> usize {
        usize::from(self.filled)
    }

    /// Samples from newest to oldest: `None` for a lost probe, the RTT in seconds otherwise.
    pub fn newest_first(&self) -> impl Iterator<Item = Option<f64>> + '_ {
        let unit_s = (1u64 << self.shift) as f64 / 1e6;
        (0..self.filled()).map(move |age| {
            let idx = (usize::from(self.head) + RING_LEN - 1 - age) % RING_LEN;
            match self.samples[idx] {
                LOST => None,
                units => Some(f64::from(units) * unit_s),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newest(r: &SampleRing) -> Vec<Option<f64>> {
        r.newest_first().collect()
    }

    #[test]
    fn exact_to_the_microsecond_below_65_ms() {
        let mut r = SampleRing::default();
        for ns in [1_000, 12_345_499, 65_534_000] {
            r.push(Some(ns));
        }
        r.push(None);
        let got = newest(&r);
        assert_eq!(got[0], None);
        assert_eq!(got[1], Some(0.065534));
        assert!((got[2].unwrap_or(0.0) - 0.012345).abs() < 1e-12);
        assert_eq!(got[3], Some(0.000001));
    }

    #[test]
    fn a_long_rtt_coarsens_the_ring_within_its_relative_step() {
        let mut r = SampleRing::default();
        r.push(Some(10_000_123));
        r.push(Some(300_000_000)); // 300 ms: 2^3 us steps
        let got = newest(&r);
        assert!((got[0].unwrap_or(0.0) - 0.3).abs() <= 8e-6 / 2.0);
        assert!((got[1].unwrap_or(0.0) - 0.010000123).abs() <= 8e-6);
        // The largest timeout (40 s) still fits.
        r.push(Some(40_000_000_000));
        let got = newest(&r);
        assert!((got[0].unwrap_or(0.0) - 40.0).abs() / 40.0 < 1.0 / 32_768.0);
    }

    #[test]
    fn finer_again_once_the_long_rtt_has_left() {
        let mut r = SampleRing::default();
        r.push(Some(500_000_000));
        for _ in 0..2 * RING_LEN {
            r.push(Some(1_234_000));
        }
        assert_eq!(r.shift, 0);
        r.push(Some(1_001_000));
        assert_eq!(newest(&r)[0], Some(0.001001));
    }

    #[test]
    fn keeps_the_newest_250() {
        let mut r = SampleRing::default();
        for i in 0..300u64 {
            r.push(Some((i + 1) * 1_000));
        }
        let got = newest(&r);
        assert_eq!(got.len(), RING_LEN);
        assert_eq!(got[0], Some(300e-6));
        assert_eq!(got[RING_LEN - 1], Some(51e-6));
    }
}
