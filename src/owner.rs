//! Who an fd belongs to, and how the loop makes sure it never does I/O through a number that the
//! object it was given for has closed or let go of.
//!
//! The danger. The kernel gives each new file the lowest free fd number, so the moment a socket is
//! closed its number can belong to a new connection. Anything that keeps the *number* beyond one
//! call (a `sock_*` call waiting for readiness, a transport, a registration in epoll) would, after
//! such a close, read another connection's bytes or write its own into it.
//!
//! The rules every part of the loop follows:
//! 1. **Check before each system call.** What does I/O through a number it kept (the stream
//!    transport, the `sock_*` waiters, `sock_sendfile`, pipe transports) holds the Python object
//!    the number came from, and checks right before each system call that the object still holds
//!    that number (`holds`): a closed or detached socket shows -1 (read straight from the object,
//!    `cpython::socket`, a load), a closed file object fails `fileno()`. If it does not, the call
//!    fails with EBADF, as the same call on the closed socket object would, and nothing reaches
//!    the number's new owner. Python code that goes through the object's own methods
//!    (`sock.recv`) gets this from the object itself.
//! 2. **Tear down before the close.** A `socket.socket` that the loop watches gets a stand-in for
//!    its `_io_refs` counter (`event_loop::close_watch`), which `socket.close()` consults just before it closes
//!    the fd. The loop then takes the fd out of epoll while the number still names this socket,
//!    and fails the `sock_*` calls pending on it with EBADF at once, where they would otherwise
//!    wait forever for an event that cannot come (the stock loop's calls do). Then the fd closes,
//!    as it would have, at the same moment.
//! 3. **What epoll no longer knows is stale.** A registration changed with `EPOLL_CTL_MOD` that the
//!    kernel answers with ENOENT was for a file since closed (closing drops the registration):
//!    every reader and writer still recorded for that number was that file's, so they are dropped
//!    (their pending calls fail with EBADF) before the new owner's is added, never carried over.
//! 4. **Remove only your own.** A transport removes a reader or writer only if it is still the one
//!    it registered for its socket (`owner` on the registry's slot), and a waiter only while its
//!    handle is not cancelled: one whose registration was torn down never removes the next
//!    owner's.
//!
//! Why not the other designs. Keeping the file open with a `dup` until the call ends (uvloop keeps
//! the socket open through its `_io_refs`) keeps the connection alive after the program closed
//! it, and a call pending on it still waits forever. A periodic sweep of pending calls costs
//! every iteration something and still ends them late. The stand-in costs nothing until `close()`.
//!
//! What is left. A number whose file lives on in a duplicate (`os.dup`, a forked child) while
//! the loop still watched it and the program closed it behind the loop's back (the C-level
//! `_socket.socket.close`, `os.close(sock.fileno())`): epoll keeps such a registration for as
//! long as the duplicate lives, and it may report readiness under the number. Rule 1 makes that
//! harmless (a handler then finds its own socket closed, or retries on the new owner's, which is
//! not ready); it can only cost wake-ups.

use std::os::fd::RawFd;

use pyo3::exceptions::PyException;
use pyo3::intern;
use pyo3::prelude::*;

use crate::cpython;

/// The fd `obj` holds now, or `None` when it holds none (closed, detached, or `fileno()`
/// failed). Errors are only the exits (`KeyboardInterrupt` from a signal handler, `SystemExit`)
/// that a `fileno()` call raised.
#[inline]
pub fn fd_now(obj: &Bound<'_, PyAny>) -> PyResult<Option<RawFd>> {
    if let Ok(fd) = cpython::socket::held_fd(obj) {
        return Ok(fd);
    }
    let py = obj.py();
    match obj
        .call_method0(intern!(py, "fileno"))
        .and_then(|fd| fd.extract::<RawFd>())
    {
        Ok(fd) => Ok((fd >= 0).then_some(fd)),
        Err(err) if err.is_instance_of::<PyException>(py) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Whether `obj` still holds `fd` (rule 1).
#[inline]
pub fn holds(obj: &Bound<'_, PyAny>, fd: RawFd) -> PyResult<bool> {
    Ok(fd_now(obj)? == Some(fd))
}
