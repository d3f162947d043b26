//! GC objects allocated without counting towards the next young collection.
//!
//! `PyType_GenericAlloc` takes a GC object's memory with a `PyGC_Head` (two words: the
//! collector's list links) in front of it, zeroes both, and counts the allocation: every so many
//! allocations of GC objects start a young collection. For handles, which mostly live for one
//! iteration, those collections walk thousands of live tasks and futures for nothing
//! (`event_loop/freelist.rs`). `alloc_uncounted` makes the same memory without the count; the
//! object is still tracked and collected as any other once something tracks it.
//!
//! The layout this relies on: a two-word `PyGC_Head` directly before the object, on every CPython
//! from 3.11 to 3.15 with the GIL, for a type without a managed dict or weak-reference slot (which
//! add words before the header). Free-threaded builds keep the GC state in the object header and
//! need GC objects in their own heap: there, and on any other version, `available` is false and
//! handles are allocated as usual; so it is under `FERROLOOP_LAYOUT_READS=0`.

use pyo3::ffi;
use pyo3::prelude::*;

/// The bytes CPython puts in front of a GC object without a managed dict or weak-reference slot.
#[cfg(not(Py_GIL_DISABLED))]
const GC_HEAD: usize = 2 * std::mem::size_of::<usize>();

/// Managed dict (1 << 4) and managed weak reference (1 << 3, 3.12+) add words before the header.
#[cfg(not(Py_GIL_DISABLED))]
const PREHEADER_FLAGS: std::ffi::c_ulong = (1 << 4) | (1 << 3);

/// Whether this build knows the header (3.11 to 3.15, with the GIL) and layout reads are on.
pub fn supported(py: Python<'_>) -> bool {
    let version = py.version_info();
    cfg!(not(Py_GIL_DISABLED))
        && super::switch::layout_reads_allowed()
        && (3, 11) <= (version.major, version.minor)
        && (version.major, version.minor) <= (3, 15)
}

/// Whether `ty`'s instances may be allocated uncounted: `supported`, and a GC type without words
/// before its header.
pub fn available(py: Python<'_>, ty: *mut ffi::PyTypeObject) -> bool {
    #[cfg(not(Py_GIL_DISABLED))]
    {
        // SAFETY: reading the flags of a live type object.
        let flags = unsafe { (*ty).tp_flags };
        supported(py) && flags & ffi::Py_TPFLAGS_HAVE_GC != 0 && flags & PREHEADER_FLAGS == 0
    }
    #[cfg(Py_GIL_DISABLED)]
    {
        let _ = (py, ty);
        false
    }
}

/// A zeroed instance of `subtype` behind a zeroed (untracked) GC header, as
/// `PyType_GenericAlloc` makes it, without counting it as a GC allocation.
///
/// # Safety
/// The GIL is held; `available(subtype)` is true.
#[cfg(not(Py_GIL_DISABLED))]
pub unsafe fn alloc_uncounted(subtype: *mut ffi::PyTypeObject) -> *mut ffi::PyObject {
    // SAFETY: reading the size of a live type object.
    let size = GC_HEAD + unsafe { (*subtype).tp_basicsize } as usize;
    // SAFETY: a plain allocation under the GIL; NULL is handled below.
    let mem = unsafe { ffi::PyObject_Malloc(size) }.cast::<u8>();
    if mem.is_null() {
        // SAFETY: sets MemoryError and returns NULL, as an allocator must on failure.
        return unsafe { ffi::PyErr_NoMemory() };
    }
    // SAFETY: `mem` is `size` writable bytes; the object starts after the header, and
    // PyObject_Init gives it its type and first reference.
    unsafe {
        std::ptr::write_bytes(mem, 0, size);
        let obj = mem.add(GC_HEAD).cast::<ffi::PyObject>();
        ffi::PyObject_Init(obj, subtype);
        obj
    }
}

/// Frees memory from `alloc_uncounted`.
///
/// # Safety
/// The GIL is held; `obj` came from `alloc_uncounted` and was deallocated (untracked, contents
/// released).
#[cfg(not(Py_GIL_DISABLED))]
pub unsafe fn free_uncounted(obj: *mut ffi::PyObject) {
    // SAFETY: per the contract, the block starts GC_HEAD bytes before the object.
    unsafe { ffi::PyObject_Free(obj.cast::<u8>().sub(GC_HEAD).cast()) };
}
