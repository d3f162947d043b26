"""`add_signal_handler` / `remove_signal_handler`, with the stock Unix loop's semantics.

Why not the stdlib's: the stock methods belong to `unix_events._UnixSelectorEventLoop` and read
the wake-up socket through its selector; these read it through the loop's Rust poller.

How a signal reaches its callback: the loop's wake-up socket is given to `signal.set_wakeup_fd`,
and each handled signal gets a do-nothing Python handler, so CPython's C handler writes the
signal number to that socket. The Rust loop reads the numbers among the iteration's events and
queues the callback `_signal_handlers` (a dict the Rust loop owns) holds for each with
`call_soon`: it runs in the same iteration, as in the stock loop, and outside the signal handler,
so it may do anything.

While any handler is registered, the wake-up fd stays pointed at the loop between runs too (the
stock loop does the same), so a signal that arrives while the loop is not running is handled at
the start of the next run.
"""

import contextvars
import errno
import signal
import sys
import warnings
from asyncio import coroutines
from asyncio.log import logger

from ferroloop._hooks import iscoroutinefunction


def _sighandler_noop(signum, frame):
    """The Python-level handler of a signal the loop handles: the work happens in the loop."""


class SignalMixin:
    """Keeps `self._signal_handlers` (signal number -> (callback, args, context)), which the
    Rust loop reads when a signal's number arrives."""

    def _check_signal(self, sig):
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def add_signal_handler(self, sig, callback, *args):
        """Calls `callback(*args)` from the loop each time signal `sig` arrives. Unix only."""
        if coroutines.iscoroutine(callback) or iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        try:
            # Raises ValueError outside the main thread: only the main thread handles signals.
            signal.set_wakeup_fd(self._signal_wakeup_fd(), warn_on_full_buffer=False)
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc))
        table = self._signal_handlers
        table[sig] = (callback, args, contextvars.copy_context())
        self._watch_signals(True)
        try:
            signal.signal(sig, _sighandler_noop)
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del table[sig]
            if not table:
                self._watch_signals(False)
                self._clear_wakeup_fd()
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig} cannot be caught")
            raise

    def remove_signal_handler(self, sig):
        """Removes the handler of `sig`, restoring the default one; True if there was one."""
        self._check_signal(sig)
        table = self._signal_handlers
        if table.pop(sig, None) is None:
            return False
        if not table:
            self._watch_signals(False)
        handler = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, handler)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig} cannot be caught")
            raise
        if not table:
            self._clear_wakeup_fd()
        return True

    @staticmethod
    def _clear_wakeup_fd():
        try:
            signal.set_wakeup_fd(-1)
        except (ValueError, OSError) as exc:
            logger.info("set_wakeup_fd(-1) failed: %s", exc)

    def _has_signal_handlers(self):
        return bool(self._signal_handlers)

    def _remove_all_signal_handlers(self):
        """On close: every handler removed (the stock loop warns instead at interpreter exit)."""
        table = self._signal_handlers
        if not table:
            return
        if sys.is_finalizing():
            warnings.warn(
                f"Closing the loop {self!r} on interpreter shutdown "
                f"stage, skipping signal handlers removal",
                ResourceWarning,
                source=self,
            )
            table.clear()
            self._watch_signals(False)
            return
        for sig in list(table):
            self.remove_signal_handler(sig)
