"""`write_json(trace, path)`: a finished trace as Chrome Trace Event Format JSON, the object form
(`{"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}`) that ui.perfetto.dev
and chrome://tracing open.

The layout, in one process (`pid` = the traced process, named "ferroloop"):
- the loop thread, `tid` 1 ("event loop"): a complete ("X") event per callback (cat "callback",
  args: its kind and task) and per poll wait (name "poll", cat "poll", args: events returned);
- a track per task, `tid` 1000 + the task's id, named "name (coroutine)" and sorted in creation
  order: its states as "X" events named by their label, cat and args the state;
- counters ("C"): "ready queue" (its length at each iteration) and "bytes" (read and written
  so far, over every transport).
The trace's own figures (dropped events, utilization, lag percentiles) are in `otherData`.

The format counts microseconds. Each `ts` and `dur` is made from whole nanoseconds (the end's
minus the start's), so where one state ends and the next begins, both land on the same value:
tiles touch and never overlap by a rounding, which a viewer would show as a bad nesting.

The file is written whole or not at all (`write_atomic`): a run cut short leaves the old file,
never half a new one.
"""

import contextlib
import datetime
import json
import math
import os
import secrets
from typing import Any, Dict, List, Optional, Union

from ferroloop._trace_model import Callback, Poll, TaskState, Trace

Event = Dict[str, Any]
"""One trace event, as JSON objects."""
Span = Union[Callback, Poll, TaskState]
"""What an "X" event is made from."""

LOOP_TID = 1
"""The loop thread's track."""
TASK_TID_BASE = 1000
"""A task's track is this plus the task's id."""
PROCESS_NAME = "ferroloop"


def write_json(trace: Trace, path: str) -> None:
    write_atomic(path, json.dumps(trace_document(trace), separators=(",", ":")))


def trace_document(trace: Trace) -> Dict[str, Any]:
    """The JSON document, as Python objects."""
    pid = trace.pid
    timed: List[Event] = []
    for callback in trace.callbacks:
        info = trace.tasks.get(callback.task) if callback.task is not None else None
        args = {"kind": callback.kind, "task": info.name if info else None}
        timed.append(_complete(callback.name, "callback", callback, pid, LOOP_TID, args))
    for poll in trace.polls:
        timed.append(_complete("poll", "poll", poll, pid, LOOP_TID, {"events": poll.events}))
    for state in trace.states:
        tid = TASK_TID_BASE + state.task
        args = {"state": state.state}
        timed.append(_complete(state.label or state.state, state.state, state, pid, tid, args))
    for time, length in trace.ready_queue:
        timed.append(_counter("ready queue", time, pid, {"length": length}))
    timed += _byte_counters(trace)
    timed.sort(key=lambda event: (event["ts"], -event.get("dur", 0)))
    return {
        "traceEvents": _metadata(trace) + timed,
        "displayTimeUnit": "ms",
        "otherData": _other_data(trace),
    }


def task_order(trace: Trace) -> List[int]:
    """The task ids in creation order: by the first state seen, then by id (every task alive when
    the trace starts is first seen at its start)."""
    first: Dict[int, float] = {}
    for state in trace.states:
        first.setdefault(state.task, state.start)
    return sorted(trace.tasks, key=lambda task: (first.get(task, trace.end), task))


def write_atomic(path: str, text: str) -> None:
    """Writes `text` as UTF-8 to `path` through a new file beside it, then `os.replace`: a reader,
    or a run cut short, sees the old file or the whole new one. The new file is made with the
    usual permissions (0o666 less the umask), as `open` would. A lone surrogate (a task name
    made from undecodable bytes) is written as its escape, not refused."""
    temporary = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(fd, "w", encoding="utf-8", errors="backslashreplace") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


def _complete(name: str, cat: str, span: Span, pid: int, tid: int, args: Dict[str, Any]) -> Event:
    """An "X" event over `span`."""
    start_ns = _ns(span.start)
    return {
        "name": name,
        "cat": cat,
        "ph": "X",
        "ts": start_ns / 1000,
        "dur": (_ns(span.end) - start_ns) / 1000,
        "pid": pid,
        "tid": tid,
        "args": args,
    }


def _counter(name: str, time: float, pid: int, args: Dict[str, int]) -> Event:
    ts = _ns(time) / 1000
    return {"name": name, "ph": "C", "ts": ts, "pid": pid, "tid": LOOP_TID, "args": args}


def _byte_counters(trace: Trace) -> List[Event]:
    """The bytes read and written so far, from zero at the trace's start, after each transfer."""
    if not trace.transfers:
        return []
    read = written = 0
    events = [_counter("bytes", trace.start, trace.pid, {"read": 0, "written": 0})]
    for transfer in trace.transfers:
        if transfer.direction == "read":
            read += transfer.nbytes
        else:
            written += transfer.nbytes
        totals = {"read": read, "written": written}
        events.append(_counter("bytes", transfer.time, trace.pid, totals))
    return events


def _metadata(trace: Trace) -> List[Event]:
    def meta(name: str, tid: int, args: Dict[str, Any]) -> Event:
        return {"name": name, "ph": "M", "ts": 0, "pid": trace.pid, "tid": tid, "args": args}

    events = [
        meta("process_name", LOOP_TID, {"name": PROCESS_NAME}),
        meta("thread_name", LOOP_TID, {"name": "event loop"}),
        meta("thread_sort_index", LOOP_TID, {"sort_index": 0}),
    ]
    for index, task in enumerate(task_order(trace), start=1):
        info = trace.tasks[task]
        tid = TASK_TID_BASE + task
        events.append(meta("thread_name", tid, {"name": f"{info.name} ({info.coro})"}))
        events.append(meta("thread_sort_index", tid, {"sort_index": index}))
    return events


def _finite(value: float) -> Optional[float]:
    """`value`, or None for NaN or an infinity, which JSON cannot hold."""
    return value if math.isfinite(value) else None


def _other_data(trace: Trace) -> Event:
    wall = datetime.datetime.fromtimestamp(trace.wall_start, datetime.timezone.utc)
    data: Dict[str, Any] = {
        "producer": PROCESS_NAME,
        "trace_seconds": trace.end - trace.start,
        "wall_start": wall.isoformat(),
        "loop_thread": trace.thread,
        "tasks": len(trace.tasks),
        "dropped_events": trace.dropped,
        "utilization": _finite(trace.utilization),
    }
    for percentile, lag in sorted(trace.lag_percentiles.items()):
        name = "max" if percentile == 100 else f"p{percentile:g}"
        data[f"lag_{name}_ms"] = _finite(round(lag * 1e3, 6))
    return data
