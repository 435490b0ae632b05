//! The most recent samples of one target, two bytes each: RTTs in microseconds as 16-bit
//! values sharing one exponent (block floating point). Every sample is a whole number of the
//! ring's step, 2^shift µs, at most 65,534 steps (u16::MAX marks a lost probe): 250 samples in
//! 500 bytes (and four bytes of bookkeeping), against 1 KB for plain u32.
//!
//! Resolution:
//! - A new RTT is stored at the finest step at which it and every sample already in the ring
//!   (as stored) fit in 65,534 steps: 1 µs while they are all at most 65,534 µs; otherwise
//!   a power of two under 1/32,767 of the largest of them (8 µs at 300 ms, 1,024 µs at 40 s).
//!   It is rounded once, from the nanoseconds, half to even: within half a step of the RTT
//!   (at 1 µs: the RTT rounded to the microsecond, half to even). One case is rounded a step
//!   coarser, within half of that step: an RTT that rounds to 65,535 steps but to 32,767 of
//!   the next step, held as 65,534 steps rather than coarsening the ring.
//! - A longer RTT makes the whole ring coarser: every sample is rounded again, half to even,
//!   to the new step. Going finer again is exact (a doubling) and happens as soon as no sample
//!   in the ring needs the coarse step, at the next answered probe: only samples that shared
//!   the ring with the long RTT stay rounded to its step.
//! - So a sample is within half a step of its RTT if it was rounded only once, and within
//!   3/4 of the coarsest step it has been held at otherwise (a bound approached, never reached,
//!   by rounding to 2^(m-1) µs then to 2^m µs). Every rounding is half to even: the errors
//!   have no systematic sign, however many times the ring coarsens.
//!
//! Cost of a push: O(1) while the step does not change (a division by the constant 1000, a few
//! shifts and comparisons, a count of the samples with the top bit); when it changes, one
//! branch-free pass over the 250 samples to coarsen, or one or two to refine (about 25 ns
//! each). The sample that coarsens the ring has the top bit, so it holds the step until it has
//! left: the step cannot go back and forth probe by probe.

pub const RING_LEN: usize = 250;
const LOST: u16 = u16::MAX;
/// The largest value a sample holds (LOST aside).
const MAX_UNITS: u64 = (LOST - 1) as u64;
/// A sample at or above this (LOST aside) would not fit one step finer.
const TOP_BIT: u16 = 1 << 15;

#[derive(Debug, Clone)]
pub struct SampleRing {
    samples: [u16; RING_LEN],
    /// Samples are in units of 2^shift microseconds.
    shift: u8,
    /// Index of the next write.
    head: u8,
    /// Samples written, capped at RING_LEN.
    filled: u8,
    /// Samples (LOST aside) with the top bit set: those that pin the ring to its step.
    wide: u8,
    /// Written samples that are LOST (so a ring without any needs no loss pattern read).
    lost: u8,
}

impl Default for SampleRing {
    fn default() -> Self {
        Self { samples: [LOST; RING_LEN], shift: 0, head: 0, filled: 0, wide: 0, lost: 0 }
    }
}

/// Whether a stored sample needs the ring's current step (could not be doubled).
fn is_wide(sample: u16) -> bool {
    sample != LOST && sample >= TOP_BIT
}

/// `value / 2^by` (`by` from 1 to 17), rounded to the nearest, half to even.
fn shr_half_even(value: u32, by: u32) -> u32 {
    let (q, r, half) = (value >> by, value & ((1 << by) - 1), 1 << (by - 1));
    q + u32::from(r > half || (r == half && q & 1 == 1))
}

/// An RTT in units of 2^shift µs, rounded once from the nanoseconds, half to even (dividing by
/// the constant 1000, then shifting: no division by a variable).
fn units(ns: u64, shift: u8) -> u64 {
    let (us, sub_us) = (ns / 1000, ns % 1000);
    let step_ns = 1000 << shift;
    // ns = q * step_ns + r, r < step_ns.
    let (q, r) = (us >> shift, (us & ((1 << shift) - 1)) * 1000 + sub_us);
    q + u64::from(r > step_ns - r || (r == step_ns - r && q & 1 == 1))
}

/// Whether an RTT fits in a sample at that step (any does at a step of 2^39 µs).
fn fits(ns: u64, shift: u8) -> bool {
    units(ns, shift) <= MAX_UNITS
}

impl SampleRing {
    /// Appends an answered probe's RTT (`Some`, nanoseconds) or a lost probe (`None`).
    pub fn push(&mut self, rtt_ns: Option<u64>) {
        let slot = usize::from(self.head);
        // The oldest sample leaves first: it constrains neither the step nor the passes below.
        if is_wide(self.samples[slot]) {
            self.wide -= 1;
        }
        if usize::from(self.filled) == RING_LEN && self.samples[slot] == LOST {
            self.lost -= 1;
        }
        self.samples[slot] = LOST;
        self.lost += u8::from(rtt_ns.is_none());
        if let Some(ns) = rtt_ns {
            let (shift, sample) = self.place(ns);
            if shift > self.shift {
                self.coarsen(shift - self.shift);
            } else if shift < self.shift {
                self.refine(self.shift - shift);
            }
            self.wide += u8::from(is_wide(sample));
            self.samples[slot] = sample;
        }
        self.head = ((slot + 1) % RING_LEN) as u8;
        self.filled = (usize::from(self.filled) + 1).min(RING_LEN) as u8;
    }

    /// How many of the written samples are lost.
    pub fn lost(&self) -> usize {
        usize::from(self.lost)
    }

    /// The step the ring moves to for a new RTT, and the RTT at that step: the finest step at
    /// which it and every sample in the ring fit, the RTT rounded once from the nanoseconds.
    fn place(&self, ns: u64) -> (u8, u16) {
        let mut shift = self.shift;
        let here = units(ns, shift);
        if here <= MAX_UNITS {
            if shift == 0 || self.wide != 0 || !fits(ns, shift - 1) {
                return (shift, here as u16);
            }
            // Finer: no sample in the ring has the top bit, so one step finer is free; further
            // needs the largest (a pass).
            shift -= 1;
            if shift > 0 && fits(ns, shift - 1) {
                let floor = self.shift - self.spare_steps();
                while shift > floor && fits(ns, shift - 1) {
                    shift -= 1;
                }
            }
            return (shift, units(ns, shift) as u16);
        }
        // Coarser: rounded at the finest step it fits at, where it is 32,767 units or more
        // (it did not fit one step finer). 32,767 is 65,534 units of the next finer step, the
        // same value: held there, so that a sample in that band neither coarsens the ring
        // needlessly nor leaves it free to refine at the next probe (the coarsening sample
        // always has the top bit, and pins the ring to its step until it leaves).
        while !fits(ns, shift) {
            shift += 1;
        }
        let rounded = units(ns, shift);
        if rounded * 2 <= MAX_UNITS {
            (shift - 1, (rounded * 2) as u16)
        } else {
            (shift, rounded as u16)
        }
    }

    /// How many steps finer the samples in the ring allow (a pass over them).
    fn spare_steps(&self) -> u8 {
        // Branch-free passes (here and below): the compiler vectorises them.
        let max = self.samples.iter().map(|&s| if s == LOST { 0 } else { s }).max().unwrap_or(0);
        match u64::from(max) {
            0 => self.shift,
            max => ((MAX_UNITS / max).ilog2() as u8).min(self.shift),
        }
    }

    /// `by` steps coarser for every sample, so a larger RTT fits: each is rounded again.
    fn coarsen(&mut self, by: u8) {
        self.shift += by;
        // Past 17 steps every sample rounds to 0, as at 17 (it is below half of 2^17).
        let by = u32::from(by.min(17));
        for s in &mut self.samples {
            // At most 65,534 / 2, rounded: never LOST.
            let rounded = shr_half_even(u32::from(*s), by) as u16;
            *s = if *s == LOST { LOST } else { rounded };
        }
        self.count_wide();
    }

    /// `by` steps finer for every sample (the caller checked they fit): exact.
    fn refine(&mut self, by: u8) {
        self.shift -= by;
        for s in &mut self.samples {
            *s = if *s == LOST { LOST } else { *s << by };
        }
        self.count_wide();
    }

    fn count_wide(&mut self) {
        self.wide = self.samples.iter().map(|&s| u8::from(is_wide(s))).sum();
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

    /// A sample read back, in whole microseconds (it is one: a multiple of the step).
    fn read_us(secs: f64) -> u64 {
        let us = (secs * 1e6).round();
        assert!((secs * 1e6 - us).abs() < 1e-6, "{secs} s is not whole microseconds");
        us as u64
    }

    /// The RTT rounded to the microsecond, half to even (what a 1 µs step stores).
    fn exact_us(ns: u64) -> u64 {
        let (q, r) = (ns / 1000, ns % 1000);
        q + u64::from(r > 500 || (r == 500 && q % 2 == 1))
    }

    /// The RTT in units of 2^shift µs, rounded half to even.
    fn rounded(ns: u64, shift: u8) -> u64 {
        let d = 1000u64 << shift;
        let (q, r) = (ns / d, ns % d);
        q + u64::from(2 * r > d || (2 * r == d && q % 2 == 1))
    }

    /// The finest step at which the RTT alone fits in a sample.
    fn own_shift(ns: u64) -> u8 {
        (0..).find(|s| rounded(ns, *s) <= MAX_UNITS).unwrap_or(0)
    }

    /// Half a step of 2^shift µs, in nanoseconds.
    fn half_step_ns(shift: u8) -> u64 {
        500 << shift
    }

    /// A small xorshift64 generator: the property tests need no dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        /// Uniform enough in `lo..=hi`.
        fn range(&mut self, lo: u64, hi: u64) -> u64 {
            lo + self.next() % (hi - lo + 1)
        }
    }

    #[test]
    fn stays_within_its_budget() {
        // The samples, and six bytes of bookkeeping (step, head, filled, wide, lost).
        assert!(std::mem::size_of::<SampleRing>() <= 2 * RING_LEN + 6);
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

    #[test]
    fn finer_again_at_the_first_sample_after_the_long_rtt_left() {
        // As reported: the next sample after the long RTT has left is exact.
        let mut r = SampleRing::default();
        r.push(Some(500_000_000)); // 2^3 us steps
        for _ in 0..RING_LEN {
            r.push(Some(1_234_000));
        }
        r.push(Some(1_001_000));
        assert_eq!(newest(&r)[0].map(read_us), Some(1_001));

        // Wherever the ring's head is when the long RTT leaves (not at a lap's end here).
        let mut r = SampleRing::default();
        for _ in 0..17 {
            r.push(Some(2_000_000));
        }
        r.push(Some(500_000_000));
        for i in 0..RING_LEN as u64 - 1 {
            r.push(Some(1_000_000 + 2 * i * 1000 + 1000)); // odd microseconds: rounded at 8 us
        }
        assert_eq!(r.shift, 3);
        assert_eq!(newest(&r)[0].map(read_us), Some(1_496), "written while the long RTT was in the ring");
        // This one pushes the long RTT out, and is exact already; so is the next.
        r.push(Some(1_001_000));
        assert_eq!(newest(&r)[0].map(read_us), Some(1_001));
        r.push(Some(2_345_678));
        assert_eq!(newest(&r)[0].map(read_us), Some(2_346));
        assert_eq!(r.shift, 0);
    }

    #[test]
    fn finer_again_as_far_as_the_ring_allows() {
        let mut r = SampleRing::default();
        r.push(Some(40_000_000_000)); // 2^10 us steps
        r.push(Some(130_000_000)); // 130 ms: 2^1 us steps would do
        for _ in 0..RING_LEN - 2 {
            r.push(Some(1_000_000));
        }
        assert_eq!(r.shift, 10);
        // The 40 s RTT leaves: the 130 ms one (rounded to 1,024 us) still needs 2 us steps.
        r.push(Some(3_001_000));
        assert_eq!(r.shift, 1);
        assert_eq!(newest(&r)[0].map(read_us), Some(3_000));
        assert_eq!(newest(&r)[RING_LEN - 1].map(read_us), Some(130_048));
        // It leaves too: 1 us steps.
        r.push(Some(3_001_000));
        assert_eq!(r.shift, 0);
        assert_eq!(newest(&r)[0].map(read_us), Some(3_001));
    }

    #[test]
    fn an_rtt_just_too_long_for_the_step_does_not_coarsen_the_ring() {
        let mut r = SampleRing::default();
        r.push(Some(1_001_000));
        // 65,534.7 us: 65,535 us once rounded, one too many; 32,767 units of 2 us, within half
        // of that step, which is 65,534 us: held as such, the ring and the 1,001 us untouched.
        r.push(Some(65_534_700));
        assert_eq!(r.shift, 0);
        assert_eq!(newest(&r)[..2], [Some(0.065534), Some(0.001001)]);
        // 65,535 us is 32,768 units of 2 us: the ring coarsens.
        r.push(Some(65_535_000));
        assert_eq!(r.shift, 1);
        assert_eq!(newest(&r)[0].map(read_us), Some(65_536));
    }

    /// Rounding half up adds half a step to every tie, at every coarsening: consecutive odd
    /// microseconds are all ties when the ring coarsens by one step. Half to even sends half
    /// of them down: the mean error stays near zero however many times the ring coarsens.
    #[test]
    fn coarsening_has_no_bias() {
        let exact: Vec<u64> = (0..RING_LEN as u64 - 4).map(|i| 40_001 + 2 * i).collect();
        let mut r = SampleRing::default();
        for us in &exact {
            r.push(Some(us * 1000));
        }
        // One step at a time (100, 200, 400 ms), then three at once (3 s): four roundings.
        for (ns, shift) in [(100_000_000, 1), (200_000_000, 2), (400_000_000, 3), (3_000_000_000, 6)] {
            r.push(Some(ns));
            assert_eq!(r.shift, shift);
            let got = newest(&r);
            let read = got.iter().rev().take(exact.len()).map(|s| read_us(s.unwrap_or(0.0)));
            let sum: i64 = read.zip(&exact).map(|(got, us)| got as i64 - *us as i64).sum();
            let mean_units = sum as f64 / exact.len() as f64 / f64::from(1u32 << shift);
            // Half up: +0.5 unit after the first step, and more after each next one.
            assert!(mean_units.abs() < 0.05, "mean error {mean_units} units at shift {shift}");
        }
    }

    #[test]
    fn conversion_has_no_bias() {
        let mut r = SampleRing::default();
        let mut sum = 0i64;
        for i in 0..RING_LEN as u64 {
            let ns = 1_000_500 + i * 1000; // all ties: x.5 us
            r.push(Some(ns));
            sum += read_us(newest(&r)[0].unwrap_or(0.0)) as i64 * 1000 - ns as i64;
        }
        assert_eq!(sum, 0);
    }

    /// What each sample's error is bounded by, given the steps it has been held at.
    #[derive(Clone, Copy)]
    struct Model {
        ns: Option<u64>,
        written_at: u8,
        /// The coarsest step it has been held at: every rounding was at a new coarsest.
        coarsest: u8,
        /// Half a step for each step it was rounded at.
        bound_ns: u64,
    }

    fn random_rtt(rng: &mut XorShift, long_per_mille: u64) -> Option<u64> {
        match rng.range(0, 999) {
            0..=19 => None,
            20..=24 => {
                // Within half a microsecond of 65,535 steps of some step: the edge cases.
                Some((65_534_500 + rng.range(0, 1000)) << rng.range(0, 9))
            }
            n if n < 25 + long_per_mille => {
                // 65 ms to 40 s, roughly log-uniform, sometimes at a tie.
                let shift = rng.range(0, 9);
                let ns = (rng.range(65_000_000, 130_000_000) << shift).min(40_000_000_000);
                Some(if rng.range(0, 3) == 0 { ns / 500 * 500 } else { ns })
            }
            _ => {
                let ns = rng.range(1_000, 65_000_000);
                Some(if rng.range(0, 3) == 0 { ns / 500 * 500 } else { ns })
            }
        }
    }

    #[test]
    fn every_sample_within_its_bound_and_exact_when_all_fit() {
        for seed in 1..=12u64 {
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03));
            let long_per_mille = [1, 5, 30][seed as usize % 3];
            let mut r = SampleRing::default();
            let mut model: Vec<Model> = Vec::new(); // oldest first
            for _ in 0..6_000 {
                let rtt = random_rtt(&mut rng, long_per_mille);
                // Every sample left in the ring after the oldest leaves, as stored, and the new
                // one at most 65,534 us: the new one is exact to the microsecond.
                let before = newest(&r);
                let kept = &before[..before.len().min(RING_LEN - 1)];
                let all_fit = kept.iter().flatten().all(|s| read_us(*s) <= MAX_UNITS)
                    && rtt.is_none_or(|ns| exact_us(ns) <= MAX_UNITS);

                r.push(rtt);
                for m in model.iter_mut().filter(|m| m.ns.is_some() && r.shift > m.coarsest) {
                    m.coarsest = r.shift;
                    m.bound_ns += half_step_ns(r.shift);
                }
                // Rounded once, at the ring's new step or, for an RTT of 32,767 units of its own
                // step, at that step (held as 65,534 units of the ring's, one finer).
                let at = rtt.map_or(r.shift, |ns| own_shift(ns).max(r.shift));
                let new = Model { ns: rtt, written_at: at, coarsest: at, bound_ns: half_step_ns(at) };
                model.push(new);
                if model.len() > RING_LEN {
                    model.remove(0);
                }
                if let (true, Some(ns)) = (all_fit, rtt) {
                    assert_eq!(r.shift, 0);
                    assert_eq!(newest(&r)[0].map(read_us), Some(exact_us(ns)), "{ns} ns");
                }

                let got = newest(&r);
                assert_eq!(got.len(), model.len());
                assert_eq!(r.lost(), got.iter().filter(|s| s.is_none()).count(), "lost count");
                for (got, m) in got.iter().zip(model.iter().rev()) {
                    let (got, ns) = match (got, m.ns) {
                        (None, None) => continue,
                        (Some(got), Some(ns)) => (read_us(*got), ns),
                        (got, _) => panic!("{got:?} read back for {m:?}", m = m.ns),
                    };
                    assert_eq!(got % (1 << r.shift), 0);
                    let err = (got * 1000).abs_diff(ns);
                    assert!(err <= m.bound_ns, "{ns} ns read {got} us, bound {} ns", m.bound_ns);
                    if m.coarsest == m.written_at {
                        // Rounded once, from the nanoseconds.
                        assert!(err <= half_step_ns(m.coarsest), "{ns} ns read {got} us");
                        if m.written_at == 0 {
                            assert_eq!(got, exact_us(ns));
                        }
                    } else {
                        // Rounded again: under 3/4 of the coarsest step.
                        assert!(4 * err < 3 * (1000 << m.coarsest), "{ns} ns read {got} us, {}", m.coarsest);
                    }
                }
            }
        }
    }
}
