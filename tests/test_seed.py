"""The seed's example (examples/seed.py): two coroutines gathered on one thread take one sleep, not
two, both through `python -m ferroloop run` and run directly; and the seed's two classic mistakes
fail exactly as on the stock loop.

Reference: CPython 3.11 asyncio (runners.Runner.run, tasks.gather)."""

import asyncio
import gc
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import ferroloop

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed.py"
SLEEP = 0.3
LINE = re.compile(r"^\s*(\d+) ms  (.*)$")

COMMANDS = {
    "cli": [sys.executable, "-m", "ferroloop", "run", str(SEED)],
    "direct": [sys.executable, str(SEED)],
}


def run_seed(how, *extra):
    env = dict(os.environ, SEED_SLEEP=str(SLEEP), PYTHONWARNINGS="")
    return subprocess.run(
        [*COMMANDS[how], *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def parse_log(text):
    """(milliseconds, message) of every log line in `text`, in order."""
    entries = []
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            entries.append((int(m.group(1)), m.group(2)))
    return entries


def check_run(steps):
    """`steps`: the four (ms, 'step N') entries of one run, in log order."""
    assert [msg for _, msg in steps] == ["step 1", "step 3", "step 2", "step 4"], steps
    t = {msg: ms / 1000 for ms, msg in steps}
    # Both sleeps elapse: step 2 comes a sleep after step 1, step 4 a sleep after step 3.
    assert t["step 2"] - t["step 1"] >= SLEEP - 0.05, steps
    assert t["step 4"] - t["step 3"] >= SLEEP - 0.05, steps
    # One sleep, not two: the two sleeps overlapped.
    assert t["step 4"] - t["step 1"] < 1.5 * SLEEP + 0.25, steps


@pytest.mark.parametrize("how", sorted(COMMANDS))
class TestSeedScript:
    def test_two_runs_each_take_one_sleep(self, how):
        proc = run_seed(how)
        assert proc.returncode == 0, proc.stderr
        log = parse_log(proc.stderr)
        steps = [(ms, msg) for ms, msg in log if msg.startswith("step ")]
        assert len(steps) == 8, proc.stderr
        check_run(steps[:4])
        check_run(steps[4:])
        # The second run starts after the first one ended.
        assert steps[4][0] >= steps[3][0], steps
        messages = [msg for _, msg in log]
        assert any(m.startswith("run_until_complete(gather(...)) took") and m.endswith("on Loop") for m in messages), messages
        assert any(m.startswith("ferroloop.run(run_tasks()) took") for m in messages), messages
        assert "mistake" not in proc.stderr

    def test_reported_durations_are_one_sleep(self, how):
        proc = run_seed(how)
        assert proc.returncode == 0, proc.stderr
        took = [float(x) for x in re.findall(r"took (\d+\.\d+) s", proc.stderr)]
        assert len(took) == 2, proc.stderr
        for seconds in took:
            assert SLEEP - 0.05 <= seconds < 1.5 * SLEEP + 0.25, proc.stderr

    @pytest.mark.nodebug
    def test_mistakes(self, how):
        proc = run_seed(how, "--mistakes")
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout + proc.stderr
        mistake = stock_gather_mistake()
        lines = [normalized_line(line) for line in out.splitlines()]
        assert any(line.endswith(f"run() given a future: {mistake}") for line in lines), out
        assert "RuntimeWarning: coroutine 'func1' was never awaited" in out, out
        # The mistakes come after the two normal runs, which still completed.
        steps = [msg for _, msg in parse_log(proc.stderr) if msg.startswith("step ")]
        assert steps[:8] == ["step 1", "step 3", "step 2", "step 4"] * 2, proc.stderr
        assert out.index("ferroloop.run(run_tasks()) took") < out.index("run() given a future")


def normalized_line(line):
    """`line` without the repr of a task, whose done callback names the running loop's module."""
    return re.sub(r"<Task pending name='Task-\d+' coro=<.*?> cb=\[.*?\]>", "<Task>", line)


def make_funcs(events, sleep):
    async def func1():
        events.append(("step 1", time.monotonic()))
        await asyncio.sleep(sleep)
        events.append(("step 2", time.monotonic()))

    async def func2():
        events.append(("step 3", time.monotonic()))
        await asyncio.sleep(sleep)
        events.append(("step 4", time.monotonic()))

    return func1, func2


class TestSeedInProcess:
    def test_run_until_complete_gather(self, loop):
        events = []
        func1, func2 = make_funcs(events, SLEEP)
        t0 = time.monotonic()
        result = loop.run_until_complete(asyncio.gather(func1(), func2()))
        elapsed = time.monotonic() - t0
        assert result == [None, None]
        assert [name for name, _ in events] == ["step 1", "step 3", "step 2", "step 4"]
        t = dict(events)
        assert t["step 2"] - t["step 1"] >= SLEEP - 0.05
        assert t["step 4"] - t["step 3"] >= SLEEP - 0.05
        assert t["step 4"] - t["step 1"] < 1.5 * SLEEP + 0.25
        assert SLEEP - 0.05 <= elapsed < 10 * SLEEP + 5

    def test_gather_inside_coroutine(self, loop):
        events = []
        func1, func2 = make_funcs(events, SLEEP)

        async def run_tasks():
            return await asyncio.gather(func1(), func2())

        assert loop.run_until_complete(run_tasks()) == [None, None]
        assert [name for name, _ in events] == ["step 1", "step 3", "step 2", "step 4"]
        t = dict(events)
        assert t["step 2"] - t["step 1"] >= SLEEP - 0.05
        assert t["step 4"] - t["step 1"] < 1.5 * SLEEP + 0.25

    def test_ferroloop_run_run_tasks(self):
        events = []
        func1, func2 = make_funcs(events, SLEEP)
        loops = []

        async def run_tasks():
            loops.append(asyncio.get_running_loop())
            await asyncio.gather(func1(), func2())
            return "done"

        assert ferroloop.run(run_tasks()) == "done"
        assert isinstance(loops[0], ferroloop.Loop)
        assert loops[0].is_closed()
        assert [name for name, _ in events] == ["step 1", "step 3", "step 2", "step 4"]
        t = dict(events)
        assert t["step 2"] - t["step 1"] >= SLEEP - 0.05
        assert t["step 4"] - t["step 1"] < 1.5 * SLEEP + 0.25


RUNNERS = {"asyncio": asyncio.run, "ferroloop": ferroloop.run}


def normalized(exc):
    """`Type: message`, with the parts that name the running loop's own code (a task's repr,
    whose done callback lives in the loop's module) left out."""
    return f"{type(exc).__name__}: {normalized_line(str(exc))}"


def _gather_mistake(runner, loop):
    """Passes a gather future (not a coroutine) to `runner`; returns the error, `normalized`."""

    async def child():
        await asyncio.sleep(0)

    asyncio.set_event_loop(loop)  # gather() outside a coroutine takes the current loop
    gathering = asyncio.gather(child(), child())
    try:
        # ValueError before 3.14; from 3.14 the runner awaits it from a task of its own loop.
        with pytest.raises((ValueError, RuntimeError)) as info:
            runner(gathering)
    finally:
        gathering.cancel()
        with pytest.raises(asyncio.CancelledError):
            loop.run_until_complete(gathering)  # lets the cancelled children finish
    return normalized(info.value)


def stock_gather_mistake():
    """What `asyncio.run` says when given a gather future, on this Python."""
    loop = asyncio.SelectorEventLoop()
    try:
        return _gather_mistake(asyncio.run, loop)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


class TestMistakesInProcess:
    @pytest.mark.nodebug
    def test_run_given_gather_future_raises_the_stock_error(self, loop):
        stock = _gather_mistake(asyncio.run, loop)
        ferro = _gather_mistake(ferroloop.run, loop)
        assert "<_GatheringFuture pending>" in stock
        assert ferro == stock
        assert not loop.is_running() and not loop.is_closed()

    def test_run_given_plain_value_raises_the_stock_error(self):
        with pytest.raises((ValueError, TypeError)) as stock:
            asyncio.run(42)
        with pytest.raises(type(stock.value)) as ferro:
            ferroloop.run(42)
        assert str(ferro.value) == str(stock.value)

    @pytest.mark.parametrize("name", sorted(RUNNERS))
    def test_never_awaited_coroutine_warns(self, name):
        async def func1():
            await asyncio.sleep(0)

        async def forgets_await():
            func1()  # the mistake: called, never awaited
            return "returned"

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert RUNNERS[name](forgets_await()) == "returned"
            gc.collect()
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert any("coroutine" in m and "func1' was never awaited" in m for m in messages), [
            (w.category, str(w.message)) for w in caught
        ]
