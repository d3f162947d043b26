//! The errors every part of the crate raises, in one place below all of them: the `OSError` of a
//! failed system call as Python itself words it, the PEP 475 retry of an interrupted call, and
//! the two errors of using what is closed (the loop, or an fd).

use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;

/// The `OSError` (its errno subclass, e.g. `PermissionError`) Python itself would raise: the
/// errno and the bare `strerror` text, without Rust's " (os error N)" suffix.
pub fn os_error(err: std::io::Error) -> PyErr {
    let errno = err.raw_os_error().unwrap_or(0);
    let text = err.to_string();
    let suffix = format!(" (os error {errno})");
    let message = text.strip_suffix(&suffix).unwrap_or(&text).to_owned();
    PyOSError::new_err((errno, message))
}

/// Runs `op` again after a signal interrupts it, running the Python signal handlers first (as
/// Python's own socket methods do, PEP 475); a handler's exception propagates.
#[inline(always)]
pub fn retry_eintr<T>(
    py: Python<'_>,
    mut op: impl FnMut() -> std::io::Result<T>,
) -> PyResult<std::io::Result<T>> {
    loop {
        match op() {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => py.check_signals()?,
            other => return Ok(other),
        }
    }
}

/// The stock loop's error for any use of a closed loop.
pub fn closed_loop_error() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}

/// The error of a system call on a closed fd: `OSError(EBADF, 'Bad file descriptor')`.
pub fn closed_fd_error() -> PyErr {
    os_error(std::io::Error::from_raw_os_error(libc::EBADF))
}
