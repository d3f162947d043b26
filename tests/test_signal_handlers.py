"""loop.add_signal_handler / remove_signal_handler on both loops: callbacks run in the loop with
their arguments, once per delivered signal; validation errors; removal restores the default.

Reference: CPython 3.11 asyncio.unix_events._UnixSelectorEventLoop (add_signal_handler,
remove_signal_handler, _handle_signal, _check_signal)."""

import asyncio
import contextvars
import os
import signal
import threading

import pytest

VAR = contextvars.ContextVar("VAR", default="unset")


def test_handler_runs_in_the_loop_with_its_args(loop):
    calls = []

    def on_signal(*args):
        calls.append((args, threading.get_ident(), asyncio.get_running_loop() is loop))
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, on_signal, "a", 2)
    try:
        loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
        guard = loop.call_later(20, loop.stop)
        loop.run_forever()
        guard.cancel()
    finally:
        assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert calls == [(("a", 2), threading.get_ident(), True)]


def test_each_signal_runs_the_callback_in_the_context_of_registration(loop):
    seen = []
    token = VAR.set("registered")
    try:
        loop.add_signal_handler(signal.SIGUSR2, lambda: seen.append(VAR.get()))
    finally:
        VAR.reset(token)

    async def main():
        for sent in range(1, 4):
            os.kill(os.getpid(), signal.SIGUSR2)
            while len(seen) < sent:
                await asyncio.sleep(0.01)

    try:
        loop.run_until_complete(asyncio.wait_for(main(), 20))
    finally:
        loop.remove_signal_handler(signal.SIGUSR2)
    assert seen == ["registered"] * 3


def test_signal_between_runs_is_handled_at_the_next_run(loop):
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "late")
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert calls == []

        async def wait_for_call():
            while not calls:
                await asyncio.sleep(0.01)

        loop.run_until_complete(asyncio.wait_for(wait_for_call(), 20))
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
    assert calls == ["late"]


def test_remove_restores_default_and_reports_absence(loop):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_sigint_removal_restores_default_int_handler(loop):
    old = signal.getsignal(signal.SIGINT)
    try:
        loop.add_signal_handler(signal.SIGINT, lambda: None)
        assert loop.remove_signal_handler(signal.SIGINT) is True
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, old)


def test_close_removes_handlers(loop_factory):
    lp = loop_factory()
    lp.add_signal_handler(signal.SIGUSR1, lambda: None)
    lp.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


@pytest.mark.parametrize(
    "sig, exc, message",
    [
        ("1", TypeError, "sig must be an int, not '1'"),
        (0, ValueError, "invalid signal number 0"),
        (1000, ValueError, "invalid signal number 1000"),
        (signal.SIGKILL, RuntimeError, f"sig {signal.SIGKILL} cannot be caught"),
    ],
)
def test_bad_signals(loop, sig, exc, message):
    with pytest.raises(exc) as info:
        loop.add_signal_handler(sig, lambda: None)
    assert str(info.value) == message
    if exc is not RuntimeError:
        with pytest.raises(exc):
            loop.remove_signal_handler(sig)


def test_coroutine_function_refused(loop):
    async def handler():
        pass

    with pytest.raises(TypeError, match=r"coroutines cannot be used with add_signal_handler\(\)"):
        loop.add_signal_handler(signal.SIGUSR1, handler)


def test_closed_loop_refuses(loop_factory):
    lp = loop_factory()
    lp.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        lp.add_signal_handler(signal.SIGUSR1, lambda: None)


def test_only_the_main_thread(loop):
    errors = []

    def worker():
        try:
            loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        except RuntimeError as exc:
            errors.append(str(exc))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert len(errors) == 1 and "main thread" in errors[0]


def test_handler_runs_while_callbacks_keep_the_loop_busy(loop):
    # No fd is registered and the ready queue is never empty: the loop must still read the
    # signal, as the stock loop's select(0) on its self-pipe does every iteration.
    ran = []
    loop.add_signal_handler(signal.SIGUSR1, ran.append, True)

    async def busy():
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(100_000):
            if ran:
                return True
            await asyncio.sleep(0)
        return False

    try:
        assert loop.run_until_complete(busy()) is True
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)


def test_close_leaves_no_wakeup_fd_behind(loop_factory):
    # Handlers added before a run and all removed during it: after close() the signal module
    # must not be left writing to the loop's closed socket (or whatever file reuses its number).
    lp = loop_factory()
    lp.add_signal_handler(signal.SIGUSR1, lambda: None)

    async def main():
        lp.remove_signal_handler(signal.SIGUSR1)

    lp.run_until_complete(main())
    lp.close()
    assert signal.set_wakeup_fd(-1) == -1


def test_close_from_another_thread_closes_then_raises(loop_factory):
    lp = loop_factory()
    lp.add_signal_handler(signal.SIGUSR1, lambda: None)
    errors = []

    def worker():
        try:
            lp.close()
        except ValueError as exc:
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    try:
        assert len(errors) == 1 and "main thread" in str(errors[0])
        assert lp.is_closed()
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
