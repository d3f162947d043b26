"""Datagram endpoints (UDP and Unix datagram sockets): `loop.create_datagram_endpoint` and the
transport it returns, with the stock selector loop's semantics.

Why not the stdlib's: the stock `_SelectorDatagramTransport` is built on `_SelectorTransport`,
which needs a selector loop's internals; flow control is the stdlib's own mixin.

Opening an endpoint. Each address is resolved alone, by `_addr.resolve_address`: a numeric host
(an IPv4 or IPv6 literal with a numeric port) skips `loop.getaddrinfo`, as in the stock loop.
The results are grouped by (family, proto)
in the order they came, a group kept only if it holds every address asked for, and a socket is
tried for each group in turn: the first that binds and connects wins, and if none does, the first
OSError is raised. AF_UNIX takes path strings instead, and a stale socket file left at the local
path is removed before binding. `allow_broadcast` keeps the remote address on the transport but
does not connect the socket to it, so that replies from any host are received.

The transport's ordering. Its constructor schedules, in this order, `protocol.connection_made`,
the start of reading, and the waking of the endpoint's waiter: no datagram reaches the protocol
before `connection_made`, and the endpoint's caller gets the transport only after it. The loop's
public `add_reader` refuses an fd owned by a transport, so the transport registers through the
loop's private `_add_reader`/`_remove_reader` (and the writer twins).

Sending. `sendto` sends at once when nothing is queued; when the kernel would block, the datagram
is copied (the caller may reuse its buffer) and queued, and the socket is watched for
writability until the queue drains. The queue's size drives flow control: above the high-water
mark the protocol's `pause_writing` is called, at or below the low-water mark `resume_writing`
(the standard library's `transports._FlowControlMixin`, which the stock transport uses too).
From 3.13 on, every queued datagram counts 8 bytes of header on top of its payload, so that empty
datagrams (sent since 3.13, dropped before) still count; the size goes down by the same amount
when a datagram leaves the queue (3.13.0 forgot that, CPython fixed it in gh-135444) and is
zero again after `abort` (the stock transport keeps the old size there).

Errors. OS errors of a send or a receive (an ICMP "port unreachable" shows up as
ConnectionRefusedError on the next call) go to `protocol.error_received` and the transport stays
open. Any other exception is fatal: it goes to the loop's exception handler and the transport is
closed at once.

Closing. `close` stops reading, lets the queue drain, then calls `connection_lost(None)`; `abort`
drops the queue. `connection_lost` is called exactly once, after which the transport lets go of
its socket (closed), protocol and loop. A close that waited for the queue to drain counts as lost
too, so that a later `abort` is a no-op (the stock transport fails there with an AttributeError).
Once closed, a transport ignores `sendto`, connected or not, as a closed stream transport ignores
`write`, and logs a warning once that has happened `LOG_THRESHOLD_FOR_CONNLOST_WRITES` times (the
stock transport does that only when connected, and otherwise fails with an AttributeError).
"""

import collections
import socket
import sys
import warnings
from asyncio import constants, transports, trsock
from asyncio.log import logger

from ferroloop._addr import is_filesystem_path, remove_stale_socket_file, resolve_address, set_reuse_port
from ferroloop._in_context import InContext
from ferroloop._reading import ReadPausing

__all__ = ("DatagramMixin", "DatagramSocketTransport")

# 3.13 sends empty datagrams, counts their header in the write buffer, and accepts any socket
# that is not a stream socket for `sock=`; earlier versions drop them and want SOCK_DGRAM.
_SENDS_EMPTY_DATAGRAMS = sys.version_info >= (3, 13)
_DATAGRAM_HEADER_SIZE = 8 if sys.version_info >= (3, 13) else 0


def _check_given_socket(sock, **modifiers):
    """The stock errors for `sock=`: a stream socket (before 3.13, anything but a datagram
    socket), or any option that only makes sense for a socket the loop creates itself."""
    if sys.version_info >= (3, 13):
        if sock.type == socket.SOCK_STREAM:
            raise ValueError(f"A datagram socket was expected, got {sock!r}")
    elif sock.type != socket.SOCK_DGRAM:
        raise ValueError(f"A UDP Socket was expected, got {sock!r}")
    problems = ", ".join(f"{name}={value}" for name, value in modifiers.items() if value)
    if problems:
        raise ValueError(
            f"socket modifier keyword arguments can not be used when sock is specified. ({problems})"
        )


class DatagramMixin:
    """`create_datagram_endpoint` and the factory of its transport."""

    async def create_datagram_endpoint(
        self,
        protocol_factory,
        local_addr=None,
        remote_addr=None,
        *,
        family=0,
        proto=0,
        flags=0,
        reuse_port=None,
        allow_broadcast=None,
        sock=None,
    ):
        """Creates a datagram endpoint: a socket bound to `local_addr` and/or connected to
        `remote_addr` (or the `sock` given), its transport and `protocol_factory()`'s protocol.
        Returns `(transport, protocol)` once `connection_made` has been called."""
        if sock is not None:
            _check_given_socket(
                sock,
                local_addr=local_addr,
                remote_addr=remote_addr,
                family=family,
                proto=proto,
                flags=flags,
                reuse_port=reuse_port,
                allow_broadcast=allow_broadcast,
            )
            sock.setblocking(False)
            remote_address = None
        else:
            candidates = await self._datagram_candidates(local_addr, remote_addr, family, proto, flags)
            sock, remote_address = await self._open_datagram_socket(
                candidates, bool(local_addr), bool(remote_addr), reuse_port, allow_broadcast
            )
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = self._make_datagram_transport(sock, protocol, remote_address, waiter)
        if self.get_debug():
            if local_addr:
                logger.info(
                    "Datagram endpoint local_addr=%r remote_addr=%r created: (%r, %r)",
                    local_addr,
                    remote_addr,
                    transport,
                    protocol,
                )
            else:
                logger.debug(
                    "Datagram endpoint remote_addr=%r created: (%r, %r)", remote_addr, transport, protocol
                )
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol

    async def _datagram_candidates(self, local_addr, remote_addr, family, proto, flags):
        """The ((family, proto), (local address, remote address)) pairs to try, in order."""
        if not (local_addr or remote_addr):
            if family == 0:
                raise ValueError("unexpected address family")
            return [((family, proto), (None, None))]
        if family == socket.AF_UNIX:
            for addr in (local_addr, remote_addr):
                if addr is not None and not isinstance(addr, str):
                    raise TypeError("string is expected")
            if is_filesystem_path(local_addr):
                remove_stale_socket_file(local_addr)
            return [((family, proto), (local_addr, remote_addr))]
        by_key = {}
        for index, addr in ((0, local_addr), (1, remote_addr)):
            if addr is None:
                continue
            if not (isinstance(addr, tuple) and len(addr) == 2):
                raise TypeError("2-tuple is expected")
            infos = await resolve_address(
                self, addr, family=family, type_=socket.SOCK_DGRAM, proto=proto, flags=flags
            )
            if not infos:
                raise OSError("getaddrinfo() returned empty list")
            for info_family, _, info_proto, _, address in infos:
                by_key.setdefault((info_family, info_proto), [None, None])[index] = address
        candidates = [
            (key, pair)
            for key, pair in by_key.items()
            if not ((local_addr and pair[0] is None) or (remote_addr and pair[1] is None))
        ]
        if not candidates:
            raise ValueError("can not get address information")
        return candidates

    async def _open_datagram_socket(self, candidates, bind, connect, reuse_port, allow_broadcast):
        """The first candidate socket that could be set up, and the remote address of the
        transport; raises the first candidate's OSError if none could."""
        errors = []
        for (family, proto), (local_address, remote_address) in candidates:
            sock = None
            try:
                sock = socket.socket(family=family, type=socket.SOCK_DGRAM, proto=proto)
                if reuse_port:
                    set_reuse_port(sock)
                if allow_broadcast:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                sock.setblocking(False)
                if bind:
                    sock.bind(local_address)
                if connect and not allow_broadcast:
                    await self.sock_connect(sock, remote_address)
            except OSError as exc:
                if sock is not None:
                    sock.close()
                errors.append(exc)
            except BaseException:
                if sock is not None:
                    sock.close()
                raise
            else:
                return sock, (remote_address if connect else None)
        raise errors[0]

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        if sys.version_info >= (3, 12):
            self._ensure_fd_no_transport(sock)  # as the stock loop from 3.12
        return DatagramSocketTransport(self, sock, protocol, address, waiter, extra)


class DatagramSocketTransport(
    ReadPausing, InContext, transports._FlowControlMixin, transports.DatagramTransport
):
    """The transport of a datagram socket; see the module docstring."""

    max_size = 256 * 1024  # the largest datagram read at once

    # Read by __del__, which also runs when the constructor failed early.
    _sock = None

    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        super().__init__(extra, loop)  # _FlowControlMixin: the stock write flow control
        self._extra["socket"] = trsock.TransportSocket(sock)
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None
        self._sock_fd = sock.fileno()
        self._address = address
        self.set_protocol(protocol)
        self._buffer = collections.deque()
        self._buffer_size = 0
        self._conn_lost = 0  # non-zero once connection_lost is scheduled; counts sends after that
        self._closing = False
        self._paused = False
        self._write_polling = False
        self._sock = sock
        self._capture_context()
        loop._transports[self._sock_fd] = self
        self._soon(protocol.connection_made, self)
        self._soon(self._start_reading)
        if waiter is not None:
            self._soon(self._wake_waiter, waiter)

    def __repr__(self):
        info = [type(self).__name__]
        if self._sock is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        if self._loop is not None and not self._loop.is_closed():
            info.append("read=polling" if self._read_polling else "read=idle")
            state = "polling" if self._write_polling else "idle"
            info.append(f"write=<{state}, bufsize={self.get_write_buffer_size()}>")
        return f"<{' '.join(info)}>"

    def __del__(self, _warn=warnings.warn):
        if self._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._sock.close()

    @staticmethod
    def _wake_waiter(waiter):
        if not waiter.cancelled():
            waiter.set_result(None)

    # -- protocol and state ----------------------------------------------------------------

    def set_protocol(self, protocol):
        self._protocol = protocol

    def get_protocol(self):
        return self._protocol

    def is_closing(self):
        return self._closing

    # -- reading ---------------------------------------------------------------------------

    def _read_source(self):
        return self._sock_fd, self._sock

    def _read_ready(self):
        if self._conn_lost:
            return
        try:
            data, addr = self._sock.recvfrom(self.max_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._protocol.error_received(exc)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on datagram transport")
        else:
            self._protocol.datagram_received(data, addr)

    # -- writing ---------------------------------------------------------------------------

    def sendto(self, data, addr=None):
        """Sends one datagram to `addr`, or to the transport's remote address; queues it when
        the socket cannot take it now."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        if not data and not _SENDS_EMPTY_DATAGRAMS:
            return
        if self._address:
            if addr not in (None, self._address):
                raise ValueError(f"Invalid address: must be None or {self._address}")
            addr = self._address
        if self._conn_lost:
            if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning("socket.send() raised exception.")
            self._conn_lost += 1
            return
        if not self._buffer:
            try:
                self._send(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self._watch_writable()
            except OSError as exc:
                self._in_context(self._protocol.error_received, exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on datagram transport")
                return
        self._buffer.append((bytes(data), addr))
        self._buffer_size += len(data) + _DATAGRAM_HEADER_SIZE
        self._maybe_pause_protocol()

    def _send(self, data, addr):
        # A connected socket sends to its peer whatever `addr` says. A peer without a name (the
        # other end of an AF_UNIX socketpair) has the name "", not None: still connected.
        if self._extra["peername"] is not None:
            self._sock.send(data)
        else:
            self._sock.sendto(data, addr)

    def _sendto_ready(self):
        while self._buffer:
            data, addr = self._buffer.popleft()
            self._buffer_size -= len(data) + _DATAGRAM_HEADER_SIZE
            try:
                self._send(data, addr)
            except (BlockingIOError, InterruptedError):
                self._buffer.appendleft((data, addr))
                self._buffer_size += len(data) + _DATAGRAM_HEADER_SIZE
                break
            except OSError as exc:
                self._in_context(self._protocol.error_received, exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on datagram transport")
                return
        self._maybe_resume_protocol()  # resume_writing() may queue more
        if not self._buffer:
            self._unwatch_writable()
            if self._closing:
                self._conn_lost += 1
                self._call_connection_lost(None)

    def _watch_writable(self):
        self._loop._add_writer(self._sock_fd, self._sendto_ready, owner=self._sock, context=self._context)
        self._write_polling = True

    def _unwatch_writable(self):
        self._loop._remove_writer(self._sock_fd, owner=self._sock)
        self._write_polling = False

    # -- flow control ----------------------------------------------------------------------

    def get_write_buffer_size(self):
        return self._buffer_size

    # -- closing ---------------------------------------------------------------------------

    def close(self):
        """Stops reading now; `connection_lost(None)` follows once the queue has drained."""
        if self._closing:
            return
        self._closing = True
        self._unwatch_reads()
        if not self._buffer:
            self._conn_lost += 1
            self._unwatch_writable()
            self._soon(self._call_connection_lost, None)

    def abort(self):
        """Closes at once, dropping what is queued."""
        self._force_close(None)

    def _fatal_error(self, exc, message):
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler(
                {"message": message, "exception": exc, "transport": self, "protocol": self._protocol}
            )
        self._force_close(exc)

    def _force_close(self, exc):
        if self._conn_lost:
            return
        if self._buffer:
            self._buffer.clear()
            self._buffer_size = 0
            self._unwatch_writable()
        if not self._closing:
            self._closing = True
            self._unwatch_reads()
        self._conn_lost += 1
        self._soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc):
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()
            self._sock = None
            self._protocol = None
            self._loop = None
