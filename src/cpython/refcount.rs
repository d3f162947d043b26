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
//! requires that this thread owns the object and that no other thread holds a reference. "More
//! than the caller's `ours`" asks the same of the object header CPython's own inline
//! `Py_REFCNT` reads: the object is owned by this thread (`ob_tid`, the thread pointer
//! CPython's `_Py_ThreadId` returns on x86-64 Linux), no other thread holds a reference
//! (`ob_ref_shared` is 0), and this thread holds at most `ours` (`ob_ref_local`). Where that
//! cannot be read (another architecture, `FERROLOOP_LAYOUT_READS=0`) the answer is "held",
//! which is always safe: the Context is copied, the handle tracked.

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
        if ours == 1 {
            return !is_unique(py, obj);
        }
        !free_threaded::owned_and_held_at_most(obj, ours)
    }
}

#[cfg(Py_GIL_DISABLED)]
mod free_threaded {
    use std::sync::atomic::Ordering;

    use pyo3::ffi;

    /// The id CPython stores in `ob_tid` for objects this thread owns (`_Py_ThreadId`), where
    /// layout reads are allowed and it can be read.
    #[inline(always)]
    fn thread_id() -> Option<usize> {
        if !crate::cpython::switch::layout_reads_allowed() {
            return None;
        }
        crate::cpython::thread_lock::thread_pointer()
    }

    /// Whether this thread owns `obj`, no other thread holds a reference, and this thread holds
    /// at most `ours`.
    #[inline(always)]
    pub fn owned_and_held_at_most(obj: *mut ffi::PyObject, ours: isize) -> bool {
        let Some(tid) = thread_id() else {
            return false;
        };
        // SAFETY: the caller holds `obj`, a live object; these are the header fields CPython's
        // inline `Py_REFCNT` reads, the counts atomically.
        unsafe {
            (*obj).ob_tid == tid
                && (*obj).ob_ref_shared.load(Ordering::Relaxed) == 0
                && ((*obj).ob_ref_local.load(Ordering::Relaxed) as isize) <= ours
        }
    }
}
