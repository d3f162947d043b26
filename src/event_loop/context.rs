//! The `contextvars.Context` a handle runs in, without a new Context per handle.
//!
//! The stock `Handle` given no `context=` keeps `contextvars.copy_context()`: a new Context per
//! callback. A million queued callbacks are then a million live, garbage-collected Contexts, and
//! the collector walks them all on every full collection (half the time of a `call_soon` burst).
//! Yet those copies are almost always identical: a Context is a thin object around an immutable
//! mapping of variables, and consecutive `call_soon`s from the same code see the same mapping.
//!
//! So a handle scheduled without `context=` holds a *snapshot*: a Context the loop shares among
//! the handles scheduled while the current variables stay the same (the loop compares the
//! mapping's identity). Nobody ever enters a shared snapshot, so it never changes; what the
//! stock loop guarantees still holds:
//!
//! - a callback runs with the variables current when it was scheduled, and what it sets is seen
//!   by no other callback: a handle whose snapshot is shared runs in a fresh copy of it (CPython
//!   reuses freed Contexts, so the copy costs no garbage-collected allocation); a snapshot no
//!   longer shared is entered directly;
//! - `get_context()` returns one Context that is the handle's own: asked before the handle ran, it
//!   first swaps its snapshot for a private copy; a handle still referenced when its callback
//!   ends keeps the Context the callback ran in if the callback set a variable in it (if not,
//!   that Context equals the snapshot, and no Python code can hold the Context object it ran in:
//!   `copy_context()` returns copies).
//!
//! Comparing mappings needs the Context's `ctx_vars` field, which CPython does not export: it is
//! read through `cpython::context`, which answers `None` where the layout is not vouched for;
//! every handle then gets its own copy, as in the stock loop.

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::flags::Flags;
use crate::cpython::context::VarsReader;
use crate::cpython::gil::GilSlot;
use crate::cpython::refcount;

pub fn copy_current(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: the GIL is held; returns a new reference or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent()) }.map(Bound::unbind)
}

/// Calls `f` inside the Context `ctx`: how a transport runs the protocol callbacks it makes
/// synchronously (`pause_writing` from inside a `write`) in the Context it was created in, as
/// its scheduled ones are. A Context can be entered once at a time: when `ctx` is already
/// entered (the transport's own read step runs in it, and the protocol wrote from
/// `data_received`), `f` runs where it is, which is inside `ctx` already.
pub fn run_in<T>(ctx: &Bound<'_, PyAny>, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    let py = ctx.py();
    // SAFETY: the GIL is held and `ctx` is a live object; PyContext_Enter checks that it is a
    // Context that is not entered, and otherwise sets an exception and returns -1.
    if unsafe { ffi::PyContext_Enter(ctx.as_ptr()) } < 0 {
        let refused = PyErr::fetch(py);
        if !refused.is_instance_of::<PyRuntimeError>(py) {
            return Err(refused);
        }
        return f();
    }
    let result = f();
    // SAFETY: `ctx` was entered just above, on this thread, and is exited exactly once.
    if unsafe { ffi::PyContext_Exit(ctx.as_ptr()) } < 0 {
        return Err(PyErr::fetch(py));
    }
    result
}

/// `_core.run_in_context(ctx, callback, *args)`: `run_in` for the transports written in Python.
#[pyfunction]
#[pyo3(signature = (ctx, callback, *args))]
pub fn run_in_context<'py>(
    ctx: &Bound<'py, PyAny>,
    callback: &Bound<'py, PyAny>,
    args: &Bound<'py, PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    run_in(ctx, || callback.call1(args))
}

fn copy_of(ctx: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    // SAFETY: the GIL is held and `ctx` is a live Context (PyContext_Copy checks the type and
    // sets TypeError otherwise); returns a new reference or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(ctx.py(), ffi::PyContext_Copy(ctx.as_ptr())) }
        .map(Bound::unbind)
}

/// The loop's side: the snapshot last handed out, offered to the next handle if the variables
/// have not changed.
#[derive(Default)]
pub struct Snapshots {
    last: Option<Py<PyAny>>,
}

impl Snapshots {
    /// A Context with the current variables for a new handle: the last snapshot if the variables
    /// are the same, else a new one, which becomes the last. The second value is the previous
    /// snapshot when it was replaced, for the caller to drop outside any borrow.
    ///
    /// `current` is a fresh copy of the current Context (`copy_current`) and `reader` is
    /// `cpython::context::vars_reader`, both got before the loop's state is borrowed: allocating
    /// can start a collection, which can run arbitrary code, and the first `vars_reader` releases
    /// the GIL.
    pub fn take(
        &mut self,
        py: Python<'_>,
        current: Py<PyAny>,
        reader: Option<VarsReader>,
    ) -> (Py<PyAny>, Option<Py<PyAny>>) {
        let Some(reader) = reader else {
            return (current, None);
        };
        if let Some(last) = &self.last {
            if reader.same_vars(py, last, &current) {
                // The caller drops `current`: it goes back to CPython's Context free list.
                return (last.clone_ref(py), Some(current));
            }
        }
        let old = self.last.replace(current.clone_ref(py));
        (current, old)
    }

    /// The last snapshot, if it holds the current variables (told without copying them).
    pub fn current(&self, py: Python<'_>, reader: VarsReader) -> Option<Py<PyAny>> {
        self.last
            .as_ref()
            .filter(|last| reader.is_current(py, last))
            .map(|last| last.clone_ref(py))
    }

    /// Stops offering `ctx` to new handles (it is about to be entered); returns the loop's
    /// reference to it, if it had one, for the caller to drop.
    pub fn retire(&mut self, ctx: *mut ffi::PyObject) -> Option<Py<PyAny>> {
        if self.last.as_ref().is_some_and(|last| last.as_ptr() == ctx) {
            self.last.take()
        } else {
            None
        }
    }

    pub fn clear(&mut self) -> Option<Py<PyAny>> {
        self.last.take()
    }

    pub fn visit(&self, visit: &pyo3::gc::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.last)
    }
}

/// The handle's side: its Context. Whether that Context is the handle's own (not a snapshot
/// other handles may share) is the handle's `CONTEXT_OWN` flag, kept with its other flags so the
/// handle stays small.
pub struct ContextSlot(GilSlot<Py<PyAny>>);

impl ContextSlot {
    /// A Context given with `context=` (the handle's own, entered as it is; set `CONTEXT_OWN`),
    /// or a snapshot from `Snapshots::take`, possibly shared.
    pub fn new(ctx: Py<PyAny>) -> ContextSlot {
        ContextSlot(GilSlot::new(ctx))
    }

    fn current<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        // SAFETY: one incref runs no Python code.
        unsafe { self.0.with(py, |ctx| ctx.bind(py).clone()) }
    }

    fn replace(&self, py: Python<'_>, ctx: Py<PyAny>, flags: &Flags) {
        // SAFETY: swapping two pointers runs no Python code.
        let old = unsafe { self.0.with(py, |slot| std::mem::replace(slot, ctx)) };
        flags.set(Flags::CONTEXT_OWN);
        // Dropped once the slot is written: freeing a Context can free its variables' values,
        // which can run arbitrary `__del__` code.
        drop(old);
    }

    pub fn as_ptr(&self, py: Python<'_>) -> *mut ffi::PyObject {
        // SAFETY: reading the pointer runs no Python code.
        unsafe { self.0.with(py, |ctx| ctx.as_ptr()) }
    }

    /// The handle's own Context, for `get_context()`: a shared snapshot is first swapped for a
    /// private copy.
    pub fn own(&self, py: Python<'_>, flags: &Flags) -> PyResult<Py<PyAny>> {
        let ctx = self.current(py);
        if flags.has(Flags::CONTEXT_OWN) {
            return Ok(ctx.unbind());
        }
        let copy = copy_of(&ctx)?;
        self.replace(py, copy.clone_ref(py), flags);
        Ok(copy)
    }

    /// The Context to enter for a run, and whether it is a fresh copy (to keep with
    /// `keep_if_written` if the handle outlives the run). The loop has already stopped offering
    /// the snapshot to new handles (`Snapshots::retire`), so a snapshot nobody else holds is this
    /// handle's alone.
    pub fn for_run<'py>(
        &self,
        py: Python<'py>,
        flags: &Flags,
    ) -> PyResult<(Bound<'py, PyAny>, bool)> {
        let ctx = self.current(py);
        if flags.has(Flags::CONTEXT_OWN) {
            return Ok((ctx, false));
        }
        // Two references, the cell's and `ctx`, mean no other handle shares it.
        if !refcount::held_beyond(py, ctx.as_ptr(), 2) {
            flags.set(Flags::CONTEXT_OWN);
            return Ok((ctx, false));
        }
        Ok((copy_of(&ctx)?.into_bound(py), true))
    }

    /// After a run in a fresh copy (`for_run`), makes that copy the handle's own Context.
    pub fn keep(&self, py: Python<'_>, ran_in: Bound<'_, PyAny>, flags: &Flags) {
        self.replace(py, ran_in.unbind(), flags);
    }

    /// After a run in a fresh copy (`for_run`), keeps that copy if the callback set a variable
    /// in it, so that `get_context()` shows it; otherwise the copy, identical to the snapshot,
    /// is let go (a later `get_context()` makes an equal one).
    pub fn keep_if_written(&self, py: Python<'_>, ran_in: Bound<'_, PyAny>, flags: &Flags) {
        let written = match crate::cpython::context::vars_reader(py) {
            // SAFETY: comparing two pointers runs no Python code.
            Some(reader) => unsafe {
                self.0
                    .with(py, |ctx| !reader.same_vars(py, ran_in.as_unbound(), ctx))
            },
            None => true,
        };
        if written {
            self.keep(py, ran_in, flags);
        }
    }

    pub fn visit(&self, visit: &pyo3::gc::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        self.0.in_gc(|ctx| visit.call(ctx)).unwrap_or(Ok(()))
    }
}
