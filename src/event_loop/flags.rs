//! A handle's small state, in one byte: read by the handle, its Context slot and the loop.

use std::sync::atomic::{AtomicU8, Ordering};

/// A handle's small state, in one byte so that a handle stays small.
pub struct Flags(AtomicU8);

impl Flags {
    pub const CANCELLED: u8 = 1;
    /// A timer sitting in the loop's heap (or waiting to join it).
    pub const SCHEDULED: u8 = 2;
    /// The handle's Context is its own, not a shared snapshot (see `context.rs`).
    pub const CONTEXT_OWN: u8 = 4;
    /// The stored arguments are a tuple of several (see `Callback::args`).
    pub const ARGS_MANY: u8 = 8;
    /// The callback is a Rust transport, whose read (or write) step runs straight from
    /// `Handle::run`, without a bound method and a call through Python's calling convention.
    /// It shows as the bound `_read_ready` (`_write_ready`) wherever the callback is seen.
    pub const NATIVE_READ: u8 = 16;
    pub const NATIVE_WRITE: u8 = 32;
    /// Known to be tracked by the garbage collector, which untracks a handle only when it is
    /// freed: `track_if_held` needs no call into CPython to ask again (a reader's handle leaves
    /// the queue after every event, and that call read the GC header, a line nothing else uses).
    pub const TRACKED: u8 = 64;
    /// Made by `call_soon_threadsafe`: a `ThreadSafeHandle`, run under its lock.
    pub const THREADSAFE: u8 = 128;

    pub fn new(bits: u8) -> Flags {
        Flags(AtomicU8::new(bits))
    }

    pub fn has(&self, bit: u8) -> bool {
        self.0.load(Ordering::Relaxed) & bit != 0
    }

    pub fn set(&self, bit: u8) {
        self.0.fetch_or(bit, Ordering::Relaxed);
    }

    pub fn clear(&self, bit: u8) {
        self.0.fetch_and(!bit, Ordering::Relaxed);
    }

    /// Sets `bit`; whether it was set already.
    pub fn test_and_set(&self, bit: u8) -> bool {
        self.0.fetch_or(bit, Ordering::Relaxed) & bit != 0
    }
}
