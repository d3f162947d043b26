//! Polling before sleeping: a wait that may block first polls without blocking, for a window that
//! adapts to how soon events have been coming.
//!
//! Why: a loop that sleeps in `epoll_wait` lets its CPU go idle, and waking it costs far more
//! than a poll. The CPU leaves its idle state (a virtual machine without guest halt polling
//! hands the CPU back to the host, and the wake-up is an interrupt between processors), then
//! the scheduler switches the loop's thread in. With one connection sending a request as soon as
//! it has the answer, that wake-up was most of each round trip on the 2-core benchmark machine:
//! polling for up to 50 µs first gave 1.7 to 2.7 times the requests per second, and less system
//! time per request, since the spin costs less than the wake-up it replaces.
//!
//! Polling burns CPU that another process could use, so the window adapts the way the kernel's
//! halt polling does (KVM's `halt_poll_ns`, the guest's cpuidle-haltpoll). It learns only from
//! waits the spin did not end:
//! - it starts closed: a loop spins only after waits ended by an event within `limit`;
//! - each such wait doubles the window (from `FIRST_WINDOW`) up to `limit`;
//! - a wait longer than `limit`, or one that its time-out ended, closes it: a loop woken only
//!   by its timers sleeps until they are due.
//!
//! A wait the spin ended leaves the window as it is, so it settles at the first doubling above
//! the usual gap between events rather than at the limit. An idle loop or one woken less often
//! than every `limit` stops spinning after one wait; while it spins, a loop spends at most the
//! window per wait, and only while events keep coming sooner than `limit`. A limit of zero turns
//! spinning off.
//!
//! Between polls the spinning thread yields its CPU (`sched_yield`), to whatever other thread is
//! ready to run there: when the peer the loop waits for shares its CPU (a client pinned to the
//! same one), spinning without yielding held the peer back until the window ran out (measured,
//! server and client on one CPU: 42k requests per second against 53k without spinning; 53k with
//! the yield). With no other thread ready the yield returns at once.
//!
//! Only the loop's thread waits; the atomics are there because the poller is shared with the
//! threads that wake it, and `Relaxed` is enough since no other memory hangs on these values.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The limit a new poller starts with.
pub const DEFAULT_LIMIT: Duration = Duration::from_micros(50);

/// The largest limit accepted.
pub const MAX_LIMIT: Duration = Duration::from_secs(1);

/// The window after the first short wait.
const FIRST_WINDOW: Duration = Duration::from_micros(10);

#[derive(Debug)]
pub struct Spin {
    limit_ns: AtomicU64,
    window_ns: AtomicU64,
}

impl Spin {
    pub fn new(limit: Duration) -> Spin {
        Spin {
            limit_ns: AtomicU64::new(nanos(limit)),
            window_ns: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> Duration {
        Duration::from_nanos(self.limit_ns.load(Ordering::Relaxed))
    }

    /// Sets the longest window; zero turns spinning off. The window closes, to learn anew.
    pub fn set_limit(&self, limit: Duration) {
        self.limit_ns.store(nanos(limit), Ordering::Relaxed);
        self.window_ns.store(0, Ordering::Relaxed);
    }

    /// How long a wait with this time-out polls before it blocks.
    pub fn window(&self, timeout: Option<Duration>) -> Duration {
        let window = self.window_ns.load(Ordering::Relaxed);
        let window = Duration::from_nanos(window.min(self.limit_ns.load(Ordering::Relaxed)));
        timeout.map_or(window, |t| window.min(t))
    }

    /// Learns from a wait the spin did not end: `waited` is its whole length, spin included,
    /// and `by_event` whether an event (not the time-out) ended it.
    pub fn learn(&self, waited: Duration, by_event: bool) {
        let limit = self.limit_ns.load(Ordering::Relaxed);
        let window = if by_event && nanos(waited) <= limit {
            let doubled = self.window_ns.load(Ordering::Relaxed).saturating_mul(2);
            doubled.max(nanos(FIRST_WINDOW)).min(limit)
        } else {
            0
        };
        self.window_ns.store(window, Ordering::Relaxed);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn closed_until_a_short_wait_ends_by_an_event() {
        let spin = Spin::new(50 * US);
        assert_eq!(spin.window(None), Duration::ZERO);
        spin.learn(30 * US, false);
        assert_eq!(
            spin.window(None),
            Duration::ZERO,
            "a time-out opens nothing"
        );
        spin.learn(30 * US, true);
        assert_eq!(spin.window(None), FIRST_WINDOW);
    }

    #[test]
    fn doubles_up_to_the_limit_and_closes_after_a_long_wait_or_a_time_out() {
        let spin = Spin::new(50 * US);
        let mut seen = vec![];
        for _ in 0..5 {
            spin.learn(40 * US, true);
            seen.push(spin.window(None));
        }
        assert_eq!(seen, [10 * US, 20 * US, 40 * US, 50 * US, 50 * US]);
        spin.learn(51 * US, true);
        assert_eq!(spin.window(None), Duration::ZERO);
        spin.learn(40 * US, true);
        assert_eq!(spin.window(None), FIRST_WINDOW);
        spin.learn(20 * US, false);
        assert_eq!(
            spin.window(None),
            Duration::ZERO,
            "a short time-out closes it too"
        );
    }

    #[test]
    fn never_longer_than_the_time_out_nor_the_limit() {
        let spin = Spin::new(50 * US);
        for _ in 0..4 {
            spin.learn(US, true);
        }
        assert_eq!(spin.window(None), 50 * US);
        assert_eq!(spin.window(Some(7 * US)), 7 * US);
        assert_eq!(spin.window(Some(Duration::ZERO)), Duration::ZERO);
        // A limit lowered while the window was being learnt (from another thread) bounds it.
        spin.limit_ns.store(nanos(20 * US), Ordering::Relaxed);
        assert_eq!(spin.window(None), 20 * US);
    }

    #[test]
    fn a_zero_limit_never_opens() {
        let spin = Spin::new(50 * US);
        spin.learn(US, true);
        spin.set_limit(Duration::ZERO);
        assert_eq!(spin.window(None), Duration::ZERO);
        for _ in 0..4 {
            spin.learn(Duration::ZERO, true);
        }
        assert_eq!(spin.window(None), Duration::ZERO);
        assert_eq!(spin.limit(), Duration::ZERO);
    }
}
