//! One receive buffer per thread, for reads whose bytes are copied out at once (into a Python
//! `bytes`): one buffer rather than one per connection, since only one read runs at a time.
//!
//! The buffer is reserved, never zero-filled: the kernel writes into its spare capacity, so
//! only the pages a read actually fills become resident. A loop serving small messages keeps a
//! few KiB of it in memory, not the whole 256 KiB.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;

use super::sys::syscall;

/// The most one read takes through the scratch buffer; larger reads get a buffer of their own.
pub const SCRATCH_SIZE: usize = 256 * 1024;

/// The block `prime_allocator` frees: glibc then keeps up to twice this free at the top of the
/// heap, room for a few dozen connections' 64 KiB reads in flight (measured: 512 KiB was not
/// enough for 32 connections echoing 100 KiB, 1 MiB was).
const PRIME_SIZE: usize = 1024 * 1024;

/// Raises glibc's dynamic allocation thresholds to the sizes the loop's reads produce.
///
/// Why: glibc gives the top of the heap back to the kernel whenever more than its trim threshold
/// (128 KiB at start) lies free there, and takes it back on the next allocation, page fault by
/// page fault. A server receiving 64-256 KiB at a time allocates and frees a `bytes` object of
/// that size per read, so without this every read paid for its pages afresh (measured: 40%
/// fewer requests per second echoing 100 KiB messages). glibc raises both thresholds by itself
/// the first time a block it took from `mmap` is freed (to that size, and twice that); most
/// Python programs trigger this early by chance. Freeing one such block, never touched, does it on
/// purpose: no memory stays in use, and the heap may keep up to twice `PRIME_SIZE` free at its
/// top instead of returning it at once.
pub fn prime_allocator() {
    // black_box: an allocation nothing reads would be removed by the optimizer.
    drop(std::hint::black_box(Vec::<u8>::with_capacity(PRIME_SIZE)));
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// `recv` of at most `n` bytes from `fd` without blocking; `use_bytes` gets what arrived (empty
/// at end of stream) and must not call back into this function.
pub fn recv_with<T>(fd: RawFd, n: usize, use_bytes: impl FnOnce(&[u8]) -> T) -> io::Result<T> {
    if n > SCRATCH_SIZE {
        let mut own = Vec::with_capacity(n);
        let got = recv_into_spare(fd, &mut own, n)?;
        return Ok(use_bytes(got));
    }
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let got = recv_into_spare(fd, &mut scratch, n)?;
        Ok(use_bytes(got))
    })
}

/// Receives into the spare capacity of `buf` (made at least `n`) and returns the bytes written.
fn recv_into_spare(fd: RawFd, buf: &mut Vec<u8>, n: usize) -> io::Result<&[u8]> {
    buf.clear();
    buf.reserve(n);
    let spare = buf.spare_capacity_mut();
    // SAFETY: `spare` is writable memory of at least `n` bytes owned by `buf`; recv writes at
    // most `n` bytes into it and reports how many.
    let got = syscall!(recv(fd, spare.as_mut_ptr().cast(), n, libc::MSG_DONTWAIT))? as usize;
    // SAFETY: the kernel initialised the first `got` bytes of the spare capacity.
    Ok(unsafe { std::slice::from_raw_parts(buf.as_ptr(), got) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn receives_what_was_sent_small_and_large() {
        let (a, b) = crate::core::sys::nonblocking_socketpair().unwrap();
        for size in [1usize, 1000, SCRATCH_SIZE + 10] {
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut sent = 0;
            let mut received = Vec::new();
            while received.len() < size {
                if sent < size {
                    sent += crate::core::sys::send(a.as_raw_fd(), &data[sent..]).unwrap_or(0);
                }
                match recv_with(b.as_raw_fd(), size, |got| received.extend_from_slice(got)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(received, data);
        }
        drop(a);
        assert_eq!(recv_with(b.as_raw_fd(), 10, |got| got.len()).unwrap(), 0);
    }
}
