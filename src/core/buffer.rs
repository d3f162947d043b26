//! A stream transport's write buffer: the bytes `write()` could not send at once, in order.
//!
//! One contiguous `Vec` with a read offset, so the whole backlog goes to the kernel in one
//! `send` and consuming the front is an index move. The front is compacted away only when it is
//! at least half the vector (amortised O(1) per byte). Flow control keeps the backlog near the
//! high-water mark, so a large spare capacity is given back once the buffer empties.

/// Capacity kept after the buffer empties; anything above is released.
const KEEP_CAPACITY: usize = 256 * 1024;

#[derive(Default)]
pub struct WriteBuffer {
    bytes: Vec<u8>,
    head: usize,
}

impl WriteBuffer {
    /// Bytes waiting to be sent.
    pub fn len(&self) -> usize {
        self.bytes.len() - self.head
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The waiting bytes, oldest first.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[self.head..]
    }

    /// Appends `data` after what is waiting.
    pub fn push(&mut self, data: &[u8]) {
        if self.head > 0 && self.head >= self.bytes.len() / 2 {
            self.bytes.drain(..self.head);
            self.head = 0;
        }
        self.bytes.extend_from_slice(data);
    }

    /// Drops the first `n` waiting bytes (those the kernel took).
    pub fn consume(&mut self, n: usize) {
        self.head = self.head.saturating_add(n).min(self.bytes.len());
        if self.head == self.bytes.len() {
            self.clear();
        }
    }

    /// Drops everything waiting.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.head = 0;
        if self.bytes.capacity() > KEEP_CAPACITY {
            self.bytes.shrink_to(KEEP_CAPACITY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_across_partial_consumes() {
        let mut buf = WriteBuffer::default();
        let mut expected = Vec::new();
        let mut sent = Vec::new();
        for round in 0..crate::core::test_steps(1000) {
            let chunk: Vec<u8> = (0..(round % 97)).map(|i| (i + round) as u8).collect();
            buf.push(&chunk);
            expected.extend_from_slice(&chunk);
            let take = (round as usize * 7) % (buf.len() + 1);
            sent.extend_from_slice(&buf.as_slice()[..take]);
            buf.consume(take);
            assert_eq!(buf.len(), expected.len() - sent.len());
        }
        sent.extend_from_slice(buf.as_slice());
        assert_eq!(sent, expected);
    }

    #[test]
    fn emptied_buffer_gives_back_large_capacity() {
        let mut buf = WriteBuffer::default();
        buf.push(&vec![1u8; 4 * KEEP_CAPACITY]);
        buf.consume(KEEP_CAPACITY);
        assert_eq!(buf.len(), 3 * KEEP_CAPACITY);
        buf.consume(usize::MAX);
        assert!(buf.is_empty());
        assert!(buf.bytes.capacity() <= KEEP_CAPACITY);
    }
}
