"""The benchmark workloads.

Each case is a function `run(loop, n) -> dict` that drives a fresh, not-yet-running loop with
`loop.run_forever()` or `loop.run_until_complete()` (never `asyncio.run`) and returns at least
`elapsed` (seconds, `time.perf_counter()` around the timed part only) and `ops` (how many units of
work that was). Memory cases also return `rss_growth_kib`: `ru_maxrss` once everything is queued,
minus `ru_maxrss` just before scheduling began.

Inputs that are not the loop's work (random delays, the loop object itself) are prepared before the
clock starts. Callbacks are shared no-argument functions, so the per-item cost measured is the
loop's own (handle, queue, heap entry), not Python objects built by the benchmark.
"""

import asyncio
import gc
import random
import resource
from dataclasses import dataclass
from time import perf_counter, process_time
from typing import Callable

SEED = 20240601


def maxrss_kib():
    """Peak resident set size of this process so far, in KiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _noop():
    pass


def _random_delays(n, high, seed=SEED):
    rng = random.Random(seed)
    return [rng.uniform(0.0, high) for _ in range(n)]


def _countdown(loop, count):
    """A callback that stops `loop` on its `count`-th call."""
    left = count

    def fire():
        nonlocal left
        left -= 1
        if not left:
            loop.stop()

    return fire


# --- time cases ---------------------------------------------------------------------------------


def call_soon(loop, n):
    call = loop.call_soon
    start = perf_counter()
    for _ in range(n - 1):
        call(_noop)
    call(loop.stop)
    loop.run_forever()
    return {"elapsed": perf_counter() - start, "ops": n}


CALL_SOON_BATCH = 1000


def call_soon_batches(loop, n):
    """n callbacks issued CALL_SOON_BATCH per iteration: each batch's last one issues the next."""
    call = loop.call_soon
    batches = max(1, n // CALL_SOON_BATCH)
    left = batches

    def batch():
        nonlocal left
        left -= 1
        for _ in range(CALL_SOON_BATCH - 1):
            call(_noop)
        call(batch if left else loop.stop)

    start = perf_counter()
    call(batch)
    loop.run_forever()
    return {"elapsed": perf_counter() - start, "ops": batches * CALL_SOON_BATCH}


def call_soon_chain(loop, n):
    call = loop.call_soon
    left = n

    def step():
        nonlocal left
        left -= 1
        if left:
            call(step)
        else:
            loop.stop()

    start = perf_counter()
    call(step)
    loop.run_forever()
    return {"elapsed": perf_counter() - start, "ops": n}


def timers(loop, n):
    delays = _random_delays(n, 0.1)
    fire = _countdown(loop, n // 2)  # every other timer is cancelled: n // 2 remain
    call_later = loop.call_later
    start = perf_counter()
    handles = [call_later(delay, fire) for delay in delays]
    for handle in handles[::2]:
        handle.cancel()
    loop.run_forever()
    return {"elapsed": perf_counter() - start, "ops": n}


SLEEP0_PER_TASK = 10


async def _sleep0_worker():
    for _ in range(SLEEP0_PER_TASK):
        await asyncio.sleep(0)


def sleep0_tasks(loop, n):
    async def main():
        await asyncio.gather(*[loop.create_task(_sleep0_worker()) for _ in range(n)])

    start = perf_counter()
    loop.run_until_complete(main())
    return {"elapsed": perf_counter() - start, "ops": n * SLEEP0_PER_TASK}


def future_pingpong(loop, n):
    """A sets the future B awaits, then awaits its own; B wakes, sets the one A awaits.

    Each side makes a fresh future before handing the turn over, and no future holds another, so
    finished futures are freed as the game goes on.
    """
    to_a = None
    to_b = loop.create_future()

    async def player_a():
        nonlocal to_a
        for _ in range(n):
            to_a = loop.create_future()
            to_b.set_result(None)
            await to_a

    async def player_b():
        nonlocal to_b
        for _ in range(n):
            await to_b
            to_b = loop.create_future()
            to_a.set_result(None)

    async def main():
        await asyncio.gather(loop.create_task(player_b()), loop.create_task(player_a()))

    start = perf_counter()
    loop.run_until_complete(main())
    return {"elapsed": perf_counter() - start, "ops": n}


SLEEPS_PER_TASK = 5


async def _sleeper(delays):
    for delay in delays:
        await asyncio.sleep(delay)


def sleep_tasks(loop, n):
    flat = _random_delays(n * SLEEPS_PER_TASK, 0.005)
    per_task = [flat[i : i + SLEEPS_PER_TASK] for i in range(0, len(flat), SLEEPS_PER_TASK)]

    async def main():
        await asyncio.gather(*[loop.create_task(_sleeper(d)) for d in per_task])

    start, cpu = perf_counter(), process_time()
    loop.run_until_complete(main())
    return {"elapsed": perf_counter() - start, "cpu": process_time() - cpu, "ops": n * SLEEPS_PER_TASK}


# --- memory cases -------------------------------------------------------------------------------


def mem_callbacks(loop, n):
    call = loop.call_soon
    gc.collect()
    baseline = maxrss_kib()
    start = perf_counter()
    for _ in range(n - 1):
        call(_noop)
    call(loop.stop)
    queued = maxrss_kib()
    loop.run_forever()
    elapsed = perf_counter() - start
    return {"elapsed": elapsed, "ops": n, "rss_growth_kib": queued - baseline}


def mem_timers(loop, n):
    delays = _random_delays(n, 0.1)
    fire = _countdown(loop, n)
    call_later = loop.call_later
    gc.collect()
    baseline = maxrss_kib()
    start = perf_counter()
    for delay in delays:
        call_later(delay, fire)
    queued = maxrss_kib()
    loop.run_forever()
    elapsed = perf_counter() - start
    return {"elapsed": elapsed, "ops": n, "rss_growth_kib": queued - baseline}


# --- registry -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable
    size: int  # full-size n
    unit: str  # what one op is, for the report
    metric: str  # "time" (compare elapsed), "cpu" (compare cpu) or "memory" (rss_growth_kib)
    about: str  # with {n} where the size goes

    def size_for(self, scale):
        return max(2, int(self.size * scale))

    def describe(self, scale):
        return self.about.format(n=f"{self.size_for(scale):,}")


CASES = {
    case.name: case
    for case in [
        Case("call_soon", call_soon, 1_000_000, "callback", "time",
             "{n} call_soon callbacks scheduled up front; the last one stops the loop"),
        Case("call_soon_batches", call_soon_batches, 1_000_000, "callback", "time",
             "{n} call_soon callbacks, 1,000 issued per iteration by the last of the batch"),
        Case("call_soon_chain", call_soon_chain, 1_000_000, "callback", "time",
             "a chain of {n} callbacks, each scheduling the next with call_soon"),
        Case("timers", timers, 200_000, "timer", "time",
             "{n} call_later timers, random delays in 0..0.1 s, every other one cancelled"),
        Case("sleep0_tasks", sleep0_tasks, 100_000, "sleep(0)", "time",
             "{n} tasks each awaiting asyncio.sleep(0) ten times, gathered"),
        Case("future_pingpong", future_pingpong, 200_000, "round trip", "time",
             "{n} round trips of futures between two tasks"),
        Case("sleep_tasks", sleep_tasks, 10_000, "sleep", "cpu",
             "{n} tasks each sleeping a random 0..5 ms delay five times (compared by CPU time: "
             "most of the wall time is the sleeping)"),
        Case("mem_callbacks", mem_callbacks, 1_000_000, "callback", "memory",
             "RSS growth with {n} call_soon callbacks queued"),
        Case("mem_timers", mem_timers, 200_000, "timer", "memory",
             "RSS growth with {n} call_later timers queued"),
    ]
}
