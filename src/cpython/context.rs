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
//!
//! The running thread's current Context is `PyThreadState.context`, whose place in the thread
//! state differs between versions: the probe finds it as the one word that holds each of two
//! Contexts while entered, and neither once exited. Comparing it with the last snapshot tells,
//! without copying it, that a new handle can share that snapshot.

use std::ffi::CStr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// Where `ctx_vars` sits: after the object header and the `ctx_prev` pointer.
const VARS_OFFSET: usize = std::mem::size_of::<ffi::PyObject>() + std::mem::size_of::<usize>();

static READER: PyOnceLock<Option<VarsReader>> = PyOnceLock::new();

/// Reads Contexts' variable mappings; exists only where the layout was vouched for. With
/// `current`, it also finds the running thread's current Context in its `PyThreadState`.
#[derive(Clone, Copy)]
pub struct VarsReader {
    /// The offset of `PyThreadState.context` (`Some` where probed), the running thread's current
    /// Context (NULL until the thread first needs one).
    current: Option<usize>,
}

/// How far into a `PyThreadState` the probe looks for `context`: the field sits some 200 bytes
/// in from 3.11 to 3.15, and every thread state is larger than this.
const THREAD_STATE_WORDS: usize = 64;

/// The mapping pointer stored in `ctx`.
///
/// # Safety
/// The GIL is held and `ctx` is a live, exact `contextvars.Context`.
unsafe fn vars_at(ctx: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: per the contract, VARS_OFFSET lies inside the Context and holds an aligned
    // pointer. The load is atomic: on a free-threaded build another thread that has the Context
    // entered may be setting a variable; the pointer is only compared, never dereferenced.
    unsafe {
        std::sync::atomic::AtomicPtr::from_ptr(
            ctx.cast::<u8>()
                .add(VARS_OFFSET)
                .cast::<*mut ffi::PyObject>(),
        )
        .load(std::sync::atomic::Ordering::Relaxed)
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

/// The word index in the running thread's `PyThreadState` holding `ctx`, if exactly one does.
///
/// # Safety
/// The GIL is held (so there is a thread state, of at least THREAD_STATE_WORDS words).
unsafe fn find_in_thread_state(ctx: *mut ffi::PyObject) -> Option<usize> {
    // SAFETY: per the contract, the thread state is live and that large.
    let words = unsafe { ffi::PyThreadState_Get().cast::<usize>() };
    let mut found = None;
    for i in 0..THREAD_STATE_WORDS {
        // SAFETY: within the thread state (see above).
        if unsafe { *words.add(i) } == ctx as usize {
            if found.is_some() {
                return None;
            }
            found = Some(i);
        }
    }
    found
}

/// Where `PyThreadState.context` sits: the one word that holds each of two Contexts while it is
/// entered, and neither once both are exited.
fn probe_current(py: Python<'_>) -> PyResult<Option<usize>> {
    // SAFETY: the GIL is held; each call returns a new reference or NULL with an exception set;
    // Enter/Exit are paired; the thread state is read within its first THREAD_STATE_WORDS words.
    unsafe {
        let a = Bound::from_owned_ptr_or_err(py, ffi::PyContext_New())?;
        let b = Bound::from_owned_ptr_or_err(py, ffi::PyContext_New())?;
        let mut seen = [None, None];
        for (i, ctx) in [&a, &b].into_iter().enumerate() {
            if ffi::PyContext_Enter(ctx.as_ptr()) < 0 {
                return Err(PyErr::fetch(py));
            }
            seen[i] = find_in_thread_state(ctx.as_ptr());
            if ffi::PyContext_Exit(ctx.as_ptr()) < 0 {
                return Err(PyErr::fetch(py));
            }
        }
        let after = [
            find_in_thread_state(a.as_ptr()),
            find_in_thread_state(b.as_ptr()),
        ];
        Ok(match seen {
            [Some(x), Some(y)] if x == y && after == [None, None] => {
                Some(x * std::mem::size_of::<usize>())
            }
            _ => None,
        })
    }
}

/// The reader, if the layout was vouched for (probed on first use). The first call releases the
/// GIL (`PyOnceLock` does while it initialises), so it must not happen under a `GilCell` borrow.
pub fn vars_reader(py: Python<'_>) -> Option<VarsReader> {
    *READER.get_or_init(py, || {
        if !super::switch::layout_reads_allowed() || !probe(py).unwrap_or(false) {
            return None;
        }
        let current = if cfg!(Py_GIL_DISABLED) {
            None
        } else {
            probe_current(py).ok().flatten()
        };
        Some(VarsReader { current })
    })
}

impl VarsReader {
    /// Whether the running thread's current Context can be read (the probe found its field).
    pub fn reads_current(&self) -> bool {
        self.current.is_some()
    }

    /// Whether `snapshot` holds the variables of the running thread's current Context, found
    /// without copying it (`PyContext_CopyCurrent` allocates a Context, which counts towards
    /// the next collection); false when that cannot be told.
    pub fn is_current(&self, _py: Python<'_>, snapshot: &Py<PyAny>) -> bool {
        let Some(offset) = self.current else {
            return false;
        };
        // SAFETY: the GIL is held (the token), so this thread has a live thread state, whose
        // `context` field the probe found at `offset`: NULL or a live Context.
        let current = unsafe {
            *ffi::PyThreadState_Get()
                .cast::<u8>()
                .add(offset)
                .cast::<*mut ffi::PyObject>()
        };
        let snapshot = snapshot.as_ptr();
        // SAFETY: both are exact Contexts (checked) kept alive by the thread and the caller.
        !current.is_null()
            && is_context(current)
            && is_context(snapshot)
            && unsafe { vars_at(current) == vars_at(snapshot) }
    }

    /// Whether two Contexts hold the very same variables (the same mapping); false if either is
    /// not an exact Context.
    pub fn same_vars(&self, _py: Python<'_>, a: &Py<PyAny>, b: &Py<PyAny>) -> bool {
        let (a, b) = (a.as_ptr(), b.as_ptr());
        // SAFETY: the GIL is held (the token); both are exact Contexts (checked), alive as their
        // owners hold them; and `self` exists only where the layout was vouched for.
        is_context(a) && is_context(b) && unsafe { vars_at(a) == vars_at(b) }
    }
}
