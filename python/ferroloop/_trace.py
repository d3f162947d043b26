"""`ferroloop.trace()`: record what the loop does, then write it for Perfetto, for a browser and
for the terminal.

While a trace is on, every ferroloop loop that runs in this process hands its callbacks, poll
waits and transport transfers to one recorder (`_core.Tracer`, a bounded ring of events): a
loop already running when the trace begins is attached at once, one that starts later when it
starts. When the trace ends, the events become a `_trace_model.Trace` and go to `OUT.json`,
`OUT.html` and the summary.

The files are written however the traced code ends: an exception, `sys.exit`, Ctrl-C. The
output folder is checked when the trace begins, so a path that cannot be written fails before
the program runs rather than after it.

A task's state between two of its steps is read at the end of the first: done, ready again
(it yielded), waiting on a task, or waiting on what its innermost coroutine awaits, labelled
here (`_wait_label`) once per coroutine code and waiter type. The wait lasts until the task's
next step begins, so it includes the time its wake-up spent in the ready queue.
"""

import os
import struct
import sys
import time
import weakref

from ferroloop import _core
from ferroloop import _trace_model as model

DEFAULT_CAPACITY = 1 << 20
"""Events the ring keeps: 16 MiB of them."""

_WAIT_DONE = 1
_WAIT_READY = 2
_WAIT_TASK = 3
_WAIT_LABEL = 4

_EVENT = struct.Struct("<BxxxIQQQ")
_CALLBACK, _POLL, _TASK_WAIT, _READY, _TRANSFER = 1, 2, 3, 4, 5

_session = None

_ASYNCIO_DIR = os.path.dirname(os.path.abspath(__import__("asyncio").__file__))
_FERROLOOP_DIR = os.path.dirname(os.path.abspath(__file__))

# What a task waits on, by the innermost coroutine awaiting: (file's folder, file, qualname).
_KNOWN_WAITS = {
    ("asyncio", "tasks.py", "sleep"): (model.WAIT_TIMER, "sleep"),
    ("asyncio", "tasks.py", "wait"): (model.WAIT_TASK, "wait"),
    ("asyncio", "tasks.py", "_wait"): (model.WAIT_TASK, "wait"),
    ("asyncio", "tasks.py", "wait_for"): (model.WAIT_TASK, "wait_for"),
    ("asyncio", "streams.py", "StreamReader._wait_for_data"): (model.WAIT_IO, "stream read"),
    ("asyncio", "streams.py", "FlowControlMixin._drain_helper"): (model.WAIT_IO, "stream drain"),
    ("asyncio", "locks.py", "Lock.acquire"): (model.WAIT_FUTURE, "Lock.acquire"),
    ("asyncio", "locks.py", "Event.wait"): (model.WAIT_FUTURE, "Event.wait"),
    ("asyncio", "locks.py", "Condition.wait"): (model.WAIT_FUTURE, "Condition.wait"),
    ("asyncio", "locks.py", "Semaphore.acquire"): (model.WAIT_FUTURE, "Semaphore.acquire"),
    ("asyncio", "locks.py", "Barrier._block"): (model.WAIT_FUTURE, "Barrier.wait"),
    ("asyncio", "locks.py", "Barrier._wait"): (model.WAIT_FUTURE, "Barrier.wait"),
    ("asyncio", "queues.py", "Queue.get"): (model.WAIT_FUTURE, "Queue.get"),
    ("asyncio", "queues.py", "Queue.put"): (model.WAIT_FUTURE, "Queue.put"),
    ("asyncio", "queues.py", "Queue.join"): (model.WAIT_FUTURE, "Queue.join"),
}
# Coroutines of these files that wait on a file descriptor (sockets, connections, pipes).
_IO_FILES = {
    ("asyncio", "selector_events.py"),
    ("asyncio", "base_events.py"),
    ("asyncio", "subprocess.py"),
    ("ferroloop", "_sock.py"),
    ("ferroloop", "_net.py"),
    ("ferroloop", "_server.py"),
    ("ferroloop", "_pipes.py"),
    ("ferroloop", "_subprocess.py"),
    ("ferroloop", "_sendfile.py"),
    ("ferroloop", "_tls.py"),
}


def _package_of(filename):
    folder = os.path.dirname(os.path.abspath(filename))
    if folder == _ASYNCIO_DIR:
        return "asyncio"
    if folder == _FERROLOOP_DIR:
        return "ferroloop"
    return None


def _wait_label(code, waiter):
    """(state, label) of a task whose innermost coroutine `code` awaits `waiter`."""
    waiter_type = type(waiter).__name__
    if waiter_type == "_GatheringFuture":
        return model.WAIT_TASK, "gather"
    if code is None:
        return model.WAIT_FUTURE, waiter_type
    qualname = getattr(code, "co_qualname", code.co_name)
    package = _package_of(code.co_filename)
    base = os.path.basename(code.co_filename)
    known = _KNOWN_WAITS.get((package, base, qualname))
    if known is not None:
        return known
    if (package, base) in _IO_FILES:
        return model.WAIT_IO, qualname
    return model.WAIT_FUTURE, qualname


class Recorder:
    """Labels what a task waits on, for the Rust tracer, once per coroutine code and waiter
    type; the tracer names its subjects itself (`src/event_loop/tracer.rs`)."""

    def __init__(self):
        self.labels = {}
        """label id -> (state, label)."""

    def label(self, code, waiter):
        lid = len(self.labels) + 1
        self.labels[lid] = _wait_label(code, waiter)
        return lid


def _out_paths(out):
    out = os.fspath(out)
    for suffix in (".json", ".html"):
        if out.endswith(suffix):
            out = out[: -len(suffix)]
    return out + ".json", out + ".html"


def _check_writable(paths):
    """Fails now, with the reason, if the files cannot be written where they are asked for."""
    for path in paths:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"cannot write the trace to {path!r}: no folder {folder!r}")
        if os.path.isdir(path):
            raise IsADirectoryError(f"cannot write the trace to {path!r}: it is a folder")
        if not os.access(folder, os.W_OK | os.X_OK) or (
            os.path.exists(path) and not os.access(path, os.W_OK)
        ):
            raise PermissionError(f"cannot write the trace to {path!r}: permission denied")


class TraceSession:
    """What `ferroloop.trace()` returns: a context manager; `.trace` holds the model after it."""

    def __init__(self, out, *, capacity=DEFAULT_CAPACITY, summary=True, file=None):
        if not isinstance(capacity, int) or capacity <= 0:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        self.json_path, self.html_path = _out_paths(out)
        self.capacity = capacity
        self.summary = summary
        self.file = file
        self.trace = None
        self._recorder = None
        self._tracer = None
        self._loops = []
        self._stats_before = {}
        self._wall_start = None

    def __enter__(self):
        global _session
        if _session is not None:
            raise RuntimeError("a ferroloop trace is already on")
        _check_writable((self.json_path, self.html_path))
        self._recorder = Recorder()
        self._tracer = _core.Tracer(self.capacity, self._recorder)
        self._wall_start = time.time()
        _session = self
        _core._trace_session(True)
        import asyncio

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and isinstance(running, _core.LoopCore):
            self.attach(running)
        return self

    def attach(self, loop):
        if loop._tracer is not None:
            return
        loop._trace_attach(self._tracer)
        self._loops.append(weakref.ref(loop))
        self._stats_before[id(loop)] = _lag_counts(loop)

    def __exit__(self, *exc_info):
        self.stop()
        return False

    def stop(self):
        """Ends the trace and writes its files (once)."""
        global _session
        if _session is not self:
            return
        _session = None
        _core._trace_session(False)
        end_ns = self._tracer.now_ns()
        lag = None
        for ref in self._loops:
            loop = ref()
            if loop is None or loop._tracer is None:
                continue
            loop._trace_attach(None)
            after = _lag_counts(loop)
            before = self._stats_before.get(id(loop))
            if after is not None and before is not None:
                bounds, counts = after[0], [a - b for a, b in zip(after[1], before[1])]
                lag = (bounds, counts if lag is None else [a + b for a, b in zip(lag[1], counts)])
        subjects = self._tracer.subjects()
        data, dropped = self._tracer.drain()
        self.trace = build(data, dropped, end_ns, subjects, self._recorder.labels, self._wall_start, lag)
        from ferroloop._trace_html import write_html
        from ferroloop._trace_json import write_json

        write_json(self.trace, self.json_path)
        write_html(self.trace, self.html_path)
        if self.summary:
            from ferroloop._trace_summary import summarize

            out = self.file if self.file is not None else sys.stderr
            print(summarize(self.trace), file=out)
            print(f"trace written to {self.json_path} (Perfetto) and {self.html_path}", file=out)


def attach(loop):
    """A loop starts running while a trace is on (called from the loop)."""
    if _session is not None:
        _session.attach(loop)


def _lag_counts(loop):
    try:
        lag = loop.stats().lag
    except NotImplementedError:
        return None
    return lag.bounds, list(lag.counts)


def _percentiles(lag):
    from ferroloop._stats import LagHistogram

    if lag is None:
        return {}
    hist = LagHistogram(tuple(lag[0]), tuple(lag[1]))
    if hist.count == 0:
        return {}
    return {p: hist.percentile(p) for p in (50, 90, 99, 100)}


def build(data, dropped, end_ns, subjects, labels, wall_start, lag=None):
    """The model of a drained trace: `subjects` maps ids to (name, coroutine or None for what
    is not a task), `labels` label ids to (state, label)."""
    events = list(_EVENT.iter_unpack(data))
    origin = events[0][2] if dropped and events else 0
    sec = lambda ns: max(0, ns - origin) / 1e9  # noqa: E731
    callbacks, polls, transfers, ready, states = [], [], [], [], []
    current = {}  # task id -> (state, label, since)
    names = {sid: name for sid, (name, _) in subjects.items()}
    tasks = {sid: model.TaskInfo(sid, name, coro) for sid, (name, coro) in subjects.items() if coro is not None}

    def close(task, at):
        state, label, since = current.pop(task)
        states.append(model.TaskState(task, since, max(since, at), state, label))

    for kind, a, t0, t1, b in events:
        if kind == _CALLBACK:
            start, end = sec(t0), sec(t1)
            task = a if a in tasks else None
            name = names.get(a, "?")
            if task is not None:
                if task in current:
                    close(task, start)
                name = f"{name} step"
                current[task] = (model.RUNNING, "step", start)
            callbacks.append(model.Callback(start, end, name, task, "timer" if b else "ready"))
        elif kind == _TASK_WAIT:
            at = sec(t0)
            if a in current:
                close(a, at)
            what, detail = b >> 56, b & ((1 << 56) - 1)
            if what == _WAIT_DONE:
                states.append(model.TaskState(a, at, at, model.DONE, "done"))
            elif what == _WAIT_READY:
                current[a] = (model.READY, "yield", at)
            elif what == _WAIT_TASK:
                other = names.get(detail, "?")
                current[a] = (model.WAIT_TASK, other, at)
            else:
                state, label = labels.get(detail, (model.WAIT_FUTURE, "?"))
                current[a] = (state, label, at)
        elif kind == _POLL:
            polls.append(model.Poll(sec(t0), sec(t1), b))
        elif kind == _READY:
            ready.append((sec(t0), b))
        elif kind == _TRANSFER:
            transfers.append(model.Transfer(sec(t0), f"fd {a}", "write" if t1 else "read", b))
    end = sec(end_ns)
    for task in list(current):
        close(task, end)
    states.sort(key=lambda s: (s.start, s.task))
    busy = sum(c.end - c.start for c in callbacks)
    idle = sum(p.end - p.start for p in polls)
    seen = {s.task for s in states} | {c.task for c in callbacks if c.task is not None}
    return model.Trace(
        start=0.0,
        end=end,
        wall_start=wall_start,
        pid=os.getpid(),
        thread=_thread_ident(),
        tasks={t: info for t, info in tasks.items() if t in seen},
        states=states,
        callbacks=callbacks,
        polls=polls,
        transfers=transfers,
        ready_queue=ready,
        dropped=dropped,
        utilization=busy / (busy + idle) if busy + idle > 0 else 0.0,
        lag_percentiles=_percentiles(lag),
    )


def _thread_ident():
    import threading

    return threading.get_ident()


def trace(out, *, capacity=DEFAULT_CAPACITY, summary=True, file=None):
    """Records what ferroloop loops do until the `with` block ends, then writes `OUT.json`
    (Chrome Trace Event format: open it in ui.perfetto.dev), `OUT.html` (each task's states over
    time, self-contained) and a summary to `file` (stderr by default; `summary=False` for none).

    `capacity` bounds the events kept (16 bytes each); past it the oldest are dropped, and the
    files say how many."""
    return TraceSession(out, capacity=capacity, summary=summary, file=file)
