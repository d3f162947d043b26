//! The cross-thread waker: an eventfd registered in the poller.
//!
//! `wake` writes only when no wake is pending (an atomic flag), so a burst of
//! `call_soon_threadsafe` calls costs one system call; `reset`, called by the loop after its wait
//! saw the eventfd readable, drains the counter first and only then clears the flag.
//!
//! The order is what keeps wakes from being lost. Cleared first, a wake landing between the two
//! steps would set the flag and write, and the drain would then swallow its write: the flag would
//! stay set with nothing left to read, so every later `wake` would skip its write and the loop
//! could sleep forever (it did, in `shutdown_default_executor` after a burst of `to_thread`
//! calls). Drained first, a wake landing between the two steps sees the flag still set and skips
//! its write, which is harmless: the loop is about to run the ready queue that the waking thread
//! filled before waking. Any wake after the flag is cleared writes, and ends the next wait.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::core::sys::syscall;

pub struct Waker {
    fd: OwnedFd,
    pending: AtomicBool,
}

impl Waker {
    pub fn new() -> io::Result<Waker> {
        // SAFETY: eventfd takes no pointers.
        let fd = syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?;
        Ok(Waker {
            // SAFETY: eventfd returned a new fd that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            pending: AtomicBool::new(false),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Ends the poller's current or next wait.
    pub fn wake(&self) -> io::Result<()> {
        if self.pending.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
        match syscall!(write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8)) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Clears a pending wake: the counter, then the flag (see the module doc for why in that
    /// order).
    pub fn reset(&self) {
        let mut buf: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our own eventfd. Nothing to read (EAGAIN)
        // is the only expected error and means there is nothing to clear.
        let _ = syscall!(read(self.fd.as_raw_fd(), (&mut buf as *mut u64).cast(), 8));
        self.pending.store(false, Ordering::Release);
    }
}
