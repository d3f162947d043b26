"""ferroloop: Python's asyncio event loop, written in Rust.

    import ferroloop
    ferroloop.run(main())                 # like asyncio.run, on ferroloop
    loop = ferroloop.new_event_loop()     # a loop to drive by hand
    ferroloop.install()                   # make asyncio.new_event_loop() return ferroloop loops
"""

import asyncio as _asyncio
import sys as _sys

from ferroloop._core import Handle, TimerHandle, __version__
from ferroloop._loop import Loop

__all__ = ("Loop", "Handle", "TimerHandle", "new_event_loop", "EventLoopPolicy", "install", "run")


def new_event_loop():
    """A new ferroloop event loop."""
    return Loop()


class EventLoopPolicy(_asyncio.DefaultEventLoopPolicy):
    """The default asyncio policy, with ferroloop loops."""

    def _loop_factory(self):
        return new_event_loop()

    def __repr__(self):
        return f"<{type(self).__name__}>"


def install():
    """Makes ferroloop the loop of `asyncio.run`, `asyncio.new_event_loop` and friends."""
    _asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main, *, debug=None):
    """Runs the coroutine `main` on a new ferroloop loop and returns its result, as
    `asyncio.run` does (async generators and the default executor are shut down, the loop
    closed)."""
    if _sys.version_info >= (3, 12):
        with _asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
            return runner.run(main)
    if _asyncio.events._get_running_loop() is not None:
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")
    # Before 3.12 the runner takes its loop from the policy: swap ours in for the run.
    old_policy = _asyncio.get_event_loop_policy()
    _asyncio.set_event_loop_policy(EventLoopPolicy())
    try:
        if not hasattr(_asyncio, "Runner"):
            return _asyncio.run(main, debug=debug)
        with _asyncio.Runner(debug=debug) as runner:
            return runner.run(main)
    finally:
        _asyncio.set_event_loop_policy(old_policy)
