"""Pipe transports: `loop.connect_read_pipe` and `loop.connect_write_pipe`, with the stock Unix
loop's semantics, in Python on top of the loop's fd watching.

Why not the stdlib's: the stock `unix_events` pipe transports read and write whatever file has
the fd's number, also after the pipe object was closed and the number reused; these check the
owner first (below). Flow control is the stdlib's own mixin.

What a pipe transport accepts. Any file object whose fd is a FIFO, a socket or a character
device (a pty, /dev/null): regular files and directories are refused with the stock ValueError,
since readiness means nothing for them. The fd is switched to non-blocking mode and read and
written with `os.read`/`os.write`. As in the stock loop, pipe transports are not entered in
`loop._transports`: `add_reader` on a pipe's fd is not refused.

Ordering. The constructor schedules `protocol.connection_made`, then the start of watching, then
the waking of the connect call's waiter: no data reaches the protocol before `connection_made`,
and the caller gets the transport only after it. Transports register through the loop's private
`_add_reader`/`_add_writer`, with the pipe as the registration's owner: each `os.read`/`os.write`
goes to the fd only while the pipe object still holds it (`_fd.live_fd`), so a pipe closed under
its transport fails the next call with EBADF instead of reaching whatever file took its number.

Reading. Each readable event reads up to `max_size` bytes. An empty read is the end of file:
`eof_received` and then `connection_lost(None)` are scheduled. EIO, which a pty's master side
reports once the other side is closed, ends the transport without reaching the exception
handler (it is only logged in debug mode); any other read error goes to the handler.

Writing. `write` tries `os.write` at once when nothing is buffered; what the kernel does not
take is buffered and the fd is watched for writability until the buffer drains. The buffer's
size drives flow control (the stdlib `_FlowControlMixin`, shared with the stock transports).

Noticing the reader go away. A pipe's write end never becomes readable, but epoll reports an
error on it once the read end is closed, and the loop delivers an fd error to the fd's read
callback (as `selectors` does). So the write transport watches its fd for reading: that event
means the reader is gone, and the transport closes, with `BrokenPipeError` if data was still
buffered, cleanly otherwise. For a socket this event also fires when the peer sends data, which
the stock transport treats the same way. A character device gets no such watch. Write errors
that are OSErrors are expected here (EPIPE) and only logged in debug mode.

Closing. `close` on a read transport stops reading and schedules `connection_lost(None)`. On a
write transport it is `write_eof`: the buffer is flushed first, then the pipe is closed.
`abort` drops the buffer. `connection_lost` is called exactly once, after which the transport
closes its pipe and lets go of its protocol and loop (the stock write transport would call it
twice on `abort` after `close`; here the later call is a no-op). A transport collected while its
pipe is still open warns with ResourceWarning and closes the pipe.
"""

import errno
import os
import stat
import warnings
from asyncio import constants, transports
from asyncio.log import logger

from ferroloop._fd import live_fd
from ferroloop._in_context import InContext
from ferroloop._reading import ReadPausing

__all__ = ("PipeMixin", "ReadPipeTransport", "WritePipeTransport")


def _set_result_unless_cancelled(fut, result):
    if not fut.cancelled():
        fut.set_result(result)


def _fd_kind(fd):
    """(is_fifo, is_socket, is_char_device) for `fd`."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode), stat.S_ISSOCK(mode), stat.S_ISCHR(mode)


class PipeMixin:
    """`connect_read_pipe`, `connect_write_pipe` and the factories of their transports (which
    subprocesses use too, through these loop methods)."""

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return ReadPipeTransport(self, pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return WritePipeTransport(self, pipe, protocol, waiter, extra)

    async def connect_read_pipe(self, protocol_factory, pipe):
        """Wraps the read end `pipe` (a file object) in a transport feeding a new protocol."""
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = self._make_read_pipe_transport(pipe, protocol, waiter)
        return await self._finish_pipe_connect("Read", pipe, transport, protocol, waiter)

    async def connect_write_pipe(self, protocol_factory, pipe):
        """Wraps the write end `pipe` (a file object) in a transport for a new protocol."""
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = self._make_write_pipe_transport(pipe, protocol, waiter)
        return await self._finish_pipe_connect("Write", pipe, transport, protocol, waiter)

    async def _finish_pipe_connect(self, kind, pipe, transport, protocol, waiter):
        """Waits until `connection_made` has run; a cancelled wait closes the transport."""
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        if self.get_debug():
            logger.debug("%s pipe %r connected: (%r, %r)", kind, pipe.fileno(), transport, protocol)
        return transport, protocol


class _PipeTransportBase(InContext):
    """What the read and write pipe transports share: the pipe, the protocol, the repr, the
    single `connection_lost` and the warning for a transport never closed."""

    # Read by __del__ and __repr__, which also run when the constructor refused the fd.
    _pipe = None
    _fileno = None

    def _adopt_pipe(self, loop, pipe, protocol, refusal):
        """Takes the pipe if its fd is of a kind that can be watched (else raises ValueError with
        `refusal`) and makes it non-blocking; returns (is_fifo, is_socket)."""
        self._extra["pipe"] = pipe
        self._loop = loop
        self._protocol = protocol
        self._capture_context()
        self._closing = False
        self._lost_scheduled = False
        fileno = pipe.fileno()
        is_fifo, is_socket, is_char = _fd_kind(fileno)
        if not (is_fifo or is_socket or is_char):
            self._protocol = None
            raise ValueError(refusal)
        self._pipe = pipe
        self._fileno = fileno
        os.set_blocking(fileno, False)
        return is_fifo, is_socket

    def _schedule_start(self, waiter, start):
        self._soon(self._protocol.connection_made, self)
        if start is not None:
            self._soon(start)
        if waiter is not None:
            self._soon(_set_result_unless_cancelled, waiter, None)

    def _is_polling(self):
        """Whether the loop watches the fd for the transport's own direction (for the repr)."""
        raise NotImplementedError

    def __repr__(self):
        info = [type(self).__name__]
        if self._pipe is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._fileno}")
        loop = self._loop
        if self._pipe is not None:
            if loop is not None and not loop.is_closed():
                info.append("polling" if self._is_polling() else "idle")
                info.extend(self._repr_extra())
            else:
                info.append("open")
        return "<{}>".format(" ".join(info))

    def _repr_extra(self):
        return ()

    def set_protocol(self, protocol):
        self._protocol = protocol

    def get_protocol(self):
        return self._protocol

    def is_closing(self):
        return self._closing

    def __del__(self, _warn=warnings.warn):
        if self._pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._pipe.close()

    def _schedule_connection_lost(self, exc):
        if not self._lost_scheduled:
            self._lost_scheduled = True
            self._soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc):
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._pipe.close()
            self._pipe = None
            self._protocol = None
            self._loop = None


class ReadPipeTransport(ReadPausing, _PipeTransportBase, transports.ReadTransport):
    """The transport of a pipe's read end; see the module docstring."""

    max_size = 256 * 1024  # the most read in one event

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(extra)
        self._adopt_pipe(loop, pipe, protocol, "Pipe transport is for pipes/sockets only.")
        self._paused = False
        self._schedule_start(waiter, self._start_reading)

    def _read_source(self):
        return self._fileno, self._pipe

    def _is_polling(self):
        return self._read_polling

    def _read_ready(self):
        try:
            data = os.read(live_fd(self._pipe, self._fileno), self.max_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal_error(exc, "Fatal read error on pipe transport")
            return
        if data:
            self._protocol.data_received(data)
            return
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        self._closing = True
        self._unwatch_reads()
        self._soon(self._protocol.eof_received)
        self._schedule_connection_lost(None)

    def close(self):
        if not self._closing:
            self._close(None)

    def _fatal_error(self, exc, message="Fatal error on pipe transport"):
        if isinstance(exc, OSError) and exc.errno == errno.EIO:
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler(
                {"message": message, "exception": exc, "transport": self, "protocol": self._protocol}
            )
        self._close(exc)

    def _close(self, exc):
        self._closing = True
        self._unwatch_reads()
        self._schedule_connection_lost(exc)


class WritePipeTransport(_PipeTransportBase, transports._FlowControlMixin, transports.WriteTransport):
    """The transport of a pipe's write end; see the module docstring."""

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(extra, loop)
        is_fifo, is_socket = self._adopt_pipe(
            loop, pipe, protocol, "Pipe transport is only for pipes, sockets and character devices"
        )
        self._buffer = bytearray()
        self._conn_lost = 0
        self._watching_peer = False
        self._schedule_start(waiter, self._watch_peer if is_fifo or is_socket else None)

    def _watch_peer(self):
        """Watches for the reader going away (see the module docstring), once `connection_made`
        has run, unless the transport was closed since."""
        if self._pipe is not None and not self._closing:
            self._loop._add_reader(self._fileno, self._peer_closed, owner=self._pipe, context=self._context)
            self._watching_peer = True

    def _unwatch_peer(self):
        if self._watching_peer:
            self._watching_peer = False
            self._loop._remove_reader(self._fileno, owner=self._pipe)

    def _is_polling(self):
        return bool(self._buffer)

    def _repr_extra(self):
        return (f"bufsize={self.get_write_buffer_size()}",)

    def get_write_buffer_size(self):
        return len(self._buffer)

    def _peer_closed(self):
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        self._close(BrokenPipeError() if self._buffer else None)

    def write(self, data):
        assert isinstance(data, (bytes, bytearray, memoryview)), repr(data)
        if isinstance(data, bytearray):
            data = memoryview(data)
        if not data:
            return
        if self._conn_lost or self._closing:
            if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning("pipe closed by peer or os.write(pipe, data) raised exception.")
            self._conn_lost += 1
            return
        if not self._buffer:
            sent = self._write_now(data)
            if sent is None or sent == len(data):
                return
            if sent:
                data = memoryview(data)[sent:]
            self._loop._add_writer(self._fileno, self._write_ready, owner=self._pipe, context=self._context)
        self._buffer += data
        self._maybe_pause_protocol()

    def _write_now(self, data):
        """Bytes written at once (0 if the pipe is full), or None after a fatal error."""
        try:
            return os.write(live_fd(self._pipe, self._fileno), data)
        except (BlockingIOError, InterruptedError):
            return 0
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._conn_lost += 1
            self._fatal_error(exc, "Fatal write error on pipe transport")
            return None

    def _write_ready(self):
        try:
            sent = os.write(live_fd(self._pipe, self._fileno), self._buffer)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._buffer.clear()
            self._conn_lost += 1
            self._loop._remove_writer(self._fileno, owner=self._pipe)
            self._fatal_error(exc, "Fatal write error on pipe transport")
            return
        if sent < len(self._buffer):
            del self._buffer[:sent]
            return
        self._buffer.clear()
        self._loop._remove_writer(self._fileno, owner=self._pipe)
        # resume_writing() may write again, refilling the buffer.
        self._maybe_resume_protocol()
        if self._closing:
            self._unwatch_peer()
            self._lost_scheduled = True
            self._call_connection_lost(None)

    def can_write_eof(self):
        return True

    def write_eof(self):
        """Closes the pipe once the buffer is flushed."""
        if self._closing:
            return
        assert self._pipe
        self._closing = True
        if not self._buffer:
            self._unwatch_peer()
            self._schedule_connection_lost(None)

    def close(self):
        if self._pipe is not None and not self._closing:
            self.write_eof()

    def abort(self):
        self._close(None)

    def _fatal_error(self, exc, message="Fatal error on pipe transport"):
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler(
                {"message": message, "exception": exc, "transport": self, "protocol": self._protocol}
            )
        self._close(exc)

    def _close(self, exc=None):
        self._closing = True
        if self._buffer:
            self._loop._remove_writer(self._fileno, owner=self._pipe)
            self._buffer.clear()
        self._unwatch_peer()
        self._schedule_connection_lost(exc)
