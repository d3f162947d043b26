"""Debug mode, slow-callback warnings, thread checks, source tracebacks and exception handlers.

Reference: CPython 3.11 asyncio (base_events.BaseEventLoop.default_exception_handler,
call_exception_handler, _run_once, _check_thread; events.Handle)."""

import asyncio
import logging
import os
import re
import subprocess
import sys
import threading
import time

import pytest


def is_stock(loop):
    return type(loop).__module__.startswith("asyncio")


def here():
    """Line number of the caller."""
    return sys._getframe(1).f_lineno


def source_of(func):
    code = func.__code__
    return f"{code.co_filename}:{code.co_firstlineno}"


def run_once(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()


def failing_callback():
    raise ValueError("boom")


def asyncio_records(caplog, level):
    return [r for r in caplog.records if r.name == "asyncio" and r.levelno == level]


class TestDebugFlag:
    def test_set_debug_get_debug(self, loop):
        loop.set_debug(True)
        assert loop.get_debug() is True
        loop.set_debug(False)
        assert loop.get_debug() is False

    def test_set_debug_while_running(self, loop):
        async def main():
            loop.set_debug(True)
            await asyncio.sleep(0)
            return loop.get_debug()

        assert loop.run_until_complete(main()) is True

    def test_debug_off_by_default_without_env(self, loop_factory):
        if os.environ.get("PYTHONASYNCIODEBUG") or sys.flags.dev_mode:
            pytest.skip("debug mode forced by the environment")
        lp = loop_factory()
        try:
            assert lp.get_debug() is False
        finally:
            lp.close()

    def test_slow_callback_duration_default(self, loop):
        assert loop.slow_callback_duration == 0.1

    def test_coroutine_origin_tracking_enabled_while_running_in_debug(self, loop):
        loop.set_debug(True)
        before = sys.get_coroutine_origin_tracking_depth()

        async def main():
            return sys.get_coroutine_origin_tracking_depth()

        inside = loop.run_until_complete(main())
        assert inside == 10  # asyncio.constants.DEBUG_STACK_DEPTH
        assert sys.get_coroutine_origin_tracking_depth() == before


class TestSlowCallback:
    def test_slow_callback_logs_warning_in_debug(self, loop, caplog):
        loop.set_debug(True)
        loop.slow_callback_duration = 0.05

        def slow_callback():
            time.sleep(0.2)

        with caplog.at_level(logging.WARNING, logger="asyncio"):
            loop.call_soon(slow_callback)
            run_once(loop)
        msgs = [r.getMessage() for r in asyncio_records(caplog, logging.WARNING)]
        assert len(msgs) == 1, msgs
        m = re.fullmatch(r"Executing <Handle .*> took (\d+\.\d{3}) seconds", msgs[0])
        assert m, msgs[0]
        assert 0.2 <= float(m.group(1)) + 0.001 < 2.0
        assert "slow_callback()" in msgs[0]

    def test_slow_callback_message_has_handle_repr(self, loop, caplog):
        loop.set_debug(True)
        loop.slow_callback_duration = 0.05

        def slow_callback():
            time.sleep(0.1)

        with caplog.at_level(logging.WARNING, logger="asyncio"):
            h = loop.call_soon(slow_callback)
            run_once(loop)
        (rec,) = asyncio_records(caplog, logging.WARNING)
        assert rec.getMessage().startswith(f"Executing {h!r} took ")

    def test_slow_task_step_logs_task_repr(self, loop, caplog):
        loop.set_debug(True)
        loop.slow_callback_duration = 0.05

        async def slow_coro():
            time.sleep(0.2)

        with caplog.at_level(logging.WARNING, logger="asyncio"):
            loop.run_until_complete(slow_coro())
        msgs = [r.getMessage() for r in asyncio_records(caplog, logging.WARNING)]
        assert any(re.match(r"Executing <Task .*slow_coro.*> took \d+\.\d{3} seconds", m) for m in msgs), msgs

    def test_fast_callback_not_logged(self, loop, caplog):
        loop.set_debug(True)
        loop.slow_callback_duration = 5.0
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            loop.call_soon(lambda: None)
            run_once(loop)
        assert asyncio_records(caplog, logging.WARNING) == []

    def test_slow_callback_not_logged_without_debug(self, loop, caplog):
        loop.set_debug(False)
        loop.slow_callback_duration = 0.01
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            loop.call_soon(time.sleep, 0.05)
            run_once(loop)
        assert asyncio_records(caplog, logging.WARNING) == []


NON_THREADSAFE = "Non-thread-safe operation invoked on an event loop other than the current one"


class TestThreadCheck:
    def _call_from_thread_while_running(self, loop, method):
        errors = []

        def other_thread():
            try:
                if method == "call_soon":
                    loop.call_soon(lambda: None)
                elif method == "call_later":
                    loop.call_later(0, lambda: None)
                else:
                    loop.call_at(loop.time(), lambda: None)
            except RuntimeError as exc:
                errors.append(str(exc))

        async def main():
            await loop.run_in_executor(None, other_thread)

        loop.run_until_complete(main())
        return errors

    @pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at"])
    def test_non_threadsafe_call_from_other_thread_raises_in_debug(self, loop, method):
        loop.set_debug(True)
        assert self._call_from_thread_while_running(loop, method) == [NON_THREADSAFE]

    def test_call_soon_from_other_thread_not_checked_without_debug(self, loop):
        loop.set_debug(False)
        assert self._call_from_thread_while_running(loop, "call_soon") == []

    def test_call_soon_from_other_thread_allowed_when_loop_not_running(self, loop):
        loop.set_debug(True)
        out = []
        errors = []

        def other_thread():
            try:
                loop.call_soon(out.append, "queued")
            except RuntimeError as exc:
                errors.append(exc)

        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        assert errors == []
        run_once(loop)
        assert out == ["queued"]

    def test_call_soon_threadsafe_from_other_thread_ok_in_debug(self, loop):
        loop.set_debug(True)
        out = []

        def other_thread():
            loop.call_soon_threadsafe(out.append, "ok")

        async def main():
            await loop.run_in_executor(None, other_thread)
            await asyncio.sleep(0)

        loop.run_until_complete(main())
        assert out == ["ok"]


class TestSourceTraceback:
    @pytest.mark.nodebug
    def test_no_source_traceback_without_debug(self, loop):
        h = loop.call_soon(lambda: None)
        assert getattr(h, "_source_traceback", None) is None
        h.cancel()

    def test_call_soon_source_traceback_ends_at_caller(self, loop):
        loop.set_debug(True)
        h = loop.call_soon(lambda: None); line = here()  # noqa: E702
        tb = h._source_traceback
        assert isinstance(tb, list) and tb
        frame = tb[-1]
        assert (frame[0], frame[1], frame[2]) == (__file__, line, "test_call_soon_source_traceback_ends_at_caller")
        h.cancel()

    def test_call_later_source_traceback_ends_at_caller(self, loop):
        loop.set_debug(True)
        h = loop.call_later(10, lambda: None); line = here()  # noqa: E702
        frame = h._source_traceback[-1]
        assert (frame[0], frame[1]) == (__file__, line)
        h.cancel()

    def test_call_at_source_traceback_ends_at_caller(self, loop):
        loop.set_debug(True)
        h = loop.call_at(loop.time() + 10, lambda: None); line = here()  # noqa: E702
        frame = h._source_traceback[-1]
        assert (frame[0], frame[1]) == (__file__, line)
        h.cancel()

    def test_call_soon_threadsafe_source_traceback_ends_at_caller(self, loop):
        loop.set_debug(True)
        h = loop.call_soon_threadsafe(lambda: None); line = here()  # noqa: E702
        frame = h._source_traceback[-1]
        assert (frame[0], frame[1]) == (__file__, line)
        h.cancel()

    def test_source_traceback_includes_outer_frames(self, loop):
        loop.set_debug(True)

        def schedule():
            return loop.call_soon(lambda: None)

        h = schedule(); outer = here()  # noqa: E702
        tb = h._source_traceback
        assert tb[-1][2] == "schedule"
        assert (tb[-2][0], tb[-2][1]) == (__file__, outer)
        h.cancel()

    def test_debug_repr_has_created_at(self, loop):
        loop.set_debug(True)

        def cb():
            pass

        h = loop.call_soon(cb); line = here()  # noqa: E702
        assert repr(h) == f"<Handle {cb.__qualname__}() at {source_of(cb)} created at {__file__}:{line}>"
        h.cancel()
        # In debug mode cancel() keeps the callback in the repr.
        assert repr(h) == f"<Handle cancelled {cb.__qualname__}() at {source_of(cb)} created at {__file__}:{line}>"

    def test_debug_timer_repr_has_created_at(self, loop):
        loop.set_debug(True)

        def cb():
            pass

        h = loop.call_later(10, cb); line = here()  # noqa: E702
        assert repr(h) == f"<TimerHandle when={h.when()} {cb.__qualname__}() at {source_of(cb)} created at {__file__}:{line}>"
        h.cancel()
        assert repr(h) == (
            f"<TimerHandle cancelled when={h.when()} {cb.__qualname__}() at {source_of(cb)} created at {__file__}:{line}>"
        )

    def test_exception_context_has_source_traceback_in_debug(self, loop):
        loop.set_debug(True)
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        h = loop.call_soon(failing_callback); line = here()  # noqa: E702
        run_once(loop)
        (ctx,) = contexts
        assert ctx["handle"] is h
        assert isinstance(ctx["exception"], ValueError)
        assert ctx["message"] == f"Exception in callback failing_callback() at {source_of(failing_callback)}"
        tb = ctx["source_traceback"]
        assert (tb[-1][0], tb[-1][1]) == (__file__, line)

    @pytest.mark.nodebug
    def test_exception_context_has_no_source_traceback_without_debug(self, loop):
        contexts = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
        h = loop.call_soon(failing_callback)
        run_once(loop)
        (ctx,) = contexts
        assert set(ctx) == {"message", "exception", "handle"}
        assert ctx["handle"] is h


class TestDefaultExceptionHandler:
    @pytest.mark.nodebug
    def test_failing_callback_logged_at_error(self, loop, caplog):
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            loop.call_soon(failing_callback)
            loop.call_soon(loop.stop)
            loop.run_forever()
        (rec,) = asyncio_records(caplog, logging.ERROR)
        src = source_of(failing_callback)
        assert rec.getMessage() == (
            f"Exception in callback failing_callback() at {src}\n"
            f"handle: <Handle failing_callback() at {src}>"
        )
        assert rec.exc_info[0] is ValueError
        assert str(rec.exc_info[1]) == "boom"

    def test_failing_callback_does_not_stop_the_batch(self, loop, caplog):
        out = []
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            loop.call_soon(failing_callback)
            loop.call_soon(out.append, "after")
            run_once(loop)
        assert out == ["after"]

    def test_failing_callback_logged_with_source_traceback_in_debug(self, loop, caplog):
        loop.set_debug(True)
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            loop.call_soon(failing_callback); line = here()  # noqa: E702
            loop.call_soon(loop.stop)
            loop.run_forever()
        (rec,) = asyncio_records(caplog, logging.ERROR)
        lines = rec.getMessage().split("\n")
        src = source_of(failing_callback)
        assert lines[0] == f"Exception in callback failing_callback() at {src}"
        assert lines[1] == f"handle: <Handle failing_callback() at {src} created at {__file__}:{line}>"
        assert lines[2] == "source_traceback: Object created at (most recent call last):"
        assert lines[-2] == f'  File "{__file__}", line {line}, in test_failing_callback_logged_with_source_traceback_in_debug'

    def test_direct_call_formats_sorted_keys_with_repr(self, loop, caplog):
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            loop.default_exception_handler({"message": "custom message", "zeta": 1, "alpha": "x"})
        (rec,) = asyncio_records(caplog, logging.ERROR)
        assert rec.getMessage() == "custom message\nalpha: 'x'\nzeta: 1"
        assert not rec.exc_info

    def test_direct_call_without_message(self, loop, caplog):
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            loop.default_exception_handler({"key": [1, 2]})
        (rec,) = asyncio_records(caplog, logging.ERROR)
        assert rec.getMessage() == "Unhandled exception in event loop\nkey: [1, 2]"

    def test_direct_call_with_exception_sets_exc_info(self, loop, caplog):
        try:
            raise KeyError("k")
        except KeyError as e:
            exc = e
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            loop.default_exception_handler({"message": "m", "exception": exc})
        (rec,) = asyncio_records(caplog, logging.ERROR)
        assert rec.getMessage() == "m"
        assert rec.exc_info[1] is exc

    def test_handle_traceback_added_for_current_handle_in_debug(self, loop, caplog):
        loop.set_debug(True)

        def report():
            loop.call_exception_handler({"message": "from inside"})

        with caplog.at_level(logging.ERROR, logger="asyncio"):
            loop.call_soon(report); line = here()  # noqa: E702
            run_once(loop)
        (rec,) = asyncio_records(caplog, logging.ERROR)
        lines = rec.getMessage().split("\n")
        assert lines[0] == "from inside"
        assert lines[1] == "handle_traceback: Handle created at (most recent call last):"
        assert lines[-2] == f'  File "{__file__}", line {line}, in test_handle_traceback_added_for_current_handle_in_debug'


class TestCustomExceptionHandler:
    def test_get_exception_handler_default_none(self, loop):
        assert loop.get_exception_handler() is None

    def test_get_exception_handler_returns_what_was_set(self, loop):
        def handler(lp, ctx):
            pass

        loop.set_exception_handler(handler)
        assert loop.get_exception_handler() is handler
        loop.set_exception_handler(None)
        assert loop.get_exception_handler() is None

    def test_call_exception_handler_passes_loop_and_context(self, loop):
        calls = []
        loop.set_exception_handler(lambda lp, ctx: calls.append((lp, ctx)))
        context = {"message": "hello", "extra": 1}
        loop.call_exception_handler(context)
        assert len(calls) == 1
        assert calls[0][0] is loop
        assert calls[0][1] is context

    def test_custom_handler_receives_failing_callback(self, loop, caplog):
        calls = []
        loop.set_exception_handler(lambda lp, ctx: calls.append(ctx))
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            loop.call_soon(failing_callback)
            run_once(loop)
        assert len(calls) == 1
        assert isinstance(calls[0]["exception"], ValueError)
        assert asyncio_records(caplog, logging.ERROR) == []

    def test_custom_handler_that_raises_is_logged(self, loop, caplog):
        def handler(lp, ctx):
            raise TypeError("handler broke")

        loop.set_exception_handler(handler)
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            loop.call_soon(failing_callback)
            loop.call_soon(loop.stop)
            loop.run_forever()
        (rec,) = asyncio_records(caplog, logging.ERROR)
        lines = rec.getMessage().split("\n")
        assert lines[0] == "Unhandled error in exception handler"
        src = source_of(failing_callback)
        assert lines[1].startswith(f"context: {{'message': 'Exception in callback failing_callback() at {src}', ")
        assert rec.exc_info[0] is TypeError
        assert str(rec.exc_info[1]) == "handler broke"

    def test_custom_handler_that_raises_on_direct_call(self, loop, caplog):
        def handler(lp, ctx):
            raise RuntimeError("nope")

        loop.set_exception_handler(handler)
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            loop.call_exception_handler({"message": "m"})
        (rec,) = asyncio_records(caplog, logging.ERROR)
        assert rec.getMessage() == "Unhandled error in exception handler\ncontext: {'message': 'm'}"

    def test_custom_handler_can_defer_to_default(self, loop, caplog):
        def handler(lp, ctx):
            lp.default_exception_handler(ctx)

        loop.set_exception_handler(handler)
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            loop.call_exception_handler({"message": "deferred"})
        (rec,) = asyncio_records(caplog, logging.ERROR)
        assert rec.getMessage() == "deferred"


class TestDebugFromOutside:
    def test_debug_env_var_enables_debug(self, loop):
        if is_stock(loop):
            code = "import asyncio; print(asyncio.SelectorEventLoop().get_debug())"
        else:
            code = "import ferroloop; print(ferroloop.new_event_loop().get_debug())"
        env = dict(os.environ)
        env["PYTHONASYNCIODEBUG"] = "1"
        on = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert on.returncode == 0, on.stderr
        assert on.stdout.strip() == "True"
        env.pop("PYTHONASYNCIODEBUG")
        off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert off.returncode == 0, off.stderr
        assert off.stdout.strip() == "False"

    def test_runner_debug_true_puts_loop_in_debug(self, loop_factory):
        async def main():
            lp = asyncio.get_running_loop()
            return type(lp), lp.get_debug()

        probe = loop_factory()
        kind = type(probe)
        probe.close()
        with asyncio.Runner(debug=True, loop_factory=loop_factory) as runner:
            loop_type, debug = runner.run(main())
        assert loop_type is kind
        assert debug is True

    def test_run_with_debug_true_puts_loop_in_debug(self, loop_factory):
        async def main():
            lp = asyncio.get_running_loop()
            return type(lp).__module__, lp.get_debug()

        probe = loop_factory()
        expected_module = type(probe).__module__
        probe.close()
        if sys.version_info >= (3, 12):
            module, debug = asyncio.run(main(), debug=True, loop_factory=loop_factory)
        else:

            class Policy(asyncio.DefaultEventLoopPolicy):
                def new_event_loop(self):
                    return loop_factory()

            asyncio.set_event_loop_policy(Policy())
            try:
                module, debug = asyncio.run(main(), debug=True)
            finally:
                asyncio.set_event_loop_policy(None)
        assert module == expected_module
        assert debug is True
