"""Contexts of callbacks scheduled without `context=`.

ferroloop lets such handles share one snapshot of the current variables until someone could tell
the difference (see src/event_loop/context.rs). These tests pin down everything the stock loop's
one-copy-per-handle guarantees, on both loops: isolation between callbacks, a handle's context
being its own and stable, writes made by a callback visible through the handle afterwards, and a
reader's context kept across its runs.
"""

import contextvars
import random
import socket
import threading

import pytest

var = contextvars.ContextVar("var", default="unset")


def context_of(handle):
    """Handle.get_context() (3.12+ in the stock loop), or the `_context` attribute before."""
    getter = getattr(handle, "get_context", None)
    return getter() if getter else handle._context


def run_queued(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()


SCHEDULERS = {
    "call_soon": lambda loop, f, *a: loop.call_soon(f, *a),
    "call_later": lambda loop, f, *a: loop.call_later(0, f, *a),
    "call_at": lambda loop, f, *a: loop.call_at(loop.time(), f, *a),
    "call_soon_threadsafe": lambda loop, f, *a: loop.call_soon_threadsafe(f, *a),
}


@pytest.mark.parametrize("how", SCHEDULERS)
def test_writes_do_not_reach_callbacks_scheduled_alongside(loop, how):
    schedule = SCHEDULERS[how]
    seen = []
    for i in range(5):
        schedule(loop, var.set, f"write-{i}")
        schedule(loop, lambda: seen.append(var.get()))
    run_queued(loop)
    if how != "call_soon":  # timers run after the stop callback's iteration ends
        run_queued(loop)
    assert seen == ["unset"] * 5
    assert var.get() == "unset"


def test_each_handle_has_its_own_stable_context(loop):
    handles = [loop.call_soon(lambda: None) for _ in range(3)]
    contexts = [context_of(h) for h in handles]
    assert len({id(c) for c in contexts}) == 3
    assert all(context_of(h) is c for h, c in zip(handles, contexts))
    assert all(isinstance(c, contextvars.Context) for c in contexts)
    run_queued(loop)


def test_writing_into_one_handles_context_before_it_runs_affects_only_it(loop):
    seen = []
    first = loop.call_soon(lambda: seen.append(("first", var.get())))
    loop.call_soon(lambda: seen.append(("second", var.get())))
    context_of(first).run(var.set, "planted")
    run_queued(loop)
    assert seen == [("first", "planted"), ("second", "unset")]


def test_handle_kept_after_its_run_shows_what_the_callback_set(loop):
    kept = loop.call_soon(var.set, "from-callback")
    loop.call_soon(var.set, "other")
    run_queued(loop)
    assert context_of(kept)[var] == "from-callback"
    assert var.get() == "unset"


def test_context_read_before_and_after_the_run_is_the_one_it_ran_in(loop):
    h = loop.call_soon(var.set, "inside")
    before = context_of(h)
    run_queued(loop)
    assert context_of(h) is before
    assert before[var] == "inside"


def test_callback_scheduled_by_a_callback_sees_its_writes(loop):
    seen = []

    def first():
        var.set("set-by-first")
        loop.call_soon(lambda: seen.append(var.get()))

    loop.call_soon(first)
    loop.call_soon(lambda: seen.append(var.get()))
    run_queued(loop)
    run_queued(loop)
    assert seen == ["unset", "set-by-first"]


def test_callbacks_scheduled_from_different_contexts_see_their_own(loop):
    seen = []
    for value in ["a", "b", "a", "c"]:
        ctx = contextvars.copy_context()
        ctx.run(var.set, value)
        ctx.run(loop.call_soon, lambda: seen.append(var.get()))
    loop.call_soon(lambda: seen.append(var.get()))
    run_queued(loop)
    assert seen == ["a", "b", "a", "c", "unset"]


def test_call_soon_threadsafe_from_a_thread_uses_that_threads_context(loop):
    seen = []

    def worker():
        var.set("thread-value")
        loop.call_soon_threadsafe(lambda: seen.append(var.get()))
        loop.call_soon_threadsafe(loop.stop)

    thread = threading.Thread(target=worker)
    loop.call_soon(thread.start)
    loop.run_forever()
    thread.join()
    assert seen == ["thread-value"]


def test_raising_callback_writes_stay_in_its_context(loop):
    errors = []
    loop.set_exception_handler(lambda lp, context: errors.append(context["exception"]))
    seen = []

    def boom():
        var.set("before-raise")
        raise ValueError("boom")

    h = loop.call_soon(boom)
    loop.call_soon(lambda: seen.append(var.get()))
    run_queued(loop)
    assert [type(e) for e in errors] == [ValueError]
    assert seen == ["unset"]
    assert context_of(h)[var] == "before-raise"


def test_reader_keeps_its_context_across_runs(loop):
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    seen = []

    def on_readable():
        a.recv(1)
        seen.append(var.get())
        var.set(f"run-{len(seen)}")
        if len(seen) == 3:
            loop.remove_reader(a)
            loop.stop()
        else:
            b.send(b"x")

    try:
        loop.add_reader(a, on_readable)
        b.send(b"x")
        loop.run_forever()
    finally:
        a.close()
        b.close()
    assert seen == ["unset", "run-1", "run-2"]
    assert var.get() == "unset"


def test_many_shared_handles_then_a_write_between_them(loop):
    seen = []
    for _ in range(100):
        loop.call_soon(lambda: seen.append(var.get()))
    token = var.set("changed")
    try:
        for _ in range(100):
            loop.call_soon(lambda: seen.append(var.get()))
    finally:
        var.reset(token)
    loop.call_soon(lambda: seen.append(var.get()))
    run_queued(loop)
    assert seen == ["unset"] * 100 + ["changed"] * 100 + ["unset"]


def test_kept_handle_whose_callback_set_nothing_shows_the_scheduling_context(loop):
    token = var.set("at-schedule")
    try:
        kept = [loop.call_soon(lambda: None) for _ in range(3)]
    finally:
        var.reset(token)
    run_queued(loop)
    contexts = [context_of(h) for h in kept]
    assert [c[var] for c in contexts] == ["at-schedule"] * 3
    assert len({id(c) for c in contexts}) == 3
    assert all(context_of(h) is c for h, c in zip(kept, contexts))


def test_timers_held_by_the_program_are_collected_with_their_cycles(loop):
    import gc
    import weakref

    class Owner:
        def fire(self):
            pass

    refs = []
    for _ in range(50):
        owner = Owner()
        owner.timer = loop.call_later(0, owner.fire)  # owner -> handle -> bound method -> owner
        refs.append(weakref.ref(owner))
        del owner
    run_queued(loop)
    run_queued(loop)
    gc.collect()
    assert [r() for r in refs] == [None] * 50


def test_every_switch_of_the_current_context_is_seen(loop):
    """A handle may reuse the last snapshot only while the running thread's current Context
    still holds its variables (read from the thread state, src/cpython/context.rs): each switch
    into another Context, each set, and each return to an earlier one must show."""
    rng = random.Random(20261207)
    contexts = [contextvars.copy_context() for _ in range(4)]
    for i, ctx in enumerate(contexts):
        ctx.run(var.set, f"ctx-{i}")
    expected, seen = [], []

    def record():
        seen.append(var.get())

    def set_and_schedule(value):
        var.set(value)
        loop.call_soon(record)

    def script():  # in a Context of its own, so that its writes stay out of other tests
        for step in range(400):
            action = rng.randrange(4)
            if action == 0:
                ctx = rng.choice(contexts)
                expected.append(ctx[var])
                ctx.run(loop.call_soon, record)
            elif action == 1:
                var.set(f"outer-{step}")
                expected.append(f"outer-{step}")
                loop.call_soon(record)
            elif action == 2:
                rng.choice(contexts).run(set_and_schedule, f"inner-{step}")
                expected.append(f"inner-{step}")
            else:
                expected.append(var.get())
                loop.call_soon(record)

    contextvars.copy_context().run(script)
    run_queued(loop)
    assert seen == expected
    assert var.get() == "unset"
