"""Where due timers run within an iteration, on both loops.

The stock loop moves every timer due at the start of an iteration to the ready queue, behind the
callbacks already there, and runs them all in that pass; timers scheduled during the pass wait
for the next iteration. ferroloop pops each due timer when its turn comes (see
src/event_loop/run.rs); these tests pin the order down, including after an exception escapes
mid-iteration.
"""

import time

import pytest


def test_due_timers_run_after_ready_callbacks_and_before_new_ones(loop):
    order = []

    def a():
        order.append("a")
        loop.call_at(loop.time() - 1, order.append, "t-new")  # due, but scheduled mid-pass
        loop.call_soon(order.append, "b")

    loop.call_later(0, order.append, "t1")
    loop.call_at(loop.time() - 5, order.append, "t0")
    loop.call_soon(a)
    time.sleep(0.002)
    loop.call_later(0.5, loop.stop)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert order == ["a", "t0", "t1", "b", "t-new"]


def test_equal_deadlines_keep_scheduling_order_across_iterations(ferro_loop):
    # ferroloop only: the stock heap breaks ties between equal deadlines arbitrarily
    # ([0, 2, 1, ...] here); ferroloop promises scheduling order.
    loop = ferro_loop
    order = []
    when = loop.time() - 1
    for i in range(3):
        loop.call_at(when, order.append, i)

    def later_batch():
        for i in range(3, 6):
            loop.call_at(when, order.append, i)

    loop.call_soon(later_batch)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert order == list(range(6))


@pytest.mark.parametrize("where", ["ready", "timer"])
def test_timers_not_reached_keep_their_place_after_an_escaping_exception(loop, where):
    order = []

    def boom():
        order.append("boom")
        loop.call_soon(order.append, "scheduled-by-boom")
        raise KeyboardInterrupt

    if where == "ready":
        loop.call_soon(boom)
        loop.call_soon(order.append, "s1")
    loop.call_at(loop.time() - 2, order.append, "t1")
    if where == "timer":
        loop.call_at(loop.time() - 3, boom)
    loop.call_at(loop.time() - 1, order.append, "t2")
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    loop.call_soon(loop.stop)
    loop.run_forever()
    if where == "ready":
        assert order == ["boom", "s1", "t1", "t2", "scheduled-by-boom"]
    else:
        assert order == ["boom", "t1", "t2", "scheduled-by-boom"]


def test_cancelling_a_due_timer_from_an_earlier_callback_skips_it(loop):
    order = []
    victim = loop.call_at(loop.time() - 1, order.append, "victim")
    loop.call_at(loop.time() - 2, lambda: (order.append("first"), victim.cancel()))
    loop.call_soon(order.append, "ready")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert order == ["ready", "first"]
