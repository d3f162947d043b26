//! The fast path of `loop.sock_recv`, `sock_recv_into` and `sock_sendall` for plain
//! `socket.socket` objects: the `async def` methods in `ferroloop/_sock.py` call these first.
//!
//! Each tries the operation at once with a non-blocking system call (no Python exception when
//! the kernel would block, which is most of what the stock methods cost). If it completes, the
//! result is returned; otherwise a future is returned, completed by a `SockWaiter` registered as
//! the fd's reader (or writer): the stock loop's `_sock_recv` / `_sock_sendall` callbacks. The
//! waiter removes its registration itself when it completes the future, and a done callback
//! removes it when the future is cancelled instead, unless another callback has replaced it on
//! the fd meanwhile (the stock `_sock_read_done` check).
//!
//! Anything other than an exact `socket.socket` goes the stock way in `_sock.py`, so a subclass
//! overriding `recv` or `send` keeps its behaviour.
//!
//! A waiter holds its socket object, not only the fd number (`crate::owner`): before each retry it
//! checks that the socket still holds the fd, and fails with EBADF if it was closed or detached
//! meanwhile, so a number the kernel gave to a new connection is never read or written. The
//! socket is watched (`event_loop::close_watch`), so closing it ends the wait at once with that error.

use std::io::ErrorKind;
use std::os::fd::RawFd;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyInt};
use pyo3::PyTraverseError;

use crate::core::sys;
use crate::cpython::gil::GilCell;
use crate::errors::{closed_fd_error, os_error};
use crate::event_loop::close_watch;
use crate::event_loop::{Handle, LoopCore, Ties, Which};
use crate::owner;
use crate::recv_bytes::{recv_bytes, recv_bytes_guessing};

static SOCKET_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static SOCKET_KIND: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// What a waiter does each time its fd is ready.
enum Op {
    /// `stream`: a SOCK_STREAM socket, whose reads may be sized by a guess (`recv_now`).
    Recv {
        n: usize,
        stream: bool,
    },
    SendAll {
        data: Py<PyAny>,
        sent: usize,
    },
}

struct Waiting {
    event_loop: Py<LoopCore>,
    /// The socket the call was made on (see the module doc).
    sock: Py<PyAny>,
    future: Py<PyAny>,
    /// The waiter's bound `_done`, added to the future's done callbacks.
    done: Option<Py<PyAny>>,
    handle: Option<Py<Handle>>,
    op: Op,
}

#[pyclass(module = "ferroloop._core", frozen)]
pub struct SockWaiter {
    fd: RawFd,
    state: GilCell<Waiting>,
}

/// The socket's fd if it is exactly a `socket.socket` (the fast path's condition), after the
/// stock debug-mode check that it is non-blocking.
fn plain_socket_fd(
    event_loop: &Bound<'_, LoopCore>,
    sock: &Bound<'_, PyAny>,
) -> PyResult<Option<RawFd>> {
    let py = sock.py();
    let socket_type = SOCKET_TYPE.import(py, "socket", "socket")?;
    if !sock.get_type().is(socket_type) {
        return Ok(None);
    }
    if event_loop.get().debug_enabled() {
        let timeout = sock.call_method0(intern!(py, "gettimeout"))?;
        if !timeout.eq(0)? {
            return Err(PyValueError::new_err("the socket must be non-blocking"));
        }
    }
    Ok(Some(sock.call_method0(intern!(py, "fileno"))?.extract()?))
}

/// Whether `sock` (a plain socket) is a SOCK_STREAM one, read through `_socket.socket`'s C
/// member: `socket.socket.type` is a Python property that builds an enum.
fn is_stream(sock: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = sock.py();
    let member = SOCKET_KIND.get_or_try_init(py, || {
        Ok::<_, PyErr>(
            py.import("_socket")?
                .getattr("socket")?
                .getattr("type")?
                .unbind(),
        )
    })?;
    let kind: i32 = member
        .bind(py)
        .call_method1(intern!(py, "__get__"), (sock,))?
        .extract()?;
    Ok(kind == libc::SOCK_STREAM)
}

/// The largest `n` whose reads are sized by a guess. Above it a read allocates `n` bytes as
/// `socket.recv` does, so a size no allocation can serve raises MemoryError as it does there.
const GUESSED_MAX: usize = 256 * 1024;

/// One non-blocking `recv` of at most `n` bytes: `Some(bytes)`, or `None` if it would block.
/// On a stream socket the read is sized by what the previous one brought
/// (`recv_bytes::ReadGuesses`); on any other kind it is `n`, as a datagram longer than the
/// buffer would be cut.
#[inline(always)]
fn recv_now<'py>(
    event_loop: &Bound<'py, LoopCore>,
    fd: RawFd,
    n: usize,
    stream: bool,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let py = event_loop.py();
    let read = if stream && n <= GUESSED_MAX {
        // The guess is taken out and put back: a signal handler run by the read may use the loop.
        let mut guess = event_loop.get().recv_guess(py, fd);
        let read = recv_bytes_guessing(py, fd, &mut guess, n)?;
        event_loop.get().set_recv_guess(py, fd, guess);
        read
    } else {
        recv_bytes(py, fd, n)?
    };
    match read {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(os_error(e)),
    }
}

/// Sends from `data[sent..]` until done or the kernel would block; returns the new position.
#[inline(always)]
fn send_now(py: Python<'_>, fd: RawFd, data: &[u8], mut sent: usize) -> PyResult<usize> {
    while sent < data.len() {
        match sys::send(fd, &data[sent..]) {
            Ok(k) => sent += k,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => py.check_signals()?,
            Err(e) => return Err(os_error(e)),
        }
    }
    Ok(sent)
}

fn bytes_of<'a>(data: &'a Bound<'_, PyAny>) -> PyResult<&'a [u8]> {
    data.cast::<PyBytes>()
        .map(|b| b.as_bytes())
        .map_err(|_| PyTypeError::new_err("expected bytes"))
}

impl SockWaiter {
    /// Registers a waiter for `op` on `fd` and returns its future.
    fn start<'py>(
        event_loop: &Bound<'py, LoopCore>,
        sock: &Bound<'py, PyAny>,
        fd: RawFd,
        writer: bool,
        op: Op,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = event_loop.py();
        let future = LoopCore::new_future(event_loop)?;
        // The stock check that no transport owns the fd.
        event_loop
            .get()
            .ensure_no_transport(fd.into_pyobject(py)?.as_any())?;
        let waiter = Bound::new(
            py,
            SockWaiter {
                fd,
                state: GilCell::new(Waiting {
                    event_loop: event_loop.clone().unbind(),
                    sock: sock.clone().unbind(),
                    future: future.clone().unbind(),
                    done: None,
                    handle: None,
                    op,
                }),
            },
        )?;
        close_watch::watch(event_loop, sock)?;
        let ties = Ties {
            owner: Some(sock.clone()),
            pending: Some(future.clone()),
            context: None,
        };
        let handle =
            event_loop
                .get()
                .add_oneshot_io(py, fd, writer, waiter.clone().into_any(), ties)?;
        let done = waiter.getattr(intern!(py, "_done"))?;
        {
            let mut st = waiter.get().state.borrow_mut(py);
            st.handle = Some(handle);
            st.done = Some(done.clone().unbind());
        }
        future.call_method1(intern!(py, "add_done_callback"), (done,))?;
        Ok(future)
    }

    fn writer(&self, py: Python<'_>) -> bool {
        matches!(self.state.borrow(py).op, Op::SendAll { .. })
    }

    /// Takes the registration away if it is still this waiter's.
    fn unregister(&self, py: Python<'_>) -> PyResult<()> {
        let (event_loop, handle) = {
            let mut st = self.state.borrow_mut(py);
            (st.event_loop.clone_ref(py), st.handle.take())
        };
        if let Some(handle) = handle {
            if !handle.get().is_cancelled() {
                let which = Which::Handle(&handle);
                event_loop
                    .get()
                    .remove_io(py, self.fd, self.writer(py), which)?;
            }
        }
        Ok(())
    }

    /// Completes the future with `outcome`, after unregistering and dropping the done callback
    /// (which would only unregister again, one scheduled callback later).
    fn finish(slf: &Bound<'_, Self>, outcome: PyResult<Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.unregister(py)?;
        let (future, done) = {
            let mut st = this.state.borrow_mut(py);
            (st.future.clone_ref(py).into_bound(py), st.done.take())
        };
        if let Some(done) = done {
            future.call_method1(intern!(py, "remove_done_callback"), (done,))?;
        }
        match outcome {
            Ok(value) => future.call_method1(intern!(py, "set_result"), (value,))?,
            Err(err) => future.call_method1(intern!(py, "set_exception"), (err.value(py),))?,
        };
        Ok(())
    }
}

#[pymethods]
impl SockWaiter {
    /// The fd is ready: try again; complete the future unless the kernel still would block.
    fn __call__(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let future = this.state.borrow(py).future.clone_ref(py).into_bound(py);
        if future.call_method0(intern!(py, "done"))?.is_truthy()? {
            return Ok(());
        }
        let (event_loop, sock, recv) = {
            let st = this.state.borrow(py);
            let recv = match &st.op {
                Op::Recv { n, stream } => Some((*n, *stream)),
                Op::SendAll { .. } => None,
            };
            (
                st.event_loop.clone_ref(py).into_bound(py),
                st.sock.clone_ref(py).into_bound(py),
                recv,
            )
        };
        if !owner::holds(&sock, this.fd)? {
            return Self::finish(slf, Err(closed_fd_error()));
        }
        if let Some((n, stream)) = recv {
            return match recv_now(&event_loop, this.fd, n, stream) {
                Ok(None) => Ok(()),
                Ok(Some(data)) => Self::finish(slf, Ok(data.into_any())),
                Err(err) => Self::finish(slf, Err(err)),
            };
        }
        let (data, sent) = match &this.state.borrow(py).op {
            Op::SendAll { data, sent } => (data.clone_ref(py).into_bound(py), *sent),
            Op::Recv { .. } => return Ok(()),
        };
        match send_now(py, this.fd, bytes_of(&data)?, sent) {
            Ok(now) if now == bytes_of(&data)?.len() => {
                Self::finish(slf, Ok(py.None().into_bound(py)))
            }
            Ok(now) => {
                if let Op::SendAll { sent, .. } = &mut this.state.borrow_mut(py).op {
                    *sent = now;
                }
                Ok(())
            }
            Err(err) => Self::finish(slf, Err(err)),
        }
    }

    /// Done callback: the future was cancelled (or completed elsewhere); unregister.
    fn _done(&self, py: Python<'_>, _future: &Bound<'_, PyAny>) -> PyResult<()> {
        let done = self.state.borrow_mut(py).done.take();
        drop(done);
        self.unregister(py)
    }

    fn __traverse__(&self, visit: pyo3::gc::PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(st) = self.state.try_borrow_in_gc() {
            visit.call(&st.event_loop)?;
            visit.call(&st.sock)?;
            visit.call(&st.future)?;
            visit.call(&st.done)?;
            visit.call(&st.handle)?;
            if let Op::SendAll { data, .. } = &st.op {
                visit.call(data)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        Python::attach(|py| {
            let garbage = {
                let mut st = self.state.borrow_mut(py);
                (st.done.take(), st.handle.take())
            };
            drop(garbage);
        });
    }
}

/// `sock_recv`'s first step: the bytes if they are there now, else a future for them, or
/// `NotImplemented` when `sock` is not a plain socket or `n` not a positive int that fits a
/// `ssize_t`: the caller then goes the stock way, whose `sock.recv(n)` gives b"" for 0 and the
/// socket's own errors for the rest.
#[pyfunction]
pub fn sock_recv_start<'py>(
    event_loop: &Bound<'py, LoopCore>,
    sock: &Bound<'py, PyAny>,
    n: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = event_loop.py();
    let size = match n.cast_exact::<PyInt>() {
        Ok(int) => int.extract::<isize>().ok().filter(|&n| n > 0),
        Err(_) => None,
    };
    let Some(n) = size.map(|n| n as usize) else {
        return Ok(py.NotImplemented().into_bound(py));
    };
    let Some(fd) = plain_socket_fd(event_loop, sock)? else {
        return Ok(py.NotImplemented().into_bound(py));
    };
    let stream = is_stream(sock)?;
    if let Some(data) = recv_now(event_loop, fd, n, stream)? {
        return Ok(data.into_any());
    }
    SockWaiter::start(event_loop, sock, fd, false, Op::Recv { n, stream })
}

/// `sock_sendall`'s first step: `None` if everything was sent now, else a future done when the
/// rest is, or `NotImplemented` (see `sock_recv_start`; also for data that is not `bytes`, and
/// for no bytes at all, which the stock loop still sends: an error on a closed socket).
#[pyfunction]
pub fn sock_sendall_start<'py>(
    event_loop: &Bound<'py, LoopCore>,
    sock: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = event_loop.py();
    let bytes = match data.cast::<PyBytes>() {
        Ok(bytes) if !bytes.as_bytes().is_empty() => bytes,
        _ => return Ok(py.NotImplemented().into_bound(py)),
    };
    let Some(fd) = plain_socket_fd(event_loop, sock)? else {
        return Ok(py.NotImplemented().into_bound(py));
    };
    let sent = send_now(py, fd, bytes.as_bytes(), 0)?;
    if sent == bytes.as_bytes().len() {
        return Ok(py.None().into_bound(py));
    }
    let op = Op::SendAll {
        data: bytes.clone().into_any().unbind(),
        sent,
    };
    SockWaiter::start(event_loop, sock, fd, true, op)
}
