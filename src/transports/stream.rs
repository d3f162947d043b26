//! `StreamTransport`: the TCP and Unix stream transport, with the semantics of the stock
//! `selector_events._SelectorSocketTransport`, read and write paths in Rust.
//!
//! What the stock transport does, and so this one:
//! - Creation schedules, in this order, `protocol.connection_made(transport)`, the start of
//!   reading, and the waiter's result, all with `call_soon`: the protocol sees data only after
//!   `connection_made`, and the waiter wakes after both.
//! - Reading: one `recv` (256 KiB at most) per readiness event, handed to `data_received`, or,
//!   for a `BufferedProtocol`, received straight into the buffer `get_buffer(-1)` returns and
//!   announced with `buffer_updated(n)`. End of stream calls `eof_received()`; a true result
//!   keeps the transport open for writing, anything else closes it.
//! - Writing: `write` sends at once when nothing is waiting and buffers only the rest; the buffer
//!   is flushed when the socket becomes writable. Above the high-water mark the protocol's
//!   `pause_writing()` is called once, and `resume_writing()` once it drains to the low-water
//!   mark.
//! - `close()` stops reading and lets the buffer drain before `connection_lost(None)`;
//!   `abort()` and fatal errors drop the buffer. `connection_lost` is called exactly once, from
//!   a `call_soon` callback (or straight from the flush that empties the buffer of a closing
//!   transport), and then the socket is closed and the server told.
//! - Errors: an `OSError` from the socket ends the connection quietly (logged only in debug
//!   mode) and reaches `connection_lost(exc)`; any other exception from the protocol goes to the
//!   loop's exception handler first. `SystemExit` and `KeyboardInterrupt` propagate.
//!
//! The transport's read and write steps (`_read_ready`, `_write_ready`) are the fd's reader and
//! writer, so they run in the ready queue in the stock loop's order; the handle holds the
//! transport itself and the loop calls the step straight from Rust (`run_step`).
//!
//! Borrow rule (see `cpython/gil.rs`): the state is never borrowed across a call into Python, since
//! every protocol method may call back into the transport.
//!
//! The fd belongs to the socket object (`crate::owner`): each system call goes through `live_fd`,
//! which gives -1 (so the call fails with EBADF, as the stock transport's `sock.send` would) once
//! the program has closed or detached the socket under the transport; the reader and writer are
//! registered as that socket's, and the socket is watched, so closing it takes them out of epoll.

use std::ffi::CString;
use std::io::ErrorKind;
use std::os::fd::RawFd;
use std::sync::OnceLock;

use pyo3::exceptions::{
    PyConnectionError, PyKeyboardInterrupt, PyOSError, PyRuntimeError, PySystemExit, PyTypeError,
    PyValueError,
};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyTuple};
use pyo3::{PyTraverseError, PyTypeInfo};

use crate::core::buffer::WriteBuffer;
use crate::core::sys;
use crate::cpython;
use crate::cpython::gil::GilCell;
use crate::errors::{os_error, retry_eintr};
use crate::event_loop::close_watch;
use crate::event_loop::{CallArgs, LoopCore, Which};
use crate::owner;
use crate::recv_bytes::{recv_lending, Received};

use crate::cpython::method_cache::{self, ReadMethods};

/// The most one read takes, as the stock transport's `max_size`.
const MAX_READ: usize = 256 * 1024;

/// Writes after the connection is lost are counted; from this many on, each logs a warning
/// (the stock `constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES`).
const LOG_THRESHOLD_FOR_CONNLOST_WRITES: u32 = 5;

const DEFAULT_HIGH_WATER: usize = 64 * 1024;

static BUFFERED_PROTOCOL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static TRANSPORT_SOCKET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static SET_RESULT_UNLESS_CANCELLED: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static NOMINAL_CLASS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn logger(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    LOGGER
        .import(py, "asyncio.log", "logger")
        .map(|l| l.as_any())
}

struct State {
    /// `None` once `connection_lost` has run, as the stock transport drops its loop.
    event_loop: Option<Py<LoopCore>>,
    /// `None` once closed (after `connection_lost`).
    sock: Option<Py<PyAny>>,
    protocol: Option<Py<PyAny>>,
    /// The protocol is a `BufferedProtocol` (decided by `set_protocol`): reads go through
    /// `get_buffer`/`buffer_updated`. As with the stock transport, replacing one on the
    /// protocol takes effect at the next read (`cpython/method_cache.rs` keeps them only while CPython
    /// shows them unchanged).
    buffered: bool,
    protocol_connected: bool,
    extra: Py<PyDict>,
    server: Option<Py<PyAny>>,
    buffer: WriteBuffer,
    /// Non-zero once `connection_lost` is scheduled; then counts writes attempted since.
    conn_lost: u32,
    closing: bool,
    paused: bool,
    eof: bool,
    protocol_paused: bool,
    high_water: usize,
    low_water: usize,
    /// The future `loop.sendfile` waits on for the buffer to empty.
    empty_waiter: Option<Py<PyAny>>,
    /// The size to allocate for the next plain read (see `recv_bytes_guessing`).
    read_guess: usize,
}

/// From 3.13, `dict`: an instance `__dict__`, unallocated unless someone sets an attribute, as
/// `unittest.mock.patch.object(transport, "write", ...)` does on a stock transport (CPython's own
/// TLS tests from 3.13 on patch the transport under TLS that way). Not on 3.11, whose
/// `object.__new__` allocates the dict at once: a collection it sets off then traverses the
/// transport before PyO3 has written its fields (`__traverse__` copes, see there).
#[cfg_attr(Py_3_13, pyclass(module = "ferroloop._core", frozen, weakref, dict))]
#[cfg_attr(not(Py_3_13), pyclass(module = "ferroloop._core", frozen, weakref))]
pub struct StreamTransport {
    fd: RawFd,
    /// The socket `fd` belongs to, kept for the transport's life (`state.sock` goes once it is
    /// closed): every system call checks that it still holds `fd`. Always set; an `Option` so
    /// that `__traverse__` can tell a transport whose fields are not written yet (all zero).
    owner: Option<Py<PyAny>>,
    /// Whether `owner`'s fd is read from its memory (`cpython::socket::held_fd_known`).
    owner_readable: bool,
    state: GilCell<State>,
    /// The protocol's methods called at each read, found without a lookup each time when
    /// CPython can vouch for them (`cpython/method_cache.rs`).
    methods: ReadMethods,
}

/// What a read produced, decided before any Python code runs: the bytes (plain protocol) or
/// their count (buffered protocol), end of stream, nothing yet, or an error.
enum ReadOutcome<T> {
    Got(T),
    Eof,
    WouldBlock,
    Failed(PyErr),
}

impl<T> ReadOutcome<T> {
    /// What one `recv` amounts to; `is_eof` tells an end of stream from data. As stock, only
    /// exits escape: any other Python error (a MemoryError for the `bytes`, an exception from a
    /// signal handler run on EINTR) is a fatal read error.
    fn of_recv(
        py: Python<'_>,
        got: PyResult<std::io::Result<T>>,
        is_eof: impl FnOnce(&T) -> bool,
    ) -> PyResult<Self> {
        Ok(match got {
            Err(err) if is_exit(py, &err) => return Err(err),
            Err(err) => ReadOutcome::Failed(err),
            Ok(Ok(got)) if is_eof(&got) => ReadOutcome::Eof,
            Ok(Ok(got)) => ReadOutcome::Got(got),
            Ok(Err(e)) if e.kind() == ErrorKind::WouldBlock => ReadOutcome::WouldBlock,
            Ok(Err(e)) => ReadOutcome::Failed(os_error(e)),
        })
    }

    /// What arrived, or the outcome of a read that brought nothing, ready to stand for the
    /// result of handing what arrived to the protocol (`after_read`'s input).
    #[inline(always)]
    fn got<U>(self) -> Result<T, ReadOutcome<U>> {
        match self {
            ReadOutcome::Got(got) => Ok(got),
            ReadOutcome::Eof => Err(ReadOutcome::Eof),
            ReadOutcome::WouldBlock => Err(ReadOutcome::WouldBlock),
            ReadOutcome::Failed(err) => Err(ReadOutcome::Failed(err)),
        }
    }
}

fn is_exit(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PySystemExit>(py) || err.is_instance_of::<PyKeyboardInterrupt>(py)
}

/// Bytes-like data `write` accepts: `bytes`, `bytearray` or `memoryview`, as the stock check.
fn check_bytes_like(data: &Bound<'_, PyAny>) -> PyResult<()> {
    // SAFETY: the type checks only read the object's type.
    let ok = data.is_instance_of::<PyBytes>()
        || data.is_instance_of::<PyByteArray>()
        || unsafe { ffi::PyMemoryView_Check(data.as_ptr()) } != 0;
    if ok {
        return Ok(());
    }
    Err(PyTypeError::new_err(format!(
        "data argument must be {WRITE_TYPES}, not {}",
        data.get_type().name()?.repr()?
    )))
}

/// What the stock `write` names in its TypeError, which 3.14 reworded.
#[cfg(Py_3_14)]
const WRITE_TYPES: &str = "a bytes, bytearray, or memoryview object";
#[cfg(not(Py_3_14))]
const WRITE_TYPES: &str = "a bytes-like object";

/// A contiguous view of a buffer-protocol object, released on drop.
struct BufferView(ffi::Py_buffer);

impl BufferView {
    fn new(obj: &Bound<'_, PyAny>, writable: bool) -> PyResult<Self> {
        let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
        let flags = if writable {
            ffi::PyBUF_WRITABLE
        } else {
            ffi::PyBUF_SIMPLE
        };
        // SAFETY: `view` is writable storage for a Py_buffer; on success it is filled and must be
        // released once, which Drop does.
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), flags) } < 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        // SAFETY: PyObject_GetBuffer succeeded, so the view is initialised.
        Ok(BufferView(unsafe { view.assume_init() }))
    }

    fn as_slice(&self) -> &[u8] {
        if self.0.len <= 0 || self.0.buf.is_null() {
            return &[];
        }
        // SAFETY: a simple (contiguous) buffer of `len` bytes at `buf`, alive until release.
        unsafe { std::slice::from_raw_parts(self.0.buf.cast::<u8>(), self.0.len as usize) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        if self.0.len <= 0 || self.0.buf.is_null() {
            return &mut [];
        }
        // SAFETY: as `as_slice`, and the buffer was requested writable.
        unsafe { std::slice::from_raw_parts_mut(self.0.buf.cast::<u8>(), self.0.len as usize) }
    }
}

impl Drop for BufferView {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful PyObject_GetBuffer and is released once;
        // views exist only while the GIL is held.
        unsafe { ffi::PyBuffer_Release(&mut self.0) };
    }
}

impl StreamTransport {
    fn event_loop<'py>(&self, py: Python<'py>) -> Option<Bound<'py, LoopCore>> {
        self.state
            .borrow(py)
            .event_loop
            .as_ref()
            .map(|l| l.bind(py).clone())
    }

    fn debug(&self, py: Python<'_>) -> bool {
        self.event_loop(py).is_some_and(|l| l.get().debug_enabled())
    }

    fn call_soon<'py>(
        &self,
        py: Python<'py>,
        callback: Bound<'py, PyAny>,
        args: CallArgs<'py>,
    ) -> PyResult<()> {
        if let Some(lp) = self.event_loop(py) {
            lp.get().soon(py, "call_soon", true, callback, args, None)?;
        }
        Ok(())
    }

    /// Starts (`on`) or stops watching the fd for reading or writing. The transport itself is
    /// registered, and the loop runs its read or write step natively (`Flags::NATIVE_READ`).
    fn set_io(slf: &Bound<'_, Self>, writer: bool, on: bool) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let Some(lp) = this.event_loop(py) else {
            return Ok(());
        };
        let Some(owner) = this.owner.as_ref().map(|o| o.bind(py)) else {
            return Ok(());
        };
        if on {
            lp.get()
                .add_transport_io(py, this.fd, writer, slf.clone().into_any(), owner)
        } else {
            lp.get()
                .remove_io(py, this.fd, writer, Which::Owner(owner))
                .map(drop)
        }
    }

    /// The fd for the next system call: `fd` while the socket holds it, else -1, on which every
    /// call fails with EBADF (`crate::owner`, rule 1).
    #[inline(always)]
    fn live_fd(&self, py: Python<'_>) -> RawFd {
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

    fn log_debug(slf: &Bound<'_, Self>, text: &str) -> PyResult<()> {
        let py = slf.py();
        if slf.get().debug(py) {
            logger(py)?.call_method1(intern!(py, "debug"), (text, slf))?;
        }
        Ok(())
    }

    fn is_reading_now(&self, py: Python<'_>) -> bool {
        let st = self.state.borrow(py);
        !st.closing && !st.paused
    }

    /// Registers the reader unless reading is paused or the transport is closing.
    fn start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        if slf.get().is_reading_now(slf.py()) {
            Self::set_io(slf, false, true)?;
        }
        Ok(())
    }

    fn call_exception_handler(
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

    fn protocol_of<'py>(slf: &Bound<'py, Self>) -> Option<Bound<'py, PyAny>> {
        let py = slf.py();
        slf.get()
            .state
            .borrow(py)
            .protocol
            .as_ref()
            .map(|p| p.bind(py).clone())
    }

    /// An error that ends the connection: reported (quietly for `OSError`), then `_force_close`.
    fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        let exc = err.into_value(py).into_bound(py).into_any();
        if exc.is_instance_of::<PyOSError>() {
            if slf.get().debug(py) {
                let kwargs = PyDict::new(py);
                kwargs.set_item(intern!(py, "exc_info"), &exc)?;
                logger(py)?.call_method(
                    intern!(py, "debug"),
                    ("%r: %s", slf, message),
                    Some(&kwargs),
                )?;
            }
        } else {
            Self::call_exception_handler(slf, message, &exc)?;
        }
        Self::force_close(slf, Some(exc))
    }

    fn force_close(slf: &Bound<'_, Self>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (had_buffer, was_closing) = {
            let mut st = this.state.borrow_mut(py);
            if st.conn_lost > 0 {
                return Ok(());
            }
            let had_buffer = !st.buffer.is_empty();
            st.buffer.clear();
            let was_closing = st.closing;
            st.closing = true;
            st.conn_lost += 1;
            (had_buffer, was_closing)
        };
        if had_buffer {
            Self::set_io(slf, true, false)?;
        }
        if !was_closing {
            Self::set_io(slf, false, false)?;
        }
        let callback = slf.getattr(intern!(py, "_call_connection_lost"))?;
        let arg = exc.unwrap_or_else(|| py.None().into_bound(py));
        this.call_soon(py, callback, CallArgs::One(arg))
    }

    /// Calls a flow-control method of the protocol; its failure goes to the exception handler.
    fn call_flow_control(slf: &Bound<'_, Self>, method: &str) -> PyResult<()> {
        let Some(protocol) = Self::protocol_of(slf) else {
            return Ok(());
        };
        if let Err(err) = protocol.call_method0(method) {
            if is_exit(slf.py(), &err) {
                return Err(err);
            }
            let exc = err.into_value(slf.py()).into_bound(slf.py()).into_any();
            Self::call_exception_handler(slf, &format!("protocol.{method}() failed"), &exc)?;
        }
        Ok(())
    }

    fn maybe_pause_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let pause = {
            let mut st = slf.get().state.borrow_mut(slf.py());
            if st.buffer.len() <= st.high_water || st.protocol_paused {
                false
            } else {
                st.protocol_paused = true;
                true
            }
        };
        if pause {
            Self::call_flow_control(slf, "pause_writing")?;
        }
        Ok(())
    }

    fn maybe_resume_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let resume = {
            let mut st = slf.get().state.borrow_mut(slf.py());
            if st.protocol_paused && st.buffer.len() <= st.low_water {
                st.protocol_paused = false;
                true
            } else {
                false
            }
        };
        if resume {
            Self::call_flow_control(slf, "resume_writing")?;
        }
        Ok(())
    }

    /// A Python exception for a failed system call.
    fn io_exc(err: std::io::Error) -> PyErr {
        os_error(err)
    }

    /// One `recv` for the plain protocol: the bytes, end of stream, or nothing yet.
    #[inline(always)]
    fn read_bytes<'py>(
        &self,
        py: Python<'py>,
        event_loop: &Bound<'py, LoopCore>,
    ) -> PyResult<ReadOutcome<Received<'py>>> {
        let mut guess = self.state.borrow(py).read_guess;
        let got = recv_lending(
            py,
            self.live_fd(py),
            &mut guess,
            MAX_READ,
            event_loop.get().read_spare(),
        );
        self.state.borrow_mut(py).read_guess = guess;
        ReadOutcome::of_recv(py, got, |data| data.bytes().as_bytes().is_empty())
    }

    /// One `recv` into the buffered protocol's buffer.
    fn read_into<'py>(
        &self,
        py: Python<'py>,
        buf: &Bound<'py, PyAny>,
    ) -> PyResult<ReadOutcome<usize>> {
        let mut view = match BufferView::new(buf, true) {
            Ok(v) => v,
            Err(_) => {
                // The error `socket.recv_into` gives for a buffer it cannot write to.
                let message = format!(
                    "recv_into() argument 'buffer' must be read-write bytes-like object, not {}",
                    buf.get_type().name()?
                );
                return Ok(ReadOutcome::Failed(PyTypeError::new_err(message)));
            }
        };
        let fd = self.live_fd(py);
        let got = retry_eintr(py, || sys::recv(fd, view.as_mut_slice()));
        drop(view);
        ReadOutcome::of_recv(py, got, |n| *n == 0)
    }

    fn on_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        Self::log_debug(slf, "%r received EOF")?;
        let Some(protocol) = Self::protocol_of(slf) else {
            return Ok(());
        };
        let keep_open = match protocol
            .call_method0(intern!(py, "eof_received"))
            .and_then(|r| r.is_truthy())
        {
            Ok(keep) => keep,
            Err(err) if is_exit(py, &err) => return Err(err),
            Err(err) => {
                return Self::fatal_error(
                    slf,
                    err,
                    "Fatal error: protocol.eof_received() call failed.",
                )
            }
        };
        if keep_open {
            Self::set_io(slf, false, false)
        } else {
            Self::close(slf)
        }
    }

    /// Reports a protocol callback's failure (exits propagate).
    fn protocol_call_result(
        slf: &Bound<'_, Self>,
        result: PyResult<Bound<'_, PyAny>>,
        message: &str,
    ) -> PyResult<()> {
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_exit(slf.py(), &err) => Err(err),
            Err(err) => Self::fatal_error(slf, err, message),
        }
    }

    /// What follows a read of either kind, once what arrived went to the protocol: the failure of
    /// that call is reported with `message`, end of stream goes to `on_eof`, a read error is fatal.
    #[inline(always)]
    fn after_read(
        slf: &Bound<'_, Self>,
        delivered: ReadOutcome<PyResult<Bound<'_, PyAny>>>,
        message: &str,
    ) -> PyResult<()> {
        match delivered {
            ReadOutcome::Got(result) => Self::protocol_call_result(slf, result, message),
            ReadOutcome::Eof => Self::on_eof(slf),
            ReadOutcome::WouldBlock => Ok(()),
            ReadOutcome::Failed(err) => {
                Self::fatal_error(slf, err, "Fatal read error on socket transport")
            }
        }
    }

    /// The data of a `write`: sent at once if nothing waits, the rest buffered.
    #[inline(always)]
    fn write_slice(slf: &Bound<'_, Self>, data: &[u8]) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let buffered = {
            let mut st = this.state.borrow_mut(py);
            if st.conn_lost > 0 {
                let warn = st.conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES;
                st.conn_lost += 1;
                drop(st);
                if warn {
                    logger(py)?.call_method1(
                        intern!(py, "warning"),
                        ("socket.send() raised exception.",),
                    )?;
                }
                return Ok(());
            }
            !st.buffer.is_empty()
        };
        let mut rest = data;
        if !buffered {
            let fd = this.live_fd(py);
            match retry_eintr(py, || sys::send(fd, data))? {
                Ok(n) => {
                    rest = &data[n.min(data.len())..];
                    if rest.is_empty() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => {
                    return Self::fatal_error(
                        slf,
                        Self::io_exc(e),
                        "Fatal write error on socket transport",
                    )
                }
            }
            Self::set_io(slf, true, true)?;
        }
        this.state.borrow_mut(py).buffer.push(rest);
        Self::maybe_pause_protocol(slf)
    }

    fn shutdown_write(&self, py: Python<'_>) -> PyResult<()> {
        if self.state.borrow(py).sock.is_none() {
            return Ok(());
        }
        sys::shutdown_write(self.live_fd(py)).map_err(Self::io_exc)
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let empty = {
            let mut st = this.state.borrow_mut(py);
            if st.closing {
                return Ok(());
            }
            st.closing = true;
            st.buffer.is_empty()
        };
        Self::set_io(slf, false, false)?;
        if empty {
            this.state.borrow_mut(py).conn_lost += 1;
            Self::set_io(slf, true, false)?;
            let callback = slf.getattr(intern!(py, "_call_connection_lost"))?;
            this.call_soon(py, callback, CallArgs::One(py.None().into_bound(py)))?;
        }
        Ok(())
    }

    fn set_protocol_inner(&self, py: Python<'_>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
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

    fn repr_text(&self, py: Python<'_>) -> String {
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
}

#[pymethods]
impl StreamTransport {
    /// `loop._make_socket_transport(sock, protocol, waiter, extra=, server=)`: a transport over
    /// the connected, non-blocking `sock`, set up as the stock one (see the module doc).
    #[staticmethod]
    #[pyo3(signature = (event_loop, sock, protocol, waiter=None, extra=None, server=None))]
    fn _create<'py>(
        event_loop: Bound<'py, LoopCore>,
        sock: Bound<'py, PyAny>,
        protocol: Bound<'py, PyAny>,
        waiter: Option<Bound<'py, PyAny>>,
        extra: Option<Bound<'py, PyAny>>,
        server: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Self>> {
        let py = event_loop.py();
        let extra = match extra.filter(|e| !e.is_none()) {
            Some(e) => match e.cast_into::<PyDict>() {
                Ok(d) => d,
                Err(e) => PyDict::from_sequence(&e.into_inner().call_method0("items")?)?,
            },
            None => PyDict::new(py),
        };
        let wrapper = TRANSPORT_SOCKET.import(py, "asyncio.trsock", "TransportSocket")?;
        extra.set_item(intern!(py, "socket"), wrapper.call1((&sock,))?)?;
        let sockname = match sock.call_method0(intern!(py, "getsockname")) {
            Ok(name) => name,
            Err(err) if err.is_instance_of::<PyOSError>(py) => py.None().into_bound(py),
            Err(err) => return Err(err),
        };
        extra.set_item(intern!(py, "sockname"), sockname)?;
        if !extra.contains(intern!(py, "peername"))? {
            let peername = match sock.call_method0(intern!(py, "getpeername")) {
                Ok(name) => name,
                Err(err) if err.is_instance_of::<PyOSError>(py) => py.None().into_bound(py),
                Err(err) => return Err(err),
            };
            extra.set_item(intern!(py, "peername"), peername)?;
        }
        let fd: RawFd = sock.call_method0(intern!(py, "fileno"))?.extract()?;
        let server = server.filter(|s| !s.is_none());
        let transport = Bound::new(
            py,
            StreamTransport {
                fd,
                owner: Some(sock.clone().unbind()),
                owner_readable: cpython::socket::held_fd(&sock).is_ok(),
                state: GilCell::new(State {
                    event_loop: Some(event_loop.clone().unbind()),
                    sock: Some(sock.clone().unbind()),
                    protocol: None,
                    buffered: false,
                    protocol_connected: false,
                    extra: extra.unbind(),
                    server: server.as_ref().map(|s| s.clone().unbind()),
                    buffer: WriteBuffer::default(),
                    conn_lost: 0,
                    closing: false,
                    paused: false,
                    eof: false,
                    protocol_paused: false,
                    high_water: DEFAULT_HIGH_WATER,
                    low_water: DEFAULT_HIGH_WATER / 4,
                    empty_waiter: None,
                    read_guess: 0,
                }),
                methods: ReadMethods::default(),
            },
        )?;
        let this = transport.get();
        this.set_protocol_inner(py, &protocol)?;
        if let Some(server) = &server {
            server.call_method1(intern!(py, "_attach"), (&transport,))?;
        }
        event_loop.get().add_transport(py, fd, transport.as_any())?;
        set_nodelay(&sock)?;
        close_watch::watch(&event_loop, &sock)?;
        let connection_made = protocol.getattr(intern!(py, "connection_made"))?;
        this.call_soon(
            py,
            connection_made,
            CallArgs::One(transport.clone().into_any()),
        )?;
        let start = transport.getattr(intern!(py, "_start_reading"))?;
        this.call_soon(py, start, CallArgs::Zero)?;
        if let Some(waiter) = waiter.filter(|w| !w.is_none()) {
            let set_result = SET_RESULT_UNLESS_CANCELLED
                .import(py, "asyncio.futures", "_set_result_unless_cancelled")?
                .clone();
            let args = PyTuple::new(py, [waiter, py.None().into_bound(py)])?;
            this.call_soon(py, set_result, CallArgs::Many(args))?;
        }
        Ok(transport)
    }

    /// `start_tls` accepts this transport (the stock class attribute).
    #[classattr]
    fn _start_tls_compatible() -> bool {
        true
    }

    /// `loop.sendfile` tries the `sendfile` system call on this transport's socket first.
    #[classattr]
    fn _sendfile_compatible(py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(py
            .import("asyncio.constants")?
            .getattr("_SendfileMode")?
            .getattr("TRY_NATIVE")?
            .unbind())
    }

    fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::start_reading(slf)
    }

    /// The fd's reader: one read, handed to the protocol.
    #[inline(always)]
    fn _read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (protocol, buffered, event_loop) = {
            let st = this.state.borrow(py);
            if st.conn_lost > 0 {
                return Ok(());
            }
            match (&st.protocol, &st.event_loop) {
                (Some(p), Some(l)) => (p.bind(py).clone(), st.buffered, l.bind(py).clone()),
                _ => return Ok(()),
            }
        };
        if !buffered {
            // A match, not a closure handed to `after_read`: the compiler kept such a closure
            // out of line, one more frame to return through after the protocol's write (see
            // `core::sys`).
            let delivered = match this.read_bytes(py, &event_loop)?.got() {
                Ok(data) => {
                    let result = method_cache::call_method1(
                        &this.methods.data_received,
                        &protocol,
                        intern!(py, "data_received"),
                        data.bytes(),
                    );
                    data.give_back(event_loop.get().read_spare());
                    ReadOutcome::Got(result)
                }
                Err(nothing) => nothing,
            };
            return Self::after_read(
                slf,
                delivered,
                "Fatal error: protocol.data_received() call failed.",
            );
        }
        let Ok(any_size) = (-1i32).into_pyobject(py);
        let buf = match method_cache::call_method1(
            &this.methods.get_buffer,
            &protocol,
            intern!(py, "get_buffer"),
            &any_size,
        )
        .and_then(|b| {
            if b.len()? == 0 {
                Err(PyRuntimeError::new_err(
                    "get_buffer() returned an empty buffer",
                ))
            } else {
                Ok(b)
            }
        }) {
            Ok(b) => b,
            Err(err) if is_exit(py, &err) => return Err(err),
            Err(err) => {
                return Self::fatal_error(
                    slf,
                    err,
                    "Fatal error: protocol.get_buffer() call failed.",
                )
            }
        };
        let delivered = match this.read_into(py, &buf)?.got() {
            Ok(n) => {
                let Ok(n) = n.into_pyobject(py);
                ReadOutcome::Got(method_cache::call_method1(
                    &this.methods.buffer_updated,
                    &protocol,
                    intern!(py, "buffer_updated"),
                    &n,
                ))
            }
            Err(nothing) => nothing,
        };
        Self::after_read(
            slf,
            delivered,
            "Fatal error: protocol.buffer_updated() call failed.",
        )
    }

    /// The fd's writer while data waits: flushes what the kernel takes.
    fn _write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.state.borrow(py).conn_lost > 0 {
            return Ok(());
        }
        let fd = this.live_fd(py);
        let sent = retry_eintr(py, || {
            let st = this.state.borrow(py);
            sys::send(fd, st.buffer.as_slice())
        })?;
        match sent {
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
            Err(e) => {
                Self::set_io(slf, true, false)?;
                this.state.borrow_mut(py).buffer.clear();
                let err = Self::io_exc(e);
                let exc = err.value(py).clone().into_any();
                Self::fatal_error(slf, err, "Fatal write error on socket transport")?;
                let waiter = this
                    .state
                    .borrow(py)
                    .empty_waiter
                    .as_ref()
                    .map(|w| w.clone_ref(py));
                if let Some(waiter) = waiter {
                    waiter.call_method1(py, intern!(py, "set_exception"), (exc,))?;
                }
                Ok(())
            }
            Ok(n) => {
                this.state.borrow_mut(py).buffer.consume(n);
                Self::maybe_resume_protocol(slf)?;
                let (empty, closing, eof, waiter) = {
                    let st = this.state.borrow(py);
                    (
                        st.buffer.is_empty(),
                        st.closing,
                        st.eof,
                        st.empty_waiter.as_ref().map(|w| w.clone_ref(py)),
                    )
                };
                if !empty {
                    return Ok(());
                }
                Self::set_io(slf, true, false)?;
                if let Some(waiter) = waiter {
                    waiter.call_method1(py, intern!(py, "set_result"), (py.None(),))?;
                }
                if closing {
                    Self::_call_connection_lost(slf, py.None().into_bound(py))
                } else if eof {
                    this.shutdown_write(py)
                } else {
                    Ok(())
                }
            }
        }
    }

    #[inline(always)]
    pub(crate) fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        check_bytes_like(data)?;
        {
            let st = slf.get().state.borrow(py);
            if st.eof {
                return Err(PyRuntimeError::new_err(
                    "Cannot call write() after write_eof()",
                ));
            }
            if st.empty_waiter.is_some() {
                return Err(PyRuntimeError::new_err(
                    "unable to write; sendfile is in progress",
                ));
            }
        }
        if let Ok(bytes) = data.cast::<PyBytes>() {
            if bytes.as_bytes().is_empty() {
                return Ok(());
            }
            return Self::write_slice(slf, bytes.as_bytes());
        }
        // A bytearray or memoryview: its bytes are copied out first, so no Python code that
        // runs during the write (a protocol's pause_writing) can resize it under us.
        let copy = match BufferView::new(data, false) {
            Ok(view) => view.as_slice().to_vec(),
            // Not contiguous: the stock transport's `send` fails the same way, fatally.
            Err(err) => {
                return Self::fatal_error(slf, err, "Fatal write error on socket transport")
            }
        };
        if copy.is_empty() {
            return Ok(());
        }
        Self::write_slice(slf, &copy)
    }

    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let joined = PyBytes::new(py, b"").call_method1(intern!(py, "join"), (list_of_data,))?;
        Self::write(slf, &joined)
    }

    fn write_eof(&self, py: Python<'_>) -> PyResult<()> {
        let empty = {
            let mut st = self.state.borrow_mut(py);
            if st.closing || st.eof {
                return Ok(());
            }
            st.eof = true;
            st.buffer.is_empty()
        };
        if empty {
            self.shutdown_write(py)?;
        }
        Ok(())
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    /// Stops reading and closes once the buffer has drained: `connection_lost(None)` follows.
    #[pyo3(name = "close")]
    fn py_close(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::close(slf)
    }

    /// Closes at once: the buffer is dropped, `connection_lost(None)` follows.
    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::force_close(slf, None)
    }

    fn _force_close(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let exc = (!exc.is_none()).then_some(exc);
        Self::force_close(slf, exc)
    }

    fn _call_connection_lost(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let (protocol, connected) = {
            let st = this.state.borrow(py);
            (
                st.protocol.as_ref().map(|p| p.clone_ref(py)),
                st.protocol_connected,
            )
        };
        let result = match (protocol, connected) {
            (Some(p), true) => p
                .call_method1(py, intern!(py, "connection_lost"), (&exc,))
                .map(drop),
            _ => Ok(()),
        };
        let (sock, garbage, server) = {
            let mut st = this.state.borrow_mut(py);
            let garbage = (st.protocol.take(), st.event_loop.take());
            (st.sock.take(), garbage, st.server.take())
        };
        if let Some(sock) = sock {
            sock.call_method0(py, intern!(py, "close"))?;
        }
        drop(garbage);
        this.methods.forget(py);
        if let Some(server) = server {
            server.call_method1(py, intern!(py, "_detach"), (slf,))?;
        }
        result?;
        let waiter = this
            .state
            .borrow(py)
            .empty_waiter
            .as_ref()
            .map(|w| w.clone_ref(py));
        if let Some(waiter) = waiter {
            let err = PyConnectionError::new_err("Connection is closed by peer");
            waiter.call_method1(py, intern!(py, "set_exception"), (err.value(py),))?;
        }
        Ok(())
    }

    fn is_closing(&self, py: Python<'_>) -> bool {
        self.state.borrow(py).closing
    }

    fn is_reading(&self, py: Python<'_>) -> bool {
        self.is_reading_now(py)
    }

    fn pause_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if !this.is_reading_now(py) {
            return Ok(());
        }
        this.state.borrow_mut(py).paused = true;
        Self::set_io(slf, false, false)?;
        Self::log_debug(slf, "%r pauses reading")
    }

    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        {
            let mut st = this.state.borrow_mut(py);
            if st.closing || !st.paused {
                return Ok(());
            }
            st.paused = false;
        }
        Self::start_reading(slf)?;
        Self::log_debug(slf, "%r resumes reading")
    }

    fn set_protocol(&self, py: Python<'_>, protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set_protocol_inner(py, protocol)
    }

    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state
            .borrow(py)
            .protocol
            .as_ref()
            .map(|p| p.clone_ref(py))
    }

    #[pyo3(signature = (name, default=None))]
    fn get_extra_info<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let extra = self.state.borrow(py).extra.clone_ref(py);
        match extra.bind(py).get_item(name)? {
            Some(value) => Ok(value),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    fn get_write_buffer_size(&self, py: Python<'_>) -> usize {
        self.state.borrow(py).buffer.len()
    }

    fn get_write_buffer_limits(&self, py: Python<'_>) -> (usize, usize) {
        let st = self.state.borrow(py);
        (st.low_water, st.high_water)
    }

    #[pyo3(signature = (high=None, low=None))]
    fn set_write_buffer_limits(
        slf: &Bound<'_, Self>,
        high: Option<i64>,
        low: Option<i64>,
    ) -> PyResult<()> {
        let high = high.unwrap_or_else(|| low.map_or(DEFAULT_HIGH_WATER as i64, |l| 4 * l));
        let low = low.unwrap_or(high.div_euclid(4));
        if !(high >= low && low >= 0) {
            return Err(PyValueError::new_err(format!(
                "high ({high}) must be >= low ({low}) must be >= 0"
            )));
        }
        {
            let mut st = slf.get().state.borrow_mut(slf.py());
            st.high_water = high as usize;
            st.low_water = low as usize;
        }
        Self::maybe_pause_protocol(slf)
    }

    /// For `loop.sendfile`: a future done once the write buffer is empty.
    fn _make_empty_waiter<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if self.state.borrow(py).empty_waiter.is_some() {
            return Err(PyRuntimeError::new_err("Empty waiter is already set"));
        }
        let lp = self
            .event_loop(py)
            .ok_or_else(|| PyRuntimeError::new_err("Transport is closed"))?;
        let waiter = LoopCore::new_future(&lp)?;
        let empty = {
            let mut st = self.state.borrow_mut(py);
            st.empty_waiter = Some(waiter.clone().unbind());
            st.buffer.is_empty()
        };
        if empty {
            waiter.call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
        Ok(waiter)
    }

    fn _reset_empty_waiter(&self, py: Python<'_>) {
        let old = self.state.borrow_mut(py).empty_waiter.take();
        drop(old);
    }

    #[getter]
    fn _sock(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.state.borrow(py).sock.as_ref().map(|s| s.clone_ref(py))
    }

    #[getter]
    fn _sock_fd(&self) -> RawFd {
        self.fd
    }

    /// The stock transport's read step as chosen for the protocol (its `_read_ready`), which
    /// tests of the stock transport look at.
    #[getter]
    fn _read_ready_cb<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.getattr(intern!(slf.py(), "_read_ready"))
    }

    #[getter]
    fn _loop(&self, py: Python<'_>) -> Option<Py<LoopCore>> {
        self.state
            .borrow(py)
            .event_loop
            .as_ref()
            .map(|l| l.clone_ref(py))
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        self.repr_text(py)
    }

    /// `ferroloop._transports.StreamTransport`, a subclass of `asyncio.Transport`, so that
    /// `isinstance(transport, asyncio.Transport)` holds (see that module's doc).
    #[getter]
    fn __class__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        NOMINAL_CLASS
            .import(py, "ferroloop._transports", "StreamTransport")
            .map(|c| c.clone().into_any())
    }

    fn __traverse__(&self, visit: pyo3::gc::PyVisit<'_>) -> Result<(), PyTraverseError> {
        if self.owner.is_none() {
            // Not initialised yet: a collection started while the object was being made.
            return Ok(());
        }
        let Some(st) = self.state.try_borrow_in_gc() else {
            return Ok(());
        };
        visit.call(&self.owner)?;
        visit.call(&st.event_loop)?;
        visit.call(&st.protocol)?;
        visit.call(&st.extra)?;
        visit.call(&st.server)?;
        visit.call(&st.empty_waiter)?;
        self.methods.visit(&visit)?;
        Ok(())
    }

    /// Breaks cycles; the socket stays, so that the transport's drop can warn and close it.
    fn __clear__(&self) {
        Python::attach(|py| {
            let garbage = {
                let mut st = self.state.borrow_mut(py);
                (
                    st.event_loop.take(),
                    st.protocol.take(),
                    st.server.take(),
                    st.empty_waiter.take(),
                )
            };
            drop(garbage);
            self.methods.forget(py);
        });
    }
}

/// The `tp_dealloc` PyO3 gave the class, called after the finalizer (see `install`).
static PYO3_DEALLOC: OnceLock<ffi::destructor> = OnceLock::new();

/// `tp_finalize`: an unclosed transport gives the stock `ResourceWarning`, with the transport
/// as its source (so tracemalloc can tell where it was made), and its socket is closed. Runs
/// while the object is still whole: before `tp_clear` for garbage cycles, and from `dealloc`
/// below otherwise.
unsafe extern "C" fn finalize(obj: *mut ffi::PyObject) {
    // SAFETY: CPython calls tp_finalize with the GIL held and `obj` alive.
    let py = unsafe { Python::assume_attached() };
    // SAFETY: `obj` is a live instance of this class (the slot is only on it).
    let slf = unsafe { Bound::from_borrowed_ptr(py, obj) };
    let Ok(slf) = slf.cast_into::<StreamTransport>() else {
        return;
    };
    // A finalizer must leave any exception being raised as it found it.
    let pending = PyErr::take(py);
    let this = slf.get();
    if this.state.borrow(py).sock.is_some() {
        // Through the C API, which takes the `warnings` module from `sys.modules` as the stock
        // transport's `_warn=warnings.warn` default does: a transport still open when the
        // interpreter exits is finalized after imports stop working, and `import warnings`
        // then failed with an ImportError printed as "Exception ignored".
        let message =
            CString::new(format!("unclosed transport {}", this.repr_text(py))).unwrap_or_default();
        // SAFETY: the GIL is held, `obj` is live, and the format takes one C string, given.
        let warned =
            unsafe { ffi::PyErr_ResourceWarning(obj, 1, c"%s".as_ptr(), message.as_ptr()) };
        if warned < 0 {
            PyErr::fetch(py).write_unraisable(py, Some(&slf));
        }
        let sock = this.state.borrow_mut(py).sock.take();
        if let Some(sock) = sock {
            if let Err(err) = sock.call_method0(py, intern!(py, "close")) {
                err.write_unraisable(py, Some(&slf));
            }
        }
    }
    if let Some(err) = pending {
        err.restore(py);
    }
}

/// `tp_dealloc`: the finalizer first (unless the collector ran it already), then PyO3's.
unsafe extern "C" fn dealloc(obj: *mut ffi::PyObject) {
    // SAFETY: called by CPython with the reference count at zero and the GIL held, which is
    // what PyObject_CallFinalizerFromDealloc requires; a negative result means the finalizer
    // resurrected the object, which must then not be freed.
    if unsafe { ffi::PyObject_CallFinalizerFromDealloc(obj) } < 0 {
        return;
    }
    if let Some(pyo3_dealloc) = PYO3_DEALLOC.get() {
        // SAFETY: PyO3's own dealloc for this class, on the object it was made for.
        unsafe { pyo3_dealloc(obj) };
    }
}

/// Gives the class its finalizer. Called once, when the module is imported.
pub fn install(py: Python<'_>) {
    let class = StreamTransport::type_object_raw(py);
    // SAFETY: the class object is alive for the life of the module and not yet used; replacing
    // its slots before any instance exists is what CPython's own C types do in their static
    // definitions. PyType_Modified drops any cached lookups.
    unsafe {
        if let Some(pyo3_dealloc) = (*class).tp_dealloc {
            if PYO3_DEALLOC.set(pyo3_dealloc).is_ok() {
                (*class).tp_dealloc = Some(dealloc);
                (*class).tp_finalize = Some(finalize);
                ffi::PyType_Modified(class);
            }
        }
    }
}

/// TCP_NODELAY on TCP sockets, as the stock loop's `_set_nodelay`: small writes leave at once.
/// Unlike stock, which asks for `proto == IPPROTO_TCP`, a stream socket of an internet family
/// whose `proto` is 0 counts too: that is what `socket.socket()` makes, and accepting on such a
/// listening socket gives, and the kernel makes it TCP all the same.
fn set_nodelay(sock: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = sock.py();
    let family: i32 = sock.getattr(intern!(py, "family"))?.extract()?;
    let kind: i32 = sock.getattr(intern!(py, "type"))?.extract()?;
    let proto: i32 = sock.getattr(intern!(py, "proto"))?.extract()?;
    if (family == libc::AF_INET || family == libc::AF_INET6)
        && kind == libc::SOCK_STREAM
        && (proto == 0 || proto == libc::IPPROTO_TCP)
    {
        sock.call_method1(
            intern!(py, "setsockopt"),
            (libc::IPPROTO_TCP, libc::TCP_NODELAY, 1),
        )?;
    }
    Ok(())
}

/// A transport's read (or write) step, run by `Handle::run` for a handle marked
/// `NATIVE_READ`/`NATIVE_WRITE`: a new reference to `None`, or NULL with the exception set, as a
/// call through the C API would give.
#[inline(always)]
pub fn run_step(transport: &Bound<'_, PyAny>, writer: bool) -> *mut ffi::PyObject {
    let py = transport.py();
    let outcome = match transport.cast::<StreamTransport>() {
        Ok(t) if writer => StreamTransport::_write_ready(t),
        Ok(t) => StreamTransport::_read_ready(t),
        Err(err) => Err(err.into()),
    };
    match outcome {
        Ok(()) => py.None().into_ptr(),
        Err(err) => {
            err.restore(py);
            std::ptr::null_mut()
        }
    }
}
