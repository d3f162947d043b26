//! A transport's life: creation (`connection_made`, then reading), closing and aborting, fatal
//! errors, `connection_lost` exactly once, and what happens when the object is freed.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::sync::OnceLock;

use pyo3::exceptions::{PyConnectionError, PyOSError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::PyTypeInfo;

use super::transport::{
    logger, State, StreamTransport, SET_RESULT_UNLESS_CANCELLED, TRANSPORT_SOCKET,
};
use super::write::DEFAULT_HIGH_WATER;
use crate::core::buffer::WriteBuffer;
use crate::cpython;
use crate::cpython::gil::GilCell;
use crate::event_loop::close_watch;
use crate::event_loop::{copy_current, CallArgs, LoopCore};

use crate::cpython::method_cache::ReadMethods;

/// The `tp_dealloc` PyO3 gave the class, called after the finalizer (see `install`).
pub(super) static PYO3_DEALLOC: OnceLock<ffi::destructor> = OnceLock::new();

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

impl StreamTransport {
    /// An error that ends the connection: reported (quietly for `OSError`), then `_force_close`.
    pub(super) fn fatal_error(slf: &Bound<'_, Self>, err: PyErr, message: &str) -> PyResult<()> {
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

    pub(super) fn force_close(
        slf: &Bound<'_, Self>,
        exc: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
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

    pub(super) fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
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

    /// `loop._make_socket_transport(sock, protocol, waiter, extra=, server=)`: a transport over
    /// the connected, non-blocking `sock`, set up as the stock one (see the module doc).
    pub(super) fn create<'py>(
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
                    context: Some(copy_current(py)?),
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

    pub(super) fn connection_lost(slf: &Bound<'_, Self>, exc: Bound<'_, PyAny>) -> PyResult<()> {
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
        let err = PyConnectionError::new_err("Connection is closed by peer");
        this.fail_empty_waiter(py, err.value(py).clone().into_any())
    }
}
