//! Readers and writers registered with `add_reader`/`add_writer`: at most one of each per fd,
//! level-triggered, their handles queued on every iteration while the fd stays ready.
//!
//! The poller token of a registration is its fd, so the registry is a vector indexed by fd.
//!
//! One-shot waits (`sock_recv`/`sock_sendall` waiting in `sock.rs`) are registered with
//! EPOLLONESHOT instead, and their registration is *parked* when the wait ends rather than
//! deleted: the kernel disarms it after its one event, so ending a wait needs no system call, and
//! the next wait on the fd re-arms it with one `EPOLL_CTL_MOD` where a delete and an add took two.
//! A parked entry has no handler and counts as unregistered. If its fd was closed meanwhile, the
//! kernel dropped the registration and the MOD fails with ENOENT, so the loop adds it afresh (a
//! new socket may have the same number), dropping whatever the entry still held for the closed
//! file (`crate::owner`, rule 3). If a duplicate keeps the old file open, its forgotten
//! registration stays disarmed: it reports nothing more.
//!
//! Each reader and writer is a `Slot`: its handle, the object its fd was registered with (its
//! owner: the socket of a `sock_*` call or a transport, the file object given to `add_reader`;
//! none for a bare number), and the future of the `sock_*` call it serves, if any. The owner lets
//! a transport remove only its own registration, and the future is failed with EBADF when the
//! registration is dropped because its file was closed (see `crate::owner`).

use std::os::fd::RawFd;

use pyo3::prelude::*;

use super::handle::Handle;
use crate::core::poller::Interest;

/// One reader or writer (see the module doc).
pub struct Slot {
    pub handle: Py<Handle>,
    /// The object the fd was registered with, if not a bare number.
    pub owner: Option<Py<PyAny>>,
    /// The future of the pending `sock_*` call this reader or writer serves.
    pub pending: Option<Py<PyAny>>,
}

#[derive(Default)]
pub struct IoEntry {
    pub reader: Option<Slot>,
    pub writer: Option<Slot>,
    /// Registered with EPOLLONESHOT (see the module doc).
    pub oneshot: bool,
    /// A one-shot registration not yet disarmed by an event.
    pub armed: bool,
    parked: bool,
}

impl IoEntry {
    pub fn interest(&self) -> Interest {
        Interest {
            readable: self.reader.is_some(),
            writable: self.writer.is_some(),
            oneshot: self.oneshot,
        }
    }

    pub fn slot(&mut self, writer: bool) -> &mut Option<Slot> {
        if writer {
            &mut self.writer
        } else {
            &mut self.reader
        }
    }
}

#[derive(Default)]
pub struct IoRegistry {
    entries: Vec<Option<IoEntry>>,
    count: usize,
    parked: usize,
    /// One-shot registrations that reported an event since the last `rearm`.
    disarmed: Vec<RawFd>,
}

impl IoRegistry {
    /// How many fds are registered (parked ones are not).
    pub fn len(&self) -> usize {
        self.count - self.parked
    }

    pub fn get(&self, fd: RawFd) -> Option<&IoEntry> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.entries.get(i))
            .and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, fd: RawFd) -> Option<&mut IoEntry> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
            .and_then(Option::as_mut)
    }

    /// The entry for `fd` (which must be non-negative), made empty if there was none, and
    /// unparked: a handler is about to be set in it.
    pub fn insert(&mut self, fd: RawFd) -> &mut IoEntry {
        let i = usize::try_from(fd).unwrap_or_default();
        if self.entries.len() <= i {
            self.entries.resize_with(i + 1, || None);
        }
        if self.entries[i].is_none() {
            self.count += 1;
        }
        let entry = self.entries[i].get_or_insert_with(IoEntry::default);
        if entry.parked {
            entry.parked = false;
            self.parked -= 1;
        }
        entry
    }

    /// Keeps the handler-less one-shot entry of `fd` with its kernel registration.
    pub fn park(&mut self, fd: RawFd) {
        if let Some(entry) = self.get_mut(fd) {
            if !entry.parked {
                entry.parked = true;
                self.parked += 1;
            }
        }
    }

    /// Notes that the one-shot registration of `fd`, if it is one, reported an event: the kernel
    /// disarmed it.
    pub fn note_event(&mut self, fd: RawFd) {
        if let Some(entry) = self.get_mut(fd) {
            if entry.oneshot && entry.armed {
                entry.armed = false;
                self.disarmed.push(fd);
            }
        }
    }

    /// Calls `arm(fd, interest)` for each one-shot registration disarmed since the last call
    /// whose fd still has a handler (a wait that retried and goes on waiting); the others stay
    /// parked and disarmed. A registration `arm` fails to re-arm stays disarmed.
    pub fn rearm(&mut self, mut arm: impl FnMut(RawFd, Interest) -> bool) {
        if self.disarmed.is_empty() {
            return;
        }
        // Taken and given back, so the list keeps its capacity from one iteration to the next.
        let mut disarmed = std::mem::take(&mut self.disarmed);
        for fd in disarmed.drain(..) {
            if let Some(entry) = self.get_mut(fd) {
                let interest = entry.interest();
                if entry.oneshot && !entry.armed && !interest.is_empty() {
                    entry.armed = arm(fd, interest);
                }
            }
        }
        self.disarmed = disarmed;
    }

    pub fn remove(&mut self, fd: RawFd) -> Option<IoEntry> {
        let i = usize::try_from(fd).ok()?;
        let entry = self.entries.get_mut(i)?.take();
        if let Some(entry) = &entry {
            self.count -= 1;
            if entry.parked {
                self.parked -= 1;
            }
        }
        entry
    }

    /// Every registration, emptying the registry: for `close()`.
    pub fn drain(&mut self) -> Vec<(RawFd, IoEntry)> {
        self.count = 0;
        self.parked = 0;
        self.disarmed.clear();
        std::mem::take(&mut self.entries)
            .into_iter()
            .enumerate()
            .filter_map(|(fd, e)| e.map(|e| (fd as RawFd, e)))
            .collect()
    }

    /// Every slot's objects, for the garbage collector.
    pub fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.entries
            .iter()
            .flatten()
            .flat_map(|e| e.reader.iter().chain(e.writer.iter()))
    }
}

/// What a registration is tied to, given when it is made (see `Slot`).
#[derive(Default)]
pub struct Ties<'py> {
    pub owner: Option<Bound<'py, PyAny>>,
    pub pending: Option<Bound<'py, PyAny>>,
    /// The `contextvars.Context` the handle runs in; `None` for a snapshot of the current one.
    pub context: Option<Bound<'py, PyAny>>,
}

impl<'py> Ties<'py> {
    /// Registered with `owner`, serving no pending call.
    pub fn owned_by(owner: &Bound<'py, PyAny>) -> Ties<'py> {
        Ties {
            owner: Some(owner.clone()),
            pending: None,
            context: None,
        }
    }
}

/// Which reader or writer a removal may take.
pub enum Which<'a, 'py> {
    /// Whatever is registered (`remove_reader`).
    Any,
    /// Only one registered with this owner (a transport's socket).
    Owner(&'a Bound<'py, PyAny>),
    /// Only this handle.
    Handle(&'a Py<Handle>),
}

impl Which<'_, '_> {
    pub fn matches(&self, slot: &Slot) -> bool {
        match self {
            Which::Any => true,
            Which::Owner(owner) => slot.owner.as_ref().is_some_and(|o| o.is(*owner)),
            Which::Handle(handle) => slot.handle.is(*handle),
        }
    }
}
