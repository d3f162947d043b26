"""`ferroloop.watchdog()`: a loop stuck in one callback is reported while it is stuck, with its
thread's stack, once per stall, whether the callback holds the GIL or not.

Each case runs in a child process: the report goes to the child's stderr fd, and the signal
handler the watchdog registers is process-wide. Stalls last several times the threshold, so a
busy machine neither hides one nor invents one."""

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ferroloop

ROOT = Path(__file__).resolve().parent.parent


def run_child(code, *args):
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


PYTHON_STALL = """
    import asyncio, time, ferroloop
    seen = []
    async def sleepy():
        await asyncio.sleep(0.01)
        time.sleep(1.0)  # stuck_here
    async def main():
        await asyncio.create_task(sleepy(), name="sleepy")
    with ferroloop.watchdog(0.2, callback=seen.append):
        ferroloop.run(main())
    (stall,) = seen
    print(stall.task_name, stall.ongoing, stall.seconds >= 0.2, stall.stack[-1].name,
          stall.stack[-1].lineno, stall.thread_id == __import__("threading").get_ident(),
          type(stall.loop).__name__)
"""


def test_a_stall_in_python_is_reported_with_stack_and_task_while_it_lasts():
    proc = run_child(PYTHON_STALL)
    assert proc.stdout.split() == [
        "sleepy", "True", "True", "sleepy", "6", "True", "Loop"
    ]
    err = proc.stderr
    assert err.count("has been running one callback for") == 1
    assert "Stack (most recent call first):" in err
    assert 'line 6 in sleepy' in err
    assert "the running task is 'sleepy'" in err
    # The stack came before the stall ended.
    assert err.index("line 6 in sleepy") < err.index("went on after")


C_STALL = """
    import asyncio, math, re, time, ferroloop
    pattern = re.compile(r"(x+x+)+y")
    def cost(n):
        started = time.perf_counter()
        pattern.match("x" * n)
        return time.perf_counter() - started
    n = 12
    while cost(n) < 0.05:
        n += 1
    n += math.ceil(math.log2(1.2 / cost(n)))  # about 1.2 s in one C call that holds the GIL
    seen = []
    async def matcher():
        pattern.match("x" * n)
    with ferroloop.watchdog(0.2, callback=seen.append):
        ferroloop.run(matcher())
        ferroloop.run(asyncio.sleep(0.3))  # room for the end-of-stall line
    (stall,) = seen
    print(stall.ongoing, stall.stack is None or stall.stack[-1].name == "matcher")
"""


def test_a_stall_in_c_code_holding_the_gil_still_gets_its_stack():
    proc = run_child(C_STALL)
    # The Python side gets the GIL when the C call lets go of it: normally once the stall is
    # over (ongoing False, no stack), but the stack written from the signal handler came first.
    ongoing, consistent = proc.stdout.split()
    assert consistent == "True"
    err = proc.stderr
    assert err.count("has been running one callback for") == 1
    assert "line 14 in matcher" in err
    assert err.index("line 14 in matcher") < err.index("went on after")


QUIET = """
    import asyncio, ferroloop
    async def main():
        for _ in range(200):
            await asyncio.sleep(0.005)  # short callbacks, long idle waits
        await asyncio.sleep(0.8)
    with ferroloop.watchdog(0.5):
        ferroloop.run(main())
    print("done")
"""


def test_an_idle_or_busy_but_responsive_loop_is_never_reported():
    proc = run_child(QUIET)
    assert proc.stdout.strip() == "done"
    assert "watchdog" not in proc.stderr


TWO_STALLS = """
    import asyncio, time, ferroloop
    seen = []
    def stuck():
        time.sleep(0.6)
    async def main():
        loop = asyncio.get_running_loop()
        loop.call_soon(stuck)
        await asyncio.sleep(0.2)
        loop.call_soon(stuck)
        await asyncio.sleep(0.2)
    with ferroloop.watchdog(0.15, callback=seen.append):
        ferroloop.run(main())
    print(len(seen), [s.task for s in seen], [s.stack[-1].name for s in seen])
"""


def test_each_stall_is_reported_once_and_a_plain_callback_has_no_task():
    proc = run_child(TWO_STALLS)
    assert proc.stdout.strip() == "2 [None, None] ['stuck', 'stuck']"
    assert proc.stderr.count("has been running one callback for") == 2
    assert proc.stderr.count("went on after") == 2
    assert "the running task" not in proc.stderr


FAILING_CALLBACK = """
    import sys, time, ferroloop
    hooked = []
    sys.unraisablehook = hooked.append
    def fail(stall):
        raise ValueError("callback failed")
    with ferroloop.watchdog(0.1, file=None, callback=fail):
        loop = ferroloop.new_event_loop()
        loop.call_soon(time.sleep, 0.5)
        loop.call_soon(loop.stop)
        loop.run_forever()
        loop.call_soon(time.sleep, 0.5)
        loop.call_soon(loop.stop)
        loop.run_forever()
        loop.close()
    print(len(hooked), type(hooked[0].exc_value).__name__)
"""


def test_a_failing_callback_is_reported_and_the_watchdog_goes_on():
    proc = run_child(FAILING_CALLBACK)
    assert proc.stdout.strip() == "2 ValueError"
    assert proc.stderr == ""  # file=None: nothing written


def test_bad_arguments_get_clear_errors():
    with pytest.raises(ValueError, match="positive"):
        ferroloop.watchdog(0)
    with pytest.raises(ValueError, match="positive"):
        ferroloop.watchdog(-1.0)
    with pytest.raises(TypeError, match="number of seconds"):
        ferroloop.watchdog("1")
    with pytest.raises(TypeError, match="A callable object or None is expected"):
        ferroloop.watchdog(1.0, callback=42)
    with pytest.raises(ValueError, match="file descriptor"):
        ferroloop.watchdog(1.0, file=io.StringIO())


def test_one_watchdog_at_a_time_and_it_stops_cleanly():
    with ferroloop.watchdog(5.0, file=None):
        with pytest.raises(RuntimeError, match="already running"):
            with ferroloop.watchdog(5.0, file=None):
                pass
    with ferroloop.watchdog(5.0, file=None):
        assert ferroloop.run(_answer()) == 42


async def _answer():
    return 42


def test_the_command_line_watchdog(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text("import asyncio, time\nasync def main():\n    time.sleep(0.8)\nasyncio.run(main())\n")
    proc = subprocess.run(
        [sys.executable, "-m", "ferroloop", "run", "--watchdog", "0.2", str(script)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "has been running one callback for" in proc.stderr
    assert "line 3 in main" in proc.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "ferroloop", "run", "--watchdog", "soon", str(script)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert bad.returncode == 2
    assert "--watchdog needs a positive number of seconds" in bad.stderr
