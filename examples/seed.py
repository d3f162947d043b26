"""The seed's example: two tasks, one thread, and the total time is one sleep, not two.

    python -m ferroloop run examples/seed.py          # through the command line
    python examples/seed.py                           # the same, ferroloop chosen in code

It prints step 1 and step 3 at once, then step 2 and step 4 together about two seconds later,
first through `loop.run_until_complete(asyncio.gather(...))`, then through `ferroloop.run`.
The delay can be shortened with SEED_SLEEP=0.2 (the tests do). With `--mistakes` it then shows
the seed's two classic mistakes, which fail exactly as on the stock loop: `ferroloop.run` given a
gather future instead of a coroutine (ValueError), and a coroutine called but never awaited
(RuntimeWarning).
"""

import asyncio
import logging
import os
import sys
import time
import warnings

import ferroloop

logger = logging.getLogger("seed")
SLEEP = float(os.environ.get("SEED_SLEEP", "2"))


async def func1():
    logger.info("step 1")
    await asyncio.sleep(SLEEP)
    logger.info("step 2")


async def func2():
    logger.info("step 3")
    await asyncio.sleep(SLEEP)
    logger.info("step 4")


async def run_tasks():
    await asyncio.gather(func1(), func2())


def main():
    logging.basicConfig(level=logging.INFO, format="%(relativeCreated)6.0f ms  %(message)s")
    start = time.monotonic()
    loop = ferroloop.new_event_loop()
    asyncio.set_event_loop(loop)  # gather() outside a coroutine takes the current loop
    try:
        loop.run_until_complete(asyncio.gather(func1(), func2()))
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    logger.info("run_until_complete(gather(...)) took %.2f s on %s", time.monotonic() - start, type(loop).__name__)

    start = time.monotonic()
    ferroloop.run(run_tasks())
    logger.info("ferroloop.run(run_tasks()) took %.2f s", time.monotonic() - start)

    if "--mistakes" in sys.argv[1:]:
        show_mistakes()


def show_mistakes():
    loop = ferroloop.new_event_loop()
    asyncio.set_event_loop(loop)
    gathering = asyncio.gather(func1(), func2())
    try:
        ferroloop.run(gathering)
    except (ValueError, RuntimeError) as exc:
        # ValueError before Python 3.14; from 3.14 on, the runner awaits the future from a task
        # of its own loop, which refuses a future of another loop with RuntimeError.
        logger.info("mistake 1, run() given a future: %s: %s", type(exc).__name__, exc)
    gathering.cancel()
    try:
        loop.run_until_complete(gathering)  # lets the cancelled children finish
    except asyncio.CancelledError:
        pass
    asyncio.set_event_loop(None)
    loop.close()

    async def forgets_await():
        func1()  # the mistake: called, never awaited

    warnings.simplefilter("always", RuntimeWarning)
    ferroloop.run(forgets_await())


if __name__ == "__main__":
    main()
