//! The trace recorder, `ferroloop._core.Tracer`: while a `ferroloop.trace()` is on, the loop
//! hands it every callback run, poll wait, iteration start and transport transfer, and it keeps
//! them as numbered events in a bounded ring (`core::trace_ring`).
//!
//! Names are not kept per event: each callback's *subject* is interned once. A task's step or
//! wake-up has the task as subject (the C Task schedules bound builtin methods, or on 3.11-3.12 a
//! `TaskStepMethWrapper`, whose `__self__` is the task); a bound Python method has its function;
//! a builtin method its C function; anything else itself. The first time a subject is seen, the
//! Python side (`ferroloop._trace.Recorder.subject`) names it and gives it an id, holding it by
//! a weak reference whose callback calls `forget`, so an address reused by a later object gets a
//! new id and tracing never keeps a task alive.
//!
//! After a task's step, what it now waits on is recorded too: done, ready again, another task,
//! or a label for the innermost coroutine awaiting (its code object and the waiter's type,
//! interned the same way: `Recorder.label`). Reading that costs a few attribute reads per step,
//! paid only while tracing.

use std::collections::HashMap;
use std::ffi::CStr;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyType};
use pyo3::{ffi, intern};

use crate::core::ticks;
use crate::core::trace_ring::{Event, Kind, TraceRing};
use crate::cpython::gil::GilCell;

/// Whether a `ferroloop.trace()` is on: a loop that starts running then asks to be attached.
static SESSION: AtomicBool = AtomicBool::new(false);

pub fn session_active() -> bool {
    SESSION.load(Ordering::Relaxed)
}

/// `_core._trace_session(on)`: a trace session begins or ends.
#[pyfunction]
pub fn _trace_session(on: bool) {
    SESSION.store(on, Ordering::Relaxed);
}

/// A subject's kind, as `Recorder.subject` receives it.
const SUBJECT_TASK: u8 = 0;
/// A C function: lives as long as its module, never forgotten.
const SUBJECT_STATIC: u8 = 1;
const SUBJECT_OBJECT: u8 = 2;

/// A wait label's top byte says what it is; the rest, which subject or label.
pub const WAIT_DONE: u64 = 1 << 56;
pub const WAIT_READY: u64 = 2 << 56;
pub const WAIT_TASK: u64 = 3 << 56;
pub const WAIT_LABEL: u64 = 4 << 56;

/// Pointers as keys: multiply and keep the high bits (they are aligned, so the low bits carry
/// nothing).
#[derive(Default)]
struct PtrHasher(u64);

impl Hasher for PtrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0 ^ n as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
}

type PtrMap<K, V> = HashMap<K, V, BuildHasherDefault<PtrHasher>>;

struct Inner {
    ring: TraceRing,
    subjects: PtrMap<usize, u32>,
    labels: PtrMap<(usize, usize), u32>,
    /// The tick the trace's times count from.
    origin: u64,
}

#[pyclass(module = "ferroloop._core", frozen, weakref)]
pub struct Tracer {
    inner: GilCell<Inner>,
    /// `ferroloop._trace.Recorder`: names subjects and labels.
    recorder: Py<PyAny>,
    task_type: Py<PyType>,
    method_type: Py<PyType>,
}

#[pymethods]
impl Tracer {
    #[new]
    fn new(py: Python<'_>, capacity: usize, recorder: Py<PyAny>) -> PyResult<Tracer> {
        if capacity == 0 {
            return Err(PyValueError::new_err("capacity must be positive"));
        }
        ticks::calibrate();
        let task_type = py
            .import(intern!(py, "asyncio"))?
            .getattr(intern!(py, "Task"))?
            .cast_into::<PyType>()?
            .unbind();
        let method_type = py
            .import(intern!(py, "types"))?
            .getattr(intern!(py, "MethodType"))?
            .cast_into::<PyType>()?
            .unbind();
        Ok(Tracer {
            inner: GilCell::new(Inner {
                ring: TraceRing::new(capacity),
                subjects: PtrMap::default(),
                labels: PtrMap::default(),
                origin: ticks::now(),
            }),
            recorder,
            task_type,
            method_type,
        })
    }

    /// The subject at `address` is gone: a new object there is a new subject.
    fn forget(&self, py: Python<'_>, address: usize) {
        if let Some(mut inner) = self.inner.try_borrow_mut(py) {
            inner.subjects.remove(&address);
        }
    }

    /// The events kept, oldest first, as `struct` records `<BxxxIQQQ` with times in ns from the
    /// trace's start, and how many were lost to the bound. The ring is left empty.
    fn drain<'py>(&self, py: Python<'py>) -> (Bound<'py, PyBytes>, u64) {
        let mut inner = self.inner.borrow_mut(py);
        let dropped = inner.ring.dropped();
        let origin = inner.origin;
        let events = inner.ring.drain();
        drop(inner);
        let ns = |t: u64| ticks::to_ns(t.saturating_sub(origin));
        let mut out = Vec::with_capacity(events.len() * 32);
        for e in events {
            let (t0, t1) = match e.kind {
                Kind::Callback | Kind::Poll => (ns(e.t0), ns(e.t1)),
                _ => (ns(e.t0), e.t1),
            };
            out.push(e.kind as u8);
            out.extend_from_slice(&[0, 0, 0]);
            out.extend_from_slice(&e.a.to_le_bytes());
            out.extend_from_slice(&t0.to_le_bytes());
            out.extend_from_slice(&t1.to_le_bytes());
            out.extend_from_slice(&e.b.to_le_bytes());
        }
        (PyBytes::new(py, &out), dropped)
    }

    /// `(events ever pushed, position of the oldest kept)`: an event pushed before the second
    /// is no longer in the ring.
    fn position(&self, py: Python<'_>) -> (u64, u64) {
        let inner = self.inner.borrow(py);
        (inner.ring.pushed(), inner.ring.oldest_kept())
    }

    /// Nanoseconds from the trace's start to now.
    fn now_ns(&self, py: Python<'_>) -> u64 {
        let origin = self.inner.borrow(py).origin;
        ticks::to_ns(ticks::now().saturating_sub(origin))
    }

    /// The most memory the ring may hold, in bytes.
    #[getter]
    fn bound_bytes(&self, py: Python<'_>) -> usize {
        self.inner.borrow(py).ring.bound_bytes()
    }

    fn __traverse__(&self, visit: pyo3::gc::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.recorder)
    }
}

impl Tracer {
    fn push(&self, py: Python<'_>, kind: Kind, a: u32, t0: u64, t1: u64, b: u64) {
        self.inner
            .borrow_mut(py)
            .ring
            .push(Event { kind, a, t0, t1, b });
    }

    pub fn poll(&self, py: Python<'_>, before: u64, after: u64, events: u64) {
        self.push(py, Kind::Poll, 0, before, after, events);
    }

    pub fn iteration(&self, py: Python<'_>, at: u64, ready: usize) {
        self.push(py, Kind::Ready, 0, at, 0, ready as u64);
    }

    /// Transport `id` read (or wrote, if `wrote`) `nbytes` at tick `at`.
    pub fn transfer(&self, py: Python<'_>, at: u64, id: u32, wrote: bool, nbytes: usize) {
        self.push(py, Kind::Transfer, id, at, wrote as u64, nbytes as u64);
    }

    /// `callback` ran from `start` to `end`; a task's step also records what the task waits on.
    pub fn callback(
        &self,
        callback: &Bound<'_, PyAny>,
        start: u64,
        end: u64,
        timer: bool,
    ) -> PyResult<()> {
        let py = callback.py();
        let (task, address, key, kind) = self.subject_of(callback)?;
        let id = self.subject(address, key.as_ref().unwrap_or(callback), kind, callback)?;
        self.push(py, Kind::Callback, id, start, end, timer as u64);
        if let Some(task) = task {
            let wait = self.wait_of(&task)?;
            self.push(py, Kind::TaskWait, id, end, 0, wait);
        }
        Ok(())
    }

    fn is_task(&self, obj: &Bound<'_, PyAny>) -> bool {
        // SAFETY: both are live objects; the check only reads their types.
        unsafe { ffi::PyObject_TypeCheck(obj.as_ptr(), self.task_type.as_ptr().cast()) != 0 }
    }

    /// The task a callback steps (if any), the address its subject is keyed by, the subject
    /// (None: a C function, named by the callback), and its kind.
    #[allow(clippy::type_complexity)]
    fn subject_of<'py>(
        &self,
        callback: &Bound<'py, PyAny>,
    ) -> PyResult<(
        Option<Bound<'py, PyAny>>,
        usize,
        Option<Bound<'py, PyAny>>,
        u8,
    )> {
        let py = callback.py();
        let ptr = callback.as_ptr();
        // SAFETY: `ptr` is a live object; the checks read its type, and PyCFunction_GetSelf a
        // builtin function's bound object (a borrowed reference, or NULL).
        let builtin_self = unsafe {
            if ffi::PyCFunction_Check(ptr) != 0 {
                let owner = ffi::PyCFunction_GetSelf(ptr);
                Some((!owner.is_null()).then(|| Bound::from_borrowed_ptr(py, owner)))
            } else {
                None
            }
        };
        if let Some(owner) = builtin_self {
            if let Some(owner) = owner.filter(|o| self.is_task(o)) {
                return Ok((
                    Some(owner.clone()),
                    owner.as_ptr() as usize,
                    Some(owner),
                    SUBJECT_TASK,
                ));
            }
            // SAFETY: `ptr` is a builtin function (checked above).
            let function = unsafe { ffi::PyCFunction_GetFunction(ptr) };
            return Ok((
                None,
                function.map_or(0, |f| f as usize),
                None,
                SUBJECT_STATIC,
            ));
        }
        let ty = callback.get_type();
        let wraps_a_step = ty.is(self.method_type.bind(py)) || is_step_wrapper(&ty);
        if wraps_a_step {
            let owner = callback.getattr(intern!(py, "__self__"))?;
            if self.is_task(&owner) {
                return Ok((
                    Some(owner.clone()),
                    owner.as_ptr() as usize,
                    Some(owner),
                    SUBJECT_TASK,
                ));
            }
            if let Ok(function) = callback.getattr(intern!(py, "__func__")) {
                return Ok((
                    None,
                    function.as_ptr() as usize,
                    Some(function),
                    SUBJECT_OBJECT,
                ));
            }
        }
        Ok((None, ptr as usize, None, SUBJECT_OBJECT))
    }

    /// The interned id of the subject at `address`: `subject`, or for a C function the address
    /// of its code (`subject` is then the callback, for its name).
    fn subject(
        &self,
        address: usize,
        subject: &Bound<'_, PyAny>,
        kind: u8,
        callback: &Bound<'_, PyAny>,
    ) -> PyResult<u32> {
        let py = subject.py();
        if let Some(&id) = self.inner.borrow(py).subjects.get(&address) {
            return Ok(id);
        }
        let id: u32 = self
            .recorder
            .bind(py)
            .call_method1(intern!(py, "subject"), (subject, kind, callback, address))?
            .extract()?;
        self.inner.borrow_mut(py).subjects.insert(address, id);
        Ok(id)
    }

    /// What `task` waits on after its step (a `WAIT_*` value).
    fn wait_of(&self, task: &Bound<'_, PyAny>) -> PyResult<u64> {
        let py = task.py();
        if task.call_method0(intern!(py, "done"))?.is_truthy()? {
            return Ok(WAIT_DONE);
        }
        let waiter = task.getattr(intern!(py, "_fut_waiter"))?;
        if waiter.is_none() {
            return Ok(WAIT_READY);
        }
        if self.is_task(&waiter) {
            let id = self.subject(waiter.as_ptr() as usize, &waiter, SUBJECT_TASK, &waiter)?;
            return Ok(WAIT_TASK | id as u64);
        }
        let code = innermost_code(&task.call_method0(intern!(py, "get_coro"))?)?;
        let key = (
            code.as_ref().map_or(0, |c| c.as_ptr() as usize),
            waiter.get_type().as_ptr() as usize,
        );
        if let Some(&id) = self.inner.borrow(py).labels.get(&key) {
            return Ok(WAIT_LABEL | id as u64);
        }
        let id: u32 = self
            .recorder
            .bind(py)
            .call_method1(intern!(py, "label"), (code, waiter))?
            .extract()?;
        self.inner.borrow_mut(py).labels.insert(key, id);
        Ok(WAIT_LABEL | id as u64)
    }
}

/// The C Task's step callback on 3.11 and 3.12.
fn is_step_wrapper(ty: &Bound<'_, PyType>) -> bool {
    // SAFETY: a live type's `tp_name` is a NUL-terminated string it owns.
    let name = unsafe { CStr::from_ptr((*ty.as_type_ptr()).tp_name) };
    name.to_bytes().ends_with(b"TaskStepMethWrapper")
}

/// The code of the innermost coroutine (or generator) in `coro`'s await chain: the one that
/// awaits a future.
fn innermost_code<'py>(coro: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = coro.py();
    let mut current = coro.clone();
    let mut code = None;
    for _ in 0..64 {
        // SAFETY: `current` is a live object; the checks read its type.
        let (is_coro, is_gen) = unsafe {
            (
                ffi::PyCoro_CheckExact(current.as_ptr()) != 0,
                ffi::PyGen_Check(current.as_ptr()) != 0,
            )
        };
        let (code_name, await_name) = if is_coro {
            (intern!(py, "cr_code"), intern!(py, "cr_await"))
        } else if is_gen {
            (intern!(py, "gi_code"), intern!(py, "gi_yieldfrom"))
        } else {
            break;
        };
        code = Some(current.getattr(code_name)?);
        let next = current.getattr(await_name)?;
        if next.is_none() {
            break;
        }
        current = next;
    }
    Ok(code)
}
