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
//! Comparing mappings needs the Context's `ctx_vars` field, which CPython does not export. Its
//! place is probed once at start-up (`vars_offset`): if the probe does not find the mapping where
//! every CPython from 3.7 to 3.14 keeps it, every handle gets its own copy, as in the stock loop.

use std::cell::UnsafeCell;
use std::ffi::CStr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use super::handle::Flags;

/// Where `ctx_vars` sits in a Context: after the object header and the `ctx_prev` pointer.
const CANDIDATE_OFFSET: usize = std::mem::size_of::<ffi::PyObject>() + std::mem::size_of::<usize>();

static VARS_OFFSET: PyOnceLock<Option<usize>> = PyOnceLock::new();

/// The mapping pointer stored at `offset` in `ctx`.
///
/// # Safety
/// The GIL is held, `ctx` is a live Context and `offset` was validated by `probe`.
unsafe fn vars_at(ctx: *mut ffi::PyObject, offset: usize) -> *mut ffi::PyObject {
    // SAFETY: per the contract, `offset` lies inside the Context object and holds a pointer.
    unsafe { *(ctx.cast::<u8>().add(offset).cast::<*mut ffi::PyObject>()) }
}

/// Whether `ptr` is a live object of CPython's internal `hamt` type.
///
/// # Safety
/// The GIL is held and `ptr` is NULL or a live object.
unsafe fn is_hamt(ptr: *mut ffi::PyObject) -> bool {
    if ptr.is_null() {
        return false;
    }
    // SAFETY: `ptr` is a live object, so its type and the type's name are valid.
    unsafe { CStr::from_ptr((*ffi::Py_TYPE(ptr)).tp_name) == c"hamt" }
}

/// Checks that `CANDIDATE_OFFSET` holds a Context's variable mapping: a `hamt`, shared by a copy,
/// replaced by a new `hamt` when a variable is set in the copy.
fn probe(py: Python<'_>) -> PyResult<bool> {
    let off = CANDIDATE_OFFSET;
    // SAFETY: the GIL is held; each call returns a new reference or NULL with an exception set
    // (turned into Err); the Contexts are live while their `Bound`s are, so reading their fields
    // at `off` stays inside the object (a Context is larger than the header and two pointers);
    // Enter/Exit are paired.
    unsafe {
        let first = Bound::from_owned_ptr_or_err(py, ffi::PyContext_New())?;
        let before = vars_at(first.as_ptr(), off);
        if !is_hamt(before) {
            return Ok(false);
        }
        let copy = Bound::from_owned_ptr_or_err(py, ffi::PyContext_Copy(first.as_ptr()))?;
        if vars_at(copy.as_ptr(), off) != before {
            return Ok(false);
        }
        let var = Bound::from_owned_ptr_or_err(
            py,
            ffi::PyContextVar_New(c"ferroloop_probe".as_ptr(), std::ptr::null_mut()),
        )?;
        if ffi::PyContext_Enter(copy.as_ptr()) < 0 {
            return Err(PyErr::fetch(py));
        }
        let token = ffi::PyContextVar_Set(var.as_ptr(), ffi::Py_None());
        let exited = ffi::PyContext_Exit(copy.as_ptr());
        let _token = Bound::from_owned_ptr_or_err(py, token)?;
        if exited < 0 {
            return Err(PyErr::fetch(py));
        }
        let after = vars_at(copy.as_ptr(), off);
        Ok(after != before && is_hamt(after) && vars_at(first.as_ptr(), off) == before)
    }
}

/// Where a Context keeps its variables, probed on first use. The first call releases the GIL
/// (`PyOnceLock` does while it initialises), so it must not happen under the loop state's borrow:
/// another thread could take the GIL and find the state borrowed (see `gil_cell.rs`).
pub fn vars_offset(py: Python<'_>) -> Option<usize> {
    *VARS_OFFSET.get_or_init(py, || {
        probe(py).unwrap_or(false).then_some(CANDIDATE_OFFSET)
    })
}

pub fn copy_current(py: Python<'_>) -> PyResult<Py<PyAny>> {
    // SAFETY: the GIL is held; returns a new reference or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent()) }.map(Bound::unbind)
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
    /// `current` is a fresh copy of the current Context (`copy_current`) and `offset` is
    /// `vars_offset`, both got before the loop's state is borrowed: allocating can start a
    /// collection, which can run arbitrary code, and the first `vars_offset` releases the GIL.
    pub fn take(
        &mut self,
        py: Python<'_>,
        current: Py<PyAny>,
        offset: Option<usize>,
    ) -> (Py<PyAny>, Option<Py<PyAny>>) {
        let Some(offset) = offset else {
            return (current, None);
        };
        if let Some(last) = &self.last {
            // SAFETY: both are live Contexts and `offset` was validated by `probe`.
            let same =
                unsafe { vars_at(last.as_ptr(), offset) == vars_at(current.as_ptr(), offset) };
            if same {
                // The caller drops `current`: it goes back to CPython's Context free list.
                return (last.clone_ref(py), Some(current));
            }
        }
        let old = self.last.replace(current.clone_ref(py));
        (current, old)
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
pub struct ContextSlot(UnsafeCell<Py<PyAny>>);

// SAFETY: the cell is read and written only with the GIL held (every method takes a `Python`
// token or runs in the collector's traverse, which holds it), and no access runs Python code
// while a reference into the cell is live, so accesses never overlap.
unsafe impl Sync for ContextSlot {}

impl ContextSlot {
    /// A Context given with `context=` (the handle's own, entered as it is; set `CONTEXT_OWN`),
    /// or a snapshot from `Snapshots::take`, possibly shared.
    pub fn new(ctx: Py<PyAny>) -> ContextSlot {
        ContextSlot(UnsafeCell::new(ctx))
    }

    fn current<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        // SAFETY: see the Sync impl: the shared reference lives only across one incref.
        unsafe { (*self.0.get()).bind(py).clone() }
    }

    fn replace(&self, _py: Python<'_>, ctx: Py<PyAny>, flags: &Flags) {
        // SAFETY: see the Sync impl: no other reference into the cell is live.
        let old = unsafe { std::mem::replace(&mut *self.0.get(), ctx) };
        flags.set(Flags::CONTEXT_OWN);
        // Dropped once the cell is written: freeing a Context can free its variables' values,
        // which can run arbitrary `__del__` code.
        drop(old);
    }

    pub fn as_ptr(&self) -> *mut ffi::PyObject {
        // SAFETY: see the Sync impl; only the pointer value is read.
        unsafe { (*self.0.get()).as_ptr() }
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
        // SAFETY: `ctx` is a live object.
        if unsafe { ffi::Py_REFCNT(ctx.as_ptr()) } <= 2 {
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
        let Some(offset) = vars_offset(py) else {
            return self.keep(py, ran_in, flags);
        };
        // SAFETY: both are live Contexts and `offset` was validated by `probe`.
        let written = unsafe { vars_at(ran_in.as_ptr(), offset) != vars_at(self.as_ptr(), offset) };
        if written {
            self.keep(py, ran_in, flags);
        }
    }

    pub fn visit(&self, visit: &pyo3::gc::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        // SAFETY: the collector runs with the GIL held and outside any access to the slot.
        visit.call(unsafe { &*self.0.get() })
    }
}
