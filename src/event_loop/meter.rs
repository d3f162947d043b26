//! The loop's own meter: the counters `loop.stats()` reports (`core::stats`), the slow-callback
//! handler, and the longest callback's repr.
//!
//! Always on, so it must cost little: one tick (`core::ticks`) is read per callback, and the end
//! of one callback is the start of the next (what the loop does between two callbacks counts as
//! the later one's time). A callback that takes `slow_callback_duration` or longer, or longer
//! than any before it, takes a cold path that may call Python (the handler, `repr`); the hot
//! path never does. The thread CPU clock is a system call, so it is read around each callback
//! only while a slow-callback handler is set.
//!
//! A tracer (`tracer.rs`), when attached, is handed each callback, poll and iteration start;
//! without one, that costs one flag test per callback, next to the counters it updates.
//!
//! Built without the `counters` feature (for measuring what they cost), every entry here does
//! nothing and `stats()` raises `NotImplementedError`.

use pyo3::exceptions::{PyNotImplementedError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::handle::Handle;
use super::hooks;
use super::tracer::Tracer;
use crate::core::clock::thread_cpu_seconds;
use crate::core::stats::{bucket_upper_ns, Counters, LAG_BUCKETS};
use crate::core::sys::current_thread_id;
use crate::core::ticks;
use crate::core::watchdog::{self, Beacon, IDLE};
use crate::cpython::gil::{GilCell, GilSlot};

/// What the hot path touches.
#[derive(Default)]
struct Hot {
    counters: Counters,
    /// `slow_callback_duration` in ticks.
    slow_ticks: u64,
    /// The tick from which the counters count (made, or last reset).
    since: u64,
    /// Whether to read the thread CPU clock around each callback (a handler is set).
    cpu: bool,
    /// Whether a tracer is attached (`Cold::tracer`).
    tracing: bool,
}

/// What only the cold paths touch.
#[derive(Default)]
struct Cold {
    longest_repr: Option<Py<PyAny>>,
    slow_handler: Option<Py<PyAny>>,
    tracer: Option<Py<Tracer>>,
}

pub struct Meter {
    hot: GilSlot<Hot>,
    cold: GilCell<Cold>,
    /// The end of the last callback or poll (`IDLE` while polling or not running), where the
    /// watchdog's thread can read it (`core::watchdog`).
    beacon: Arc<Beacon>,
    clock: ticks::Clock,
}

impl Meter {
    pub fn new(slow_callback_duration: f64) -> Meter {
        ticks::calibrate();
        let now = ticks::now();
        Meter {
            hot: GilSlot::new(Hot {
                since: now,
                slow_ticks: ticks::from_seconds(slow_callback_duration),
                ..Hot::default()
            }),
            cold: GilCell::default(),
            beacon: watchdog::new_beacon(),
            clock: ticks::clock(),
        }
    }

    /// The id of this loop's beacon, by which the watchdog names it.
    pub fn beacon_id(&self) -> u64 {
        self.beacon.id
    }

    /// Runs `f` on the hot state.
    #[inline(always)]
    fn hot<R>(&self, py: Python<'_>, f: impl FnOnce(&mut Hot) -> R) -> R {
        // SAFETY: every closure given here only does arithmetic on the counters.
        unsafe { self.hot.with(py, f) }
    }

    /// The current tick, or 0 when built without counters.
    #[inline(always)]
    pub fn now(&self) -> u64 {
        if cfg!(feature = "counters") {
            self.clock.now()
        } else {
            0
        }
    }

    /// The end of the last callback or poll: where the next callback's time starts.
    #[inline(always)]
    pub fn last(&self, _py: Python<'_>) -> u64 {
        self.beacon.busy_since()
    }

    /// The loop starts running: what happened while it was not is nobody's time.
    pub fn resume(&self, _py: Python<'_>) -> u64 {
        let now = self.now();
        self.beacon
            .thread
            .store(current_thread_id(), Ordering::Relaxed);
        self.beacon.set_busy_since(now);
        now
    }

    /// The loop stops running, or waits for I/O: not stalled, whatever the time.
    #[inline(always)]
    pub fn idle(&self) {
        self.beacon.set_busy_since(IDLE);
    }

    pub fn set_slow_callback_duration(&self, py: Python<'_>, seconds: f64) {
        self.hot(py, |h| h.slow_ticks = ticks::from_seconds(seconds));
    }

    /// A wait in the poller from `before` to `after` that reported `events` fd events.
    #[inline(always)]
    pub fn polled(&self, py: Python<'_>, before: u64, after: u64, events: u64) {
        if cfg!(feature = "counters") {
            self.beacon.set_busy_since(after);
            let tracing = self.hot(py, |h| {
                h.counters.polled(after.saturating_sub(before), events);
                h.tracing
            });
            if tracing {
                self.trace(py, |t| t.poll(py, before, after, events));
            }
        }
    }

    /// An iteration begins at `at` with `ready` callbacks to run.
    #[inline(always)]
    pub fn iteration(&self, py: Python<'_>, at: u64, ready: usize) {
        if cfg!(feature = "counters") && self.hot(py, |h| h.tracing) {
            self.trace(py, |t| t.iteration(py, at, ready));
        }
    }

    /// The callback a handle is about to run, if a tracer wants it: taken before the run, as
    /// the run may cancel the handle and drop it.
    #[inline(always)]
    pub fn traced_callback<'py>(&self, handle: &Bound<'py, Handle>) -> Option<Bound<'py, PyAny>> {
        if cfg!(feature = "counters") && self.hot(handle.py(), |h| h.tracing) {
            handle.get().callback.callback(handle.py())
        } else {
            None
        }
    }

    /// Records a traced callback's run. The program goes on if that fails (a name that cannot
    /// be read, say): the error goes to `sys.unraisablehook`, as a failing `__del__`'s does.
    #[cold]
    pub fn trace_callback(&self, callback: &Bound<'_, PyAny>, start: u64, end: u64, timer: bool) {
        let py = callback.py();
        if let Some(Err(err)) = self.trace(py, |t| t.callback(callback, start, end, timer)) {
            err.write_unraisable(py, Some(callback));
        }
    }

    /// A transport moved `nbytes` (written if `wrote`, else read), if a tracer is attached.
    #[inline(always)]
    pub fn transferred(&self, py: Python<'_>, id: u32, wrote: bool, nbytes: usize) {
        if cfg!(feature = "counters") && self.hot(py, |h| h.tracing) {
            let now = self.now();
            self.trace(py, |t| t.transfer(py, now, id, wrote, nbytes));
        }
    }

    #[cold]
    fn trace<R>(&self, py: Python<'_>, f: impl FnOnce(&Tracer) -> R) -> Option<R> {
        let tracer = self.cold.borrow(py).tracer.as_ref()?.clone_ref(py);
        Some(f(tracer.get()))
    }

    /// Attaches a tracer (None detaches).
    pub fn set_tracer(&self, py: Python<'_>, tracer: Option<Py<Tracer>>) -> PyResult<()> {
        if !cfg!(feature = "counters") {
            return Err(PyNotImplementedError::new_err(
                "ferroloop was built without its counters, which tracing needs",
            ));
        }
        let on = tracer.is_some();
        let old = std::mem::replace(&mut self.cold.borrow_mut(py).tracer, tracer);
        self.hot(py, |h| h.tracing = on);
        drop(old);
        Ok(())
    }

    pub fn tracer(&self, py: Python<'_>) -> Option<Py<Tracer>> {
        self.cold
            .borrow(py)
            .tracer
            .as_ref()
            .map(|t| t.clone_ref(py))
    }

    #[inline(always)]
    pub fn timer_scheduled(&self, py: Python<'_>) {
        if cfg!(feature = "counters") {
            self.hot(py, |h| h.counters.timers_scheduled += 1);
        }
    }

    #[inline(always)]
    pub fn timers_cancelled(&self, py: Python<'_>, n: usize) {
        if cfg!(feature = "counters") {
            self.hot(py, |h| h.counters.timers_cancelled += n as u64);
        }
    }

    /// A ready callback that waited since `since` starts at `start`.
    #[inline(always)]
    pub fn ready_waited(&self, py: Python<'_>, since: u64, start: u64) {
        if cfg!(feature = "counters") {
            let ns = self.clock.to_ns(start.saturating_sub(since));
            self.hot(py, |h| h.counters.ready_wait.record_ns(ns));
        }
    }

    /// A timer due at `when` (loop time) starts now, `late` seconds after it: `now - when` at
    /// the iteration's clock reading, plus the ticks since.
    #[inline(always)]
    pub fn timer_fired(&self, py: Python<'_>, late: f64, since_reading: u64) {
        if cfg!(feature = "counters") {
            let ns = (late.max(0.0) * 1e9) as u64 + self.clock.to_ns(since_reading);
            self.hot(py, |h| {
                h.counters.timers_fired += 1;
                h.counters.timer_lag.record_ns(ns);
            });
        }
    }

    /// Whether a callback's run has more to record than the counters: the CPU time (a
    /// slow-callback handler is set) or the callback itself (a tracer is attached).
    #[inline(always)]
    pub fn observed(&self, py: Python<'_>) -> bool {
        self.hot(py, |h| h.cpu | h.tracing)
    }

    /// The thread's CPU time before a callback, if a slow-callback handler wants it.
    #[inline(always)]
    pub fn cpu_before(&self, py: Python<'_>) -> Option<f64> {
        if self.hot(py, |h| h.cpu) {
            Some(thread_cpu_seconds())
        } else {
            None
        }
    }

    /// A callback that ran from `start` to `end`; one that took `slow_callback_duration` or more
    /// goes to the slow-callback handler.
    #[inline(always)]
    pub fn callback_ran(
        &self,
        handle: &Bound<'_, Handle>,
        event_loop: &Bound<'_, PyAny>,
        start: u64,
        end: u64,
        cpu_before: Option<f64>,
    ) -> PyResult<()> {
        if !cfg!(feature = "counters") {
            return Ok(());
        }
        let py = handle.py();
        let took = end.saturating_sub(start);
        self.beacon.set_busy_since(end);
        let (longest, slow) = self.hot(py, |h| {
            let longest = h.counters.callback_ran(took);
            let slow = took >= h.slow_ticks;
            if slow {
                h.counters.slow_callbacks += 1;
            }
            (longest, slow)
        });
        if longest {
            self.note_longest(handle);
        }
        if !slow {
            return Ok(());
        }
        self.report_slow(handle, event_loop, ticks::to_seconds(took), cpu_before)
    }

    #[cold]
    fn note_longest(&self, handle: &Bound<'_, Handle>) {
        let py = handle.py();
        let shown = match handle.repr() {
            Ok(text) => text.into_any().unbind(),
            Err(_) => pyo3::types::PyString::new(py, "<Handle: repr failed>")
                .into_any()
                .unbind(),
        };
        let old = self.cold.borrow_mut(py).longest_repr.replace(shown);
        drop(old);
    }

    #[cold]
    fn report_slow(
        &self,
        handle: &Bound<'_, Handle>,
        event_loop: &Bound<'_, PyAny>,
        seconds: f64,
        cpu_before: Option<f64>,
    ) -> PyResult<()> {
        let py = handle.py();
        let Some(handler) = self
            .cold
            .borrow(py)
            .slow_handler
            .as_ref()
            .map(|h| h.clone_ref(py))
        else {
            return Ok(());
        };
        let cpu = cpu_before.map(|before| thread_cpu_seconds() - before);
        hooks::call(
            py,
            "report_slow_callback",
            (event_loop, handler, handle, seconds, cpu),
        )?;
        Ok(())
    }

    pub fn set_slow_handler(
        &self,
        py: Python<'_>,
        handler: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let handler = handler.filter(|h| !h.is_none());
        if let Some(h) = &handler {
            if !h.is_callable() {
                return Err(PyTypeError::new_err(format!(
                    "A callable object or None is expected, got {}",
                    h.repr()?
                )));
            }
        }
        let cpu = handler.is_some();
        let old = std::mem::replace(
            &mut self.cold.borrow_mut(py).slow_handler,
            handler.map(Bound::unbind),
        );
        self.hot(py, |h| h.cpu = cpu);
        drop(old);
        Ok(())
    }

    pub fn slow_handler(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.cold
            .borrow(py)
            .slow_handler
            .as_ref()
            .map(|h| h.clone_ref(py))
    }

    /// The counters as a tuple (`_core.pyi`, `LoopCore._stats`), reset after if `reset`.
    pub fn snapshot<'py>(&self, py: Python<'py>, reset: bool) -> PyResult<Bound<'py, PyTuple>> {
        if !cfg!(feature = "counters") {
            return Err(PyNotImplementedError::new_err(
                "ferroloop was built without its counters",
            ));
        }
        let now = ticks::now();
        let (c, since) = self.hot(py, |h| {
            let taken = (h.counters.clone(), h.since);
            if reset {
                h.counters = Counters::default();
                h.since = now;
            }
            taken
        });
        let longest_repr = if reset {
            self.cold.borrow_mut(py).longest_repr.take()
        } else {
            self.cold
                .borrow(py)
                .longest_repr
                .as_ref()
                .map(|r| r.clone_ref(py))
        };
        let bounds: Vec<Option<f64>> = (0..LAG_BUCKETS)
            .map(|i| bucket_upper_ns(i).map(|ns| ns as f64 * 1e-9))
            .collect();
        let counts = (
            c.callbacks,
            c.io_events,
            c.polls,
            c.timers_scheduled,
            c.timers_fired,
            c.timers_cancelled,
            c.slow_callbacks,
        );
        let times = (
            ticks::to_seconds(c.busy_ticks),
            ticks::to_seconds(c.idle_ticks),
            ticks::to_seconds(now.saturating_sub(since)),
            ticks::to_seconds(c.longest_ticks),
        );
        (
            counts,
            times,
            longest_repr,
            bounds,
            c.timer_lag.counts.to_vec(),
            c.ready_wait.counts.to_vec(),
        )
            .into_pyobject(py)
    }

    /// For `__traverse__`.
    pub fn visit(&self, visit: &pyo3::gc::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        if let Some(cold) = self.cold.try_borrow_in_gc() {
            visit.call(&cold.slow_handler)?;
            visit.call(&cold.tracer)?;
        }
        Ok(())
    }

    /// For `__clear__`: the handler may hold the loop.
    pub fn clear(&self, py: Python<'_>) {
        let old = {
            let mut cold = self.cold.borrow_mut(py);
            (cold.slow_handler.take(), cold.tracer.take())
        };
        self.hot(py, |h| {
            h.cpu = false;
            h.tracing = false;
        });
        drop(old);
    }
}
