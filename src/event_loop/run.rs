//! One iteration of the loop, as the stock `BaseEventLoop._run_once` defines it:
//!
//! 1. drop cancelled timers from the head of the heap, or compact the whole heap when more than
//!    half of more than 100 timers are cancelled;
//! 2. wait for I/O: not at all if callbacks are ready (or the loop is stopping) and no fd is
//!    registered, for zero time if callbacks are ready and an fd is registered (so a busy loop
//!    still polls every iteration and I/O is never starved), else until the next timer is due
//!    (or forever). Only a wait that can block releases the GIL. A signal ends a wait: the wake-up
//!    socket given to `signal.set_wakeup_fd` becomes readable (or the wait fails with `EINTR`),
//!    and the Python signal handlers run at once, so Ctrl-C interrupts a waiting loop;
//! 3. queue the handles of ready fds, then every timer whose deadline has passed;
//! 4. run the handles that were queued when this step began, in order, skipping cancelled ones.
//!    What they schedule runs in the next iteration.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::time::Duration;

use pyo3::prelude::*;

use super::handle::Handle;
use super::{current_thread_id, hooks, os_error, LoopCore, LoopState, SIGNAL_TOKEN};
use crate::core::clock;
use crate::core::poller::{Event, Poller};

const MIN_SCHEDULED_TIMERS: usize = 100;
const MIN_CANCELLED_FRACTION: f64 = 0.5;

pub fn run_forever(slf: &Bound<'_, LoopCore>) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    this.state.borrow_mut(py).thread_id = Some(current_thread_id());
    let result = loop {
        if let Err(err) = run_once(slf) {
            break Err(err);
        }
        if this.state.borrow(py).stopping {
            break Ok(());
        }
    };
    let mut st = this.state.borrow_mut(py);
    st.stopping = false;
    st.thread_id = None;
    result
}

/// Removes cancelled timers (step 1); returns them, to be dropped once the borrow ends.
fn prune_timers(st: &mut LoopState, this: &LoopCore) -> Vec<Py<Handle>> {
    let mut garbage = Vec::new();
    let total = st.timers.len();
    let cancelled = this.shared.cancelled_timers();
    if total > MIN_SCHEDULED_TIMERS && cancelled as f64 / total as f64 > MIN_CANCELLED_FRACTION {
        garbage = st.timers.retain(|h| !h.get().is_cancelled());
        for h in &garbage {
            h.get().unschedule();
        }
        this.shared.reset_cancelled();
        return garbage;
    }
    while let Some((_, head)) = st.timers.peek() {
        if !head.get().is_cancelled() {
            break;
        }
        if let Some(h) = st.timers.pop() {
            h.get().unschedule();
            this.shared.forget_cancelled(1);
            garbage.push(h);
        }
    }
    garbage
}

/// Tracks, in the order they were made, the new timers something outside the loop holds.
///
/// Timers are created untracked (see `Handle::traverse_contents`) and one still referenced when
/// it leaves the heap must be tracked then. But timers leave the heap in deadline order, which is
/// not the order they sit in memory: tracked then, a program holding many timer handles would
/// have the collector walk them in random memory order on every full collection, a cache miss
/// per object per pass (measured: 8x the stock loop's time per object). So a timer held outside
/// the loop (two references are the heap's and this list's) is tracked at the start of the next
/// iteration instead, in creation order, as the stock loop's handles are.
fn track_new_timers(py: Python<'_>, fresh: Vec<Py<Handle>>) {
    for handle in &fresh {
        Handle::track_if_held(handle.bind(py), 2);
    }
}

/// What step 2 does.
enum Wait {
    Skip,
    Poll(Option<Duration>),
}

fn plan_wait(st: &LoopState) -> Wait {
    if !st.ready.is_empty() || st.stopping {
        return if st.io.len() > 0 {
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
fn wait(
    py: Python<'_>,
    poller: &Poller,
    events: &mut Vec<Event>,
    timeout: Option<Duration>,
) -> PyResult<bool> {
    let result = if timeout == Some(Duration::ZERO) {
        poller.wait(events, timeout)
    } else {
        py.detach(|| poller.wait(events, timeout))
    };
    match result {
        Ok(()) => Ok(false),
        Err(err) if err.kind() == ErrorKind::Interrupted => Ok(true),
        Err(err) => Err(os_error(err)),
    }
}

fn drain_signal_socket(st: &LoopState) {
    if let Some((read_end, _)) = &st.signal_pair {
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: reads into a live buffer of the given length from our own socket.
            let n = unsafe { libc::read(read_end.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
        }
    }
}

/// Step 3's first half: queues the handles of ready fds. Returns whether the signal socket was
/// among the events and the cancelled handles to remove.
fn dispatch_events(py: Python<'_>, st: &mut LoopState) -> (bool, Vec<(i32, bool)>) {
    let events = std::mem::take(&mut st.events);
    let mut signalled = false;
    let mut stale = Vec::new();
    for ev in &events {
        if ev.token == SIGNAL_TOKEN {
            signalled = true;
            drain_signal_socket(st);
            continue;
        }
        let fd = ev.token as i32;
        let Some(entry) = st.io.get(fd) else { continue };
        for (ready, slot, is_writer) in [
            (ev.readable, &entry.reader, false),
            (ev.writable, &entry.writer, true),
        ] {
            if let (true, Some(handle)) = (ready, slot) {
                if handle.get().is_cancelled() {
                    stale.push((fd, is_writer));
                } else {
                    st.ready.push(handle.clone_ref(py));
                }
            }
        }
    }
    st.events = events;
    (signalled, stale)
}

pub fn run_once(slf: &Bound<'_, LoopCore>) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();

    let (plan, poller, mut events) = {
        let mut st = this.state.borrow_mut(py);
        let fresh = std::mem::take(&mut st.new_timers);
        drop(st);
        track_new_timers(py, fresh);
        let mut st = this.state.borrow_mut(py);
        let garbage = prune_timers(&mut st, this);
        let plan = plan_wait(&st);
        let poller = st.poller.clone();
        let events = std::mem::take(&mut st.events);
        drop(st);
        for handle in garbage {
            Handle::leave_queue(handle.bind(py));
        }
        (plan, poller, events)
    };

    if let (Wait::Poll(timeout), Some(poller)) = (plan, poller) {
        let interrupted = wait(py, &poller, &mut events, timeout)?;
        let (signalled, stale) = {
            let mut st = this.state.borrow_mut(py);
            st.events = events;
            dispatch_events(py, &mut st)
        };
        for (fd, is_writer) in stale {
            this.remove_io(py, fd, is_writer)?;
        }
        if interrupted || signalled {
            py.check_signals()?;
        }
    } else {
        this.state.borrow_mut(py).events = events;
    }

    let ntodo = {
        let mut st = this.state.borrow_mut(py);
        let now = clock::monotonic();
        while let Some(handle) = st.timers.pop_due(now) {
            handle.get().unschedule();
            if handle.get().is_cancelled() {
                this.shared.forget_cancelled(1);
            }
            st.ready.push(handle);
        }
        st.ready.begin_iteration()
    };

    let event_loop = slf.as_any();
    for _ in 0..ntodo {
        let (handle, retired) = {
            let mut st = this.state.borrow_mut(py);
            let Some(handle) = st.ready.pop() else {
                break;
            };
            // About to be entered: no longer offered to new handles (see `context.rs`).
            let retired = st.snapshots.retire(handle.get().context_ptr());
            (handle, retired)
        };
        drop(retired);
        let handle = handle.into_bound(py);
        let result = if handle.get().is_cancelled() {
            Ok(())
        } else if this.shared.debug() {
            run_timed(slf, &handle)
        } else {
            Handle::run(&handle, event_loop)
        };
        Handle::leave_queue(&handle);
        result?;
    }
    Ok(())
}

/// Debug mode: runs the handle as the loop's `_current_handle` and logs it if it took `slow_callback_duration` or longer.
fn run_timed(slf: &Bound<'_, LoopCore>, handle: &Bound<'_, Handle>) -> PyResult<()> {
    let py = slf.py();
    // The default exception handler reports where the running handle was created.
    slf.setattr("_current_handle", handle)?;
    let start = clock::monotonic();
    let result = Handle::run(handle, slf.as_any());
    let took = clock::monotonic() - start;
    slf.setattr("_current_handle", py.None())?;
    result?;
    if took >= slf.get().state.borrow(py).slow_callback_duration {
        hooks::call(py, "log_slow_callback", (handle, took))?;
    }
    Ok(())
}
