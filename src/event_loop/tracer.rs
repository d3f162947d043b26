//! The trace recorder, `ferroloop._core.Tracer`: while a `ferroloop.trace()` is on, the loop
//! hands it every callback run, poll wait, iteration start and transport transfer, and it keeps
//! them as numbered events in a bounded ring (`core::trace_ring`).
//!
//! Names are not kept per event: each callback's *subject* is interned once, by an address that
//! stays its own while the tracer may meet it again. A task's step or wake-up has the task as
//! subject (the C Task schedules bound builtin methods, or on 3.11-3.12 a `TaskStepMethWrapper`,
//! whose `__self__` is the task): its address is dropped from the table when the task is seen
//! done, so a later object there is a new subject. A Python function (or a method's function) is
//! interned by its code object, a builtin by its C function, anything else by its type; the
//! tracer holds the code object or type, so those addresses are never reused while it lives.
//! Names are read when a subject is first seen (a task's name and coroutine, a code's qualified
//! name), with no weak reference and no Python-level call: tracing keeps no task alive.
//!
//! A done task's name is kept until the ring has overwritten every event that could name it,
//! then dropped: a server that makes a task per request keeps the names of its live tasks and
//! of those still in the ring, within the ring's bound.
//!
//! After a task's step, what it now waits on is recorded too: done, ready again, another task,
//! or a label for the innermost coroutine awaiting (its code object and the waiter's type,
//! labelled once by `ferroloop._trace.Recorder.label`). Reading that costs a few attribute reads
//! per step, paid only while tracing.

use std::collections::{HashMap, VecDeque};
use std::ffi::CStr;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyType};
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

/// New subjects between two purges of done tasks' names.
const PURGE_EVERY: u32 = 256;

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

/// What a subject is called: a task's name and coroutine, or a callable's qualified name.
struct Subject {
    name: Py<PyAny>,
    /// For a task: its coroutine's `__qualname__`.
    coro: Option<Py<PyAny>>,
    /// The code object or type whose address keys the subject, held so that it stays its own.
    _keep: Option<Py<PyAny>>,
}

struct Inner {
    ring: TraceRing,
    /// Address -> subject id, for the subjects that may be met again.
    keys: PtrMap<usize, u32>,
    subjects: HashMap<u32, Subject>,
    next_id: u32,
    /// (ring position after its last event, id) of each task seen done, oldest first.
    done: VecDeque<(u64, u32)>,
    new_since_purge: u32,
    labels: PtrMap<(usize, usize), u32>,
    /// The ready queue's length last recorded.
    last_ready: Option<usize>,
    /// The type of the 3.11-3.12 C Task's step callback, once met.
    step_wrapper: usize,
    /// The tick the trace's times count from.
    origin: u64,
}

#[pyclass(module = "ferroloop._core", frozen, weakref)]
pub struct Tracer {
    inner: GilCell<Inner>,
    /// `ferroloop._trace.Recorder`: labels what tasks wait on.
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
        let origin = ticks::now();
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
                ring: TraceRing::new(capacity, origin),
                keys: PtrMap::default(),
                subjects: HashMap::new(),
                next_id: 1,
                done: VecDeque::new(),
                new_since_purge: 0,
                labels: PtrMap::default(),
                last_ready: None,
                step_wrapper: 0,
                origin,
            }),
            recorder,
            task_type,
            method_type,
        })
    }

    /// The names of the subjects the events may name: id -> (name, coroutine or None).
    fn subjects<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (id, subject) in &self.inner.borrow(py).subjects {
            out.set_item(id, (&subject.name, &subject.coro))?;
        }
        Ok(out)
    }

    /// The events kept, oldest first, as `struct` records `<BxxxIQQQ` with times in ns from the
    /// trace's start, and how many were lost to the bound. The ring is left empty.
    fn drain<'py>(&self, py: Python<'py>) -> (Bound<'py, PyBytes>, u64) {
        let mut inner = self.inner.borrow_mut(py);
        let dropped = inner.ring.dropped();
        let events = inner.ring.drain();
        drop(inner);
        let ns = ticks::to_ns;
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

    /// An iteration begins at `at` with `ready` callbacks: recorded when the length changed.
    pub fn iteration(&self, py: Python<'_>, at: u64, ready: usize) {
        let mut inner = self.inner.borrow_mut(py);
        if inner.last_ready != Some(ready) {
            inner.last_ready = Some(ready);
            inner.ring.push(Event {
                kind: Kind::Ready,
                a: 0,
                t0: at,
                t1: 0,
                b: ready as u64,
            });
        }
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
        let (task, id) = self.subject_of(callback)?;
        self.push(py, Kind::Callback, id, start, end, timer as u64);
        if let Some(task) = task {
            let wait = self.wait_of(&task)?;
            self.push(py, Kind::TaskWait, id, end, 0, wait);
            if wait == WAIT_DONE {
                self.task_done(py, &task, id);
            }
        }
        Ok(())
    }

    fn is_task(&self, obj: &Bound<'_, PyAny>) -> bool {
        // SAFETY: both are live objects; the check only reads their types.
        unsafe { ffi::PyObject_TypeCheck(obj.as_ptr(), self.task_type.as_ptr().cast()) != 0 }
    }

    /// The task a callback steps (if any), and the id of its subject.
    fn subject_of<'py>(
        &self,
        callback: &Bound<'py, PyAny>,
    ) -> PyResult<(Option<Bound<'py, PyAny>>, u32)> {
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
                let id = self.task_subject(&owner)?;
                return Ok((Some(owner), id));
            }
            // SAFETY: `ptr` is a builtin function (checked above).
            let function = unsafe { ffi::PyCFunction_GetFunction(ptr) };
            let id = self.subject(py, function.map_or(0, |f| f as usize), || {
                Ok(Subject {
                    name: callback.getattr(intern!(py, "__qualname__"))?.unbind(),
                    coro: None,
                    _keep: None,
                })
            })?;
            return Ok((None, id));
        }
        // SAFETY: `ptr` is a live object; the check reads its type.
        if unsafe { ffi::PyFunction_Check(ptr) } != 0 {
            return Ok((None, self.callable_subject(callback)?));
        }
        let ty = callback.get_type();
        let step_wrapper = self.inner.borrow(py).step_wrapper;
        let wraps = ty.is(self.method_type.bind(py))
            || ty.as_ptr() as usize == step_wrapper
            || self.learn_step_wrapper(&ty);
        let function = if wraps {
            let owner = callback.getattr(intern!(py, "__self__"))?;
            if self.is_task(&owner) {
                let id = self.task_subject(&owner)?;
                return Ok((Some(owner), id));
            }
            callback.getattr(intern!(py, "__func__")).ok()
        } else {
            Some(callback.clone())
        };
        Ok((
            None,
            self.callable_subject(function.as_ref().unwrap_or(callback))?,
        ))
    }

    /// Whether `ty` is the C Task's step wrapper (remembered once it is met).
    fn learn_step_wrapper(&self, ty: &Bound<'_, PyType>) -> bool {
        // SAFETY: a live type's `tp_name` is a NUL-terminated string it owns.
        let name = unsafe { CStr::from_ptr((*ty.as_type_ptr()).tp_name) };
        let found = name.to_bytes().ends_with(b"TaskStepMethWrapper");
        if found {
            self.inner.borrow_mut(ty.py()).step_wrapper = ty.as_ptr() as usize;
        }
        found
    }

    /// A Python function's subject, by its code; anything else's, by its type.
    fn callable_subject(&self, callable: &Bound<'_, PyAny>) -> PyResult<u32> {
        let py = callable.py();
        // SAFETY: `callable` is live; PyFunction_GetCode returns a borrowed reference to the
        // code of a function (checked first).
        let code = unsafe {
            (ffi::PyFunction_Check(callable.as_ptr()) != 0)
                .then(|| Bound::from_borrowed_ptr(py, ffi::PyFunction_GetCode(callable.as_ptr())))
        };
        let keep = match code {
            Some(code) => code,
            None => callable.get_type().into_any(),
        };
        self.subject(py, keep.as_ptr() as usize, || {
            let name = keep
                .getattr(intern!(py, "co_qualname"))
                .or_else(|_| keep.getattr(intern!(py, "__qualname__")))?;
            Ok(Subject {
                name: name.unbind(),
                coro: None,
                _keep: Some(keep.clone().unbind()),
            })
        })
    }

    /// A task's subject: its name and coroutine are read when it is first seen.
    fn task_subject(&self, task: &Bound<'_, PyAny>) -> PyResult<u32> {
        let py = task.py();
        self.subject(py, task.as_ptr() as usize, || {
            let name = task.call_method0(intern!(py, "get_name"))?;
            let coro = task.call_method0(intern!(py, "get_coro"))?;
            let coro = if coro.is_none() {
                PyString::new(py, "").into_any()
            } else {
                coro.getattr(intern!(py, "__qualname__"))
                    .unwrap_or_else(|_| {
                        coro.get_type()
                            .name()
                            .unwrap_or_else(|_| PyString::new(py, "?"))
                            .into_any()
                    })
            };
            Ok(Subject {
                name: name.unbind(),
                coro: Some(coro.unbind()),
                _keep: None,
            })
        })
    }

    /// The id of the subject at `address`, described by `describe` if it is new.
    fn subject(
        &self,
        py: Python<'_>,
        address: usize,
        describe: impl FnOnce() -> PyResult<Subject>,
    ) -> PyResult<u32> {
        if let Some(&id) = self.inner.borrow(py).keys.get(&address) {
            return Ok(id);
        }
        let subject = describe()?;
        Ok(self.intern(py, address, subject))
    }

    fn intern(&self, py: Python<'_>, address: usize, subject: Subject) -> u32 {
        let mut inner = self.inner.borrow_mut(py);
        let id = inner.next_id;
        inner.next_id += 1;
        inner.keys.insert(address, id);
        inner.subjects.insert(id, subject);
        inner.new_since_purge += 1;
        if inner.new_since_purge >= PURGE_EVERY {
            inner.new_since_purge = 0;
            let oldest = inner.ring.oldest_kept();
            while let Some(&(after, gone)) = inner.done.front() {
                if after > oldest {
                    break;
                }
                inner.done.pop_front();
                inner.subjects.remove(&gone);
            }
        }
        id
    }

    /// Task `id` is done: it steps no more, so its address is free for a new subject, and its
    /// name may go once the ring has passed its last event.
    fn task_done(&self, py: Python<'_>, task: &Bound<'_, PyAny>, id: u32) {
        let mut inner = self.inner.borrow_mut(py);
        if inner.keys.get(&(task.as_ptr() as usize)) == Some(&id) {
            inner.keys.remove(&(task.as_ptr() as usize));
        }
        let after = inner.ring.pushed();
        inner.done.push_back((after, id));
    }

    /// What `task` waits on after its step (a `WAIT_*` value).
    fn wait_of(&self, task: &Bound<'_, PyAny>) -> PyResult<u64> {
        let py = task.py();
        let waiter = task.getattr(intern!(py, "_fut_waiter"))?;
        if waiter.is_none() {
            let done = task.call_method0(intern!(py, "done"))?.is_truthy()?;
            return Ok(if done { WAIT_DONE } else { WAIT_READY });
        }
        if self.is_task(&waiter) {
            let id = self.task_subject(&waiter)?;
            return Ok(WAIT_TASK | id as u64);
        }
        // `_coro`, a member of the C Task (and an attribute of the Python one): cheaper to read
        // than calling `get_coro()`.
        let code = innermost_code(&task.getattr(intern!(py, "_coro"))?)?;
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
