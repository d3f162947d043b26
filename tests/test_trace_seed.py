"""The seed, traced: `python -m ferroloop trace examples/seed.py` shows func1 and func2 each
running, then both waiting on their timers at the same time, then both finishing.

The screenshot in the README is this test's: run it with FERROLOOP_SCREENSHOT=docs/seed-trace.png
(and SEED_SLEEP=2, the seed's own delay) to make it again."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chromium_shot import chromium, screenshot
from pngread import read_png
from test_trace_export import RUNNING_RGB, TIMER_RGB, bands, rows_with_run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def seed_trace(tmp_path_factory):
    out = tmp_path_factory.mktemp("seed") / "seed"
    env = dict(os.environ, SEED_SLEEP=os.environ.get("SEED_SLEEP", "0.5"))
    proc = subprocess.run(
        [sys.executable, "-m", "ferroloop", "trace", "-o", str(out), "examples/seed.py"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc.stderr


def tracks(data):
    """thread name -> its complete events, in time order."""
    names = {
        e["tid"]: e["args"]["name"]
        for e in data["traceEvents"]
        if e["ph"] == "M" and e["name"] == "thread_name"
    }
    out = {}
    for e in data["traceEvents"]:
        if e["ph"] == "X":
            out.setdefault(names[e["tid"]], []).append(e)
    return out


def test_func1_and_func2_wait_on_their_timers_at_the_same_time(seed_trace):
    out, stderr = seed_trace
    data = json.loads(out.with_suffix(".json").read_text())
    by_name = tracks(data)
    func1 = [events for name, events in by_name.items() if "(func1)" in name]
    func2 = [events for name, events in by_name.items() if "(func2)" in name]
    # The seed runs them twice: through run_until_complete(gather()), then ferroloop.run().
    assert len(func1) == len(func2) == 2
    for one, two in zip(func1, func2):
        for events in (one, two):
            assert [e["cat"] for e in events] == ["running", "timer", "running", "done"]
        sleep1, sleep2 = one[1], two[1]
        assert sleep1["dur"] >= 0.4e6 and sleep2["dur"] >= 0.4e6
        # Both sleeps at once: the later one starts before the earlier one ends.
        assert sleep2["ts"] < sleep1["ts"] + sleep1["dur"] and sleep1["ts"] < sleep2["ts"] + sleep2["dur"]
        # ...and both finish after them.
        assert one[-1]["ts"] >= sleep1["ts"] + sleep1["dur"]
        assert two[-1]["ts"] >= sleep2["ts"] + sleep2["dur"]
    assert "func1" in stderr and "func2" in stderr


@pytest.mark.skipif(chromium() is None, reason="no chromium binary (.ci/run installs Debian's)")
def test_the_page_draws_each_task_track(seed_trace, tmp_path):
    out, _ = seed_trace
    png = tmp_path / "seed.png"
    screenshot(str(out.with_suffix(".html")), str(png), width=1200, height=800)
    image = read_png(str(png))
    timer_bands = bands(rows_with_run(image, TIMER_RGB, 300))
    # Four tracks sleep for about half the trace each: func1 and func2, twice.
    assert len(timer_bands) == 4, timer_bands
    running = set(rows_with_run(image, RUNNING_RGB, 1))  # steps are a pixel wide at this scale
    for first, last in timer_bands:
        assert last - first + 1 >= 10
        assert running.issuperset(range(first, last + 1))
    keep = os.environ.get("FERROLOOP_SCREENSHOT")
    if keep:
        shutil.copyfile(png, keep)
