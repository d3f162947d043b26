//! Running a handle: its callback called in its Context, straight through the C API, or, for a
//! Rust transport's read or write step, that step (`transport_step.rs`); a thread-safe handle
//! under its lock. An exception other than `KeyboardInterrupt`/`SystemExit` goes to the loop's
//! `call_exception_handler` with the stock context keys; those two propagate out of `run_forever`.

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::flags::Flags;
use super::handle::Handle;
use super::hooks;
use super::state::LoopCore;
use super::threadsafe::ThreadSafeHandle;
use super::transport_step;
use crate::cpython::refcount;

impl Handle {
    /// Runs the callback in its context. `Ok` also when the callback raised and the error went
    /// to the exception handler; `Err` for `KeyboardInterrupt`, `SystemExit`, or an error raised
    /// by the exception handler itself.
    #[inline(always)]
    pub fn run(slf: &Bound<'_, Handle>, event_loop: &Bound<'_, LoopCore>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        // A thread-safe handle runs under its lock, which `cancel()` from another thread waits
        // for; it may have been cancelled since the loop took it from the queue.
        let _held = if this.flags.has(Flags::THREADSAFE) {
            let held = ThreadSafeHandle::hold_for_run(slf);
            if this.is_cancelled() {
                return Ok(());
            }
            held
        } else {
            None
        };
        let Some((callback, args)) = this.callback.get(py, &this.flags) else {
            return Ok(());
        };
        let (context, fresh) = this.context.for_run(py, &this.flags)?;
        let ctx = context.as_ptr();
        // SAFETY: the GIL is held; `ctx` is a live Context (checked by PyContext_Enter, which sets
        // an exception and returns -1 otherwise); `callback` is a live object and `args` holds
        // live references; PyContext_Exit is called exactly once after a successful enter, as
        // contextvars.Context.run does.
        let native = this.native_step();
        let result = unsafe {
            if ffi::PyContext_Enter(ctx) < 0 {
                std::ptr::null_mut()
            } else {
                let res = match native {
                    Some(writer) => transport_step::run(&callback, writer),
                    None => args.call(callback.as_ptr()),
                };
                if ffi::PyContext_Exit(ctx) < 0 {
                    ffi::Py_XDECREF(res);
                    std::ptr::null_mut()
                } else {
                    res
                }
            }
        };
        let outcome = if result.is_null() {
            Err(PyErr::fetch(py))
        } else {
            // SAFETY: a new reference returned by the call, released once here.
            unsafe { ffi::Py_DECREF(result) };
            Ok(())
        };
        // Still referenced elsewhere, the handle keeps what its callback set in its Context; so
        // does one whose callback failed, which the exception handler receives (and, from 3.12,
        // runs in its Context). A transport's read or write step runs again and again: it keeps
        // the copy in any case, so later runs enter it directly instead of copying the snapshot
        // each time.
        if fresh && (outcome.is_err() || refcount::held_beyond(py, slf.as_ptr(), 1)) {
            if native.is_some() {
                this.context.keep(py, context, &this.flags);
            } else {
                this.context.keep_if_written(py, context, &this.flags);
            }
        }
        let Err(err) = outcome else {
            return Ok(());
        };
        if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) {
            return Err(err);
        }
        let context = PyDict::new(py);
        let callback = this.shown_callback(&callback)?;
        let debug = event_loop.get().debug_enabled();
        let source = hooks::call(
            py,
            "format_callback_source",
            (&callback, args.to_tuple(py)?, debug),
        )?;
        context.set_item("message", format!("Exception in callback {source}"))?;
        context.set_item("exception", err.value(py))?;
        context.set_item("handle", slf)?;
        if let Some(debug) = &this.debug {
            context.set_item("source_traceback", &debug.source_traceback)?;
        }
        event_loop.call_method1("call_exception_handler", (context,))?;
        Ok(())
    }
}
