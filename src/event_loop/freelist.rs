//! Free lists for `Handle` and `TimerHandle` objects.
//!
//! Every task step and every future callback makes a handle and frees it soon after. Reusing the
//! memory of freed handles saves the allocator, and above all keeps handles out of the garbage
//! collector's accounting: every allocation of a GC object counts towards the next young
//! collection and every free counts back, so without reuse a loop turning over thousands of
//! timers and task wake-ups triggers young collections that walk thousands of live tasks,
//! coroutines and futures.
//!
//! A handle allocated fresh (the list is empty) is not counted either, where the build allows it
//! (`cpython::gc_alloc`): the collector still sees every handle that is tracked (tracking does
//! not depend on how the memory was obtained); the count only decides when young collections
//! run, and handles, which mostly live for one iteration, are not what those collections are
//! for. Where it does not, fresh handles come from `PyType_GenericAlloc`.
//!
//! PyO3's own `#[pyclass(freelist)]` guards its list with a mutex; these lists are guarded by
//! the GIL instead (`tp_alloc` and `tp_free` are only ever called with it held), which saves two
//! atomic operations per handle. `install` puts the two functions in the `tp_alloc`/`tp_free`
//! slots of the exact classes; Python subclasses get CPython's defaults. An object taken from a
//! list comes back untracked by the collector, like PyO3's: `NewHandle::create` sets the
//! tracking each kind of handle needs.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;

use crate::cpython::gc_alloc;
use crate::cpython::gil::GilSlot;

/// Freed objects kept per class, at most: enough for the bursts of a busy loop, small enough
/// (about 0.8 MB each) to keep for good.
const CAPACITY: usize = 8192;

struct FreeList {
    /// The class whose exact instances this list recycles.
    class: AtomicPtr<ffi::PyTypeObject>,
    /// Whether fresh instances are allocated with a bare GC header (see the module doc).
    uncounted: AtomicBool,
    /// Raw pointers to freed memory, touched only by `alloc` and `free` (with the GIL held).
    objects: GilSlot<Vec<Memory>>,
}

/// The memory of a freed instance, kept for the next one.
struct Memory(*mut ffi::PyObject);

// SAFETY: a pointer to memory nobody else uses; it moves between threads only with the GIL.
unsafe impl Send for Memory {}

impl FreeList {
    const fn new() -> FreeList {
        FreeList {
            class: AtomicPtr::new(std::ptr::null_mut()),
            uncounted: AtomicBool::new(false),
            objects: GilSlot::new(Vec::new()),
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
            // SAFETY: the GIL is held (the caller's contract); popping runs no Python code.
            let popped = unsafe { self.objects.with(Python::assume_attached(), Vec::pop) };
            if let Some(Memory(obj)) = popped {
                // SAFETY: `obj` is the memory of a freed instance of exactly `subtype` (same
                // size, GC header untracked by its dealloc); PyObject_Init sets its type and
                // reference count (and takes a reference to the heap type) as a fresh
                // allocation would. PyO3 then writes the whole Rust value.
                unsafe { ffi::PyObject_Init(obj, subtype) };
                return obj;
            }
            #[cfg(not(Py_GIL_DISABLED))]
            if self.uncounted.load(Ordering::Relaxed) {
                // SAFETY: the GIL is held and `gc_alloc::available` vouched for the class.
                return unsafe { gc_alloc::alloc_uncounted(subtype) };
            }
        }
        // SAFETY: the default allocation for a GC type, with the caller's arguments.
        unsafe { ffi::PyType_GenericAlloc(subtype, nitems) }
    }

    /// # Safety
    /// The GIL is held; `obj` is an instance of this list's class (or a subclass) being
    /// deallocated (its dealloc already untracked it and released its contents).
    unsafe fn free(&self, obj: *mut c_void) {
        // A subclass made in Rust (`ThreadSafeHandle`) inherits this slot; its instances were
        // allocated by PyType_GenericAlloc, and go back the same way.
        // SAFETY: `obj` is still a whole object (its type is set) while it is being freed.
        if unsafe { ffi::Py_TYPE(obj.cast()) } != self.class.load(Ordering::Relaxed) {
            // SAFETY: the memory was allocated by PyType_GenericAlloc for a GC type.
            unsafe { ffi::PyObject_GC_Del(obj) };
            return;
        }
        // SAFETY: the GIL is held (the caller's contract); pushing runs no Python code.
        let kept = unsafe {
            self.objects.with(Python::assume_attached(), |objects| {
                let room = objects.len() < CAPACITY;
                if room {
                    objects.push(Memory(obj.cast()));
                }
                room
            })
        };
        if kept {
            return;
        }
        #[cfg(not(Py_GIL_DISABLED))]
        if self.uncounted.load(Ordering::Relaxed) {
            // SAFETY: allocated by `alloc_uncounted` (or recycled from such memory).
            unsafe { gc_alloc::free_uncounted(obj.cast()) };
            return;
        }
        {
            // SAFETY: the memory was allocated by PyType_GenericAlloc for a GC type.
            unsafe { ffi::PyObject_GC_Del(obj) };
        }
    }
}

/// Whether every new exact `Handle`/`TimerHandle` starts untracked by the collector (recycled,
/// or allocated with a bare header), so that `NewHandle::create` need not untrack it.
pub fn born_untracked() -> bool {
    HANDLES.uncounted.load(Ordering::Relaxed) && TIMERS.uncounted.load(Ordering::Relaxed)
}

static HANDLES: FreeList = FreeList::new();
static TIMERS: FreeList = FreeList::new();

/// The list of `TimerHandle`s if `TIMER`, else of `Handle`s.
fn list<const TIMER: bool>() -> &'static FreeList {
    if TIMER {
        &TIMERS
    } else {
        &HANDLES
    }
}

unsafe extern "C" fn alloc<const TIMER: bool>(
    subtype: *mut ffi::PyTypeObject,
    nitems: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // SAFETY: installed as the `tp_alloc` of the class `list::<TIMER>()` recycles, called by
    // CPython with the GIL held.
    unsafe { list::<TIMER>().alloc(subtype, nitems) }
}

unsafe extern "C" fn free<const TIMER: bool>(obj: *mut c_void) {
    // SAFETY: installed as the `tp_free` of that same class, called with the GIL held.
    unsafe { list::<TIMER>().free(obj) }
}

/// Puts the free lists in the allocation slots of `handle` and `timer`, the classes `Handle` and
/// `TimerHandle`. Called once, when the module is imported, before any handle exists.
///
/// Not on a free-threaded build: there one list per process would be a lock every loop thread
/// takes for every handle, and the collector finds objects by walking each thread's heap, so a
/// list per thread would have to give its memory back when its thread ends, without a thread
/// state to do it with. CPython's allocator already keeps freed memory per thread there.
pub fn install(py: Python<'_>, handle: *mut ffi::PyTypeObject, timer: *mut ffi::PyTypeObject) {
    if cfg!(Py_GIL_DISABLED) {
        return;
    }
    HANDLES.class.store(handle, Ordering::Relaxed);
    TIMERS.class.store(timer, Ordering::Relaxed);
    HANDLES
        .uncounted
        .store(gc_alloc::available(py, handle), Ordering::Relaxed);
    TIMERS
        .uncounted
        .store(gc_alloc::available(py, timer), Ordering::Relaxed);
    // SAFETY: the GIL is held and both are live type objects with no instances yet, so no
    // object is allocated by one function and freed by another; both slots are plain function
    // pointers CPython reads at each allocation and PyO3 at each deallocation.
    unsafe {
        (*handle).tp_alloc = Some(alloc::<false>);
        (*handle).tp_free = Some(free::<false>);
        (*timer).tp_alloc = Some(alloc::<true>);
        (*timer).tp_free = Some(free::<true>);
    }
}
