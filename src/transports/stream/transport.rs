//! The stream transport's object and the state it keeps, and the helpers reading, writing and
//! lifecycle share.

use std::os::fd::RawFd;

use pyo3::exceptions::{PyKeyboardInterrupt, PySystemExit};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

use crate::core::buffer::WriteBuffer;
use crate::cpython;
use crate::cpython::gil::GilCell;
use crate::errors::os_error;
use crate::event_loop::{CallArgs, LoopCore, Which};
use crate::owner;

use crate::cpython::method_cache::ReadMethods;

pub(super) static LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
pub(super) static BUFFERED_PROTOCOL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
pub(super) static TRANSPORT_SOCKET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
pub(super) static SET_RESULT_UNLESS_CANCELLED: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
pub(super) static NOMINAL_CLASS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

pub(super) fn logger(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    LOGGER
        .import(py, "asyncio.log", "logger")
        .map(|l| l.as_any())
}

pub(super) struct State {
    /// `None` once `connection_lost` has run, as the stock transport drops its loop.
    pub(super) event_loop: Option<Py<LoopCore>>,
    /// `None` once closed (after `connection_lost`).
    pub(super) sock: Option<Py<PyAny>>,
    pub(super) protocol: Option<Py<PyAny>>,
    /// The protocol is a `BufferedProtocol` (decided by `set_protocol`): reads go through
    /// `get_buffer`/`buffer_updated`. As with the stock transport, replacing one on the
    /// protocol takes effect at the next read (`cpython/method_cache.rs` keeps them only while CPython
    /// shows them unchanged).
    pub(super) buffered: bool,
    pub(super) protocol_connected: bool,
    pub(super) extra: Py<PyDict>,
    pub(super) server: Option<Py<PyAny>>,
    pub(super) buffer: WriteBuffer,
    /// Non-zero once `connection_lost` is scheduled; then counts writes attempted since.
    pub(super) conn_lost: u32,
    pub(super) closing: bool,
    pub(super) paused: bool,
    pub(super) eof: bool,
    pub(super) protocol_paused: bool,
    pub(super) high_water: usize,
    pub(super) low_water: usize,
    /// The future `loop.sendfile` waits on for the buffer to empty.
    pub(super) empty_waiter: Option<Py<PyAny>>,
    /// The size to allocate for the next plain read (see `recv_bytes_guessing`).
    pub(super) read_guess: usize,
    /// The `contextvars.Context` every protocol callback runs in: a copy of the one the
    /// transport was created in (see the module doc). `None` only once `__clear__` broke a cycle.
    pub(super) context: Option<Py<PyAny>>,
}

/// From 3.13, `dict`: an instance `__dict__`, unallocated unless someone sets an attribute, as
/// `unittest.mock.patch.object(transport, "write", ...)` does on a stock transport (CPython's own
/// TLS tests from 3.13 on patch the transport under TLS that way). Not on 3.11, whose
/// `object.__new__` allocates the dict at once: a collection it sets off then traverses the
/// transport before PyO3 has written its fields (`__traverse__` copes, see there).
#[cfg_attr(Py_3_13, pyclass(module = "ferroloop._core", frozen, weakref, dict))]
#[cfg_attr(not(Py_3_13), pyclass(module = "ferroloop._core", frozen, weakref))]
pub struct StreamTransport {
    pub(super) fd: RawFd,
    /// The socket `fd` belongs to, kept for the transport's life (`state.sock` goes once it is
    /// closed): every system call checks that it still holds `fd`. Always set; an `Option` so
    /// that `__traverse__` can tell a transport whose fields are not written yet (all zero).
    pub(super) owner: Option<Py<PyAny>>,
    /// Whether `owner`'s fd is read from its memory (`cpython::socket::held_fd_known`).
    pub(super) owner_readable: bool,
    pub(super) state: GilCell<State>,
    /// The protocol's methods called at each read, found without a lookup each time when
    /// CPython can vouch for them (`cpython/method_cache.rs`).
    pub(super) methods: ReadMethods,
}

pub(super) fn is_exit(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PySystemExit>(py) || err.is_instance_of::<PyKeyboardInterrupt>(py)
}

impl StreamTransport {
    pub(super) fn event_loop<'py>(&self, py: Python<'py>) -> Option<Bound<'py, LoopCore>> {
        self.state
            .borrow(py)
            .event_loop
            .as_ref()
            .map(|l| l.bind(py).clone())
    }

    pub(super) fn debug(&self, py: Python<'_>) -> bool {
        self.event_loop(py).is_some_and(|l| l.get().debug_enabled())
    }

    pub(super) fn call_soon<'py>(
        &self,
        py: Python<'py>,
        callback: Bound<'py, PyAny>,
        args: CallArgs<'py>,
    ) -> PyResult<()> {
        if let Some(lp) = self.event_loop(py) {
            let context = self.context(py);
            lp.get()
                .soon(py, "call_soon", true, callback, args, context)?;
        }
        Ok(())
    }

    /// The transport's Context (see `State::context`).
    pub(super) fn context<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        self.state
            .borrow(py)
            .context
            .as_ref()
            .map(|c| c.bind(py).clone())
    }

    /// Starts (`on`) or stops watching the fd for reading or writing. The transport itself is
    /// registered, and the loop runs its read or write step natively (`Flags::NATIVE_READ`).
    pub(super) fn set_io(slf: &Bound<'_, Self>, writer: bool, on: bool) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let Some(lp) = this.event_loop(py) else {
            return Ok(());
        };
        let Some(owner) = this.owner.as_ref().map(|o| o.bind(py)) else {
            return Ok(());
        };
        if on {
            let context = this.context(py);
            lp.get()
                .add_transport_io(py, this.fd, writer, slf.clone().into_any(), owner, context)
        } else {
            lp.get()
                .remove_io(py, this.fd, writer, Which::Owner(owner))
                .map(drop)
        }
    }

    /// Tells the loop's tracer, if one is on, that `nbytes` were written (or read).
    #[inline(always)]
    pub(super) fn transferred(&self, py: Python<'_>, wrote: bool, nbytes: usize) {
        if let Some(lp) = self.state.borrow(py).event_loop.as_ref() {
            lp.get().transferred(py, self.fd, wrote, nbytes);
        }
    }

    /// The fd for the next system call: `fd` while the socket holds it, else -1, on which every
    /// call fails with EBADF (`crate::owner`, rule 1).
    #[inline(always)]
    pub(super) fn live_fd(&self, py: Python<'_>) -> RawFd {
        let Some(owner) = self.owner.as_ref().map(|o| o.bind(py)) else {
            return -1;
        };
        let held = if self.owner_readable {
            // SAFETY: `owner_readable` is set only when `held_fd` answered for this owner.
            unsafe { cpython::socket::held_fd_known(owner) }
        } else {
            owner::fd_now(owner).ok().flatten()
        };
        match held {
            Some(fd) if fd == self.fd => fd,
            _ => -1,
        }
    }

    pub(super) fn log_debug(slf: &Bound<'_, Self>, text: &str) -> PyResult<()> {
        let py = slf.py();
        if slf.get().debug(py) {
            logger(py)?.call_method1(intern!(py, "debug"), (text, slf))?;
        }
        Ok(())
    }

    pub(super) fn call_exception_handler(
        slf: &Bound<'_, Self>,
        message: &str,
        exc: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let Some(lp) = slf.get().event_loop(py) else {
            return Ok(());
        };
        let context = PyDict::new(py);
        context.set_item(intern!(py, "message"), message)?;
        context.set_item(intern!(py, "exception"), exc)?;
        context.set_item(intern!(py, "transport"), slf)?;
        context.set_item(intern!(py, "protocol"), Self::protocol_of(slf))?;
        lp.call_method1(intern!(py, "call_exception_handler"), (context,))?;
        Ok(())
    }

    pub(super) fn protocol_of<'py>(slf: &Bound<'py, Self>) -> Option<Bound<'py, PyAny>> {
        let py = slf.py();
        slf.get()
            .state
            .borrow(py)
            .protocol
            .as_ref()
            .map(|p| p.bind(py).clone())
    }

    pub(super) fn set_protocol_inner(
        &self,
        py: Python<'_>,
        protocol: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let buffered_type =
            BUFFERED_PROTOCOL.import(py, "asyncio.protocols", "BufferedProtocol")?;
        let buffered = protocol.is_instance(buffered_type)?;
        let old = {
            let mut st = self.state.borrow_mut(py);
            st.protocol_connected = true;
            st.buffered = buffered;
            st.protocol.replace(protocol.clone().unbind())
        };
        drop(old);
        self.methods.forget(py);
        Ok(())
    }

    pub(super) fn repr_text(&self, py: Python<'_>) -> String {
        let (closed, closing, bufsize) = {
            let st = self.state.borrow(py);
            (st.sock.is_none(), st.closing, st.buffer.len())
        };
        let mut info = vec!["StreamTransport".to_owned()];
        if closed {
            info.push("closed".into());
        } else if closing {
            info.push("closing".into());
        }
        info.push(format!("fd={}", self.fd));
        if let Some(lp) = self.event_loop(py) {
            if !lp.get().is_closed(py) {
                let (reading, writing) = lp.get().io_registered(py, self.fd);
                info.push(format!("read={}", if reading { "polling" } else { "idle" }));
                let state = if writing { "polling" } else { "idle" };
                info.push(format!("write=<{state}, bufsize={bufsize}>"));
            }
        }
        format!("<{}>", info.join(" "))
    }

    /// A Python exception for a failed system call.
    pub(super) fn io_exc(err: std::io::Error) -> PyErr {
        os_error(err)
    }
}
