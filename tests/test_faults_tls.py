"""Fault injection over TLS, on both loops: peers that break the handshake (garbage, a truncated
ClientHello, silence) or drop the connection without close_notify, with or without a reset.

Each fault must end in the stock loop's exception on the stock loop's callback, and the loop
must go on serving: in every test a second, healthy TLS connection completes on the same loop
after the fault. The peers are raw sockets or blocking TLS clients in a thread, so what is
checked is only how the loop under test reacts.

Linux only, as the loops' tests are. Reference: CPython asyncio sslproto, selector_events,
streams (3.11). The helpers are in faults.py, the certificates' contexts in tls_certs.py.
"""

import asyncio
import contextlib
import socket
import ssl
import struct
import sys

import pytest

pytest.register_assert_rewrite("faults")

# After register_assert_rewrite, so that the asserts of faults.py explain their failures.
from faults import (  # noqa: E402
    CHUNK,
    TIMEOUT,
    is_reset,
    nothing_left_behind,
    raw_peer,
    reports,
    reset,
    stream_server,
)
from tls_certs import client_context  # noqa: E402
from util import run  # noqa: E402

# The autouse fixtures of faults.py apply to this module's tests because they are imported into
# it (pytest looks for fixtures among a test module's names); naming them here marks them used.
AUTOUSE_FIXTURES = (nothing_left_behind, reports)


def client_hello():
    """The first flight of a TLS client: its ClientHello record."""
    tls = client_context().wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def tls_peer_drops(server, mode, linger):
    """A blocking TLS client of `server` (a `stream_server`), run in a thread: in mode b"E" one
    echo, in mode b"F" 64 KiB of the flood; then close() with no close_notify (SSLSocket.close
    sends none), with SO_LINGER on and a linger of 0 if `linger` is 0. Returns the outcome of
    its connection on the server."""

    def client():
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            with client_context().wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(mode + b"hello")
                expected = b"hello" if mode == b"E" else CHUNK
                received = bytearray()
                while len(received) < len(expected):
                    received += tls.recv(len(expected) - len(received))
                assert received == expected
                if linger == 0:
                    tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    await asyncio.to_thread(client)
    return await server.outcome()


@contextlib.asynccontextmanager
async def raw_tls_peer(loop, **kwargs):
    """A raw socket, speaking no TLS unless the test makes it, connected to a TLS `stream_server`
    started with `kwargs`. The loop is put in debug mode first, for `handshake_failure`."""
    loop.set_debug(True)
    async with stream_server(tls=True, **kwargs) as server:
        with await raw_peer(loop, server.port) as peer:
            yield peer


async def handshake_failure(reports):
    """The exception of the next failed handshake the loop reports. The stock loop reports
    them only in debug mode (selector_events _accept_connection2), which the caller sets."""

    async def reported():
        while not reports:
            await asyncio.sleep(0.01)
        return reports.pop(0)

    context = await asyncio.wait_for(reported(), TIMEOUT)
    assert context["message"] == "Error on transport creation for incoming connection"
    return context["exception"]


class TestTls:
    @pytest.mark.parametrize(
        "garbage, reason",
        [(b"GET / HTTP/1.1\r\n\r\n", "HTTP_REQUEST"), (bytes(range(256)), "WRONG_VERSION_NUMBER")],
    )
    def test_garbage_instead_of_a_client_hello(self, loop, reports, garbage, reason):
        async def main():
            async with raw_tls_peer(loop) as peer:
                await loop.sock_sendall(peer, garbage)
                exc = await handshake_failure(reports)
                assert type(exc) is ssl.SSLError
                assert (exc.library, exc.reason) == ("SSL", reason)

        run(loop, main())

    @pytest.mark.parametrize("ending", ["close", "reset"])
    def test_truncated_client_hello(self, loop, reports, ending):
        """EOF during the handshake: sslproto fails it with a bare ConnectionResetError(); a reset
        fails it with the socket's ConnectionResetError(ECONNRESET)."""

        async def main():
            async with raw_tls_peer(loop) as peer:
                hello = client_hello()
                await loop.sock_sendall(peer, hello[: len(hello) // 2])
                if ending == "close":
                    peer.shutdown(socket.SHUT_WR)
                else:
                    reset(peer)
                exc = await handshake_failure(reports)
                if ending == "close":
                    assert type(exc) is ConnectionResetError and exc.args == ()
                else:
                    assert is_reset(exc)

        run(loop, main())

    def test_handshake_timeout_with_a_silent_peer(self, loop, reports):
        """A peer that connects and says nothing: after ssl_handshake_timeout, sslproto aborts the
        connection with ConnectionAbortedError."""

        async def main():
            async with raw_tls_peer(loop, ssl_handshake_timeout=1.0) as peer:
                exc = await handshake_failure(reports)
                assert await loop.sock_recv(peer, 100) == b""
                assert type(exc) is ConnectionAbortedError
                assert str(exc) == "SSL handshake is taking longer than 1.0 seconds: aborting the connection"

        run(loop, main())

    def test_close_without_close_notify_mid_stream(self, loop):
        """sslproto takes a TCP EOF with no close_notify as a plain EOF: read() returns b"",
        and the connection closes cleanly (wait_closed returns None)."""

        async def main():
            async with stream_server(tls=True) as server:
                assert await tls_peer_drops(server, b"E", linger=None) == (b"E", "wait_closed", None)

        run(loop, main())

    def test_reset_while_the_server_reads(self, loop):
        async def main():
            async with stream_server(tls=True) as server:
                mode, where, exc = await tls_peer_drops(server, b"E", linger=0)
                assert (mode, where, is_reset(exc)) == (b"E", "read", True)

        run(loop, main())

    def test_reset_while_the_server_writes(self, loop):
        """drain() raises ConnectionResetError: the reset itself when drain was waiting, or
        ConnectionResetError('Connection lost') when the reset was seen between two drains
        (TLS flow control makes both happen on the stock loop)."""
        if sys.version_info < (3, 12) and isinstance(loop, asyncio.SelectorEventLoop):
            pytest.skip(
                "3.11's sslproto can spin forever here (gh-118950, fixed in 3.12.4, and in "
                "ferroloop on every version): once the socket transport has failed, the TLS "
                "transport's writes vanish and drain() returns without yielding"
            )

        async def main():
            async with stream_server(tls=True) as server:
                mode, where, exc = await tls_peer_drops(server, b"F", linger=0)
                assert (mode, where) == (b"F", "drain")
                assert is_reset(exc) or (type(exc) is ConnectionResetError and exc.args == ("Connection lost",))

        run(loop, main())
