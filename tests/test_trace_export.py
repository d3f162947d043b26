"""The trace exporters, on synthetic `Trace` objects: the Chrome Trace Event JSON (for Perfetto),
the self-contained HTML timeline, and the terminal summary.

The traces are built by hand from the model (`_trace_model`), so these tests need no recorder:
the seed's shape (two tasks that run, both sleep 2 s at once, run again and finish), a trace
with no tasks, one whose ring buffer dropped events, and one whose names are hostile (quotes,
"</script>", a newline, non-ASCII). The HTML page is also rendered in headless Chromium, and
its screenshot's pixels checked for the task rows' colors; that part is skipped only where no
Chromium is installed.
"""

import html
import json
import os
import re

import pytest

from chromium_shot import chromium, dump_dom, screenshot
from ferroloop._trace_html import page_data, write_html
from ferroloop._trace_json import LOOP_TID, TASK_TID_BASE, write_atomic, write_json
from ferroloop._trace_model import (
    DONE,
    READY,
    RUNNING,
    WAIT_IO,
    WAIT_TIMER,
    Callback,
    Poll,
    TaskInfo,
    TaskState,
    Trace,
    Transfer,
)
from ferroloop._trace_summary import summarize
from pngread import read_png

needs_chromium = pytest.mark.skipif(
    chromium() is None, reason="no chromium or chromium-browser binary on PATH (CI installs it)"
)

# The page's colors for the two states the screenshot test looks for (_trace_page.html).
RUNNING_RGB = (0x2E, 0x9E, 0x44)
TIMER_RGB = (0xF0, 0x8A, 0x24)
POLL_RGB = (0xC3, 0xCC, 0xD7)


def tile(task, start, pieces):
    """A task's states, one after the other from `start`: `pieces` are (state, label, seconds)."""
    states = []
    for state, label, seconds in pieces:
        states.append(TaskState(task, start, start + seconds, state, label))
        start += seconds
    return states


def make_trace(
    tasks, states, callbacks=(), polls=(), transfers=(), ready_queue=(), end=None, dropped=0
):
    states = sorted(states, key=lambda s: s.start)
    end = end if end is not None else max([s.end for s in states] + [0.0])
    callbacks = sorted(callbacks, key=lambda c: c.start)
    busy = sum(c.end - c.start for c in callbacks)
    return Trace(
        start=0.0,
        end=end,
        wall_start=1_700_000_000.0,
        pid=4242,
        thread=139_000_000,
        tasks={info.id: info for info in tasks},
        states=states,
        callbacks=callbacks,
        polls=sorted(polls, key=lambda p: p.start),
        transfers=list(transfers),
        ready_queue=list(ready_queue),
        dropped=dropped,
        utilization=busy / end if end else 0.0,
        lag_percentiles={50: 0.00005, 90: 0.0002, 99: 0.0011, 100: 0.0042},
    )


def seed_trace():
    """The seed's shape: func1 and func2 each run, both wait on a 2 s timer at the same time, then
    each runs again and is done."""
    states = tile(
        1,
        0.0,
        [
            (READY, "step", 0.002),
            (RUNNING, "step", 0.030),
            (WAIT_TIMER, "sleep (timer)", 2.002),
            (READY, "wakeup", 0.001),
            (RUNNING, "wakeup", 0.025),
            (DONE, "done", 0.0),
        ],
    ) + tile(
        2,
        0.0,
        [
            (READY, "step", 0.032),
            (RUNNING, "step", 0.040),
            (WAIT_TIMER, "sleep (timer)", 2.002),
            (READY, "wakeup", 0.026),
            (RUNNING, "wakeup", 0.025),
            (DONE, "done", 0.0),
        ],
    )
    callbacks = [
        Callback(0.002, 0.032, "func1 step", 1, "ready"),
        Callback(0.032, 0.072, "func2 step", 2, "ready"),
        Callback(2.0339, 2.034, "_set_result_unless_cancelled", None, "timer"),
        Callback(2.035, 2.060, "func1 step", 1, "ready"),
        Callback(2.074, 2.0741, "_set_result_unless_cancelled", None, "timer"),
        Callback(2.1, 2.125, "func2 step", 2, "ready"),
    ]
    polls = [
        Poll(start, end, 0)
        for start, end in ((0.0, 0.002), (0.072, 2.0339), (2.06, 2.074), (2.0741, 2.1))
    ]
    transfers = [
        Transfer(0.01, "fd 7 127.0.0.1:54321", "write", 100),
        Transfer(0.02, "fd 7 127.0.0.1:54321", "read", 40),
        Transfer(2.05, "fd 7 127.0.0.1:54321", "read", 60),
    ]
    ready_queue = [(0.0, 2), (0.032, 1), (0.072, 0), (2.034, 1), (2.060, 0), (2.0741, 1)]
    tasks = [TaskInfo(1, "func1", "func1"), TaskInfo(2, "func2", "func2")]
    return make_trace(tasks, states, callbacks, polls, transfers, ready_queue, end=2.13)


def empty_trace():
    return make_trace([], [], polls=[Poll(0.0, 0.5, 0)], end=0.5)


def dropped_trace():
    """The ring buffer wrapped: the task is already waiting on I/O when the trace starts."""
    states = tile(7, 0.0, [(WAIT_IO, "StreamReader.read (I/O)", 0.3), (RUNNING, "wakeup", 0.01)])
    states += tile(7, 0.31, [(DONE, "done", 0.0)])
    callbacks = [Callback(0.3, 0.31, "Task-7 step", 7, "ready")]
    return make_trace([TaskInfo(7, "Task-7", "handler")], states, callbacks, end=0.4, dropped=1234)


WEIRD_NAME = 'say "hi" </script><script>alert(1)</script> \\ @@DATA@@'
WEIRD_CORO = "Ünïcode.κορουτίνα 🚀"


def weird_trace():
    states = tile(3, 0.0, [(RUNNING, "</script> \"step\" ☃", 0.01), (DONE, "done", 0.0)])
    states += tile(4, 0.0, [(READY, "step", 0.01), (RUNNING, "step", 0.02), (DONE, "done", 0.0)])
    callbacks = [
        Callback(0.0, 0.01, WEIRD_NAME + " step", 3, "ready"),
        Callback(0.01, 0.03, "line\nbreak step", 4, "ready"),
    ]
    tasks = [TaskInfo(3, WEIRD_NAME, WEIRD_CORO), TaskInfo(4, "line\nbreak", "<coro>")]
    return make_trace(tasks, states, callbacks, end=0.05)


ALL_TRACES = {
    "seed": seed_trace, "empty": empty_trace, "dropped": dropped_trace, "weird": weird_trace
}


@pytest.fixture(params=sorted(ALL_TRACES))
def any_trace(request):
    return ALL_TRACES[request.param]()


def load_json(trace, tmp_path):
    path = tmp_path / "trace.json"
    write_json(trace, str(path))
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def html_of(trace, tmp_path):
    path = tmp_path / "trace.html"
    write_html(trace, str(path))
    return path, path.read_text(encoding="utf-8")


def embedded_data(page):
    match = re.search(r'<script type="application/json" id="trace-data">(.*?)</script>', page, re.S)
    assert match, "no data block in the page"
    return json.loads(match.group(1))


# The JSON (Chrome Trace Event Format)


def test_json_is_the_object_form(any_trace, tmp_path):
    doc = load_json(any_trace, tmp_path)
    assert set(doc) == {"traceEvents", "displayTimeUnit", "otherData"}
    assert doc["displayTimeUnit"] == "ms"
    other = doc["otherData"]
    assert other["dropped_events"] == any_trace.dropped
    assert other["utilization"] == pytest.approx(any_trace.utilization)
    assert other["lag_p50_ms"] == pytest.approx(0.05)
    assert other["lag_p99_ms"] == pytest.approx(1.1)
    assert other["lag_max_ms"] == pytest.approx(4.2)


def test_json_events_have_the_fields_of_their_phase(any_trace, tmp_path):
    for event in load_json(any_trace, tmp_path)["traceEvents"]:
        assert {"name", "ph", "pid", "tid", "ts"} <= set(event), event
        assert event["pid"] == any_trace.pid
        assert isinstance(event["ts"], (int, float))
        if event["ph"] == "X":
            assert isinstance(event["dur"], (int, float)) and event["dur"] >= 0, event
            assert isinstance(event["cat"], str) and isinstance(event["args"], dict)
        elif event["ph"] == "C":
            values = event["args"].values()
            assert values and all(isinstance(v, (int, float)) for v in values), event
        elif event["ph"] == "M":
            key = "sort_index" if event["name"].endswith("_sort_index") else "name"
            assert event["name"] in ("process_name", "thread_name", "thread_sort_index")
            assert key in event["args"], event
        else:
            pytest.fail(f"unexpected phase {event['ph']!r}")


def test_json_events_are_sorted_by_time_after_the_metadata(any_trace, tmp_path):
    events = load_json(any_trace, tmp_path)["traceEvents"]
    phases = [event["ph"] for event in events]
    metadata = phases.count("M")
    assert set(phases[:metadata]) == {"M"} and "M" not in phases[metadata:]
    times = [event["ts"] for event in events[metadata:]]
    assert times == sorted(times)


def test_json_task_tracks_tile_without_overlap(any_trace, tmp_path):
    tracks = {}
    for event in load_json(any_trace, tmp_path)["traceEvents"]:
        if event["ph"] == "X" and event["tid"] >= TASK_TID_BASE:
            tracks.setdefault(event["tid"], []).append(event)
    assert sorted(tracks) == sorted({TASK_TID_BASE + s.task for s in any_trace.states})
    for tid, events in tracks.items():
        assert len(events) == sum(1 for s in any_trace.states if TASK_TID_BASE + s.task == tid)
        events.sort(key=lambda e: e["ts"])
        for before, after in zip(events, events[1:]):
            assert after["ts"] >= before["ts"] + before["dur"] - 1e-6, (before, after)
        # Tiled: from the first state's start to the last's end, no gap either.
        assert sum(e["dur"] for e in events) == pytest.approx(
            events[-1]["ts"] + events[-1]["dur"] - events[0]["ts"], abs=1e-3
        )


def test_json_names_every_track(any_trace, tmp_path):
    events = load_json(any_trace, tmp_path)["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    order = {e["tid"]: e["args"]["sort_index"] for e in events if e["name"] == "thread_sort_index"}
    assert [e["args"]["name"] for e in events if e["name"] == "process_name"] == ["ferroloop"]
    assert names[LOOP_TID] == "event loop"
    for info in any_trace.tasks.values():
        assert names[TASK_TID_BASE + info.id] == f"{info.name} ({info.coro})"
    assert set(order) == set(names)
    assert len(set(order.values())) == len(order)


def test_json_seed_trace_content(tmp_path):
    trace = seed_trace()
    events = load_json(trace, tmp_path)["traceEvents"]
    order = {e["tid"]: e["args"]["sort_index"] for e in events if e["name"] == "thread_sort_index"}
    assert order[LOOP_TID] < order[TASK_TID_BASE + 1] < order[TASK_TID_BASE + 2]
    timers = [e for e in events if e["ph"] == "X" and e["cat"] == WAIT_TIMER]
    assert [e["tid"] for e in timers] == [TASK_TID_BASE + 1, TASK_TID_BASE + 2]
    assert all(e["name"] == "sleep (timer)" for e in timers)
    assert all(e["dur"] == pytest.approx(2_002_000) for e in timers)  # microseconds
    assert all(e["args"] == {"state": WAIT_TIMER} for e in timers)
    done = [e for e in events if e["ph"] == "X" and e["cat"] == DONE]
    assert len(done) == 2 and all(e["dur"] == 0 for e in done)

    loop = [e for e in events if e["ph"] == "X" and e["tid"] == LOOP_TID]
    callbacks = [e for e in loop if e["cat"] == "callback"]
    assert len(callbacks) == len(trace.callbacks)
    assert callbacks[0]["name"] == "func1 step"
    assert callbacks[0]["args"] == {"kind": "ready", "task": "func1"}
    assert callbacks[2]["args"] == {"kind": "timer", "task": None}
    polls = [e for e in loop if e["cat"] == "poll"]
    assert [e["name"] for e in polls] == ["poll"] * 4 and polls[0]["args"] == {"events": 0}
    # The loop thread runs one thing at a time.
    loop.sort(key=lambda e: e["ts"])
    for before, after in zip(loop, loop[1:]):
        assert after["ts"] >= before["ts"] + before["dur"] - 1e-6

    ready = [e for e in events if e["ph"] == "C" and e["name"] == "ready queue"]
    assert [e["args"]["length"] for e in ready] == [n for _, n in trace.ready_queue]
    transferred = [e["args"] for e in events if e["ph"] == "C" and e["name"] == "bytes"]
    assert transferred[0] == {"read": 0, "written": 0}
    assert transferred[-1] == {"read": 100, "written": 100}


def test_json_keeps_hostile_names(tmp_path):
    events = load_json(weird_trace(), tmp_path)["traceEvents"]
    names = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert f"{WEIRD_NAME} ({WEIRD_CORO})" in names
    assert "line\nbreak (<coro>)" in names
    assert any(e["name"] == WEIRD_NAME + " step" for e in events if e["ph"] == "X")


def test_write_is_atomic(tmp_path, monkeypatch):
    """An interruption while writing leaves the old file whole, and no temporary file behind."""
    path = tmp_path / "trace.json"
    write_json(seed_trace(), str(path))
    before = path.read_bytes()

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_json(empty_trace(), str(path))
    with pytest.raises(KeyboardInterrupt):
        write_html(empty_trace(), str(tmp_path / "trace.html"))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["trace.json"]


def test_write_atomic_replaces_the_whole_file(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("an old and much longer content\n" * 100)
    write_atomic(str(path), "new ☃")
    assert path.read_text(encoding="utf-8") == "new ☃"
    assert os.listdir(tmp_path) == ["out.txt"]


# The HTML page


def test_html_is_self_contained(any_trace, tmp_path):
    _, page = html_of(any_trace, tmp_path)
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)
    assert '<canvas id="timeline">' in page
    assert "dataset.rendered" in page


def test_html_embeds_the_data(tmp_path):
    trace = seed_trace()
    _, page = html_of(trace, tmp_path)
    data = embedded_data(page)
    assert data == json.loads(json.dumps(page_data(trace)))
    assert [(t["name"], t["coro"]) for t in data["tasks"]] == [("func1",) * 2, ("func2",) * 2]
    timer = data["kinds"].index(WAIT_TIMER)
    for task in data["tasks"]:
        slices = [task["slices"][i : i + 4] for i in range(0, len(task["slices"]), 4)]
        assert len(slices) == 6
        assert [data["labels"][s[3]] for s in slices if s[2] == timer] == ["sleep (timer)"]
    assert len(data["loop"]) == 4 * (len(trace.callbacks) + len(trace.polls))
    assert data["end"] == pytest.approx(2.13)


def test_html_escapes_hostile_names(tmp_path):
    _, page = html_of(weird_trace(), tmp_path)
    # Only the page's own two script blocks end; the data cannot close one early.
    assert page.count("</script>") == 2
    assert "<script>alert(1)" not in page
    data = embedded_data(page)
    assert data["tasks"][0]["name"] == WEIRD_NAME
    assert data["tasks"][0]["coro"] == WEIRD_CORO
    assert "</script> \"step\" ☃" in data["labels"]
    # The summary and headline are HTML-escaped text.
    assert "say &quot;hi&quot; &lt;/script&gt;" in page


def test_html_headline_numbers(tmp_path):
    _, page = html_of(seed_trace(), tmp_path)
    assert "<dt>loop busy</dt><dd>5.6%</dd>" in page
    assert "<dt>tasks</dt><dd>2</dd>" in page
    assert "dropped" not in page.split('<pre id="summary">')[0]
    _, page = html_of(dropped_trace(), tmp_path)
    assert '<div class="warn"><dt>dropped events</dt><dd>1234</dd></div>' in page


def test_html_shows_the_summary(tmp_path):
    trace = seed_trace()
    _, page = html_of(trace, tmp_path)
    match = re.search(r'<pre id="summary">(.*?)</pre>', page, re.S)
    assert match and match.group(1) == summarize(trace)  # nothing in it to escape


# The summary


def test_summary_figures():
    trace = seed_trace()
    text = summarize(trace)
    first = text.splitlines()[0]
    assert first == "trace 2.13 s, loop busy 5.6%, 6 callbacks, 2 tasks"
    assert "warning" not in text
    assert "\x1b" not in text
    lines = text.splitlines()
    tasks = lines[lines.index("top tasks by running time") + 1 :][:3]
    assert tasks[0].split() == ["task", "coroutine", "running", "steps", "share", "of", "busy"]
    # func2 ran 65 ms, func1 55 ms, of 120.2 ms busy.
    assert tasks[1].split() == ["func2", "func2", "65.0", "ms", "2", "54.1%"]
    assert tasks[2].split() == ["func1", "func1", "55.0", "ms", "2", "45.8%"]
    callbacks = lines[lines.index("top callbacks by total time") + 1 :][:4]
    assert callbacks[1].split() == ["func2", "step", "2", "65.0", "ms", "40.0", "ms"]
    assert callbacks[3].split()[:2] == ["_set_result_unless_cancelled", "2"]
    longest = lines[lines.index("longest single callbacks and steps") + 1 :][:2]
    assert longest[1].split() == ["func2", "step", "func2", "40.0", "ms", "0.032000", "s"]
    lag = lines[lines.index("loop lag") + 1 :]
    assert [line.split() for line in lag[1:]] == [
        ["p50", "0.050", "ms"],
        ["p90", "0.200", "ms"],
        ["p99", "1.100", "ms"],
        ["max", "4.200", "ms"],
    ]


def test_summary_columns_align():
    lines = summarize(seed_trace()).splitlines()
    for title in ("top tasks by running time", "top callbacks by total time", "loop lag"):
        start = lines.index(title) + 1
        table = []
        while start < len(lines) and lines[start].startswith("  "):
            table.append(lines[start])
            start += 1
        # The last column is a right-aligned figure: every line of a table ends at the same place.
        assert len({len(line) for line in table}) == 1, table


def test_summary_of_edge_cases():
    text = summarize(empty_trace())
    assert text.splitlines()[0] == "trace 500 ms, loop busy 0.0%, 0 callbacks, 0 tasks"
    assert "top tasks by running time: none" in text
    text = summarize(dropped_trace())
    assert text.splitlines()[1].startswith("warning: 1234 events dropped")
    text = summarize(weird_trace())
    assert "line\\nbreak" in text and "line\nbreak" not in text
    assert WEIRD_CORO in text


def test_summary_top_limits_rows():
    lines = summarize(seed_trace(), top=1).splitlines()
    start = lines.index("top tasks by running time")
    assert lines[start + 1 : start + 4] == [lines[start + 1], lines[start + 2], "  ... and 1 more"]


# In a browser


@needs_chromium
@pytest.mark.parametrize("name", sorted(ALL_TRACES))
def test_page_renders_in_chromium(name, tmp_path):
    """The script runs to its end (it sets data-rendered after the first draw) on every trace."""
    path, _ = html_of(ALL_TRACES[name](), tmp_path)
    dom = dump_dom(str(path))
    assert re.search(r'<body[^>]*data-rendered="1"', dom), dom[:2000]
    assert dom.count('class="legend"') == 1 and "waiting on a timer" in dom


def rows_with_run(image, rgb, length):
    """The y of every pixel row holding at least `length` pixels of color `rgb` side by side."""
    pixel = bytes(rgb) + (b"\xff" if image.channels == 4 else b"")
    run = pixel * length
    return [y for y in range(image.height) if run in image.rows[y]]


def bands(ys):
    """Consecutive rows grouped: [(first, last), ...]."""
    groups = []
    for y in ys:
        if groups and y == groups[-1][1] + 1:
            groups[-1][1] = y
        else:
            groups.append([y, y])
    return [tuple(group) for group in groups]


@needs_chromium
def test_screenshot_shows_the_task_rows(tmp_path):
    """At 1200x800, the seed trace's two task rows are drawn: each a band of pixel rows with a long
    run of the timer's orange (the 2 s sleep, most of the width; the legend's swatch is short)
    and the running green beside it; the loop thread's poll wait is a long band above them."""
    path, _ = html_of(seed_trace(), tmp_path)
    png = tmp_path / "trace.png"
    screenshot(str(path), str(png), width=1200, height=800)
    image = read_png(str(png))
    assert (image.width, image.height) == (1200, 800)

    timer_bands = bands(rows_with_run(image, TIMER_RGB, 300))
    assert len(timer_bands) == 2, timer_bands
    running = set(rows_with_run(image, RUNNING_RGB, 5))
    for first, last in timer_bands:
        assert last - first + 1 >= 10, timer_bands  # a bar, not a hairline
        assert running.issuperset(range(first, last + 1)), (first, last)
    poll_bands = bands(rows_with_run(image, POLL_RGB, 300))
    assert len(poll_bands) == 1 and poll_bands[0][1] < timer_bands[0][0], (poll_bands, timer_bands)


# Drives the page as a user would, with synthetic events, and leaves what the tooltip said in
# data-probe. Pixel positions come from the page's layout: a 230 px label column, then rows of
# 22 px under a 24 px axis; the loop row first, a 6 px gap, then the tasks (func2 second).
PROBE = """<script>
(function () {
  const canvas = document.getElementById("timeline"), r = canvas.getBoundingClientRect();
  const plot = r.width - 230, end = 2.13;
  const x = (t, t0, t1) => r.left + 230 + (t - t0) / (t1 - t0) * plot;
  const func2 = r.top + 24 + 22 + 6 + 22 + 11, loop = r.top + 24 + 11;
  const send = (type, cx, cy, extra) => canvas.dispatchEvent(new (extra ? WheelEvent : MouseEvent)(
    type, Object.assign({ bubbles: true, cancelable: true, clientX: cx, clientY: cy }, extra)));
  const tip = () => document.getElementById("tip").textContent;
  const out = {};
  const at = x(0.784, 0, end);  // at 784 ms, func2 sleeps
  send("mousemove", at, func2);
  out.fit = tip();
  send("mousemove", x(1.0, 0, end), loop);
  out.loop = tip();
  // Zoom in 20 times (e^-3) around 11.4 ms: the same pixel is now at about 50 ms, func2 runs.
  send("wheel", x(0.0114, 0, end), func2, { deltaY: -2000 });
  send("mousemove", at, func2);
  out.zoomed = tip();
  // Drag left by 30% of the plot: the view moves about 32 ms later, past func2's step.
  send("mousedown", at, func2);
  send("mousemove", at - 0.3 * plot, func2);
  send("mouseup", at - 0.3 * plot, func2);
  send("mousemove", at, func2);
  out.panned = tip();
  document.body.dataset.probe = JSON.stringify(out);
})();
</script>
"""


@needs_chromium
def test_page_tooltip_zoom_and_pan(tmp_path):
    path, page = html_of(seed_trace(), tmp_path)
    path.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = dump_dom(str(path))
    match = re.search(r'data-probe="([^"]*)"', dom)
    assert match, dom[-3000:]
    probe = json.loads(html.unescape(match.group(1)))
    sleeping = "waiting on a timer\nsleep (timer)\nfunc2 (func2)\nstart 72.00 ms, duration 2.002 s"
    assert probe["fit"] == sleeping
    assert probe["loop"] == "poll wait\n0 events\nevent loop\nstart 72.00 ms, duration 1.962 s"
    assert probe["zoomed"] == "running\nstep\nfunc2 (func2)\nstart 32.00 ms, duration 40.00 ms"
    assert probe["panned"] == sleeping


@needs_chromium
def test_screenshot_shows_a_task_at_the_very_end(tmp_path):
    """A task that lives only in the trace's last 5 µs still gets pixels: at the plot's right edge,
    where the loop thread's poll wait (which lasts the whole trace) ends too."""
    states = tile(1, 1.999995, [(RUNNING, "step", 0.000005), (DONE, "done", 0.0)])
    callbacks = [Callback(1.999995, 2.0, "Task-1 step", 1, "ready")]
    trace = make_trace([TaskInfo(1, "Task-1", "late")], states, callbacks, [Poll(0.0, 1.999995, 0)])
    path, _ = html_of(trace, tmp_path)
    png = tmp_path / "trace.png"
    screenshot(str(path), str(png))
    image = read_png(str(png))
    poll_rows = rows_with_run(image, POLL_RGB, 300)
    assert poll_rows
    y = poll_rows[0]
    edge = max(x for x in range(image.width) if image.pixel(x, y) == POLL_RGB)
    below = range(poll_rows[-1] + 1, image.height)
    green = [y for y in below if image.pixel(edge + 1, y) == RUNNING_RGB]
    assert len(green) >= 10, (edge, green)
