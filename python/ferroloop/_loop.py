"""`ferroloop.Loop`: the asyncio event loop whose core is in Rust.

`_core.LoopCore` (Rust) holds what is hot: the ready queue, the timer heap, the poller, handles,
`call_soon`/`call_later`/`call_at`/`call_soon_threadsafe` and the iteration itself. This class adds
the parts that are not on a hot path, with the stock loop's semantics and messages: running until a
future completes, tasks and futures, executors, async generator hooks, the exception handler, and
the debug switches. Sockets, TLS, datagrams, pipes, subprocesses and signals come from the mixins.

TLS, sendfile, datagrams, pipes and subprocesses are not among the class's bases: their
methods are set on the class when one of them is first looked up (`_LATER`, `_LoadedAtFirstUse`).
Their modules are 40% of ferroloop's Python code and about 0.25 MiB of every process's memory, and
most programs use few of them. The class's own dict comes first in every lookup, so each name
resolves as it did when the mixins were bases (in the order `Sock, Resolver, Net, Tls, Sendfile,
Datagram, Pipe, Subprocess, Signal`) only because neither `LoopCore`, the eager mixins nor this
class's body define any of these names: tests/test_lazy_mixins.py checks that every name of the
class resolves as before. Two consequences: a module that fails to import raises at the first lookup, not at
`import ferroloop`; and `unittest.mock.patch.object(Loop, name, autospec=True)` before the first
use specs the placeholder, which is not callable (look the name up once first).
"""

import concurrent.futures
import importlib
import inspect
import os
import signal
import sys
import threading
import warnings
import weakref
from asyncio import constants, coroutines, events, futures, tasks, timeouts
from asyncio.log import logger

from ferroloop import _core, _hooks, _watchdog
from ferroloop._fd import C_INT_MAX, fileobj_to_fd, registrable_fd
from ferroloop._net import NetMixin
from ferroloop._resolver import ResolverMixin
from ferroloop._signals import SignalMixin
from ferroloop._sock import SockMixin
from ferroloop._stats import LoopStats

__all__ = ("Loop",)


SPIN_ENV = "FERROLOOP_SPIN_US"


def spin_limit_from_env():
    """The `FERROLOOP_SPIN_US` setting: the longest a wait polls before it blocks, in
    microseconds (0: never), or None when unset or blank (the default, 50 µs; see
    `src/core/poller/spin.rs`)."""
    value = os.environ.get(SPIN_ENV, "").strip()
    if not value:
        return None
    try:
        micros = int(value)
    except ValueError:
        micros = -1
    if not 0 <= micros <= _core.MAX_SPIN_US:
        raise ValueError(
            f"{SPIN_ENV} must be a whole number of microseconds from 0 (no spinning) "
            f"to {_core.MAX_SPIN_US}, not {value!r}"
        )
    return micros


# The mixins set on `Loop` at first use: (module, class) -> the names the class provides.
_LATER = {
    ("ferroloop._tls", "TlsMixin"): ("_make_ssl_transport", "start_tls"),
    ("ferroloop._sendfile", "SendfileMixin"): (
        "sock_sendfile", "_sock_sendfile_native", "_sock_sendfile_fallback",
        "sendfile", "_sendfile_native", "_sendfile_fallback",
    ),
    ("ferroloop._datagram", "DatagramMixin"): (
        "create_datagram_endpoint", "_datagram_candidates", "_open_datagram_socket",
        "_make_datagram_transport",
    ),
    ("ferroloop._pipes", "PipeMixin"): (
        "_make_read_pipe_transport", "_make_write_pipe_transport", "connect_read_pipe",
        "connect_write_pipe", "_finish_pipe_connect",
    ),
    ("ferroloop._subprocess", "SubprocessMixin"): (
        "subprocess_shell", "subprocess_exec", "_start_subprocess", "_log_subprocess",
        "_make_subprocess_transport",
    )
    # 3.14+: the loop's child watcher, as the stock loop's (see ferroloop._subprocess)
    + (("_watcher", "_child_watcher_callback") if sys.version_info >= (3, 14) else ()),
}


class _LoadedAtFirstUse:
    """A name of a mixin in `_LATER`, on the class that uses it: the first lookup imports the
    mixin and sets all of its names on the class, then answers as the class now does."""

    __slots__ = ("owner", "name", "mixin")

    def __init__(self, owner, name, mixin):
        self.owner = owner
        self.name = name
        self.mixin = mixin

    def __get__(self, obj, objtype=None):
        module, cls_name = self.mixin
        mixin = getattr(importlib.import_module(module), cls_name)
        for name in _LATER[self.mixin]:
            # A name patched meanwhile (unittest.mock, monkeypatch) keeps its patch.
            if not isinstance(vars(self.owner).get(name), _LoadedAtFirstUse):
                continue
            setattr(self.owner, name, inspect.getattr_static(mixin, name))
        value = vars(self.owner)[self.name]
        return value.__get__(obj, objtype) if hasattr(value, "__get__") else value


def _stop_when_done(fut):
    """Done callback of `run_until_complete`'s future: stops its loop, unless the future failed
    with KeyboardInterrupt or SystemExit, which propagate out of `run_forever` by themselves."""
    if not fut.cancelled():
        exc = fut.exception()
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            return
    futures._get_loop(fut).stop()


# From 3.12 a transport is not made over an fd a live transport holds.
_REFUSE_OWNED_FD = sys.version_info >= (3, 12)

# From 3.12 a custom exception handler runs in the Context of what failed (its task, future or
# handle), so that it sees the context variables the failing code saw.
_HANDLER_IN_CONTEXT = sys.version_info >= (3, 12)


def _handler_context(context):
    """The Context a custom exception handler runs in (3.12's `call_exception_handler`)."""
    thing = context.get("task")
    if thing is None:
        # Futures have no context, but the 'future' key sometimes holds a Task.
        thing = context.get("future")
    if thing is None:
        thing = context.get("handle")
    ctx = thing.get_context() if thing is not None and hasattr(thing, "get_context") else None
    return ctx if ctx is not None and hasattr(ctx, "run") else None


def _owner(fileobj):
    """The object a reader or writer is registered with, None for a bare number."""
    return None if isinstance(fileobj, int) else fileobj


class Loop(_core.LoopCore, SockMixin, ResolverMixin, NetMixin, SignalMixin, events.AbstractEventLoop):
    """An asyncio event loop implemented in Rust; use it like the stock loop."""

    def __init__(self):
        try:
            spin = spin_limit_from_env()
        except ValueError:
            self._close()  # its epoll fd and sockets, without an "unclosed event loop" warning
            raise
        self._default_executor = None
        self._executor_shutdown_called = False
        self._exception_handler = None
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth = None
        self._asyncgens = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._set_debug(coroutines._is_debug_mode())
        if spin is not None:
            self._set_spin_limit(spin)
        self._prebind_c_callees()
        _watchdog.register(self)

    def _prebind_c_callees(self):
        """Keep bound methods of what CPython's C Future and Task call on the loop.

        For every future they call `loop.get_debug()`, and for every callback `loop.call_soon()`,
        looking the method up by name: each call makes a bound-method object, a garbage-collected
        allocation. A bound method stored in the instance dict is found by that lookup first and
        reused. Only methods a subclass has not overridden are bound, so an override still wins.
        """
        cls = type(self)
        for name in ("call_soon", "get_debug"):
            if getattr(cls, name) is getattr(_core.LoopCore, name):
                setattr(self, name, getattr(super(), name))

    def __repr__(self):
        return (
            f"<{type(self).__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()}>"
        )

    def __del__(self, _warn=warnings.warn):
        if not self.is_closed():
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                self.close()

    # -- running ---------------------------------------------------------------------------

    def _check_closed(self):
        if self.is_closed():
            raise RuntimeError("Event loop is closed")

    def _check_running(self):
        if self.is_running():
            raise RuntimeError("This event loop is already running")
        if events._get_running_loop() is not None:
            raise RuntimeError("Cannot run the event loop while another loop is running")

    def run_forever(self):
        """Runs until `stop()` is called."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self.get_debug())
        old_agen_hooks = sys.get_asyncgen_hooks()
        old_wakeup_fd = self._install_signal_wakeup()
        try:
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,
                finalizer=self._asyncgen_finalizer_hook,
            )
            events._set_running_loop(self)
            self._run()
        finally:
            events._set_running_loop(None)
            self._restore_signal_wakeup(old_wakeup_fd)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_agen_hooks)

    def _install_signal_wakeup(self):
        """Points `signal.set_wakeup_fd` at the loop's wake-up socket, so a signal (Ctrl-C) ends a
        wait at once. Only the main thread can do this; elsewhere signals are not delivered to
        Python code anyway. Returns the previous fd, to restore, or None."""
        if threading.current_thread() is not threading.main_thread():
            return None
        try:
            return signal.set_wakeup_fd(self._signal_wakeup_fd(), warn_on_full_buffer=False)
        except ValueError:
            return None

    def _restore_signal_wakeup(self, old_fd):
        if old_fd is None or self._has_signal_handlers():
            return
        if old_fd == self._signal_wakeup_fd():
            # Installed by add_signal_handler before this run; its handlers are gone now, and
            # the socket must not stay installed to be written to after close() closes it.
            old_fd = -1
        try:
            signal.set_wakeup_fd(old_fd)
        except ValueError:
            pass

    def run_until_complete(self, future):
        """Runs until `future` (a future, task, coroutine or awaitable) is done; returns its
        result or raises its exception."""
        self._check_closed()
        self._check_running()
        new_task = not futures.isfuture(future)
        future = tasks.ensure_future(future, loop=self)
        if new_task:
            # The caller cannot see the task, so it cannot retrieve its exception either.
            future._log_destroy_pending = False
        future.add_done_callback(_stop_when_done)
        try:
            self.run_forever()
        except BaseException:
            if new_task and future.done() and not future.cancelled():
                # Mark the exception retrieved: it propagates from here.
                future.exception()
            raise
        finally:
            future.remove_done_callback(_stop_when_done)
        if not future.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return future.result()

    def close(self):
        """Closes the loop: drops pending callbacks and shuts the default executor down without
        waiting. The loop must not be running."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self.get_debug():
            logger.debug("Close %r", self)
        # The signal handlers go before the wake-up socket closes, which takes it out of
        # signal.set_wakeup_fd: a signal's byte must never reach the file that gets its number
        # next. Only the main thread can do that; elsewhere (and at interpreter exit) a socket
        # still installed is left open instead of closed.
        handlers_first = threading.current_thread() is threading.main_thread() and not sys.is_finalizing()
        if handlers_first:
            self._remove_all_signal_handlers()
        self._close(self._has_signal_handlers())
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)
        if not handlers_first:
            # Last, as in the stock loop: outside the main thread this raises ValueError, and the
            # loop is closed by then all the same.
            self._remove_all_signal_handlers()

    # -- what the loop is doing --------------------------------------------------------------

    def stats(self, reset=False):
        """The loop's counters since it was made (or last reset), as a `ferroloop.LoopStats`;
        with `reset=True`, they start again from zero after this snapshot."""
        return LoopStats._from_core(self._stats(bool(reset)))

    # -- debug -----------------------------------------------------------------------------

    def set_debug(self, enabled):
        self._set_debug(bool(enabled))
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking, enabled)

    def _set_coroutine_origin_tracking(self, enabled):
        if bool(enabled) == bool(self._coroutine_origin_tracking_enabled):
            return
        if enabled:
            self._coroutine_origin_tracking_saved_depth = sys.get_coroutine_origin_tracking_depth()
            sys.set_coroutine_origin_tracking_depth(constants.DEBUG_STACK_DEPTH)
        else:
            sys.set_coroutine_origin_tracking_depth(self._coroutine_origin_tracking_saved_depth)
        self._coroutine_origin_tracking_enabled = enabled

    # -- async generators ------------------------------------------------------------------

    def _asyncgen_firstiter_hook(self, agen):
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                f"loop.shutdown_asyncgens() call",
                ResourceWarning,
                source=self,
            )
        self._asyncgens.add(agen)

    def _asyncgen_finalizer_hook(self, agen):
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    async def shutdown_asyncgens(self):
        """Closes every async generator still suspended."""
        self._asyncgens_shutdown_called = True
        if not self._asyncgens:
            return
        closing = list(self._asyncgens)
        self._asyncgens.clear()
        results = await tasks.gather(*[agen.aclose() for agen in closing], return_exceptions=True)
        for result, agen in zip(results, closing):
            if isinstance(result, Exception):
                self.call_exception_handler(
                    {
                        "message": f"an error occurred during closing of "
                        f"asynchronous generator {agen!r}",
                        "exception": result,
                        "asyncgen": agen,
                    }
                )

    # -- executors -------------------------------------------------------------------------

    def run_in_executor(self, executor, func, *args):
        self._check_closed()
        if self.get_debug():
            _hooks.check_callback(func, "run_in_executor")
        if executor is None:
            if self._executor_shutdown_called:
                raise RuntimeError("Executor shutdown has been called")
            executor = self._default_executor
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
                self._default_executor = executor
        return futures.wrap_future(executor.submit(func, *args), loop=self)

    def set_default_executor(self, executor):
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError("executor must be ThreadPoolExecutor instance")
        self._default_executor = executor

    async def shutdown_default_executor(self, timeout=None):
        """Waits for the default executor's threads to finish (at most `timeout` seconds, if
        given, after which a RuntimeWarning says the threads were left running)."""
        self._executor_shutdown_called = True
        if self._default_executor is None:
            return
        future = self.create_future()
        thread = threading.Thread(target=self._do_shutdown, args=(future,))
        thread.start()
        try:
            async with timeouts.timeout(timeout):
                await future
        except TimeoutError:
            warnings.warn(
                "The executor did not finishing joining "
                f"its threads within {timeout} seconds.",
                RuntimeWarning,
                stacklevel=2,
            )
            self._default_executor.shutdown(wait=False)
        else:
            thread.join()

    def _do_shutdown(self, future):
        try:
            self._default_executor.shutdown(wait=True)
            if not self.is_closed():
                self.call_soon_threadsafe(futures._set_result_unless_cancelled, future, None)
        except Exception as ex:
            if not self.is_closed():
                self.call_soon_threadsafe(future.set_exception, ex)

    # -- errors ----------------------------------------------------------------------------

    def get_exception_handler(self):
        return self._exception_handler

    def set_exception_handler(self, handler):
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._exception_handler = handler

    def default_exception_handler(self, context):
        """Logs the context on the `asyncio` logger, as the stock loop does."""
        _hooks.default_exception_handler(self, context)

    def call_exception_handler(self, context):
        """Passes `context` to the exception handler set, or to the default one."""
        if self._exception_handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error("Exception in default exception handler", exc_info=True)
            return
        try:
            ctx = _handler_context(context) if _HANDLER_IN_CONTEXT else None
            if ctx is not None:
                ctx.run(self._exception_handler, self, context)
            else:
                self._exception_handler(self, context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            try:
                self.default_exception_handler(
                    {"message": "Unhandled error in exception handler", "exception": exc, "context": context}
                )
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error(
                    "Exception in default exception handler while handling an unexpected error "
                    "in custom exception handler",
                    exc_info=True,
                )

    # -- readiness -------------------------------------------------------------------------

    def add_reader(self, fd, callback, *args):
        """Calls `callback(*args)` on every iteration while `fd` is readable. A file object
        given for `fd` owns the registration: closing a socket given so drops it first."""
        self._ensure_fd_no_transport(fd)
        self._check_closed()
        self._add_reader(registrable_fd(fd), callback, *args, owner=_owner(fd))

    def remove_reader(self, fd):
        self._ensure_fd_no_transport(fd)
        if self.is_closed():
            return False
        fd = fileobj_to_fd(fd)
        if fd > C_INT_MAX:
            return False  # never registered, as the stock selector answers
        return self._remove_reader(fd)

    def add_writer(self, fd, callback, *args):
        """Calls `callback(*args)` on every iteration while `fd` is writable."""
        self._ensure_fd_no_transport(fd)
        self._check_closed()
        self._add_writer(registrable_fd(fd), callback, *args, owner=_owner(fd))

    def remove_writer(self, fd):
        self._ensure_fd_no_transport(fd)
        if self.is_closed():
            return False
        fd = fileobj_to_fd(fd)
        if fd > C_INT_MAX:
            return False  # never registered, as the stock selector answers
        return self._remove_writer(fd)

    # -- transports ------------------------------------------------------------------------

    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None):
        """A TCP or Unix stream transport (Rust) over the connected non-blocking `sock`; from
        3.12, as stock, refused for an fd a live transport holds."""
        if _REFUSE_OWNED_FD:
            self._ensure_fd_no_transport(sock)
        return _core.StreamTransport._create(self, sock, protocol, waiter, extra, server)


for _mixin, _names in _LATER.items():
    for _name in _names:
        if _name in vars(Loop):
            raise TypeError(f"Loop defines {_name}, which {_mixin[1]} would replace at first use")
        setattr(Loop, _name, _LoadedAtFirstUse(Loop, _name, _mixin))
del _mixin, _names, _name
