//! Readers and writers registered with `add_reader`/`add_writer`: at most one of each per fd,
//! level-triggered, their handles queued on every iteration while the fd stays ready.
//!
//! The poller token of a registration is its fd, so the registry is a vector indexed by fd.

use std::os::fd::RawFd;

use pyo3::prelude::*;

use super::handle::Handle;
use crate::core::poller::Interest;

#[derive(Default)]
pub struct IoEntry {
    pub reader: Option<Py<Handle>>,
    pub writer: Option<Py<Handle>>,
}

impl IoEntry {
    pub fn interest(&self) -> Interest {
        Interest {
            readable: self.reader.is_some(),
            writable: self.writer.is_some(),
        }
    }

    pub fn slot(&mut self, writer: bool) -> &mut Option<Py<Handle>> {
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
}

impl IoRegistry {
    /// How many fds are registered.
    pub fn len(&self) -> usize {
        self.count
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

    /// Inserts an empty entry for `fd` (which must be non-negative) and returns it.
    pub fn insert(&mut self, fd: RawFd) -> &mut IoEntry {
        let i = usize::try_from(fd).unwrap_or_default();
        if self.entries.len() <= i {
            self.entries.resize_with(i + 1, || None);
        }
        if self.entries[i].is_none() {
            self.count += 1;
        }
        self.entries[i].get_or_insert_with(IoEntry::default)
    }

    pub fn remove(&mut self, fd: RawFd) -> Option<IoEntry> {
        let i = usize::try_from(fd).ok()?;
        let entry = self.entries.get_mut(i)?.take();
        if entry.is_some() {
            self.count -= 1;
        }
        entry
    }

    /// Every registration, emptying the registry: for `close()`.
    pub fn drain(&mut self) -> Vec<(RawFd, IoEntry)> {
        self.count = 0;
        std::mem::take(&mut self.entries)
            .into_iter()
            .enumerate()
            .filter_map(|(fd, e)| e.map(|e| (fd as RawFd, e)))
            .collect()
    }

    pub fn handles(&self) -> impl Iterator<Item = &Py<Handle>> {
        self.entries
            .iter()
            .flatten()
            .flat_map(|e| e.reader.iter().chain(e.writer.iter()))
    }
}
