//! One way to make a system call: `syscall!(name(args))` returns `io::Result` of the raw return
//! value, turning `-1` into the thread's `errno`; and the few fd helpers built on it.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: every caller passes arguments that satisfy the system call's contract; see the
        // `// SAFETY:` line at each call site.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

pub(crate) use syscall;

/// A connected pair of non-blocking, close-on-exec Unix stream sockets.
pub fn nonblocking_socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a writable array of two ints, as socketpair requires.
    syscall!(socketpair(
        libc::AF_UNIX,
        libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        0,
        fds.as_mut_ptr()
    ))?;
    // SAFETY: socketpair succeeded: two new fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends what the kernel takes now of `data` on a connected socket, without blocking even on a
/// blocking socket; `EPIPE` is reported as an error, never as a signal.
pub fn send(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
    // SAFETY: `data` is a valid readable buffer of `data.len()` bytes.
    let n = syscall!(send(fd, data.as_ptr().cast(), data.len(), flags))?;
    Ok(n as usize)
}

/// Receives at most `buf.len()` bytes without blocking, even on a blocking socket; `Ok(0)` is
/// end of stream.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes.
    let n = syscall!(recv(
        fd,
        buf.as_mut_ptr().cast(),
        buf.len(),
        libc::MSG_DONTWAIT
    ))?;
    Ok(n as usize)
}

/// Closes the sending direction of a socket: the peer reads end of stream.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown takes any fd and reports a bad one as an error.
    syscall!(shutdown(fd, libc::SHUT_WR))?;
    Ok(())
}
