//! Round-trip-time histograms of one target: classic buckets at configured bounds, and a
//! native (sparse, exponential) histogram as Prometheus defines it. Pure: fed RTTs in
//! nanoseconds, read as counts; the engine feeds one when a probe is final.

/// Where the classic buckets end, and whether the native histogram is kept. One per engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramLayout {
    /// Upper bounds (inclusive) of the classic buckets, strictly increasing, in nanoseconds.
    /// Empty: no classic histogram.
    pub bounds_ns: Vec<u64>,
    /// Keep a native histogram (exposed when the scraper asks for protobuf).
    pub native: bool,
}

impl Default for HistogramLayout {
    fn default() -> Self {
        HistogramLayout { bounds_ns: Vec::new(), native: true }
    }
}

/// The most classic bounds a layout may have: each costs 8 bytes per target.
pub const MAX_BOUNDS: usize = 64;

impl HistogramLayout {
    /// A layout from bounds in seconds: finite, positive, strictly increasing, each a distinct
    /// whole number of nanoseconds.
    pub fn from_seconds(bounds: &[f64], native: bool) -> Result<Self, String> {
        if bounds.len() > MAX_BOUNDS {
            return Err(format!("at most {MAX_BOUNDS} bucket bounds, got {}", bounds.len()));
        }
        let mut bounds_ns = Vec::with_capacity(bounds.len());
        for &b in bounds {
            if !b.is_finite() || b <= 0.0 || b > 3600.0 {
                return Err(format!("bucket bound {b} is not a number of seconds in (0, 3600]"));
            }
            let ns = (b * 1e9).round() as u64;
            if bounds_ns.last().is_some_and(|&last| ns <= last) {
                return Err(format!(
                    "bucket bounds must increase (at nanosecond resolution): {b} after a bound not below it"
                ));
            }
            if ns == 0 {
                return Err(format!("bucket bound {b} is below a nanosecond"));
            }
            bounds_ns.push(ns);
        }
        Ok(HistogramLayout { bounds_ns, native })
    }
}

/// The finest native schema kept (bucket growth factor 2^(1/8) ≈ 1.09, as Prometheus
/// clients' default factor of 1.1 gives).
pub const NATIVE_SCHEMA: i8 = 3;
/// Coarsest schema: bucket growth factor 2^16; 1 ns to an hour spans three buckets.
pub const NATIVE_MIN_SCHEMA: i8 = -4;
/// More populated native buckets than this halve the resolution (schema - 1), as Prometheus
/// clients do; it bounds what a target with wild jitter costs (8 bytes a bucket).
pub const NATIVE_MAX_BUCKETS: usize = 40;
/// Observations at or below this many seconds count in the zero bucket (client_golang's default,
/// 2^-128): an RTT of exactly 0 ns only.
pub const NATIVE_ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39;

/// `2^(j/8 - 1)` for j in 0..8: lower edges of schema 3's buckets within one power of two,
/// as fractions in [0.5, 1) (the values Prometheus' own table holds).
const SCHEMA3_EDGES: [f64; 8] = [
    0.5,
    0.545_253_866_332_628_8,
    0.594_603_557_501_360_5,
    0.648_419_777_325_504_8,
    std::f64::consts::FRAC_1_SQRT_2,
    0.771_105_412_703_970_4,
    0.840_896_415_253_714_4,
    0.917_004_043_204_671_1,
];

/// The native bucket of `seconds` (> 0, finite) at schema 3: bucket `i` holds
/// `(2^((i-1)/8), 2^(i/8)]`.
pub fn schema3_index(seconds: f64) -> i32 {
    // frexp: seconds = frac * 2^exp with frac in [0.5, 1); exact for normal numbers.
    let bits = seconds.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1022;
    let frac = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | (1022u64 << 52));
    // The first edge at or above frac: a value on an edge belongs to the bucket it closes.
    let j = SCHEMA3_EDGES.partition_point(|&edge| edge < frac) as i32;
    j + (exp - 1) * 8
}

/// Bucket index at a coarser schema: each step merges bucket pairs (2k-1, 2k) into k.
pub fn coarsen(index: i32, steps: u32) -> i32 {
    // ceil(index / 2^steps), for negative indexes too (arithmetic shift floors).
    (index + (1 << steps) - 1) >> steps
}

/// A native histogram's state as exposed: schema, zero bucket, and the populated buckets in
/// increasing index order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NativeBuckets {
    pub schema: i8,
    pub zero_count: u64,
    /// (index, count), sorted by index, counts > 0.
    pub buckets: Vec<(i32, u64)>,
}

/// One target's histograms: a boxed slice (pointer and length, 16 bytes) in the target's slot,
/// nothing on the heap until its first answered probe, then one allocation of
/// 8 bytes a word: a header, one count per classic bound, one word per populated native
/// bucket (its index in the top 16 bits, its count in the other 48: 2.8e14 answers in one
/// bucket, 89,000 years at the 10 ms shortest interval).
#[derive(Debug, Clone, Default)]
pub struct RttHistogram(Option<Box<[u64]>>);

const COUNT_BITS: u32 = 48;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
/// The zero bucket's word sorts before every native index (the lowest, schema 3 at 1 ns, is -239).
const ZERO_INDEX: i16 = i16::MIN;

fn pack(index: i16, count: u64) -> u64 {
    (u64::from(index as u16) << COUNT_BITS) | (count & COUNT_MASK)
}

fn index_of(word: u64) -> i16 {
    (word >> COUNT_BITS) as u16 as i16
}

fn count_of(word: u64) -> u64 {
    word & COUNT_MASK
}

impl RttHistogram {
    pub fn observe(&mut self, layout: &HistogramLayout, rtt_ns: u64) {
        if layout.bounds_ns.is_empty() && !layout.native {
            return;
        }
        let bounds = layout.bounds_ns.len();
        let words = self.0.get_or_insert_with(|| vec![0; 1 + bounds].into_boxed_slice());
        let bucket = layout.bounds_ns.partition_point(|&b| b < rtt_ns);
        if let Some(c) = words.get_mut(1 + bucket).filter(|_| bucket < bounds) {
            *c += 1;
        }
        if layout.native {
            self.observe_native(1 + bounds, rtt_ns);
        }
    }

    fn observe_native(&mut self, from: usize, rtt_ns: u64) {
        let Some(words) = self.0.as_mut() else { return };
        let coarsened = words[0] as u32;
        let index = if rtt_ns == 0 {
            ZERO_INDEX
        } else {
            // Within i16: schema 3 spans -239 (1 ns) to 95 (3,600 s), and 2^64 ns is bucket 276.
            coarsen(schema3_index(rtt_ns as f64 / 1e9), coarsened) as i16
        };
        let native = &mut words[from..];
        match native.binary_search_by_key(&index, |&w| index_of(w)) {
            Ok(at) => {
                let w = &mut native[at];
                *w = pack(index, (count_of(*w) + 1).min(COUNT_MASK));
            }
            Err(at) => {
                let mut grown = Vec::with_capacity(words.len() + 1);
                grown.extend_from_slice(&words[..from + at]);
                grown.push(pack(index, 1));
                grown.extend_from_slice(&words[from + at..]);
                *words = grown.into_boxed_slice();
                while self.native_buckets(from) > NATIVE_MAX_BUCKETS && self.schema() > NATIVE_MIN_SCHEMA {
                    self.halve_resolution(from);
                }
            }
        }
    }

    fn schema(&self) -> i8 {
        NATIVE_SCHEMA - self.0.as_ref().map_or(0, |w| w[0] as i8)
    }

    fn native_buckets(&self, from: usize) -> usize {
        self.0.as_ref().map_or(0, |w| w[from..].iter().filter(|&&x| index_of(x) != ZERO_INDEX).count())
    }

    /// Schema - 1: neighbouring buckets merge; counts and order are kept.
    fn halve_resolution(&mut self, from: usize) {
        let Some(words) = self.0.as_mut() else { return };
        words[0] += 1;
        let mut merged: Vec<u64> = Vec::with_capacity(words.len());
        merged.extend_from_slice(&words[..from]);
        for &w in &words[from..] {
            let i = index_of(w);
            let j = if i == ZERO_INDEX { i } else { coarsen(i32::from(i), 1) as i16 };
            let merges = merged.len() > from && merged.last().is_some_and(|&last| index_of(last) == j);
            match merged.last_mut() {
                Some(last) if merges => *last = pack(j, (count_of(*last) + count_of(w)).min(COUNT_MASK)),
                _ => merged.push(pack(j, count_of(w))),
            }
        }
        *words = merged.into_boxed_slice();
    }

    /// Cumulative classic counts, one per bound (the +Inf bucket is the answered count).
    pub fn classic_cumulative(&self, layout: &HistogramLayout) -> Vec<u64> {
        let classic = self.0.as_ref().map_or(&[][..], |w| &w[1..(1 + layout.bounds_ns.len()).min(w.len())]);
        let mut sum = 0;
        (0..layout.bounds_ns.len())
            .map(|i| {
                sum += classic.get(i).copied().unwrap_or(0);
                sum
            })
            .collect()
    }

    pub fn native(&self, layout: &HistogramLayout) -> NativeBuckets {
        let mut out = NativeBuckets { schema: self.schema(), zero_count: 0, buckets: Vec::new() };
        let from = 1 + layout.bounds_ns.len();
        for &w in self.0.as_ref().and_then(|w| w.get(from..)).unwrap_or(&[]) {
            match index_of(w) {
                ZERO_INDEX => out.zero_count = count_of(w),
                i => out.buckets.push((i32::from(i), count_of(w))),
            }
        }
        out
    }

    /// Heap bytes held (for the memory figures; the allocator's own overhead not included).
    pub fn heap_bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |w| w.len() * 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upper bound of native bucket `index` at `schema`: 2^(index / 2^schema).
    fn upper(schema: i8, index: i32) -> f64 {
        2f64.powf(f64::from(index) * 2f64.powi(-i32::from(schema)))
    }

    #[test]
    fn schema3_edges_are_powers_of_two() {
        for (j, &edge) in SCHEMA3_EDGES.iter().enumerate() {
            let want = 2f64.powf(j as f64 / 8.0 - 1.0);
            assert!((edge - want).abs() <= f64::EPSILON * want, "edge {j}: {edge} vs {want}");
        }
    }

    #[test]
    fn powers_of_two_close_their_bucket() {
        // 2^k seconds is the upper bound of bucket 8k, inclusive.
        for k in -30..6 {
            let v = 2f64.powi(k);
            assert_eq!(schema3_index(v), 8 * k, "2^{k}");
            assert_eq!(schema3_index(v * (1.0 + 1e-12)), 8 * k + 1, "just above 2^{k}");
        }
    }

    /// A small deterministic generator: no dependency, same sequence every run.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 11
        }
    }

    #[test]
    fn every_rtt_lies_in_its_native_bucket() {
        let mut rng = Lcg(7);
        for _ in 0..200_000 {
            // 1 ns .. ~70 s, spread over the orders of magnitude.
            let ns = ((rng.next() % 70_000_000_000) >> (rng.next() % 36)).max(1);
            let s = ns as f64 / 1e9;
            let i = schema3_index(s);
            assert!(upper(3, i - 1) < s * (1.0 + 1e-12) && s <= upper(3, i) * (1.0 + 1e-12), "{ns} ns in bucket {i}");
        }
    }

    #[test]
    fn classic_buckets_count_as_a_naive_count_does() {
        let layout = HistogramLayout::from_seconds(&[1e-5, 2e-5, 5e-5, 1e-4, 1e-3, 0.3, 2.0], false).unwrap();
        let mut h = RttHistogram::default();
        let mut rng = Lcg(11);
        let mut rtts = Vec::new();
        for _ in 0..5_000 {
            let ns = (rng.next() % 3_000_000_000) >> (rng.next() % 20);
            h.observe(&layout, ns);
            rtts.push(ns);
        }
        // Bounds exactly on a sample: inclusive.
        for &b in &layout.bounds_ns {
            h.observe(&layout, b);
            rtts.push(b);
        }
        let naive: Vec<u64> =
            layout.bounds_ns.iter().map(|&b| rtts.iter().filter(|&&r| r <= b).count() as u64).collect();
        assert_eq!(h.classic_cumulative(&layout), naive);
        assert_eq!(layout.bounds_ns[5], 300_000_000, "0.3 s is exactly 300 ms");
    }

    #[test]
    fn native_counts_survive_coarsening_and_stay_in_bounds() {
        let layout = HistogramLayout { bounds_ns: Vec::new(), native: true };
        let mut h = RttHistogram::default();
        let mut rng = Lcg(3);
        let mut rtts = Vec::new();
        for n in 0..20_000u64 {
            // Narrow at first (no coarsening), then spread over many orders of magnitude.
            let ns = if n < 1_000 {
                1_000_000 + rng.next() % 100_000
            } else {
                1 + ((rng.next() % 40_000_000_000) >> (rng.next() % 34))
            };
            h.observe(&layout, ns);
            rtts.push(ns);
            if n == 999 {
                assert_eq!(h.native(&layout).schema, NATIVE_SCHEMA, "a 10 % spread keeps the finest schema");
            }
        }
        h.observe(&layout, 0);
        let nb = h.native(&layout);
        assert!(nb.schema < NATIVE_SCHEMA && nb.schema >= NATIVE_MIN_SCHEMA);
        assert!(nb.buckets.len() <= NATIVE_MAX_BUCKETS);
        assert!(nb.buckets.windows(2).all(|w| w[0].0 < w[1].0), "sorted, distinct");
        assert_eq!(nb.zero_count, 1);
        assert_eq!(nb.buckets.iter().map(|b| b.1).sum::<u64>(), rtts.len() as u64);
        // Recount from scratch at the final schema: the same buckets.
        let steps = (NATIVE_SCHEMA - nb.schema) as u32;
        let mut want = std::collections::BTreeMap::new();
        for &r in &rtts {
            *want.entry(coarsen(schema3_index(r as f64 / 1e9), steps)).or_insert(0u64) += 1;
        }
        assert_eq!(nb.buckets, want.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn layouts_refuse_what_cannot_be_bounds() {
        assert!(HistogramLayout::from_seconds(&[0.1, 0.1], true).is_err());
        assert!(HistogramLayout::from_seconds(&[0.2, 0.1], true).is_err());
        assert!(HistogramLayout::from_seconds(&[0.0], true).is_err());
        assert!(HistogramLayout::from_seconds(&[f64::NAN], true).is_err());
        assert!(HistogramLayout::from_seconds(&[f64::INFINITY], true).is_err());
        assert!(HistogramLayout::from_seconds(&[1e-10], true).is_err());
        assert!(HistogramLayout::from_seconds(&vec![1.0; 65], true).is_err());
        assert!(HistogramLayout::from_seconds(&[1e-9, 2e-9], true).is_ok());
    }

    #[test]
    fn a_word_holds_any_index_and_count() {
        for index in [ZERO_INDEX, -240, -1, 0, 1, 95, i16::MAX] {
            for count in [0, 1, 12_345, COUNT_MASK] {
                let w = pack(index, count);
                assert_eq!((index_of(w), count_of(w)), (index, count));
            }
        }
        // Index order is the order of the decoded index, whatever the packed words' order.
        assert!(index_of(pack(-3, 5)) < index_of(pack(2, 1)));
    }

    #[test]
    fn one_allocation_holds_classic_native_and_zero_buckets() {
        let layout = HistogramLayout::from_seconds(&[1e-4, 1e-3], true).unwrap();
        let mut h = RttHistogram::default();
        for ns in [50_000, 0, 500_000, 50_000, 5_000_000, 0] {
            h.observe(&layout, ns);
        }
        assert_eq!(h.classic_cumulative(&layout), vec![4, 5], "0 ns answers count in every classic bucket");
        let n = h.native(&layout);
        assert_eq!(n.zero_count, 2);
        assert_eq!(n.buckets.iter().map(|b| b.1).sum::<u64>(), 4);
        assert_eq!(n.buckets.len(), 3);
        // Header, two classic counts, the zero bucket and three native buckets.
        assert_eq!(h.heap_bytes(), (1 + 2 + 1 + 3) * 8);
        let classic_only = HistogramLayout::from_seconds(&[1e-4], false).unwrap();
        let mut c = RttHistogram::default();
        c.observe(&classic_only, 1);
        assert_eq!(c.heap_bytes(), 2 * 8);
        let none = HistogramLayout { bounds_ns: Vec::new(), native: false };
        let mut z = RttHistogram::default();
        z.observe(&none, 1);
        assert_eq!(z.heap_bytes(), 0, "nothing kept, nothing allocated");
    }

    #[test]
    fn nothing_is_allocated_before_the_first_answer() {
        let h = RttHistogram::default();
        assert_eq!(h.heap_bytes(), 0);
        let layout = HistogramLayout::from_seconds(&[0.001], true).unwrap();
        assert_eq!(h.classic_cumulative(&layout), vec![0]);
        assert_eq!(h.native(&layout), NativeBuckets { schema: NATIVE_SCHEMA, zero_count: 0, buckets: vec![] });
    }
}
