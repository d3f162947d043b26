//! Reference counts read as "who else holds this object", in one place.
//!
//! The loop decides a few things from how many references an object has: a handle nobody else
//! holds gives up its callback at once; a Context snapshot held only by one handle is entered
//! directly; a `bytes` the protocol kept no reference to is lent to the next read. With the GIL,
//! `Py_REFCNT` is exact for that: no other thread can take or drop a reference meanwhile. On a
//! free-threaded build it is not (another thread may hold an uncounted reference, or be about to
//! take one); those builds will need `PyUnstable_Object_IsUniquelyReferenced` here, and every
//! caller goes through these functions so that there is one place to change.

use pyo3::ffi;
use pyo3::prelude::*;

/// How many references `obj` has (with the GIL held: exact).
#[inline(always)]
pub fn count(_py: Python<'_>, obj: *mut ffi::PyObject) -> isize {
    // SAFETY: the GIL is held (the token) and the caller holds `obj`, a live object.
    unsafe { ffi::Py_REFCNT(obj) }
}

/// Whether the caller's reference to `obj` is its only one.
#[inline(always)]
pub fn is_unique(py: Python<'_>, obj: *mut ffi::PyObject) -> bool {
    count(py, obj) == 1
}

/// Whether anything holds `obj` beyond the `ours` references the caller knows of.
#[inline(always)]
pub fn held_beyond(py: Python<'_>, obj: *mut ffi::PyObject, ours: isize) -> bool {
    count(py, obj) > ours
}
