"""`write_html(trace, path)`: a finished trace as one self-contained HTML page: a timeline drawn
on a canvas (a row for the loop thread's callbacks and polls, a row per task colored by state),
with zoom, pan and a tooltip; under it a few headline numbers and the text summary.

The page is `_trace_page.html` (shipped in the package: maturin puts every file of
`python/ferroloop/` in the wheel) with its @@TITLE@@, @@HEADLINE@@, @@SUMMARY@@ and @@DATA@@
marks filled in; it loads nothing from the network. The data sits in a
`<script type="application/json">` block: every "<" in it is written `\\u003c`, so no name in
the trace (a task called "</script>") can end the block early. Text put in the HTML itself is
escaped with `html.escape`.

The data is compact, for traces of many thousand slices: each row's slices are one flat list of
numbers (start, end, kind, label), the kind an index into `kinds` (the task states, then
"callback" and "poll") and the label an index into `labels`, where each distinct text is once.
Times are seconds from the trace's start, to the nanosecond.
"""

import html
import importlib.resources
import json
import re
from typing import Any, Dict, List

from ferroloop._trace_json import task_order, write_atomic
from ferroloop._trace_model import STATES, Trace
from ferroloop._trace_summary import (
    count,
    format_duration,
    format_lag_name,
    format_percent,
    summarize,
)

_MARK = re.compile(r"@@(TITLE|HEADLINE|SUMMARY|DATA)@@")


def write_html(trace: Trace, path: str) -> None:
    write_atomic(path, render_html(trace))


def render_html(trace: Trace) -> str:
    page = importlib.resources.files("ferroloop").joinpath("_trace_page.html").read_text("utf-8")
    length = format_duration(trace.end - trace.start)
    title = f"ferroloop trace: {length}, {count(len(trace.tasks), 'task')}"
    fields = {
        "TITLE": html.escape(title),
        "HEADLINE": _headline(trace),
        "SUMMARY": html.escape(summarize(trace)),
        "DATA": json.dumps(page_data(trace), separators=(",", ":")).replace("<", "\\u003c"),
    }
    # One pass: a replacement is never searched for marks again.
    return _MARK.sub(lambda mark: fields[mark.group(1)], page)


class _Labels:
    """Each distinct text once, by index."""

    def __init__(self) -> None:
        self.texts: List[str] = []
        self._index: Dict[str, int] = {}

    def __call__(self, text: str) -> int:
        if text not in self._index:
            self._index[text] = len(self.texts)
            self.texts.append(text)
        return self._index[text]


def page_data(trace: Trace) -> Dict[str, Any]:
    """What the page's script draws (see the module's doc for the shape)."""
    kinds = list(STATES) + ["callback", "poll"]
    for state in trace.states:
        if state.state not in kinds:
            kinds.append(state.state)
    kind_index = {kind: index for index, kind in enumerate(kinds)}
    labels = _Labels()

    def at(seconds: float) -> float:
        return round(seconds, 9)

    loop = []
    for callback in trace.callbacks:
        info = trace.tasks.get(callback.task) if callback.task is not None else None
        detail = f"{callback.kind} callback" + (f", task {info.name}" if info else "")
        text = labels(f"{callback.name} ({detail})")
        flat = [at(callback.start), at(callback.end), kind_index["callback"], text]
        loop.append((callback.start, flat))
    for poll in trace.polls:
        text = labels(count(poll.events, "event"))
        loop.append((poll.start, [at(poll.start), at(poll.end), kind_index["poll"], text]))
    loop.sort(key=lambda item: item[0])

    slices: Dict[int, List[float]] = {task: [] for task in trace.tasks}
    for state in trace.states:
        if state.task in slices:
            text = labels(state.label or state.state)
            slices[state.task] += [at(state.start), at(state.end), kind_index[state.state], text]
    tasks = [
        {"name": trace.tasks[task].name, "coro": trace.tasks[task].coro, "slices": slices[task]}
        for task in task_order(trace)
    ]
    return {
        "end": at(trace.end),
        "kinds": kinds,
        "labels": labels.texts,
        "loop": [number for _, flat in loop for number in flat],
        "tasks": tasks,
    }


def _headline(trace: Trace) -> str:
    figures = [
        ("length", format_duration(trace.end - trace.start), False),
        ("loop busy", format_percent(trace.utilization), False),
        ("tasks", str(len(trace.tasks)), False),
        ("callbacks", str(len(trace.callbacks)), False),
    ]
    for percentile in (99, 100):
        if percentile in trace.lag_percentiles:
            lag = trace.lag_percentiles[percentile]
            figures.append((f"lag {format_lag_name(percentile)}", f"{lag * 1e3:.3f} ms", False))
    if trace.dropped:
        figures.append(("dropped events", str(trace.dropped), True))
    items = "".join(
        ('<div class="warn">' if warn else "<div>")
        + f"<dt>{html.escape(name)}</dt><dd>{html.escape(value)}</dd></div>"
        for name, value, warn in figures
    )
    return f'<dl class="headline">{items}</dl>'
