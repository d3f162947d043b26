"""TLS over ferroloop's stream transports (`start_tls` and the transports of `ssl=`).

ferroloop has no TLS engine of its own. It runs the stdlib's `asyncio.sslproto.SSLProtocol`, the
memory-BIO state machine the stock loop uses, as the protocol of a plain stream transport (the Rust
one). SSLProtocol owns the handshake, its timeout, the shutdown and the flow control between the
two layers, so every TLS behaviour (errors, their messages, what is logged) is the stock one. The
user sees SSLProtocol's app transport.

The stock loop recognises the transports `start_tls` accepts by a class attribute
(`_start_tls_compatible`); the Rust stream transport carries it too.

Where the stock TLS close goes wrong, `_SSLProtocol` does what uvloop does (the README lists it):

- Once the application has closed its transport, what the peer still sends is read and dropped:
  the stock protocol hands it to `data_received` after `close()`. Dropping it before each
  `unwrap()` also keeps the peer's data that crossed our close_notify from failing the shutdown
  with `APPLICATION_DATA_AFTER_CLOSE_NOTIFY` (bpo-39951), which the stock loop passes to
  `connection_lost` and `wait_closed()`.
- A close while reading is paused ends: after an end of stream with reading paused, the stock
  protocol waits for the application to resume reading, and a `close()` then did nothing, leaving
  the connection open for good. The write backlog is flushed before the shutdown whether reading
  is paused or not.
- After `start_tls()`, application data that came with the peer's last handshake flight waits
  until `start_tls()` has returned: the stock protocol hands it to the application protocol at
  once, before the caller has the new transport, so a protocol answering from `data_received`
  answered on the plain transport.
- The TLS transport counts as closing once the transport underneath is (gh-118950, in the stock
  loop from 3.12.4): on 3.11, a writer whose peer reset the connection otherwise looped on
  `write()` and `drain()` for ever, `drain()` never yielding to let `connection_lost` run.
- The application protocol's callbacks run in the Context of the transport underneath
  (`_in_context.py`), also `pause_writing`/`resume_writing` from inside a `write()` and the
  reads that `resume_reading()` schedules.
"""

from asyncio import sslproto, streams

from ferroloop import _core
from ferroloop._core import run_in_context

try:
    import ssl
except ImportError:  # Python built without ssl
    ssl = None

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
    """An `_SSLProtocol` in front of `protocol`."""
    return _SSLProtocol(
        loop,
        protocol,
        sslcontext,
        waiter,
        server_side,
        server_hostname,
        call_connection_made=call_connection_made,
        ssl_handshake_timeout=handshake_timeout,
        ssl_shutdown_timeout=shutdown_timeout,
    )

class _SSLProtocolTransport(sslproto._SSLProtocolTransport):
    """The transport the application protocol sees, named as the stock one (code looks for "ssl"
    in its class name)."""

    def is_closing(self):
        return self._closed or self._ssl_protocol._is_transport_closing()


class _SSLProtocol(sslproto.SSLProtocol):
    """asyncio's TLS protocol, with the close and `start_tls` fixes of the module docstring."""

    # start_tls(): application data waits until start_tls() has returned (`_release`).
    _holding = False
    # The application closed: the peer's data is read and dropped.
    _discarding = False
    # The Context of the transport underneath, if it has one (`_in_context.py`).
    _transport_context = None

    def connection_made(self, transport):
        self._transport_context = getattr(transport, "_context", None)
        super().connection_made(transport)

    def _get_app_transport(self):
        if self._app_transport is None:
            if self._app_transport_created:
                raise RuntimeError("Creating _SSLProtocolTransport twice")
            self._app_transport = _SSLProtocolTransport(self._loop, self)
            self._app_transport_created = True
        return self._app_transport

    def _is_transport_closing(self):
        return self._transport is not None and self._transport.is_closing()

    def _in_transport_context(self, method):
        if self._transport_context is None:
            return method()
        return run_in_context(self._transport_context, method)

    # -- the application's reads -------------------------------------------------------------

    def _on_handshake_complete(self, handshake_exc):
        if self._holding and handshake_exc is None and self._transport is not None:
            # Nor may an end of stream reach the application before start_tls() returns.
            self._transport.pause_reading()
        super()._on_handshake_complete(handshake_exc)

    def _release(self):
        """start_tls() is returning: what arrived with the handshake goes to the application
        protocol next, then reading goes on."""
        self._holding = False
        if self._transport is None:
            return
        if not self._ssl_reading_paused:
            self._transport.resume_reading()
        self._loop.call_soon(self._do_read, context=self._transport_context)

    def _do_read(self):
        if self._holding or self._discarding:
            return
        super()._do_read()

    def _resume_reading(self):
        self._in_transport_context(super()._resume_reading)

    def _control_app_writing(self):
        # Only a change of state calls the application (pause_writing or resume_writing), and
        # only then is the transport's Context entered.
        size = self._get_write_buffer_size()
        if self._app_writing_paused:
            changes = size <= self._outgoing_low_water
        else:
            changes = size >= self._outgoing_high_water
        if changes:
            self._in_transport_context(super()._control_app_writing)

    # -- closing -----------------------------------------------------------------------------

    def _start_shutdown(self):
        self._discarding = True
        self._in_transport_context(self._shut_down)

    def _shut_down(self):
        if self._state != sslproto.SSLProtocolState.FLUSHING:
            super()._start_shutdown()
            return
        # An end of stream came while reading was paused, and the stock protocol is waiting
        # for the application to read what is left; it closed instead.
        if self._app_transport is not None:
            self._app_transport._closed = True
        if self._shutdown_timeout_handle is None:
            self._shutdown_timeout_handle = self._loop.call_later(
                self._ssl_shutdown_timeout, self._check_shutdown_timeout
            )
        self._do_flush()

    def _do_flush(self):
        if not self._discarding:
            super()._do_flush()
            return
        try:
            self._read_into_void()
            self._do_write()
        except Exception as exc:
            self._fatal_error(exc, "Fatal error on SSL protocol")
            return
        if self._write_backlog:
            return  # TLS wants to read first; the next bytes in call _do_flush again
        self._set_state(sslproto.SSLProtocolState.SHUTDOWN)
        self._do_shutdown()

    def _do_shutdown(self):
        if self._discarding and not self._eof_received:
            try:
                self._read_into_void()
            except Exception as exc:
                self._on_shutdown_complete(exc)
                return
        super()._do_shutdown()

    def _read_into_void(self):
        """Reads and drops the application data TLS holds; at the peer's close_notify, tells
        the application of the end of stream, as a read would have."""
        while True:
            try:
                chunk = self._sslobj.read(self.max_size)
            except sslproto.SSLAgainErrors:
                return
            except ssl.SSLZeroReturnError:
                chunk = b""
            if not chunk:
                self._call_eof_received()
                return


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


class TlsMixin:
    """`_make_ssl_transport` and `start_tls` of `ferroloop.Loop`."""

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
        ssl_protocol._holding = True
        # Paused first, so that no data reaches the TLS protocol before its connection_made().
        transport.pause_reading()
        if server_side:
            _hand_over_buffered(protocol, ssl_protocol)
        transport.set_protocol(ssl_protocol)
        context = getattr(transport, "_context", None)
        connection_made = self.call_soon(ssl_protocol.connection_made, transport, context=context)
        resume = self.call_soon(transport.resume_reading, context=context)
        try:
            await waiter
        except BaseException:
            transport.close()
            connection_made.cancel()
            resume.cancel()
            raise
        ssl_protocol._release()
        return ssl_protocol._app_transport
