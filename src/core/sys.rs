//! One way to make a system call: `syscall!(name(args))` returns `io::Result` of the raw return
//! value, turning `-1` into the thread's `errno`; and the few fd helpers built on it.
//!
//! The socket reads and writes of the hot path (`send`, `recv_raw`) are made with the `syscall`
//! instruction in place, on x86-64 Linux, instead of through libc's wrapper function: the kernel's
//! own calls overwrite the processor's return-address predictor, so every function that returns
//! after a system call mispredicts its `ret`. Measured on this project's 2-core virtual machine:
//! 5 ns per frame returned through after a `getppid`, against 1 ns without the system call. A
//! server makes a read and a write per request; the frames between them and the loop are kept
//! few for the same reason (`#[inline(always)]` on the functions around them). Under Miri, which
//! cannot interpret inline assembly, they go through libc as on other targets.

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
#[inline(always)]
pub fn send(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
    #[cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]
    // SAFETY: `data` is a valid readable buffer of `data.len()` bytes; no address is given.
    return unsafe {
        inline_syscall(
            libc::SYS_sendto,
            [
                fd as usize,
                data.as_ptr() as usize,
                data.len(),
                flags as usize,
                0,
                0,
            ],
        )
    };
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64", not(miri))))]
    // SAFETY: `data` is a valid readable buffer of `data.len()` bytes.
    return syscall!(send(fd, data.as_ptr().cast(), data.len(), flags)).map(|n| n as usize);
}

/// Receives at most `len` bytes into `buf` without blocking, even on a blocking socket; `Ok(0)`
/// is end of stream.
///
/// # Safety
/// `buf` is valid for writes of `len` bytes.
#[inline(always)]
pub unsafe fn recv_raw(fd: RawFd, buf: *mut u8, len: usize) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT;
    #[cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]
    // SAFETY: per the contract, the kernel may write `len` bytes at `buf`; no address is asked.
    return unsafe {
        inline_syscall(
            libc::SYS_recvfrom,
            [fd as usize, buf as usize, len, flags as usize, 0, 0],
        )
    };
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64", not(miri))))]
    // SAFETY: per the contract, the kernel may write `len` bytes at `buf`.
    return syscall!(recv(fd, buf.cast(), len, flags)).map(|n| n as usize);
}

/// Receives at most `buf.len()` bytes without blocking, even on a blocking socket; `Ok(0)` is
/// end of stream.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes.
    unsafe { recv_raw(fd, buf.as_mut_ptr(), buf.len()) }
}

/// System call `nr` with six arguments, made in place (module doc): the result, or the error the
/// kernel returned as `-errno` (libc's wrapper would have stored it in `errno`).
///
/// # Safety
/// The arguments satisfy the contract of system call `nr`.
#[cfg(all(target_os = "linux", target_arch = "x86_64", not(miri)))]
#[inline(always)]
unsafe fn inline_syscall(nr: libc::c_long, args: [usize; 6]) -> io::Result<usize> {
    let ret: isize;
    // SAFETY: the x86-64 Linux system call convention: number in rax, arguments in rdi, rsi,
    // rdx, r10, r8, r9, result in rax; the kernel overwrites rcx and r11 and nothing else, and
    // does not touch the user stack. What the call itself reads and writes is the caller's
    // contract (the asm block is not marked `nomem`, so the compiler assumes memory changed).
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r9") args[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if (-4095..0).contains(&ret) {
        Err(io::Error::from_raw_os_error(-ret as i32))
    } else {
        Ok(ret as usize)
    }
}

/// Closes the sending direction of a socket: the peer reads end of stream.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown takes any fd and reports a bad one as an error.
    syscall!(shutdown(fd, libc::SHUT_WR))?;
    Ok(())
}

/// The calling thread's id: `pthread_self`, the value CPython's `threading.get_ident()` returns
/// on Linux.
pub fn current_thread_id() -> u64 {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as u64 }
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    #[cfg_attr(
        miri,
        ignore = "Miri's sockets take no MSG_DONTWAIT or MSG_NOSIGNAL flag"
    )]
    fn send_and_recv_move_bytes_and_report_errors_as_errno() {
        let (a, b) = nonblocking_socketpair().unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            recv(b.as_raw_fd(), &mut buf).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        assert_eq!(send(a.as_raw_fd(), b"hello").unwrap(), 5);
        assert_eq!(recv(b.as_raw_fd(), &mut buf[..3]).unwrap(), 3);
        assert_eq!(&buf[..3], b"hel");
        // SAFETY: `buf` is writable for its whole length.
        let got = unsafe { recv_raw(b.as_raw_fd(), buf.as_mut_ptr(), buf.len()) }.unwrap();
        assert_eq!(&buf[..got], b"lo");
        drop(b);
        // The peer is gone: EPIPE as an error (no SIGPIPE, which would end the test process).
        assert_eq!(
            send(a.as_raw_fd(), b"x").unwrap_err().raw_os_error(),
            Some(libc::EPIPE)
        );
        assert_eq!(recv(a.as_raw_fd(), &mut buf).unwrap(), 0);
    }

    #[test]
    fn a_bad_fd_is_ebadf() {
        let mut buf = [0u8; 4];
        assert_eq!(
            recv(-1, &mut buf).unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
        assert_eq!(
            send(-1, b"x").unwrap_err().raw_os_error(),
            Some(libc::EBADF)
        );
    }
}
