//! The Python-facing loop core, `ferroloop._core.LoopCore`, which `ferroloop.Loop` (Python)
//! extends with what is not on a hot path (`run_until_complete`, executors, networking, the
//! exception handler chain). A file per concern, each depending only on those listed before it:
//!
//! - `args`, `flags`, `shared`, `hooks`: small pieces the others share (a callback's arguments,
//!   a handle's flag byte, what a loop shares with its timers, the Python helpers of cold paths);
//! - `context`: the Context a handle runs in, shared between handles while it is unchanged;
//! - `handle`, `threadsafe`: the handle classes; `freelist` and `new_handle`: how handles are made;
//! - `io`: the registry of readers and writers; `transport_step`: the one interface through which
//!   the loop runs a transport's read or write step;
//! - `tracer`: the recorder of `ferroloop.trace()`, a ring of events; `meter`: the always-on
//!   counters of `loop.stats()`, the slow-callback handler, and the tracer's hook;
//! - `state`: `LoopCore` and its `LoopState`; `handle_run`: running one handle;
//! - `scheduling`, `io_registration`, `stale`, `tasks`, `transports_table`: what the loop does,
//!   as methods of `LoopCore`; `run`: one iteration and `run_forever`;
//! - `watchdog`: the Python entry points of the stall watchdog (`core::watchdog`);
//! - `close_watch`: hearing of `socket.close()` before the fd closes (`crate::owner`);
//! - `fastcall` and `methods`: what Python sees.
//!
//! Threads. A loop, its handles, transports and waiters belong to the thread that runs it; with
//! the GIL that thread is alone whenever it holds a borrow of their state, and on a free-threaded
//! build each `GilCell` and `GilSlot` takes a lock that stands in for the GIL
//! (`cpython::gil`, `cpython::thread_lock`), uncontended on the loop's own thread. Other threads
//! come in only through what asyncio lets them call, each safe without the GIL:
//! `call_soon_threadsafe` (the ready queue under the state's lock, then the poller's eventfd
//! waker; one sender's calls stay in its order), a handle's `cancel()` (its flag word is atomic
//! and its callback slot locked; a `ThreadSafeHandle` also waits for a run under way,
//! `threadsafe`), `stop()` (a flag under the state's lock), `close()` (refused while running),
//! and signals (CPython's wake-up fd, read on the loop's thread). Executor results and
//! `run_coroutine_threadsafe` arrive through `call_soon_threadsafe`. Any other method called from
//! another thread is refused in debug mode with the stock `RuntimeError` (`check_thread`) and
//! otherwise takes the same locks, so it can misbehave as the stock loop would but never corrupt
//! memory. Nothing is shared between loops but immutable tables (`PyOnceLock`s), the stall
//! watchdog's list (a mutex) and the tracer's on/off switch (an atomic).

pub(crate) mod args;
pub(crate) mod close_watch;
mod context;
mod fastcall;
mod flags;
mod freelist;
mod handle;
mod handle_run;
mod hooks;
mod io;
mod io_registration;
mod meter;
mod methods;
mod new_handle;
mod run;
mod scheduling;
mod shared;
mod stale;
mod state;
mod tasks;
mod threadsafe;
mod tracer;
pub(crate) mod transport_step;
mod transports_table;
mod watchdog;

use pyo3::prelude::*;
use pyo3::PyTypeInfo;

pub(crate) use args::CallArgs;
pub(crate) use context::{copy_current, run_in};
pub use handle::{Handle, TimerHandle};
pub(crate) use io::{Ties, Which};
pub use state::LoopCore;

/// Adds the loop's classes to the extension module, with their raw methods and free lists.
pub fn install(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add_class::<LoopCore>()?;
    fastcall::install(&py.get_type::<LoopCore>())?;
    module.add_class::<Handle>()?;
    module.add_class::<TimerHandle>()?;
    module.add_class::<close_watch::IoRefs>()?;
    module.add_class::<tracer::Tracer>()?;
    module.add_function(wrap_pyfunction!(tracer::_trace_session, module)?)?;
    module.add_function(wrap_pyfunction!(context::run_in_context, module)?)?;
    module.add_function(wrap_pyfunction!(watchdog::_watchdog_start, module)?)?;
    module.add_function(wrap_pyfunction!(watchdog::_watchdog_next, module)?)?;
    module.add_function(wrap_pyfunction!(watchdog::_watchdog_still, module)?)?;
    module.add_function(wrap_pyfunction!(watchdog::_watchdog_stop, module)?)?;
    module.add_function(wrap_pyfunction!(watchdog::_watchdog_restartable, module)?)?;
    module.add_function(wrap_pyfunction!(watchdog::_fork_prepare, module)?)?;
    module.add_function(wrap_pyfunction!(watchdog::_fork_parent, module)?)?;
    module.add_function(wrap_pyfunction!(watchdog::_fork_child, module)?)?;
    freelist::install(
        py,
        Handle::type_object_raw(py),
        TimerHandle::type_object_raw(py),
    );
    Ok(())
}
