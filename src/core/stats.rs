//! The loop's counters, always on: what `loop.stats()` reports.
//!
//! They are plain integers updated by the loop's one thread, in ticks (`core::ticks`) where they
//! measure time; the loop layer converts them when it reports. The lag histograms have fixed
//! log-scale buckets in nanoseconds, so two snapshots, or two loops, compare bucket by bucket:
//! bucket 0 holds waits under 2^10 ns (about 1 µs), bucket `i` from 1 on those in
//! [2^(9+i), 2^(10+i)) ns, and the last one everything from 2^(9+LAG_BUCKETS-1) ns (about 17 s)
//! on. Finding a bucket is a shift and a leading-zero count.

/// How many buckets a lag histogram has.
pub const LAG_BUCKETS: usize = 26;

/// The upper edge of bucket `i` in nanoseconds (`None` for the last, unbounded one).
pub fn bucket_upper_ns(i: usize) -> Option<u64> {
    (i + 1 < LAG_BUCKETS).then(|| 1u64 << (10 + i))
}

/// The bucket of a wait of `ns` nanoseconds.
#[inline(always)]
pub fn bucket_of(ns: u64) -> usize {
    ((64 - (ns >> 10).leading_zeros()) as usize).min(LAG_BUCKETS - 1)
}

#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Histogram {
    pub counts: [u64; LAG_BUCKETS],
}

impl Histogram {
    #[inline(always)]
    pub fn record_ns(&mut self, ns: u64) {
        self.counts[bucket_of(ns)] += 1;
    }
}

/// Counts since the loop was made or last reset. `*_ticks` are durations in ticks.
#[derive(Clone, Default, Debug)]
pub struct Counters {
    /// Callbacks run (not those skipped as cancelled), timers included.
    pub callbacks: u64,
    /// Readiness events the poller reported for registered fds.
    pub io_events: u64,
    /// Waits in the poller, including those that did not block.
    pub polls: u64,
    pub timers_scheduled: u64,
    /// Timers whose callback ran.
    pub timers_fired: u64,
    /// Cancelled timers that left the queue without running.
    pub timers_cancelled: u64,
    /// Callbacks that took `slow_callback_duration` or longer.
    pub slow_callbacks: u64,
    /// Time running callbacks.
    pub busy_ticks: u64,
    /// Time waiting in the poller.
    pub idle_ticks: u64,
    /// The longest callback's duration.
    pub longest_ticks: u64,
    /// How late timers ran past their deadline.
    pub timer_lag: Histogram,
    /// How long ready callbacks waited in the queue before they ran.
    pub ready_wait: Histogram,
}

impl Counters {
    /// Records a callback that ran for `took` ticks; returns whether it is the longest so far.
    #[inline(always)]
    pub fn callback_ran(&mut self, took: u64) -> bool {
        self.callbacks += 1;
        self.busy_ticks += took;
        if took > self.longest_ticks {
            self.longest_ticks = took;
            true
        } else {
            false
        }
    }

    /// Records one wait in the poller of `took` ticks that reported `events` fd events.
    pub fn polled(&mut self, took: u64, events: u64) {
        self.polls += 1;
        self.idle_ticks += took;
        self.io_events += events;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_double_from_one_microsecond() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1023), 0);
        assert_eq!(bucket_of(1024), 1);
        assert_eq!(bucket_of(2047), 1);
        assert_eq!(bucket_of(2048), 2);
        assert_eq!(bucket_of(u64::MAX), LAG_BUCKETS - 1);
        for i in 0..LAG_BUCKETS - 1 {
            let upper = bucket_upper_ns(i).unwrap_or(0);
            assert_eq!(bucket_of(upper - 1), i);
            assert_eq!(bucket_of(upper), i + 1);
        }
        assert_eq!(bucket_upper_ns(LAG_BUCKETS - 1), None);
    }

    #[test]
    fn the_longest_callback_is_kept() {
        let mut c = Counters::default();
        assert!(c.callback_ran(5));
        assert!(!c.callback_ran(3));
        assert!(c.callback_ran(9));
        assert!(!c.callback_ran(9));
        assert_eq!((c.callbacks, c.busy_ticks, c.longest_ticks), (4, 26, 9));
        c.polled(7, 2);
        c.polled(1, 0);
        assert_eq!((c.polls, c.idle_ticks, c.io_events), (2, 8, 2));
        let mut h = Histogram::default();
        h.record_ns(500);
        h.record_ns(3000);
        assert_eq!(h.counts[0] + h.counts[2], 2);
    }
}
