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
//!
//! A transport's reads go further (`recv_lending`): the `bytes` handed to `data_received` is
//! taken back when the protocol returns without keeping a reference to it (its reference count
//! is ours alone), and the next read, of any transport of the loop, receives into it. Echoing
//! 1 KiB messages, that saves a `malloc` and `free` of the 1 KiB object (just past glibc's
//! per-thread cache, so both take the slow path) and the copy out of the stack buffer at every
//! read, and the kernel writes into memory that is still in the cache. Nothing can tell: an
//! object nobody else references can be reused as CPython itself resizes one (the size, the
//! final NUL and the cached hash are reset). To receive into it, the object's storage is
//! larger than the bytes it holds; so that a protocol that keeps what it receives keeps at
//! most twice the memory, an object is handed over with spare room only when the read filled
//! at least half of it, and otherwise what arrived is copied into an exact-size `bytes`. A
//! small read (an HTTP request) is received on the stack and copied into the spare when the
//! spare's room is between its size and twice that, which saves the allocation and the
//! deallocation of its object. Reads expected above 64 KiB are not lent (`LEND_UP_TO`): the
//! spare would hold that much for good, for a saving that is small beside the kernel's copy.

use std::io;
use std::os::fd::RawFd;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::core::sys::{self, syscall};
use crate::cpython::bytes::{self, BytesBuf};
use crate::cpython::gil::GilCell;
use crate::cpython::refcount;
use crate::errors::retry_eintr;

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
#[inline(always)]
pub fn recv_bytes_guessing<'py>(
    py: Python<'py>,
    fd: RawFd,
    guess: &mut usize,
    max: usize,
) -> PyResult<io::Result<Bound<'py, PyBytes>>> {
    let read = if *guess < SMALL_READ && max >= STACK_READ {
        recv_small(py, fd, max, None)?.map(Received::into_bytes)
    } else {
        recv_sized(py, fd, (*guess).clamp(MIN_GUESS.min(max), max), max)?
    };
    if let Ok(bytes) = &read {
        *guess = bytes.as_bytes().len().saturating_mul(2);
    }
    Ok(read)
}

/// Transport reads expected at least this big go straight into a lent `bytes` (`recv_lending`);
/// smaller ones are received on the stack, which takes up to 4 KiB in one `recv` whatever the
/// guess, and copied into the spare when it suits (`recv_small`).
const LEND_FROM: usize = 1024;

/// Transport reads expected above this are not lent: they go into a `bytes` of their own, shrunk
/// to what arrived. A spare that large would stay resident for the loop's life, and a read of a
/// message still arriving fills less than half of it, so that part would be copied out. Echoing
/// 100 KiB messages over 32 connections, the server's heap grew by 400 KiB with lending and by
/// 224 KiB without, and its user time per request fell from 1.53 to 1.11 µs (perf samples).
const LEND_UP_TO: usize = 64 * 1024;

/// How many transport reads in a row may find the spare the wrong size before an object a
/// protocol let go takes its place: the spare follows the traffic of the moment.
const MISSES_BEFORE_REPLACING: u32 = 8;

/// A `bytes` to receive into: the object, referenced by nothing else, and the room its
/// storage has (its size when it was made).
pub struct Spare {
    object: Py<PyBytes>,
    capacity: usize,
}

impl Spare {
    fn from(buf: BytesBuf<'_>) -> Spare {
        let (object, capacity) = buf.into_spare();
        Spare { object, capacity }
    }

    /// The spare filled again (a new `bytes` of its size in the impossible case that something
    /// else came to reference it since it was given back).
    fn reuse(self, py: Python<'_>) -> PyResult<BytesBuf<'_>> {
        match BytesBuf::reuse(py, self.object, self.capacity) {
            Some(buf) => Ok(buf),
            None => BytesBuf::new(py, self.capacity),
        }
    }
}

/// The loop's spare for transport reads (module doc).
#[derive(Default)]
pub struct SpareSlot {
    spare: Option<Spare>,
    /// Reads in a row that found the spare the wrong size.
    misses: u32,
}

impl SpareSlot {
    /// The spare, if its room is between `least` and `most` bytes.
    fn take_within(&mut self, least: usize, most: usize) -> Option<Spare> {
        let fits = self
            .spare
            .as_ref()
            .is_some_and(|s| s.capacity >= least && s.capacity <= most);
        if fits {
            self.misses = 0;
            self.spare.take()
        } else {
            self.misses = self.misses.saturating_add(u32::from(self.spare.is_some()));
            None
        }
    }

    /// Keeps `spare` if the slot is empty or its spare has not suited the last reads, and never
    /// one with room above `LEND_UP_TO`. A `bytes` dropped here (the one replaced, or `spare`)
    /// runs no Python code.
    fn offer(&mut self, spare: Spare) {
        if spare.capacity > LEND_UP_TO || !bytes::reuse_allowed() {
            return;
        }
        if self.spare.is_none() || self.misses >= MISSES_BEFORE_REPLACING {
            self.misses = 0;
            self.spare = Some(spare);
        }
    }

    /// The room of the spare, if there is one.
    pub fn room(&self) -> Option<usize> {
        self.spare.as_ref().map(|s| s.capacity)
    }

    /// Lets the spare go (the loop is closing).
    pub fn clear(&mut self) {
        self.spare = None;
    }
}

/// What a transport read brought, and the room the object has for a later read.
pub struct Received<'py> {
    bytes: Bound<'py, PyBytes>,
    capacity: usize,
}

impl<'py> Received<'py> {
    /// The first `len` bytes of `buf`, its room kept for a later read.
    fn from(buf: BytesBuf<'py>, len: usize) -> Received<'py> {
        let (bytes, capacity) = buf.hand_over(len);
        Received { bytes, capacity }
    }

    pub fn bytes(&self) -> &Bound<'py, PyBytes> {
        &self.bytes
    }

    fn into_bytes(self) -> Bound<'py, PyBytes> {
        self.bytes
    }

    /// After the protocol had the bytes: the object goes back to `slot` if nothing else
    /// references it and it is worth keeping.
    pub fn give_back(self, slot: &GilCell<SpareSlot>) {
        let py = self.bytes.py();
        if refcount::is_unique(py, self.bytes.as_ptr()) {
            slot.borrow_mut(py).offer(Spare {
                object: self.bytes.unbind(),
                capacity: self.capacity,
            });
        }
    }
}

/// A transport's read: as `recv_bytes_guessing`, but into the loop's spare when `slot` has one
/// of the right size, handing over its object with room to spare when the read filled at least
/// half of it (module doc). A read expected above `LEND_UP_TO` is `recv_bytes_guessing`'s own.
pub fn recv_lending<'py>(
    py: Python<'py>,
    fd: RawFd,
    guess: &mut usize,
    max: usize,
    slot: &GilCell<SpareSlot>,
) -> PyResult<io::Result<Received<'py>>> {
    if *guess < LEND_FROM || max < STACK_READ {
        let read = recv_small(py, fd, max, Some(slot))?;
        if let Ok(read) = &read {
            *guess = read.bytes.as_bytes().len().saturating_mul(2);
        }
        return Ok(read);
    }
    let want = (*guess).min(max);
    if want > LEND_UP_TO || !bytes::reuse_allowed() {
        let read = recv_bytes_guessing(py, fd, guess, max)?;
        return Ok(read.map(|bytes| Received {
            capacity: bytes.as_bytes().len(),
            bytes,
        }));
    }
    // Room up to four times the read wanted: a 64 KiB spare would mostly be copied out of by
    // 1 KiB reads.
    let spare = slot
        .borrow_mut(py)
        .take_within(want, want.saturating_mul(4));
    let lent = spare.is_some();
    let mut filling = match spare {
        Some(spare) => spare.reuse(py)?,
        None => BytesBuf::new(py, want)?,
    };
    let total = match fill(py, &mut filling, fd, max)? {
        Ok(total) => total,
        Err(e) => {
            if lent {
                slot.borrow_mut(py).offer(Spare::from(filling));
            }
            return Ok(Err(e));
        }
    };
    *guess = total.saturating_mul(2);
    if total > 0 && total.saturating_mul(2) >= filling.len() {
        return Ok(Ok(Received::from(filling, total)));
    }
    let bytes = if lent {
        let bytes = PyBytes::new(py, &filling.as_mut_slice()[..total]);
        slot.borrow_mut(py).offer(Spare::from(filling));
        bytes
    } else {
        filling.finish(total)?
    };
    Ok(Ok(Received {
        capacity: total,
        bytes,
    }))
}

/// A read expected to be small: into a buffer on the stack, then copied into a `bytes` exactly
/// as long as what arrived, which for a few hundred bytes CPython's small-object allocator
/// serves without calling `malloc` (whose large requests first consolidate its free lists).
/// With a `slot` (a transport's read), the copy goes into the loop's spare instead when its
/// room is at least what arrived and at most twice that: no allocation, and no deallocation
/// once the protocol lets it go (callgrind, HTTP keep-alive server: 5,133 instructions per
/// request before, 5,070 after).
#[inline(always)]
fn recv_small<'py>(
    py: Python<'py>,
    fd: RawFd,
    max: usize,
    slot: Option<&GilCell<SpareSlot>>,
) -> PyResult<io::Result<Received<'py>>> {
    let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); STACK_READ];
    // SAFETY: `stack` is ours and STACK_READ bytes long.
    let got = match unsafe { recv_raw(py, fd, stack.as_mut_ptr().cast(), STACK_READ) }? {
        Ok(got) => got,
        Err(e) => return Ok(Err(e)),
    };
    // SAFETY: the kernel initialised the first `got` bytes of `stack`.
    let arrived = unsafe { std::slice::from_raw_parts(stack.as_ptr().cast::<u8>(), got) };
    if got < STACK_READ {
        let spare =
            slot.and_then(|slot| slot.borrow_mut(py).take_within(got, got.saturating_mul(2)));
        if let Some(spare) = spare {
            let mut filling = spare.reuse(py)?;
            filling.as_mut_slice()[..got].copy_from_slice(arrived);
            return Ok(Ok(Received::from(filling, got)));
        }
        return Ok(Ok(Received {
            bytes: PyBytes::new(py, arrived),
            capacity: got,
        }));
    }
    let mut bytes = BytesBuf::new(py, got)?;
    bytes.as_mut_slice().copy_from_slice(arrived);
    let total = read_waiting(py, &mut bytes, fd, got, max)?;
    Ok(Ok(Received {
        bytes: bytes.finish(total)?,
        capacity: total,
    }))
}

/// A read into a `bytes` of `size` (at most `max`), grown if it fills and more is waiting.
fn recv_sized(
    py: Python<'_>,
    fd: RawFd,
    size: usize,
    max: usize,
) -> PyResult<io::Result<Bound<'_, PyBytes>>> {
    let mut bytes = BytesBuf::new(py, size)?;
    match fill(py, &mut bytes, fd, max)? {
        Ok(total) => bytes.finish(total).map(Ok),
        Err(e) => Ok(Err(e)),
    }
}

/// One non-blocking `recv` of at most `len` bytes into `buf`, retried on EINTR after the
/// signal handlers ran (a handler's exception propagates).
///
/// # Safety
/// `buf` is valid for writes of `len` bytes.
#[inline(always)]
unsafe fn recv_raw(
    py: Python<'_>,
    fd: RawFd,
    buf: *mut libc::c_void,
    len: usize,
) -> PyResult<io::Result<usize>> {
    // SAFETY: per the contract, recv may write `len` bytes at `buf`.
    retry_eintr(py, || unsafe { sys::recv_raw(fd, buf.cast(), len) })
}

/// One `recv` into the whole of `buf` and, if that fills it, of what more is waiting
/// (`read_waiting`): how many bytes it holds now, or the first `recv`'s error.
fn fill(
    py: Python<'_>,
    buf: &mut BytesBuf<'_>,
    fd: RawFd,
    max: usize,
) -> PyResult<io::Result<usize>> {
    let got = match recv_at(py, buf, fd, 0)? {
        Ok(got) => got,
        Err(e) => return Ok(Err(e)),
    };
    if got == buf.len() {
        return read_waiting(py, buf, fd, got, max).map(Ok);
    }
    Ok(Ok(got))
}

/// After `got` bytes filled `buf`: grows it by what is waiting on `fd` (up to `max` in all) and
/// reads that too; returns how many bytes it holds now.
fn read_waiting(
    py: Python<'_>,
    buf: &mut BytesBuf<'_>,
    fd: RawFd,
    got: usize,
    max: usize,
) -> PyResult<usize> {
    if got >= max {
        return Ok(got);
    }
    let waiting = bytes_waiting(fd);
    if waiting == 0 {
        return Ok(got);
    }
    buf.resize(got.saturating_add(waiting).min(max))?;
    // With bytes waiting, TCP and Unix sockets return them before any pending error, so this
    // cannot take an error the next read should have reported.
    Ok(match recv_at(py, buf, fd, got)? {
        Ok(more) => got + more,
        Err(_) => got,
    })
}

/// One `recv` into `buf` from `offset` to its end.
fn recv_at(
    py: Python<'_>,
    buf: &mut BytesBuf<'_>,
    fd: RawFd,
    offset: usize,
) -> PyResult<io::Result<usize>> {
    let rest = &mut buf.as_mut_slice()[offset..];
    // SAFETY: `rest` is writable memory of `rest.len()` bytes, borrowed for the call.
    unsafe { recv_raw(py, fd, rest.as_mut_ptr().cast(), rest.len()) }
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
