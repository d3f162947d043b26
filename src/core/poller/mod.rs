//! Readiness notification: which registered fds can be read or written, and a waker that
//! another thread uses to end a wait early.
//!
//! The portable surface is this file; the Linux backend is `epoll.rs`, the waker `eventfd.rs`, and
//! the policy for polling before a wait blocks `spin.rs`.
//!
//! Why our own small epoll binding rather than a crate: asyncio's `add_reader`/`add_writer` are
//! level-triggered (a callback is called again on every iteration while the fd stays ready), which
//! rules out mio (edge-triggered only); `polling` supports level mode but arms a timerfd and
//! re-arms its notifier with three extra system calls on every wait, and it retries `EINTR`
//! internally, which hides the signal that should end the wait. One `epoll_pwait2` per wait, with a
//! nanosecond time-out, is what the loop needs.

mod epoll;
mod eventfd;
mod interest;
mod spin;

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use eventfd::Waker;
pub use interest::{Event, Interest};
pub use spin::MAX_LIMIT as MAX_SPIN_LIMIT;
use spin::{Spin, DEFAULT_LIMIT as DEFAULT_SPIN_LIMIT};

/// The longest single wait; the stock loop caps its select time-out at one day too.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The token the waker's own fd is registered under; never reported to callers.
const WAKER_TOKEN: u64 = u64::MAX;

pub struct Poller {
    selector: epoll::Selector,
    waker: Arc<Waker>,
    spin: Spin,
}

impl Poller {
    pub fn new() -> io::Result<Poller> {
        let selector = epoll::Selector::new()?;
        let waker = Arc::new(Waker::new()?);
        selector.add(waker.fd(), WAKER_TOKEN, Interest::READABLE)?;
        Ok(Poller {
            selector,
            waker,
            spin: Spin::new(DEFAULT_SPIN_LIMIT),
        })
    }

    /// The longest a wait polls before it blocks (see `spin.rs`).
    pub fn spin_limit(&self) -> Duration {
        self.spin.limit()
    }

    /// Sets the longest a wait polls before it blocks; zero: never.
    pub fn set_spin_limit(&self, limit: Duration) {
        self.spin.set_limit(limit);
    }

    /// How long the next wait that may block will poll first, as learnt so far.
    pub fn spin_window(&self) -> Duration {
        self.spin.window(None)
    }

    /// A handle other threads use to wake a wait.
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Ends the current or next wait (see `Waker::wake`).
    pub fn wake(&self) -> io::Result<()> {
        self.waker.wake()
    }

    /// Starts watching `fd` under `token`. Level-triggered unless `interest.oneshot`.
    pub fn register(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.selector.add(fd, token, interest)
    }

    /// Changes what an already registered `fd` is watched for.
    pub fn reregister(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.selector.modify(fd, token, interest)
    }

    /// Stops watching `fd`.
    pub fn deregister(&self, fd: RawFd) -> io::Result<()> {
        self.selector.delete(fd)
    }

    /// Waits until an fd is ready, the waker is woken, a signal arrives or `timeout` passes
    /// (`None`: no time-out). Replaces the content of `events`. A signal ends the wait with an
    /// `Interrupted` error, so the caller can run the Python signal handlers. The time-out is
    /// never rounded down: a wait never returns early because of rounding. A wait that may block
    /// first polls for the spin window (`spin.rs`).
    pub fn wait(&self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        match self.spin(events, timeout)? {
            Spun::Done => Ok(()),
            Spun::Quiet(rest) => self.block(events, rest),
        }
    }

    /// A wait's first part: with a zero time-out, the one poll that is the whole wait; else
    /// polling for the spin window. `Spun::Quiet` means the rest of the wait is `block`'s.
    pub fn spin(&self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<Spun> {
        events.clear();
        let timeout = timeout.map(|t| t.min(MAX_TIMEOUT));
        if timeout == Some(Duration::ZERO) {
            self.selector.wait(events, timeout)?;
            self.take_waker_events(events);
            return Ok(Spun::Done);
        }
        let window = self.spin.window(timeout);
        if window.is_zero() {
            return Ok(Spun::Quiet(Rest {
                since: Instant::now(),
                timeout,
                polled: false,
            }));
        }
        // The first poll reads no clock: on a busy loop it usually finds an event.
        self.selector.wait(events, Some(Duration::ZERO))?;
        if !events.is_empty() {
            self.take_waker_events(events);
            return Ok(Spun::Done);
        }
        let since = Instant::now();
        loop {
            // Lets another thread that is ready to run on this CPU have it: the peer we wait
            // for may be that thread, and spinning would only hold it back.
            // SAFETY: sched_yield takes no arguments and cannot fail on Linux.
            unsafe { libc::sched_yield() };
            self.selector.wait(events, Some(Duration::ZERO))?;
            if !events.is_empty() {
                self.take_waker_events(events);
                return Ok(Spun::Done);
            }
            if since.elapsed() >= window {
                return Ok(Spun::Quiet(Rest {
                    since,
                    timeout,
                    polled: true,
                }));
            }
        }
    }

    /// A wait's second part, after a `spin` that found nothing: blocks for the rest of the
    /// time-out, and lets the spin policy learn from the wait.
    pub fn block(&self, events: &mut Vec<Event>, rest: Rest) -> io::Result<()> {
        let Rest { since, timeout, .. } = rest;
        self.selector
            .wait(events, timeout.map(|t| t.saturating_sub(since.elapsed())))?;
        self.spin.learn(since.elapsed(), !events.is_empty());
        self.take_waker_events(events);
        Ok(())
    }

    /// Removes the waker's event from `events`, resetting the waker if it was there.
    fn take_waker_events(&self, events: &mut Vec<Event>) {
        let mut woken = false;
        events.retain(|e| {
            let is_waker = e.token == WAKER_TOKEN;
            woken |= is_waker;
            !is_waker
        });
        if woken {
            self.waker.reset();
        }
    }
}

/// How a wait's `spin` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spun {
    /// The wait is over (an event came, or the time-out was zero).
    Done,
    /// Nothing came; `block` waits on.
    Quiet(Rest),
}

/// What is left of a wait whose spin found nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rest {
    /// When the spin began: the wait's time-out counts from here.
    since: Instant,
    /// The wait's time-out, capped at `MAX_TIMEOUT`.
    timeout: Option<Duration>,
    /// Whether the spin polled at all (its window was open), so that a signal may have come
    /// during it without ending a blocking call.
    pub polled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::time::Instant;

    /// What a wait reports for a readable fd registered under token 7.
    const READABLE_7: Event = Event {
        token: 7,
        readable: true,
        writable: false,
    };

    fn socketpair() -> (OwnedFd, OwnedFd) {
        crate::core::sys::nonblocking_socketpair().unwrap()
    }

    fn write_byte(fd: &OwnedFd) {
        // SAFETY: writing one byte from a valid buffer to an open fd.
        let n = unsafe { libc::write(fd.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        assert_eq!(n, 1);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri's epoll is edge-triggered only")]
    fn time_out_never_early() {
        let poller = Poller::new().unwrap();
        for micros in [100u64, 1500, 20_000] {
            wait_out(&poller, Duration::from_micros(micros));
        }
    }

    /// A poller with this spin limit whose window has opened to `window`, a doubling of 10 µs.
    fn spinning_poller(limit: Duration, window: Duration) -> Poller {
        let poller = Poller::new().unwrap();
        poller.set_spin_limit(limit);
        while poller.spin.window(None) < window {
            poller.spin.learn(Duration::ZERO, true);
        }
        assert_eq!(poller.spin.window(None), window);
        poller
    }

    /// Waits without time-out for a byte another thread writes `after` from now; returns the
    /// events.
    fn wait_for_late_byte(poller: &Poller, after: Duration) -> Vec<Event> {
        let (a, b) = socketpair();
        poller
            .register(a.as_raw_fd(), 7, Interest::READABLE)
            .unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(after);
            write_byte(&b);
            b
        });
        let mut events = vec![];
        poller.wait(&mut events, None).unwrap();
        let _b = writer.join().unwrap();
        events
    }

    /// Waits `asked` with nothing to come; returns how long it took, which is at least that.
    fn wait_out(poller: &Poller, asked: Duration) -> Duration {
        let mut events = vec![];
        let start = Instant::now();
        poller.wait(&mut events, Some(asked)).unwrap();
        let took = start.elapsed();
        assert!(events.is_empty());
        assert!(took >= asked, "asked {asked:?}, waited {took:?}");
        took
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri's epoll is edge-triggered only")]
    fn a_short_wait_ended_by_an_event_opens_the_window() {
        let poller = Poller::new().unwrap();
        poller.set_spin_limit(Duration::from_millis(100));
        let events = wait_for_late_byte(&poller, Duration::from_millis(2));
        assert_eq!(events.len(), 1);
        assert_eq!(poller.spin.window(None), Duration::from_micros(10));
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri's epoll is edge-triggered only")]
    fn an_event_during_the_spin_ends_the_wait() {
        // 10 µs doubled 13 times: a wait that blocked would double it again, to 163.84 ms.
        let window = Duration::from_micros(81_920);
        let poller = spinning_poller(Duration::from_millis(200), window);
        let events = wait_for_late_byte(&poller, Duration::from_millis(5));
        assert_eq!(events, [READABLE_7]);
        assert_eq!(poller.spin.window(None), window, "the spin found the event");
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri's epoll is edge-triggered only")]
    fn a_time_out_inside_the_window_is_kept_and_closes_it() {
        let poller = spinning_poller(Duration::from_millis(200), Duration::from_micros(163_840));
        wait_out(&poller, Duration::from_millis(30));
        assert_eq!(poller.spin.window(None), Duration::ZERO);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri's epoll is edge-triggered only")]
    fn a_time_out_past_the_window_blocks_only_for_the_rest() {
        let poller = spinning_poller(Duration::from_millis(300), Duration::from_micros(163_840));
        let took = wait_out(&poller, Duration::from_millis(400));
        // Blocking for the whole time-out after the spin would take 564 ms.
        assert!(took < Duration::from_millis(540), "waited {took:?}");
        assert_eq!(poller.spin.window(None), Duration::ZERO);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri's epoll is edge-triggered only")]
    fn a_wait_longer_than_the_limit_closes_the_window() {
        let poller = spinning_poller(Duration::from_millis(20), Duration::from_millis(20));
        let events = wait_for_late_byte(&poller, Duration::from_millis(60));
        assert_eq!(events.len(), 1);
        assert_eq!(poller.spin.window(None), Duration::ZERO);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri's epoll is edge-triggered only")]
    fn readable_is_level_triggered() {
        let poller = Poller::new().unwrap();
        let (a, b) = socketpair();
        poller
            .register(a.as_raw_fd(), 7, Interest::READABLE)
            .unwrap();
        write_byte(&b);
        let mut events = vec![];
        for _ in 0..3 {
            poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
            assert_eq!(events, [READABLE_7]);
        }
        poller.deregister(a.as_raw_fd()).unwrap();
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(events.is_empty());
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri's epoll is edge-triggered only")]
    fn oneshot_reports_once_until_rearmed() {
        let poller = Poller::new().unwrap();
        let (a, b) = socketpair();
        let oneshot = Interest {
            oneshot: true,
            ..Interest::READABLE
        };
        poller.register(a.as_raw_fd(), 7, oneshot).unwrap();
        write_byte(&b);
        let mut events = vec![];
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.len(), 1);
        // Still readable, but disarmed.
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(events.is_empty());
        poller.reregister(a.as_raw_fd(), 7, oneshot).unwrap();
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.len(), 1);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri's epoll is edge-triggered only")]
    fn reregister_of_a_closed_fds_number_fails_with_enoent() {
        let poller = Poller::new().unwrap();
        let (a, _b) = socketpair();
        let number = a.as_raw_fd();
        poller.register(number, 7, Interest::READABLE).unwrap();
        let (c, d) = socketpair();
        // SAFETY: puts `c`'s socket at `number` in one step, closing the socket `a` held there
        // (which drops its registration); `a` owns the new one from here.
        assert_eq!(unsafe { libc::dup2(c.as_raw_fd(), number) }, number);
        drop(c);
        // The loop's cue that whatever it recorded for the number was the closed file's.
        let err = poller
            .reregister(number, 7, Interest::READABLE)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        poller.register(number, 7, Interest::READABLE).unwrap();
        write_byte(&d);
        let mut events = vec![];
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.len(), 1);
        drop(a);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri's epoll is edge-triggered only")]
    fn reader_and_writer_on_one_fd() {
        let poller = Poller::new().unwrap();
        let (a, b) = socketpair();
        poller
            .register(a.as_raw_fd(), 1, Interest::WRITABLE)
            .unwrap();
        let mut events = vec![];
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.len(), 1);
        assert!(events[0].writable && !events[0].readable);
        poller.reregister(a.as_raw_fd(), 1, Interest::BOTH).unwrap();
        write_byte(&b);
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(events[0].writable && events[0].readable);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri's epoll is edge-triggered only")]
    fn hang_up_reports_both_directions() {
        let poller = Poller::new().unwrap();
        let (a, b) = socketpair();
        poller
            .register(a.as_raw_fd(), 3, Interest::READABLE)
            .unwrap();
        drop(b);
        let mut events = vec![];
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(events[0].readable && events[0].writable);
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri's epoll is edge-triggered only")]
    fn waker_ends_an_endless_wait_from_another_thread() {
        let poller = Poller::new().unwrap();
        let waker = poller.waker();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            waker.wake().unwrap();
        });
        let mut events = vec![];
        poller.wait(&mut events, None).unwrap();
        assert!(events.is_empty());
        thread.join().unwrap();
        // The wake was consumed: the next wait times out.
        let start = Instant::now();
        poller
            .wait(&mut events, Some(Duration::from_millis(20)))
            .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    /// Wakes from other threads racing with the loop's reset of the waker: no wake may be lost.
    /// The wakers never stop waking, so every wait must end well before its time-out; a lost wake
    /// (a pending flag left set with the counter drained) would suppress all later ones.
    #[test]
    #[cfg_attr(miri, ignore = "Miri's epoll is edge-triggered only")]
    fn wakes_racing_with_reset_are_never_lost() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let poller = Poller::new().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let wakers: Vec<_> = (0..2)
            .map(|_| {
                let waker = poller.waker();
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        waker.wake().unwrap();
                    }
                })
            })
            .collect();
        let mut events = vec![];
        let mut lost = false;
        for _ in 0..100_000 {
            let start = Instant::now();
            poller
                .wait(&mut events, Some(Duration::from_secs(2)))
                .unwrap();
            if start.elapsed() >= Duration::from_secs(2) {
                lost = true;
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        for thread in wakers {
            thread.join().unwrap();
        }
        assert!(
            !lost,
            "a wait outlived its time-out while other threads kept waking it"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri's epoll is edge-triggered only")]
    fn wakes_coalesce() {
        let poller = Poller::new().unwrap();
        let waker = poller.waker();
        for _ in 0..100 {
            waker.wake().unwrap();
        }
        let mut events = vec![];
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        let start = Instant::now();
        poller
            .wait(&mut events, Some(Duration::from_millis(10)))
            .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(10));
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri's epoll is edge-triggered only")]
    fn bad_fd_is_an_error_not_a_panic() {
        let poller = Poller::new().unwrap();
        let err = poller.register(-1, 1, Interest::READABLE).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        let err = poller.deregister(12345).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }
}
