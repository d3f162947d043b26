"""What `loop.stats()` returns and what a slow-callback handler receives.

The loop counts in Rust, always (`src/event_loop/meter.rs`); this module only shapes its figures
for Python. Times are in seconds. The lag histograms have fixed log-scale buckets, the same on
every loop and every run, so they add and compare bucket by bucket: the first holds waits under
2**10 ns (about 1 µs), each next one up to twice the last one's edge, and the last everything
from about 17 s on.

Ready callbacks count as waiting from the end of the callback (or the I/O wait) that queued
them, not from the moment inside it when `call_soon` ran: the rest of that callback's run is its
own time, not the queue's.
"""

import dataclasses
import traceback
from asyncio import tasks
from typing import Any, Optional, Tuple

__all__ = ("LoopStats", "LagHistogram", "SlowCallback")


@dataclasses.dataclass(frozen=True)
class LagHistogram:
    """How many waits fell in each bucket: `counts[i]` counts those below `bounds[i]` seconds and
    at or above `bounds[i - 1]`; the last bound is `inf`."""

    bounds: Tuple[float, ...]
    counts: Tuple[int, ...]

    @property
    def count(self) -> int:
        return sum(self.counts)

    def percentile(self, p: float) -> float:
        """The upper edge of the bucket holding the `p`-th percentile (0 to 100), in seconds: the
        wait that `p` per cent of them did not exceed. 0.0 when nothing was recorded."""
        if not 0 <= p <= 100:
            raise ValueError(f"percentile must be between 0 and 100, got {p!r}")
        total = self.count
        if total == 0:
            return 0.0
        rank = max(1, -(-total * p // 100))
        seen = 0
        for bound, n in zip(self.bounds, self.counts):
            seen += n
            if seen >= rank:
                return bound
        return self.bounds[-1]

    def __add__(self, other: "LagHistogram") -> "LagHistogram":
        if not isinstance(other, LagHistogram):
            return NotImplemented
        return LagHistogram(self.bounds, tuple(a + b for a, b in zip(self.counts, other.counts)))


@dataclasses.dataclass(frozen=True)
class LoopStats:
    """A snapshot of a loop's counters since it was made or since `stats(reset=True)`."""

    callbacks: int
    """Callbacks run (cancelled ones skipped are not counted), timers included."""
    io_events: int
    """Readiness events of registered file descriptors."""
    polls: int
    """Waits for I/O, including those that did not block."""
    timers_scheduled: int
    timers_fired: int
    timers_cancelled: int
    """Cancelled timers that left the queue without running."""
    slow_callbacks: int
    """Callbacks that took `loop.slow_callback_duration` or longer (debug mode or not)."""
    busy_time: float
    """Seconds running callbacks."""
    idle_time: float
    """Seconds waiting for I/O or timers."""
    elapsed: float
    """Seconds since the counters started."""
    longest_callback: float
    """The longest callback's duration, in seconds."""
    longest_callback_repr: Optional[str]
    """That callback's handle, as `repr` showed it when it ended."""
    ready: int
    """Callbacks in the ready queue now."""
    timer_lag: LagHistogram
    """How late timers ran past their deadline."""
    ready_wait: LagHistogram
    """How long ready callbacks waited in the queue before they ran."""

    @property
    def utilization(self) -> float:
        """busy / (busy + idle), as Node's `eventLoopUtilization()`: 0.0 before any of either."""
        total = self.busy_time + self.idle_time
        return self.busy_time / total if total > 0 else 0.0

    @property
    def lag(self) -> LagHistogram:
        """The loop's lag: timer lateness and queue waits together."""
        return self.timer_lag + self.ready_wait

    @classmethod
    def _from_core(cls, raw: Any) -> "LoopStats":
        (counts, times, longest_repr, bounds, timer_lag, ready_wait), ready = raw
        bounds = tuple(float("inf") if b is None else b for b in bounds)
        return cls(
            *counts,
            *times,
            longest_repr,
            ready,
            LagHistogram(bounds, tuple(timer_lag)),
            LagHistogram(bounds, tuple(ready_wait)),
        )


@dataclasses.dataclass(frozen=True)
class SlowCallback:
    """What `loop.set_slow_callback_handler`'s handler receives after a slow callback."""

    handle: Any
    """The `Handle` (or `TimerHandle`) that ran."""
    wall_time: float
    """Seconds it took."""
    cpu_time: Optional[float]
    """Seconds of this thread's CPU time it took (None if the handler was set while it ran)."""
    task: Any
    """The task it stepped, if it was a task's step or wake-up, else None."""
    task_name: Optional[str]
    stack: Optional[traceback.StackSummary]
    """The task's coroutine stack where the step left it (None if there is no task, or it is
    done)."""


def task_of(handle):
    """The task whose step or wake-up `handle` runs, or None."""
    owner = getattr(handle._callback, "__self__", None)
    return owner if isinstance(owner, tasks.Task) else None


def slow_callback_info(handle, wall_time, cpu_time):
    task = task_of(handle)
    stack = None
    if task is not None and not task.done():
        frames = task.get_stack()
        stack = traceback.StackSummary.extract((f, f.f_lineno) for f in frames) if frames else None
    return SlowCallback(
        handle=handle,
        wall_time=wall_time,
        cpu_time=cpu_time,
        task=task,
        task_name=task.get_name() if task is not None else None,
        stack=stack,
    )
