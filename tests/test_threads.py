"""Threads and the loop: call_soon_threadsafe wake-ups, executors, to_thread, async generator hooks.

Reference: CPython 3.11 asyncio (base_events.BaseEventLoop)."""

import asyncio
import concurrent.futures
import contextvars
import gc
import subprocess
import sys
import threading
import time

import pytest

var = contextvars.ContextVar("var", default="unset")


class TestCallSoonThreadsafe:
    def test_wakes_loop_blocked_without_timers(self, loop):
        def poke():
            time.sleep(0.1)
            loop.call_soon_threadsafe(loop.stop)

        t = threading.Thread(target=poke)
        t0 = time.monotonic()
        t.start()
        loop.run_forever()
        elapsed = time.monotonic() - t0
        t.join()
        assert 0.09 <= elapsed < 5.0

    def test_wakes_loop_blocked_on_far_timer(self, loop):
        far = loop.call_later(60, lambda: None)
        threading.Timer(0.05, loop.call_soon_threadsafe, args=(loop.stop,)).start()
        t0 = time.monotonic()
        loop.run_forever()
        assert time.monotonic() - t0 < 5.0
        far.cancel()

    def test_runs_callback_on_loop_thread_with_args(self, loop):
        seen = []

        def record(*args):
            seen.append((threading.get_ident(), args))
            loop.stop()

        threading.Thread(target=loop.call_soon_threadsafe, args=(record, 1, "x")).start()
        failsafe = loop.call_later(5, loop.stop)
        loop.run_forever()
        failsafe.cancel()
        assert seen == [(threading.get_ident(), (1, "x"))]

    def test_many_threads_all_callbacks_delivered(self, loop):
        n_threads, per_thread = 4, 250
        got = []
        done = threading.Barrier(n_threads + 1)

        def producer(k):
            for i in range(per_thread):
                loop.call_soon_threadsafe(got.append, (k, i))
            done.wait()

        threads = [threading.Thread(target=producer, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()

        async def main():
            await loop.run_in_executor(None, done.wait)
            await asyncio.sleep(0)
            await asyncio.sleep(0)

        loop.run_until_complete(main())
        for t in threads:
            t.join()
        assert len(got) == n_threads * per_thread
        for k in range(n_threads):
            assert [i for kk, i in got if kk == k] == list(range(per_thread))

    @pytest.mark.nodebug
    def test_no_wake_is_lost_while_threads_keep_waking_the_loop(self, loop):
        # Two threads call call_soon_threadsafe without pause while the loop, between their
        # callbacks, waits with no timer due, so wakes keep landing while the loop clears the
        # previous one. A lost wake leaves the loop asleep until the guard timer, which must
        # never fire.
        rounds, guard_fired, ticks = 20000, [], [0]
        waiting = {}
        stop = threading.Event()

        def tick():
            ticks[0] += 1
            fut = waiting.get("fut")
            if fut is not None and not fut.done() and ticks[0] >= waiting["target"]:
                fut.set_result(None)

        def spin():
            while not stop.is_set():
                loop.call_soon_threadsafe(tick)
                time.sleep(0)  # lets the loop take the GIL, as the stock loop's self-pipe write does

        async def main():
            guard = loop.call_later(20, guard_fired.append, True)
            for _ in range(rounds):
                waiting["fut"] = loop.create_future()
                waiting["target"] = ticks[0] + 2
                await waiting["fut"]
                if guard_fired:
                    break
            guard.cancel()

        spinners = [threading.Thread(target=spin) for _ in range(2)]
        for t in spinners:
            t.start()
        try:
            loop.run_until_complete(main())
        finally:
            stop.set()
            for t in spinners:
                t.join()
        assert guard_fired == []

    def test_threadsafe_callback_with_context(self, loop):
        ctx = contextvars.Context()
        ctx.run(var.set, "threadsafe-ctx")
        seen = []

        def record():
            seen.append(var.get())
            loop.stop()

        threading.Thread(
            target=lambda: loop.call_soon_threadsafe(record, context=ctx)
        ).start()
        failsafe = loop.call_later(5, loop.stop)
        loop.run_forever()
        failsafe.cancel()
        assert seen == ["threadsafe-ctx"]

    def test_future_set_from_thread_via_call_soon_threadsafe(self, loop):
        fut = loop.create_future()

        def worker():
            time.sleep(0.02)
            loop.call_soon_threadsafe(fut.set_result, "from-thread")

        threading.Thread(target=worker).start()
        assert loop.run_until_complete(fut) == "from-thread"


class TestThreadSafeHandles:
    """`call_soon_threadsafe` handles are locked (3.14's `_ThreadSafeHandle`): a cancel() from
    another thread waits while the callback runs, and the callback may cancel its own handle.
    The stock loop has this from 3.14 on; ferroloop on every version."""

    @pytest.fixture(autouse=True)
    def _locked_loops_only(self, loop):
        if isinstance(loop, asyncio.BaseEventLoop) and sys.version_info < (3, 14):
            pytest.skip("the stock handle has no lock before 3.14")

    def test_cancel_from_another_thread_waits_for_the_running_callback(self, loop):
        started = threading.Event()
        order = []

        def callback():
            started.set()
            time.sleep(0.3)  # the GIL is released: the other thread's cancel() runs meanwhile
            order.append("callback done")

        def canceller():
            started.wait(10)
            handle.cancel()
            order.append("cancel returned")

        handle = loop.call_soon_threadsafe(callback)
        thread = threading.Thread(target=canceller)
        thread.start()
        loop.call_later(0.01, loop.stop)
        loop.run_forever()
        thread.join(10)
        assert order == ["callback done", "cancel returned"]

    def test_a_cancel_before_the_run_prevents_it(self, loop):
        called = []
        handle = loop.call_soon_threadsafe(called.append, 1)
        thread = threading.Thread(target=handle.cancel)
        thread.start()
        thread.join(10)
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert called == [] and handle.cancelled()

    def test_the_callback_may_cancel_its_own_handle(self, loop):
        seen = []

        def callback():
            handle.cancel()
            seen.append(handle.cancelled())

        handle = loop.call_soon_threadsafe(callback)
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert seen == [True]

    def test_its_class_is_the_running_versions(self, loop):
        handle = loop.call_soon_threadsafe(lambda: None)
        if sys.version_info >= (3, 14):
            assert isinstance(handle, asyncio.events._ThreadSafeHandle)
            assert repr(handle).startswith("<_ThreadSafeHandle ")
        else:
            assert repr(handle).startswith("<Handle ")
        handle.cancel()


class TestExecutor:
    def test_run_in_executor_returns_result(self, loop):
        def work(a, b):
            return a + b, threading.get_ident()

        result, ident = loop.run_until_complete(loop.run_in_executor(None, work, 2, 3))
        assert result == 5
        assert ident != threading.get_ident()

    def test_run_in_executor_propagates_exception(self, loop):
        def work():
            raise ValueError("in executor")

        with pytest.raises(ValueError, match="in executor"):
            loop.run_until_complete(loop.run_in_executor(None, work))

    def test_run_in_executor_with_explicit_executor(self, loop):
        with concurrent.futures.ThreadPoolExecutor(thread_name_prefix="explicit-pool") as ex:
            name = loop.run_until_complete(
                loop.run_in_executor(ex, lambda: threading.current_thread().name)
            )
        assert name.startswith("explicit-pool")

    def test_set_default_executor_is_used(self, loop):
        calls = []

        class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
            def submit(self, fn, *args, **kwargs):
                calls.append(fn)
                return super().submit(fn, *args, **kwargs)

        ex = CountingExecutor(thread_name_prefix="custom-default")
        loop.set_default_executor(ex)
        try:
            name = loop.run_until_complete(
                loop.run_in_executor(None, lambda: threading.current_thread().name)
            )
            assert name.startswith("custom-default")
            assert len(calls) == 1
        finally:
            loop.run_until_complete(loop.shutdown_default_executor())
            ex.shutdown(wait=True)

    def test_shutdown_default_executor_then_run_in_executor_raises(self, loop):
        loop.run_until_complete(loop.run_in_executor(None, lambda: None))
        loop.run_until_complete(loop.shutdown_default_executor())
        with pytest.raises(RuntimeError) as excinfo:
            loop.run_in_executor(None, lambda: None)
        assert str(excinfo.value) == "Executor shutdown has been called"

    def test_shutdown_default_executor_waits_for_running_work(self, loop):
        finished = []

        def slow():
            time.sleep(0.1)
            finished.append(True)

        async def main():
            fut = loop.run_in_executor(None, slow)
            await asyncio.sleep(0.01)
            await loop.shutdown_default_executor()
            return fut

        fut = loop.run_until_complete(main())
        assert finished == [True]
        loop.run_until_complete(fut)

    def test_shutdown_default_executor_timeout_is_honoured(self, ferro_loop):
        # The timeout parameter of Python 3.12+, on every Python: a worker that outlasts it
        # leaves shutdown with a RuntimeWarning instead of holding it until the worker ends.
        release = threading.Event()

        async def main():
            ferro_loop.run_in_executor(None, release.wait, 30)
            await asyncio.sleep(0.01)
            t0 = time.monotonic()
            with pytest.warns(RuntimeWarning, match="within 0.2 seconds"):
                await ferro_loop.shutdown_default_executor(timeout=0.2)
            return time.monotonic() - t0

        try:
            assert ferro_loop.run_until_complete(main()) < 10
        finally:
            release.set()

    def test_shutdown_default_executor_without_executor(self, loop):
        assert loop.run_until_complete(loop.shutdown_default_executor()) is None

    def test_to_thread(self, loop):
        token = var.set("to-thread-ctx")
        try:
            async def main():
                return await asyncio.to_thread(
                    lambda x: (x * 2, var.get(), threading.get_ident()), 21
                )

            value, seen, ident = loop.run_until_complete(main())
        finally:
            var.reset(token)
        assert value == 42
        assert seen == "to-thread-ctx"
        assert ident != threading.get_ident()

    def test_to_thread_many_concurrent(self, loop):
        async def main():
            return await asyncio.gather(*(asyncio.to_thread(time.sleep, 0.02) for _ in range(8)))

        assert loop.run_until_complete(main()) == [None] * 8


class TestAsyncGenerators:
    def test_shutdown_asyncgens_finalizes_suspended_generator(self, loop):
        steps = []

        async def agen():
            try:
                steps.append("start")
                yield 1
                yield 2
            finally:
                steps.append("finally")

        gen = agen()

        async def main():
            return await gen.__anext__()

        assert loop.run_until_complete(main()) == 1
        assert steps == ["start"]
        loop.run_until_complete(loop.shutdown_asyncgens())
        assert steps == ["start", "finally"]

    def test_shutdown_asyncgens_can_await_in_finally(self, loop):
        steps = []

        async def agen():
            try:
                yield 1
            finally:
                await asyncio.sleep(0.01)
                steps.append("cleaned")

        gen = agen()

        async def main():
            # First iteration inside the loop, so the loop's firstiter hook sees it.
            return await gen.__anext__()

        assert loop.run_until_complete(main()) == 1
        loop.run_until_complete(loop.shutdown_asyncgens())
        assert steps == ["cleaned"]

    def test_dropped_generator_finalized_by_loop(self, loop):
        steps = []

        async def agen():
            try:
                yield 1
                yield 2
            finally:
                await asyncio.sleep(0)
                steps.append("finally")

        async def main():
            gen = agen()
            await gen.__anext__()
            del gen
            gc.collect()
            for _ in range(5):
                await asyncio.sleep(0)

        loop.run_until_complete(main())
        assert steps == ["finally"]

    def test_asyncgen_hooks_installed_while_running_and_restored(self, loop):
        def outer_firstiter(agen):
            pass

        def outer_finalizer(agen):
            pass

        saved = sys.get_asyncgen_hooks()
        sys.set_asyncgen_hooks(firstiter=outer_firstiter, finalizer=outer_finalizer)
        try:
            async def main():
                return sys.get_asyncgen_hooks()

            inside = loop.run_until_complete(main())
            after = sys.get_asyncgen_hooks()
        finally:
            sys.set_asyncgen_hooks(*saved)
        assert inside.firstiter is not None and inside.finalizer is not None
        assert inside.firstiter is not outer_firstiter
        assert inside.finalizer is not outer_finalizer
        assert after.firstiter is outer_firstiter
        assert after.finalizer is outer_finalizer

    def test_asyncgen_hooks_restored_after_exception(self, loop):
        saved = sys.get_asyncgen_hooks()

        async def main():
            raise ValueError("x")

        with pytest.raises(ValueError):
            loop.run_until_complete(main())
        assert sys.get_asyncgen_hooks() == saved


FIRST_SNAPSHOT_RACE = """
import sys, threading, time
import ferroloop

loop = ferroloop.new_event_loop()
errors, stop = [], False
started = threading.Event()


def touch_the_loop():
    started.set()
    while not stop:
        try:
            loop.is_closed()
        except BaseException as exc:
            errors.append(repr(exc))
            return


t = threading.Thread(target=touch_the_loop)
t.start()
started.wait()
end = time.perf_counter() + 0.004 + 0.001 * (int(sys.argv[1]) % 7)
while time.perf_counter() < end:  # both threads contend, so a GIL switch is pending
    pass
try:
    loop.call_soon(lambda: None)  # the process's first handle without context=
except BaseException as exc:
    errors.append(repr(exc))
stop = True
t.join()
loop.close()
print(errors)
"""


def test_first_handle_of_a_process_keeps_the_loop_usable_from_other_threads():
    # The first handle made without context= settles a one-time probe that releases the GIL;
    # it must not do so while the loop's state is borrowed, or a thread that takes the GIL
    # then finds the loop unusable (a PanicException). Each run is a fresh process.
    for attempt in range(8):
        out = subprocess.run(
            [sys.executable, "-c", FIRST_SNAPSHOT_RACE, str(attempt)],
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[]", out.stdout


def test_run_of_a_loop_closed_meanwhile_raises(ferro_loop):
    # run_forever checks for a closed loop before its native run; another thread may close the
    # loop in between, and the native run must then raise as the stock loop does, not spin.
    ferro_loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        ferro_loop._run()
