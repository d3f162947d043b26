"""`_core.LoopCore` alone, without the Python `Loop` that extends it: it owns what its Rust side
reads (task factory, running handle, signal table, transports table) and logs a callback's error
itself, so it runs callbacks, timers and tasks on its own."""

import asyncio
import contextvars
import logging
import os
import signal
import socket
import weakref

import pytest

from ferroloop import _core


@pytest.fixture
def core():
    loop = _core.LoopCore()
    yield loop
    loop._close()


def run(loop):
    """Run as the running loop, as `run_forever` does: since 3.14 a Task steps only on the
    loop its thread declares running."""
    asyncio.events._set_running_loop(loop)
    try:
        loop._run()
    finally:
        asyncio.events._set_running_loop(None)


def run_briefly(loop):
    loop.call_soon(loop.stop)
    run(loop)


def test_runs_callbacks_and_timers_in_order(core):
    seen = []
    core.call_later(0.001, seen.append, "timer")
    core.call_soon(seen.append, "first")
    core.call_soon(seen.append, "second")
    run_briefly(core)
    assert seen == ["first", "second"]
    core.call_later(0.01, core.stop)
    run(core)
    assert seen == ["first", "second", "timer"]


def test_task_factory_is_its_own(core):
    made = []

    def factory(loop, coro, **kwargs):
        made.append(loop)
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def answer():
        return 42

    assert core.get_task_factory() is None
    core.set_task_factory(factory)
    assert core.get_task_factory() is factory
    task = core.create_task(answer())
    assert made == [core]
    task.add_done_callback(lambda _: core.stop())
    run(core)
    assert task.result() == 42
    core.set_task_factory(None)
    assert core.get_task_factory() is None
    with pytest.raises(TypeError, match="task factory must be a callable or None"):
        core.set_task_factory(1)


def test_failing_callback_is_logged_by_its_own_handler(core, caplog):
    def boom():
        raise ZeroDivisionError("no")

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        core.call_soon(boom)
        run_briefly(core)
    [record] = [r for r in caplog.records if r.name == "asyncio"]
    assert record.getMessage().startswith("Exception in callback")
    assert record.exc_info[0] is ZeroDivisionError


def test_current_handle_is_set_only_while_a_callback_runs_in_debug(core):
    seen = []
    core._set_debug(True)
    handle = core.call_soon(lambda: seen.append(core._current_handle))
    run_briefly(core)
    assert seen == [handle]
    assert core._current_handle is None


def test_transports_table_refuses_a_live_transports_fd(core):
    class Transport:
        closing = False

        def is_closing(self):
            return self.closing

    a, b = socket.socketpair()
    with a, b:
        transport = Transport()
        assert isinstance(core._transports, weakref.WeakValueDictionary)
        core._transports[a.fileno()] = transport
        with pytest.raises(RuntimeError, match="is used by transport"):
            core._ensure_fd_no_transport(a.fileno())
        with pytest.raises(RuntimeError, match="is used by transport"):
            core._ensure_fd_no_transport(a)
        core._ensure_fd_no_transport(b)
        transport.closing = True
        core._ensure_fd_no_transport(a)
        del transport
        assert a.fileno() not in core._transports
    with pytest.raises(ValueError, match="Invalid file object"):
        core._ensure_fd_no_transport("not a file")


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_signal_table_is_read_by_the_core(core):
    seen = []
    old_fd = signal.set_wakeup_fd(core._signal_wakeup_fd(), warn_on_full_buffer=False)
    old_handler = signal.signal(signal.SIGUSR1, lambda *_: None)
    try:
        core._signal_handlers[signal.SIGUSR1] = (seen.append, ("usr1",), contextvars.copy_context())
        core._watch_signals(True)
        core.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
        core.call_later(0.2, core.stop)
        run(core)
    finally:
        signal.signal(signal.SIGUSR1, old_handler)
        signal.set_wakeup_fd(old_fd)
        core._watch_signals(False)
    assert seen == ["usr1"]
