"""TLS over ferroloop's stream transports, and `loop.sendfile`.

TLS
---
ferroloop has no TLS engine of its own. It runs the stdlib's `asyncio.sslproto.SSLProtocol`, the
memory-BIO state machine the stock loop uses, as the protocol of a plain stream transport (the Rust
one). SSLProtocol owns the handshake, its timeout, the shutdown and the flow control between the
two layers, so every TLS behaviour (errors, their messages, what is logged) is the stock one. The
user sees SSLProtocol's app transport.

Python 3.10's SSLProtocol takes no `ssl_shutdown_timeout`; there the parameter is accepted, as
the loop's signature is the same on every version, and has no effect, as on the stock 3.10 loop,
whose TLS shutdown has no timeout.

The stock loop recognises the transports `start_tls` and `sendfile` accept by two class attributes
(`_start_tls_compatible`, `_sendfile_compatible`); the Rust stream transport carries them too.

sendfile
--------
On a ferroloop stream transport the file goes out through `sock_sendfile` (the `sendfile` system
call) on the transport's own socket, once the transport has stopped reading and its write buffer
is empty. For that time the transport is taken out of `loop._transports`, where it would stop
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

import sys
from asyncio import constants, exceptions, protocols, sslproto, streams, transports

from ferroloop import _core

try:
    import ssl
except ImportError:  # Python built without ssl
    ssl = None

_TAKES_SHUTDOWN_TIMEOUT = sys.version_info >= (3, 11)

_FALLBACK_BLOCK_SIZE = 16384


def _ssl_protocol(
    loop,
    protocol,
    sslcontext,
    waiter,
    server_side,
    server_hostname,
    handshake_timeout,
    shutdown_timeout,
    call_connection_made=True,
):
    """An `SSLProtocol` in front of `protocol`, built with what this Python's takes."""
    timeouts = {"ssl_handshake_timeout": handshake_timeout}
    if _TAKES_SHUTDOWN_TIMEOUT:
        timeouts["ssl_shutdown_timeout"] = shutdown_timeout
    return sslproto.SSLProtocol(
        loop,
        protocol,
        sslcontext,
        waiter,
        server_side,
        server_hostname,
        call_connection_made=call_connection_made,
        **timeouts,
    )


def _is_ferroloop_stream(transport):
    return isinstance(transport, _core.StreamTransport)


def _hand_over_buffered(protocol, ssl_protocol):
    """Bytes a server's StreamReader already holds (the start of the client's handshake, read
    before `start_tls`) go to the TLS protocol instead of staying behind in the reader, as 3.14.4+
    does; before, the handshake waited for bytes already consumed."""
    if isinstance(protocol, streams.StreamReaderProtocol):
        reader = getattr(protocol, "_stream_reader", None)
        if reader is not None and reader._buffer:
            ssl_protocol._incoming.write(reader._buffer)
            reader._buffer.clear()


def _sendfile_mode(transport):
    return getattr(transport, "_sendfile_compatible", constants._SendfileMode.UNSUPPORTED)


class _FallbackSendfileProtocol(protocols.Protocol):
    """Stands in for the app's protocol while the fallback writes a file to `transport`: keeps
    reading paused and turns the transport's flow control into something `drain()` can await."""

    def __init__(self, transport):
        if not (isinstance(transport, transports._FlowControlMixin) or _is_ferroloop_stream(transport)):
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


class TlsMixin:
    """`_make_ssl_transport`, `start_tls` and `sendfile` of `ferroloop.Loop`."""

    def _make_ssl_transport(
        self,
        rawsock,
        protocol,
        sslcontext,
        waiter=None,
        *,
        server_side=False,
        server_hostname=None,
        extra=None,
        server=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """A TLS transport for `protocol` over the connected `rawsock`; `waiter` is done once
        the handshake is."""
        ssl_protocol = _ssl_protocol(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
        )
        self._make_socket_transport(rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    async def start_tls(
        self,
        transport,
        protocol,
        sslcontext,
        *,
        server_side=False,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """Upgrades `transport` to TLS; returns the new transport, which `protocol` must use
        from now on."""
        if ssl is None:
            raise RuntimeError("Python ssl module is not available")
        if not isinstance(sslcontext, ssl.SSLContext):
            raise TypeError(
                f"sslcontext is expected to be an instance of ssl.SSLContext, got {sslcontext!r}"
            )
        if not getattr(transport, "_start_tls_compatible", False):
            raise TypeError(f"transport {transport!r} is not supported by start_tls()")
        waiter = self.create_future()
        ssl_protocol = _ssl_protocol(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            server_hostname,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
            call_connection_made=False,
        )
        # Paused first, so that no data reaches the TLS protocol before its connection_made().
        transport.pause_reading()
        if server_side:
            _hand_over_buffered(protocol, ssl_protocol)
        transport.set_protocol(ssl_protocol)
        connection_made = self.call_soon(ssl_protocol.connection_made, transport)
        resume = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            connection_made.cancel()
            resume.cancel()
            raise
        return ssl_protocol._app_transport

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
