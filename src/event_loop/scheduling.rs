//! Scheduling: `call_soon`, `call_later`, `call_at` and `call_soon_threadsafe` (entered through
//! `fastcall.rs`), and the handles they make, each with the Context to run in (`context.rs`).
//! Timers scheduled during an iteration wait in `new_timers` until the next one begins
//! (`run.rs`).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyInt};

use super::args::CallArgs;
use super::context::{self, ContextSlot};
use super::handle::Handle;
use super::hooks;
use super::new_handle::NewHandle;
use super::state::LoopCore;
use crate::core::clock;
use crate::errors::os_error;

/// Seconds as an `f64` from an int or float; anything else is added to `base` with Python's `+`
/// so the error (or result) is exactly the stock loop's `self.time() + delay`.
fn add_seconds(base: f64, delay: &Bound<'_, PyAny>) -> PyResult<f64> {
    if let Ok(f) = delay.cast::<PyFloat>() {
        return Ok(base + f.value());
    }
    if delay.is_instance_of::<PyInt>() {
        if let Ok(i) = delay.extract::<i64>() {
            return Ok(base + i as f64);
        }
    }
    PyFloat::new(delay.py(), base).add(delay)?.extract()
}

impl LoopCore {
    /// Debug mode only: the stock loop's checks on the calling thread and the callback.
    pub(super) fn debug_checks(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        method: &str,
        check_thread: bool,
    ) -> PyResult<()> {
        if !self.shared.debug() {
            return Ok(());
        }
        if check_thread {
            self.check_thread(py)?;
        }
        hooks::call(py, "check_callback", (callback, method))?;
        Ok(())
    }

    /// A Context with the current variables, for a handle scheduled without `context=`.
    pub(super) fn snapshot(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let reader = crate::cpython::context::vars_reader(py);
        if let Some(reader) = reader {
            if let Some(last) = self.state.borrow(py).snapshots.current(py, reader) {
                return Ok(last);
            }
        }
        let current = context::copy_current(py)?;
        let (ctx, garbage) = self
            .state
            .borrow_mut(py)
            .snapshots
            .take(py, current, reader);
        // Released as a `Bound`: a plain decref (see `args.rs`).
        drop(garbage.map(|g| g.into_bound(py)));
        Ok(ctx)
    }

    /// A new handle; `threadsafe` for `call_soon_threadsafe`'s (`threadsafe.rs`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_handle<'py>(
        &'py self,
        py: Python<'py>,
        callback: Bound<'py, PyAny>,
        args: CallArgs<'py>,
        context: Option<Bound<'py, PyAny>>,
        when: Option<f64>,
        queued_only: bool,
        threadsafe: bool,
    ) -> PyResult<Bound<'py, Handle>> {
        let (context, context_own) = match context {
            Some(ctx) if !ctx.is_none() => (ContextSlot::new(ctx.unbind()), true),
            _ => (ContextSlot::new(self.snapshot(py)?), false),
        };
        NewHandle {
            callback,
            args,
            context,
            context_own,
            when,
            threadsafe,
            shared: &self.shared,
        }
        .create(py, queued_only)
    }

    /// The body of `call_soon` and `call_soon_threadsafe`: checks, a new handle, queued. Called
    /// without the thread check, it is `call_soon_threadsafe`'s, whose handle is thread-safe.
    pub(crate) fn soon<'py>(
        &'py self,
        py: Python<'py>,
        method: &str,
        check_thread: bool,
        callback: Bound<'py, PyAny>,
        args: CallArgs<'py>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        self.check_closed(py)?;
        self.debug_checks(py, &callback, method, check_thread)?;
        let handle = self.new_handle(py, callback, args, context, None, true, !check_thread)?;
        self.state
            .borrow_mut(py)
            .ready
            .push(handle.clone().unbind());
        Ok(handle)
    }

    /// The body of `call_later` and `call_at` once the deadline is known. Debug errors name
    /// `call_at()` for both, as the stock `call_later` delegates to `call_at`.
    pub(super) fn schedule_timer<'py>(
        &'py self,
        py: Python<'py>,
        when: f64,
        callback: Bound<'py, PyAny>,
        args: CallArgs<'py>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        self.check_closed(py)?;
        self.debug_checks(py, &callback, "call_at", true)?;
        let handle = self.new_handle(py, callback, args, context, Some(when), true, false)?;
        self.meter.timer_scheduled(py);
        self.state
            .borrow_mut(py)
            .new_timers
            .push((when, handle.clone().unbind()));
        Ok(handle)
    }

    /// `call_soon_threadsafe`: `call_soon` without the thread check, then a wake-up.
    pub(super) fn soon_threadsafe<'py>(
        &'py self,
        py: Python<'py>,
        callback: Bound<'py, PyAny>,
        args: CallArgs<'py>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        let handle = self.soon(py, "call_soon_threadsafe", false, callback, args, context)?;
        if let Some(poller) = &self.state.borrow(py).poller {
            poller.wake().map_err(os_error)?;
        }
        Ok(handle)
    }

    /// `call_later`: the deadline is `time() + delay`.
    pub(super) fn later<'py>(
        &'py self,
        py: Python<'py>,
        delay: &Bound<'py, PyAny>,
        callback: Bound<'py, PyAny>,
        args: CallArgs<'py>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        if delay.is_none() {
            return Err(PyTypeError::new_err("delay must not be None"));
        }
        let when = add_seconds(clock::monotonic(), delay)?;
        self.schedule_timer(py, when, callback, args, context)
    }

    /// `call_at`: `when` is on the loop's clock.
    pub(super) fn at<'py>(
        &'py self,
        py: Python<'py>,
        when: &Bound<'py, PyAny>,
        callback: Bound<'py, PyAny>,
        args: CallArgs<'py>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        if when.is_none() {
            return Err(PyTypeError::new_err("when cannot be None"));
        }
        let when = add_seconds(0.0, when)?;
        self.schedule_timer(py, when, callback, args, context)
    }
}
