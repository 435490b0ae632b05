//! Where in the round each target is probed. A target's phase comes from its slot index
//! through the van der Corput sequence (the index's bits reversed, read as a fraction): any
//! first N slots split the round into gaps of at most twice I/N, and a target's phase never
//! moves when others come or go (a freed slot's phase goes to the next target that takes it).
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// The phase of slot `index`, as a fraction of the interval in [0, 1).
pub fn phase_fraction(index: usize) -> f64 {
    f64::from((index as u32).reverse_bits()) / 4_294_967_296.0
}

/// The first time at or after `now` that lies `fraction` of an interval into a round (times
/// in nanoseconds, rounds counted from 0).
pub fn first_due(now: u64, interval: u64, fraction: f64) -> u64 {
    let interval = interval.max(1);
    let offset = (interval as f64 * fraction) as u64;
    let rounds = now.saturating_sub(offset).div_ceil(interval);
    offset.saturating_add(rounds.saturating_mul(interval))
}

/// The engine's tables shrink, after items left, to a quarter over what they hold once they
/// hold less than a quarter of their allocation (and the difference is worth a reallocation):
/// hysteresis, so a table going up and down does not reallocate each time. The new capacity,
/// or None to leave it.
pub fn shrunk_capacity(capacity: usize, len: usize) -> Option<usize> {
    (capacity > 4 * len + 1024).then(|| len + len / 4)
}

/// The send order: items by due time, earliest first. Every target shares one interval, so
/// an item taken at its due time comes back one interval later, and items taken in due order
/// come back in due order: a FIFO keeps them sorted, at O(1) a send and in sequential memory
/// (a binary heap of 100,000 cost a cache miss per level, twice a send: 9 % of the engine
/// thread at 50,000 probes/s, by perf). Only first due times, of items just added, are
/// unordered; a heap holds those until they come due once.
/// Due times are nanoseconds since the engine started (8 bytes, where an `Instant` takes 16):
/// with a slot index and a target id an entry is 16 bytes, a target's share of the queue.
#[derive(Debug)]
pub struct SendQueue<T: Ord + Copy> {
    periodic: VecDeque<(u64, T)>,
    first: BinaryHeap<Reverse<(u64, T)>>,
}

impl<T: Ord + Copy> Default for SendQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Ord + Copy> SendQueue<T> {
    pub fn new() -> Self {
        Self { periodic: VecDeque::new(), first: BinaryHeap::new() }
    }

    /// Shrinks the queue's allocations by the engine's rule (`shrunk_capacity`), after many
    /// items left.
    pub fn shrink(&mut self) {
        if let Some(c) = shrunk_capacity(self.periodic.capacity(), self.periodic.len()) {
            self.periodic.shrink_to(c);
        }
        if let Some(c) = shrunk_capacity(self.first.capacity(), self.first.len()) {
            self.first.shrink_to(c);
        }
    }

    /// A new item, first due at `due` (or an item that must go again at a due time out of the
    /// FIFO's order, such as a probe the kernel had no room for).
    pub fn add(&mut self, due: u64, item: T) {
        self.first.push(Reverse((due, item)));
    }

    /// The earliest item, not taken.
    pub fn peek(&self) -> Option<(u64, T)> {
        let periodic = self.periodic.front().copied();
        let first = self.first.peek().map(|Reverse(e)| *e);
        match (periodic, first) {
            (Some(p), Some(f)) => Some(if f.0 < p.0 { f } else { p }),
            (p, f) => p.or(f),
        }
    }

    /// Takes the earliest item.
    pub fn pop(&mut self) -> Option<(u64, T)> {
        let from_first = match (self.periodic.front(), self.first.peek()) {
            (Some(p), Some(Reverse(f))) => f.0 < p.0,
            (None, Some(_)) => true,
            _ => false,
        };
        if from_first {
            let taken = self.first.pop().map(|Reverse(e)| e);
            if self.first.is_empty() {
                // A burst of additions grew it; once they are all periodic, its room is waste.
                self.first.shrink_to(64);
            }
            taken
        } else {
            self.periodic.pop_front()
        }
    }

    /// Puts back an item just taken, next due at `due`. Items taken in due order and put back
    /// one interval later (or at a later now) stay sorted; anything else still comes out in
    /// order, through the heap.
    pub fn put_back(&mut self, due: u64, item: T) {
        match self.periodic.back() {
            Some(&(last, _)) if last > due => self.first.push(Reverse((due, item))),
            _ => self.periodic.push_back((due, item)),
        }
    }

    pub fn len(&self) -> usize {
        self.periodic.len() + self.first.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Takes everything due before `until`, putting each back one interval later; returns the
    /// order items were taken in.
    fn run(q: &mut SendQueue<u32>, until: u64, interval: u64) -> Vec<(u64, u32)> {
        let mut taken = Vec::new();
        while let Some((due, item)) = q.peek() {
            if due >= until {
                break;
            }
            assert_eq!(q.pop(), Some((due, item)));
            taken.push((due, item));
            q.put_back(due + interval, item);
        }
        taken
    }

    #[test]
    fn items_come_out_in_due_order_round_after_round() {
        let interval = 2000 * MS;
        let mut q = SendQueue::new();
        for i in 0..1000u32 {
            q.add((interval as f64 * phase_fraction(i as usize)) as u64, i);
        }
        let taken = run(&mut q, interval * 5, interval);
        assert_eq!(taken.len(), 5000);
        assert!(taken.windows(2).all(|w| w[0].0 <= w[1].0), "due order");
        assert_eq!(q.len(), 1000);
        assert!(q.first.is_empty(), "after one round every item is in the FIFO");
        assert!(q.first.capacity() <= 64, "and the heap gave its room back");
    }

    #[test]
    fn items_added_between_rounds_merge_in_order() {
        let interval = 1000 * MS;
        let mut q = SendQueue::new();
        for i in 0..100u32 {
            q.add(u64::from(i) * 10 * MS, i);
        }
        let mut taken = run(&mut q, 1500 * MS, interval);
        // Newcomers at odd moments, some before items already queued.
        for i in 100..150u32 {
            q.add((1500 + u64::from(i - 100) * 7 + 3) * MS, i);
        }
        taken.extend(run(&mut q, 4000 * MS, interval));
        assert!(taken.windows(2).all(|w| w[0].0 <= w[1].0), "due order");
        for i in 0..150u32 {
            let n = taken.iter().filter(|t| t.1 == i).count();
            assert!((2..=4).contains(&n), "item {i} taken {n} times");
        }
    }

    #[test]
    fn an_entry_is_16_bytes_with_a_slot_and_an_id() {
        assert_eq!(std::mem::size_of::<(u64, (u32, u32))>(), 16);
        let mut q = SendQueue::new();
        let due = 1_234_567_891;
        q.add(due, (1u32, 2u32));
        assert_eq!(q.pop(), Some((due, (1, 2))), "due times come back to the nanosecond");
    }

    #[test]
    fn an_item_put_back_out_of_order_still_comes_out_in_order() {
        let mut q = SendQueue::new();
        q.put_back(50 * MS, 1);
        q.put_back(20 * MS, 2); // earlier than the FIFO's last
        q.add(30 * MS, 3);
        let order: Vec<u32> = std::iter::from_fn(|| q.pop().map(|e| e.1)).collect();
        assert_eq!(order, vec![2, 3, 1]);
        assert!(q.is_empty());
    }

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
        let i = 2000 * MS;
        assert_eq!(first_due(0, i, 0.25), 500 * MS);
        assert_eq!(first_due(600 * MS, i, 0.25), 2500 * MS);
        assert_eq!(first_due(2500 * MS, i, 0.25), 2500 * MS);
        assert_eq!(first_due(7001 * MS, i, 0.0), 8000 * MS);
        let due = first_due(123_456 * MS, i, 0.75);
        assert!((123_456 * MS..125_456 * MS).contains(&due));
        assert_eq!((due / MS) % 2000, 1500);
    }
}
