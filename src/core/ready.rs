//! The ready queue: callbacks due to run, first in, first out.
//!
//! asyncio runs, in one iteration, only the callbacks that were ready when the iteration began;
//! anything they schedule waits for the next iteration, after the next I/O poll. `begin_iteration`
//! returns that count so the loop runs exactly that many.
//!
//! Each item has the tick (`core::ticks`) from which it counts as waiting, for the loop's lag
//! figures. Reading the clock on every push would cost more than the push; instead items are
//! pushed undated and `stamp` dates all of them at once, which the loop calls after each
//! callback and after each poll. So an item waits from the end of the callback (or the poll)
//! that queued it: the rest of that callback's run is its own time, not the queue's. Items
//! dated together sit together, so the dates are kept as runs (how many items, which tick), not
//! one per item: a push adds to the last run, a pop takes from the first.

use std::collections::VecDeque;

pub struct ReadyQueue<T> {
    items: VecDeque<T>,
    /// `(how many items, their tick)`, front first, covering `items` exactly.
    runs: VecDeque<(usize, u64)>,
    /// Whether the last run is still undated, and so takes the next pushes.
    open: bool,
}

impl<T> Default for ReadyQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

const DATED: bool = cfg!(feature = "counters");

impl<T> ReadyQueue<T> {
    pub fn new() -> Self {
        ReadyQueue {
            items: VecDeque::new(),
            runs: VecDeque::new(),
            open: false,
        }
    }

    #[inline(always)]
    pub fn push(&mut self, item: T) {
        self.items.push_back(item);
        if !DATED {
            return;
        }
        match self.runs.back_mut() {
            Some(last) if self.open => last.0 += 1,
            _ => {
                self.runs.push_back((1, 0));
                self.open = true;
            }
        }
    }

    /// Dates the items pushed since the last call: they wait from `now` on.
    #[inline(always)]
    pub fn stamp(&mut self, now: u64) {
        if self.open {
            if let Some(last) = self.runs.back_mut() {
                last.1 = now;
            }
            self.open = false;
        }
    }

    /// The front item and the tick it has waited since (0 if undated).
    #[inline(always)]
    pub fn pop(&mut self) -> Option<(T, u64)> {
        let item = self.items.pop_front()?;
        let Some(first) = self.runs.front_mut() else {
            return Some((item, 0));
        };
        let since = first.1;
        first.0 -= 1;
        if first.0 == 0 {
            self.runs.pop_front();
            self.open &= !self.runs.is_empty();
        }
        Some((item, since))
    }

    /// The item `n` places from the front, if any.
    pub fn get(&self, n: usize) -> Option<&T> {
        self.items.get(n)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// How many items this iteration runs: those queued now, not those they add.
    pub fn begin_iteration(&self) -> usize {
        self.items.len()
    }

    /// Puts `items`, in order, at `index` (0 is the front): where an interrupted iteration
    /// leaves the callbacks it had not reached. They, and anything undated, wait from `now`.
    pub fn insert_at(&mut self, index: usize, items: Vec<T>, now: u64) {
        self.stamp(now);
        let index = index.min(self.items.len());
        let count = items.len();
        let tail = self.items.split_off(index);
        self.items.extend(items);
        self.items.extend(tail);
        if !DATED || count == 0 {
            return;
        }
        // The runs before `index`, the new one, the runs after (one run may split in two).
        let mut runs = VecDeque::with_capacity(self.runs.len() + 2);
        let mut left = index;
        let mut inserted = false;
        for (n, tick) in self.runs.drain(..) {
            if !inserted && left < n {
                if left > 0 {
                    runs.push_back((left, tick));
                }
                runs.push_back((count, now));
                runs.push_back((n - left, tick));
                inserted = true;
            } else {
                runs.push_back((n, tick));
                if !inserted {
                    left -= n;
                }
            }
        }
        if !inserted {
            runs.push_back((count, now));
        }
        self.runs = runs;
    }

    /// Removes every item, returning them in order; gives the memory back.
    pub fn drain(&mut self) -> Vec<T> {
        self.runs = VecDeque::new();
        self.open = false;
        std::mem::take(&mut self.items).into()
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_at_keeps_both_orders() {
        let mut q = ReadyQueue::new();
        for i in [1, 2, 5, 6] {
            q.push(i);
        }
        q.insert_at(2, vec![3, 4], 0);
        q.insert_at(0, vec![0], 0);
        q.insert_at(99, vec![7], 0);
        assert_eq!(q.drain(), vec![0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn fifo() {
        let mut q = ReadyQueue::new();
        for i in 0..5 {
            q.push(i);
        }
        let got: Vec<_> = std::iter::from_fn(|| q.pop().map(|(i, _)| i)).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn items_wait_from_the_stamp_after_their_push() {
        let mut q = ReadyQueue::new();
        q.push("a");
        q.push("b");
        q.stamp(10);
        q.push("c");
        assert_eq!(q.pop(), Some(("a", 10)));
        q.stamp(20);
        q.stamp(30);
        q.insert_at(1, vec!["x"], 40);
        q.push("d");
        q.stamp(50);
        let got: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(got, vec![("b", 10), ("x", 40), ("c", 20), ("d", 50)]);
    }

    #[test]
    fn popping_past_unstamped_items_keeps_the_count_in_range() {
        let mut q = ReadyQueue::new();
        q.push(1);
        q.push(2);
        assert_eq!(q.pop(), Some((1, 0)));
        assert_eq!(q.pop(), Some((2, 0)));
        q.push(3);
        q.stamp(7);
        assert_eq!(q.pop(), Some((3, 7)));
    }

    /// Random pushes, stamps, pops and inserts against a model that dates each item.
    #[test]
    fn runs_match_a_per_item_model() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        let mut q = ReadyQueue::new();
        let mut model: std::collections::VecDeque<(u32, Option<u64>)> = Default::default();
        for step in 0..crate::core::test_steps(20_000) {
            let tick = u64::from(step) + 1;
            match next(10) {
                0..=3 => {
                    q.push(step);
                    model.push_back((step, None));
                }
                4 | 5 => {
                    q.stamp(tick);
                    for entry in model.iter_mut().filter(|e| e.1.is_none()) {
                        entry.1 = Some(tick);
                    }
                }
                6..=8 => {
                    let got = q.pop();
                    let want = model.pop_front().map(|(i, t)| (i, t.unwrap_or(0)));
                    assert_eq!(got, want, "step {step}");
                }
                _ => {
                    let at = next(model.len() as u64 + 2) as usize;
                    let items = vec![step, step + 100_000];
                    q.insert_at(at, items.clone(), tick);
                    for entry in model.iter_mut().filter(|e| e.1.is_none()) {
                        entry.1 = Some(tick);
                    }
                    let at = at.min(model.len());
                    for (k, item) in items.into_iter().enumerate() {
                        model.insert(at + k, (item, Some(tick)));
                    }
                }
            }
            assert_eq!(q.len(), model.len());
        }
    }

    #[test]
    fn iteration_counts_only_what_was_ready() {
        let mut q = ReadyQueue::new();
        q.push(1);
        q.push(2);
        let n = q.begin_iteration();
        let mut ran = vec![];
        for _ in 0..n {
            let (item, _) = q.pop().unwrap_or_default();
            ran.push(item);
            q.push(item * 10);
        }
        assert_eq!(ran, vec![1, 2]);
        assert_eq!(q.len(), 2);
        assert_eq!(q.drain(), vec![10, 20]);
        assert!(q.is_empty());
    }
}
