"""Signals while the loop waits: Ctrl-C (SIGINT) ends a blocked loop with KeyboardInterrupt, and
Python-level signal handlers run while the loop is blocked. Each case runs in a child process,
on the stock loop and on ferroloop, with the parent sending the signal once the child's loop is
running.

Reference: CPython 3.11 asyncio (runners.Runner._on_sigint, base_events.run_forever)."""

import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HANG_GUARD = 20.0
LOOPS = ["asyncio", "ferroloop"]

PRELUDE = textwrap.dedent(
    """
    import asyncio
    import signal
    import sys

    import ferroloop

    # Python installs this handler at start-up only when SIGINT is not ignored; a test run started
    # in the background by a non-interactive shell inherits SIGINT ignored. Install it for sure.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    LOOP_NAME = sys.argv[1]

    def new_loop():
        if LOOP_NAME == "ferroloop":
            return ferroloop.new_event_loop()
        return asyncio.new_event_loop()

    def runner(coro):
        if LOOP_NAME == "ferroloop":
            return ferroloop.run(coro)
        return asyncio.run(coro)

    def say(*words):
        print(*words, flush=True)
    """
)

SCRIPTS = {
    # A loop blocked in run_forever with nothing to do at all.
    "run_forever": """
        loop = new_loop()
        loop.call_soon(say, "ready")
        loop.run_forever()
        say("run_forever returned")
    """,
    # A loop blocked in run_forever on a timer a minute away.
    "run_forever_timer": """
        loop = new_loop()
        loop.call_later(60, say, "timer fired")
        loop.call_soon(say, "ready")
        loop.run_forever()
        say("run_forever returned")
    """,
    # run_until_complete of a long sleep.
    "sleep": """
        loop = new_loop()
        loop.call_soon(say, "ready")
        loop.run_until_complete(asyncio.sleep(60))
        say("sleep finished")
    """,
    # asyncio.run / ferroloop.run: the runner cancels the main task, then raises KeyboardInterrupt.
    "runner": """
        async def main():
            say("ready", type(asyncio.get_running_loop()).__module__)
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                say("main cancelled")
                raise
            say("main finished")

        runner(main())
        say("runner returned")
    """,
    # KeyboardInterrupt caught: the loop is left stopped and usable, the wake-up fd restored.
    "recover": """
        loop = new_loop()
        loop.call_soon(say, "ready")
        try:
            loop.run_forever()
        except KeyboardInterrupt:
            say("caught KeyboardInterrupt")
        say("running", loop.is_running(), "closed", loop.is_closed())
        say("wakeup fd", signal.set_wakeup_fd(-1))
        say("result", loop.run_until_complete(asyncio.sleep(0.01, result="again")))
        loop.close()
    """,
    # A Python signal handler runs while the loop waits and stops the loop.
    "sigusr1": """
        loop = new_loop()

        def handler(signum, frame):
            say("handler ran", signum)
            loop.call_soon_threadsafe(loop.stop)

        signal.signal(signal.SIGUSR1, handler)
        loop.call_soon(say, "ready")
        loop.run_forever()
        say("stopped")
        loop.close()
    """,
    "sigusr1_timer": """
        loop = new_loop()

        def handler(signum, frame):
            say("handler ran", signum)
            loop.call_soon_threadsafe(loop.stop)

        signal.signal(signal.SIGUSR1, handler)
        loop.call_later(60, say, "timer fired")
        loop.call_soon(say, "ready")
        loop.run_forever()
        say("stopped")
        loop.close()
    """,
    # The handler runs while the loop waits in run_until_complete, and can itself complete the future.
    "sigusr1_future": """
        loop = new_loop()
        fut = loop.create_future()

        def handler(signum, frame):
            say("handler ran", signum)
            loop.call_soon_threadsafe(fut.set_result, "from handler")

        signal.signal(signal.SIGUSR1, handler)
        loop.call_soon(say, "ready")
        say("result", loop.run_until_complete(fut))
        loop.close()
    """,
}


class Child:
    def __init__(self, script, loop_name):
        code = PRELUDE + textwrap.dedent(SCRIPTS[script])
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, loop_name],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        self.out = b""

    def wait_for_ready(self):
        deadline = time.monotonic() + HANG_GUARD
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:  # not select.select: fds may be above 1024
            sel.register(fd, selectors.EVENT_READ)
            while b"ready" not in self.out:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.kill()
                    pytest.fail(f"child never printed ready; stdout so far {self.out!r}")
                if sel.select(left):
                    chunk = os.read(fd, 4096)
                    if not chunk:
                        err = self.proc.stderr.read()
                        pytest.fail(f"child exited before ready: {self.out!r} {err!r}")
                    self.out += chunk
        # The line is printed from a callback; give the loop a moment to enter its wait.
        time.sleep(0.2)

    def finish(self):
        """(returncode, stdout, stderr, seconds to exit); fails the test if the child hangs."""
        t0 = time.monotonic()
        try:
            out, err = self.proc.communicate(timeout=HANG_GUARD)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"child still running {HANG_GUARD} s after the signal; stdout {self.out!r}")
        return self.proc.returncode, (self.out + out).decode(), err.decode(), time.monotonic() - t0

    def kill(self):
        self.proc.kill()
        self.proc.communicate()


def interrupt(script, loop_name, signum=signal.SIGINT):
    child = Child(script, loop_name)
    child.wait_for_ready()
    child.proc.send_signal(signum)
    return child.finish()


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("script", ["run_forever", "run_forever_timer", "sleep"])
def test_sigint_interrupts_blocked_loop(script, loop_name):
    rc, out, err, elapsed = interrupt(script, loop_name)
    assert "KeyboardInterrupt" in err, (rc, out, err)
    assert err.rstrip().splitlines()[-1] == "KeyboardInterrupt", err
    assert rc == -signal.SIGINT, (rc, out, err)  # CPython re-raises SIGINT on an uncaught Ctrl-C
    assert "returned" not in out and "finished" not in out and "fired" not in out, out
    assert elapsed < HANG_GUARD


@pytest.mark.parametrize("loop_name", LOOPS)
def test_sigint_through_runner_cancels_main_then_raises(loop_name):
    rc, out, err, elapsed = interrupt("runner", loop_name)
    lines = out.splitlines()
    expected_module = "ferroloop._loop" if loop_name == "ferroloop" else "asyncio.unix_events"
    assert lines[0] == f"ready {expected_module}", out
    assert "main cancelled" in lines, (out, err)
    assert "main finished" not in out and "runner returned" not in out, out
    assert err.rstrip().splitlines()[-1] == "KeyboardInterrupt", err
    assert rc == -signal.SIGINT, (rc, out, err)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_loop_usable_after_keyboard_interrupt(loop_name):
    rc, out, err, elapsed = interrupt("recover", loop_name)
    assert rc == 0, (rc, out, err)
    assert out.splitlines() == [
        "ready",
        "caught KeyboardInterrupt",
        "running False closed False",
        "wakeup fd -1",
        "result again",
    ], (out, err)


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("script", ["sigusr1", "sigusr1_timer"])
def test_python_signal_handler_runs_while_loop_waits(script, loop_name):
    rc, out, err, elapsed = interrupt(script, loop_name, signal.SIGUSR1)
    assert rc == 0, (rc, out, err)
    assert out.splitlines() == ["ready", f"handler ran {int(signal.SIGUSR1)}", "stopped"], (out, err)
    assert "timer fired" not in out


@pytest.mark.parametrize("loop_name", LOOPS)
def test_python_signal_handler_completes_future(loop_name):
    rc, out, err, elapsed = interrupt("sigusr1_future", loop_name, signal.SIGUSR1)
    assert rc == 0, (rc, out, err)
    assert out.splitlines() == ["ready", f"handler ran {int(signal.SIGUSR1)}", "result from handler"], (out, err)


# -- the wake-up socket after close ----------------------------------------------------------


def test_closing_a_loop_takes_its_socket_out_of_the_signal_wakeup_fd():
    code = textwrap.dedent(
        """
        import signal, ferroloop
        loop = ferroloop.new_event_loop()
        loop.add_signal_handler(signal.SIGUSR1, print)
        ours = loop._signal_wakeup_fd()
        loop.close()
        print(signal.set_wakeup_fd(-1) == ours)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


def test_a_loop_closed_off_the_main_thread_leaves_an_installed_socket_open():
    code = textwrap.dedent(
        """
        import os, signal, stat, threading, ferroloop
        loop = ferroloop.new_event_loop()
        loop.add_signal_handler(signal.SIGUSR1, print)
        ours = loop._signal_wakeup_fd()
        def close():
            try:
                loop.close()
            except (ValueError, RuntimeError):
                pass
        t = threading.Thread(target=close)
        t.start(); t.join()
        print(loop.is_closed(), signal.set_wakeup_fd(-1) == ours,
              stat.S_ISSOCK(os.fstat(ours).st_mode))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True"]
