//! The trace's ring buffer: a fixed number of fixed-size events, the oldest overwritten once it
//! is full, so a trace left on for hours holds at most `capacity` events (32 bytes each) and
//! always its most recent ones.
//!
//! Events are plain numbers (what happened, when, to which interned subject); turning them into
//! names is the exporter's work, after the trace ends.

/// What an event records; the meaning of `a`, `t0`, `t1` and `b` for each kind is on its variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A callback ran from `t0` to `t1`; `a` its subject, `b` 1 for a due timer, else 0.
    Callback = 1,
    /// A wait for I/O from `t0` to `t1` that returned `b` events.
    Poll = 2,
    /// At `t0`, after its step, task `a` waits on label `b` (see the tracer's label ids).
    TaskWait = 3,
    /// An iteration began at `t0` with `b` callbacks ready.
    Ready = 4,
    /// At `t0`, transport `a` read (`t1` = 0) or wrote (`t1` = 1) `b` bytes.
    Transfer = 5,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Event {
    pub kind: Kind,
    pub a: u32,
    pub t0: u64,
    pub t1: u64,
    pub b: u64,
}

pub struct TraceRing {
    events: Vec<Event>,
    capacity: usize,
    /// Where the next event goes once the ring is full.
    next: usize,
    /// Events overwritten.
    dropped: u64,
    /// Events ever pushed.
    pushed: u64,
}

impl TraceRing {
    pub fn new(capacity: usize) -> TraceRing {
        let capacity = capacity.max(1);
        TraceRing {
            events: Vec::with_capacity(capacity.min(1 << 16)),
            capacity,
            next: 0,
            dropped: 0,
            pushed: 0,
        }
    }

    #[inline]
    pub fn push(&mut self, event: Event) {
        self.pushed += 1;
        if self.events.len() < self.capacity {
            self.events.push(event);
        } else {
            self.events[self.next] = event;
            self.next = (self.next + 1) % self.capacity;
            self.dropped += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Events ever pushed: the position of the next one.
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// The position of the oldest event kept: what was pushed before it is gone.
    pub fn oldest_kept(&self) -> u64 {
        self.pushed - self.events.len() as u64
    }

    /// The events kept, oldest first; the ring is left empty.
    pub fn drain(&mut self) -> Vec<Event> {
        let mut events = std::mem::take(&mut self.events);
        events.rotate_left(self.next);
        self.next = 0;
        events
    }

    /// The bytes of memory the ring may hold at most.
    pub fn bound_bytes(&self) -> usize {
        self.capacity * std::mem::size_of::<Event>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: u64) -> Event {
        Event {
            kind: Kind::Callback,
            a: 0,
            t0: t,
            t1: t + 1,
            b: 0,
        }
    }

    #[test]
    fn keeps_all_until_full() {
        let mut ring = TraceRing::new(4);
        for t in 0..3 {
            ring.push(ev(t));
        }
        assert_eq!(ring.dropped(), 0);
        let got: Vec<u64> = ring.drain().iter().map(|e| e.t0).collect();
        assert_eq!(got, vec![0, 1, 2]);
        assert!(ring.is_empty());
    }

    #[test]
    fn keeps_the_newest_in_order_once_full() {
        for extra in 0..9 {
            let mut ring = TraceRing::new(4);
            let total = 4 + extra;
            for t in 0..total {
                ring.push(ev(t));
            }
            assert_eq!(ring.len(), 4);
            assert_eq!(ring.dropped(), extra);
            assert_eq!(ring.pushed(), total);
            assert_eq!(ring.oldest_kept(), total - 4);
            let got: Vec<u64> = ring.drain().iter().map(|e| e.t0).collect();
            assert_eq!(got, (total - 4..total).collect::<Vec<_>>());
        }
    }

    #[test]
    fn event_is_32_bytes_and_bound_is_capacity_times_that() {
        assert_eq!(std::mem::size_of::<Event>(), 32);
        assert_eq!(TraceRing::new(1000).bound_bytes(), 32_000);
    }
}
