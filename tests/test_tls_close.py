"""Closing a TLS connection cleanly, where ferroloop does better than the stock loop (as uvloop
does; the README lists each, `_tls.py` explains them):

- data the peer sends after our close() never reaches `data_received`, and data that crossed our
  close_notify does not fail the shutdown with `APPLICATION_DATA_AFTER_CLOSE_NOTIFY` (bpo-39951):
  on the stock loop it does, and `connection_lost` gets that error;
- close() while reading is paused ends the connection, also after the peer's end of stream,
  where the stock loop never calls `connection_lost`;
- after a server's start_tls(), data that came with the client's last handshake flight reaches
  the protocol only once start_tls() has returned, so the reply goes out over TLS.

The client is a thread with memory BIOs (`tls_client.py`), which places each TLS record exactly.
"""

import asyncio
import socket
import ssl

import pytest
from tls_certs import client_context, server_context
from tls_client import BioClient, InThread
from util import run

WAIT = 20


class ServerProtocol(asyncio.Protocol):
    """Records data, the end of stream and how the connection was lost; `on_data` reacts."""

    def __init__(self, on_data=None, on_made=None):
        self.data = []
        self.eof = False
        self.transport = None
        self.lost = asyncio.get_running_loop().create_future()
        self._on_data = on_data
        self._on_made = on_made

    def connection_made(self, transport):
        self.transport = transport
        if self._on_made:
            self._on_made(self)

    def data_received(self, data):
        self.data.append(bytes(data))
        if self._on_data:
            self._on_data(self)

    def eof_received(self):
        self.eof = True

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


async def tls_server(protocols, **callbacks):
    loop = asyncio.get_running_loop()

    def factory():
        protocol = ServerProtocol(**callbacks)
        protocols.append(protocol)
        return protocol

    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=server_context())
    return server, server.sockets[0].getsockname()


def crossing_client(sock):
    """Sends "first", reads the server's "bye" but not its close_notify behind it, then sends
    data that crosses that close_notify, then reads to the close_notify and answers it."""
    client = BioClient(sock)
    client.handshake()
    client.send(b"first")
    assert client.read_app(3) == b"bye"
    try:
        for _ in range(8):
            client.send(b"late" * 4096)
        rest = client.read_to_close_notify()
        client.send_close_notify()
    except (ConnectionResetError, BrokenPipeError):
        return None  # the stock loop's shutdown failed and reset the connection
    return rest


def test_data_crossing_our_close_notify(loop):
    protocols, handled = [], []
    loop.set_exception_handler(lambda _loop, context: handled.append(context))

    def reply_and_close(protocol):
        protocol.transport.write(b"bye")
        protocol.transport.close()

    async def main():
        server, address = await tls_server(protocols, on_data=reply_and_close)
        async with server:
            client = InThread(address, crossing_client)
            exc = await asyncio.wait_for(asyncio.shield(_lost(protocols)), WAIT)
            rest = await loop.run_in_executor(None, client.result)
        return exc, rest

    exc, rest = run(loop, main())
    (protocol,) = protocols
    assert protocol.data == [b"first"]
    if isinstance(loop, asyncio.SelectorEventLoop):
        # The stock loop's shutdown fails on the crossing data (bpo-39951).
        assert isinstance(exc, ssl.SSLError) and "APPLICATION_DATA_AFTER_CLOSE_NOTIFY" in str(exc)
    else:
        assert exc is None
        assert handled == []
        assert rest == b""


async def _lost(protocols):
    while not protocols:
        await asyncio.sleep(0.01)
    return await protocols[0].lost


def test_close_while_paused_drops_unread_data_and_ends(ferro_loop):
    protocols = []
    unread = asyncio.Event()

    def client(sock):
        c = BioClient(sock)
        c.handshake(then=b"unread")
        ferro_loop.call_soon_threadsafe(unread.set)
        got = c.read_to_close_notify()
        c.send_close_notify()
        return got

    async def main():
        server, address = await tls_server(protocols, on_made=lambda p: p.transport.pause_reading())
        async with server:
            peer = InThread(address, client)
            await asyncio.wait_for(unread.wait(), WAIT)
            (protocol,) = protocols
            await _until(lambda: protocol.transport.get_read_buffer_size() > 0)
            protocol.transport.write(b"reply")
            protocol.transport.close()
            exc = await asyncio.wait_for(protocol.lost, WAIT)
            got = await ferro_loop.run_in_executor(None, peer.result)
        return protocol, exc, got

    protocol, exc, got = run(ferro_loop, main())
    assert exc is None
    assert protocol.data == []
    assert got == b"reply"


def test_close_after_end_of_stream_with_reading_paused(ferro_loop):
    # The peer sends data, its close_notify and its FIN while reading is paused: the stock
    # protocol keeps the connection open for the application to read, and its close() then
    # did nothing, so connection_lost never came.
    protocols = []

    def client(sock):
        c = BioClient(sock)
        c.handshake()
        c.send(b"unread")
        c.send_close_notify()
        sock.shutdown(socket.SHUT_WR)
        return c.read_tcp_to_end()

    async def main():
        server, address = await tls_server(protocols, on_made=lambda p: p.transport.pause_reading())
        async with server:
            peer = InThread(address, client)
            await _until(
                lambda: protocols
                and protocols[0].transport is not None
                and protocols[0].transport._ssl_protocol._eof_received
            )
            (protocol,) = protocols
            protocol.transport.close()
            exc = await asyncio.wait_for(protocol.lost, WAIT)
            await ferro_loop.run_in_executor(None, peer.result)
        return protocol, exc

    protocol, exc = run(ferro_loop, main())
    assert exc is None
    assert protocol.data == []


class StartTlsServer(asyncio.Protocol):
    """Plain text until "STARTTLS\\n"; then answers "OK\\n", upgrades, and echoes over TLS."""

    def __init__(self, events):
        self.events = events
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if data == b"STARTTLS\n":
            self.transport.write(b"OK\n")
            asyncio.get_running_loop().create_task(self._upgrade())
            return
        self.events.append(("data", bytes(data)))
        self.transport.write(b"echo:" + data)

    async def _upgrade(self):
        loop = asyncio.get_running_loop()
        tls = await loop.start_tls(self.transport, self, server_context(), server_side=True)
        self.events.append("returned")
        self.transport = tls


def test_start_tls_early_data_waits_for_start_tls_to_return(ferro_loop):
    events = []

    def client(sock):
        sock.sendall(b"STARTTLS\n")
        assert sock.recv(3) == b"OK\n"
        c = BioClient(sock)
        c.handshake(then=b"hello")  # with the last handshake flight, in one write
        return c.read_app(len(b"echo:hello"))

    async def main():
        server = await ferro_loop.create_server(lambda: StartTlsServer(events), "127.0.0.1", 0)
        async with server:
            peer = InThread(server.sockets[0].getsockname(), client)
            return await ferro_loop.run_in_executor(None, peer.result)

    assert run(ferro_loop, main()) == b"echo:hello"
    assert events == ["returned", ("data", b"hello")]


async def _until(condition):
    for _ in range(WAIT * 100):
        if condition():
            return
        await asyncio.sleep(0.01)
    pytest.fail("the condition never held")


def test_the_tls_transport_has_the_stock_class_name(loop):
    # Code tells a TLS transport by its class name (CPython's own tests look for "ssl" in it).
    async def main():
        server, (host, port) = await tls_server([])
        async with server:
            transport, _ = await loop.create_connection(
                asyncio.Protocol, host, port, ssl=client_context(), server_hostname="localhost"
            )
            transport.close()
            return type(transport).__name__

    assert run(loop, main()) == "_SSLProtocolTransport"
