//! `LoopCore`, the Python-facing loop, and the one `LoopState` it keeps: what each part of the
//! loop (scheduling, I/O registration, tasks, the iteration) works on.
//!
//! All mutable state sits in one `GilCell<LoopState>`; see `cpython/gil.rs` for the borrow rules.
//! Python objects removed from the state are dropped only after the borrow ends, because dropping
//! one can run arbitrary `__del__` code that calls back into the loop.
//!
//! `LoopCore` needs nothing from the Python class that extends it: what the Rust side reads (the
//! task factory, the running handle, the signal handlers, the transports table) it owns, and
//! shows to Python as attributes (`_core.pyi`). The one Python method it calls on itself is the
//! public `call_exception_handler`, so that an override (a subclass's, or one set on the
//! instance, as tests do) wins as in the stock loop; `LoopCore`'s own logs the context.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::context::Snapshots;
use super::handle::Handle;
use super::io::IoRegistry;
use super::meter::Meter;
use super::shared::LoopShared;
use crate::core::poller::{Event, Interest, Poller};
use crate::core::ready::ReadyQueue;
use crate::core::sys::{current_thread_id, nonblocking_socketpair};
use crate::core::timers::TimerQueue;
use crate::cpython::gil::GilCell;
use crate::errors::{closed_loop_error, os_error};
use crate::recv_bytes::{ReadGuesses, SpareSlot};

/// How a reader or writer is registered (see `register_io`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum IoKind {
    /// `add_reader`/`add_writer`: level-triggered, called on every iteration while ready.
    Level,
    /// A Rust transport's own read or write step (`Flags::NATIVE_READ`), level-triggered.
    TransportStep,
    /// A wait that ends at its first completion: one-shot, parked when removed (`io.rs`).
    Oneshot,
}

/// The poller token of the signal wake-up socket (the waker's is `u64::MAX`).
pub(super) const SIGNAL_TOKEN: u64 = u64::MAX - 1;

pub struct LoopState {
    pub(super) ready: ReadyQueue<Py<Handle>>,
    pub(super) timers: TimerQueue<Py<Handle>>,
    pub(super) io: IoRegistry,
    pub(super) events: Vec<Event>,
    /// `None` once the loop is closed.
    pub(super) poller: Option<Arc<Poller>>,
    /// The socket pair whose write end is given to `signal.set_wakeup_fd` while running.
    pub(super) signal_pair: Option<(OwnedFd, OwnedFd)>,
    /// Signal numbers read from the wake-up socket, not yet handled.
    pub(super) signal_numbers: Vec<u8>,
    /// Whether `add_signal_handler` callbacks exist: a busy loop must then still poll, to read
    /// the signal numbers, where it could skip polling with no fd registered.
    pub(super) watching_signals: bool,
    /// Timers scheduled since the current iteration began. They join the heap when the next
    /// one begins (see `run::merge_new_timers`), so the timers an iteration runs are exactly
    /// those in the heap when it began.
    pub(super) new_timers: Vec<(f64, Py<Handle>)>,
    /// `{"loop": <this loop>}`, reused as the keywords of every `Future(loop=...)` and plain
    /// `Task(coro, loop=...)` (their constructors only read it): a dict per call saved.
    pub(super) loop_kwargs: Option<Py<PyDict>>,
    /// The Context shared by handles scheduled without `context=` (see `context.rs`).
    pub(super) snapshots: Snapshots,
    pub(super) stopping: bool,
    /// The running thread's id (`threading.get_ident()`), `Some` while running.
    pub(super) thread_id: Option<u64>,
    pub(super) slow_callback_duration: f64,
    /// `set_task_factory`'s factory.
    pub(super) task_factory: Option<Py<PyAny>>,
    /// The handle running, in debug mode only (`_current_handle`, which the default exception
    /// handler reads).
    pub(super) current_handle: Option<Py<Handle>>,
    /// What `sock_recv` guesses each stream socket's next read will bring (`recv_bytes.rs`).
    pub(super) recv_guesses: ReadGuesses,
}

impl LoopState {
    /// Empties the ready queue, the timers and the fd registry: the handles they held, the fds
    /// that were registered, and the registrations' other objects (owners, futures). The caller
    /// drops them once the borrow ends.
    pub(super) fn drain_handles(&mut self) -> (Vec<Py<Handle>>, Vec<RawFd>, Vec<Py<PyAny>>) {
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
    pub(super) state: GilCell<LoopState>,
    pub(super) shared: Arc<LoopShared>,
    /// The `bytes` lent to one transport read after another (`recv_bytes.rs`).
    pub(super) read_spare: GilCell<SpareSlot>,
    /// `_transports`: fd -> the transport that owns it, a `weakref.WeakValueDictionary` as in the
    /// stock selector loop, and its `data` dict (of weak references), for cheap membership tests.
    pub(super) transports: Py<PyAny>,
    pub(super) transports_data: Py<PyDict>,
    /// `_signal_handlers`: signal number -> `(callback, args, context)`, kept by the Python
    /// signal methods and read here when a signal's number arrives (`run.rs`).
    pub(super) signal_handlers: Py<PyDict>,
    /// The counters and the slow-callback handler (`meter.rs`).
    pub(super) meter: Meter,
}

impl LoopCore {
    /// The poller, or the closed-loop error.
    pub(super) fn poller(&self, py: Python<'_>) -> PyResult<Arc<Poller>> {
        self.state
            .borrow(py)
            .poller
            .clone()
            .ok_or_else(closed_loop_error)
    }

    pub(super) fn check_closed(&self, py: Python<'_>) -> PyResult<()> {
        if self.state.borrow(py).poller.is_none() {
            return Err(closed_loop_error());
        }
        Ok(())
    }

    pub(super) fn check_thread(&self, py: Python<'_>) -> PyResult<()> {
        match self.state.borrow(py).thread_id {
            Some(id) if id != current_thread_id() => Err(PyRuntimeError::new_err(
                "Non-thread-safe operation invoked on an event loop other than the current one",
            )),
            _ => Ok(()),
        }
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

    /// A transport on `fd` moved `nbytes` (wrote them if `wrote`): for a trace, if one is on.
    #[inline(always)]
    pub(crate) fn transferred(&self, py: Python<'_>, fd: RawFd, wrote: bool, nbytes: usize) {
        self.meter.transferred(py, fd as u32, wrote, nbytes);
    }

    pub(crate) fn debug_enabled(&self) -> bool {
        self.shared.debug()
    }

    /// A new loop: its poller, and the socket pair whose write end receives signal numbers.
    pub(super) fn create(py: Python<'_>) -> PyResult<LoopCore> {
        let poller = Poller::new().map_err(os_error)?;
        let signal_pair = nonblocking_socketpair().map_err(os_error)?;
        poller
            .register(signal_pair.0.as_raw_fd(), SIGNAL_TOKEN, Interest::READABLE)
            .map_err(os_error)?;
        let transports = py
            .import(intern!(py, "weakref"))?
            .getattr(intern!(py, "WeakValueDictionary"))?
            .call0()?;
        let transports_data = transports
            .getattr(intern!(py, "data"))?
            .cast_into::<PyDict>()?;
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
                task_factory: None,
                current_handle: None,
                recv_guesses: ReadGuesses::default(),
            }),
            shared: Arc::new(LoopShared::default()),
            read_spare: GilCell::new(SpareSlot::default()),
            transports: transports.unbind(),
            transports_data: transports_data.unbind(),
            signal_handlers: PyDict::new(py).unbind(),
            meter: Meter::new(0.1),
        })
    }
}
