"""The `contextvars.Context` a transport's protocol callbacks run in.

The stock loop runs each protocol callback in whatever Context was current when the transport
happened to schedule or call it: `connection_lost` in a copy of the Context of the task that
called `close()`, `pause_writing()` in the task that wrote past the high-water mark,
`data_received` after `resume_reading()` in a copy of the Context of whoever resumed. A protocol
that keeps per-connection state in context variables (a request id set in `connection_made`, a
tracing span) then sees another task's variables in its callbacks.

ferroloop, like uvloop, gives each transport one Context, a copy of the one it was created in,
and runs every protocol callback in it, scheduled or synchronous. The Rust stream transport does
so in `src/transports/stream/`; the transports written in Python mix `InContext` in. A Context can
be entered once at a time, so a synchronous callback made while that Context is already entered
(the protocol wrote from its own `data_received`) runs where it is: inside it already
(`_core.run_in_context`).
"""

import contextvars

from ferroloop._core import run_in_context


class InContext:
    """For a transport with `_loop` and `_protocol`. `_capture_context()` must run first, in the
    transport's constructor. Before `transports._FlowControlMixin` among the bases, so that its
    `pause_writing`/`resume_writing` calls run in the transport's Context."""

    _context = None

    def _capture_context(self):
        self._context = contextvars.copy_context()

    def _soon(self, callback, *args):
        """`loop.call_soon` in the transport's Context."""
        return self._loop.call_soon(callback, *args, context=self._context)

    def _in_context(self, callback, *args):
        """Calls `callback(*args)` now, in the transport's Context."""
        return run_in_context(self._context, callback, *args)

    def _maybe_pause_protocol(self):
        self._in_context(super()._maybe_pause_protocol)

    def _maybe_resume_protocol(self):
        self._in_context(super()._maybe_resume_protocol)
