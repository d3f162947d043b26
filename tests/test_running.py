"""Running and stopping the loop, run_until_complete, futures/tasks, and asyncio primitives on top.

Reference: CPython 3.11 asyncio (base_events.BaseEventLoop.run_forever / run_until_complete)."""

import asyncio
import contextvars
import gc
import sys
import time
import weakref

import pytest

var = contextvars.ContextVar("var", default="unset")


class TestRunForeverStop:
    def test_stop_from_callback_returns_from_run_forever(self, loop):
        out = []
        loop.call_soon(out.append, 1)
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert out == [1]
        assert not loop.is_running()

    def test_stop_before_run_forever_runs_exactly_one_iteration(self, loop):
        out = []

        def first():
            out.append("first")
            loop.call_soon(out.append, "second-iteration")

        loop.call_soon(first)
        loop.stop()
        loop.run_forever()
        assert out == ["first"]

    def test_stop_before_run_forever_with_nothing_ready_returns(self, loop):
        loop.stop()
        t0 = time.monotonic()
        loop.run_forever()
        assert time.monotonic() - t0 < 5.0

    def test_stop_before_run_forever_does_not_wait_for_timers(self, loop):
        out = []
        loop.call_later(30, out.append, "late")
        loop.stop()
        t0 = time.monotonic()
        loop.run_forever()
        assert time.monotonic() - t0 < 5.0
        assert out == []

    def test_stop_called_twice_stops_only_one_run(self, loop):
        out = []
        loop.call_soon(out.append, 1)
        loop.stop()
        loop.stop()
        loop.run_forever()
        assert out == [1]
        # The stop request was consumed: the next run lasts until the timer.
        t0 = time.monotonic()
        loop.call_soon(out.append, 2)
        loop.call_later(0.05, loop.stop)
        loop.run_forever()
        assert out == [1, 2]
        assert time.monotonic() - t0 >= 0.04

    def test_loop_can_be_run_again_after_stop(self, loop):
        for i in range(3):
            out = []
            loop.call_soon(out.append, i)
            loop.call_soon(loop.stop)
            loop.run_forever()
            assert out == [i]

    def test_run_forever_while_running_raises(self, loop):
        errors = []

        def nested():
            try:
                loop.run_forever()
            except RuntimeError as exc:
                errors.append(str(exc))
            loop.stop()

        loop.call_soon(nested)
        loop.run_forever()
        assert errors == ["This event loop is already running"]


class TestRunUntilComplete:
    def test_with_coroutine_returns_result(self, loop):
        async def coro():
            await asyncio.sleep(0)
            return 42

        assert loop.run_until_complete(coro()) == 42

    def test_with_future_returns_result(self, loop):
        fut = loop.create_future()
        loop.call_later(0.01, fut.set_result, "done")
        assert loop.run_until_complete(fut) == "done"

    def test_with_task_returns_result(self, loop):
        async def coro():
            return "task-result"

        task = loop.create_task(coro())
        assert loop.run_until_complete(task) == "task-result"
        assert task.done()

    def test_with_awaitable_object(self, loop):
        class Awaitable:
            def __await__(self):
                yield from asyncio.sleep(0).__await__()
                return "awaited"

        assert loop.run_until_complete(Awaitable()) == "awaited"

    def test_raises_coroutine_exception(self, loop):
        class Boom(Exception):
            pass

        async def coro():
            await asyncio.sleep(0)
            raise Boom("bang")

        with pytest.raises(Boom, match="bang"):
            loop.run_until_complete(coro())

    def test_raises_future_exception(self, loop):
        fut = loop.create_future()
        loop.call_soon(fut.set_exception, ValueError("from future"))
        with pytest.raises(ValueError, match="from future"):
            loop.run_until_complete(fut)

    def test_cancelled_future_raises_cancelled_error(self, loop):
        fut = loop.create_future()
        loop.call_soon(fut.cancel)
        with pytest.raises(asyncio.CancelledError):
            loop.run_until_complete(fut)

    def test_stop_before_future_completes_raises(self, loop):
        fut = loop.create_future()
        loop.call_soon(loop.stop)
        with pytest.raises(RuntimeError) as excinfo:
            loop.run_until_complete(fut)
        assert str(excinfo.value) == "Event loop stopped before Future completed."
        assert not fut.done()
        # The loop is still usable and the same future can be waited on again.
        loop.call_soon(fut.set_result, 7)
        assert loop.run_until_complete(fut) == 7

    def test_returns_after_already_done_future(self, loop):
        fut = loop.create_future()
        fut.set_result("ready")
        assert loop.run_until_complete(fut) == "ready"

    def test_timers_run_while_waiting(self, loop):
        async def coro():
            t0 = loop.time()
            await asyncio.sleep(0.05)
            return loop.time() - t0

        elapsed = loop.run_until_complete(coro())
        assert 0.05 <= elapsed < 5.0

    def test_callback_scheduled_later_is_not_run_after_completion(self, loop):
        out = []

        async def coro():
            loop.call_later(0.2, out.append, "late")

        loop.run_until_complete(coro())
        assert out == []


class TestState:
    def test_is_running_inside_and_outside(self, loop):
        seen = []
        assert not loop.is_running()
        loop.call_soon(lambda: seen.append(loop.is_running()))
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert seen == [True]
        assert not loop.is_running()

    def test_is_running_inside_coroutine(self, loop):
        async def coro():
            return loop.is_running()

        assert loop.run_until_complete(coro()) is True
        assert loop.is_running() is False

    def test_is_closed(self, loop_factory):
        lp = loop_factory()
        assert lp.is_closed() is False
        lp.close()
        assert lp.is_closed() is True
        lp.close()  # second close is a no-op
        assert lp.is_closed() is True

    def test_get_running_loop_inside_callback(self, loop):
        seen = []
        loop.call_soon(lambda: seen.append(asyncio.get_running_loop()))
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert seen == [loop]
        assert seen[0] is loop

    def test_get_event_loop_inside_callback(self, loop):
        seen = []
        loop.call_soon(lambda: seen.append(asyncio.get_event_loop()))
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert seen[0] is loop

    def test_get_event_loop_inside_callback_when_not_current(self, loop_factory):
        # The running loop wins over the policy's current loop.
        lp = loop_factory()
        try:
            seen = []
            lp.call_soon(lambda: seen.append(asyncio.get_event_loop()))
            lp.call_soon(lp.stop)
            lp.run_forever()
            assert seen[0] is lp
        finally:
            lp.close()

    def test_get_running_loop_outside_raises(self, loop):
        loop.call_soon(loop.stop)
        loop.run_forever()
        with pytest.raises(RuntimeError):
            asyncio.get_running_loop()

    def test_get_running_loop_inside_coroutine(self, loop):
        async def coro():
            return asyncio.get_running_loop()

        assert loop.run_until_complete(coro()) is loop


class TestKeyboardInterrupt:
    def test_keyboard_interrupt_in_callback_propagates(self, loop):
        def interrupt():
            raise KeyboardInterrupt

        loop.call_soon(interrupt)
        with pytest.raises(KeyboardInterrupt):
            loop.run_forever()
        assert not loop.is_running()

    def test_loop_reusable_after_keyboard_interrupt(self, loop):
        out = []

        def interrupt():
            raise KeyboardInterrupt

        loop.call_soon(interrupt)
        loop.call_soon(out.append, "rest-of-batch")
        with pytest.raises(KeyboardInterrupt):
            loop.run_forever()
        assert out == []

        async def coro():
            await asyncio.sleep(0)
            return asyncio.get_running_loop()

        assert loop.run_until_complete(coro()) is loop
        # Stock leaves the rest of the interrupted batch queued; it runs next time.
        assert out == ["rest-of-batch"]

    def test_keyboard_interrupt_in_coroutine_propagates(self, loop):
        async def coro():
            await asyncio.sleep(0)
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(coro())
        assert not loop.is_running()
        assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"

    def test_system_exit_in_callback_propagates(self, loop):
        def leave():
            raise SystemExit(3)

        loop.call_soon(leave)
        with pytest.raises(SystemExit):
            loop.run_forever()
        assert not loop.is_running()


class TestClose:
    def test_close_drops_pending_callbacks(self, loop_factory):
        lp = loop_factory()

        class Payload:
            def callback(self):
                pass

        ready = Payload()
        timed = Payload()
        ready_ref = weakref.ref(ready)
        timed_ref = weakref.ref(timed)
        lp.call_soon(ready.callback)
        lp.call_later(0, timed.callback)
        lp.call_later(100, timed.callback)
        del ready, timed
        gc.collect()
        assert ready_ref() is not None
        assert timed_ref() is not None
        lp.close()
        gc.collect()
        assert ready_ref() is None
        assert timed_ref() is None

    def test_close_while_running_raises(self, loop):
        errors = []

        def try_close():
            try:
                loop.close()
            except RuntimeError as exc:
                errors.append(str(exc))
            loop.stop()

        loop.call_soon(try_close)
        loop.run_forever()
        assert errors == ["Cannot close a running event loop"]
        assert not loop.is_closed()


class TestFuturesAndTasks:
    def test_create_future_returns_future_bound_to_loop(self, loop):
        fut = loop.create_future()
        assert isinstance(fut, asyncio.Future)
        assert asyncio.isfuture(fut)
        assert fut.get_loop() is loop
        assert not fut.done()

    def test_future_done_callback_runs_via_loop(self, loop):
        fut = loop.create_future()
        seen = []
        fut.add_done_callback(lambda f: seen.append(f.result()))
        fut.set_result(5)
        assert seen == []  # scheduled, not called synchronously
        loop.run_until_complete(fut)
        loop.run_until_complete(asyncio.sleep(0))
        assert seen == [5]

    def test_create_task_returns_task_bound_to_loop(self, loop):
        async def coro():
            return 1

        task = loop.create_task(coro())
        assert isinstance(task, asyncio.Task)
        assert task.get_loop() is loop
        assert loop.run_until_complete(task) == 1

    def test_create_task_with_name(self, loop):
        async def coro():
            return asyncio.current_task().get_name()

        task = loop.create_task(coro(), name="my-task")
        assert task.get_name() == "my-task"
        assert loop.run_until_complete(task) == "my-task"

    def test_create_task_with_context(self, loop):
        ctx = contextvars.copy_context()
        ctx.run(var.set, "task-ctx")

        async def coro():
            seen = var.get()
            var.set("written-by-task")
            return seen

        task = loop.create_task(coro(), context=ctx)
        assert loop.run_until_complete(task) == "task-ctx"
        assert ctx[var] == "written-by-task"
        assert var.get() == "unset"

    def test_create_task_without_context_copies_current(self, loop):
        token = var.set("outer")
        try:
            async def coro():
                seen = var.get()
                var.set("inner")
                return seen

            assert loop.run_until_complete(loop.create_task(coro())) == "outer"
            assert var.get() == "outer"
        finally:
            var.reset(token)

    def test_task_factory_default_is_none(self, loop):
        assert loop.get_task_factory() is None

    def test_set_task_factory_called_with_loop_and_coro(self, loop):
        def made_on(lp):
            calls = []

            def factory(lp, coro, **kwargs):
                calls.append((lp, coro, kwargs))
                return asyncio.Task(coro, loop=lp, **kwargs)

            lp.set_task_factory(factory)
            assert lp.get_task_factory() is factory

            async def coro():
                return "made"

            c = coro()
            task = lp.create_task(c, name="factory-task")
            assert [call[:2] for call in calls] == [(lp, c)]
            assert task.get_name() == "factory-task"
            assert lp.run_until_complete(task) == "made"
            return calls[0][2]

        # The keywords the factory gets are the running version's (the name goes to the factory
        # from 3.14 on, is set afterwards before).
        stock = asyncio.SelectorEventLoop()
        try:
            expected = made_on(stock)
        finally:
            stock.close()
        assert made_on(loop) == expected

    def test_set_task_factory_gets_context_keyword(self, loop):
        calls = []

        def factory(lp, coro, **kwargs):
            calls.append(kwargs)
            return asyncio.Task(coro, loop=lp, **kwargs)

        loop.set_task_factory(factory)
        ctx = contextvars.copy_context()
        ctx.run(var.set, "factory-ctx")

        async def coro():
            return var.get()

        task = loop.create_task(coro(), context=ctx)
        assert calls == [{"context": ctx}]
        assert loop.run_until_complete(task) == "factory-ctx"

    def test_task_factory_used_by_run_until_complete(self, loop):
        calls = []

        def factory(lp, coro, **kwargs):
            calls.append(coro)
            return asyncio.Task(coro, loop=lp, **kwargs)

        loop.set_task_factory(factory)

        async def coro():
            return 3

        assert loop.run_until_complete(coro()) == 3
        assert len(calls) == 1

    def test_reset_task_factory_to_none(self, loop):
        loop.set_task_factory(lambda lp, coro: asyncio.Task(coro, loop=lp))
        loop.set_task_factory(None)
        assert loop.get_task_factory() is None


class TestStdlibPrimitives:
    def test_gather(self, loop):
        async def value(x, delay):
            await asyncio.sleep(delay)
            return x

        async def main():
            return await asyncio.gather(value(1, 0.03), value(2, 0.01), value(3, 0))

        assert loop.run_until_complete(main()) == [1, 2, 3]

    def test_gather_return_exceptions(self, loop):
        async def fail():
            raise ValueError("x")

        async def main():
            return await asyncio.gather(fail(), asyncio.sleep(0, "ok"), return_exceptions=True)

        res = loop.run_until_complete(main())
        assert isinstance(res[0], ValueError)
        assert res[1] == "ok"

    def test_wait_first_completed(self, loop):
        async def main():
            fast = asyncio.ensure_future(asyncio.sleep(0.01, "fast"))
            slow = asyncio.ensure_future(asyncio.sleep(10, "slow"))
            done, pending = await asyncio.wait({fast, slow}, return_when=asyncio.FIRST_COMPLETED)
            slow.cancel()
            return done == {fast}, pending == {slow}

        assert loop.run_until_complete(main()) == (True, True)

    def test_wait_for_timeout(self, loop):
        async def main():
            t0 = loop.time()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.sleep(10), 0.05)
            return loop.time() - t0

        elapsed = loop.run_until_complete(main())
        assert 0.05 <= elapsed < 5.0

    def test_wait_for_result(self, loop):
        async def main():
            return await asyncio.wait_for(asyncio.sleep(0.01, "in-time"), 5)

        assert loop.run_until_complete(main()) == "in-time"

    def test_timeout_context_manager(self, loop):
        async def main():
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await asyncio.sleep(10)
            async with asyncio.timeout(5):
                await asyncio.sleep(0)
            return "survived"

        assert loop.run_until_complete(main()) == "survived"

    def test_task_group(self, loop):
        async def main():
            results = []

            async def worker(i):
                await asyncio.sleep(0.01 * (3 - i))
                results.append(i)

            async with asyncio.TaskGroup() as tg:
                for i in range(3):
                    tg.create_task(worker(i))
            return results

        assert loop.run_until_complete(main()) == [2, 1, 0]

    def test_task_group_propagates_error_and_cancels_siblings(self, loop):
        cancelled = []

        async def main():
            async def sibling():
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    cancelled.append(True)
                    raise

            async def fail():
                await asyncio.sleep(0.01)
                raise ValueError("group")

            async with asyncio.TaskGroup() as tg:
                tg.create_task(sibling())
                tg.create_task(fail())

        with pytest.raises(ExceptionGroup) as excinfo:
            loop.run_until_complete(main())
        assert [type(e) for e in excinfo.value.exceptions] == [ValueError]
        assert cancelled == [True]

    def test_lock(self, loop):
        async def main():
            lock = asyncio.Lock()
            order = []

            async def critical(i):
                async with lock:
                    order.append(("enter", i))
                    await asyncio.sleep(0.005)
                    order.append(("exit", i))

            await asyncio.gather(*(critical(i) for i in range(3)))
            return order

        order = loop.run_until_complete(main())
        for k in range(0, 6, 2):
            assert order[k][0] == "enter" and order[k + 1][0] == "exit"
            assert order[k][1] == order[k + 1][1]

    def test_event(self, loop):
        async def main():
            ev = asyncio.Event()
            loop.call_later(0.01, ev.set)
            await asyncio.wait_for(ev.wait(), 5)
            return ev.is_set()

        assert loop.run_until_complete(main()) is True

    def test_queue(self, loop):
        async def main():
            q = asyncio.Queue(maxsize=2)
            got = []

            async def producer():
                for i in range(5):
                    await q.put(i)
                await q.put(None)

            async def consumer():
                while (item := await q.get()) is not None:
                    got.append(item)

            await asyncio.gather(producer(), consumer())
            return got

        assert loop.run_until_complete(main()) == [0, 1, 2, 3, 4]

    def test_semaphore(self, loop):
        async def main():
            sem = asyncio.Semaphore(2)
            active = 0
            peak = 0

            async def worker():
                nonlocal active, peak
                async with sem:
                    active += 1
                    peak = max(peak, active)
                    await asyncio.sleep(0.005)
                    active -= 1

            await asyncio.gather(*(worker() for _ in range(6)))
            return peak

        assert loop.run_until_complete(main()) == 2

    def test_shield(self, loop):
        async def main():
            inner = asyncio.ensure_future(asyncio.sleep(0.02, "inner"))
            outer = asyncio.ensure_future(asyncio.shield(inner))
            await asyncio.sleep(0)
            outer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await outer
            return await inner

        assert loop.run_until_complete(main()) == "inner"

    def test_task_cancellation(self, loop):
        steps = []

        async def victim():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                steps.append("cancelled")
                raise
            finally:
                steps.append("finally")

        async def main():
            task = asyncio.ensure_future(victim())
            await asyncio.sleep(0.01)
            assert task.cancel() is True
            with pytest.raises(asyncio.CancelledError):
                await task
            return task.cancelled()

        assert loop.run_until_complete(main()) is True
        assert steps == ["cancelled", "finally"]

    def test_sleep_zero_yields_to_other_tasks(self, loop):
        order = []

        async def worker(name):
            for i in range(3):
                order.append((name, i))
                await asyncio.sleep(0)

        async def main():
            await asyncio.gather(worker("a"), worker("b"))

        loop.run_until_complete(main())
        assert order == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]


class TestEagerTasks:
    """3.12's eager tasks: the first step runs inside create_task; the name and the context
    given are kept (the stock 3.14 loop passes them to the factory; before, it names the task
    afterwards)."""

    @pytest.fixture(autouse=True)
    def _needs_eager_tasks(self):
        if sys.version_info < (3, 12):
            pytest.skip("eager tasks are 3.12+")

    def test_eager_task_factory_keeps_name_and_context(self, loop):
        var = contextvars.ContextVar("var", default="unset")
        steps = []

        async def body():
            steps.append(("first step", var.get()))
            await asyncio.sleep(0)
            return var.get()

        async def main():
            ctx = contextvars.copy_context()
            ctx.run(var.set, "given")
            task = loop.create_task(body(), name="eager-one", context=ctx)
            steps.append("create_task returned")
            return task.get_name(), await task

        loop.set_task_factory(asyncio.eager_task_factory)
        name, result = loop.run_until_complete(main())
        assert steps == [("first step", "given"), "create_task returned"]
        assert (name, result) == ("eager-one", "given")

    def test_eager_start_keyword(self, loop):
        if sys.version_info < (3, 14):
            pytest.skip("create_task(eager_start=) is 3.14+")
        steps = []

        async def body():
            steps.append("first step")

        async def main():
            task = loop.create_task(body(), eager_start=True, name="eager-two")
            steps.append("create_task returned")
            await task
            return task.get_name()

        assert loop.run_until_complete(main()) == "eager-two"
        assert steps == ["first step", "create_task returned"]
