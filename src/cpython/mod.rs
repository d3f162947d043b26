//! The one boundary to CPython's internals: every read of a private layout lives here, each with
//! a safe fallback that the tests exercise.
//!
//! - `socket`: the fd a socket object holds now, read from `_socket.socket`'s C struct, or
//!   through `fileno()` where that layout is not vouched for; and its `_io_refs` slot.
//! - `context`: whether two `contextvars.Context`s hold the same variables (their `ctx_vars`).
//! - `bytes`: a `bytes` object filled in place, resized and reused (`BytesBuf`).
//! - `gc_alloc`: GC objects allocated without counting towards the next young collection.
//! - `gil`: `GilCell` and `GilSlot`, state whose lock is the GIL (every such assumption goes
//!   through them); `thread_lock` holds the locks that stand in for it on free-threaded builds.
//! - `method_cache`: a protocol's `data_received` found without a lookup per read (3.11 only).
//! - `refcount`: reference counts read as "does anyone else hold this object".
//! - `trampoline`: raw C entry points, and PyO3's internal trampoline API.
//!
//! `FERROLOOP_LAYOUT_READS=0` in the environment turns every layout read off for the process
//! (the fallbacks run instead); the tests use it to run the fallbacks.

pub mod bytes;
pub mod context;
pub mod gc_alloc;
pub mod gil;
pub mod method_cache;
pub mod refcount;
pub mod socket;
mod switch;
#[cfg_attr(not(Py_GIL_DISABLED), allow(dead_code))]
mod thread_lock;
pub mod trampoline;

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Which of the tricks that read CPython's private layouts this process uses, for tests (a
/// trick that turns itself off shows here) and for troubleshooting.
#[pyfunction]
pub fn _tricks(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let tricks = PyDict::new(py);
    tricks.set_item("socket_fd", socket::layout_trusted(py))?;
    tricks.set_item("socket_io_refs", socket::io_refs_readable(py))?;
    tricks.set_item("context_sharing", context::vars_reader(py).is_some())?;
    tricks.set_item(
        "current_context",
        context::vars_reader(py).is_some_and(|r| r.reads_current()),
    )?;
    tricks.set_item("uncounted_handles", gc_alloc::supported(py))?;
    tricks.set_item("method_cache", method_cache::enabled(py))?;
    tricks.set_item("bytes_reuse", bytes::reuse_allowed())?;
    Ok(tricks)
}
