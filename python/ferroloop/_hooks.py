"""Helpers the Rust loop calls on its cold paths: debug checks, reprs, log lines.

They live in Python so that their text is the stock loop's, built by the same
`asyncio.format_helpers` functions the stock loop uses.
"""

import inspect
import sys
import traceback
from asyncio import coroutines, format_helpers
from asyncio.log import logger

from ferroloop._core import TimerHandle
from ferroloop._stats import slow_callback_info, task_of

# The check the stock loop makes: `asyncio.iscoroutinefunction` warns from 3.14 on, and the loop
# itself uses the private twin that does not.
iscoroutinefunction = getattr(coroutines, "_iscoroutinefunction", coroutines.iscoroutinefunction)


def extract_stack():
    """The stack of the code that called into the loop, for `_source_traceback` in debug mode."""
    return format_helpers.extract_stack(sys._getframe(1))


# From 3.14 (and late 3.12/3.13 releases) the arguments are shown only in debug mode, as they may
# hold secrets; the loop says whether it is in debug mode.
_TAKES_DEBUG = "debug" in inspect.signature(format_helpers._format_callback_source).parameters


def format_callback_source(callback, args, debug=False):
    if _TAKES_DEBUG:
        return format_helpers._format_callback_source(callback, args, debug=debug)
    return format_helpers._format_callback_source(callback, args)


def check_callback(callback, method):
    """Debug mode's refusal of coroutines and non-callables, with the stock messages."""
    if coroutines.iscoroutine(callback) or iscoroutinefunction(callback):
        raise TypeError(f"coroutines cannot be used with {method}()")
    if not callable(callback):
        raise TypeError(f"a callable object was expected by {method}(), got {callback!r}")


def handle_repr(handle):
    info = [type(handle).__name__]
    if handle._cancelled:
        info.append("cancelled")
    if isinstance(handle, TimerHandle):
        info.append(f"when={handle._when}")
    callback = handle._callback
    if callback is not None:
        # A handle does not know its loop; one made in debug mode keeps its source traceback.
        debug = handle._source_traceback is not None
        info.append(format_callback_source(callback, handle._args, debug))
    source = handle._source_traceback
    if source:
        frame = source[-1]
        info.append(f"created at {frame[0]}:{frame[1]}")
    return "<{}>".format(" ".join(info))


def log_slow_callback(handle, seconds):
    task = task_of(handle)
    what = repr(task) if task is not None else str(handle)
    logger.warning("Executing %s took %.3f seconds", what, seconds)


def report_slow_callback(loop, handler, handle, wall_time, cpu_time):
    """Calls a slow-callback handler; what it raises goes to the loop's exception handler."""
    try:
        handler(slow_callback_info(handle, wall_time, cpu_time))
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        loop.call_exception_handler(
            {"message": "Exception in slow callback handler", "exception": exc, "handle": handle}
        )


def default_exception_handler(loop, context):
    """The stock default exception handler's log line, for `loop`: `LoopCore`'s
    `call_exception_handler`, and `Loop.default_exception_handler`."""
    message = context.get("message") or "Unhandled exception in event loop"
    exception = context.get("exception")
    exc_info = (type(exception), exception, exception.__traceback__) if exception is not None else False
    current = loop._current_handle
    if "source_traceback" not in context and current is not None and current._source_traceback:
        context["handle_traceback"] = current._source_traceback
    lines = [message]
    for key in sorted(context):
        if key in {"message", "exception"}:
            continue
        value = context[key]
        if key == "source_traceback":
            value = "Object created at (most recent call last):\n" + "".join(traceback.format_list(value)).rstrip()
        elif key == "handle_traceback":
            value = "Handle created at (most recent call last):\n" + "".join(traceback.format_list(value)).rstrip()
        else:
            value = repr(value)
        lines.append(f"{key}: {value}")
    logger.error("\n".join(lines), exc_info=exc_info)


def trace_attach(loop):
    """A loop starts running while a `ferroloop.trace()` is on."""
    from ferroloop import _trace

    _trace.attach(loop)
