//! Where in the round each target is probed. A target's phase comes from its slot index
//! through the van der Corput sequence (the index's bits reversed, read as a fraction): any
//! first N slots split the round into gaps of at most twice I/N, and a target's phase never
//! moves when others come or go (a freed slot's phase goes to the next target that takes it).
use std::time::{Duration, Instant};

/// The phase of slot `index`, as a fraction of the interval in [0, 1).
pub fn phase_fraction(index: usize) -> f64 {
    f64::from((index as u32).reverse_bits()) / 4_294_967_296.0
}

/// The first time at or after `now` that lies `fraction` of an interval into a round, rounds
/// counted from `origin`.
pub fn first_due(origin: Instant, now: Instant, interval: Duration, fraction: f64) -> Instant {
    let offset = interval.mul_f64(fraction);
    let elapsed = now.saturating_duration_since(origin);
    let interval_ns = interval.as_nanos().max(1);
    let behind = elapsed.saturating_sub(offset).as_nanos();
    let rounds = behind.div_ceil(interval_ns);
    let round = u32::try_from(rounds).unwrap_or(u32::MAX);
    origin + offset + interval.saturating_mul(round)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_slots_halve_the_gaps() {
        let phases: Vec<f64> = (0..8).map(phase_fraction).collect();
        assert_eq!(phases, vec![0.0, 0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875]);
    }

    #[test]
    fn any_first_n_slots_leave_no_gap_over_twice_the_even_spacing() {
        for n in 1..=1500usize {
            let mut p: Vec<f64> = (0..n).map(phase_fraction).collect();
            p.sort_by(|a, b| a.total_cmp(b));
            let wrap = 1.0 - p[n - 1] + p[0];
            let max_gap = p.windows(2).map(|w| w[1] - w[0]).fold(wrap, f64::max);
            assert!(max_gap <= 2.0 / n as f64 + 1e-12, "n={n}: gap {max_gap}");
        }
    }

    #[test]
    fn phases_are_kept_across_rounds() {
        let origin = Instant::now();
        let i = Duration::from_secs(2);
        let ms = Duration::from_millis;
        assert_eq!(first_due(origin, origin, i, 0.25), origin + ms(500));
        assert_eq!(first_due(origin, origin + ms(600), i, 0.25), origin + ms(2500));
        assert_eq!(first_due(origin, origin + ms(2500), i, 0.25), origin + ms(2500));
        assert_eq!(first_due(origin, origin + ms(7001), i, 0.0), origin + ms(8000));
        let due = first_due(origin, origin + ms(123_456), i, 0.75);
        assert!(due >= origin + ms(123_456) && due < origin + ms(125_456));
        assert_eq!((due - origin).as_millis() % 2000, 1500);
    }
}
