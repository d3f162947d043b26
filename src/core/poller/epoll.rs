//! The Linux backend: one epoll instance, level-triggered registrations (one-shot where asked),
//! and waits through `epoll_pwait2` (nanosecond time-outs) where the kernel has it (5.11+), else
//! `epoll_wait` with the time-out rounded *up* to whole milliseconds: `Duration::as_millis`
//! truncates, and a truncated time-out would wake the loop before its next timer is due.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::interest::{Event, Interest};
use crate::core::sys::syscall;

/// Cleared the first time the kernel answers `ENOSYS` to `epoll_pwait2`.
static HAS_PWAIT2: AtomicBool = AtomicBool::new(true);

const MAX_EVENTS: usize = 1024;

pub struct Selector {
    epfd: OwnedFd,
}

fn epoll_flags(interest: Interest) -> u32 {
    let mut flags = 0;
    if interest.readable {
        flags |= libc::EPOLLIN as u32;
    }
    if interest.writable {
        flags |= libc::EPOLLOUT as u32;
    }
    if interest.oneshot {
        flags |= libc::EPOLLONESHOT as u32;
    }
    flags
}

impl Selector {
    pub fn new() -> io::Result<Selector> {
        // SAFETY: epoll_create1 takes no pointers.
        let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        Ok(Selector {
            // SAFETY: a new fd that nothing else owns.
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: epoll_flags(interest),
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event that outlives the call.
        syscall!(epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev))?;
        Ok(())
    }

    pub fn add(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)
    }

    pub fn modify(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, Interest::default())
    }

    pub fn wait(&self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        let mut raw = [const { MaybeUninit::<libc::epoll_event>::uninit() }; MAX_EVENTS];
        let n = self.wait_raw(&mut raw, timeout)?;
        events.extend(raw[..n].iter().map(|ev| {
            // SAFETY: the kernel initialised the first `n` entries.
            let ev = unsafe { ev.assume_init() };
            let flags = ev.events;
            let other_than_in = flags & !(libc::EPOLLIN as u32) != 0;
            let other_than_out = flags & !(libc::EPOLLOUT as u32) != 0;
            Event {
                token: ev.u64,
                readable: other_than_out,
                writable: other_than_in,
            }
        }));
        Ok(())
    }

    fn wait_raw(
        &self,
        raw: &mut [MaybeUninit<libc::epoll_event>; MAX_EVENTS],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        if HAS_PWAIT2.load(Ordering::Relaxed) {
            let ts = timeout.map(|t| libc::timespec {
                tv_sec: t.as_secs() as libc::time_t,
                tv_nsec: t.subsec_nanos() as libc::c_long,
            });
            let ts_ptr = ts
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: `raw` has room for MAX_EVENTS epoll_events the kernel writes; `ts_ptr` is null or points to
            // a timespec that outlives the call; a null sigmask leaves the mask alone.
            let res = unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    self.epfd.as_raw_fd(),
                    raw.as_mut_ptr().cast::<libc::epoll_event>(),
                    MAX_EVENTS as libc::c_int,
                    ts_ptr,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            };
            if res >= 0 {
                return Ok(res as usize);
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ENOSYS) {
                return Err(err);
            }
            HAS_PWAIT2.store(false, Ordering::Relaxed);
        }
        let millis = match timeout {
            None => -1,
            Some(t) => {
                let rounded_up = t.as_nanos().div_ceil(1_000_000);
                rounded_up.min(libc::c_int::MAX as u128) as libc::c_int
            }
        };
        // SAFETY: `raw` has room for MAX_EVENTS epoll_events the kernel writes.
        let n = syscall!(epoll_wait(
            self.epfd.as_raw_fd(),
            raw.as_mut_ptr().cast::<libc::epoll_event>(),
            MAX_EVENTS as libc::c_int,
            millis
        ))?;
        Ok(n as usize)
    }
}
