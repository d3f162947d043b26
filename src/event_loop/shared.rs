//! State a loop shares with its handles without a reference cycle: the debug flag (a handle
//! cancelled in debug mode keeps its repr) and the count of cancelled timers still in the heap.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[derive(Default)]
pub struct LoopShared {
    debug: AtomicBool,
    cancelled_timers: AtomicUsize,
}

impl LoopShared {
    pub fn debug(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    pub fn set_debug(&self, enabled: bool) {
        self.debug.store(enabled, Ordering::Relaxed);
    }

    pub fn timer_cancelled(&self) {
        self.cancelled_timers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn cancelled_timers(&self) -> usize {
        self.cancelled_timers.load(Ordering::Relaxed)
    }

    /// After compaction or when cancelled heads leave the heap.
    pub fn forget_cancelled(&self, n: usize) {
        let _ = self
            .cancelled_timers
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c.saturating_sub(n))
            });
    }

    pub fn reset_cancelled(&self) {
        self.cancelled_timers.store(0, Ordering::Relaxed);
    }
}
