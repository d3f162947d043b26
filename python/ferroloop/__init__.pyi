"""Typing for `ferroloop`'s public names (the package's code is untyped; this is what type
checkers read). `Loop` is typed as the asyncio loop it is: every method `AbstractEventLoop`
declares, with asyncio's own signatures, which the names below take from the type checker's
`asyncio` stubs for the Python being checked."""

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from typing import IO, Any, Self, TypeVar

from opentelemetry.metrics import MeterProvider
from typing_extensions import deprecated

from ferroloop._core import Handle as Handle
from ferroloop._core import TimerHandle as TimerHandle
from ferroloop._stats import LagHistogram as LagHistogram
from ferroloop._stats import LoopStats as LoopStats
from ferroloop._stats import SlowCallback as SlowCallback
from ferroloop._trace import TraceSession
from ferroloop._watchdog import Stall as Stall
from ferroloop._watchdog import watchdog as watchdog

__version__: str

_T = TypeVar("_T")

__all__ = (
    "Loop",
    "Handle",
    "TimerHandle",
    "LoopStats",
    "LagHistogram",
    "SlowCallback",
    "Stall",
    "instrument",
    "trace",
    "watchdog",
    "new_event_loop",
    "run",
    "install",
    "EventLoopPolicy",
)

_Abstract = asyncio.AbstractEventLoop

class Loop(asyncio.AbstractEventLoop):
    """ferroloop's event loop (`new_event_loop()` makes one). It implements every method of
    `AbstractEventLoop`; each is declared here as asyncio's own, signature and all."""

    def __init__(self) -> None: ...
    run_forever = _Abstract.run_forever
    run_until_complete = _Abstract.run_until_complete
    stop = _Abstract.stop
    is_running = _Abstract.is_running
    is_closed = _Abstract.is_closed
    close = _Abstract.close
    shutdown_asyncgens = _Abstract.shutdown_asyncgens
    shutdown_default_executor = _Abstract.shutdown_default_executor
    call_soon = _Abstract.call_soon
    call_later = _Abstract.call_later
    call_at = _Abstract.call_at
    time = _Abstract.time
    create_future = _Abstract.create_future
    create_task = _Abstract.create_task
    call_soon_threadsafe = _Abstract.call_soon_threadsafe
    run_in_executor = _Abstract.run_in_executor
    set_default_executor = _Abstract.set_default_executor
    getaddrinfo = _Abstract.getaddrinfo
    getnameinfo = _Abstract.getnameinfo
    create_connection = _Abstract.create_connection
    create_server = _Abstract.create_server
    sendfile = _Abstract.sendfile
    start_tls = _Abstract.start_tls
    create_unix_connection = _Abstract.create_unix_connection
    create_unix_server = _Abstract.create_unix_server
    connect_accepted_socket = _Abstract.connect_accepted_socket
    create_datagram_endpoint = _Abstract.create_datagram_endpoint
    connect_read_pipe = _Abstract.connect_read_pipe
    connect_write_pipe = _Abstract.connect_write_pipe
    subprocess_shell = _Abstract.subprocess_shell
    subprocess_exec = _Abstract.subprocess_exec
    add_reader = _Abstract.add_reader
    remove_reader = _Abstract.remove_reader
    add_writer = _Abstract.add_writer
    remove_writer = _Abstract.remove_writer
    sock_recv = _Abstract.sock_recv
    sock_recv_into = _Abstract.sock_recv_into
    sock_recvfrom = _Abstract.sock_recvfrom
    sock_recvfrom_into = _Abstract.sock_recvfrom_into
    sock_sendall = _Abstract.sock_sendall
    sock_sendto = _Abstract.sock_sendto
    sock_connect = _Abstract.sock_connect
    sock_accept = _Abstract.sock_accept
    sock_sendfile = _Abstract.sock_sendfile
    add_signal_handler = _Abstract.add_signal_handler
    remove_signal_handler = _Abstract.remove_signal_handler
    set_task_factory = _Abstract.set_task_factory
    get_task_factory = _Abstract.get_task_factory
    get_exception_handler = _Abstract.get_exception_handler
    set_exception_handler = _Abstract.set_exception_handler
    default_exception_handler = _Abstract.default_exception_handler
    call_exception_handler = _Abstract.call_exception_handler
    get_debug = _Abstract.get_debug
    set_debug = _Abstract.set_debug
    slow_callback_duration: float
    def stats(self, reset: bool = False) -> LoopStats:
        """The loop's counters since it was made (or last reset)."""
    def set_slow_callback_handler(self, handler: Callable[[SlowCallback], object] | None) -> None:
        """Calls `handler(info)` after each callback that took `slow_callback_duration` or longer."""
    def get_slow_callback_handler(self) -> Callable[[SlowCallback], object] | None: ...

def new_event_loop() -> Loop: ...

class _Instrumentation:
    """What `instrument()` returns (`ferroloop._otel.Instrumentation`): `close()` or the end of a
    `with` block stops publishing."""

    id: int
    """The loop's `python.asyncio.eventloop.id` attribute."""
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc_info: object) -> None: ...

def instrument(
    loop: Loop | None = None, meter_provider: MeterProvider | None = None
) -> _Instrumentation:
    """Publishes the loop's `stats()` (the running loop's by default) as OpenTelemetry metrics,
    `python.asyncio.eventloop.*`."""

def trace(
    out: str | os.PathLike[str],
    *,
    capacity: int = ...,
    summary: bool = True,
    file: IO[str] | None = None,
) -> TraceSession:
    """Records what ferroloop loops do while the `with` block runs, then writes `OUT.json`
    (Perfetto), `OUT.html` (each task's states over time) and a summary."""

def run(
    main: Coroutine[Any, Any, _T],
    *,
    debug: bool | None = None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> _T: ...

if sys.version_info >= (3, 14):
    from asyncio.unix_events import _DefaultEventLoopPolicy

    @deprecated("asyncio's policy system is deprecated since Python 3.14; use ferroloop.run")
    class EventLoopPolicy(_DefaultEventLoopPolicy): ...
    @deprecated("asyncio's policy system is deprecated since Python 3.14; use ferroloop.run")
    def install() -> None: ...

else:
    class EventLoopPolicy(asyncio.DefaultEventLoopPolicy): ...

    def install() -> None: ...
