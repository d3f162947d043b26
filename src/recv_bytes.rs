//! Receiving straight into a new Python `bytes`, as `socket.recv` does: the object is made as
//! large as the read may bring, the kernel writes into it, and it is shrunk to what arrived.
//!
//! Why not a shared receive buffer and a copy: the copy was most of the user CPU time of a
//! server echoing 100 KiB messages (perf: `memmove` 5% of all samples against 2.5% for the rest
//! of the process's user time). Shrinking costs nothing like that: for a block this size glibc
//! splits it in place and the tail rejoins the free space at the heap's top, which
//! `core::allocator::prime_allocator` keeps from being handed back to the kernel at each read.
//! The bytes never filled are never touched, so they never become resident.

use std::io;
use std::os::fd::RawFd;
use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::core::sys::syscall;

extern "C" {
    // CPython's own resize for a `bytes` nothing else references yet (what `socket.recv` uses).
    // Exported by every CPython 3; PyO3 does not re-export it.
    fn _PyBytes_Resize(bytes: *mut *mut ffi::PyObject, size: ffi::Py_ssize_t) -> std::ffi::c_int;
}

/// One non-blocking `recv` of at most `n` bytes from `fd` (retried on EINTR after the signal
/// handlers ran): the bytes that arrived (empty at end of stream), or the kernel's error.
/// A `bytes` of `n` that cannot be allocated is Python's `MemoryError`, as with `socket.recv`.
pub fn recv_bytes(py: Python<'_>, fd: RawFd, n: usize) -> PyResult<io::Result<Bound<'_, PyBytes>>> {
    let size = ffi::Py_ssize_t::try_from(n).unwrap_or(ffi::Py_ssize_t::MAX);
    // SAFETY: a null source asks CPython for an uninitialised `bytes` of `size` bytes.
    let mut object = unsafe { ffi::PyBytes_FromStringAndSize(ptr::null(), size) };
    if object.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `object` is a new `bytes` we own; from here it is released on every path.
    let owned = unsafe { Bound::from_owned_ptr(py, object) };
    let got = loop {
        // SAFETY: `object` is a `bytes` of `size` writable bytes that only we reference.
        let data = unsafe { ffi::PyBytes_AsString(object) };
        // SAFETY: recv writes at most `n` bytes into that storage and reports how many.
        match syscall!(recv(fd, data.cast(), n, libc::MSG_DONTWAIT)) {
            Ok(got) => break got as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => py.check_signals()?,
            Err(e) => return Ok(Err(e)),
        }
    };
    if got == n {
        // SAFETY: `owned` is a `bytes`, and all its `n` bytes are now initialised.
        return Ok(Ok(unsafe { owned.cast_into_unchecked() }));
    }
    object = owned.into_ptr();
    // SAFETY: `object` has one reference (ours, taken back from `owned`) and no other user, the
    // condition for resizing; on failure CPython releases it, sets it to null and raises.
    if unsafe { _PyBytes_Resize(&mut object, got as ffi::Py_ssize_t) } != 0 {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `object` is the resized `bytes`, owned by us, its `got` bytes written by recv.
    Ok(Ok(unsafe {
        Bound::from_owned_ptr(py, object).cast_into_unchecked()
    }))
}
