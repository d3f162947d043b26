//! The timer queue: a 4-ary min-heap ordered by `(deadline, sequence)`.
//!
//! asyncio's rules, which this queue exists to keep:
//! - timers with equal deadlines fire in the order they were scheduled, hence the sequence number
//!   taken at push time;
//! - cancelling is cheap: the loop marks the item cancelled and leaves it in the heap. Cancelled
//!   items at the head are dropped when the loop looks at the head, and when more than half of a
//!   large heap is cancelled the loop compacts it in one pass (`retain`), as the stock loop does, so
//!   memory does not grow with timers that will never fire;
//! - a NaN deadline is ordered before every number (the stock loop fires such a timer at once);
//!   it is stored as minus infinity, so the heap's order is total whatever deadlines arrive.
//!
//! Four children per node rather than two: a heap of many timers does not fit in the cache, and
//! popping one walks from the root to a leaf with a cache miss per level. A 4-ary heap has half
//! the levels, and a node's four children sit next to each other in memory.

const ARITY: usize = 4;

struct Entry<T> {
    /// Never NaN (see the module doc).
    deadline: f64,
    seq: u64,
    item: T,
}

impl<T> Entry<T> {
    fn before(&self, other: &Entry<T>) -> bool {
        self.deadline < other.deadline || (self.deadline == other.deadline && self.seq < other.seq)
    }
}

/// Timers ordered by deadline, then by scheduling order.
pub struct TimerQueue<T> {
    heap: Vec<Entry<T>>,
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
            heap: Vec::new(),
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
        let deadline = if deadline.is_nan() {
            f64::NEG_INFINITY
        } else {
            deadline
        };
        self.heap.push(Entry {
            deadline,
            seq,
            item,
        });
        self.sift_up(self.heap.len() - 1);
    }

    /// The earliest deadline and its item, if any.
    pub fn peek(&self) -> Option<(f64, &T)> {
        self.heap.first().map(|e| (e.deadline, &e.item))
    }

    /// Removes and returns the earliest item.
    pub fn pop(&mut self) -> Option<T> {
        let last = self.heap.pop()?;
        if self.heap.is_empty() {
            return Some(last.item);
        }
        let first = std::mem::replace(&mut self.heap[0], last);
        self.sift_down(0);
        Some(first.item)
    }

    /// Removes and returns the earliest item, with its deadline, if that is not after `now`. A
    /// NaN deadline counts as due.
    pub fn pop_due(&mut self, now: f64) -> Option<(f64, T)> {
        match self.heap.first() {
            Some(e) if e.deadline <= now => {
                let deadline = e.deadline;
                self.pop().map(|item| (deadline, item))
            }
            _ => None,
        }
    }

    /// Keeps only the items for which `keep` returns true, in one O(n) pass; returns the others,
    /// so the caller decides when they are dropped.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) -> Vec<T> {
        let (kept, removed): (Vec<_>, Vec<_>) = std::mem::take(&mut self.heap)
            .into_iter()
            .partition(|e| keep(&e.item));
        self.heap = kept;
        if self.heap.len() > 1 {
            for i in (0..=(self.heap.len() - 2) / ARITY).rev() {
                self.sift_down(i);
            }
        }
        removed.into_iter().map(|e| e.item).collect()
    }

    /// Removes every item, returning them (in no particular order).
    pub fn drain(&mut self) -> Vec<T> {
        self.heap.drain(..).map(|e| e.item).collect()
    }

    /// Every item, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.heap.iter().map(|e| &e.item)
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / ARITY;
            if !self.heap[i].before(&self.heap[parent]) {
                break;
            }
            self.heap.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let len = self.heap.len();
        loop {
            let first_child = i * ARITY + 1;
            if first_child >= len {
                break;
            }
            let mut best = first_child;
            for child in first_child + 1..(first_child + ARITY).min(len) {
                if self.heap[child].before(&self.heap[best]) {
                    best = child;
                }
            }
            if !self.heap[best].before(&self.heap[i]) {
                break;
            }
            self.heap.swap(i, best);
            i = best;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain_due(q: &mut TimerQueue<u32>, now: f64) -> Vec<u32> {
        std::iter::from_fn(|| q.pop_due(now).map(|(_, item)| item)).collect()
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
        let n = crate::core::test_steps(1000);
        for i in 0..n {
            q.push(5.0, i);
        }
        q.push(1.0, 9999);
        let order = drain_due(&mut q, 5.0);
        assert_eq!(order[0], 9999);
        assert_eq!(&order[1..], (0..n).collect::<Vec<_>>().as_slice());
    }

    #[test]
    fn never_early() {
        let mut q = TimerQueue::new();
        q.push(1.000_000_1, 1);
        assert_eq!(q.pop_due(1.0), None);
        assert_eq!(q.pop_due(1.000_000_1), Some((1.000_000_1, 1)));
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
    fn matches_a_sort_under_random_pushes_pops_and_retains() {
        // A small deterministic generator, so the test needs no dependency.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut q = TimerQueue::new();
        let mut model: Vec<(f64, u64)> = Vec::new();
        let mut seq = 0u64;
        for round in 0..u64::from(crate::core::test_steps(20_000)) {
            match next() % 7 {
                0..=3 => {
                    // Few distinct deadlines, so ties are common.
                    let deadline = (next() % 50) as f64 / 4.0;
                    q.push(deadline, seq);
                    model.push((deadline, seq));
                    seq += 1;
                }
                4 | 5 => {
                    model.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                    let expected = if model.is_empty() {
                        None
                    } else {
                        Some(model.remove(0).1)
                    };
                    assert_eq!(q.pop(), expected, "round {round}");
                }
                _ => {
                    let modulus = next() % 5 + 2;
                    let mut removed = q.retain(|s| s % modulus != 0);
                    removed.sort();
                    let mut expected: Vec<u64> = model
                        .iter()
                        .map(|e| e.1)
                        .filter(|s| s % modulus == 0)
                        .collect();
                    expected.sort();
                    assert_eq!(removed, expected);
                    model.retain(|e| e.1 % modulus != 0);
                }
            }
            assert_eq!(q.len(), model.len());
        }
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
