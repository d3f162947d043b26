"""`ferroloop.trace()`: what the recorder sees of a real program, and the files it leaves
however the program ends. The exporters' formats are checked in test_trace_export.py."""

import asyncio
import gc
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import weakref
from pathlib import Path

import pytest

import ferroloop
from ferroloop import _trace_model as model

ROOT = Path(__file__).resolve().parent.parent


def traced(tmp_path, main, **kwargs):
    """Runs `main()` on a new ferroloop loop under a trace; returns the model."""
    kwargs.setdefault("summary", False)
    with ferroloop.trace(tmp_path / "out", **kwargs) as session:
        ferroloop.run(main())
    return session.trace


def states_of(trace, coro):
    (task,) = [t.id for t in trace.tasks.values() if t.coro == coro]
    return [s for s in trace.states if s.task == task]


def test_the_seed_waits_on_both_timers_at_once(tmp_path):
    async def func1():
        await asyncio.sleep(0.2)

    async def func2():
        await asyncio.sleep(0.2)

    async def main():
        await asyncio.gather(func1(), func2())

    trace = traced(tmp_path, main)
    one = states_of(trace, "test_the_seed_waits_on_both_timers_at_once.<locals>.func1")
    two = states_of(trace, "test_the_seed_waits_on_both_timers_at_once.<locals>.func2")
    for states in (one, two):
        assert [s.state for s in states] == ["running", "timer", "running", "done"]
        assert states[1].label == "sleep"
        assert states[1].end - states[1].start >= 0.15
    # The two timer waits overlap: one sleep is spent, not two.
    assert one[1].start < two[1].end and two[1].start < one[1].end
    main_states = states_of(trace, "test_the_seed_waits_on_both_timers_at_once.<locals>.main")
    assert [(s.state, s.label) for s in main_states][:2] == [("running", "step"), ("task", "gather")]
    assert any(c.kind == "timer" for c in trace.callbacks)
    assert trace.polls and max(p.end - p.start for p in trace.polls) >= 0.15
    assert 0 < trace.utilization < 0.5
    assert trace.dropped == 0


def test_each_tasks_states_tile_its_track(tmp_path):
    async def worker(n):
        for _ in range(n):
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)

    async def main():
        await asyncio.gather(*(worker(i) for i in range(5)))

    trace = traced(tmp_path, main)
    ours = {t.id for t in trace.tasks.values() if t.coro.endswith(("worker", "main"))}
    by_task = {}
    for s in trace.states:
        by_task.setdefault(s.task, []).append(s)
    assert len(ours) == 6 and ours <= set(by_task)
    for states in by_task.values():
        for before, after in zip(states, states[1:]):
            assert before.end == pytest.approx(after.start, abs=1e-9)
            assert before.start <= before.end
        assert states[-1].state == "done"
    ready = [s for s in trace.states if s.state == "ready"]
    assert ready and all(s.label == "yield" for s in ready)


def test_what_a_task_waits_on_is_named(tmp_path):
    async def main():
        lock = asyncio.Lock()
        queue = asyncio.Queue()
        reader, writer = await asyncio.open_connection(*address)

        async def on_lock():
            async with lock:
                pass

        async def on_queue():
            await queue.get()

        async def on_stream():
            await reader.read(10)

        async def on_task(other):
            await other

        await lock.acquire()
        tasks = [asyncio.create_task(c) for c in (on_lock(), on_queue(), on_stream())]
        tasks.append(asyncio.create_task(on_task(tasks[0]), name="waiter"))
        await asyncio.sleep(0.05)
        lock.release()
        queue.put_nowait(1)
        writer.write(b"ping")
        await asyncio.gather(*tasks)
        writer.close()
        await writer.wait_closed()

    async def serve(reader, writer):
        data = await reader.read(10)
        writer.write(data)
        await writer.drain()
        writer.close()

    async def with_server():
        nonlocal address
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()[:2]
        async with server:
            await main()

    address = None
    trace = traced(tmp_path, with_server)

    def first_wait(suffix):
        states = [s for s in states_of(trace, f"test_what_a_task_waits_on_is_named.<locals>.main.<locals>.{suffix}")]
        return next((s.state, s.label) for s in states if s.state not in ("running", "ready"))

    assert first_wait("on_lock") == ("future", "Lock.acquire")
    assert first_wait("on_queue") == ("future", "Queue.get")
    assert first_wait("on_stream") == ("io", "stream read")
    state, label = first_wait("on_task")
    assert state == "task" and label.startswith("Task-")
    reads = [t for t in trace.transfers if t.direction == "read"]
    writes = [t for t in trace.transfers if t.direction == "write"]
    # "ping" goes out twice (client, then the echo) and comes in twice.
    assert sum(t.nbytes for t in writes) >= 8
    assert sum(t.nbytes for t in reads) >= 8
    assert all(t.transport.startswith("fd ") for t in trace.transfers)


def test_the_ring_keeps_the_newest_events_within_its_bound(tmp_path):
    async def main():
        for _ in range(2000):
            await asyncio.sleep(0)

    with ferroloop.trace(tmp_path / "out", capacity=100, summary=False) as session:
        assert session._tracer.bound_bytes == 100 * 16
        ferroloop.run(main())
    trace = session.trace
    assert trace.dropped > 1000
    assert len(trace.callbacks) <= 100
    assert trace.callbacks[0].start >= 0
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["traceEvents"]


def test_tracing_keeps_no_task_alive_and_tells_reused_addresses_apart(tmp_path):
    refs = []

    async def short():
        await asyncio.sleep(0)

    async def main():
        for _ in range(50):
            task = asyncio.create_task(short())
            refs.append(weakref.ref(task))
            await task
            del task
            gc.collect()

    trace = traced(tmp_path, main)
    assert all(r() is None for r in refs)
    shorts = [t for t in trace.tasks.values() if t.coro.endswith("short")]
    assert len(shorts) == 50
    assert len({t.name for t in shorts}) == 50


def test_names_of_done_tasks_go_once_the_ring_has_passed_them(tmp_path):
    async def short():
        await asyncio.sleep(0)

    async def main():
        for _ in range(3000):
            await asyncio.create_task(short())

    with ferroloop.trace(tmp_path / "out", capacity=200, summary=False) as session:
        ferroloop.run(main())
        subjects = session._tracer.subjects()
    # The live subjects, those the ring may still name, and one purge interval's worth (256).
    assert len(subjects) < 200 + 2 * 256
    # Every task the kept events name still has its name.
    assert all(c.name != "?" for c in session.trace.callbacks)
    assert any(c.name.endswith(" step") for c in session.trace.callbacks)


def test_a_loop_already_running_is_traced_from_the_with(tmp_path):
    async def main():
        await asyncio.sleep(0.01)
        with ferroloop.trace(tmp_path / "inner", summary=False) as session:
            assert asyncio.get_running_loop()._tracer is not None
            await asyncio.create_task(asyncio.sleep(0.01))
        assert asyncio.get_running_loop()._tracer is None
        return session.trace

    trace = ferroloop.run(main())
    assert any(s.label == "sleep" for s in trace.states)
    assert (tmp_path / "inner.json").exists() and (tmp_path / "inner.html").exists()


def test_after_the_trace_the_loop_records_nothing(tmp_path):
    loop = ferroloop.new_event_loop()
    try:
        with ferroloop.trace(tmp_path / "out", summary=False):
            loop.run_until_complete(asyncio.sleep(0))
            assert loop._tracer is not None
        assert loop._tracer is None
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()


def test_the_summary_goes_to_the_file_given(tmp_path):
    out = io.StringIO()

    async def main():
        await asyncio.sleep(0.01)

    traced(tmp_path, main, summary=True, file=out)
    text = out.getvalue()
    assert "%" in text and str(tmp_path / "out.json") in text


def test_an_exception_in_the_block_still_writes_the_files(tmp_path):
    async def main():
        await asyncio.sleep(0)
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        traced(tmp_path, main)
    json.loads((tmp_path / "out.json").read_text())
    assert "</html>" in (tmp_path / "out.html").read_text()


def test_a_failing_name_is_reported_and_the_loop_goes_on(tmp_path):
    class Odd(asyncio.Task):
        def get_name(self):
            raise RuntimeError("no name")

    async def child():
        return 5

    async def main():
        asyncio.get_running_loop().set_task_factory(lambda loop, coro, **kw: Odd(coro, loop=loop, **kw))
        return await asyncio.create_task(child())

    seen = []
    old, sys.unraisablehook = sys.unraisablehook, seen.append
    try:
        with ferroloop.trace(tmp_path / "out", summary=False):
            assert ferroloop.run(main()) == 5
    finally:
        sys.unraisablehook = old
    assert seen and isinstance(seen[0].exc_value, RuntimeError)


def test_bad_arguments_fail_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="capacity"):
        ferroloop.trace(tmp_path / "out", capacity=0)
    with pytest.raises(FileNotFoundError, match="no folder"):
        with ferroloop.trace(tmp_path / "missing" / "out"):
            pytest.fail("the block must not run")
    (tmp_path / "out.json").mkdir()
    with pytest.raises(IsADirectoryError):
        with ferroloop.trace(tmp_path / "out"):
            pytest.fail("the block must not run")
    with ferroloop.trace(tmp_path / "a", summary=False):
        with pytest.raises(RuntimeError, match="already on"):
            with ferroloop.trace(tmp_path / "b"):
                pass


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_folder_fails_before_the_block(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(PermissionError, match="permission denied"):
        with ferroloop.trace(locked / "out"):
            pytest.fail("the block must not run")


# The command line: the files come out whatever the program does.

PROGRAM = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    async def main():
        await asyncio.sleep(0.01)
        how = sys.argv[1]
        if how == "raise":
            raise KeyError("boom")
        if how == "exit":
            sys.exit(3)
        if how == "interrupt":
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(10)
    asyncio.run(main())
    """
)


@pytest.mark.parametrize(
    "how, status", [("ok", 0), ("raise", 1), ("exit", 3), ("interrupt", 130)]
)
def test_the_command_line_writes_complete_files_however_the_program_ends(tmp_path, how, status):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    proc = subprocess.run(
        [sys.executable, "-m", "ferroloop", "trace", "-o", str(tmp_path / "t"), str(script), how],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == status, proc.stderr
    data = json.loads((tmp_path / "t.json").read_text())
    names = {e["args"].get("name", "") for e in data["traceEvents"] if e.get("ph") == "M"}
    assert any("main" in n for n in names)
    assert (tmp_path / "t.html").read_text().rstrip().endswith("</html>")
    assert "%" in proc.stderr and "t.json" in proc.stderr


def test_the_command_line_refuses_an_unwritable_output_before_running(tmp_path):
    marker = tmp_path / "ran"
    script = tmp_path / "prog.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    proc = subprocess.run(
        [sys.executable, "-m", "ferroloop", "trace", "-o", str(tmp_path / "no" / "t"), str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "cannot write the trace" in proc.stderr
    assert not marker.exists()
