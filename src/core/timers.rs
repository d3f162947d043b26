//! The timer queue: a binary min-heap ordered by `(deadline, sequence)`.
//!
//! asyncio's rules, which this queue exists to keep:
//! - timers with equal deadlines fire in the order they were scheduled, hence the sequence number
//!   taken at push time;
//! - cancelling is cheap: the loop marks the item cancelled and leaves it in the heap. Cancelled
//!   items at the head are dropped when the loop looks at the head, and when more than half of a
//!   large heap is cancelled the loop compacts it in one pass (`retain`), as the stock loop does, so
//!   memory does not grow with timers that will never fire;
//! - a NaN deadline is ordered before every number (the stock loop fires such a timer at once)
//!   and `f64::total_cmp` keeps the heap's order total whatever deadlines arrive.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

struct Entry<T> {
    deadline: f64,
    seq: u64,
    item: T,
}

impl<T> Entry<T> {
    fn key(&self) -> (f64, u64) {
        let deadline = if self.deadline.is_nan() {
            f64::NEG_INFINITY
        } else {
            self.deadline
        };
        (deadline, self.seq)
    }
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest deadline first.
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, sa) = self.key();
        let (b, sb) = other.key();
        b.total_cmp(&a).then(sb.cmp(&sa))
    }
}

/// Timers ordered by deadline, then by scheduling order.
pub struct TimerQueue<T> {
    heap: BinaryHeap<Entry<T>>,
    next_seq: u64,
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerQueue<T> {
    pub fn new() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Schedules `item` at `deadline` (seconds on the engine's clock).
    pub fn push(&mut self, deadline: f64, item: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry {
            deadline,
            seq,
            item,
        });
    }

    /// The earliest deadline and its item, if any.
    pub fn peek(&self) -> Option<(f64, &T)> {
        self.heap.peek().map(|e| (e.deadline, &e.item))
    }

    /// Removes and returns the earliest item.
    pub fn pop(&mut self) -> Option<T> {
        self.heap.pop().map(|e| e.item)
    }

    /// Removes and returns the earliest item if its deadline is not after `now`. A NaN deadline
    /// counts as due.
    pub fn pop_due(&mut self, now: f64) -> Option<T> {
        match self.heap.peek() {
            Some(e) if e.key().0 <= now => self.pop(),
            _ => None,
        }
    }

    /// Keeps only the items for which `keep` returns true, in one O(n) pass; returns the others,
    /// so the caller decides when they are dropped.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) -> Vec<T> {
        let (kept, removed): (Vec<_>, Vec<_>) = std::mem::take(&mut self.heap)
            .into_vec()
            .into_iter()
            .partition(|e| keep(&e.item));
        self.heap = BinaryHeap::from(kept);
        removed.into_iter().map(|e| e.item).collect()
    }

    /// Removes every item, returning them (in no particular order).
    pub fn drain(&mut self) -> Vec<T> {
        self.heap.drain().map(|e| e.item).collect()
    }

    /// Every item, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.heap.iter().map(|e| &e.item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain_due(q: &mut TimerQueue<u32>, now: f64) -> Vec<u32> {
        std::iter::from_fn(|| q.pop_due(now)).collect()
    }

    #[test]
    fn earliest_first() {
        let mut q = TimerQueue::new();
        q.push(3.0, 3);
        q.push(1.0, 1);
        q.push(2.0, 2);
        assert_eq!(drain_due(&mut q, 10.0), vec![1, 2, 3]);
    }

    #[test]
    fn equal_deadlines_in_scheduling_order() {
        let mut q = TimerQueue::new();
        for i in 0..1000 {
            q.push(5.0, i);
        }
        q.push(1.0, 9999);
        let order = drain_due(&mut q, 5.0);
        assert_eq!(order[0], 9999);
        assert_eq!(&order[1..], (0..1000).collect::<Vec<_>>().as_slice());
    }

    #[test]
    fn never_early() {
        let mut q = TimerQueue::new();
        q.push(1.000_000_1, 1);
        assert_eq!(q.pop_due(1.0), None);
        assert_eq!(q.pop_due(1.000_000_1), Some(1));
    }

    #[test]
    fn nan_is_due_at_once_and_infinity_never() {
        let mut q = TimerQueue::new();
        q.push(f64::INFINITY, 1);
        q.push(f64::NAN, 2);
        q.push(0.5, 3);
        assert_eq!(drain_due(&mut q, 1.0), vec![2, 3]);
        assert_eq!(q.len(), 1);
        assert!(q.peek().map(|(d, _)| d.is_infinite()).unwrap_or(false));
    }

    #[test]
    fn retain_compacts() {
        let mut q = TimerQueue::new();
        for i in 0..100u32 {
            q.push(f64::from(100 - i), i);
        }
        let mut removed = q.retain(|i| i % 2 == 0);
        removed.sort();
        assert_eq!(removed, (0..100).filter(|i| i % 2 == 1).collect::<Vec<_>>());
        assert_eq!(q.len(), 50);
        let order = drain_due(&mut q, 1000.0);
        let mut expected: Vec<u32> = (0..100).filter(|i| i % 2 == 0).collect();
        expected.reverse();
        assert_eq!(order, expected);
    }

    #[test]
    fn drain_empties() {
        let mut q = TimerQueue::new();
        q.push(1.0, 1);
        q.push(2.0, 2);
        let mut all = q.drain();
        all.sort();
        assert_eq!(all, vec![1, 2]);
        assert!(q.is_empty());
    }
}
