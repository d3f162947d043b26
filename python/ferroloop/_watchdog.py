"""`ferroloop.watchdog()`: report a loop stuck in one callback while it is stuck.

A native thread (`src/core/watchdog.rs`) reads each ferroloop loop's "busy since" tick, which
the loop writes anyway for its counters, so a loop pays nothing per callback for being watched.
When one callback has run for `threshold` seconds, that thread writes a line to `file` and
signals the loop thread; faulthandler's handler for that signal, registered here for `file`,
writes the loop thread's Python stack from inside it without taking the GIL. So the stack comes
out even when the callback blocks in C code that holds the GIL.

The running task's name needs the GIL. A Python thread started here waits for each stall (with
the GIL released), then, once it holds the GIL, writes the task's name if the stall still goes
on and calls `callback(info)`. A callback stuck in Python code or in a call that releases the
GIL (a `time.sleep`, blocking I/O) lets it in within the interpreter's switch interval; C code
holding the GIL delays that part until the stall ends, and `info.task` is then None.

The signal is a real-time one that nothing in the process handles yet (from the top of the
range down); with `file=None` no signal is sent and nothing is written: `callback` alone hears.
Its handler restarts the system calls the kernel can restart (reads, writes), but a sleep or a
poll the stalled thread is blocked in returns early with EINTR, as under any signal: Python's
own calls retry (PEP 475), C code may not. One signal is sent per stall.
"""

import asyncio
import dataclasses
import faulthandler
import os
import signal
import sys
import threading
import traceback
import weakref
from typing import Any, Callable, Optional

from ferroloop import _core

__all__ = ("watchdog", "Stall")

_loops: "weakref.WeakValueDictionary[int, Any]" = weakref.WeakValueDictionary()
"""Beacon id -> loop, for the running task's name."""

# A fork copies the process with only the forking thread: the watchdog's lock must not be held
# by its thread at that moment, and a child has no watchdog thread to stop.
os.register_at_fork(
    before=_core._fork_prepare,
    after_in_parent=_core._fork_parent,
    after_in_child=_core._fork_child,
)


def register(loop):
    """Lets the watchdog name `loop`'s running task (called by each new `ferroloop.Loop`)."""
    _loops[loop._beacon_id] = loop


@dataclasses.dataclass(frozen=True)
class Stall:
    """What a watchdog's `callback` receives, once per stall."""

    loop: Any
    """The stalled loop (None if it is gone, or not a `ferroloop.Loop`)."""
    seconds: float
    """How long the callback had run when the stall was noticed."""
    thread_id: int
    """The loop thread's `threading.get_ident()`."""
    ongoing: bool
    """Whether the callback was still running when the callback was called."""
    task: Any
    """The task the stalled callback steps, if it is a task's step and the stall goes on."""
    task_name: Optional[str]
    stack: Optional[traceback.StackSummary]
    """The loop thread's stack at that moment, if the stall goes on."""


def _free_signal():
    for signum in range(signal.SIGRTMAX, signal.SIGRTMIN - 1, -1):
        if signal.getsignal(signum) in (signal.SIG_DFL, None):
            return signum
    raise RuntimeError("no free real-time signal for the watchdog")


class watchdog:
    """While active (`with ferroloop.watchdog(1.0): ...`), reports every ferroloop loop that runs
    one callback for `threshold` seconds or longer: to `file` (stderr by default; a file with a
    `fileno()`), its thread's Python stack and running task; to `callback`, a `Stall`."""

    def __init__(
        self,
        threshold: float = 1.0,
        *,
        file: Any = sys.stderr,
        callback: Optional[Callable[[Stall], Any]] = None,
    ):
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise TypeError(f"threshold must be a number of seconds, got {threshold!r}")
        if not threshold > 0:
            raise ValueError(f"threshold must be positive, got {threshold!r}")
        if callback is not None and not callable(callback):
            raise TypeError(f"A callable object or None is expected, got {callback!r}")
        self.threshold = float(threshold)
        self.file = file
        self.callback = callback
        self._fd = -1
        if file is not None:
            try:
                self._fd = file.fileno()
            except (AttributeError, OSError, ValueError) as exc:
                raise ValueError(
                    f"the watchdog writes to a file descriptor, and {file!r} has none"
                ) from exc
        self._signum = 0
        self._reporter = None
        self._pid = None

    def __enter__(self):
        if self._fd >= 0:
            self._signum = _free_signal()
            faulthandler.register(self._signum, file=self.file, all_threads=False, chain=False)
            _core._watchdog_restartable(self._signum)
        try:
            _core._watchdog_start(self.threshold, self._fd, self._signum)
        except BaseException:
            self._unregister()
            raise
        self._pid = os.getpid()
        self._reporter = threading.Thread(target=self._report, name="ferroloop-watchdog-reporter", daemon=True)
        self._reporter.start()
        return self

    def __exit__(self, *exc_info):
        if os.getpid() != self._pid:  # a forked child: the parent's watchdog is not its own
            return False
        _core._watchdog_stop()
        if self._reporter is not None:
            self._reporter.join()
            self._reporter = None
        self._unregister()
        return False

    def _unregister(self):
        if self._signum:
            faulthandler.unregister(self._signum)
            self._signum = 0

    def _report(self):
        while True:
            stall = _core._watchdog_next()
            if stall is None:
                return
            try:
                self._one(*stall)
            except Exception as exc:  # a report must never end the watchdog
                sys.unraisablehook(_Unraisable(exc, self._report))

    def _one(self, beacon, since, thread_id, seconds):
        loop = _loops.get(beacon)
        task = stack = None
        frame = sys._current_frames().get(thread_id)
        ongoing = _core._watchdog_still(beacon, since)
        if ongoing:
            if loop is not None:
                task = asyncio.current_task(loop)
            if frame is not None:
                stack = traceback.StackSummary.extract(traceback.walk_stack(frame))
                stack.reverse()
        # Read again: what was read above belongs to this stall only if it still goes on.
        ongoing = ongoing and _core._watchdog_still(beacon, since)
        if not ongoing:
            task = stack = None
        name = task.get_name() if task is not None else None
        if self.file is not None and name is not None:
            coro = task.get_coro()
            shown = getattr(coro, "__qualname__", type(coro).__name__)
            print(f"ferroloop watchdog: the running task is {name!r} ({shown})", file=self.file, flush=True)
        if self.callback is not None:
            self.callback(Stall(loop, seconds, thread_id, ongoing, task, name, stack))


@dataclasses.dataclass
class _Unraisable:
    exc_value: BaseException
    object: Any
    exc_type: Any = None
    exc_traceback: Any = None
    err_msg: str = "Exception in ferroloop watchdog callback"

    def __post_init__(self):
        self.exc_type = type(self.exc_value)
        self.exc_traceback = self.exc_value.__traceback__
