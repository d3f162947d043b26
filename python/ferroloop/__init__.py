"""ferroloop: Python's asyncio event loop, written in Rust.

    import ferroloop
    ferroloop.run(main())                 # like asyncio.run, on ferroloop
    loop = ferroloop.new_event_loop()     # a loop to drive by hand
    asyncio.run(main(), loop_factory=ferroloop.new_event_loop)   # Python 3.12+

`ferroloop.EventLoopPolicy` and `ferroloop.install()` plug ferroloop into asyncio's policy
system. asyncio deprecates policies from Python 3.14 on (removal in 3.16): there both warn as
asyncio's own policy API does, and the policy class is only made when it is first asked for, so
that importing ferroloop warns about nothing.
"""

import asyncio as _asyncio
import sys as _sys

from ferroloop._core import Handle, TimerHandle, __version__
from ferroloop._loop import Loop
from ferroloop._otel import instrument
from ferroloop._stats import LagHistogram, LoopStats, SlowCallback
from ferroloop._trace import trace
from ferroloop._watchdog import Stall, watchdog

# Policies stay importable without a warning while asyncio has them without one.
_POLICIES_DEPRECATED = _sys.version_info >= (3, 14)

__all__ = (
    "Loop",
    "Handle",
    "TimerHandle",
    "LoopStats",
    "LagHistogram",
    "SlowCallback",
    "trace",
    "watchdog",
    "Stall",
    "instrument",
    "new_event_loop",
    "run",
    "install",
) + (
    () if _POLICIES_DEPRECATED else ("EventLoopPolicy",)
)


def new_event_loop():
    """A new ferroloop event loop."""
    return Loop()


def run(main, *, debug=None, loop_factory=None):
    """Runs the coroutine `main` on a new ferroloop loop (or one `loop_factory` makes) and returns
    its result, as `asyncio.run` does: through `asyncio.Runner`, which shuts down async generators
    and the default executor and closes the loop. The process-wide policy is never touched."""
    with _asyncio.Runner(debug=debug, loop_factory=loop_factory or new_event_loop) as runner:
        return runner.run(main)


_policy_class = None


def _event_loop_policy_class():
    """The default asyncio policy, with ferroloop loops: made at first use."""
    global _policy_class
    if _policy_class is None:
        if _POLICIES_DEPRECATED:
            from asyncio import unix_events

            base = unix_events._DefaultEventLoopPolicy
        else:
            base = _asyncio.DefaultEventLoopPolicy

        class EventLoopPolicy(base):
            """The default asyncio policy, with ferroloop loops."""

            def _loop_factory(self):
                return new_event_loop()

            def __repr__(self):
                return f"<{type(self).__name__}>"

        EventLoopPolicy.__module__ = __name__
        _policy_class = EventLoopPolicy
    return _policy_class


def _deprecated(name):
    """asyncio's policy-API warning (`warnings._deprecated`), for ferroloop's caller's caller."""
    if _POLICIES_DEPRECATED:
        import warnings

        message = f"{name!r} is deprecated and slated for removal in Python 3.16"
        warnings.warn(message, DeprecationWarning, stacklevel=3)


def __getattr__(name):
    if name == "EventLoopPolicy":
        _deprecated("ferroloop.EventLoopPolicy")
        return _event_loop_policy_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _install():
    """`install` without the warning, for the command line."""
    policy = _event_loop_policy_class()()
    if _POLICIES_DEPRECATED:
        _asyncio.events._set_event_loop_policy(policy)
    else:
        _asyncio.set_event_loop_policy(policy)


def install():
    """Makes ferroloop the loop of `asyncio.run`, `asyncio.new_event_loop` and friends, through
    asyncio's policy (deprecated from Python 3.14 on: prefer `ferroloop.run` or
    `asyncio.run(main, loop_factory=ferroloop.new_event_loop)`)."""
    _deprecated("ferroloop.install")
    _install()
