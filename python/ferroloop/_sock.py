"""Low-level socket operations (`loop.sock_*`) and name resolution (`getaddrinfo`,
`getnameinfo`), with the semantics of the stock selector loop (3.11's `selector_events`,
`base_events` and `unix_events`), for sockets the caller owns.

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

`sock_sendfile` is zero-copy (`os.sendfile`, the kernel copying from the file to the socket)
when the file has a real fd; when it has none, or the first `os.sendfile` fails, it raises
SendfileNotAvailableError, and unless `fallback=False` the transfer is redone by reading the
file in the default executor and `sock_sendall`-ing each block. Either way the file position
ends after the last byte sent, also after an error or a cancellation part-way through (stock
forgets it after a cancellation of the zero-copy path).

`getaddrinfo` and `getnameinfo` run the blocking C calls in the default executor, never on
the loop's thread. In debug mode `getaddrinfo` logs the call and how long it took on the
`asyncio` logger: at INFO level when it took at least `slow_callback_duration`, DEBUG
otherwise.
"""

import errno
import functools
import io
import os
import socket
import sys
from asyncio import constants, exceptions
from asyncio.log import logger

from ferroloop import _core
from ferroloop._addr import resolve_address
from ferroloop._fd import live_fd

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
# os.sendfile's count is an ssize_t: larger blocks overflow on 32-bit builds.
_MAX_SENDFILE_BLOCK = sys.maxsize // 2 + 1


def _check_sendfile_params(sock, file, offset, count):
    """The stock argument checks of `sock_sendfile`, in the stock order."""
    if "b" not in getattr(file, "mode", "b"):
        raise ValueError("file should be opened in binary mode")
    if sock.type != socket.SOCK_STREAM:
        raise ValueError("only SOCK_STREAM type sockets are supported")
    if count is not None:
        if not isinstance(count, int):
            raise TypeError(f"count must be a positive integer (got {count!r})")
        if count <= 0:
            raise ValueError(f"count must be a positive integer (got {count!r})")
    if not isinstance(offset, int):
        raise TypeError(f"offset must be a non-negative integer (got {offset!r})")
    if offset < 0:
        raise ValueError(f"offset must be a non-negative integer (got {offset!r})")


class _NativeSendfile:
    """One zero-copy transfer: `os.sendfile` from the file's fd at `offset` into the socket,
    retried each time the socket is writable, until `count` bytes (every byte to the end of
    the file when `count` is None) are sent. The writer stays registered from the first
    EAGAIN to the end of the transfer."""

    __slots__ = (
        "_loop", "_fut", "_sock", "_fd", "_fileno", "_offset", "_count", "_blocksize", "_sent", "_watching"
    )

    def __init__(self, loop, fut, sock, fileno, offset, count, blocksize):
        self._loop = loop
        self._fut = fut
        self._sock = sock
        self._fd = sock.fileno()
        self._fileno = fileno
        self._offset = offset
        self._count = count
        self._blocksize = blocksize
        self._sent = 0
        self._watching = False

    def step(self):
        """Sends the next block; the writer callback, and the first attempt."""
        if self._fut.done():
            return
        blocksize = self._blocksize
        if self._count:
            blocksize = self._count - self._sent
            if blocksize <= 0:
                self._finish()
                return
        try:
            sent = os.sendfile(live_fd(self._sock, self._fd), self._fileno, self._offset, blocksize)
        except (BlockingIOError, InterruptedError):
            self._watch()
        except OSError as exc:
            self._fail(self._send_error(exc))
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fail(exc)
        else:
            if sent == 0:
                self._finish()
                return
            self._offset += sent
            self._sent += sent
            self._watch()

    def _send_error(self, exc):
        """What a failed `os.sendfile` raises. Before any byte is sent the zero-copy path is
        given up (the file cannot be mapped, say) so that the caller falls back on plain sends;
        after, ENOTCONN (the peer left mid-transfer) becomes a plain ConnectionError, as it is on
        every other POSIX system."""
        if self._sent == 0:
            return exceptions.SendfileNotAvailableError("os.sendfile call failed")
        if exc.errno == errno.ENOTCONN and type(exc) is not ConnectionError:
            err = ConnectionError("socket is not connected", errno.ENOTCONN)
            err.__cause__ = exc
            return err
        return exc

    def _watch(self):
        if self._watching:
            return
        loop = self._loop
        loop._ensure_fd_no_transport(self._fd)
        handle = loop._add_writer(self._fd, self.step, owner=self._sock, pending=self._fut)
        self._watching = True
        self._fut.add_done_callback(functools.partial(self._cancelled, handle))

    def _cancelled(self, handle, fut):
        if fut.cancelled():
            self._unwatch(handle)
            self._update_file_position()

    def _unwatch(self, handle=None):
        if self._watching and (handle is None or not handle.cancelled()):
            self._watching = False
            self._loop._remove_writer(self._fd, owner=self._sock)

    def _update_file_position(self):
        # Also when nothing was sent: the file then stands at the offset asked for (3.14.6's
        # fix; before, it stayed wherever it was).
        os.lseek(self._fileno, self._offset, os.SEEK_SET)

    def _finish(self):
        self._unwatch()
        self._update_file_position()
        self._fut.set_result(self._sent)

    def _fail(self, exc):
        self._unwatch()
        self._update_file_position()
        self._fut.set_exception(exc)


class SockMixin:
    """`sock_*`, `getaddrinfo` and `getnameinfo` of `ferroloop.Loop`."""

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

    # -- receiving -------------------------------------------------------------------------

    async def sock_recv(self, sock, n):
        """Receives up to `n` bytes from `sock`; b"" at end of stream."""
        started = _recv_start(self, sock, n)
        if started.__class__ is bytes:
            return started
        if started is not NotImplemented:
            return await started
        self._check_sock(sock)
        try:
            return sock.recv(n)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_readable(sock, self._sock_retry, sock, "recv", n)

    async def sock_recv_into(self, sock, buf):
        """Receives into the writable buffer `buf`; returns the number of bytes written."""
        self._check_sock(sock)
        try:
            return sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_readable(sock, self._sock_retry, sock, "recv_into", buf)

    async def sock_recvfrom(self, sock, bufsize):
        """Receives a datagram of up to `bufsize` bytes; returns (data, address)."""
        self._check_sock(sock)
        try:
            return sock.recvfrom(bufsize)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_readable(sock, self._sock_retry, sock, "recvfrom", bufsize)

    async def sock_recvfrom_into(self, sock, buf, nbytes=0):
        """Receives a datagram into `buf` (at most `nbytes` bytes, all of `buf` when 0);
        returns (number of bytes, address)."""
        self._check_sock(sock)
        if not nbytes:
            nbytes = len(buf)
        try:
            return sock.recvfrom_into(buf, nbytes)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_readable(sock, self._sock_retry, sock, "recvfrom_into", buf, nbytes)

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
        try:
            return sock.sendto(data, address)
        except (BlockingIOError, InterruptedError):
            pass
        return await self._wait_writable(sock, self._sock_retry, sock, "sendto", data, address)

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
        try:
            conn, address = sock.accept()
        except (BlockingIOError, InterruptedError):
            conn, address = await self._wait_readable(sock, self._sock_retry, sock, "accept")
        conn.setblocking(False)
        return conn, address

    # -- sendfile --------------------------------------------------------------------------

    async def sock_sendfile(self, sock, file, offset=0, count=None, *, fallback=True):
        """Sends `count` bytes of the binary `file` from `offset` (to its end when `count` is
        None); returns the number of bytes sent."""
        if self.get_debug() and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        if isinstance(sock, _SSL_SOCKET):
            raise TypeError("Socket cannot be of type SSLSocket")
        _check_sendfile_params(sock, file, offset, count)
        try:
            return await self._sock_sendfile_native(sock, file, offset, count)
        except exceptions.SendfileNotAvailableError:
            if not fallback:
                raise
        return await self._sock_sendfile_fallback(sock, file, offset, count)

    async def _sock_sendfile_native(self, sock, file, offset, count):
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation):
            raise exceptions.SendfileNotAvailableError("not a regular file") from None
        try:
            size = os.fstat(fileno).st_size
        except OSError:
            raise exceptions.SendfileNotAvailableError("not a regular file") from None
        blocksize = min(count or size, _MAX_SENDFILE_BLOCK)
        if not blocksize:
            return 0
        fut = self.create_future()
        _NativeSendfile(self, fut, sock, fileno, offset, count, blocksize).step()
        return await fut

    async def _sock_sendfile_fallback(self, sock, file, offset, count):
        """Reads the file in the default executor, a block at a time, and sends each block."""
        if hasattr(file, "seek"):
            # Even to 0: the file may stand elsewhere (3.14.6's fix; before, only a non-zero
            # offset was sought, and offset 0 read from wherever the file stood).
            file.seek(offset)
        blocksize = constants.SENDFILE_FALLBACK_READBUFFER_SIZE
        if count:
            blocksize = min(count, blocksize)
        buf = memoryview(bytearray(blocksize))
        total_sent = 0
        try:
            while True:
                if count:
                    blocksize = min(count - total_sent, blocksize)
                    if blocksize <= 0:
                        return total_sent
                read = await self.run_in_executor(None, file.readinto, buf[:blocksize])
                if not read:
                    return total_sent
                await self.sock_sendall(sock, buf[:read])
                total_sent += read
        finally:
            if total_sent > 0 and hasattr(file, "seek"):
                file.seek(offset + total_sent)

    # -- name resolution -------------------------------------------------------------------

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        """`socket.getaddrinfo` in the default executor."""
        resolve = self._getaddrinfo_debug if self.get_debug() else socket.getaddrinfo
        return await self.run_in_executor(None, resolve, host, port, family, type, proto, flags)

    def _getaddrinfo_debug(self, host, port, family, type_, proto, flags):
        """`socket.getaddrinfo`, logged with its duration (runs in the executor)."""
        parts = [f"{host}:{port!r}"]
        for name, value in (("family", family), ("type", type_), ("proto", proto), ("flags", flags)):
            if value:
                parts.append(f"{name}={value!r}")
        call = ", ".join(parts)
        logger.debug("Get address info %s", call)
        started = self.time()
        infos = socket.getaddrinfo(host, port, family, type_, proto, flags)
        elapsed = self.time() - started
        message = f"Getting address info {call} took {elapsed * 1e3:.3f}ms: {infos!r}"
        if elapsed >= self.slow_callback_duration:
            logger.info(message)
        else:
            logger.debug(message)
        return infos

    async def getnameinfo(self, sockaddr, flags=0):
        """`socket.getnameinfo` in the default executor."""
        return await self.run_in_executor(None, socket.getnameinfo, sockaddr, flags)
