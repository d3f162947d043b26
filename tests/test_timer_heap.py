"""ferroloop's timer heap housekeeping, seen through `_queue_sizes()` (ready, timers in the heap,
cancelled timers in the heap, registered fds): cancelled timers do not pile up."""

import asyncio


def run_one_iteration(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_heap_is_compacted_when_most_timers_are_cancelled(ferro_loop):
    handles = [ferro_loop.call_later(100 + i, lambda: None) for i in range(200)]
    for handle in handles[:150]:
        handle.cancel()
    assert ferro_loop._queue_sizes()[1:3] == (200, 150)
    run_one_iteration(ferro_loop)
    assert ferro_loop._queue_sizes()[1:3] == (50, 0)
    assert not any(h._scheduled for h in handles[:150])
    assert all(h._scheduled for h in handles[150:])


def test_small_heap_only_drops_cancelled_head(ferro_loop):
    handles = [ferro_loop.call_later(100 + i, lambda: None) for i in range(10)]
    run_one_iteration(ferro_loop)  # the new timers join the heap
    for handle in handles[:3] + handles[5:]:
        handle.cancel()
    run_one_iteration(ferro_loop)
    # Below 100 timers there is no compaction: only the cancelled timers at the head go.
    assert ferro_loop._queue_sizes()[1:3] == (7, 5)


def test_timer_cancelled_before_its_first_iteration_never_joins_the_heap(ferro_loop):
    handles = [ferro_loop.call_later(100 + i, lambda: None) for i in range(10)]
    for handle in handles[3:]:
        handle.cancel()
    assert ferro_loop._queue_sizes()[1:3] == (10, 7)
    run_one_iteration(ferro_loop)
    assert ferro_loop._queue_sizes()[1:3] == (3, 0)


def test_cancelling_a_fired_timer_is_not_counted(ferro_loop):
    fired = []
    handle = ferro_loop.call_later(0, fired.append, 1)
    run_one_iteration(ferro_loop)
    assert fired == [1]
    handle.cancel()
    assert ferro_loop._queue_sizes()[1:3] == (0, 0)


def test_close_empties_every_queue(ferro_loop):
    ferro_loop.call_soon(lambda: None)
    ferro_loop.call_later(10, lambda: None)
    assert ferro_loop._queue_sizes()[:2] == (1, 1)
    ferro_loop.close()
    assert ferro_loop._queue_sizes() == (0, 0, 0, 0)
    assert isinstance(ferro_loop, asyncio.AbstractEventLoop)
