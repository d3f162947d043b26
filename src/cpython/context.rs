//! Which variables a `contextvars.Context` holds, compared by identity without calling Python.
//!
//! A Context is `{PyObject_HEAD; PyContext *ctx_prev; PyHamtObject *ctx_vars; ...}` from CPython
//! 3.7 through 3.15 (`Include/internal/pycore_context.h`; on free-threaded builds the bigger
//! header shifts it, which `size_of::<ffi::PyObject>()` follows). `ctx_vars` is an immutable
//! mapping: two Contexts with the same `ctx_vars` pointer hold the same variables, and setting a
//! variable gives a Context a new mapping. `event_loop/context.rs` builds its shared snapshots on
//! that.
//!
//! The field is private, so it is read only after a probe at first use has seen it behave (a
//! `hamt` object there, shared by a copy, replaced when a variable is set in the copy), and not
//! at all under `FERROLOOP_LAYOUT_READS=0`; `vars_reader` then answers `None` and every handle
//! gets a Context of its own, as with the stock loop.

use std::ffi::CStr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// Where `ctx_vars` sits: after the object header and the `ctx_prev` pointer.
const VARS_OFFSET: usize = std::mem::size_of::<ffi::PyObject>() + std::mem::size_of::<usize>();

static READER: PyOnceLock<Option<VarsReader>> = PyOnceLock::new();

/// Reads Contexts' variable mappings; exists only where the layout was vouched for.
#[derive(Clone, Copy)]
pub struct VarsReader(());

/// The mapping pointer stored in `ctx`.
///
/// # Safety
/// The GIL is held and `ctx` is a live, exact `contextvars.Context`.
unsafe fn vars_at(ctx: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: per the contract, VARS_OFFSET lies inside the Context and holds a pointer.
    unsafe {
        *(ctx
            .cast::<u8>()
            .add(VARS_OFFSET)
            .cast::<*mut ffi::PyObject>())
    }
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

fn is_context(obj: *mut ffi::PyObject) -> bool {
    // SAFETY: reading the type of a live object (the GIL is held by the caller) and the address
    // of CPython's Context type.
    unsafe { ffi::Py_TYPE(obj) == std::ptr::addr_of_mut!(ffi::PyContext_Type) }
}

/// Checks that the layout holds: a `hamt` at VARS_OFFSET, shared by a copy, replaced by a new
/// `hamt` when a variable is set in the copy.
fn probe(py: Python<'_>) -> PyResult<bool> {
    // SAFETY: the GIL is held; each call returns a new reference or NULL with an exception set
    // (turned into Err); the Contexts are live while their `Bound`s are, so reading their fields
    // stays inside the objects (a Context is larger than the header and two pointers);
    // Enter/Exit are paired.
    unsafe {
        let first = Bound::from_owned_ptr_or_err(py, ffi::PyContext_New())?;
        let before = vars_at(first.as_ptr());
        if !is_hamt(before) {
            return Ok(false);
        }
        let copy = Bound::from_owned_ptr_or_err(py, ffi::PyContext_Copy(first.as_ptr()))?;
        if vars_at(copy.as_ptr()) != before {
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
        let after = vars_at(copy.as_ptr());
        Ok(after != before && is_hamt(after) && vars_at(first.as_ptr()) == before)
    }
}

/// The reader, if the layout was vouched for (probed on first use). The first call releases the
/// GIL (`PyOnceLock` does while it initialises), so it must not happen under a `GilCell` borrow.
pub fn vars_reader(py: Python<'_>) -> Option<VarsReader> {
    *READER.get_or_init(py, || {
        (super::layout_reads_allowed() && probe(py).unwrap_or(false)).then_some(VarsReader(()))
    })
}

impl VarsReader {
    /// Whether two Contexts hold the very same variables (the same mapping); false if either is
    /// not an exact Context.
    pub fn same_vars(&self, _py: Python<'_>, a: &Py<PyAny>, b: &Py<PyAny>) -> bool {
        let (a, b) = (a.as_ptr(), b.as_ptr());
        // SAFETY: the GIL is held (the token); both are exact Contexts (checked), alive as their
        // owners hold them; and `self` exists only where the layout was vouched for.
        is_context(a) && is_context(b) && unsafe { vars_at(a) == vars_at(b) }
    }
}
