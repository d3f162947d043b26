"""`summarize(trace)`: a finished trace as a few lines of plain text, for the terminal (and the
HTML page's summary block).

In order: one line of totals (length, utilization, callbacks, tasks), a warning when the ring
buffer dropped events, the tasks that ran longest, the callbacks that took longest in total
(grouped by name), the longest single callbacks (a task's step is one: the blocking the loop
suffered), and the loop's lag percentiles. Columns are aligned with spaces; there are no color
codes, so the text reads the same piped to a file.

A task's "share" is its running time over the loop's busy time, and busy time is `utilization`
times the trace's length: the same measure as the headline percentage, so the two read together
("busy 40%, of which this task 50%" is a fifth of the wall time).
"""

from collections import defaultdict
from typing import Dict, List, Sequence

from ferroloop._trace_model import RUNNING, Trace

NAME_WIDTH = 48
"""Longest name shown in a column; a longer one is cut, ending in "…"."""


def summarize(trace: Trace, top: int = 5) -> str:
    length = trace.end - trace.start
    lines = [
        f"trace {format_duration(length)}, loop busy {format_percent(trace.utilization)}, "
        f"{count(len(trace.callbacks), 'callback')}, {count(len(trace.tasks), 'task')}"
    ]
    if trace.dropped:
        lines.append(
            f"warning: {trace.dropped} events dropped (the trace buffer wrapped); "
            "this trace starts at the oldest event kept"
        )
    lines += _section("top tasks by running time", _top_tasks(trace, top), len(trace.tasks), top)
    groups = _callback_groups(trace)
    lines += _section("top callbacks by total time", _top_callbacks(groups, top), len(groups), top)
    lines += _section(
        "longest single callbacks and steps", _longest(trace, top), len(trace.callbacks), top
    )
    lags = len(trace.lag_percentiles)
    lines += _section("loop lag", _lag(trace), lags, lags)
    return "\n".join(lines)


def format_duration(seconds: float) -> str:
    """"2.03 s", "12.5 ms", "850 µs": three significant digits or so, in the largest unit that
    keeps the number at 1 or more."""
    if seconds == 0:
        return "0 s"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(seconds) >= scale:
            break
    value = seconds / scale
    digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    return f"{value:.{digits}f} {unit}"


def count(number: int, noun: str) -> str:
    """"1 task", "2 tasks"."""
    return f"{number} {noun}" + ("" if number == 1 else "s")


def format_percent(fraction: float) -> str:
    return f"{fraction * 100:.1f}%"


def format_lag_name(percentile: float) -> str:
    """100 is the maximum: "max"; others "p50", "p99.9"."""
    return "max" if percentile == 100 else f"p{percentile:g}"


def clean(text: str) -> str:
    """`text` on one line of at most `NAME_WIDTH` characters: control characters (a newline in a
    task's name) are shown escaped, so they cannot break the columns."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= NAME_WIDTH else text[: NAME_WIDTH - 1] + "…"


def _section(title: str, rows: List[str], count: int, top: int) -> List[str]:
    if not rows:
        return ["", f"{title}: none"]
    more = [f"  ... and {count - top} more"] if count > top else []
    return ["", title] + rows + more


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int]) -> List[str]:
    """`rows` under `header`, each column as wide as its widest cell; the columns numbered in
    `right` (the figures) are right-aligned."""
    if not rows:
        return []
    cells = [header, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return [
        "  "
        + "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ).rstrip()
        for row in cells
    ]


def _top_tasks(trace: Trace, top: int) -> List[str]:
    running: Dict[int, float] = defaultdict(float)
    steps: Dict[int, int] = defaultdict(int)
    for state in trace.states:
        if state.state == RUNNING:
            running[state.task] += state.end - state.start
            steps[state.task] += 1
    busy = trace.utilization * (trace.end - trace.start)
    ranked = sorted(trace.tasks.values(), key=lambda info: (-running[info.id], info.id))[:top]
    rows = [
        (
            clean(info.name),
            clean(info.coro),
            format_duration(running[info.id]),
            str(steps[info.id]),
            format_percent(running[info.id] / busy) if busy > 0 else "-",
        )
        for info in ranked
    ]
    return _table(("task", "coroutine", "running", "steps", "share of busy"), rows, (2, 3, 4))


def _callback_groups(trace: Trace) -> Dict[str, List[float]]:
    """Each callback name's durations."""
    groups: Dict[str, List[float]] = defaultdict(list)
    for callback in trace.callbacks:
        groups[callback.name].append(callback.end - callback.start)
    return groups


def _top_callbacks(groups: Dict[str, List[float]], top: int) -> List[str]:
    ranked = sorted(groups.items(), key=lambda item: -sum(item[1]))[:top]
    rows = [
        (clean(name), str(len(times)), format_duration(sum(times)), format_duration(max(times)))
        for name, times in ranked
    ]
    return _table(("callback", "calls", "total", "longest"), rows, (1, 2, 3))


def _longest(trace: Trace, top: int) -> List[str]:
    ranked = sorted(trace.callbacks, key=lambda c: c.start - c.end)[:top]
    rows = []
    for callback in ranked:
        info = trace.tasks.get(callback.task) if callback.task is not None else None
        rows.append(
            (
                clean(callback.name),
                clean(info.coro) if info else "",
                format_duration(callback.end - callback.start),
                f"{callback.start:.6f} s",
            )
        )
    return _table(("callback", "coroutine", "duration", "at"), rows, (2, 3))


def _lag(trace: Trace) -> List[str]:
    rows = [
        (format_lag_name(percentile), f"{lag * 1e3:.3f} ms")
        for percentile, lag in sorted(trace.lag_percentiles.items())
    ]
    return _table(("percentile", "lag"), rows, (1,))
