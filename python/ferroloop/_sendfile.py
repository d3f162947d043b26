"""Sending files: `loop.sock_sendfile` over a socket and `loop.sendfile` over a transport.

Why not the stdlib's: the stock methods belong to the selector loop and its transports, and
they lose the file position on a cancellation, reuse one buffer the transport may still hold,
and can give the app's protocol a lone `resume_writing`; these keep the stock behaviour
otherwise.

`sock_sendfile` is zero-copy (`os.sendfile`, the kernel copying from the file to the socket)
when the file has a real fd; when it has none, or the first `os.sendfile` fails, it raises
SendfileNotAvailableError, and unless `fallback=False` the transfer is redone by reading the
file in the default executor and `sock_sendall`-ing each block. Either way the file position
ends after the last byte sent, also after an error or a cancellation part-way through (stock
forgets it after a cancellation of the zero-copy path).

`loop.sendfile`: on a ferroloop stream transport the file goes out through `sock_sendfile` (the
`sendfile` system call) on the transport's own socket, once the transport has stopped reading and
its write buffer is empty. The stock loop recognises such transports by their
`_sendfile_compatible` class attribute, which the Rust stream transport carries. For that time the transport is taken out of `loop._transports`, where it would stop
`sock_sendfile` from watching the fd. Unlike the stock loop, a sendfile cancelled while waiting
for the buffer to empty still gives everything back: reading, the fd, and the empty-buffer waiter
(which the transport would otherwise try to complete after its cancellation).

Any other transport (a TLS app transport, or a stream transport when the file has no fd to send
from) gets the fallback: the file is read in the default executor, a block at a time, and each
block is written to the transport.

The fallback honours the transport's flow control by putting a protocol of its own in front of the
app's for the duration. Whether the app's protocol is paused when that starts is read from the
transport's `_protocol_paused`, as stock does. The Rust transport has no such attribute, and needs
none: its fallback only ever follows the native attempt, which waits for the write buffer to empty,
so its protocol is never paused then. When the app protocol gets its transport back, it is told
whatever changed meanwhile, so that it sees pauses and resumes in pairs. (The stock fallback drops
a pause still in effect when it ends; the app protocol then gets a lone `resume_writing`, which
asyncio's own stream protocol fails an assertion on.)
"""

import errno
import functools
import io
import os
import socket
import sys
from asyncio import constants, exceptions, protocols, transports

from ferroloop import _core
from ferroloop._fd import live_fd
from ferroloop._sock import _SSL_SOCKET

__all__ = ("SendfileMixin",)

# os.sendfile's count is an ssize_t: larger blocks overflow on 32-bit builds.
_MAX_SENDFILE_BLOCK = sys.maxsize // 2 + 1
_FALLBACK_BLOCK_SIZE = 16384


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


def _sendfile_mode(transport):
    return getattr(transport, "_sendfile_compatible", constants._SendfileMode.UNSUPPORTED)


class _FallbackSendfileProtocol(protocols.Protocol):
    """Stands in for the app's protocol while the fallback writes a file to `transport`: keeps
    reading paused and turns the transport's flow control into something `drain()` can await."""

    def __init__(self, transport):
        if not (isinstance(transport, transports._FlowControlMixin) or isinstance(transport, _core.StreamTransport)):
            raise TypeError("transport should be _FlowControlMixin instance")
        self._transport = transport
        self._app_protocol = transport.get_protocol()
        self._resume_reading = transport.is_reading()
        # Whether the app protocol was told pause_writing() and not yet resume_writing().
        self._app_paused = getattr(transport, "_protocol_paused", False)
        # Pending while the transport has writing paused.
        self._write_ready = transport._loop.create_future() if self._app_paused else None
        transport.pause_reading()
        transport.set_protocol(self)

    async def drain(self):
        """Returns once the transport takes more data; ConnectionError if it is closing."""
        if self._transport.is_closing():
            raise ConnectionError("Connection closed by peer")
        if self._write_ready is not None:
            await self._write_ready

    def connection_made(self, transport):
        raise RuntimeError("Invalid state: connection should have been established already.")

    def connection_lost(self, exc):
        if self._write_ready is not None:
            # Only a peer leaving before the whole file is out ends a pause this way.
            if exc is None:
                exc = ConnectionError("Connection is closed by peer")
            self._write_ready.set_exception(exc)
        self._app_protocol.connection_lost(exc)

    def pause_writing(self):
        if self._write_ready is None:
            self._write_ready = self._transport._loop.create_future()

    def resume_writing(self):
        if self._write_ready is None:
            return
        self._write_ready.set_result(False)
        self._write_ready = None

    def data_received(self, data):
        raise RuntimeError("Invalid state: reading should be paused")

    def eof_received(self):
        raise RuntimeError("Invalid state: reading should be paused")

    def restore(self):
        """Gives the transport back to the app protocol, telling it of any change of pause."""
        self._transport.set_protocol(self._app_protocol)
        if self._resume_reading:
            self._transport.resume_reading()
        transport_paused = self._write_ready is not None
        if transport_paused:
            # Nobody waits on it any more: the protocol has been switched back.
            self._write_ready.cancel()
        if self._app_paused and not transport_paused:
            self._app_protocol.resume_writing()
        elif transport_paused and not self._app_paused:
            self._app_protocol.pause_writing()


class SendfileMixin:
    """`sock_sendfile` and `sendfile` of `ferroloop.Loop`."""

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

    async def sendfile(self, transport, file, offset=0, count=None, *, fallback=True):
        """Sends `count` bytes of the binary `file` from `offset` (to its end when `count` is
        None) to `transport`; returns the number of bytes sent. The file position is left after
        the last byte sent, also when sending fails."""
        if transport.is_closing():
            raise RuntimeError("Transport is closing")
        mode = _sendfile_mode(transport)
        if mode is constants._SendfileMode.UNSUPPORTED:
            raise RuntimeError(f"sendfile is not supported for transport {transport!r}")
        if mode is constants._SendfileMode.TRY_NATIVE:
            try:
                return await self._sendfile_native(transport, file, offset, count)
            except exceptions.SendfileNotAvailableError:
                if not fallback:
                    raise
        if not fallback:
            raise RuntimeError(
                f"fallback is disabled and native sendfile is not supported for transport {transport!r}"
            )
        return await self._sendfile_fallback(transport, file, offset, count)

    async def _sendfile_native(self, transport, file, offset, count):
        # Raises while another sendfile runs on this transport, before anything is changed.
        empty = transport._make_empty_waiter()
        fd = transport._sock_fd
        del self._transports[fd]
        was_reading = transport.is_reading()
        transport.pause_reading()
        try:
            await empty
            return await self.sock_sendfile(transport._sock, file, offset, count, fallback=False)
        finally:
            transport._reset_empty_waiter()
            if was_reading:
                transport.resume_reading()
            self._transports[fd] = transport

    async def _sendfile_fallback(self, transport, file, offset, count):
        if hasattr(file, "seek"):
            file.seek(offset)  # even to 0 (see `_sock_sendfile_fallback`)
        blocksize = min(count, _FALLBACK_BLOCK_SIZE) if count else _FALLBACK_BLOCK_SIZE
        total_sent = 0
        stand_in = _FallbackSendfileProtocol(transport)
        try:
            while True:
                if count:
                    blocksize = min(count - total_sent, blocksize)
                    if blocksize <= 0:
                        return total_sent
                # A new buffer per block: a transport may keep what it is given (TLS, until
                # encrypted), so a block must not be overwritten by the next read.
                view = memoryview(bytearray(blocksize))
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    return total_sent
                # Written, then drained, as 3.12.10+/3.13.5+ do: the call returns once the last
                # block is below the high-water mark too.
                transport.write(view[:read])
                await stand_in.drain()
                total_sent += read
        finally:
            if total_sent > 0 and hasattr(file, "seek"):
                file.seek(offset + total_sent)
            stand_in.restore()
