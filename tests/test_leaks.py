"""Resource leaks of ferroloop loops: file descriptors, memory, references to callbacks, and
reference cycles through the Rust core."""

import asyncio
import gc
import os
import socket
import warnings
import weakref

import pytest

import ferroloop

PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 1024 * 1024


def fd_count():
    return len(os.listdir("/proc/self/fd"))


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def noop():
    pass


class Callback:
    """A callable that can be weakly referenced."""

    def __init__(self, loop=None):
        self.loop = loop
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1


def _create_close():
    loop = ferroloop.new_event_loop()
    loop.close()


def _run_and_close_with_pending_timer():
    loop = ferroloop.new_event_loop()
    loop.run_until_complete(asyncio.sleep(0))
    loop.call_later(10, noop)
    loop.close()


@pytest.mark.parametrize("cycle", [_create_close, _run_and_close_with_pending_timer])
def test_many_loops_leak_no_fds_nor_memory(cycle):
    for _ in range(1000):  # warm-up: allocator pools, caches, lazily imported modules
        cycle()
    gc.collect()
    fds0, rss0 = fd_count(), rss()
    for _ in range(10_000):
        cycle()
    gc.collect()
    fds1, rss1 = fd_count(), rss()
    assert abs(fds1 - fds0) <= 2, (fds0, fds1)
    assert rss1 - rss0 < 20 * MiB, f"RSS grew by {(rss1 - rss0) / MiB:.1f} MiB"


def test_each_loop_holds_fds_until_closed():
    """Control for the fd tests: a loop does own fds, and close()+drop gives them back."""
    fds0 = fd_count()
    loops = [ferroloop.new_event_loop() for _ in range(5)]
    assert fd_count() >= fds0 + 5
    for loop in loops:
        loop.close()
    del loops, loop
    gc.collect()
    assert abs(fd_count() - fds0) <= 2


@pytest.mark.parametrize(
    "factory", [ferroloop.new_event_loop, asyncio.new_event_loop], ids=["ferroloop", "asyncio-control"]
)
def test_close_releases_every_fd_while_loop_still_referenced(factory):
    """The stock loop closes its selector and self-pipe in close(): a closed loop that is still
    referenced (kept in a list, a fixture, a traceback) holds no fd."""
    fds0 = fd_count()
    loops = [factory() for _ in range(5)]
    for loop in loops:
        loop.close()
    held = fd_count() - fds0
    assert held <= 2, f"{held} fds still open after closing 5 loops that are still referenced"
    del loops, loop


def test_close_twice_and_dropping_closed_loop_is_quiet():
    loop = ferroloop.new_event_loop()
    loop.close()
    loop.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del loop
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_unclosed_loop_warns_and_releases_fds():
    fds0 = fd_count()
    loop = ferroloop.new_event_loop()
    loop.call_later(10, noop)
    assert fd_count() > fds0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del loop
        gc.collect()
    resource = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert len(resource) == 1, [(w.category, str(w.message)) for w in caught]
    assert str(resource[0].message).startswith("unclosed event loop <")
    assert "closed=False" in str(resource[0].message)
    assert abs(fd_count() - fds0) <= 1


def test_unclosed_loop_that_ran_warns_and_releases_fds():
    fds0 = fd_count()
    loop = ferroloop.new_event_loop()
    loop.run_until_complete(asyncio.sleep(0.01))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del loop
        gc.collect()
    assert any(
        issubclass(w.category, ResourceWarning) and "unclosed event loop" in str(w.message) for w in caught
    ), [(w.category, str(w.message)) for w in caught]
    assert abs(fd_count() - fds0) <= 1


@pytest.mark.parametrize("how", ["call_soon", "call_later", "call_at"])
def test_close_releases_pending_callbacks(how):
    loop = ferroloop.new_event_loop()
    cb = Callback()
    arg = Callback()
    if how == "call_soon":
        loop.call_soon(cb, arg)
    elif how == "call_later":
        loop.call_later(10, cb, arg)
    else:
        loop.call_at(loop.time() + 10, cb, arg)
    cb_ref, arg_ref = weakref.ref(cb), weakref.ref(arg)
    del cb, arg
    gc.collect()
    assert cb_ref() is not None, "the loop must keep a pending callback alive"
    loop.close()
    gc.collect()
    assert cb_ref() is None, "closed loop still references its pending callback"
    assert arg_ref() is None, "closed loop still references its pending callback's argument"
    assert not loop.is_running() and loop.is_closed()


def test_close_releases_reader_and_writer_callbacks():
    loop = ferroloop.new_event_loop()
    a, b = socket.socketpair()
    try:
        reader, writer = Callback(), Callback()
        loop.add_reader(a, reader)
        loop.add_writer(b, writer)
        refs = weakref.ref(reader), weakref.ref(writer)
        del reader, writer
        gc.collect()
        assert all(r() is not None for r in refs)
        loop.close()
        gc.collect()
        assert [r() for r in refs] == [None, None]
    finally:
        a.close()
        b.close()


def test_cancelled_timer_released_while_loop_lives():
    loop = ferroloop.new_event_loop()
    try:
        cb = Callback()
        handle = loop.call_later(10, cb)
        ref = weakref.ref(cb)
        del cb
        handle.cancel()
        del handle
        loop.run_until_complete(asyncio.sleep(0))
        gc.collect()
        assert ref() is None
    finally:
        loop.close()


@pytest.mark.parametrize("closed", [False, True], ids=["unclosed", "closed"])
@pytest.mark.parametrize("how", ["call_soon", "call_later", "reader"])
def test_cycle_loop_handle_callback_loop_is_collected(closed, how):
    loop = ferroloop.new_event_loop()
    a, b = socket.socketpair()
    try:
        cb = Callback(loop)  # loop -> handle -> cb -> loop
        if how == "call_soon":
            loop.call_soon(cb)
        elif how == "call_later":
            loop.call_later(10, cb)
        else:
            loop.add_reader(a.fileno(), cb)
        if closed:
            loop.close()
        loop_ref, cb_ref = weakref.ref(loop), weakref.ref(cb)
        del loop, cb
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            gc.collect()
            gc.collect()
        # The ResourceWarning of an unclosed loop, recorded, holds the loop as its source (3.15
        # keeps the record alive until the block ends): collect once more without it.
        gc.collect()
        assert loop_ref() is None, "loop in a cycle through its callback was not collected"
        assert cb_ref() is None
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("closed", [False, True], ids=["unclosed", "closed"])
def test_cycle_loop_handle_kept_by_callback_is_collected(closed):
    """loop -> handle -> callback -> handle and loop: the callback holds its own handle too."""
    loop = ferroloop.new_event_loop()
    cb = Callback(loop)
    cb.handle = loop.call_later(10, cb)
    cb.soon = loop.call_soon(cb)
    if closed:
        loop.close()
    loop_ref = weakref.ref(loop)
    del loop, cb
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        gc.collect()
        gc.collect()
    # The ResourceWarning of an unclosed loop, recorded, holds the loop as its source (3.15
    # keeps the record alive until the block ends): collect once more without it.
    gc.collect()
    assert loop_ref() is None


def test_cycle_through_task_and_future_is_collected():
    """A loop that ran a task which stored the loop, then was dropped unclosed with a pending
    future whose done callback refers back to the loop."""
    loop = ferroloop.new_event_loop()

    async def main():
        fut = loop.create_future()
        fut.add_done_callback(lambda f: loop)
        loop.call_later(10, fut.set_result, loop)
        return fut

    fut = loop.run_until_complete(main())
    loop_ref = weakref.ref(loop)
    del loop, fut
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        gc.collect()
        gc.collect()
    # The ResourceWarning of an unclosed loop, recorded, holds the loop as its source (3.15
    # keeps the record alive until the block ends): collect once more without it.
    gc.collect()
    assert loop_ref() is None


def test_many_unclosed_dropped_loops_release_fds():
    gc.collect()
    fds0 = fd_count()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("ignore")
        for _ in range(2000):
            loop = ferroloop.new_event_loop()
            loop.call_soon(Callback(loop))  # a cycle: freed by gc, not by refcount
        del loop
        gc.collect()
    assert abs(fd_count() - fds0) <= 2


class Owner:
    """The everyday pattern `self._timer = loop.call_later(delay, self._on_timeout)`: the object
    holds its handle, the handle holds a bound method of the object."""

    def __init__(self, loop, how):
        if how == "call_later":
            self.handle = loop.call_later(10, self.on_timeout)
        else:
            self.handle = loop.call_soon(self.on_timeout)

    def on_timeout(self):
        pass


@pytest.mark.parametrize("how", ["call_later", "call_soon"])
def test_cycle_object_handle_bound_method_is_collected(loop, how):
    """Runs on both loops (the `loop` fixture): once the handle is off the loop (cancelled, or
    run), the cycle owner -> handle -> bound method -> owner is garbage for the collector."""
    owner = Owner(loop, how)
    owner.handle.cancel()
    loop.run_until_complete(asyncio.sleep(0.01))  # the cancelled handle leaves the loop's queues
    ref = weakref.ref(owner)
    del owner
    gc.collect()
    assert ref() is None, "owner -> handle -> bound method -> owner cycle was not collected"


def test_cycle_object_handle_bound_method_after_handle_ran(loop):
    ran = []

    class SelfScheduling:
        def __init__(self):
            self.handle = loop.call_soon(self.run)

        def run(self):
            ran.append(True)

    obj = SelfScheduling()
    loop.run_until_complete(asyncio.sleep(0.01))
    assert ran == [True]
    ref = weakref.ref(obj)
    del obj
    gc.collect()
    assert ref() is None
