"""Low-level socket operations (`loop.sock_*`), with the semantics of the stock selector loop
(3.11's `selector_events` and `base_events`), for sockets the caller owns. `sock_sendfile` is in
`_sendfile.py`, `getaddrinfo` and `getnameinfo` in `_resolver.py`.

Why not the stdlib's: the stock `sock_*` methods belong to `selector_events.BaseSelectorEventLoop`
and drive its selector; they cannot be mixed into another loop. These run on the loop's Rust
registrations, `sock_recv` and `sock_sendall` mostly in Rust (faster), and end a call whose
socket is closed under it (the stock call waits forever).

How an operation runs. It is tried at once: a socket that is ready costs one system call and
no future. Only when the kernel answers EAGAIN (BlockingIOError) or EINTR (InterruptedError)
does the loop watch the fd (a reader, or a writer for sends and connects) and retry the same
call each time the fd is ready, until it completes or fails; its result or exception then
reaches the awaiting coroutine through a future. As in the stock loop, a fd that a transport
owns is refused (RuntimeError) before it is watched, and the "socket must be non-blocking"
ValueError is only checked in debug mode: outside it, a blocking socket blocks the loop.

Cleaning up. A done callback on that future removes the reader or writer, whether the
operation completed, failed or was cancelled, so a cancelled `sock_recv` leaves the socket
usable and nothing registered. The callback runs one iteration later (done callbacks go
through `call_soon`), and by then another operation may have registered its own reader on the
same fd: the registration replaced is cancelled, so the callback removes the reader only if the
handle it registered (`_add_reader` returns it, as stock's does) is not cancelled.

A socket closed under a waiting operation. The reader or writer is registered as the socket's,
with the operation's future (`src/owner`): when the program closes the socket, the registration
goes before the fd closes and the operation fails at once with `OSError(EBADF)`, where the stock
loop's would wait forever. The retries go through the socket object's own methods, so they fail
the same way on a socket closed or detached otherwise; only `os.sendfile`, which takes a number,
checks first that the socket still holds it.

The hot path is in Rust (`src/sock.rs`): for an exact `socket.socket` (and, for
`sock_sendall`, `bytes` data), `sock_recv` and `sock_sendall` try the system call without raising
BlockingIOError and wait through a Rust reader/writer that removes itself when done; the core
answers NotImplemented for anything else (a socket subclass, an SSLSocket, a bytearray), which
takes the Python path here, the stock one step for step.

`sock_sendall` keeps sending from where the last send stopped (a memoryview slice, no copy)
until every byte is out. `sock_connect` resolves host names through `self.getaddrinfo` unless
the address is already numeric (`_addr.resolve_address`, the stock `_ensure_resolved`), then
waits for writability and reads SO_ERROR, failing with "Connect call failed <address>".
`sock_accept` returns the connection already non-blocking, as stock.
"""

import functools
import socket

from ferroloop import _core
from ferroloop._addr import resolve_address

try:
    import ssl as _ssl
except ImportError:  # pragma: no cover
    _ssl = None

__all__ = ("SockMixin",)

_HAS_IPV6 = hasattr(socket, "AF_INET6")
# isinstance(x, ()) is always false: without the ssl module there is no SSLSocket to refuse.
_SSL_SOCKET = _ssl.SSLSocket if _ssl is not None else ()
_recv_start = _core.sock_recv_start
_sendall_start = _core.sock_sendall_start


class SockMixin:
    """The `sock_*` methods of `ferroloop.Loop` (but `sock_sendfile`)."""

    # -- shared steps ----------------------------------------------------------------------

    def _check_sock(self, sock):
        if isinstance(sock, _SSL_SOCKET):
            raise TypeError("Socket cannot be of type SSLSocket")
        if self.get_debug() and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")

    def _wait_readable(self, sock, callback, *args):
        """A future that `callback(future, *args)` completes, called each time `sock` is
        readable; the reader goes once the future is done."""
        fut = self.create_future()
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        handle = self._add_reader(fd, callback, fut, *args, owner=sock, pending=fut)
        fut.add_done_callback(functools.partial(self._sock_read_done, fd, handle))
        return fut

    def _wait_writable(self, sock, callback, *args):
        """`_wait_readable` for writability."""
        fut = self.create_future()
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        handle = self._add_writer(fd, callback, fut, *args, owner=sock, pending=fut)
        fut.add_done_callback(functools.partial(self._sock_write_done, fd, handle))
        return fut

    def _sock_read_done(self, fd, handle, fut):
        if not handle.cancelled():
            self._remove_reader(fd)

    def _sock_write_done(self, fd, handle, fut):
        if not handle.cancelled():
            self._remove_writer(fd)

    def _sock_retry(self, fut, sock, method, *args):
        """Reader or writer callback: calls `sock.<method>(*args)` again; its outcome completes
        `fut`, unless the kernel still says it would block. The method is looked up on each
        call, as stock does, so that a socket-like object may swap it."""
        if fut.done():
            return
        try:
            result = getattr(sock, method)(*args)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    async def _now_or_when_ready(self, sock, wait, method, *args):
        """`sock.<method>(*args)` at once, or, if it would block, again each time `sock` becomes
        ready (`wait`: `_wait_readable` or `_wait_writable`) until it does not."""
        try:
            return getattr(sock, method)(*args)
        except (BlockingIOError, InterruptedError):
            pass
        return await wait(sock, self._sock_retry, sock, method, *args)

    # -- receiving -------------------------------------------------------------------------

    async def sock_recv(self, sock, n):
        """Receives up to `n` bytes from `sock`; b"" at end of stream."""
        started = _recv_start(self, sock, n)
        if started.__class__ is bytes:
            return started
        if started is not NotImplemented:
            return await started
        self._check_sock(sock)
        return await self._now_or_when_ready(sock, self._wait_readable, "recv", n)

    async def sock_recv_into(self, sock, buf):
        """Receives into the writable buffer `buf`; returns the number of bytes written."""
        self._check_sock(sock)
        return await self._now_or_when_ready(sock, self._wait_readable, "recv_into", buf)

    async def sock_recvfrom(self, sock, bufsize):
        """Receives a datagram of up to `bufsize` bytes; returns (data, address)."""
        self._check_sock(sock)
        return await self._now_or_when_ready(sock, self._wait_readable, "recvfrom", bufsize)

    async def sock_recvfrom_into(self, sock, buf, nbytes=0):
        """Receives a datagram into `buf` (at most `nbytes` bytes, all of `buf` when 0);
        returns (number of bytes, address)."""
        self._check_sock(sock)
        if not nbytes:
            nbytes = len(buf)
        return await self._now_or_when_ready(sock, self._wait_readable, "recvfrom_into", buf, nbytes)

    # -- sending ---------------------------------------------------------------------------

    async def sock_sendall(self, sock, data):
        """Sends every byte of `data`, waiting for room in the kernel's buffer as needed. On an
        error there is no telling how much the peer received."""
        started = _sendall_start(self, sock, data)
        if started is None:
            return
        if started is not NotImplemented:
            return await started
        self._check_sock(sock)
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent == len(data):
            return
        # The position is a one-item list so that the writer callback can advance it in place.
        return await self._wait_writable(sock, self._sock_sendall_ready, sock, memoryview(data), [sent])

    def _sock_sendall_ready(self, fut, sock, view, position):
        if fut.done():
            return
        start = position[0]
        try:
            start += sock.send(view[start:])
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
            return
        if start == len(view):
            fut.set_result(None)
        else:
            position[0] = start

    async def sock_sendto(self, sock, data, address):
        """Sends the datagram `data` to `address`; returns the number of bytes sent."""
        self._check_sock(sock)
        return await self._now_or_when_ready(sock, self._wait_writable, "sendto", data, address)

    # -- connecting and accepting ----------------------------------------------------------

    async def sock_connect(self, sock, address):
        """Connects `sock` to `address`, resolving an IPv4/IPv6 host name first."""
        self._check_sock(sock)
        if sock.family == socket.AF_INET or (_HAS_IPV6 and sock.family == socket.AF_INET6):
            infos = await resolve_address(
                self, address, family=sock.family, type_=sock.type, proto=sock.proto
            )
            address = infos[0][4]
        try:
            sock.connect(address)
            return
        except (BlockingIOError, InterruptedError):
            # The connection goes on in the background (after EINTR too): writability says it
            # is over, SO_ERROR how it went.
            pass
        fut = self._wait_writable(sock, self._sock_connect_ready, sock, address)
        try:
            return await fut
        finally:
            # A failed future holds the traceback, whose frames hold the future: break the cycle.
            fut = None

    def _sock_connect_ready(self, fut, sock, address):
        if fut.done():
            return
        try:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err != 0:
                raise OSError(err, f"Connect call failed {address}")
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(None)
        finally:
            # The exception's traceback holds this frame: let go of the future that holds it.
            fut = None

    async def sock_accept(self, sock):
        """Accepts a connection on the listening `sock`; returns (conn, address), `conn`
        non-blocking."""
        self._check_sock(sock)
        sock.fileno()  # the stock loop asks for it before accepting: the same error for a non-socket
        conn, address = await self._now_or_when_ready(sock, self._wait_readable, "accept")
        conn.setblocking(False)
        return conn, address
