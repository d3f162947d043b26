"""What a finished trace holds, in the shape the exporters (`_trace_json`, `_trace_html`,
`_trace_summary`) read.

The loop records raw events in Rust, in a bounded ring buffer (`src/event_loop/tracer.rs`);
`_trace.py` turns them into this model once the trace ends. Times are seconds from the trace's
start. Every list is in time order. When the ring buffer wrapped, the oldest events were lost:
`dropped` counts them, and the model starts at the oldest event kept (`start`), so a task may
appear already waiting or running there.

A task's states tile its life: one `TaskState` ends where the next begins, from its first
step seen (or `start`) to its end (or the trace's end), so they never overlap on a track.
"""

import dataclasses
from typing import Dict, List, Optional, Tuple

RUNNING = "running"
"""The task's step is on the loop thread now."""
READY = "ready"
"""Its next step is in the ready queue (woken, or yielded with `sleep(0)`)."""
WAIT_IO = "io"
"""Waiting on a file descriptor: a socket, a stream, a pipe."""
WAIT_TIMER = "timer"
"""Waiting on a timer: `asyncio.sleep`, a timeout."""
WAIT_TASK = "task"
"""Waiting on another task, or on several (`gather`, `wait`)."""
WAIT_FUTURE = "future"
"""Waiting on a future, a lock, an event, a queue: something another callback completes."""
DONE = "done"
"""Finished (its last slice is zero-length, at the moment it finished)."""

STATES = (RUNNING, READY, WAIT_IO, WAIT_TIMER, WAIT_TASK, WAIT_FUTURE, DONE)


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    id: int
    """Unique within the trace; tasks that lived at the same address have different ids."""
    name: str
    """`task.get_name()` when first seen."""
    coro: str
    """The coroutine's `__qualname__`."""


@dataclasses.dataclass(frozen=True)
class TaskState:
    task: int
    start: float
    end: float
    state: str
    """One of `STATES`."""
    label: str
    """What it waits on, for people: "sleep (timer)", "StreamReader.read (I/O)",
    "Task-3 (task)", "Lock.acquire"; for `running`, the step's callback ("step", "wakeup")."""


@dataclasses.dataclass(frozen=True)
class Callback:
    start: float
    end: float
    name: str
    """The callback, as people know it: "Task-1 step", "Server._accept", "my_function"."""
    task: Optional[int]
    """The task it stepped or woke, if any."""
    kind: str
    """"ready" (queued by call_soon or I/O), "timer" (a due timer)."""


@dataclasses.dataclass(frozen=True)
class Poll:
    start: float
    end: float
    events: int
    """File descriptor events it returned."""


@dataclasses.dataclass(frozen=True)
class Transfer:
    time: float
    transport: str
    """Which transport or socket: "fd 7 127.0.0.1:54321"."""
    direction: str
    """"read" or "write"."""
    nbytes: int


@dataclasses.dataclass
class Trace:
    start: float
    """Always 0.0: times count from here."""
    end: float
    """The trace's length in seconds."""
    wall_start: float
    """`time.time()` at the trace's start, for the file's metadata."""
    pid: int
    thread: int
    """The loop thread's ident."""
    tasks: Dict[int, TaskInfo]
    states: List[TaskState]
    callbacks: List[Callback]
    polls: List[Poll]
    transfers: List[Transfer]
    ready_queue: List[Tuple[float, int]]
    """(time, length) of the ready queue at an iteration's start, when it changed."""
    dropped: int
    """Events lost to the ring buffer's bound."""
    utilization: float
    """Busy / (busy + idle) over the trace."""
    lag_percentiles: Dict[int, float]
    """{50: s, 90: s, 99: s, 100: s}: the loop's lag (`LoopStats.lag`) over the trace."""
