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
//! them to decide when to compact the heap. A handle created in debug mode keeps the stack where
//! it was created (`_source_traceback`) and, once cancelled, its repr from before the cancel.
//!
//! Handles are kept small (a million may be queued): no borrow flag, debug-only data out of
//! line, and only timers (the subclass) hold a deadline and the `LoopShared` pointer. They do
//! accept weak references (`weakref.ref`, `WeakSet`), as the stock handles do: one word more,
//! and a test of that word when a handle is freed, which clears any weak reference before the
//! memory goes back to the free list (so a recycled handle starts with none).
//!
//! Both classes recycle freed objects (`freelist.rs`); a recycled handle starts untracked by the
//! collector, and `create` sets the tracking each kind of handle needs.

use std::sync::Arc;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::PyTraverseError;

use super::args::CallArgs;
use super::context::ContextSlot;
use super::flags::Flags;
use super::hooks;
use super::shared::LoopShared;
use crate::core::prefetch::prefetch;
use crate::cpython::gil::{GilCell, GilSlot};
use crate::cpython::refcount;

pub(super) struct Callback {
    pub(super) callback: Py<PyAny>,
    /// `CallArgs::into_parts`; whether it is a tuple of several is the `ARGS_MANY` flag.
    pub(super) args: Option<Py<PyAny>>,
}

/// What only debug mode records, kept out of line so a handle stays small.
pub(super) struct DebugInfo {
    pub(super) source_traceback: Py<PyAny>,
    /// The repr taken at `cancel()`, which then drops the callback.
    pub(super) repr: GilCell<Option<Py<PyAny>>>,
}

/// The callback and its arguments, until `cancel()` drops them: a `GilSlot`, to save the
/// borrow flag on a million queued handles. Its accesses are `get` (two increfs, which run no
/// Python code), `take` (moves out; the caller drops the result after) and the collector's read.
pub(super) struct CallbackSlot(pub(super) GilSlot<Option<Callback>>);

impl CallbackSlot {
    pub(super) fn get<'py>(
        &self,
        py: Python<'py>,
        flags: &Flags,
    ) -> Option<(Bound<'py, PyAny>, CallArgs<'py>)> {
        let many = flags.has(Flags::ARGS_MANY);
        // SAFETY: two increfs run no Python code.
        unsafe {
            self.0.with(py, |slot| {
                slot.as_ref().map(|cb| {
                    // SAFETY: ARGS_MANY is set only with the parts of a `CallArgs::Many`.
                    let args = CallArgs::from_parts(py, cb.args.as_ref(), many);
                    (cb.callback.bind(py).clone(), args)
                })
            })
        }
    }

    /// The callback alone (one incref).
    pub(super) fn callback<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        // SAFETY: an incref runs no Python code.
        unsafe {
            self.0.with(py, |slot| {
                slot.as_ref().map(|cb| cb.callback.bind(py).clone())
            })
        }
    }

    pub(super) fn take(&self, py: Python<'_>) -> Option<Callback> {
        // SAFETY: moving the value out runs no Python code; the caller drops it after.
        unsafe { self.0.with(py, Option::take) }
    }

    fn visit(&self, visit: &pyo3::gc::PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.0
            .in_gc(|slot| {
                if let Some(cb) = slot {
                    visit.call(&cb.callback)?;
                    visit.call(&cb.args)?;
                }
                Ok(())
            })
            .unwrap_or(Ok(()))
    }
}

#[pyclass(module = "ferroloop", frozen, subclass, weakref)]
pub struct Handle {
    pub(super) callback: CallbackSlot,
    pub(super) context: ContextSlot,
    pub(super) debug: Option<Box<DebugInfo>>,
    pub(super) flags: Flags,
}

/// A handle scheduled for a time; `when()` gives it.
#[pyclass(module = "ferroloop", frozen, extends = Handle)]
pub struct TimerHandle {
    pub(super) when: f64,
    /// Where a cancelled timer is counted, for heap compaction.
    pub(super) shared: Arc<LoopShared>,
}

impl Handle {
    /// Called when the loop lets go of `slf` for good: a handle created untracked is tracked
    /// again if anything else still references it, and one nobody else references gives up its
    /// callback at once.
    pub fn leave_queue(slf: &Bound<'_, Handle>) {
        if refcount::is_unique(slf.py(), slf.as_ptr()) {
            // About to be freed, and unreachable by anyone else: the callback is released here,
            // where dropping a `Bound` is a plain decref (PyO3's dealloc drops `Py` fields, each
            // first asking through a thread-local whether the thread is attached).
            let py = slf.py();
            if let Some(cb) = slf.get().callback.take(py) {
                drop(cb.callback.into_bound(py));
                drop(cb.args.map(|args| args.into_bound(py)));
            }
            return;
        }
        Handle::track_if_held(slf, 1);
    }

    /// Tracks `slf` if it is untracked and referenced beyond the `ours` references the caller
    /// knows of (its own `Bound` included).
    pub fn track_if_held(slf: &Bound<'_, Handle>, ours: isize) {
        let ptr = slf.as_ptr();
        let flags = &slf.get().flags;
        if refcount::held_beyond(slf.py(), ptr, ours) && !flags.has(Flags::TRACKED) {
            // SAFETY: `ptr` is a live object (the Bound holds a reference) of a GC type;
            // tracking it only when it is untracked is what PyObject_GC_Track requires.
            unsafe {
                if ffi::PyObject_GC_IsTracked(ptr) == 0 {
                    ffi::PyObject_GC_Track(ptr.cast());
                }
            }
            flags.set(Flags::TRACKED);
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.flags.has(Flags::CANCELLED)
    }

    /// Hints the cache to load this handle's callback object (see `run::next_ready`).
    pub fn prefetch_callback(&self, py: Python<'_>) {
        // SAFETY: reads the callback pointer without touching its reference count: no Python
        // code runs.
        unsafe {
            self.callback.0.with(py, |slot| {
                if let Some(cb) = slot {
                    prefetch(cb.callback.as_ptr().cast());
                }
            })
        }
    }

    /// The Context the handle holds now, to tell the loop it is about to be entered.
    pub fn context_ptr(&self, py: Python<'_>) -> *mut ffi::PyObject {
        self.context.as_ptr(py)
    }

    /// Marks a timer as taken out of the heap, so a later `cancel()` is not counted as a
    /// cancelled timer still in the heap.
    pub fn unschedule(&self) {
        self.flags.clear(Flags::SCHEDULED);
    }

    /// Marks a reader (or writer) handle whose callback is a Rust transport, run natively.
    pub fn mark_transport_step(&self, writer: bool) {
        self.flags.set(if writer {
            Flags::NATIVE_WRITE
        } else {
            Flags::NATIVE_READ
        });
    }

    /// `Some(writer)` for a transport's own read or write step (see `Flags::NATIVE_READ`).
    pub(super) fn native_step(&self) -> Option<bool> {
        if self.flags.has(Flags::NATIVE_READ) {
            Some(false)
        } else if self.flags.has(Flags::NATIVE_WRITE) {
            Some(true)
        } else {
            None
        }
    }

    /// The callback as Python code sees it: for a transport's step, its bound method.
    pub(super) fn shown_callback<'py>(
        &self,
        callback: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self.native_step() {
            Some(false) => callback.getattr("_read_ready"),
            Some(true) => callback.getattr("_write_ready"),
            None => Ok(callback.clone()),
        }
    }

    pub fn do_cancel(slf: &Bound<'_, Handle>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.flags.test_and_set(Flags::CANCELLED) {
            return Ok(());
        }
        if this.flags.has(Flags::SCHEDULED) {
            if let Ok(timer) = slf.cast::<TimerHandle>() {
                timer.get().shared.timer_cancelled();
            }
        }
        if let Some(debug) = &this.debug {
            let repr = hooks::call(py, "handle_repr", (slf,))?.unbind();
            let old = debug.repr.borrow_mut(py).replace(repr);
            drop(old);
        }
        // Dropped here, outside any borrow: releasing the callback may run arbitrary `__del__`.
        drop(this.callback.take(py));
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

    fn get_context(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.context.own(py, &self.flags)
    }

    #[getter]
    fn _callback(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.callback
            .get(py, &self.flags)
            .map(|(callback, _)| Ok(self.shown_callback(&callback)?.unbind()))
            .transpose()
    }

    #[getter]
    fn _args(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.callback
            .get(py, &self.flags)
            .map(|(_, args)| Ok(args.to_tuple(py)?.into_any().unbind()))
            .transpose()
    }

    #[getter]
    fn _cancelled(&self) -> bool {
        self.is_cancelled()
    }

    #[getter]
    fn _context(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.context.own(py, &self.flags)
    }

    #[getter]
    fn _source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.debug
            .as_ref()
            .map(|d| d.source_traceback.clone_ref(py))
    }

    fn __traverse__(&self, visit: pyo3::gc::PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.traverse_contents(&visit)
    }

    fn __clear__(&self) {
        Python::attach(|py| drop(self.callback.take(py)));
    }

    fn __repr__(slf: &Bound<'_, Self>, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Some(debug) = &slf.get().debug {
            if let Some(repr) = &*debug.repr.borrow(py) {
                return Ok(repr.clone_ref(py));
            }
        }
        Ok(hooks::call(py, "handle_repr", (slf,))?.unbind())
    }
}

impl Handle {
    /// Reports the references this handle holds.
    ///
    /// A handle made by `call_soon`/`call_later`/`call_at` starts untracked by the garbage
    /// collector: a million queued callbacks would otherwise make every full collection walk a
    /// million objects (the stock loop spends more than half of a `call_soon` burst in the
    /// collector). While such a handle is queued, the loop's `__traverse__` reports its contents
    /// on its behalf, so a cycle through a pending callback back to the loop is still found; when
    /// it leaves the queue and someone else still holds it, `leave_queue` tracks it again, so
    /// from then on it is an ordinary tracked object.
    pub fn traverse_contents(&self, visit: &pyo3::gc::PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.context.visit(visit)?;
        self.callback.visit(visit)?;
        if let Some(debug) = &self.debug {
            visit.call(&debug.source_traceback)?;
            if let Some(repr) = debug.repr.try_borrow_in_gc() {
                visit.call(&*repr)?;
            }
        }
        Ok(())
    }
}

#[pymethods]
impl TimerHandle {
    fn when(&self) -> f64 {
        self.when
    }

    #[getter]
    fn _when(&self) -> f64 {
        self.when
    }

    #[getter]
    fn _scheduled(slf: &Bound<'_, Self>) -> bool {
        slf.as_super().get().flags.has(Flags::SCHEDULED)
    }

    fn __hash__(slf: &Bound<'_, Self>) -> PyResult<isize> {
        slf.py()
            .import("builtins")?
            .getattr("hash")?
            .call1((slf.get().when,))?
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
        let a = slf.get();
        let b = other.get();
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
    if a.get().when != b.get().when || x.is_cancelled() != y.is_cancelled() {
        return Ok(false);
    }
    let py = a.py();
    let cb_a = Handle::_callback(x, py)?;
    let cb_b = Handle::_callback(y, py)?;
    let args_a = Handle::_args(x, py)?;
    let args_b = Handle::_args(y, py)?;
    Ok(cb_a.into_pyobject(py)?.eq(cb_b)? && args_a.into_pyobject(py)?.eq(args_b)?)
}
