//! One iteration of the loop, as the stock `BaseEventLoop._run_once` defines it:
//!
//! 0. move the timers scheduled since the last iteration into the heap;
//! 1. drop cancelled timers from the head of the heap, or compact the whole heap when more than
//!    half of more than 100 timers are cancelled;
//! 2. wait for I/O: not at all if callbacks are ready (or the loop is stopping) and no fd nor
//!    signal handler is registered, for zero time if callbacks are ready and one is (so a busy
//!    loop still polls every iteration and neither I/O nor signals starve), else until the next
//!    timer is due
//!    (or forever). Only a wait that can block releases the GIL. A signal ends a wait: the wake-up
//!    socket given to `signal.set_wakeup_fd` becomes readable (or the wait fails with `EINTR`),
//!    and the Python signal handlers run at once, so Ctrl-C interrupts a waiting loop;
//! 3. queue the handles of ready fds;
//! 4. run the handles that were queued when this step began, in order, skipping cancelled ones,
//!    then every timer whose deadline had passed at that moment, in deadline order. What they
//!    schedule runs in the next iteration (new timers join the heap when it begins: step 0).
//!    One difference can be seen from Python: a due timer's private `_scheduled` flag turns
//!    false when the timer's turn comes, where the stock loop clears it for all of them before
//!    running the first callback.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::args::CallArgs;
use super::handle::Handle;
use super::hooks;
use super::io::Which;
use super::state::{LoopCore, LoopState, SIGNAL_TOKEN};
use super::tracer;
use crate::core::clock;
use crate::core::poller::{Event, Poller, Spun};
use crate::core::prefetch::prefetch;
use crate::core::sys::current_thread_id;
use crate::errors::{closed_loop_error, os_error};

const MIN_SCHEDULED_TIMERS: usize = 100;
const MIN_CANCELLED_FRACTION: f64 = 0.5;

pub fn run_forever(slf: &Bound<'_, LoopCore>) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    {
        let mut st = this.state.borrow_mut(py);
        // Checked again here, in one step with the GIL held: another thread may have closed the
        // loop since `run_forever` checked, and without a poller this loop would spin forever.
        if st.poller.is_none() {
            return Err(closed_loop_error());
        }
        st.thread_id = Some(current_thread_id());
        // What was queued while the loop was not running waits from now.
        let now = this.meter.resume(py);
        st.ready.stamp(now);
    }
    if tracer::session_active() && this.meter.tracer(py).is_none() {
        hooks::call(py, "trace_attach", (slf,))?;
    }
    let result = loop {
        if let Err(err) = run_once(slf) {
            break Err(err);
        }
        if this.state.borrow(py).stopping {
            break Ok(());
        }
    };
    this.meter.idle();
    let mut st = this.state.borrow_mut(py);
    st.stopping = false;
    st.thread_id = None;
    result
}

/// Removes cancelled timers (step 1); returns them, to be dropped once the borrow ends.
fn prune_timers(py: Python<'_>, st: &mut LoopState, this: &LoopCore) -> Vec<Py<Handle>> {
    let mut garbage = Vec::new();
    let total = st.timers.len();
    let cancelled = this.shared.cancelled_timers();
    if total > MIN_SCHEDULED_TIMERS && cancelled as f64 / total as f64 > MIN_CANCELLED_FRACTION {
        garbage = st.timers.retain(|h| !h.get().is_cancelled());
        for h in &garbage {
            h.get().unschedule();
        }
        this.shared.reset_cancelled();
        this.meter.timers_cancelled(py, garbage.len());
        return garbage;
    }
    while let Some((_, head)) = st.timers.peek() {
        if !head.get().is_cancelled() {
            break;
        }
        if let Some(h) = st.timers.pop() {
            timer_leaves(py, this, h.get());
            garbage.push(h);
        }
    }
    garbage
}

/// A timer leaving the heap (or the list of new timers): no longer scheduled, and, if it was
/// cancelled, no longer counted among the cancelled timers waiting there. Returns whether it
/// was cancelled.
fn timer_leaves(py: Python<'_>, this: &LoopCore, timer: &Handle) -> bool {
    timer.unschedule();
    let cancelled = timer.is_cancelled();
    if cancelled {
        this.shared.forget_cancelled(1);
        this.meter.timers_cancelled(py, 1);
    }
    cancelled
}

/// Moves the timers scheduled during the last iteration into the heap (step 0).
///
/// Each is tracked by the collector first if something outside the loop holds it. Timers are
/// created untracked (see `Handle::traverse_contents`), and one still referenced when it leaves
/// the heap must be tracked by then. Tracked when it leaves, in deadline order, which is not the
/// order timers sit in memory, a program holding many timer handles would have the collector walk
/// them in random memory order on every full collection, a cache miss per object per pass
/// (measured: 8x the stock loop's time per object); tracked here, it is in creation order, as
/// the stock loop's handles are. A timer already cancelled is dropped instead.
fn merge_new_timers(py: Python<'_>, this: &LoopCore) {
    let fresh = {
        let mut st = this.state.borrow_mut(py);
        if st.new_timers.is_empty() {
            return;
        }
        std::mem::take(&mut st.new_timers)
    };
    let mut cancelled = Vec::new();
    let mut live = Vec::with_capacity(fresh.len());
    for (when, handle) in fresh {
        // Held by this list alone (the one reference `ours`), or also from outside.
        Handle::track_if_held(handle.bind(py), 1);
        if handle.get().is_cancelled() {
            timer_leaves(py, this, handle.get());
            cancelled.push(handle);
        } else {
            live.push((when, handle));
        }
    }
    let mut st = this.state.borrow_mut(py);
    for (when, handle) in live {
        st.timers.push(when, handle);
    }
    drop(st);
    drop(cancelled);
}

/// What step 2 does.
enum Wait {
    Skip,
    Poll(Option<Duration>),
}

fn plan_wait(st: &LoopState) -> Wait {
    if !st.ready.is_empty() || st.stopping {
        return if st.io.len() > 0 || st.watching_signals {
            Wait::Poll(Some(Duration::ZERO))
        } else {
            Wait::Skip
        };
    }
    match st.timers.peek() {
        None => Wait::Poll(None),
        Some((when, _)) => {
            let delay = when - clock::monotonic();
            let delay = if delay > 0.0 { delay } else { 0.0 };
            Wait::Poll(Some(
                Duration::try_from_secs_f64(delay).unwrap_or(crate::core::poller::MAX_TIMEOUT),
            ))
        }
    }
}

/// Waits, releasing the GIL unless the wait cannot block. Returns the events and whether a signal
/// arrived.
///
/// Between a spin that found nothing and the blocking wait, the GIL is taken back to run the
/// Python handlers of signals that came during the spin. Such a signal interrupts no blocking
/// call, and when the program has given `signal.set_wakeup_fd` an fd of its own (not the loop's
/// socket) nothing the loop waits on becomes ready either: without this check its handler (a
/// KeyboardInterrupt) would wait for the loop's next event.
fn wait(
    py: Python<'_>,
    poller: &Poller,
    events: &mut Vec<Event>,
    timeout: Option<Duration>,
) -> PyResult<bool> {
    let result = if timeout == Some(Duration::ZERO) {
        poller.wait(events, timeout)
    } else {
        let spun = py.detach(|| match poller.spin(events, timeout)? {
            Spun::Quiet(rest) if !rest.polled => poller.block(events, rest).map(|()| None),
            Spun::Quiet(rest) => Ok(Some(rest)),
            Spun::Done => Ok(None),
        });
        match spun {
            Ok(Some(rest)) => {
                py.check_signals()?;
                py.detach(|| poller.block(events, rest))
            }
            other => other.map(|_| ()),
        }
    };
    match result {
        Ok(()) => Ok(false),
        Err(err) if err.kind() == ErrorKind::Interrupted => Ok(true),
        Err(err) => Err(os_error(err)),
    }
}

/// Reads the signal numbers CPython's C handler wrote to the wake-up socket into
/// `st.signal_numbers` (their Python handlers have already been asked to run).
fn drain_signal_socket(st: &mut LoopState) {
    if let Some((read_end, _)) = &st.signal_pair {
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: reads into a live buffer of the given length from our own socket.
            let n = unsafe { libc::read(read_end.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            st.signal_numbers.extend_from_slice(&buf[..n as usize]);
        }
    }
}

/// What step 3's first half found.
struct Dispatched {
    signalled: bool,
    stale: Vec<(i32, bool, Py<Handle>)>,
    io_events: u64,
}

/// Step 3's first half: queues the handles of ready fds. Returns whether the signal socket was
/// among the events, the cancelled handles to remove and how many fd events there were.
fn dispatch_events(py: Python<'_>, st: &mut LoopState) -> Dispatched {
    let events = std::mem::take(&mut st.events);
    let mut signalled = false;
    let mut stale = Vec::new();
    let mut io_events = 0;
    for ev in &events {
        if ev.token == SIGNAL_TOKEN {
            signalled = true;
            drain_signal_socket(st);
            continue;
        }
        let fd = ev.token as i32;
        st.io.note_event(fd);
        let Some(entry) = st.io.get(fd) else { continue };
        io_events += 1;
        for (ready, slot, is_writer) in [
            (ev.readable, &entry.reader, false),
            (ev.writable, &entry.writer, true),
        ] {
            if let (true, Some(slot)) = (ready, slot) {
                let handle = &slot.handle;
                if handle.get().is_cancelled() {
                    stale.push((fd, is_writer, handle.clone_ref(py)));
                } else {
                    st.ready.push(handle.clone_ref(py));
                }
            }
        }
    }
    st.events = events;
    Dispatched {
        signalled,
        stale,
        io_events,
    }
}

pub fn run_once(slf: &Bound<'_, LoopCore>) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();

    let poll = {
        merge_new_timers(py, this);
        let mut st = this.state.borrow_mut(py);
        let garbage = prune_timers(py, &mut st, this);
        // What the last iteration's final callbacks queued waits from their end.
        let last = this.meter.last(py);
        st.ready.stamp(last);
        let fields = &mut *st;
        let mut closed = Vec::new();
        if let Some(poller) = &fields.poller {
            // A wait that found nothing to do at its event waits on: arm it again. If the kernel
            // no longer knows the registration, its file has closed (`crate::owner`, rule 3):
            // the waits on it are dropped below, never carried over to the number's next file.
            fields.io.rearm(
                |fd, interest| match poller.reregister(fd, fd as u64, interest) {
                    Ok(()) => true,
                    Err(err) => {
                        if matches!(err.raw_os_error(), Some(libc::ENOENT | libc::EBADF)) {
                            closed.push(fd);
                        }
                        false
                    }
                },
            );
        }
        let poll = match (plan_wait(&st), &st.poller) {
            (Wait::Poll(timeout), Some(poller)) => {
                Some((timeout, Arc::clone(poller), std::mem::take(&mut st.events)))
            }
            _ => None,
        };
        drop(st);
        if !garbage.is_empty() {
            for handle in garbage {
                Handle::leave_queue(handle.bind(py));
            }
        }
        this.drop_closed(py, closed)?;
        poll
    };

    if let Some((timeout, poller, mut events)) = poll {
        let before = this.meter.now();
        this.meter.idle();
        let interrupted = wait(py, &poller, &mut events, timeout)?;
        let after = this.meter.now();
        let found = {
            let mut st = this.state.borrow_mut(py);
            st.events = events;
            let found = dispatch_events(py, &mut st);
            // Queued during the wait or by its events: waiting from its end.
            st.ready.stamp(after);
            found
        };
        this.meter.polled(py, before, after, found.io_events);
        for (fd, is_writer, handle) in found.stale {
            this.remove_io(py, fd, is_writer, Which::Handle(&handle))?;
        }
        if interrupted || found.signalled {
            py.check_signals()?;
        }
        let numbers = std::mem::take(&mut this.state.borrow_mut(py).signal_numbers);
        if !numbers.is_empty() {
            // `add_signal_handler`'s callbacks join the ready queue now, as in the stock loop,
            // where the self-pipe is read among this iteration's events.
            process_signals(this, py, &numbers)?;
        }
    }

    // No timer joins the heap before the next iteration, so an empty heap needs no clock read.
    let (ntodo, now) = {
        let st = this.state.borrow(py);
        let now = (!st.timers.is_empty()).then(clock::monotonic);
        (st.ready.begin_iteration(), now)
    };
    // Each callback starts where the last one (or the wait) ended.
    let mut last = this.meter.last(py);
    let read_at = last;
    this.meter.iteration(py, last, ntodo);

    for done in 0..ntodo {
        let Some((handle, since)) = next_ready(py, this, last) else {
            break;
        };
        if !handle.get().is_cancelled() {
            this.meter.ready_waited(py, since, last);
        }
        match run_handle(slf, &handle, last, false) {
            Ok(end) => last = end,
            Err(err) => {
                if let Some(now) = now {
                    requeue_due_timers(py, this, now, ntodo - done - 1);
                }
                return Err(err);
            }
        }
    }

    // The timers due at `now`. The stock loop moves them to the ready queue behind the callbacks
    // above and runs them in the same pass; popping each only when its turn comes runs them in
    // the same order and reads each handle once, while it is in the cache. Timers scheduled in
    // this iteration wait in `new_timers`, so the heap holds exactly the stock loop's set.
    let Some(now) = now else {
        return Ok(());
    };
    loop {
        let (when, handle, retired) = {
            let mut st = this.state.borrow_mut(py);
            let Some((when, handle)) = st.timers.pop_due(now) else {
                break;
            };
            let retired = st.snapshots.retire(handle.get().context_ptr(py));
            (when, handle, retired)
        };
        drop(retired);
        let handle = handle.into_bound(py);
        if timer_leaves(py, this, handle.get()) {
            Handle::leave_queue(&handle);
            continue;
        }
        this.meter
            .timer_fired(py, now - when, last.saturating_sub(read_at));
        match run_handle(slf, &handle, last, true) {
            Ok(end) => last = end,
            Err(err) => {
                requeue_due_timers(py, this, now, 0);
                return Err(err);
            }
        }
    }
    Ok(())
}

/// The next ready handle and the tick it has waited since, no longer offered its Context
/// snapshot to new handles (it is about to be entered; see `context.rs`). What the last callback
/// queued waits from `now`, its end.
fn next_ready<'py>(
    py: Python<'py>,
    this: &LoopCore,
    now: u64,
) -> Option<(Bound<'py, Handle>, u64)> {
    let (handle, since, retired) = {
        let mut st = this.state.borrow_mut(py);
        st.ready.stamp(now);
        let (handle, since) = st.ready.pop()?;
        let retired = st.snapshots.retire(handle.get().context_ptr(py));
        // While this callback runs, bring the next handles into the cache: a long queue's
        // handles were made long ago and are cold by their turn.
        if let Some(next) = st.ready.get(0) {
            next.get().prefetch_callback(py);
        }
        if let Some(after) = st.ready.get(1) {
            prefetch(after.as_ptr().cast());
        }
        (handle, since, retired)
    };
    drop(retired);
    Some((handle.into_bound(py), since))
}

/// Queues the callbacks `add_signal_handler` set for the signal numbers read, with `call_soon`,
/// as the stock loop does when it reads its self-pipe among an iteration's events.
fn process_signals(this: &LoopCore, py: Python<'_>, numbers: &[u8]) -> PyResult<()> {
    let table = this.signal_handlers.bind(py);
    for &signum in numbers {
        let Some(entry) = table.get_item(signum)? else {
            continue;
        };
        let (callback, args, context): (Bound<'_, PyAny>, Bound<'_, PyTuple>, Bound<'_, PyAny>) =
            entry.extract()?;
        let args = CallArgs::from_tuple(args);
        this.soon(py, "call_soon", true, callback, args, Some(context))?;
    }
    Ok(())
}

/// Runs one handle of this iteration (skipping a cancelled one), started at tick `start`, then
/// lets the queue go of it. Returns the tick it ended at. `timer`: it is a due timer.
#[inline(always)]
fn run_handle(
    slf: &Bound<'_, LoopCore>,
    handle: &Bound<'_, Handle>,
    start: u64,
    timer: bool,
) -> PyResult<u64> {
    let this = slf.get();
    let result = if handle.get().is_cancelled() {
        Ok(start)
    } else if this.shared.debug() || this.meter.observed(slf.py()) {
        run_observed(slf, handle, start, timer)
    } else {
        let result = Handle::run(handle, slf);
        let end = this.meter.now();
        result
            .and_then(|()| {
                this.meter
                    .callback_ran(handle, slf.as_any(), start, end, None)
            })
            .map(|()| end)
    };
    Handle::leave_queue(handle);
    result
}

/// `run_handle` in debug mode, or with a slow-callback handler (which wants the CPU time) or a
/// tracer (which wants the callback) on the meter.
#[cold]
fn run_observed(
    slf: &Bound<'_, LoopCore>,
    handle: &Bound<'_, Handle>,
    start: u64,
    timer: bool,
) -> PyResult<u64> {
    let this = slf.get();
    let traced = this.meter.traced_callback(handle);
    let end = if this.shared.debug() {
        run_timed(slf, handle, start)?
    } else {
        let cpu = this.meter.cpu_before(slf.py());
        let result = Handle::run(handle, slf);
        let end = this.meter.now();
        result?;
        this.meter
            .callback_ran(handle, slf.as_any(), start, end, cpu)?;
        end
    };
    if let Some(callback) = traced {
        this.meter.trace_callback(&callback, start, end, timer);
    }
    Ok(end)
}

/// When a callback's exception ends an iteration early, puts the timers that were due into the
/// ready queue where the stock loop had them: after the `not_run` callbacks the iteration had not
/// reached, before anything scheduled since.
fn requeue_due_timers(py: Python<'_>, this: &LoopCore, now: f64, not_run: usize) {
    let mut st = this.state.borrow_mut(py);
    let mut due = Vec::new();
    while let Some((_, handle)) = st.timers.pop_due(now) {
        timer_leaves(py, this, handle.get());
        due.push(handle);
    }
    let last = this.meter.last(py);
    st.ready.insert_at(not_run, due, last);
}

/// Debug mode: runs the handle as the loop's `_current_handle` and logs it, as the stock loop
/// does, if it took `slow_callback_duration` or longer.
fn run_timed(slf: &Bound<'_, LoopCore>, handle: &Bound<'_, Handle>, start: u64) -> PyResult<u64> {
    let py = slf.py();
    // The default exception handler reports where the running handle was created.
    let before = slf
        .get()
        .state
        .borrow_mut(py)
        .current_handle
        .replace(handle.clone().unbind());
    drop(before);
    let meter = &slf.get().meter;
    let cpu = meter.cpu_before(py);
    let wall_start = clock::monotonic();
    let result = Handle::run(handle, slf);
    let took = clock::monotonic() - wall_start;
    let end = meter.now();
    let after = slf.get().state.borrow_mut(py).current_handle.take();
    drop(after);
    result?;
    meter.callback_ran(handle, slf.as_any(), start, end, cpu)?;
    if took >= slf.get().state.borrow(py).slow_callback_duration {
        hooks::call(py, "log_slow_callback", (handle, took))?;
    }
    Ok(end)
}
