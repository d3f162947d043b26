"""TLS over ferroloop's stream transports (`start_tls` and the transports of `ssl=`).

ferroloop has no TLS engine of its own. It runs the stdlib's `asyncio.sslproto.SSLProtocol`, the
memory-BIO state machine the stock loop uses, as the protocol of a plain stream transport (the Rust
one). SSLProtocol owns the handshake, its timeout, the shutdown and the flow control between the
two layers, so every TLS behaviour (errors, their messages, what is logged) is the stock one. The
user sees SSLProtocol's app transport.

Python 3.10's SSLProtocol takes no `ssl_shutdown_timeout`; there the parameter is accepted, as
the loop's signature is the same on every version, and has no effect, as on the stock 3.10 loop,
whose TLS shutdown has no timeout.

The stock loop recognises the transports `start_tls` accepts by a class attribute
(`_start_tls_compatible`); the Rust stream transport carries it too.
"""

import sys
from asyncio import sslproto, streams

from ferroloop import _core

try:
    import ssl
except ImportError:  # Python built without ssl
    ssl = None

_TAKES_SHUTDOWN_TIMEOUT = sys.version_info >= (3, 11)

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
