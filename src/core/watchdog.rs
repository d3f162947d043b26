//! The stall watchdog: a native thread that notices, while it happens, that a loop has been
//! inside one callback for longer than a threshold.
//!
//! Each loop publishes one word, its `Beacon`'s `busy_since`: the tick at which the callback
//! now running began (the end of the one before it), or `IDLE` while the loop waits in the
//! poller or is not running. The loop writes that word anyway, for its counters (`last` in the
//! meter), so watching costs the loop nothing per callback: the watchdog only reads it, every
//! `period`, from its own thread, without the GIL.
//!
//! When a beacon has shown the same busy tick for `threshold` or longer, the watchdog writes a
//! line to the report fd and sends the loop thread a signal, whose handler (faulthandler's,
//! registered by `ferroloop.watchdog` for that fd) writes the thread's Python stack from inside
//! the stalled thread. That is faulthandler's technique: it reads the frames without the GIL,
//! so it works even while C code holds it. A stall is reported once; when the loop moves on,
//! the watchdog writes how long it lasted, and a `Stall` goes to whoever waits in `next_stall`
//! (the Python side, for the running task's name and the user's callback).

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use super::ticks;

/// `busy_since` while the loop waits for I/O or is not running.
pub const IDLE: u64 = 0;

pub struct Beacon {
    pub id: u64,
    /// The tick the running callback began at, or `IDLE`.
    pub busy_since: AtomicU64,
    /// The loop thread's `pthread_t`, while it runs.
    pub thread: AtomicU64,
}

impl Beacon {
    #[inline(always)]
    pub fn busy_since(&self) -> u64 {
        self.busy_since.load(Ordering::Relaxed)
    }

    #[inline(always)]
    pub fn set_busy_since(&self, tick: u64) {
        self.busy_since.store(tick, Ordering::Relaxed);
    }
}

static BEACONS: Mutex<Vec<Weak<Beacon>>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The registry's lock, held by the thread that forks from `fork_prepare` to `fork_done`.
    static HELD: RefCell<Option<MutexGuard<'static, Vec<Weak<Beacon>>>>> = const { RefCell::new(None) };
}

/// Before `fork()`: takes the registry's lock, so that no other thread (the watchdog's, in the
/// middle of a scan) holds it when the process is copied. A child whose copy of the lock was
/// held would block at its first loop.
pub fn fork_prepare() {
    let guard = BEACONS.lock().unwrap_or_else(|e| e.into_inner());
    HELD.with(|held| *held.borrow_mut() = Some(guard));
}

/// After `fork()`, in the parent and in the child: lets the lock go.
pub fn fork_done() {
    HELD.with(|held| held.borrow_mut().take());
}

/// A new beacon, watched by any watchdog that runs while it lives.
pub fn new_beacon() -> Arc<Beacon> {
    let beacon = Arc::new(Beacon {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        busy_since: AtomicU64::new(IDLE),
        thread: AtomicU64::new(0),
    });
    let mut all = BEACONS.lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|b| b.strong_count() > 0);
    all.push(Arc::downgrade(&beacon));
    beacon
}

fn live_beacons() -> Vec<Arc<Beacon>> {
    let all = BEACONS.lock().unwrap_or_else(|e| e.into_inner());
    all.iter().filter_map(Weak::upgrade).collect()
}

/// Whether beacon `id` still shows the callback that began at `since`.
pub fn still_busy(id: u64, since: u64) -> bool {
    live_beacons()
        .iter()
        .any(|b| b.id == id && b.busy_since() == since)
}

/// A stall, as the watchdog saw it when it reported it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stall {
    pub beacon: u64,
    pub since: u64,
    pub thread: u64,
    pub seconds: f64,
}

/// What a stall does besides being queued: write its lines, signal the stalled thread.
pub trait Report: Send + 'static {
    fn began(&mut self, stall: &Stall);
    fn ended(&mut self, stall: &Stall, seconds: f64);
}

/// The watchdog's scan: the stalls that begin now (each once), and those reported that ended.
#[derive(Default)]
pub struct Scanner {
    reported: HashMap<u64, Stall>,
}

impl Scanner {
    pub fn scan(
        &mut self,
        beacons: &[Arc<Beacon>],
        now: u64,
        threshold: u64,
        report: &mut dyn Report,
    ) -> Vec<Stall> {
        let mut begun = Vec::new();
        for beacon in beacons {
            let since = beacon.busy_since();
            if let Some(old) = self.reported.get(&beacon.id).copied() {
                if old.since == since {
                    continue;
                }
                self.reported.remove(&beacon.id);
                report.ended(&old, ticks::to_seconds(now.saturating_sub(old.since)));
            }
            if since == IDLE || now.saturating_sub(since) < threshold {
                continue;
            }
            let stall = Stall {
                beacon: beacon.id,
                since,
                thread: beacon.thread.load(Ordering::Relaxed),
                seconds: ticks::to_seconds(now - since),
            };
            self.reported.insert(beacon.id, stall);
            report.began(&stall);
            begun.push(stall);
        }
        let live: Vec<u64> = beacons.iter().map(|b| b.id).collect();
        self.reported.retain(|id, _| live.contains(id));
        begun
    }
}

/// Writes the watchdog's lines to an fd and signals the stalled thread for its stack.
pub struct FdReport {
    pub fd: RawFd,
    /// 0: no signal (no stack).
    pub signal: i32,
}

impl FdReport {
    fn write(&self, text: &str) {
        if self.fd < 0 {
            return;
        }
        let mut rest = text.as_bytes();
        while !rest.is_empty() {
            // SAFETY: `rest` is a valid buffer of `rest.len()` bytes; a bad fd only fails.
            let n = unsafe { libc::write(self.fd, rest.as_ptr().cast(), rest.len()) };
            if n <= 0 {
                if n < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                    continue;
                }
                return;
            }
            rest = &rest[n as usize..];
        }
    }
}

impl Report for FdReport {
    fn began(&mut self, stall: &Stall) {
        self.write(&format!(
            "ferroloop watchdog: the event loop in thread {:#x} has been running one callback \
             for {:.3} s; its stack:\n",
            stall.thread, stall.seconds
        ));
        if self.signal != 0 && stall.thread != 0 {
            // SAFETY: `thread` is the pthread_t of a loop thread, stored while it runs; a thread
            // that has since exited makes pthread_kill fail with ESRCH, which is ignored.
            unsafe { libc::pthread_kill(stall.thread as libc::pthread_t, self.signal) };
        }
    }

    fn ended(&mut self, stall: &Stall, seconds: f64) {
        self.write(&format!(
            "ferroloop watchdog: the event loop in thread {:#x} went on after {:.3} s\n",
            stall.thread, seconds
        ));
    }
}

struct Shared {
    /// `stopped`, and the stalls not yet taken by `next_stall`.
    state: Mutex<(bool, Vec<Stall>)>,
    changed: Condvar,
}

/// Waits for the stalls a watchdog reports.
pub struct Waiter(Arc<Shared>);

impl Waiter {
    /// The next stall reported, waiting for one; None once the watchdog stops.
    pub fn next_stall(&self) -> Option<Stall> {
        let mut s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if !s.1.is_empty() {
                return Some(s.1.remove(0));
            }
            if s.0 {
                return None;
            }
            s = self.0.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A running watchdog thread; stopped when dropped.
pub struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    pub fn start(threshold: Duration, mut report: Box<dyn Report>) -> std::io::Result<Watchdog> {
        ticks::calibrate();
        let shared = Arc::new(Shared {
            state: Mutex::new((false, Vec::new())),
            changed: Condvar::new(),
        });
        let period = (threshold / 4).clamp(Duration::from_millis(1), Duration::from_millis(100));
        let threshold_ticks = ticks::from_seconds(threshold.as_secs_f64()).max(1);
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("ferroloop-watchdog".into())
            .spawn(move || {
                let mut scanner = Scanner::default();
                loop {
                    let guard = theirs.state.lock().unwrap_or_else(|e| e.into_inner());
                    let (guard, _) = theirs
                        .changed
                        .wait_timeout_while(guard, period, |s| !s.0)
                        .unwrap_or_else(|e| e.into_inner());
                    if guard.0 {
                        drop(guard);
                        // The ends of the stalls reported, not new ones.
                        let (beacons, now) = (live_beacons(), ticks::now());
                        scanner.scan(&beacons, now, u64::MAX, report.as_mut());
                        return;
                    }
                    drop(guard);
                    let begun = scanner.scan(
                        &live_beacons(),
                        ticks::now(),
                        threshold_ticks,
                        report.as_mut(),
                    );
                    if !begun.is_empty() {
                        let mut s = theirs.state.lock().unwrap_or_else(|e| e.into_inner());
                        s.1.extend(begun);
                        theirs.changed.notify_all();
                    }
                }
            })?;
        Ok(Watchdog {
            shared,
            thread: Some(thread),
        })
    }

    /// A handle to wait for stalls with, which does not hold the watchdog.
    pub fn waiter(&self) -> Waiter {
        Waiter(Arc::clone(&self.shared))
    }

    /// The next stall reported, waiting for one; None once the watchdog stops.
    pub fn next_stall(&self) -> Option<Stall> {
        self.waiter().next_stall()
    }

    pub fn stop(&mut self) {
        {
            let mut s = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            s.0 = true;
            s.1.clear();
            self.shared.changed.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Log(Vec<String>);

    impl Report for Log {
        fn began(&mut self, stall: &Stall) {
            self.0.push(format!("began {}", stall.since));
        }
        fn ended(&mut self, stall: &Stall, _seconds: f64) {
            self.0.push(format!("ended {}", stall.since));
        }
    }

    fn beacon(since: u64) -> Arc<Beacon> {
        let b = new_beacon();
        b.set_busy_since(since);
        b
    }

    #[test]
    fn a_stall_is_reported_once_then_its_end() {
        let b = beacon(100);
        let mut scanner = Scanner::default();
        let mut log = Log::default();
        let beacons = [Arc::clone(&b)];
        assert!(scanner.scan(&beacons, 150, 100, &mut log).is_empty());
        assert_eq!(scanner.scan(&beacons, 200, 100, &mut log).len(), 1);
        assert!(scanner.scan(&beacons, 900, 100, &mut log).is_empty());
        b.set_busy_since(950);
        assert!(scanner.scan(&beacons, 960, 100, &mut log).is_empty());
        assert_eq!(log.0, vec!["began 100", "ended 100"]);
    }

    #[test]
    fn idle_loops_never_stall_and_each_stall_is_its_own() {
        let idle = beacon(IDLE);
        let busy = beacon(10);
        let mut scanner = Scanner::default();
        let mut log = Log::default();
        let beacons = [Arc::clone(&idle), Arc::clone(&busy)];
        let begun = scanner.scan(&beacons, 1_000_000, 100, &mut log);
        assert_eq!(begun.len(), 1);
        assert_eq!(begun[0].beacon, busy.id);
        busy.set_busy_since(2_000_000);
        scanner.scan(&beacons, 2_000_050, 100, &mut log);
        scanner.scan(&beacons, 2_000_100, 100, &mut log);
        assert_eq!(log.0, vec!["began 10", "ended 10", "began 2000000"]);
    }

    #[test]
    fn the_registry_is_free_again_after_a_fork() {
        fork_prepare();
        fork_done();
        drop(new_beacon());
    }

    #[test]
    fn still_busy_follows_the_beacon() {
        let b = beacon(42);
        assert!(still_busy(b.id, 42));
        b.set_busy_since(43);
        assert!(!still_busy(b.id, 42));
        assert!(!still_busy(u64::MAX, 43));
    }

    #[test]
    fn the_thread_reports_a_stall_and_stops() {
        let b = beacon(0);
        b.set_busy_since(ticks::now().max(1));
        let mut dog = Watchdog::start(
            Duration::from_millis(5),
            Box::new(FdReport { fd: -1, signal: 0 }),
        )
        .unwrap();
        let stall = dog.next_stall().unwrap();
        assert!(stall.seconds >= 0.004);
        dog.stop();
        assert_eq!(dog.next_stall(), None);
        drop(b);
    }
}
