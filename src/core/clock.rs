//! Monotonic time in seconds as `f64`, read from the same clock as Python's `time.monotonic()`
//! (`CLOCK_MONOTONIC` on Linux), so a deadline computed in Python with `loop.time() + delay`
//! means the same instant to the engine; and the calling thread's CPU time.

/// Reads `clock`, one of the two below, which always exist on Linux.
fn read(clock: libc::clockid_t) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the callers pass clocks that exist on Linux,
    // so the call cannot fail and the result is ignored.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts
}

fn seconds(ts: libc::timespec) -> f64 {
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Seconds since an arbitrary fixed point, never going backwards.
pub fn monotonic() -> f64 {
    seconds(read(libc::CLOCK_MONOTONIC))
}

/// `monotonic` in whole nanoseconds.
pub fn monotonic_ns() -> u64 {
    let ts = read(libc::CLOCK_MONOTONIC);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Seconds of CPU time the calling thread has used (a system call, unlike `monotonic`).
pub fn thread_cpu_seconds() -> f64 {
    seconds(read(libc::CLOCK_THREAD_CPUTIME_ID))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_backwards() {
        let mut last = monotonic();
        for _ in 0..crate::core::test_steps(10_000) {
            let now = monotonic();
            assert!(now >= last);
            last = now;
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri has no per-thread CPU clock to measure work with")]
    fn thread_cpu_time_grows_with_work_not_with_sleep() {
        let start = thread_cpu_seconds();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let slept = thread_cpu_seconds() - start;
        let spin_until = monotonic() + 0.03;
        while monotonic() < spin_until {}
        let worked = thread_cpu_seconds() - start - slept;
        assert!(slept < 0.02, "{slept}");
        assert!(worked > 0.0, "{worked}");
    }

    #[test]
    fn matches_std_instant_elapsed() {
        let start = monotonic();
        let instant = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let ours = monotonic() - start;
        let std = instant.elapsed().as_secs_f64();
        assert!((ours - std).abs() < 0.005, "{ours} vs {std}");
    }
}
