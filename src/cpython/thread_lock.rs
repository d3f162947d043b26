//! The locks that stand in for the GIL on a free-threaded build (`Py_GIL_DISABLED`), where a
//! `Python<'_>` token proves only that the thread is attached, not that it is alone.
//!
//! - `OwnerLock` guards a `GilCell`: the state of one loop, transport or waiter. Its owner is
//!   nearly always the loop's own thread, so taking it is one uncontended compare-and-swap. It is
//!   re-entrant for its owner, because a `GilCell` inside it turns a nested conflicting borrow
//!   into the same error as with the GIL, never a deadlock; another thread (the rare cross-thread
//!   entry point: `call_soon_threadsafe`, `stop`, `close`, a wrong-thread call) waits for it.
//!   That thread waits detached from the interpreter: the holder may run C API that waits for a
//!   stop-the-world pause (a contended per-object lock detaches), and a waiter still attached
//!   would keep that pause, and so the holder, from ever finishing.
//! - `SpinLock` guards a `GilSlot`: a few words (a handle's callback or Context, the hot
//!   counters) touched by code that runs no Python code and calls no C API while it holds them,
//!   so it is never held across a pause and a waiter spins for a few instructions at most.
//!
//! Both `try_` forms serve the collector's traverse, which may run while the world is stopped
//! (a holder paused at a safe point would never let go) or, through `gc.get_referents`, while it
//! runs: they never wait, and the traverse then reports fewer references, which only keeps
//! objects alive longer.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pyo3::Python;

/// The calling thread's pointer, which is also what CPython's `_Py_ThreadId` returns and stores
/// in the `ob_tid` of the objects a thread owns: one load on x86-64 Linux, `None` elsewhere.
#[inline(always)]
pub fn thread_pointer() -> Option<usize> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        let tp: usize;
        // SAFETY: reads the thread control block's address, which its own first word holds
        // (the x86-64 TLS ABI, `%fs:0`); no memory is written.
        unsafe { std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly)) };
        Some(tp)
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    None
}

/// A number for the calling thread, never 0, unique among live threads: its thread pointer
/// where that is one load (a thread-local of this shared library costs a call to
/// `__tls_get_addr`), else the address of one of its thread-locals.
#[inline(always)]
fn thread_key() -> usize {
    thread_pointer().unwrap_or_else(|| {
        thread_local! {
            static KEY: u8 = const { 0 };
        }
        KEY.with(|key| key as *const u8 as usize)
    })
}

/// A lock its owner may take again, waited for with the thread detached (see the module doc).
pub struct OwnerLock {
    /// The owning thread's key; 0 while free.
    owner: AtomicUsize,
    /// How many times the owner holds it; touched only by the owner.
    depth: UnsafeCell<u32>,
}

// SAFETY: `owner` is atomic; `depth` is read and written only by the thread whose key `owner`
// holds, and handed over with the Acquire/Release pair on `owner`.
unsafe impl Sync for OwnerLock {}

impl OwnerLock {
    pub const fn new() -> OwnerLock {
        OwnerLock {
            owner: AtomicUsize::new(0),
            depth: UnsafeCell::new(0),
        }
    }

    /// Takes the lock without waiting, if it is free or already ours.
    #[inline(always)]
    fn try_take(&self, me: usize) -> bool {
        if self.owner.load(Ordering::Relaxed) == me {
            // SAFETY: only this thread stores its own key, so it owns the lock and `depth`.
            unsafe { *self.depth.get() += 1 };
            return true;
        }
        if self
            .owner
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            // SAFETY: the lock was just taken by this thread.
            unsafe { *self.depth.get() = 1 };
            return true;
        }
        false
    }

    /// Takes the lock, waiting detached while another thread holds it.
    #[inline(always)]
    pub fn acquire(&self, py: Python<'_>) {
        let me = thread_key();
        if !self.try_take(me) {
            self.acquire_contended(py, me);
        }
    }

    #[cold]
    fn acquire_contended(&self, py: Python<'_>, me: usize) {
        while !self.try_take(me) {
            for _ in 0..100 {
                std::hint::spin_loop();
                if self.owner.load(Ordering::Relaxed) == 0 {
                    break;
                }
            }
            if self.owner.load(Ordering::Relaxed) != 0 {
                py.detach(|| {
                    while self.owner.load(Ordering::Relaxed) != 0 {
                        std::thread::yield_now();
                    }
                });
            }
        }
    }

    /// Takes the lock if that needs no wait (for the collector's traverse).
    pub fn try_acquire(&self) -> bool {
        self.try_take(thread_key())
    }

    /// Gives back one hold; the last one frees the lock.
    ///
    /// # Safety
    /// The calling thread holds the lock.
    #[inline(always)]
    pub unsafe fn release(&self) {
        // SAFETY: the caller owns the lock, and so `depth`.
        let depth = unsafe { &mut *self.depth.get() };
        *depth -= 1;
        if *depth == 0 {
            self.owner.store(0, Ordering::Release);
        }
    }
}

/// A spin lock for sections that run no Python code (see the module doc).
pub struct SpinLock(AtomicBool);

impl SpinLock {
    pub const fn new() -> SpinLock {
        SpinLock(AtomicBool::new(false))
    }

    #[inline(always)]
    pub fn acquire(&self) -> SpinHeld<'_> {
        while self
            .0
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.0.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        }
        SpinHeld(self)
    }

    /// Takes the lock if it is free (for the collector's traverse).
    pub fn try_acquire(&self) -> Option<SpinHeld<'_>> {
        self.0
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| SpinHeld(self))
    }
}

/// A held `SpinLock`, released when dropped (also by a panic's unwinding).
pub struct SpinHeld<'a>(&'a SpinLock);

impl Drop for SpinHeld<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.0 .0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_takes_it_again_and_the_last_release_frees_it() {
        let lock = OwnerLock::new();
        let me = thread_key();
        assert!(lock.try_take(me));
        assert!(lock.try_take(me));
        // SAFETY: held twice by this thread.
        unsafe { lock.release() };
        assert_eq!(lock.owner.load(Ordering::Relaxed), me);
        // SAFETY: held once by this thread.
        unsafe { lock.release() };
        assert_eq!(lock.owner.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn another_thread_does_not_get_a_held_lock() {
        let lock = OwnerLock::new();
        assert!(lock.try_acquire());
        std::thread::scope(|s| {
            s.spawn(|| assert!(!lock.try_acquire()));
        });
        // SAFETY: held once by this thread.
        unsafe { lock.release() };
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(lock.try_acquire());
                // SAFETY: just taken by this thread.
                unsafe { lock.release() };
            });
        });
    }

    #[test]
    fn a_spin_lock_excludes_until_dropped() {
        let lock = SpinLock::new();
        let held = lock.acquire();
        assert!(lock.try_acquire().is_none());
        drop(held);
        assert!(lock.try_acquire().is_some());
    }
}
