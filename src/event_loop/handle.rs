//! `Handle` and `TimerHandle`: what `call_soon`, `call_later` and `call_at` return.
//!
//! A handle holds a callback, its positional arguments and the `contextvars.Context` to run it in
//! (a copy of the current one when none is given, as the stock loop does). Running it enters the
//! context, calls the callback and leaves the context, straight through the C API. An exception
//! other than `KeyboardInterrupt`/`SystemExit` goes to the loop's exception handler with the stock
//! context keys; those two propagate out of `run_forever`.
//!
//! `cancel()` drops the callback and its arguments at once, so a cancelled timer waiting in the
//! heap holds no references; a cancelled timer tells the loop through `LoopShared`, which counts
//! them to decide when to compact the heap. In debug mode the handle keeps its repr from before
//! the cancel and the stack where it was created (`_source_traceback`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::{PyDict, PyTuple};
use pyo3::PyTraverseError;

use super::hooks;
use super::shared::LoopShared;
use crate::gil_cell::GilCell;

struct Callback {
    callback: Py<PyAny>,
    args: Py<PyTuple>,
}

struct HandleState {
    callback: Option<Callback>,
    repr: Option<Py<PyAny>>,
}

#[pyclass(module = "ferroloop", frozen, subclass, weakref)]
pub struct Handle {
    state: GilCell<HandleState>,
    context: Py<PyAny>,
    cancelled: AtomicBool,
    /// The deadline, for timers; NaN for plain handles.
    when: f64,
    /// True while a timer sits in the loop's heap.
    scheduled: AtomicBool,
    source_traceback: Option<Py<PyAny>>,
    shared: Arc<LoopShared>,
}

/// A handle scheduled for a time; `when()` gives it.
#[pyclass(module = "ferroloop", frozen, extends = Handle)]
pub struct TimerHandle;

/// Everything a new handle needs; built by the loop's scheduling methods.
pub struct NewHandle<'py> {
    pub callback: Bound<'py, PyAny>,
    pub args: Bound<'py, PyTuple>,
    pub context: Option<Bound<'py, PyAny>>,
    pub when: Option<f64>,
    pub shared: &'py Arc<LoopShared>,
}

fn copy_current_context(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: called with the GIL held; returns a new reference or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent()) }.map(Bound::unbind)
}

impl<'py> NewHandle<'py> {
    fn into_handle(self, py: Python<'py>) -> PyResult<Handle> {
        let context = match self.context {
            Some(ctx) if !ctx.is_none() => ctx.unbind(),
            _ => copy_current_context(py)?,
        };
        let source_traceback = if self.shared.debug() {
            Some(hooks::call(py, "extract_stack", ())?.unbind())
        } else {
            None
        };
        Ok(Handle {
            state: GilCell::new(HandleState {
                callback: Some(Callback {
                    callback: self.callback.unbind(),
                    args: self.args.unbind(),
                }),
                repr: None,
            }),
            context,
            cancelled: AtomicBool::new(false),
            when: self.when.unwrap_or(f64::NAN),
            scheduled: AtomicBool::new(self.when.is_some()),
            source_traceback,
            shared: Arc::clone(self.shared),
        })
    }

    /// A `Handle`, or a `TimerHandle` when `when` is set.
    pub fn create(self, py: Python<'py>) -> PyResult<Bound<'py, Handle>> {
        let is_timer = self.when.is_some();
        let handle = self.into_handle(py)?;
        let handle = if is_timer {
            Bound::new(
                py,
                PyClassInitializer::from(handle).add_subclass(TimerHandle),
            )?
            .into_super()
        } else {
            Bound::new(py, handle)?
        };
        // SAFETY: a live object of a GC type (PyO3 gives every pyclass Py_TPFLAGS_HAVE_GC), just
        // created and so tracked; untracking is undone by nothing and is safe to repeat, and the
        // type's dealloc calls PyObject_GC_UnTrack, which accepts an untracked object. See
        // `traverse_contents` for why handles stay out of the collector.
        unsafe { ffi::PyObject_GC_UnTrack(handle.as_ptr().cast()) };
        Ok(handle)
    }
}

impl Handle {
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    pub fn when_value(&self) -> f64 {
        self.when
    }

    /// Marks a timer as taken out of the heap, so a later `cancel()` is not counted as a
    /// cancelled timer still in the heap.
    pub fn unschedule(&self) {
        self.scheduled.store(false, Ordering::Relaxed);
    }

    /// Runs the callback in its context. `Ok` also when the callback raised and the error went
    /// to the exception handler; `Err` for `KeyboardInterrupt`, `SystemExit`, or an error raised
    /// by the exception handler itself.
    pub fn run(slf: &Bound<'_, Handle>, event_loop: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (callback, args) = match &this.state.borrow(py).callback {
            Some(cb) => (cb.callback.clone_ref(py), cb.args.clone_ref(py)),
            None => return Ok(()),
        };
        let ctx = this.context.as_ptr();
        // SAFETY: the GIL is held; `ctx` is a live Context (checked by PyContext_Enter, which sets
        // an exception and returns -1 otherwise); `callback` and `args` are live objects, `args`
        // a tuple; PyContext_Exit is called exactly once after a successful enter, as
        // contextvars.Context.run does.
        let result = unsafe {
            if ffi::PyContext_Enter(ctx) < 0 {
                std::ptr::null_mut()
            } else {
                let res =
                    ffi::PyObject_Call(callback.as_ptr(), args.as_ptr(), std::ptr::null_mut());
                if ffi::PyContext_Exit(ctx) < 0 {
                    ffi::Py_XDECREF(res);
                    std::ptr::null_mut()
                } else {
                    res
                }
            }
        };
        if !result.is_null() {
            // SAFETY: a new reference returned by PyObject_Call, released once here.
            unsafe { ffi::Py_DECREF(result) };
            return Ok(());
        }
        let err = PyErr::fetch(py);
        if err.is_instance_of::<PyKeyboardInterrupt>(py) || err.is_instance_of::<PySystemExit>(py) {
            return Err(err);
        }
        let context = PyDict::new(py);
        let source = hooks::call(py, "format_callback_source", (&callback, &args))?;
        context.set_item("message", format!("Exception in callback {source}"))?;
        context.set_item("exception", err.value(py))?;
        context.set_item("handle", slf)?;
        if let Some(tb) = &this.source_traceback {
            context.set_item("source_traceback", tb)?;
        }
        event_loop.call_method1("call_exception_handler", (context,))?;
        Ok(())
    }

    pub fn do_cancel(slf: &Bound<'_, Handle>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.cancelled.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        if this.scheduled.load(Ordering::Relaxed) {
            this.shared.timer_cancelled();
        }
        if this.shared.debug() {
            let repr = hooks::call(py, "handle_repr", (slf,))?.unbind();
            this.state.borrow_mut(py).repr = Some(repr);
        }
        // Dropped after the borrow ends: releasing the callback may run arbitrary `__del__` code.
        let released = this.state.borrow_mut(py).callback.take();
        drop(released);
        Ok(())
    }
}

#[pymethods]
impl Handle {
    fn cancel(slf: &Bound<'_, Self>) -> PyResult<()> {
        Handle::do_cancel(slf)
    }

    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }

    fn get_context(&self, py: Python<'_>) -> Py<PyAny> {
        self.context.clone_ref(py)
    }

    #[getter]
    fn _callback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .borrow(py)
            .callback
            .as_ref()
            .map(|cb| cb.callback.clone_ref(py))
    }

    #[getter]
    fn _args(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .borrow(py)
            .callback
            .as_ref()
            .map(|cb| cb.args.clone_ref(py).into_any())
    }

    #[getter]
    fn _cancelled(&self) -> bool {
        self.is_cancelled()
    }

    #[getter]
    fn _context(&self, py: Python<'_>) -> Py<PyAny> {
        self.context.clone_ref(py)
    }

    #[getter]
    fn _source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.source_traceback.as_ref().map(|tb| tb.clone_ref(py))
    }

    fn __repr__(slf: &Bound<'_, Self>, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Some(repr) = &slf.get().state.borrow(py).repr {
            return Ok(repr.clone_ref(py));
        }
        Ok(hooks::call(py, "handle_repr", (slf,))?.unbind())
    }
}

impl Handle {
    /// Reports the references this handle holds, on behalf of the loop that queues it.
    ///
    /// Handles are not tracked by the garbage collector themselves: a million queued callbacks
    /// would make every full collection walk a million objects (the stock loop spends over half
    /// of a `call_soon` burst in the collector). Instead the loop's `__traverse__` reports what
    /// its queued handles hold, so a cycle running through a pending callback back to the loop is
    /// still found and broken by the loop's `__clear__`. The collector only ever calls
    /// `tp_clear`, never frees, so a reference counted twice (a handle queued twice) can at worst
    /// clear an object early, not free it while in use.
    pub fn traverse_contents(&self, visit: &pyo3::gc::PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.context)?;
        visit.call(&self.source_traceback)?;
        if let Some(state) = self.state.try_borrow_in_gc() {
            if let Some(cb) = &state.callback {
                visit.call(&cb.callback)?;
                visit.call(&cb.args)?;
            }
            visit.call(&state.repr)?;
        }
        Ok(())
    }
}

#[pymethods]
impl TimerHandle {
    fn when(slf: &Bound<'_, Self>) -> f64 {
        slf.as_super().get().when
    }

    #[getter]
    fn _when(slf: &Bound<'_, Self>) -> f64 {
        slf.as_super().get().when
    }

    #[getter]
    fn _scheduled(slf: &Bound<'_, Self>) -> bool {
        slf.as_super().get().scheduled.load(Ordering::Relaxed)
    }

    fn __hash__(slf: &Bound<'_, Self>) -> PyResult<isize> {
        slf.py()
            .import("builtins")?
            .getattr("hash")?
            .call1((slf.as_super().get().when,))?
            .extract()
    }

    /// Timers order by deadline; two timers are equal when deadline, callback, arguments and
    /// cancelled state all are, as the stock `TimerHandle` defines it.
    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let Ok(other) = other.cast::<TimerHandle>() else {
            return Ok(py.NotImplemented());
        };
        let a = slf.as_super().get();
        let b = other.as_super().get();
        let result = match op {
            CompareOp::Lt => a.when < b.when,
            CompareOp::Le => a.when < b.when || handles_equal(slf, other)?,
            CompareOp::Gt => a.when > b.when,
            CompareOp::Ge => a.when > b.when || handles_equal(slf, other)?,
            CompareOp::Eq => handles_equal(slf, other)?,
            CompareOp::Ne => !handles_equal(slf, other)?,
        };
        Ok(result.into_pyobject(py)?.to_owned().into_any().unbind())
    }
}

fn handles_equal(a: &Bound<'_, TimerHandle>, b: &Bound<'_, TimerHandle>) -> PyResult<bool> {
    let (ha, hb) = (a.as_super(), b.as_super());
    let (x, y) = (ha.get(), hb.get());
    if x.when != y.when || x.is_cancelled() != y.is_cancelled() {
        return Ok(false);
    }
    let py = a.py();
    let cb_a = Handle::_callback(x, py);
    let cb_b = Handle::_callback(y, py);
    let args_a = Handle::_args(x, py);
    let args_b = Handle::_args(y, py);
    Ok(cb_a.into_pyobject(py)?.eq(cb_b)? && args_a.into_pyobject(py)?.eq(args_b)?)
}
