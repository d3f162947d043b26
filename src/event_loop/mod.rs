//! The Python-facing loop core, `ferroloop._core.LoopCore`: scheduling (`call_soon`,
//! `call_later`, `call_at`, `call_soon_threadsafe`), the run loop (`run.rs`), readers and
//! writers (`io.rs`) and closing. `ferroloop.Loop` (Python) subclasses it and adds what is not on
//! a hot path: `run_until_complete`, tasks, executors, the exception handler.
//!
//! All mutable state sits in one `GilCell<LoopState>`; see `cpython/gil.rs` for the borrow rules.
//! Python objects removed from the state are dropped only after the borrow ends, because dropping
//! one can run arbitrary `__del__` code that calls back into the loop.

pub(crate) mod args;
mod context;
mod fastcall;
mod freelist;
mod handle;
mod hooks;
mod io;
mod run;
mod shared;
mod stale;
mod threadsafe;

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyFloat, PyInt, PyTuple, PyType};
use pyo3::PyTraverseError;

pub(crate) use args::CallArgs;
use context::{ContextSlot, Snapshots};
pub use fastcall::install as install_fast_methods;
pub use freelist::install as install_free_lists;
use handle::NewHandle;
pub use handle::{Handle, TimerHandle};

use io::{IoRegistry, Slot};
pub(crate) use io::{Ties, Which};
use shared::LoopShared;

use crate::core::clock;
use crate::core::poller::{Event, Interest, Poller, MAX_SPIN_LIMIT};
use crate::core::ready::ReadyQueue;
use crate::core::sys::nonblocking_socketpair;
use crate::core::timers::TimerQueue;
use crate::cpython::gil::GilCell;
use crate::owner::close_watch;
use crate::recv_bytes::{ReadGuesses, SpareSlot};

/// `asyncio.futures.Future` and `asyncio.tasks.Task` (the C types), looked up once.
static FUTURE_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TASK_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// How a reader or writer is registered (see `register_io`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum IoKind {
    /// `add_reader`/`add_writer`: level-triggered, called on every iteration while ready.
    Level,
    /// A Rust transport's own read or write step (`Flags::NATIVE_READ`), level-triggered.
    TransportStep,
    /// A wait that ends at its first completion: one-shot, parked when removed (`io.rs`).
    Oneshot,
}

/// The poller token of the signal wake-up socket (the waker's is `u64::MAX`).
const SIGNAL_TOKEN: u64 = u64::MAX - 1;

pub struct LoopState {
    ready: ReadyQueue<Py<Handle>>,
    timers: TimerQueue<Py<Handle>>,
    io: IoRegistry,
    events: Vec<Event>,
    /// `None` once the loop is closed.
    poller: Option<Arc<Poller>>,
    /// The socket pair whose write end is given to `signal.set_wakeup_fd` while running.
    signal_pair: Option<(OwnedFd, OwnedFd)>,
    /// Signal numbers read from the wake-up socket, for `_process_signals`.
    signal_numbers: Vec<u8>,
    /// Whether `add_signal_handler` callbacks exist: a busy loop must then still poll, to read
    /// the signal numbers, where it could skip polling with no fd registered.
    watching_signals: bool,
    /// Timers scheduled since the current iteration began. They join the heap when the next
    /// one begins (see `run::merge_new_timers`), so the timers an iteration runs are exactly
    /// those in the heap when it began.
    new_timers: Vec<(f64, Py<Handle>)>,
    /// `{"loop": <this loop>}`, reused as the keywords of every `Future(loop=...)` and plain
    /// `Task(coro, loop=...)` (their constructors only read it): a dict per call saved.
    loop_kwargs: Option<Py<PyDict>>,
    /// The Context shared by handles scheduled without `context=` (see `context.rs`).
    snapshots: Snapshots,
    stopping: bool,
    /// The running thread's id (`threading.get_ident()`), `Some` while running.
    thread_id: Option<u64>,
    slow_callback_duration: f64,
    /// What `sock_recv` guesses each stream socket's next read will bring (`recv_bytes.rs`).
    recv_guesses: ReadGuesses,
}

impl LoopState {
    /// Empties the ready queue, the timers and the fd registry: the handles they held, the fds
    /// that were registered, and the registrations' other objects (owners, futures). The caller
    /// drops them once the borrow ends.
    fn drain_handles(&mut self) -> (Vec<Py<Handle>>, Vec<RawFd>, Vec<Py<PyAny>>) {
        let mut handles = self.ready.drain();
        handles.extend(self.timers.drain());
        handles.extend(self.new_timers.drain(..).map(|(_, h)| h));
        let mut fds = Vec::new();
        let mut others = Vec::new();
        for (fd, entry) in self.io.drain() {
            fds.push(fd);
            for slot in [entry.reader, entry.writer].into_iter().flatten() {
                handles.push(slot.handle);
                others.extend(slot.owner);
                others.extend(slot.pending);
            }
        }
        (handles, fds, others)
    }
}

#[pyclass(module = "ferroloop._core", subclass, frozen, weakref)]
pub struct LoopCore {
    state: GilCell<LoopState>,
    shared: Arc<LoopShared>,
    /// The `bytes` lent to one transport read after another (`recv_bytes.rs`).
    read_spare: GilCell<SpareSlot>,
}

pub fn current_thread_id() -> u64 {
    // SAFETY: pthread_self has no preconditions; CPython's threading.get_ident() returns the same
    // value on Linux.
    unsafe { libc::pthread_self() as u64 }
}

/// The `OSError` (its errno subclass, e.g. `PermissionError`) Python itself would raise: the
/// errno and the bare `strerror` text, without Rust's " (os error N)" suffix.
pub(crate) fn os_error(err: std::io::Error) -> PyErr {
    let errno = err.raw_os_error().unwrap_or(0);
    let text = err.to_string();
    let suffix = format!(" (os error {errno})");
    let message = text.strip_suffix(&suffix).unwrap_or(&text).to_owned();
    PyOSError::new_err((errno, message))
}

/// Runs `op` again after a signal interrupts it, running the Python signal handlers first (as
/// Python's own socket methods do, PEP 475); a handler's exception propagates.
#[inline(always)]
pub(crate) fn retry_eintr<T>(
    py: Python<'_>,
    mut op: impl FnMut() -> std::io::Result<T>,
) -> PyResult<std::io::Result<T>> {
    loop {
        match op() {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => py.check_signals()?,
            other => return Ok(other),
        }
    }
}

fn closed_error() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}

/// Seconds as an `f64` from an int or float; anything else is added to `base` with Python's `+`
/// so the error (or result) is exactly the stock loop's `self.time() + delay`.
fn add_seconds(base: f64, delay: &Bound<'_, PyAny>) -> PyResult<f64> {
    if let Ok(f) = delay.cast::<PyFloat>() {
        return Ok(base + f.value());
    }
    if delay.is_instance_of::<PyInt>() {
        if let Ok(i) = delay.extract::<i64>() {
            return Ok(base + i as f64);
        }
    }
    PyFloat::new(delay.py(), base).add(delay)?.extract()
}

impl LoopCore {
    /// The shared `{"loop": self}` (see `LoopState::loop_kwargs`).
    fn loop_kwargs<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let py = slf.py();
        if let Some(kwargs) = &slf.get().state.borrow(py).loop_kwargs {
            return Ok(kwargs.bind(py).clone());
        }
        let kwargs = PyDict::new(py);
        kwargs.set_item(intern!(py, "loop"), slf)?;
        slf.get().state.borrow_mut(py).loop_kwargs = Some(kwargs.clone().unbind());
        Ok(kwargs)
    }

    /// The poller, or the closed-loop error.
    fn poller(&self, py: Python<'_>) -> PyResult<Arc<Poller>> {
        self.state
            .borrow(py)
            .poller
            .clone()
            .ok_or_else(closed_error)
    }

    fn check_closed(&self, py: Python<'_>) -> PyResult<()> {
        if self.state.borrow(py).poller.is_none() {
            return Err(closed_error());
        }
        Ok(())
    }

    /// Debug mode only: the stock loop's checks on the calling thread and the callback.
    fn debug_checks(
        &self,
        py: Python<'_>,
        callback: &Bound<'_, PyAny>,
        method: &str,
        check_thread: bool,
    ) -> PyResult<()> {
        if !self.shared.debug() {
            return Ok(());
        }
        if check_thread {
            self.check_thread(py)?;
        }
        hooks::call(py, "check_callback", (callback, method))?;
        Ok(())
    }

    fn check_thread(&self, py: Python<'_>) -> PyResult<()> {
        match self.state.borrow(py).thread_id {
            Some(id) if id != current_thread_id() => Err(PyRuntimeError::new_err(
                "Non-thread-safe operation invoked on an event loop other than the current one",
            )),
            _ => Ok(()),
        }
    }

    /// A Context with the current variables, for a handle scheduled without `context=`.
    fn snapshot(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let reader = crate::cpython::context::vars_reader(py);
        if let Some(reader) = reader {
            if let Some(last) = self.state.borrow(py).snapshots.current(py, reader) {
                return Ok(last);
            }
        }
        let current = context::copy_current(py)?;
        let (ctx, garbage) = self
            .state
            .borrow_mut(py)
            .snapshots
            .take(py, current, reader);
        // Released as a `Bound`: a plain decref (see `args.rs`).
        drop(garbage.map(|g| g.into_bound(py)));
        Ok(ctx)
    }

    /// A new handle; `threadsafe` for `call_soon_threadsafe`'s (`threadsafe.rs`).
    #[allow(clippy::too_many_arguments)]
    fn new_handle<'py>(
        &'py self,
        py: Python<'py>,
        callback: Bound<'py, PyAny>,
        args: CallArgs<'py>,
        context: Option<Bound<'py, PyAny>>,
        when: Option<f64>,
        queued_only: bool,
        threadsafe: bool,
    ) -> PyResult<Bound<'py, Handle>> {
        let (context, context_own) = match context {
            Some(ctx) if !ctx.is_none() => (ContextSlot::new(ctx.unbind()), true),
            _ => (ContextSlot::new(self.snapshot(py)?), false),
        };
        NewHandle {
            callback,
            args,
            context,
            context_own,
            when,
            threadsafe,
            shared: &self.shared,
        }
        .create(py, queued_only)
    }

    /// The body of `call_soon` and `call_soon_threadsafe`: checks, a new handle, queued. Called
    /// without the thread check, it is `call_soon_threadsafe`'s, whose handle is thread-safe.
    pub(crate) fn soon<'py>(
        &'py self,
        py: Python<'py>,
        method: &str,
        check_thread: bool,
        callback: Bound<'py, PyAny>,
        args: CallArgs<'py>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        self.check_closed(py)?;
        self.debug_checks(py, &callback, method, check_thread)?;
        let handle = self.new_handle(py, callback, args, context, None, true, !check_thread)?;
        self.state
            .borrow_mut(py)
            .ready
            .push(handle.clone().unbind());
        Ok(handle)
    }

    /// The body of `call_later` and `call_at` once the deadline is known. Debug errors name
    /// `call_at()` for both, as the stock `call_later` delegates to `call_at`.
    fn schedule_timer<'py>(
        &'py self,
        py: Python<'py>,
        when: f64,
        callback: Bound<'py, PyAny>,
        args: CallArgs<'py>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        self.check_closed(py)?;
        self.debug_checks(py, &callback, "call_at", true)?;
        let handle = self.new_handle(py, callback, args, context, Some(when), true, false)?;
        self.state
            .borrow_mut(py)
            .new_timers
            .push((when, handle.clone().unbind()));
        Ok(handle)
    }

    /// `call_soon_threadsafe`: `call_soon` without the thread check, then a wake-up.
    fn soon_threadsafe<'py>(
        &'py self,
        py: Python<'py>,
        callback: Bound<'py, PyAny>,
        args: CallArgs<'py>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        let handle = self.soon(py, "call_soon_threadsafe", false, callback, args, context)?;
        if let Some(poller) = &self.state.borrow(py).poller {
            poller.wake().map_err(os_error)?;
        }
        Ok(handle)
    }

    /// `call_later`: the deadline is `time() + delay`.
    fn later<'py>(
        &'py self,
        py: Python<'py>,
        delay: &Bound<'py, PyAny>,
        callback: Bound<'py, PyAny>,
        args: CallArgs<'py>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        if delay.is_none() {
            return Err(PyTypeError::new_err("delay must not be None"));
        }
        let when = add_seconds(clock::monotonic(), delay)?;
        self.schedule_timer(py, when, callback, args, context)
    }

    /// `call_at`: `when` is on the loop's clock.
    fn at<'py>(
        &'py self,
        py: Python<'py>,
        when: &Bound<'py, PyAny>,
        callback: Bound<'py, PyAny>,
        args: CallArgs<'py>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Handle>> {
        if when.is_none() {
            return Err(PyTypeError::new_err("when cannot be None"));
        }
        let when = add_seconds(0.0, when)?;
        self.schedule_timer(py, when, callback, args, context)
    }

    /// Registers `callback(*args)` as the reader (or writer) of `fd`, replacing any previous one,
    /// which is cancelled. Returns the new handle. `ties` names the object the fd came from and
    /// the pending call's future, if any (see `io::Slot`).
    pub(crate) fn add_io<'py>(
        &self,
        py: Python<'py>,
        fd: RawFd,
        writer: bool,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        ties: Ties<'py>,
    ) -> PyResult<Py<Handle>> {
        self.register_io(
            py,
            fd,
            writer,
            callback,
            CallArgs::from_tuple(args),
            IoKind::Level,
            ties,
        )
    }

    /// `add_io` for a wait that ends at its first completion (`sock.rs`): registered one-shot,
    /// and parked rather than deleted when removed (see `io.rs`).
    pub(crate) fn add_oneshot_io<'py>(
        &self,
        py: Python<'py>,
        fd: RawFd,
        writer: bool,
        callback: Bound<'py, PyAny>,
        ties: Ties<'py>,
    ) -> PyResult<Py<Handle>> {
        self.register_io(
            py,
            fd,
            writer,
            callback,
            CallArgs::Zero,
            IoKind::Oneshot,
            ties,
        )
    }

    /// Registers a Rust transport's own read (or write) step for `fd`, owned by its socket (see
    /// `Flags::NATIVE_READ`).
    pub(crate) fn add_transport_io(
        &self,
        py: Python<'_>,
        fd: RawFd,
        writer: bool,
        transport: Bound<'_, PyAny>,
        sock: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.register_io(
            py,
            fd,
            writer,
            transport,
            CallArgs::Zero,
            IoKind::TransportStep,
            Ties::owned_by(sock),
        )?;
        Ok(())
    }

    /// `create_task` through the task factory (see `create_task`). From 3.14 the factory is given
    /// `create_task`'s keywords as they are; before, as the stock loop of those versions, it is
    /// given no `name` (the task is named once made) and no `context` that is None.
    fn call_task_factory<'py>(
        slf: &Bound<'py, Self>,
        factory: &Bound<'py, PyAny>,
        coro: Bound<'py, PyAny>,
        kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        #[cfg(Py_3_14)]
        {
            factory.call((slf, coro), kwargs.as_ref())
        }
        #[cfg(not(Py_3_14))]
        {
            let py = slf.py();
            let kw = kwargs.unwrap_or_else(|| PyDict::new(py));
            let name = kw.get_item(intern!(py, "name"))?;
            if name.is_some() {
                kw.del_item(intern!(py, "name"))?;
            }
            if kw
                .get_item(intern!(py, "context"))?
                .is_some_and(|c| c.is_none())
            {
                kw.del_item(intern!(py, "context"))?;
            }
            let task = factory.call((slf, coro), Some(&kw))?;
            if let Some(name) = name.filter(|n| !n.is_none()) {
                task.call_method1(intern!(py, "set_name"), (name,))?;
            }
            Ok(task)
        }
    }

    /// `add_io` from Python: a socket given as `owner` is watched, so that closing it drops the
    /// registration first (`owner::close_watch`).
    #[allow(clippy::too_many_arguments)]
    fn add_io_tied<'py>(
        slf: &Bound<'py, Self>,
        fd: RawFd,
        writer: bool,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        owner: Option<Bound<'py, PyAny>>,
        pending: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        if let Some(owner) = owner.as_ref().filter(|o| !o.is_none()) {
            close_watch::watch(slf, owner)?;
        }
        let ties = Ties {
            owner: owner.filter(|o| !o.is_none()),
            pending: pending.filter(|p| !p.is_none()),
        };
        slf.get().add_io(py, fd, writer, callback, args, ties)
    }

    #[allow(clippy::too_many_arguments)]
    fn register_io<'py>(
        &self,
        py: Python<'py>,
        fd: RawFd,
        writer: bool,
        callback: Bound<'py, PyAny>,
        args: CallArgs<'py>,
        kind: IoKind,
        ties: Ties<'py>,
    ) -> PyResult<Py<Handle>> {
        self.check_closed(py)?;
        let handle = self.new_handle(py, callback, args, None, None, false, false)?;
        if kind == IoKind::TransportStep {
            handle.get().mark_transport_step(writer);
        }
        let slot = Slot {
            handle: handle.clone().unbind(),
            owner: ties.owner.map(Bound::unbind),
            pending: ties.pending.map(Bound::unbind),
        };
        let (replaced, stale) = {
            let mut st = self.state.borrow_mut(py);
            let poller = st.poller.clone().ok_or_else(closed_error)?;
            let existed = st.io.get(fd).is_some();
            let entry = st.io.insert(fd);
            let mut replaced = entry.slot(writer).replace(slot);
            // One-shot only as the fd's only handler: a level-triggered one on the other side
            // keeps the registration level-triggered.
            entry.oneshot = kind == IoKind::Oneshot && entry.slot(!writer).is_none();
            entry.armed = true;
            let token = fd as u64;
            let mut stale = Vec::new();
            let mut result = if existed {
                poller.reregister(fd, token, entry.interest())
            } else {
                poller.register(fd, token, entry.interest())
            };
            match &result {
                Err(err) if existed && err.raw_os_error() == Some(libc::ENOENT) => {
                    // The registration was a file's that has closed since (`crate::owner`, rule
                    // 3): what was recorded for the number was that file's, not this one's.
                    stale.extend(replaced.take());
                    stale.extend(entry.slot(!writer).take());
                    entry.oneshot = kind == IoKind::Oneshot;
                    result = poller.register(fd, token, entry.interest());
                }
                Err(err) if !existed && err.raw_os_error() == Some(libc::EEXIST) => {
                    result = poller.reregister(fd, token, entry.interest());
                }
                _ => {}
            }
            if let Err(err) = result {
                let failed = st.io.get_mut(fd).and_then(|e| e.slot(writer).take());
                if st.io.get(fd).is_some_and(|e| e.interest().is_empty()) {
                    st.io.remove(fd);
                }
                drop(st);
                drop(failed);
                drop(replaced);
                self.retire(py, stale)?;
                return Err(os_error(err));
            }
            (replaced, stale)
        };
        if let Some(old) = replaced {
            Handle::do_cancel(old.handle.bind(py))?;
        }
        self.retire(py, stale)?;
        Ok(handle.unbind())
    }

    /// Whether `fd` has a reader and whether it has a writer (for transport reprs).
    pub(crate) fn io_registered(&self, py: Python<'_>, fd: RawFd) -> (bool, bool) {
        let st = self.state.borrow(py);
        st.io
            .get(fd)
            .map_or((false, false), |e| (e.reader.is_some(), e.writer.is_some()))
    }

    /// The size `sock_recv` guesses the next read of stream socket `fd` will bring.
    pub(crate) fn recv_guess(&self, py: Python<'_>, fd: RawFd) -> usize {
        self.state.borrow(py).recv_guesses.get(fd)
    }

    pub(crate) fn set_recv_guess(&self, py: Python<'_>, fd: RawFd, guess: usize) {
        self.state.borrow_mut(py).recv_guesses.set(fd, guess);
    }

    /// The spare `bytes` of transport reads.
    pub(crate) fn read_spare(&self) -> &GilCell<SpareSlot> {
        &self.read_spare
    }

    pub(crate) fn debug_enabled(&self) -> bool {
        self.shared.debug()
    }

    /// Removes the reader (or writer) of `fd` if it is `which`'s; true if there was one.
    pub(crate) fn remove_io(
        &self,
        py: Python<'_>,
        fd: RawFd,
        writer: bool,
        which: Which<'_, '_>,
    ) -> PyResult<bool> {
        let (removed, stale, failure) = {
            let mut st = self.state.borrow_mut(py);
            let Some(poller) = st.poller.clone() else {
                return Ok(false);
            };
            let Some(entry) = st.io.get_mut(fd) else {
                return Ok(false);
            };
            if !entry
                .slot(writer)
                .as_ref()
                .is_some_and(|s| which.matches(s))
            {
                return Ok(false);
            }
            let removed = entry.slot(writer).take();
            let interest = entry.interest();
            let mut stale = None;
            let mut failure = None;
            if interest.is_empty() && entry.oneshot {
                st.io.park(fd);
            } else if interest.is_empty() {
                st.io.remove(fd);
                // The fd may have been closed already, which removed it from epoll.
                let _ = poller.deregister(fd);
            } else if let Err(err) = poller.reregister(fd, fd as u64, interest) {
                if matches!(err.raw_os_error(), Some(libc::ENOENT | libc::EBADF)) {
                    // The file has closed (`crate::owner`, rule 3): the other side's handler
                    // was its too.
                    stale = st.io.remove(fd).and_then(|mut e| e.slot(!writer).take());
                } else {
                    failure = Some(err);
                }
            }
            (removed, stale, failure)
        };
        if let Some(slot) = removed {
            Handle::do_cancel(slot.handle.bind(py))?;
        }
        self.retire(py, stale.into_iter().collect())?;
        match failure {
            Some(err) => Err(os_error(err)),
            None => Ok(true),
        }
    }
}

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let poller = Poller::new().map_err(os_error)?;
        let signal_pair = nonblocking_socketpair().map_err(os_error)?;
        poller
            .register(signal_pair.0.as_raw_fd(), SIGNAL_TOKEN, Interest::READABLE)
            .map_err(os_error)?;
        let shared = Arc::new(LoopShared::default());
        Ok(LoopCore {
            state: GilCell::new(LoopState {
                ready: ReadyQueue::new(),
                timers: TimerQueue::new(),
                io: IoRegistry::default(),
                events: Vec::new(),
                poller: Some(Arc::new(poller)),
                signal_pair: Some(signal_pair),
                signal_numbers: Vec::new(),
                watching_signals: false,
                new_timers: Vec::new(),
                loop_kwargs: None,
                snapshots: Snapshots::default(),
                stopping: false,
                thread_id: None,
                slow_callback_duration: 0.1,
                recv_guesses: ReadGuesses::default(),
            }),
            shared,
            read_spare: GilCell::new(SpareSlot::default()),
        })
    }

    /// The loop's clock: `time.monotonic()`.
    fn time(&self) -> f64 {
        clock::monotonic()
    }

    /// Stops the loop after the current iteration.
    fn stop(&self, py: Python<'_>) {
        self.state.borrow_mut(py).stopping = true;
    }

    fn is_running(&self, py: Python<'_>) -> bool {
        self.state.borrow(py).thread_id.is_some()
    }

    /// Wraps a coroutine in a task: CPython's C `asyncio.Task`, or the task factory's, as the
    /// running version's stock loop does. Up to 3.13 a factory is called with `context=` only
    /// when one is given and the task is named afterwards; from 3.14 on every keyword (`name`,
    /// `context`, `eager_start`, ...) goes to the factory, or to `Task`, as given.
    #[pyo3(signature = (coro, **kwargs))]
    fn create_task<'py>(
        slf: &Bound<'py, Self>,
        coro: Bound<'py, PyAny>,
        kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed(py)?;
        let factory = slf.getattr(intern!(py, "_task_factory"))?;
        let kwargs = kwargs.filter(|k| !k.is_empty());
        if !factory.is_none() {
            return Self::call_task_factory(slf, &factory, coro, kwargs);
        }
        let kw = match kwargs {
            // `name` and `context` default to None: `loop=` alone is the same call.
            None => LoopCore::loop_kwargs(slf)?,
            Some(kw) => {
                kw.set_item(intern!(py, "loop"), slf)?;
                kw
            }
        };
        let task = TASK_TYPE
            .import(py, "asyncio.tasks", "Task")?
            .call((coro,), Some(&kw))?;
        if this.shared.debug() {
            // As the stock loop: the source traceback ends at the caller, not here.
            let source = task.getattr(intern!(py, "_source_traceback"))?;
            if source.is_truthy()? {
                source.del_item(-1)?;
            }
        }
        Ok(task)
    }

    /// `asyncio.Future(loop=self)`.
    pub(crate) fn create_future<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let kwargs = LoopCore::loop_kwargs(slf)?;
        FUTURE_TYPE
            .import(py, "asyncio.futures", "Future")?
            .call((), Some(&kwargs))
    }

    pub(crate) fn is_closed(&self, py: Python<'_>) -> bool {
        self.state.borrow(py).poller.is_none()
    }

    fn get_debug(&self) -> bool {
        self.shared.debug()
    }

    fn _set_debug(&self, enabled: bool) {
        self.shared.set_debug(enabled);
    }

    #[getter]
    fn get_slow_callback_duration(&self, py: Python<'_>) -> f64 {
        self.state.borrow(py).slow_callback_duration
    }

    #[setter]
    fn set_slow_callback_duration(&self, py: Python<'_>, value: f64) {
        self.state.borrow_mut(py).slow_callback_duration = value;
    }

    /// Runs iterations until `stop()`; the Python `run_forever` wraps it.
    fn _run(slf: &Bound<'_, Self>) -> PyResult<()> {
        run::run_forever(slf)
    }

    /// The fd to give `signal.set_wakeup_fd` while running, or -1 once closed.
    fn _signal_wakeup_fd(&self, py: Python<'_>) -> RawFd {
        self.state
            .borrow(py)
            .signal_pair
            .as_ref()
            .map_or(-1, |(_, w)| w.as_raw_fd())
    }

    /// The longest a wait polls before it blocks, in microseconds (`core/poller/spin.rs`).
    fn _spin_limit(&self, py: Python<'_>) -> PyResult<u128> {
        Ok(self.poller(py)?.spin_limit().as_micros())
    }

    /// Sets `_spin_limit`; zero: never poll before blocking.
    fn _set_spin_limit(&self, py: Python<'_>, micros: u64) -> PyResult<()> {
        let limit = Duration::from_micros(micros);
        if limit > MAX_SPIN_LIMIT {
            return Err(PyValueError::new_err(format!(
                "the spin limit must be from 0 to {} microseconds, not {micros}",
                MAX_SPIN_LIMIT.as_micros()
            )));
        }
        self.poller(py)?.set_spin_limit(limit);
        Ok(())
    }

    /// How long the next wait that may block will poll first, in microseconds.
    fn _spin_window(&self, py: Python<'_>) -> PyResult<u128> {
        Ok(self.poller(py)?.spin_window().as_micros())
    }

    /// The room of the `bytes` kept for the next transport read, if there is one
    /// (`recv_bytes.rs`).
    fn _read_spare_room(&self, py: Python<'_>) -> Option<usize> {
        self.read_spare.borrow(py).room()
    }

    /// Called by the signal mixin when its first handler is added and its last removed.
    fn _watch_signals(&self, py: Python<'_>, on: bool) {
        self.state.borrow_mut(py).watching_signals = on;
    }

    /// Drops every pending callback, timer and registration and closes the poller. With
    /// `keep_signal_socket`, the signal wake-up socket pair is left open for good (its write end
    /// may still be `signal.set_wakeup_fd`'s, and a signal must not write into the file that
    /// would get its number).
    #[pyo3(signature = (keep_signal_socket=false))]
    fn _close(&self, py: Python<'_>, keep_signal_socket: bool) {
        let mut drop_later = Vec::new();
        let (garbage, snapshot) = {
            let mut st = self.state.borrow_mut(py);
            // Dropping the poller closes its epoll fd, which forgets every registration.
            st.poller = None;
            if let Some((read_end, write_end)) = st.signal_pair.take() {
                if keep_signal_socket {
                    let _ = (read_end.into_raw_fd(), write_end.into_raw_fd());
                }
            }
            let (handles, _fds, others) = st.drain_handles();
            drop_later.extend(others);
            (handles, st.snapshots.clear())
        };
        drop(snapshot);
        self.read_spare.borrow_mut(py).clear();
        self.shared.reset_cancelled();
        for handle in garbage {
            handle.get().unschedule();
            Handle::leave_queue(handle.bind(py));
        }
    }

    /// The stock loop's private `_add_reader(fd, callback, *args)`: no fd ownership check;
    /// returns the handle. `owner` is the object `fd` came from, `pending` the future of the
    /// `sock_*` call the reader serves (see `io::Slot`).
    #[pyo3(signature = (fd, callback, *args, owner=None, pending=None))]
    fn _add_reader<'py>(
        slf: &Bound<'py, Self>,
        fd: RawFd,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        owner: Option<Bound<'py, PyAny>>,
        pending: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        Self::add_io_tied(slf, fd, false, callback, args, owner, pending)
    }

    /// The stock loop's private `_add_writer`, as `_add_reader`.
    #[pyo3(signature = (fd, callback, *args, owner=None, pending=None))]
    fn _add_writer<'py>(
        slf: &Bound<'py, Self>,
        fd: RawFd,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        owner: Option<Bound<'py, PyAny>>,
        pending: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        Self::add_io_tied(slf, fd, true, callback, args, owner, pending)
    }

    /// Removes the reader of `fd`; with `owner`, only one registered with that object.
    #[pyo3(signature = (fd, *, owner=None))]
    fn _remove_reader(
        &self,
        py: Python<'_>,
        fd: RawFd,
        owner: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let which = owner.as_ref().map_or(Which::Any, Which::Owner);
        self.remove_io(py, fd, false, which)
    }

    /// Removes the writer of `fd`, as `_remove_reader`.
    #[pyo3(signature = (fd, *, owner=None))]
    fn _remove_writer(
        &self,
        py: Python<'_>,
        fd: RawFd,
        owner: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let which = owner.as_ref().map_or(Which::Any, Which::Owner);
        self.remove_io(py, fd, true, which)
    }

    /// Counts for tests and introspection: ready callbacks, pending timers (cancelled ones
    /// included), cancelled pending timers, registered fds.
    fn _queue_sizes(&self, py: Python<'_>) -> (usize, usize, usize, usize) {
        let st = self.state.borrow(py);
        (
            st.ready.len(),
            st.timers.len() + st.new_timers.len(),
            self.shared.cancelled_timers(),
            st.io.len(),
        )
    }

    /// Reports what the queues hold, so that a loop dropped with callbacks pending is collected
    /// with whatever cycles run through them. Not while the loop runs: a running loop is alive
    /// (its thread's running-loop slot and the frames running it hold it), so everything it holds
    /// is reachable anyway, and leaving references unreported only ever keeps objects alive. That
    /// spares every collection during a run a walk over every queued handle.
    fn __traverse__(&self, visit: pyo3::gc::PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(st) = self.state.try_borrow_in_gc() {
            if st.thread_id.is_some() {
                return Ok(());
            }
            st.snapshots.visit(&visit)?;
            visit.call(&st.loop_kwargs)?;
            for slot in st.io.slots() {
                visit.call(&slot.owner)?;
                visit.call(&slot.pending)?;
            }
            for h in st
                .ready
                .iter()
                .chain(st.timers.iter())
                .chain(st.new_timers.iter().map(|(_, h)| h))
                .chain(st.io.slots().map(|slot| &slot.handle))
            {
                // SAFETY: `h` is a live object; the query has no other precondition.
                if unsafe { pyo3::ffi::PyObject_GC_IsTracked(h.as_ptr()) } != 0 {
                    visit.call(h)?;
                } else {
                    // Reported on its behalf: see `Handle::traverse_contents`.
                    h.get().traverse_contents(&visit)?;
                }
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        Python::attach(|py| {
            let garbage = {
                let mut st = self.state.borrow_mut(py);
                let (handles, fds, others) = st.drain_handles();
                if let Some(poller) = &st.poller {
                    for fd in fds {
                        let _ = poller.deregister(fd);
                    }
                }
                (handles, others, st.snapshots.clear(), st.loop_kwargs.take())
            };
            drop(garbage);
        });
    }
}
