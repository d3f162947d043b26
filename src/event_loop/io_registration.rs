//! Registering readers and writers: `add_reader`/`add_writer` (level-triggered), the one-shot
//! waits of `sock_*` calls, and a Rust transport's own read or write step; and removing them.
//! What each registration holds is `io.rs`'s `Slot`; what happens to the registrations of a file
//! that closed is `stale.rs`.

use std::os::fd::RawFd;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::args::CallArgs;
use super::handle::Handle;
use super::io::{Slot, Ties, Which};
use super::state::{IoKind, LoopCore};
use crate::errors::{closed_loop_error, os_error};

impl LoopCore {
    /// Registers `callback(*args)` as the reader (or writer) of `fd`, replacing any previous one,
    /// which is cancelled. Returns the new handle. `ties` names the object the fd came from and
    /// the pending call's future, if any (see `io::Slot`).
    pub(crate) fn add_io<'py>(
        &self,
        py: Python<'py>,
        fd: RawFd,
        writer: bool,
        callback: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        ties: Ties<'py>,
    ) -> PyResult<Py<Handle>> {
        self.register_io(
            py,
            fd,
            writer,
            callback,
            CallArgs::from_tuple(args),
            IoKind::Level,
            ties,
        )
    }

    /// `add_io` for a wait that ends at its first completion (`sock.rs`): registered one-shot,
    /// and parked rather than deleted when removed (see `io.rs`).
    pub(crate) fn add_oneshot_io<'py>(
        &self,
        py: Python<'py>,
        fd: RawFd,
        writer: bool,
        callback: Bound<'py, PyAny>,
        ties: Ties<'py>,
    ) -> PyResult<Py<Handle>> {
        self.register_io(
            py,
            fd,
            writer,
            callback,
            CallArgs::Zero,
            IoKind::Oneshot,
            ties,
        )
    }

    /// Registers a Rust transport's own read (or write) step for `fd`, owned by its socket (see
    /// `Flags::NATIVE_READ`), to run in the transport's `context`.
    pub(crate) fn add_transport_io<'py>(
        &self,
        py: Python<'py>,
        fd: RawFd,
        writer: bool,
        transport: Bound<'py, PyAny>,
        sock: &Bound<'py, PyAny>,
        context: Option<Bound<'py, PyAny>>,
    ) -> PyResult<()> {
        let ties = Ties {
            context,
            ..Ties::owned_by(sock)
        };
        self.register_io(
            py,
            fd,
            writer,
            transport,
            CallArgs::Zero,
            IoKind::TransportStep,
            ties,
        )?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn register_io<'py>(
        &self,
        py: Python<'py>,
        fd: RawFd,
        writer: bool,
        callback: Bound<'py, PyAny>,
        args: CallArgs<'py>,
        kind: IoKind,
        ties: Ties<'py>,
    ) -> PyResult<Py<Handle>> {
        self.check_closed(py)?;
        let Ties {
            owner,
            pending,
            context,
        } = ties;
        let handle = self.new_handle(py, callback, args, context, None, false, false)?;
        if kind == IoKind::TransportStep {
            handle.get().mark_transport_step(writer);
        }
        let slot = Slot {
            handle: handle.clone().unbind(),
            owner: owner.map(Bound::unbind),
            pending: pending.map(Bound::unbind),
        };
        let (replaced, stale) = {
            let mut st = self.state.borrow_mut(py);
            let poller = st.poller.clone().ok_or_else(closed_loop_error)?;
            let existed = st.io.get(fd).is_some();
            let entry = st.io.insert(fd);
            let mut replaced = entry.slot(writer).replace(slot);
            // One-shot only as the fd's only handler: a level-triggered one on the other side
            // keeps the registration level-triggered.
            entry.oneshot = kind == IoKind::Oneshot && entry.slot(!writer).is_none();
            entry.armed = true;
            let token = fd as u64;
            let mut stale = Vec::new();
            let mut result = if existed {
                poller.reregister(fd, token, entry.interest())
            } else {
                poller.register(fd, token, entry.interest())
            };
            match &result {
                Err(err) if existed && err.raw_os_error() == Some(libc::ENOENT) => {
                    // The registration was a file's that has closed since (`crate::owner`, rule
                    // 3): what was recorded for the number was that file's, not this one's.
                    stale.extend(replaced.take());
                    stale.extend(entry.slot(!writer).take());
                    entry.oneshot = kind == IoKind::Oneshot;
                    result = poller.register(fd, token, entry.interest());
                }
                Err(err) if !existed && err.raw_os_error() == Some(libc::EEXIST) => {
                    result = poller.reregister(fd, token, entry.interest());
                }
                _ => {}
            }
            if let Err(err) = result {
                let failed = st.io.get_mut(fd).and_then(|e| e.slot(writer).take());
                if st.io.get(fd).is_some_and(|e| e.interest().is_empty()) {
                    st.io.remove(fd);
                }
                drop(st);
                drop(failed);
                drop(replaced);
                self.retire(py, stale)?;
                return Err(os_error(err));
            }
            (replaced, stale)
        };
        if let Some(old) = replaced {
            Handle::do_cancel(old.handle.bind(py))?;
        }
        self.retire(py, stale)?;
        Ok(handle.unbind())
    }

    /// Whether `fd` has a reader and whether it has a writer (for transport reprs).
    pub(crate) fn io_registered(&self, py: Python<'_>, fd: RawFd) -> (bool, bool) {
        let st = self.state.borrow(py);
        st.io
            .get(fd)
            .map_or((false, false), |e| (e.reader.is_some(), e.writer.is_some()))
    }

    /// Removes the reader (or writer) of `fd` if it is `which`'s; true if there was one.
    pub(crate) fn remove_io(
        &self,
        py: Python<'_>,
        fd: RawFd,
        writer: bool,
        which: Which<'_, '_>,
    ) -> PyResult<bool> {
        let (removed, stale, failure) = {
            let mut st = self.state.borrow_mut(py);
            let Some(poller) = st.poller.clone() else {
                return Ok(false);
            };
            let Some(entry) = st.io.get_mut(fd) else {
                return Ok(false);
            };
            if !entry
                .slot(writer)
                .as_ref()
                .is_some_and(|s| which.matches(s))
            {
                return Ok(false);
            }
            let removed = entry.slot(writer).take();
            let interest = entry.interest();
            let mut stale = None;
            let mut failure = None;
            if interest.is_empty() && entry.oneshot {
                st.io.park(fd);
            } else if interest.is_empty() {
                st.io.remove(fd);
                // The fd may have been closed already, which removed it from epoll.
                let _ = poller.deregister(fd);
            } else if let Err(err) = poller.reregister(fd, fd as u64, interest) {
                if matches!(err.raw_os_error(), Some(libc::ENOENT | libc::EBADF)) {
                    // The file has closed (`crate::owner`, rule 3): the other side's handler
                    // was its too.
                    stale = st.io.remove(fd).and_then(|mut e| e.slot(!writer).take());
                } else {
                    failure = Some(err);
                }
            }
            (removed, stale, failure)
        };
        if let Some(slot) = removed {
            Handle::do_cancel(slot.handle.bind(py))?;
        }
        self.retire(py, stale.into_iter().collect())?;
        match failure {
            Some(err) => Err(os_error(err)),
            None => Ok(true),
        }
    }
}
