"""`loop.stats()` and the slow-callback handler: ferroloop's always-on counters.

Durations are made with `time.sleep` or a spin inside a callback and checked only from below (a
busy machine makes everything slower, never faster), so they cannot flake."""

import asyncio
import logging
import math
import socket
import time

import pytest

import ferroloop
from util import run


def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def run_once(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_counts_callbacks_and_timers_exactly(ferro_loop):
    loop = ferro_loop
    loop.stats(reset=True)
    seen = []
    for i in range(5):
        loop.call_soon(seen.append, i)
    loop.call_later(0, seen.append, "t1")
    loop.call_at(0, seen.append, "t2")
    loop.call_later(0, seen.append, "never").cancel()
    run_once(loop)
    assert seen == [0, 1, 2, 3, 4, "t2", "t1"]
    stats = loop.stats()
    assert stats.timers_scheduled == 3
    assert stats.timers_fired == 2
    assert stats.timers_cancelled == 1
    assert stats.callbacks == 5 + 1 + 2  # the five, loop.stop, the two timers
    assert stats.ready == 0
    assert stats.slow_callbacks == 0


def test_ready_is_the_queue_length_now(ferro_loop):
    for _ in range(3):
        ferro_loop.call_soon(lambda: None)
    assert ferro_loop.stats().ready == 3


def test_busy_idle_and_the_longest_callback(ferro_loop):
    loop = ferro_loop
    loop.stats(reset=True)

    def sleeper():
        time.sleep(0.05)

    loop.call_soon(sleeper)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    stats = loop.stats()
    assert stats.busy_time >= 0.045
    assert stats.longest_callback >= 0.045
    assert "sleeper" in stats.longest_callback_repr
    assert stats.polls >= 1
    assert 0.0 < stats.utilization <= 1.0
    assert stats.elapsed >= stats.busy_time
    assert stats.longest_callback <= stats.busy_time


def test_reset_starts_from_zero(ferro_loop):
    loop = ferro_loop
    loop.call_soon(time.sleep, 0.01)
    run_once(loop)
    before = loop.stats(reset=True)
    assert before.callbacks >= 2
    after = loop.stats()
    assert after.callbacks == 0
    assert after.busy_time == 0.0
    assert after.longest_callback == 0.0
    assert after.longest_callback_repr is None
    assert after.lag.count == 0
    assert after.utilization == 0.0


def test_io_events_are_counted(ferro_loop):
    loop = ferro_loop
    a, b = socket.socketpair()
    try:
        got = loop.create_future()
        loop.add_reader(a, lambda: got.done() or got.set_result(a.recv(10)))
        loop.stats(reset=True)
        b.send(b"x")
        assert run(loop, got) == b"x"
        loop.remove_reader(a)
        assert loop.stats().io_events >= 1
    finally:
        a.close()
        b.close()


def test_timer_lateness_and_queue_waits_are_in_the_lag(ferro_loop):
    loop = ferro_loop
    loop.stats(reset=True)
    loop.call_soon(time.sleep, 0.1)  # blocks the loop past the timer's deadline
    loop.call_soon(lambda: None)  # waits behind it
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    stats = loop.stats()
    assert stats.timer_lag.count == 1
    assert stats.timer_lag.percentile(100) >= 0.08
    assert stats.ready_wait.percentile(100) >= 0.09
    assert stats.ready_wait.count == 2
    assert stats.lag.count == 3


def test_waits_count_from_the_end_of_the_callback_that_queued(ferro_loop):
    loop = ferro_loop
    loop.stats(reset=True)

    def queue_then_block():
        loop.call_soon(loop.stop)
        time.sleep(0.1)

    loop.call_soon(queue_then_block)
    loop.run_forever()
    # loop.stop was queued at the start of a 0.1 s callback, and ran right after it.
    assert loop.stats().ready_wait.percentile(100) < 0.05


def test_histogram_buckets_are_fixed_and_doubling(ferro_loop):
    bounds = ferro_loop.stats().timer_lag.bounds
    assert bounds[0] == pytest.approx(2**10 * 1e-9)
    for lower, upper in zip(bounds[:-2], bounds[1:-1]):
        assert upper == pytest.approx(2 * lower)
    assert math.isinf(bounds[-1])
    assert bounds[-2] > 10.0


def test_percentile_reads_bucket_edges():
    bounds = (1.0, 2.0, 4.0, math.inf)
    hist = ferroloop.LagHistogram(bounds, (2, 0, 1, 1))
    assert hist.count == 4
    assert hist.percentile(0) == 1.0
    assert hist.percentile(50) == 1.0
    assert hist.percentile(51) == 4.0
    assert hist.percentile(100) == math.inf
    assert (hist + hist).counts == (4, 0, 2, 2)
    assert ferroloop.LagHistogram(bounds, (0, 0, 0, 0)).percentile(99) == 0.0
    with pytest.raises(ValueError):
        hist.percentile(101)


@pytest.mark.nodebug
def test_slow_callbacks_are_counted_without_debug(ferro_loop):
    loop = ferro_loop
    assert not loop.get_debug()
    loop.slow_callback_duration = 0.02
    loop.stats(reset=True)
    loop.call_soon(time.sleep, 0.05)
    loop.call_soon(lambda: None)
    run_once(loop)
    assert loop.stats().slow_callbacks == 1


def test_slow_callback_handler_gets_wall_and_cpu_time(ferro_loop):
    loop = ferro_loop
    loop.slow_callback_duration = 0.03
    infos = []
    loop.set_slow_callback_handler(infos.append)
    assert loop.get_slow_callback_handler() == infos.append

    def sleeper():
        time.sleep(0.06)

    def spinner():
        spin(0.06)

    loop.call_soon(sleeper)
    loop.call_soon(spinner)
    loop.call_soon(lambda: None)
    run_once(loop)
    assert [info.handle._callback for info in infos] == [sleeper, spinner]
    slept, spun = infos
    assert slept.wall_time >= 0.055 and spun.wall_time >= 0.055
    assert slept.cpu_time < slept.wall_time / 2
    assert spun.cpu_time > slept.cpu_time
    assert slept.task is None and slept.task_name is None and slept.stack is None


def test_slow_callback_handler_names_the_task_and_its_stack(ferro_loop):
    loop = ferro_loop
    loop.slow_callback_duration = 0.03
    infos = []
    loop.set_slow_callback_handler(infos.append)

    async def blocking_step():
        time.sleep(0.05)
        await asyncio.sleep(0)
        return "done"

    async def main():
        task = asyncio.get_running_loop().create_task(blocking_step(), name="the-slow-one")
        return task, await task

    task, result = run(loop, main())
    assert result == "done"
    [info] = [i for i in infos if i.task is task]
    assert info.task_name == "the-slow-one"
    assert info.stack is not None
    assert any(frame.name == "blocking_step" for frame in info.stack)


def test_slow_callback_handler_must_be_callable(ferro_loop):
    with pytest.raises(TypeError, match="A callable object or None is expected"):
        ferro_loop.set_slow_callback_handler(42)
    ferro_loop.set_slow_callback_handler(print)
    ferro_loop.set_slow_callback_handler(None)
    assert ferro_loop.get_slow_callback_handler() is None


def test_a_failing_handler_goes_to_the_exception_handler(ferro_loop):
    loop = ferro_loop
    loop.slow_callback_duration = 0.01
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def handler(info):
        raise RuntimeError("handler broke")

    loop.set_slow_callback_handler(handler)
    seen = []
    loop.call_soon(time.sleep, 0.03)
    loop.call_soon(seen.append, "after")
    run_once(loop)
    assert seen == ["after"]
    [context] = contexts
    assert context["message"] == "Exception in slow callback handler"
    assert isinstance(context["exception"], RuntimeError)
    assert context["handle"]._callback is time.sleep


def test_debug_mode_keeps_the_stock_log_line_and_calls_the_handler(ferro_loop, caplog):
    loop = ferro_loop
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01
    infos = []
    loop.set_slow_callback_handler(infos.append)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(time.sleep, 0.03)
        run_once(loop)
    assert any(r.getMessage().startswith("Executing <Handle") for r in caplog.records)
    assert len(infos) == 1 and infos[0].wall_time >= 0.025
    assert loop.stats().slow_callbacks == 1
