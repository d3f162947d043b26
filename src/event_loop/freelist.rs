//! Free lists for `Handle` and `TimerHandle` objects.
//!
//! Every task step and every future callback makes a handle and frees it soon after. Reusing the
//! memory of freed handles saves the allocator, and above all keeps handles out of the garbage
//! collector's accounting: every allocation of a GC object counts towards the next young
//! collection and every free counts back, so without reuse a loop turning over thousands of
//! timers and task wake-ups triggers young collections that walk thousands of live tasks,
//! coroutines and futures.
//!
//! A handle allocated fresh (the list is empty) is not counted either: the memory is taken with
//! `PyObject_Malloc` and a zeroed (untracked) two-word GC header in front, which is what
//! `PyType_GenericAlloc` does for these classes, minus the count. The collector still sees
//! every handle that is tracked (tracking does not depend on how the memory was obtained); the
//! count only decides when young collections run, and handles, which mostly live for one
//! iteration, are not what those collections are for. This layout is checked once at start-up
//! (`install`); where it does not hold, fresh handles come from `PyType_GenericAlloc`.
//!
//! PyO3's own `#[pyclass(freelist)]` guards its list with a mutex; these lists are guarded by
//! the GIL instead (`tp_alloc` and `tp_free` are only ever called with it held), which saves two
//! atomic operations per handle. `install` puts the two functions in the `tp_alloc`/`tp_free`
//! slots of the exact classes; Python subclasses get CPython's defaults. An object taken from a
//! list comes back untracked by the collector, like PyO3's: `NewHandle::create` sets the
//! tracking each kind of handle needs.

use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::PyTypeInfo;

use super::handle::{Handle, TimerHandle};

/// Freed objects kept per class, at most: enough for the bursts of a busy loop, small enough
/// (about 0.8 MB each) to keep for good.
const CAPACITY: usize = 8192;

/// The bytes CPython puts in front of a GC object without a managed dict or weak-reference slot:
/// `PyGC_Head`, two words.
const GC_HEAD: usize = 2 * std::mem::size_of::<usize>();

struct FreeList {
    /// The class whose exact instances this list recycles.
    class: AtomicPtr<ffi::PyTypeObject>,
    /// Whether fresh instances are allocated with a bare GC header (see the module doc).
    uncounted: AtomicBool,
    objects: UnsafeCell<Vec<*mut ffi::PyObject>>,
}

// SAFETY: `objects` is only touched by `alloc` and `free`, which CPython calls with the GIL held,
// and neither calls back into Python while it holds the reference, so accesses never overlap.
unsafe impl Sync for FreeList {}

impl FreeList {
    const fn new() -> FreeList {
        FreeList {
            class: AtomicPtr::new(std::ptr::null_mut()),
            uncounted: AtomicBool::new(false),
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
            if self.uncounted.load(Ordering::Relaxed) {
                // SAFETY: as the caller's contract; see `alloc_uncounted`.
                return unsafe { alloc_uncounted(subtype) };
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
        } else if self.uncounted.load(Ordering::Relaxed) {
            // SAFETY: allocated by `alloc_uncounted` (or recycled from such memory): the block
            // starts GC_HEAD bytes before the object.
            unsafe { ffi::PyObject_Free(obj.cast::<u8>().sub(GC_HEAD).cast()) };
        } else {
            // SAFETY: the memory was allocated by PyType_GenericAlloc for a GC type.
            unsafe { ffi::PyObject_GC_Del(obj) };
        }
    }
}

/// A zeroed instance of `subtype` behind a zeroed (untracked) GC header, as
/// `PyType_GenericAlloc` makes it, without counting it as a GC allocation.
///
/// # Safety
/// The GIL is held; `subtype` is a live GC type without a managed dict or weak-reference slot
/// (checked by `install`), so its instances are preceded by exactly `GC_HEAD` bytes.
unsafe fn alloc_uncounted(subtype: *mut ffi::PyTypeObject) -> *mut ffi::PyObject {
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

/// False on a free-threaded CPython (3.13t+), whose objects carry their GC state in the header.
fn gil_enabled(py: Python<'_>) -> bool {
    py.import("sys")
        .and_then(|sys| sys.getattr("_is_gil_enabled"))
        .and_then(|f| f.call0())
        .and_then(|v| v.extract::<bool>())
        .unwrap_or(true)
}

/// Whether `ty`'s instances have exactly the bare GC header in front, on a CPython whose header
/// is known to be two words (3.8 to 3.14, with the GIL).
fn bare_gc_header(py: Python<'_>, ty: *mut ffi::PyTypeObject) -> bool {
    let version = py.version_info();
    // Managed dict (1 << 4) and managed weak reference (1 << 3, 3.12+) add words in front.
    const PREHEADER_FLAGS: std::ffi::c_ulong = (1 << 4) | (1 << 3);
    // SAFETY: reading the flags of a live type object.
    let flags = unsafe { (*ty).tp_flags };
    (3, 8) <= (version.major, version.minor)
        && (version.major, version.minor) <= (3, 14)
        && gil_enabled(py)
        && flags & ffi::Py_TPFLAGS_HAVE_GC != 0
        && flags & PREHEADER_FLAGS == 0
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

/// Puts the free lists in the allocation slots of `Handle` and `TimerHandle`. Called once, when
/// the module is imported, before any handle exists.
pub fn install(py: Python<'_>) {
    let handle = Handle::type_object_raw(py);
    let timer = TimerHandle::type_object_raw(py);
    HANDLES.class.store(handle, Ordering::Relaxed);
    TIMERS.class.store(timer, Ordering::Relaxed);
    HANDLES
        .uncounted
        .store(bare_gc_header(py, handle), Ordering::Relaxed);
    TIMERS
        .uncounted
        .store(bare_gc_header(py, timer), Ordering::Relaxed);
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
