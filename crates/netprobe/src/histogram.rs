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
/// Coarsest schema: bucket growth factor 2^16; 1 ns to an hour spans four buckets.
pub const NATIVE_MIN_SCHEMA: i8 = -4;
/// More populated native buckets than this halve the resolution (schema - 1), as Prometheus
/// clients do; it bounds what a target with wild jitter costs (16 bytes a bucket).
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

/// One target's histograms: one pointer in the target's slot, nothing on the heap until its
/// first answered probe (a target that never answers costs 8 bytes).
#[derive(Debug, Clone, Default)]
pub struct RttHistogram(Option<Box<Counts>>);

#[derive(Debug, Clone, Default)]
struct Counts {
    /// Per classic bucket, samples in (previous bound, bound]; samples above the last bound
    /// are only in the count the caller keeps.
    classic: Box<[u64]>,
    /// Populated native buckets at `schema`, (index, count) sorted by index.
    native: Vec<(i32, u64)>,
    /// Native schema below `NATIVE_SCHEMA`: how many times the resolution was halved.
    coarsened: u8,
    zero_count: u64,
}

impl RttHistogram {
    pub fn observe(&mut self, layout: &HistogramLayout, rtt_ns: u64) {
        if layout.bounds_ns.is_empty() && !layout.native {
            return;
        }
        let counts = self.0.get_or_insert_with(|| {
            Box::new(Counts { classic: vec![0; layout.bounds_ns.len()].into_boxed_slice(), ..Counts::default() })
        });
        let bucket = layout.bounds_ns.partition_point(|&b| b < rtt_ns);
        if let Some(c) = counts.classic.get_mut(bucket) {
            *c += 1;
        }
        if layout.native {
            counts.observe_native(rtt_ns);
        }
    }

    /// Cumulative classic counts, one per bound (the +Inf bucket is the answered count).
    pub fn classic_cumulative(&self, layout: &HistogramLayout) -> Vec<u64> {
        let classic = self.0.as_ref().map(|c| &c.classic[..]).unwrap_or(&[]);
        let mut sum = 0;
        (0..layout.bounds_ns.len())
            .map(|i| {
                sum += classic.get(i).copied().unwrap_or(0);
                sum
            })
            .collect()
    }

    pub fn native(&self) -> NativeBuckets {
        match &self.0 {
            None => NativeBuckets { schema: NATIVE_SCHEMA, zero_count: 0, buckets: Vec::new() },
            Some(c) => NativeBuckets {
                schema: NATIVE_SCHEMA - c.coarsened as i8,
                zero_count: c.zero_count,
                buckets: c.native.clone(),
            },
        }
    }

    /// Heap bytes held (for the memory figures; the allocator's own overhead not included).
    pub fn heap_bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |c| {
            std::mem::size_of::<Counts>()
                + c.classic.len() * 8
                + c.native.capacity() * std::mem::size_of::<(i32, u64)>()
        })
    }
}

impl Counts {
    fn observe_native(&mut self, rtt_ns: u64) {
        if rtt_ns == 0 {
            self.zero_count += 1;
            return;
        }
        let index = coarsen(schema3_index(rtt_ns as f64 / 1e9), u32::from(self.coarsened));
        match self.native.binary_search_by_key(&index, |&(i, _)| i) {
            Ok(at) => self.native[at].1 += 1,
            Err(at) => {
                self.native.insert(at, (index, 1));
                while self.native.len() > NATIVE_MAX_BUCKETS
                    && NATIVE_SCHEMA - (self.coarsened as i8) > NATIVE_MIN_SCHEMA
                {
                    self.halve_resolution();
                }
            }
        }
    }

    /// Schema - 1: neighbouring buckets merge; counts and order are kept.
    fn halve_resolution(&mut self) {
        self.coarsened += 1;
        let mut merged: Vec<(i32, u64)> = Vec::with_capacity(self.native.len() / 2 + 1);
        for &(i, c) in &self.native {
            let j = coarsen(i, 1);
            match merged.last_mut() {
                Some(last) if last.0 == j => last.1 += c,
                _ => merged.push((j, c)),
            }
        }
        self.native = merged;
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
                assert_eq!(h.native().schema, NATIVE_SCHEMA, "a 10 % spread keeps the finest schema");
            }
        }
        h.observe(&layout, 0);
        let nb = h.native();
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
    fn nothing_is_allocated_before_the_first_answer() {
        let h = RttHistogram::default();
        assert_eq!(h.heap_bytes(), 0);
        let layout = HistogramLayout::from_seconds(&[0.001], true).unwrap();
        assert_eq!(h.classic_cumulative(&layout), vec![0]);
        assert_eq!(h.native(), NativeBuckets { schema: NATIVE_SCHEMA, zero_count: 0, buckets: vec![] });
    }
}
