//! Receiving into a new Python `bytes`, with as few copies and allocator calls as the size of
//! the read allows.
//!
//! `recv_bytes(n)` is what `socket.recv(n)` does: the object is made `n` bytes long, the
//! kernel writes into it, and it is shrunk to what arrived. No second copy: copying out of a
//! shared receive buffer was most of the user CPU time of a server echoing 100 KiB messages
//! (perf: `memmove` 5% of all samples against 2.5% for the rest of the process's user time).
//! For a large block glibc shrinks in place and the tail rejoins the free space at the heap's
//! top, which `core::allocator::prime_allocator` keeps from being handed back to the kernel at
//! each read; the bytes never filled are never touched, so they never become resident.
//!
//! A transport reads up to 256 KiB per event, yet its messages are mostly far smaller, and a
//! 256 KiB `malloc` plus the shrink cost more than they save on small reads (perf: glibc's
//! `malloc_consolidate`, which a request of 1 KiB or more runs first, and its work to take the
//! tail back). So `recv_bytes_guessing` sizes the read by what the previous one brought:
//! - up to 2 KiB expected: the read goes to a buffer on the stack and is copied into a `bytes`
//!   of exactly its size (for a few hundred bytes CPython's small-object allocator serves it);
//! - more: a `bytes` of twice the last read, shrunk afterwards.
//!
//! When a read fills its buffer, the `bytes` grows by what the kernel says is waiting (in place:
//! the block was just taken from the heap's top) and that is read too, so one event still
//! delivers what one 256 KiB `recv` would.
//!
//! Transports keep their guess themselves; `loop.sock_recv` on a stream socket keeps one per fd
//! in the loop (`ReadGuesses`). Datagram and seqpacket sockets always read `n`: one `recv`
//! takes one whole message, and a smaller buffer would cut it.

use std::io;
use std::os::fd::RawFd;
use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::core::sys::syscall;
use crate::event_loop::retry_eintr;

extern "C" {
    // CPython's own resize for a `bytes` nothing else references yet (what `socket.recv` uses).
    // Exported by every CPython 3; PyO3 does not re-export it.
    fn _PyBytes_Resize(bytes: *mut *mut ffi::PyObject, size: ffi::Py_ssize_t) -> std::ffi::c_int;
}

/// One non-blocking `recv` of at most `n` bytes from `fd` (retried on EINTR after the signal
/// handlers ran): the bytes that arrived (empty at end of stream), or the kernel's error.
/// A `bytes` of `n` that cannot be allocated is Python's `MemoryError`, as with `socket.recv`.
pub fn recv_bytes(py: Python<'_>, fd: RawFd, n: usize) -> PyResult<io::Result<Bound<'_, PyBytes>>> {
    recv_sized(py, fd, n, n)
}

/// The smallest `bytes` a guessing read starts with.
const MIN_GUESS: usize = 4096;

/// Reads expected below this go through a buffer on the stack (`recv_small`). Measured with
/// callgrind on a server echoing 1 KiB messages: 2,180 instructions per request this way,
/// 2,470 through a 4 KiB `bytes` shrunk afterwards; at 10 KiB the two cost the same
/// instructions, but the copy costs time (user CPU per request 1.0 against 0.7 µs).
const SMALL_READ: usize = 4096;

/// The stack buffer of `recv_small`.
const STACK_READ: usize = 4096;

/// The guesses of `recv_bytes_guessing` for stream sockets read by `loop.sock_recv`, which
/// has no transport to keep one in: indexed by fd. Without it every `sock_recv(sock, 65536)`
/// made a 64 KiB `bytes` and shrank it, and the heap's free tails that this leaves between
/// small objects spread the touched pages: measured with 32 connections echoing 1 KiB, the
/// server's memory grew by 850 KiB during the run, twice what rloop's did. A socket that gets
/// the fd of a closed one inherits its guess, which costs at most one read of the wrong size.
#[derive(Default)]
pub struct ReadGuesses(Vec<u32>);

impl ReadGuesses {
    pub fn get(&self, fd: RawFd) -> usize {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.0.get(i))
            .map_or(0, |&guess| guess as usize)
    }

    pub fn set(&mut self, fd: RawFd, guess: usize) {
        let Ok(i) = usize::try_from(fd) else { return };
        if self.0.len() <= i {
            self.0.resize(i + 1, 0);
        }
        self.0[i] = u32::try_from(guess).unwrap_or(u32::MAX);
    }
}

/// As `recv_bytes(fd, max)`, sized by `*guess`, what the previous reads suggest; `*guess`
/// becomes twice what arrived, for the next read.
pub fn recv_bytes_guessing<'py>(
    py: Python<'py>,
    fd: RawFd,
    guess: &mut usize,
    max: usize,
) -> PyResult<io::Result<Bound<'py, PyBytes>>> {
    let read = if *guess < SMALL_READ && max >= STACK_READ {
        recv_small(py, fd, max)?
    } else {
        recv_sized(py, fd, (*guess).clamp(MIN_GUESS.min(max), max), max)?
    };
    if let Ok(bytes) = &read {
        *guess = bytes.as_bytes().len().saturating_mul(2);
    }
    Ok(read)
}

/// A read expected to be small: into a buffer on the stack, then copied into a `bytes` exactly
/// as long as what arrived, which for a few hundred bytes CPython's small-object allocator
/// serves without calling `malloc` (whose large requests first consolidate its free lists).
fn recv_small(py: Python<'_>, fd: RawFd, max: usize) -> PyResult<io::Result<Bound<'_, PyBytes>>> {
    let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); STACK_READ];
    // SAFETY: `stack` is ours and STACK_READ bytes long.
    let got = match unsafe { recv_raw(py, fd, stack.as_mut_ptr().cast(), STACK_READ) }? {
        Ok(got) => got,
        Err(e) => return Ok(Err(e)),
    };
    // SAFETY: the kernel initialised the first `got` bytes of `stack`.
    let arrived = unsafe { std::slice::from_raw_parts(stack.as_ptr().cast::<u8>(), got) };
    if got < STACK_READ {
        return Ok(Ok(PyBytes::new(py, arrived)));
    }
    let mut bytes = Filling::new(py, got)?;
    bytes.as_mut_slice().copy_from_slice(arrived);
    let total = bytes.read_waiting(fd, got, max)?;
    bytes.finish(total).map(Ok)
}

/// A read into a `bytes` of `size` (at most `max`), grown if it fills and more is waiting.
fn recv_sized(
    py: Python<'_>,
    fd: RawFd,
    size: usize,
    max: usize,
) -> PyResult<io::Result<Bound<'_, PyBytes>>> {
    let mut bytes = Filling::new(py, size)?;
    let got = match bytes.recv_at(fd, 0)? {
        Ok(got) => got,
        Err(e) => return Ok(Err(e)),
    };
    let total = if got == size {
        bytes.read_waiting(fd, got, max)?
    } else {
        got
    };
    bytes.finish(total).map(Ok)
}

/// One non-blocking `recv` of at most `len` bytes into `buf`, retried on EINTR after the
/// signal handlers ran (a handler's exception propagates).
///
/// # Safety
/// `buf` is valid for writes of `len` bytes.
unsafe fn recv_raw(
    py: Python<'_>,
    fd: RawFd,
    buf: *mut libc::c_void,
    len: usize,
) -> PyResult<io::Result<usize>> {
    retry_eintr(py, || {
        // SAFETY: per the contract, recv may write `len` bytes at `buf`.
        syscall!(recv(fd, buf, len, libc::MSG_DONTWAIT)).map(|got| got as usize)
    })
}

/// How many received bytes wait to be read on `fd` (0 if the socket cannot tell).
fn bytes_waiting(fd: RawFd) -> usize {
    let mut waiting: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points at `waiting`.
    match syscall!(ioctl(fd, libc::FIONREAD, &mut waiting as *mut libc::c_int)) {
        Ok(_) => usize::try_from(waiting).unwrap_or(0),
        Err(_) => 0,
    }
}

/// A `bytes` being filled, referenced by nothing else until `finish` hands it over: the
/// condition for resizing it in place.
struct Filling<'py> {
    py: Python<'py>,
    object: *mut ffi::PyObject,
    len: usize,
}

impl<'py> Filling<'py> {
    fn new(py: Python<'py>, len: usize) -> PyResult<Self> {
        let size = ffi::Py_ssize_t::try_from(len).unwrap_or(ffi::Py_ssize_t::MAX);
        // SAFETY: a null source asks CPython for an uninitialised `bytes` of `size` bytes; the
        // result is a new reference or null with MemoryError set.
        let object = unsafe { ffi::PyBytes_FromStringAndSize(ptr::null(), size) };
        if object.is_null() {
            return Err(PyErr::fetch(py));
        }
        Ok(Filling { py, object, len })
    }

    fn resize(&mut self, len: usize) -> PyResult<()> {
        // SAFETY: `object` is a `bytes` with one reference, ours, and no other user; on
        // failure CPython releases it, sets the pointer to null and raises.
        if unsafe { _PyBytes_Resize(&mut self.object, len as ffi::Py_ssize_t) } != 0 {
            return Err(PyErr::fetch(self.py));
        }
        self.len = len;
        Ok(())
    }

    /// The whole object, for a copy into it.
    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `object` is a live `bytes` of `len` bytes that only we reference; u8 has no
        // invalid values, so viewing uninitialised storage as bytes to overwrite it is sound.
        unsafe {
            std::slice::from_raw_parts_mut(ffi::PyBytes_AsString(self.object).cast(), self.len)
        }
    }

    /// After `got` bytes filled the object: grows it by what is waiting on `fd` (up to `max`
    /// in all) and reads that too; returns how many bytes it holds now.
    fn read_waiting(&mut self, fd: RawFd, got: usize, max: usize) -> PyResult<usize> {
        if got >= max {
            return Ok(got);
        }
        let waiting = bytes_waiting(fd);
        if waiting == 0 {
            return Ok(got);
        }
        self.resize(got.saturating_add(waiting).min(max))?;
        // With bytes waiting, TCP and Unix sockets return them before any pending error, so
        // this cannot take an error the next read should have reported.
        Ok(match self.recv_at(fd, got)? {
            Ok(more) => got + more,
            Err(_) => got,
        })
    }

    /// One `recv` into the bytes from `offset` to the end.
    fn recv_at(&mut self, fd: RawFd, offset: usize) -> PyResult<io::Result<usize>> {
        // SAFETY: `object` is a live `bytes` of `len` bytes that only we reference, and
        // `offset <= len`, so `start` points inside its storage, `len - offset` bytes before
        // its end.
        unsafe {
            let start = ffi::PyBytes_AsString(self.object).add(offset);
            recv_raw(self.py, fd, start.cast(), self.len - offset)
        }
    }

    /// The bytes, cut to their first `len` (all written by `recv_at`).
    fn finish(mut self, len: usize) -> PyResult<Bound<'py, PyBytes>> {
        if len != self.len {
            self.resize(len)?;
        }
        let object = std::mem::replace(&mut self.object, ptr::null_mut());
        // SAFETY: `object` is a `bytes` we own; the reference moves to the `Bound`.
        Ok(unsafe { Bound::from_owned_ptr(self.py, object).cast_into_unchecked() })
    }
}

impl Drop for Filling<'_> {
    fn drop(&mut self) {
        // SAFETY: `object` is null or a reference we own, released once here.
        unsafe { ffi::Py_XDECREF(self.object) };
    }
}
