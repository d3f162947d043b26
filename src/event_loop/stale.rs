//! Registrations whose file is gone: how they are dropped, and how the `sock_*` calls they
//! served end (see `crate::owner` for when this happens and why).
//!
//! A dropped reader or writer is cancelled like a replaced one; if it served a pending `sock_*`
//! call, that call's future fails with `OSError(EBADF)`, what the same call on the closed socket
//! object raises. A socket may be closed from a thread other than the loop's; the future is then
//! failed from the loop's thread, through `call_soon_threadsafe`, as a future may only be
//! completed there.

use std::os::fd::RawFd;

use pyo3::intern;
use pyo3::prelude::*;

use super::args::CallArgs;
use super::handle::Handle;
use super::io::Slot;
use super::state::LoopCore;
use crate::core::sys::current_thread_id;
use crate::errors::closed_fd_error;

impl LoopCore {
    /// Cancels `slots` and fails the calls they served (see the module doc).
    pub(crate) fn retire(&self, py: Python<'_>, slots: Vec<Slot>) -> PyResult<()> {
        let mut first_error = None;
        for slot in slots {
            let mut result = Handle::do_cancel(slot.handle.bind(py));
            if let Some(pending) = slot.pending {
                result = result.and(self.fail_pending(py, pending.into_bound(py)));
            }
            if let Err(err) = result {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn fail_pending(&self, py: Python<'_>, future: Bound<'_, PyAny>) -> PyResult<()> {
        let foreign = matches!(
            self.state.borrow(py).thread_id,
            Some(id) if id != current_thread_id()
        );
        if !foreign {
            return fail_if_pending(&future);
        }
        let fail = wrap_pyfunction!(fail_if_pending, py)?;
        self.soon_threadsafe(py, fail.into_any(), CallArgs::One(future), None)?;
        Ok(())
    }

    /// The socket `sock`, holding `fd`, is about to close it (`event_loop::close_watch`): everything
    /// registered for the number is that socket's file's, so it all goes, and the fd leaves
    /// epoll while the number still names that file. A transport over the socket that is not
    /// closing already (the program closed its socket under it) is closed with EBADF, as its
    /// next system call would have failed, so that its protocol hears of it and the number is
    /// not refused to its next owner as a transport's. A call from a finalizer that runs while
    /// the loop's state is being changed finds it busy and does nothing; the checks before each
    /// system call and the stale-registration rule still hold then.
    pub(crate) fn owner_closing(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        sock: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let stale = {
            let Some(mut st) = this.state.try_borrow_mut(py) else {
                return Ok(());
            };
            let Some(poller) = st.poller.clone() else {
                return Ok(());
            };
            let entry = st.io.remove(fd);
            if entry.is_some() {
                let _ = poller.deregister(fd);
            }
            entry.map(|e| [e.reader, e.writer])
        };
        this.retire(py, stale.into_iter().flatten().flatten().collect())?;
        let Some(transport) = this.transport_of(py, fd)? else {
            return Ok(());
        };
        if transport
            .call_method0(intern!(py, "is_closing"))?
            .is_truthy()?
        {
            return Ok(());
        }
        if transport.getattr(intern!(py, "_sock"))?.is(sock) {
            transport.call_method1(intern!(py, "_force_close"), (closed_fd_error().value(py),))?;
        }
        Ok(())
    }

    /// Drops the registrations of `fds`, which the kernel no longer has: their files closed.
    pub(crate) fn drop_closed(&self, py: Python<'_>, fds: Vec<RawFd>) -> PyResult<()> {
        if fds.is_empty() {
            return Ok(());
        }
        let stale: Vec<Slot> = {
            let mut st = self.state.borrow_mut(py);
            fds.into_iter()
                .filter_map(|fd| st.io.remove(fd))
                .flat_map(|entry| [entry.reader, entry.writer])
                .flatten()
                .collect()
        };
        self.retire(py, stale)
    }
}

/// Fails `future` with EBADF unless it is done already.
#[pyfunction]
fn fail_if_pending(future: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = future.py();
    if !future.call_method0(intern!(py, "done"))?.is_truthy()? {
        future.call_method1(intern!(py, "set_exception"), (closed_fd_error().value(py),))?;
    }
    Ok(())
}
