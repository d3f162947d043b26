//! One way to make a system call: `syscall!(name(args))` returns `io::Result` of the raw return
//! value, turning `-1` into the thread's `errno`.

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
