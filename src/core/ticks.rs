//! A cheap clock for the always-on counters: one reading per callback run.
//!
//! A callback can cost as little as 150 ns, and `clock_gettime` costs about 28 ns here, which is
//! too much to pay on every one. On x86-64, where Linux keeps time with the TSC (its clocksource
//! is `tsc`: constant rate, synchronised across cores), the time-stamp counter is read directly
//! (about a third of that, and most of it overlaps the callback's own work). Elsewhere, or when
//! the kernel does not trust the TSC, a tick is a nanosecond of `CLOCK_MONOTONIC`.
//!
//! Ticks become nanoseconds through a rate measured once per process: the TSC against
//! `CLOCK_MONOTONIC` over 200 µs (both read to the nanosecond, so the rate is good to about 1 part
//! in 10,000), taken the first time a loop is made.

use std::sync::OnceLock;

use super::clock::monotonic_ns;

struct Source {
    tsc: bool,
    ns_per_tick: f64,
    /// `ns_per_tick` in 32.32 fixed point, for the hot conversion.
    ns_per_tick_fixed: u64,
}

impl Source {
    fn new(tsc: bool, ns_per_tick: f64) -> Source {
        Source {
            tsc,
            ns_per_tick,
            ns_per_tick_fixed: (ns_per_tick * 4_294_967_296.0) as u64,
        }
    }
}

static SOURCE: OnceLock<Source> = OnceLock::new();

const CALIBRATION_NS: u64 = 200_000;

#[cfg(all(target_arch = "x86_64", not(miri)))]
fn tsc() -> u64 {
    // SAFETY: RDTSC exists on every x86-64 CPU and only reads a counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Elsewhere, and under Miri (which cannot read the TSC), ticks are the monotonic clock's
/// nanoseconds, as where the kernel's clock source is not the TSC.
#[cfg(not(all(target_arch = "x86_64", not(miri))))]
fn tsc() -> u64 {
    monotonic_ns()
}

fn kernel_trusts_tsc() -> bool {
    cfg!(all(target_arch = "x86_64", not(miri)))
        && std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        )
        .is_ok_and(|name| name.trim() == "tsc")
}

fn measure() -> Source {
    if !kernel_trusts_tsc() {
        return Source::new(false, 1.0);
    }
    let (ns0, t0) = (monotonic_ns(), tsc());
    let (mut ns1, mut t1) = (ns0, t0);
    while ns1 - ns0 < CALIBRATION_NS {
        (ns1, t1) = (monotonic_ns(), tsc());
    }
    match t1.checked_sub(t0) {
        Some(ticks) if ticks > 0 => Source::new(true, (ns1 - ns0) as f64 / ticks as f64),
        _ => Source::new(false, 1.0),
    }
}

fn source() -> &'static Source {
    SOURCE.get_or_init(measure)
}

/// The tick source, read once, for a hot path to keep beside its own data: reading and
/// converting through it skips the check that the rate is measured.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    tsc: bool,
    ns_per_tick_fixed: u64,
}

impl Clock {
    #[inline(always)]
    pub fn now(&self) -> u64 {
        if self.tsc {
            tsc()
        } else {
            monotonic_ns()
        }
    }

    #[inline(always)]
    pub fn to_ns(&self, ticks: u64) -> u64 {
        ((u128::from(ticks) * u128::from(self.ns_per_tick_fixed)) >> 32) as u64
    }
}

/// The clock, measuring its rate first if no one has yet.
pub fn clock() -> Clock {
    let src = source();
    Clock {
        tsc: src.tsc,
        ns_per_tick_fixed: src.ns_per_tick_fixed,
    }
}

/// Measures the rate now rather than at the first reading (a loop calls it when it is made).
pub fn calibrate() {
    source();
}

/// The current tick; only differences between two readings mean anything.
#[inline(always)]
pub fn now() -> u64 {
    match SOURCE.get() {
        Some(src) if src.tsc => tsc(),
        Some(_) => monotonic_ns(),
        None => {
            calibrate();
            now()
        }
    }
}

/// Nanoseconds in `ticks`.
#[inline(always)]
pub fn to_ns(ticks: u64) -> u64 {
    ((u128::from(ticks) * u128::from(source().ns_per_tick_fixed)) >> 32) as u64
}

/// Seconds in `ticks`.
pub fn to_seconds(ticks: u64) -> f64 {
    ticks as f64 * source().ns_per_tick * 1e-9
}

/// Ticks in `seconds` (0 for a negative or NaN duration).
pub fn from_seconds(seconds: f64) -> u64 {
    let ticks = seconds * 1e9 / source().ns_per_tick;
    if ticks.is_nan() || ticks <= 0.0 {
        0
    } else {
        ticks as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_measure_a_sleep() {
        calibrate();
        let start = now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let took = to_seconds(now().wrapping_sub(start));
        assert!((0.019..0.5).contains(&took), "{took}");
    }

    #[test]
    fn a_kept_clock_reads_and_converts_as_the_module_does() {
        let kept = clock();
        let start = kept.now();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let took = kept.now() - start;
        assert_eq!(kept.to_ns(took), to_ns(took));
        assert!(kept.to_ns(took) >= 4_000_000);
    }

    #[test]
    fn seconds_round_trip() {
        let ticks = from_seconds(0.25);
        assert!((to_seconds(ticks) - 0.25).abs() < 1e-6);
        assert_eq!(from_seconds(-1.0), 0);
        assert_eq!(from_seconds(f64::NAN), 0);
        let ns = to_ns(from_seconds(1e-3));
        assert!((999_000..=1_001_000).contains(&ns), "{ns}");
    }
}
