//! What `ferroloop.watchdog` (`python/ferroloop/_watchdog.py`) calls: one process-wide stall
//! watchdog (`core::watchdog`) at a time, started, waited on and stopped from Python.

use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::core::watchdog::{self, FdReport, Watchdog};

static RUNNING: Mutex<Option<Watchdog>> = Mutex::new(None);

/// Starts the watchdog: stalls of `threshold` seconds or more are written to `fd` (none if
/// negative), and the stalled thread is sent `signal` (none if 0) for its stack.
#[pyfunction]
pub fn _watchdog_start(threshold: f64, fd: i32, signal: i32) -> PyResult<()> {
    if !(threshold.is_finite() && threshold > 0.0) {
        return Err(PyValueError::new_err(format!(
            "threshold must be a positive number of seconds, got {threshold}"
        )));
    }
    let mut slot = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_some() {
        return Err(PyRuntimeError::new_err(
            "a ferroloop watchdog is already running",
        ));
    }
    let dog = Watchdog::start(
        Duration::from_secs_f64(threshold),
        Box::new(FdReport { fd, signal }),
    )
    .map_err(crate::errors::os_error)?;
    *slot = Some(dog);
    Ok(())
}

/// The next stall, `(loop beacon id, since tick, thread id, seconds)`, waiting for it without
/// the GIL; None once the watchdog stops.
#[pyfunction]
pub fn _watchdog_next(py: Python<'_>) -> Option<(u64, u64, u64, f64)> {
    let waiter = RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()?
        .waiter();
    py.detach(|| waiter.next_stall())
        .map(|s| (s.beacon, s.since, s.thread, s.seconds))
}

/// Whether the stall of loop beacon `id` that began at `since` goes on.
#[pyfunction]
pub fn _watchdog_still(id: u64, since: u64) -> bool {
    watchdog::still_busy(id, since)
}

/// Stops the watchdog, if one runs; a thread in `_watchdog_next` gets None.
#[pyfunction]
pub fn _watchdog_stop(py: Python<'_>) {
    let dog = RUNNING.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(mut dog) = dog {
        py.detach(|| dog.stop());
    }
}

/// `os.register_at_fork(before=...)`: no lock of ours is held by another thread at the fork.
#[pyfunction]
pub fn _fork_prepare() {
    watchdog::fork_prepare();
}

/// `os.register_at_fork(after_in_parent=...)`.
#[pyfunction]
pub fn _fork_parent() {
    watchdog::fork_done();
}

/// `os.register_at_fork(after_in_child=...)`: the child has no watchdog thread; a watchdog the
/// parent was running is forgotten (its thread cannot be joined here), so the child may start
/// its own.
#[pyfunction]
pub fn _fork_child() {
    watchdog::fork_done();
    let copied = RUNNING.lock().unwrap_or_else(|e| e.into_inner()).take();
    std::mem::forget(copied);
}

/// Adds `SA_RESTART` to the handler faulthandler installed for `signum`, so the system calls
/// the kernel can restart (reads, writes, accept) are not cut short in the stalled thread.
#[pyfunction]
pub fn _watchdog_restartable(signum: i32) -> PyResult<()> {
    // SAFETY: `action` is a zeroed sigaction, filled by the first call with the handler in place
    // (a null new action only reads it), then installed again with one more flag.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(signum, std::ptr::null(), &mut action) != 0 {
            return Err(crate::errors::os_error(std::io::Error::last_os_error()));
        }
        action.sa_flags |= libc::SA_RESTART;
        if libc::sigaction(signum, &action, std::ptr::null_mut()) != 0 {
            return Err(crate::errors::os_error(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}
