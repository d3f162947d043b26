//! The trace's ring buffer: a fixed number of fixed-size events, the oldest overwritten once it
//! is full, so a trace left on for hours holds at most `capacity` events (16 bytes each) and
//! always its most recent ones.
//!
//! Events are plain numbers (what happened, when, to which interned subject); turning them into
//! names is the exporter's work, after the trace ends. The tracer pushes an `Event` with room
//! for every kind's fields; the ring stores it in 16 bytes (`Packed`): the start tick relative
//! to the ring's origin in 56 bits beside the kind, a 32-bit subject and a 32-bit value. A
//! duration of 2^32 ticks or more (a second or so) takes a second slot. Half the size is half the
//! memory to fill: the first fill's page faults are a good part of what tracing costs.
//!
//! The ring's memory is one allocation of its full size, made up front: the kernel maps pages
//! only as they are first written, so a short trace costs little, and filling it never copies
//! it, as a growing vector would. (Transparent huge pages were tried for the first fill's page
//! faults: where the kernel compacts memory for them on demand, as here, a fresh process paid
//! more for them than it saved.)

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::ptr::NonNull;

/// What an event records; the meaning of `a`, `t0`, `t1` and `b` for each kind is on its variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The full duration of the slot before, in `t0` (stored only).
    Long = 0,
    /// A callback ran from `t0` to `t1`; `a` its subject, `b` 1 for a due timer, else 0.
    Callback = 1,
    /// A wait for I/O from `t0` to `t1` that returned `b` events.
    Poll = 2,
    /// At `t0`, after its step, task `a` waits on label `b` (see the tracer's label ids: a kind
    /// in the top byte, an id below 2^29).
    TaskWait = 3,
    /// An iteration began at `t0` with `b` callbacks ready (a different number than before).
    Ready = 4,
    /// At `t0`, transport `a` read (`t1` = 0) or wrote (`t1` = 1) `b` bytes.
    Transfer = 5,
}

impl Kind {
    fn from_u8(n: u8) -> Kind {
        match n {
            1 => Kind::Callback,
            2 => Kind::Poll,
            3 => Kind::TaskWait,
            4 => Kind::Ready,
            5 => Kind::Transfer,
            _ => Kind::Long,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: Kind,
    pub a: u32,
    pub t0: u64,
    pub t1: u64,
    pub b: u64,
}

/// An event as stored: `stamp` is the tick relative to the origin, shifted left 8, with the kind
/// in the low 4 bits and a flag in bit 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
struct Packed {
    stamp: u64,
    a: u32,
    x: u32,
}

const FLAG: u64 = 1 << 4;
/// Bits of an id kept in a packed wait label; its kind takes the top 3.
const LABEL_ID_BITS: u32 = 29;

/// `capacity` events' worth of memory, written before it is read.
struct Storage {
    ptr: NonNull<Packed>,
    layout: Layout,
}

// SAFETY: `Storage` owns its allocation outright; events are plain data.
unsafe impl Send for Storage {}

impl Storage {
    fn new(capacity: usize) -> Storage {
        let layout = Layout::array::<Packed>(capacity).expect("a trace ring's size overflows");
        // SAFETY: `layout` has a non-zero size (capacity is at least 1).
        let raw = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(raw.cast::<Packed>()) else {
            handle_alloc_error(layout)
        };
        Storage { ptr, layout }
    }

    #[inline(always)]
    fn write(&mut self, index: usize, event: Packed) {
        // SAFETY: callers pass `index` < capacity, inside the allocation.
        unsafe { self.ptr.as_ptr().add(index).write(event) }
    }

    /// Event `index`, which must have been written.
    fn read(&self, index: usize) -> Packed {
        // SAFETY: callers pass an index below the ring's length, all written by `write`.
        unsafe { self.ptr.as_ptr().add(index).read() }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated with `layout` by `alloc` and is freed once.
        unsafe { dealloc(self.ptr.as_ptr().cast(), self.layout) }
    }
}

pub struct TraceRing {
    events: Storage,
    /// Events written and not drained: at most `capacity`.
    len: usize,
    capacity: usize,
    /// Where the next event goes once the ring is full.
    next: usize,
    /// Events overwritten.
    dropped: u64,
    /// Events ever pushed.
    pushed: u64,
    /// The tick stored times count from.
    origin: u64,
}

impl TraceRing {
    /// A ring of `capacity` slots whose times count from tick `origin` (earlier ones as 0).
    pub fn new(capacity: usize, origin: u64) -> TraceRing {
        let capacity = capacity.max(1);
        TraceRing {
            events: Storage::new(capacity),
            len: 0,
            capacity,
            next: 0,
            dropped: 0,
            pushed: 0,
            origin,
        }
    }

    #[inline]
    pub fn push(&mut self, event: Event) {
        let rel = event.t0.saturating_sub(self.origin) << 8;
        let (flag, a, x, long) = match event.kind {
            Kind::Callback | Kind::Poll => {
                let took = event.t1.saturating_sub(event.t0);
                let a = if event.kind == Kind::Poll {
                    event.b as u32
                } else {
                    event.a
                };
                let flag = if event.kind == Kind::Callback && event.b != 0 {
                    FLAG
                } else {
                    0
                };
                (
                    flag,
                    a,
                    took.min(u32::MAX as u64) as u32,
                    took >= u32::MAX as u64,
                )
            }
            Kind::TaskWait => {
                let id = (event.b as u32) & ((1 << LABEL_ID_BITS) - 1);
                let x = ((event.b >> 56) as u32) << LABEL_ID_BITS | id;
                (0, event.a, x, false)
            }
            Kind::Transfer => {
                let flag = if event.t1 != 0 { FLAG } else { 0 };
                (flag, event.a, event.b.min(u32::MAX as u64) as u32, false)
            }
            Kind::Ready | Kind::Long => (0, event.a, event.b.min(u32::MAX as u64) as u32, false),
        };
        self.store(Packed {
            stamp: rel | flag | event.kind as u64,
            a,
            x,
        });
        if long {
            let took = event.t1.saturating_sub(event.t0);
            self.store(Packed {
                stamp: took << 8 | Kind::Long as u64,
                a: 0,
                x: 0,
            });
        }
    }

    #[inline]
    fn store(&mut self, event: Packed) {
        self.pushed += 1;
        if self.len < self.capacity {
            self.events.write(self.len, event);
            self.len += 1;
        } else {
            self.events.write(self.next, event);
            self.next += 1;
            if self.next == self.capacity {
                self.next = 0;
            }
            self.dropped += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
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
        self.pushed - self.len as u64
    }

    /// The events kept, oldest first, with times relative to the origin; the ring is left
    /// empty. A long duration's second slot whose first was overwritten is left out.
    pub fn drain(&mut self) -> Vec<Event> {
        let slots: Vec<Packed> = (0..self.len)
            .map(|i| self.events.read((self.next + i) % self.len))
            .collect();
        self.len = 0;
        self.next = 0;
        let mut events: Vec<Event> = Vec::with_capacity(slots.len());
        for (i, p) in slots.iter().enumerate() {
            let kind = Kind::from_u8((p.stamp & 0xf) as u8);
            let t0 = p.stamp >> 8;
            let flag = p.stamp & FLAG != 0;
            let x = u64::from(p.x);
            let event = match kind {
                Kind::Long => {
                    if i > 0 {
                        if let Some(last) = events.last_mut() {
                            last.t1 = last.t0 + t0;
                        }
                    }
                    continue;
                }
                Kind::Callback => Event {
                    kind,
                    a: p.a,
                    t0,
                    t1: t0 + x,
                    b: flag as u64,
                },
                Kind::Poll => Event {
                    kind,
                    a: 0,
                    t0,
                    t1: t0 + x,
                    b: u64::from(p.a),
                },
                Kind::TaskWait => Event {
                    kind,
                    a: p.a,
                    t0,
                    t1: 0,
                    b: (x >> LABEL_ID_BITS) << 56 | (x & ((1 << LABEL_ID_BITS) - 1)),
                },
                Kind::Transfer => Event {
                    kind,
                    a: p.a,
                    t0,
                    t1: flag as u64,
                    b: x,
                },
                Kind::Ready => Event {
                    kind,
                    a: p.a,
                    t0,
                    t1: 0,
                    b: x,
                },
            };
            events.push(event);
        }
        events
    }

    /// The bytes of memory the ring may hold at most.
    pub fn bound_bytes(&self) -> usize {
        self.capacity * std::mem::size_of::<Packed>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: u64) -> Event {
        Event {
            kind: Kind::Callback,
            a: 7,
            t0: t,
            t1: t + 1,
            b: 0,
        }
    }

    #[test]
    fn keeps_all_until_full() {
        let mut ring = TraceRing::new(4, 0);
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
            let mut ring = TraceRing::new(4, 0);
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
    fn a_large_ring_keeps_its_events() {
        let capacity = crate::core::test_steps((4 << 20) / 32) as usize;
        let mut ring = TraceRing::new(capacity, 0);
        for t in 0..(capacity as u64 + 10) {
            ring.push(ev(t));
        }
        let got = ring.drain();
        assert_eq!(got.len(), capacity);
        assert_eq!(got[0].t0, 10);
        assert_eq!(got[capacity - 1].t0, capacity as u64 + 9);
    }

    #[test]
    fn a_slot_is_16_bytes_and_bound_is_capacity_times_that() {
        assert_eq!(std::mem::size_of::<Packed>(), 16);
        assert_eq!(TraceRing::new(1000, 0).bound_bytes(), 16_000);
    }

    #[test]
    fn every_kind_comes_back_as_pushed() {
        let events = [
            Event {
                kind: Kind::Callback,
                a: 3,
                t0: 110,
                t1: 150,
                b: 1,
            },
            Event {
                kind: Kind::Callback,
                a: u32::MAX,
                t0: 200,
                t1: 200 + (5 << 32),
                b: 0,
            },
            Event {
                kind: Kind::Poll,
                a: 0,
                t0: 300,
                t1: 900,
                b: 12,
            },
            Event {
                kind: Kind::TaskWait,
                a: 9,
                t0: 901,
                t1: 0,
                b: (4 << 56) | 77,
            },
            Event {
                kind: Kind::Ready,
                a: 0,
                t0: 902,
                t1: 0,
                b: 1_000_000,
            },
            Event {
                kind: Kind::Transfer,
                a: 5,
                t0: 903,
                t1: 1,
                b: 65536,
            },
            Event {
                kind: Kind::Transfer,
                a: 6,
                t0: 904,
                t1: 0,
                b: 3,
            },
        ];
        let mut ring = TraceRing::new(100, 100);
        for e in events {
            ring.push(e);
        }
        let back = ring.drain();
        let moved: Vec<Event> = events
            .iter()
            .map(|e| Event {
                t0: e.t0 - 100,
                t1: if matches!(e.kind, Kind::Callback | Kind::Poll) {
                    e.t1 - 100
                } else {
                    e.t1
                },
                ..*e
            })
            .collect();
        assert_eq!(back, moved);
    }

    #[test]
    fn a_long_durations_second_slot_alone_is_left_out() {
        let mut ring = TraceRing::new(2, 0);
        ring.push(Event {
            kind: Kind::Callback,
            a: 1,
            t0: 0,
            t1: 5 << 32,
            b: 0,
        });
        ring.push(ev(10));
        let back = ring.drain();
        assert_eq!(back, vec![ev(10)]);
    }
}
