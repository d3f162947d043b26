//! Reference counts read as "who else holds this object", in one place.
//!
//! The loop decides a few things from how many references an object has: a handle nobody else
//! holds gives up its callback at once; a Context snapshot held only by one handle is entered
//! directly; a `bytes` the protocol kept no reference to is lent to the next read. With the GIL,
//! `Py_REFCNT` is exact for that: no other thread can take or drop a reference meanwhile.
//!
//! On a free-threaded build it is not: another thread may be about to take a reference through
//! a borrowed pointer, and the count is split between the owning thread's and everyone else's.
//! There, "the only reference" is `PyUnstable_Object_IsUniquelyReferenced` (3.14), which also
//! requires that this thread owns the object and nobody else ever shared it; and "more than the
//! caller's `ours`" is answered only for `ours == 1` (the same question) and otherwise taken to
//! be true, the answer that is always safe: the Context is copied, the handle tracked.

use pyo3::ffi;
use pyo3::prelude::*;

/// Whether the caller's reference to `obj` is its only one.
#[inline(always)]
pub fn is_unique(_py: Python<'_>, obj: *mut ffi::PyObject) -> bool {
    #[cfg(not(Py_GIL_DISABLED))]
    // SAFETY: the GIL is held (the token) and the caller holds `obj`, a live object.
    return unsafe { ffi::Py_REFCNT(obj) } == 1;
    #[cfg(Py_GIL_DISABLED)]
    // SAFETY: the caller holds `obj`, a live object; the call only reads its counts.
    return unsafe { ffi::PyUnstable_Object_IsUniquelyReferenced(obj) } != 0;
}

/// Whether anything holds `obj` beyond the `ours` references the caller knows of.
#[inline(always)]
pub fn held_beyond(py: Python<'_>, obj: *mut ffi::PyObject, ours: isize) -> bool {
    #[cfg(not(Py_GIL_DISABLED))]
    {
        let _ = py;
        // SAFETY: the GIL is held (the token) and the caller holds `obj`, a live object.
        unsafe { ffi::Py_REFCNT(obj) > ours }
    }
    #[cfg(Py_GIL_DISABLED)]
    {
        ours != 1 || !is_unique(py, obj)
    }
}
