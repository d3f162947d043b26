//! What Python sees of `LoopCore`: its methods and attributes, each a thin entry into the file
//! that does the work (`scheduling.rs`, `io_registration.rs`, `tasks.rs`, `run.rs`,
//! `transports_table.rs`). `call_soon` and its kin are added apart, as raw C methods
//! (`fastcall.rs`). The whole contract is typed in `ferroloop/_core.pyi`.

use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::PyTraverseError;

use super::close_watch;
use super::handle::Handle;
use super::hooks;
use super::io::{Ties, Which};
use super::run;
use super::state::LoopCore;
use super::tracer::Tracer;
use crate::core::clock;
use crate::core::poller::MAX_SPIN_LIMIT;

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        LoopCore::create(py)
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

    /// Wraps a coroutine in a task (`tasks.rs`).
    #[pyo3(signature = (coro, **kwargs))]
    fn create_task<'py>(
        slf: &Bound<'py, Self>,
        coro: Bound<'py, PyAny>,
        kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::new_task(slf, coro, kwargs)
    }

    /// `asyncio.Future(loop=self)`.
    fn create_future<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::new_future(slf)
    }

    /// The stock `set_task_factory`: `create_task` calls `factory(loop, coro, **kwargs)`.
    fn set_task_factory(&self, py: Python<'_>, factory: Bound<'_, PyAny>) -> PyResult<()> {
        if !factory.is_none() && !factory.is_callable() {
            return Err(PyTypeError::new_err(
                "task factory must be a callable or None",
            ));
        }
        let factory = (!factory.is_none()).then(|| factory.unbind());
        let old = std::mem::replace(&mut self.state.borrow_mut(py).task_factory, factory);
        drop(old);
        Ok(())
    }

    fn get_task_factory(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .borrow(py)
            .task_factory
            .as_ref()
            .map(|f| f.clone_ref(py))
    }

    /// The handle running now, in debug mode (else None), as the stock loop's attribute.
    #[getter]
    fn _current_handle(&self, py: Python<'_>) -> Option<Py<Handle>> {
        self.state
            .borrow(py)
            .current_handle
            .as_ref()
            .map(|h| h.clone_ref(py))
    }

    /// fd -> the transport that owns it (a `weakref.WeakValueDictionary`).
    #[getter]
    fn _transports(&self, py: Python<'_>) -> Py<PyAny> {
        self.transports.clone_ref(py)
    }

    /// signal number -> `(callback, args, context)`, for `add_signal_handler`.
    #[getter]
    fn _signal_handlers(&self, py: Python<'_>) -> Py<PyDict> {
        self.signal_handlers.clone_ref(py)
    }

    /// The stock check that `fd` (a number or an object with `fileno()`) is not a transport's,
    /// unless that transport is closing.
    fn _ensure_fd_no_transport(&self, fd: &Bound<'_, PyAny>) -> PyResult<()> {
        self.ensure_no_transport(fd)
    }

    /// Logs `context` on the `asyncio` logger as the stock default handler does. `ferroloop.Loop`
    /// overrides it with the stock handler chain (`set_exception_handler`).
    fn call_exception_handler(slf: &Bound<'_, Self>, context: Bound<'_, PyAny>) -> PyResult<()> {
        hooks::call(slf.py(), "default_exception_handler", (slf, context))?;
        Ok(())
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
        self.meter.set_slow_callback_duration(py, value);
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
    /// `sock_*` call the reader serves (see `io::Slot`), `context` the Context the callback runs
    /// in (a transport's own, see `_transports.py`; a copy of the current one if `None`).
    #[pyo3(signature = (fd, callback, *args, owner=None, pending=None, context=None))]
    fn _add_reader<'py>(
        slf: &Bound<'py, Self>,
        fd: RawFd,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        owner: Option<Bound<'py, PyAny>>,
        pending: Option<Bound<'py, PyAny>>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let ties = Ties {
            owner,
            pending,
            context,
        };
        Self::add_io_tied(slf, fd, false, callback, args, ties)
    }

    /// The stock loop's private `_add_writer`, as `_add_reader`.
    #[pyo3(signature = (fd, callback, *args, owner=None, pending=None, context=None))]
    fn _add_writer<'py>(
        slf: &Bound<'py, Self>,
        fd: RawFd,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        owner: Option<Bound<'py, PyAny>>,
        pending: Option<Bound<'py, PyAny>>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let ties = Ties {
            owner,
            pending,
            context,
        };
        Self::add_io_tied(slf, fd, true, callback, args, ties)
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

    /// The counters (`meter.rs`): `Loop.stats()` shapes them.
    #[pyo3(signature = (reset=false))]
    fn _stats<'py>(&self, py: Python<'py>, reset: bool) -> PyResult<(Bound<'py, PyTuple>, usize)> {
        let ready = self.state.borrow(py).ready.len();
        Ok((self.meter.snapshot(py, reset)?, ready))
    }

    /// Attaches a tracer (`ferroloop._trace`), or detaches it with None.
    fn _trace_attach(&self, py: Python<'_>, tracer: Option<Py<Tracer>>) -> PyResult<()> {
        self.meter.set_tracer(py, tracer)
    }

    /// The id the stall watchdog knows this loop by.
    #[getter]
    fn _beacon_id(&self) -> u64 {
        self.meter.beacon_id()
    }

    /// The attached tracer, if any.
    #[getter]
    fn _tracer(&self, py: Python<'_>) -> Option<Py<Tracer>> {
        self.meter.tracer(py)
    }

    /// Calls `handler(info)` after each callback that took `slow_callback_duration` or longer;
    /// `None` removes it.
    fn set_slow_callback_handler(
        &self,
        py: Python<'_>,
        handler: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.meter.set_slow_handler(py, handler)
    }

    fn get_slow_callback_handler(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.meter.slow_handler(py)
    }

    /// Reports what the queues hold, so that a loop dropped with callbacks pending is collected
    /// with whatever cycles run through them. Not while the loop runs: a running loop is alive
    /// (its thread's running-loop slot and the frames running it hold it), so everything it holds
    /// is reachable anyway, and leaving references unreported only ever keeps objects alive. That
    /// spares every collection during a run a walk over every queued handle.
    fn __traverse__(&self, visit: pyo3::gc::PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.transports)?;
        visit.call(&self.signal_handlers)?;
        self.meter.visit(&visit)?;
        if let Some(st) = self.state.try_borrow_in_gc() {
            if st.thread_id.is_some() {
                return Ok(());
            }
            st.snapshots.visit(&visit)?;
            visit.call(&st.loop_kwargs)?;
            visit.call(&st.task_factory)?;
            visit.call(&st.current_handle)?;
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
                let loose = (st.task_factory.take(), st.current_handle.take());
                (
                    handles,
                    others,
                    st.snapshots.clear(),
                    st.loop_kwargs.take(),
                    loose,
                )
            };
            drop(garbage);
            self.meter.clear(py);
        });
    }
}

impl LoopCore {
    /// `add_io` from Python: a socket given as `owner` is watched, so that closing it drops the
    /// registration first (`event_loop::close_watch`).
    #[allow(clippy::too_many_arguments)]
    fn add_io_tied<'py>(
        slf: &Bound<'py, Self>,
        fd: RawFd,
        writer: bool,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        ties: Ties<'py>,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let ties = Ties {
            owner: ties.owner.filter(|o| !o.is_none()),
            pending: ties.pending.filter(|p| !p.is_none()),
            context: ties.context,
        };
        if let Some(owner) = ties.owner.as_ref() {
            close_watch::watch(slf, owner)?;
        }
        slf.get().add_io(py, fd, writer, callback, args, ties)
    }
}
