//! The window gauges: loss, mean latency and standard deviation over the recent samples.
//!
//! As in the reference exporter, the window is the newest (up to) 250 samples, and when the
//! success rate of the newest `n` samples differs from that of the older ones by more than
//! 12 points (each side at least 25 samples), only the newest `n` count; if such a split has
//! `n >= 100` it also becomes the limit for later windows until the ring grows past it.
//! Unlike the reference, latency and standard deviation use the received samples only, the
//! split is exact (no sample of the older side leaks in), and undefined values are `None`.
//! The limit is applied when a probe is recorded (`stats`), never when the gauges are read:
//! two scrapers reading at different moments see the same numbers.

const MIN_SIDE: usize = 25;
const MIN_SCORE: f64 = 0.12;
const STICKY_MIN: usize = 100;

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Window {
    /// Samples the gauges cover.
    pub samples: usize,
    /// Received samples among them.
    pub received: usize,
    pub loss_ratio: Option<f64>,
    pub latency_seconds: Option<f64>,
    pub stddev_seconds: Option<f64>,
}

/// Newest `n` samples whose success rate differs most from the rest, if by more than 12 points.
/// `answered` is newest first.
pub fn change_point(answered: &[bool]) -> Option<usize> {
    let l = answered.len();
    if l < 2 * MIN_SIDE {
        return None;
    }
    let total_ok = answered.iter().filter(|a| **a).count();
    if total_ok == 0 || total_ok == l {
        return None; // every split scores 0
    }
    let mut ok_newest = answered[..MIN_SIDE - 1].iter().filter(|a| **a).count();
    let mut best: Option<(usize, f64)> = None;
    for n in MIN_SIDE..=l - MIN_SIDE {
        if answered[n - 1] {
            ok_newest += 1;
        }
        let newer = ok_newest as f64 / n as f64;
        let older = (total_ok - ok_newest) as f64 / (l - n) as f64;
        let score = (newer - older).abs();
        if score > best.map_or(MIN_SCORE, |(_, s)| s) {
            best = Some((n, score));
        }
    }
    best.map(|(n, _)| n)
}

/// The limit a split leaves for later windows, if it sticks (`n >= 100`).
pub fn sticky(split: Option<usize>) -> Option<usize> {
    split.filter(|&n| n >= STICKY_MIN)
}

/// `samples` newest first (`None` = lost). Returns the gauges and, when the change rule
/// says so, the new limit for later windows.
pub fn compute(samples: &[Option<f64>]) -> (Window, Option<usize>) {
    let answered: Vec<bool> = samples.iter().map(Option::is_some).collect();
    let split = change_point(&answered);
    let used = &samples[..split.unwrap_or(samples.len())];

    let rtts = || used.iter().flatten();
    let received = rtts().count();
    let mut w = Window { samples: used.len(), received, ..Window::default() };
    if !used.is_empty() {
        w.loss_ratio = Some(1.0 - received as f64 / used.len() as f64);
    }
    if received > 0 {
        let mean = rtts().sum::<f64>() / received as f64;
        let var = rtts().map(|x| (x - mean) * (x - mean)).sum::<f64>() / received as f64;
        w.latency_seconds = Some(mean);
        w.stddev_seconds = Some(var.sqrt());
    }
    (w, sticky(split))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn empty_window_has_no_gauges() {
        let (w, sticky) = compute(&[]);
        assert_eq!(w, Window::default());
        assert_eq!(sticky, None);
    }

    #[test]
    fn all_lost_has_loss_but_no_latency() {
        let (w, _) = compute(&[None; 10]);
        assert_eq!(w.samples, 10);
        assert_eq!(w.loss_ratio, Some(1.0));
        assert_eq!(w.latency_seconds, None);
        assert_eq!(w.stddev_seconds, None);
    }

    #[test]
    fn stddev_uses_received_samples_only() {
        // 20 ms +- 1 ms with 10 % loss: the reference would report about 6 ms.
        let mut s = Vec::new();
        for i in 0..90 {
            s.push(Some(if i % 2 == 0 { 0.019 } else { 0.021 }));
        }
        s.extend([None; 10]);
        // Spread the losses so no change point is found.
        let mut mixed = Vec::new();
        for (i, v) in s.iter().take(90).enumerate() {
            mixed.push(*v);
            if i % 9 == 8 {
                mixed.push(None);
            }
        }
        let (w, sticky) = compute(&mixed);
        assert_eq!(sticky, None);
        assert_eq!(w.samples, 100);
        assert!(close(w.loss_ratio.unwrap(), 0.1));
        assert!(close(w.latency_seconds.unwrap(), 0.020));
        assert!(close(w.stddev_seconds.unwrap(), 0.001));
    }

    #[test]
    fn change_in_loss_narrows_the_window_exactly() {
        // Newest 40 all lost, older 60 all fine: the gauges cover exactly the newest 40.
        let mut s = vec![None; 40];
        s.extend(vec![Some(0.005); 60]);
        let (w, sticky) = compute(&s);
        assert_eq!(w.samples, 40);
        assert_eq!(w.loss_ratio, Some(1.0));
        assert_eq!(w.latency_seconds, None, "no sample of the older side leaks in");
        assert_eq!(sticky, None, "fewer than 100 samples do not stick");
    }

    #[test]
    fn long_change_sticks() {
        let mut s = vec![Some(0.001); 120];
        s.extend(vec![None; 100]);
        let (w, sticky) = compute(&s);
        assert_eq!(w.samples, 120);
        assert_eq!(w.loss_ratio, Some(0.0));
        assert_eq!(sticky, Some(120));
    }

    #[test]
    fn small_or_short_changes_are_ignored() {
        // 10 points of difference is below the threshold.
        let mut s = Vec::new();
        for i in 0..100 {
            s.push(if i % 10 == 0 { None } else { Some(0.001) });
        }
        for i in 0..100 {
            s.push(if i % 5 == 0 { None } else { Some(0.001) });
        }
        assert_eq!(compute(&s).0.samples, 200);
        // Fewer than 50 samples cannot have 25 on each side.
        let mut t = vec![None; 24];
        t.extend(vec![Some(0.001); 25]);
        assert_eq!(compute(&t).0.samples, 49);
    }
}
