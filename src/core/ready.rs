//! The ready queue: callbacks due to run, first in, first out.
//!
//! asyncio runs, in one iteration, only the callbacks that were ready when the iteration began;
//! anything they schedule waits for the next iteration, after the next I/O poll. `begin_iteration`
//! returns that count so the loop runs exactly that many.

use std::collections::VecDeque;

pub struct ReadyQueue<T> {
    items: VecDeque<T>,
}

impl<T> Default for ReadyQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> ReadyQueue<T> {
    pub fn new() -> Self {
        ReadyQueue {
            items: VecDeque::new(),
        }
    }

    pub fn push(&mut self, item: T) {
        self.items.push_back(item);
    }

    pub fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
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
    /// leaves the callbacks it had not reached.
    pub fn insert_at(&mut self, index: usize, items: Vec<T>) {
        let tail = self.items.split_off(index.min(self.items.len()));
        self.items.extend(items);
        self.items.extend(tail);
    }

    /// Removes every item, returning them in order; gives the memory back.
    pub fn drain(&mut self) -> Vec<T> {
        let items = std::mem::take(&mut self.items);
        items.into()
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
        q.insert_at(2, vec![3, 4]);
        q.insert_at(0, vec![0]);
        q.insert_at(99, vec![7]);
        assert_eq!(q.drain(), vec![0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn fifo() {
        let mut q = ReadyQueue::new();
        for i in 0..5 {
            q.push(i);
        }
        let got: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn iteration_counts_only_what_was_ready() {
        let mut q = ReadyQueue::new();
        q.push(1);
        q.push(2);
        let n = q.begin_iteration();
        let mut ran = vec![];
        for _ in 0..n {
            let item = q.pop().unwrap_or_default();
            ran.push(item);
            q.push(item * 10);
        }
        assert_eq!(ran, vec![1, 2]);
        assert_eq!(q.len(), 2);
        assert_eq!(q.drain(), vec![10, 20]);
        assert!(q.is_empty());
    }
}
