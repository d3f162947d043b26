//! Free lists for `Handle` and `TimerHandle` objects.
//!
//! Every task step and every future callback makes a handle and frees it soon after. Reusing the
//! memory of freed handles saves the allocator, and above all keeps handles out of the garbage
//! collector's accounting: every allocation of a GC object counts towards the next young
//! collection and every free counts back, so without reuse a loop turning over thousands of
//! timers and task wake-ups triggers young collections that walk thousands of live tasks,
//! coroutines and futures.
//!
//! PyO3's own `#[pyclass(freelist)]` guards its list with a mutex; these lists are guarded by
//! the GIL instead (`tp_alloc` and `tp_free` are only ever called with it held), which saves two
//! atomic operations per handle. `install` puts the two functions in the `tp_alloc`/`tp_free`
//! slots of the exact classes; Python subclasses get CPython's defaults. An object taken from a
//! list comes back untracked by the collector, like PyO3's: `NewHandle::create` sets the
//! tracking each kind of handle needs.

use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::PyTypeInfo;

use super::handle::{Handle, TimerHandle};

/// Freed objects kept per class, at most: enough for the bursts of a busy loop, small enough
/// (about 0.8 MB each) to keep for good.
const CAPACITY: usize = 8192;

struct FreeList {
    /// The class whose exact instances this list recycles.
    class: AtomicPtr<ffi::PyTypeObject>,
    objects: UnsafeCell<Vec<*mut ffi::PyObject>>,
}

// SAFETY: `objects` is only touched by `alloc` and `free`, which CPython calls with the GIL held,
// and neither calls back into Python while it holds the reference, so accesses never overlap.
unsafe impl Sync for FreeList {}

impl FreeList {
    const fn new() -> FreeList {
        FreeList {
            class: AtomicPtr::new(std::ptr::null_mut()),
            objects: UnsafeCell::new(Vec::new()),
        }
    }

    /// # Safety
    /// The GIL is held; `subtype` is a live type whose `tp_alloc` is this list's.
    unsafe fn alloc(
        &self,
        subtype: *mut ffi::PyTypeObject,
        nitems: ffi::Py_ssize_t,
    ) -> *mut ffi::PyObject {
        if nitems == 0 && subtype == self.class.load(Ordering::Relaxed) {
            // SAFETY: see the Sync impl.
            let objects = unsafe { &mut *self.objects.get() };
            if let Some(obj) = objects.pop() {
                // SAFETY: `obj` is the memory of a freed instance of exactly `subtype` (same
                // size, GC header untracked by its dealloc); PyObject_Init sets its type and
                // reference count (and takes a reference to the heap type) as a fresh
                // allocation would. PyO3 then writes the whole Rust value.
                unsafe { ffi::PyObject_Init(obj, subtype) };
                return obj;
            }
        }
        // SAFETY: the default allocation for a GC type, with the caller's arguments.
        unsafe { ffi::PyType_GenericAlloc(subtype, nitems) }
    }

    /// # Safety
    /// The GIL is held; `obj` is an instance of this list's exact class being deallocated (its
    /// dealloc already untracked it and released its contents).
    unsafe fn free(&self, obj: *mut c_void) {
        // SAFETY: see the Sync impl.
        let objects = unsafe { &mut *self.objects.get() };
        if objects.len() < CAPACITY {
            objects.push(obj.cast());
        } else {
            // SAFETY: the memory was allocated by PyType_GenericAlloc for a GC type.
            unsafe { ffi::PyObject_GC_Del(obj) };
        }
    }
}

static HANDLES: FreeList = FreeList::new();
static TIMERS: FreeList = FreeList::new();

unsafe extern "C" fn alloc_handle(
    subtype: *mut ffi::PyTypeObject,
    nitems: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // SAFETY: installed as the `tp_alloc` of `Handle`, called by CPython with the GIL held.
    unsafe { HANDLES.alloc(subtype, nitems) }
}

unsafe extern "C" fn free_handle(obj: *mut c_void) {
    // SAFETY: installed as the `tp_free` of `Handle`, called with the GIL held.
    unsafe { HANDLES.free(obj) }
}

unsafe extern "C" fn alloc_timer(
    subtype: *mut ffi::PyTypeObject,
    nitems: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // SAFETY: installed as the `tp_alloc` of `TimerHandle`, called with the GIL held.
    unsafe { TIMERS.alloc(subtype, nitems) }
}

unsafe extern "C" fn free_timer(obj: *mut c_void) {
    // SAFETY: installed as the `tp_free` of `TimerHandle`, called with the GIL held.
    unsafe { TIMERS.free(obj) }
}

/// Puts the free lists in the allocation slots of `Handle` and `TimerHandle`. Called once, when
/// the module is imported, before any handle exists.
pub fn install(py: Python<'_>) {
    let handle = Handle::type_object_raw(py);
    let timer = TimerHandle::type_object_raw(py);
    HANDLES.class.store(handle, Ordering::Relaxed);
    TIMERS.class.store(timer, Ordering::Relaxed);
    // SAFETY: the GIL is held and both are live type objects with no instances yet, so no
    // object is allocated by one function and freed by another; both slots are plain function
    // pointers CPython reads at each allocation and PyO3 at each deallocation.
    unsafe {
        (*handle).tp_alloc = Some(alloc_handle);
        (*handle).tp_free = Some(free_handle);
        (*timer).tp_alloc = Some(alloc_timer);
        (*timer).tp_free = Some(free_timer);
    }
}
