//! `ThreadSafeHandle`: what `call_soon_threadsafe` returns, a handle another thread may cancel.
//!
//! A handle made by `call_soon_threadsafe` is meant to be cancelled from other threads, and the
//! stock loop (3.14's `events._ThreadSafeHandle`) guards it with a re-entrant lock: running it
//! holds the lock from the check that it is not cancelled to the callback's return, and
//! `cancel()`/`cancelled()` take it too. So a `cancel()` from another thread either comes first
//! and the callback never runs, or waits until the callback has returned; `cancelled()` never
//! answers while the callback runs; and the callback may cancel its own handle (same thread, the
//! lock is re-entrant). A thread waiting for the lock releases the GIL, so the callback (or
//! whatever it waits for) can go on.
//!
//! ferroloop gives every Python version this handle (the race it closes exists everywhere); from
//! 3.14 on it also passes for `asyncio.events._ThreadSafeHandle` in `isinstance` checks.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use pyo3::prelude::*;

use super::handle::Handle;
use crate::core::sys::current_thread_id;

/// A lock one thread may take several times, waited for with the GIL released.
#[derive(Default)]
struct ReentrantLock {
    /// The owning thread's id and how many times it holds the lock (0: free).
    state: Mutex<(u64, u32)>,
    freed: Condvar,
}

impl ReentrantLock {
    fn state(&self) -> MutexGuard<'_, (u64, u32)> {
        // A panic while the mutex was held cannot leave the pair inconsistent: keep going.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn acquire(&self, py: Python<'_>) {
        let me = current_thread_id();
        loop {
            {
                let mut state = self.state();
                if state.1 == 0 || state.0 == me {
                    *state = (me, state.1 + 1);
                    return;
                }
            }
            py.detach(|| {
                let mut state = self.state();
                while state.1 != 0 && state.0 != me {
                    state = self
                        .freed
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            });
        }
    }

    fn release(&self) {
        let mut state = self.state();
        state.1 = state.1.saturating_sub(1);
        if state.1 == 0 {
            self.freed.notify_all();
        }
    }

    fn hold<'a>(&'a self, py: Python<'_>) -> Held<'a> {
        self.acquire(py);
        Held(self)
    }
}

/// The lock, held until dropped.
pub struct Held<'a>(&'a ReentrantLock);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Named as the stock loop names what `call_soon_threadsafe` returns (reprs show the name): a
/// plain `Handle` before 3.14.
#[cfg_attr(Py_3_14, pyclass(module = "ferroloop", name = "_ThreadSafeHandle", frozen, extends = Handle))]
#[cfg_attr(not(Py_3_14), pyclass(module = "ferroloop", name = "Handle", frozen, extends = Handle))]
#[derive(Default)]
pub struct ThreadSafeHandle {
    lock: ReentrantLock,
}

impl ThreadSafeHandle {
    /// Holds `handle`'s lock if it is a thread-safe handle (for its run).
    pub fn hold_for_run<'a>(handle: &'a Bound<'_, Handle>) -> Option<Held<'a>> {
        let this = handle.cast::<ThreadSafeHandle>().ok()?;
        Some(this.get().lock.hold(handle.py()))
    }
}

#[pymethods]
impl ThreadSafeHandle {
    fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        let _held = slf.get().lock.hold(slf.py());
        Handle::do_cancel(slf.as_super())
    }

    fn cancelled(slf: &Bound<'_, Self>) -> bool {
        let _held = slf.get().lock.hold(slf.py());
        slf.as_super().get().is_cancelled()
    }

    /// `asyncio.events._ThreadSafeHandle`, so that `isinstance` takes this handle for one.
    #[cfg(Py_3_14)]
    #[getter]
    fn __class__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        py.import("asyncio.events")?.getattr("_ThreadSafeHandle")
    }
}
