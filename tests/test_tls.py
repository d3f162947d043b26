"""TLS on both loops: create_connection/create_server(ssl=...), the streams API, start_tls (upgrade,
validation, handshake timeout), certificate errors, the TLS transport's extra info, and
`_make_ssl_transport` itself over a socket pair.

The certificates are in tests/certs (see its README). Reference: CPython asyncio base_events.start_tls,
selector_events._make_ssl_transport, sslproto (3.11)."""

import asyncio
import socket
import ssl

import pytest
from tls_certs import CERTS, client_context, server_context
from util import run

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


@pytest.mark.parametrize("name", ["ca.pem", "other_ca.pem", "server.pem"])
def test_certificates_do_not_depend_on_the_clock(name):
    # Certificates that start "now" fail every TLS test on a machine whose clock is behind.
    decoded = ssl._ssl._test_decode_cert(str(CERTS / name))
    assert decoded["notBefore"] == "Jan  1 00:00:00 2000 GMT"
    assert decoded["notAfter"] == "Jan  1 00:00:00 2100 GMT"


class Recorder(asyncio.Protocol):
    """Records what it gets; `received(n)` waits for n bytes, `lost` for connection_lost."""

    def __init__(self):
        loop = asyncio.get_event_loop()
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.lost = loop.create_future()
        self._wanted = None

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        self.data += data
        if self._wanted is not None and len(self.data) >= self._wanted[0] and not self._wanted[1].done():
            self._wanted[1].set_result(None)

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        if not self.lost.done():
            self.lost.set_result(exc)

    async def received(self, size):
        if len(self.data) < size:
            self._wanted = (size, asyncio.get_running_loop().create_future())
            await self._wanted[1]
        return bytes(self.data)


class Echo(Recorder):
    def data_received(self, data):
        super().data_received(data)
        self.transport.write(data)


async def tls_echo_server(loop, protocols=None):
    def factory():
        protocol = Echo()
        if protocols is not None:
            protocols.append(protocol)
        return protocol

    return await loop.create_server(factory, "127.0.0.1", 0, ssl=server_context())


def port_of(server):
    return server.sockets[0].getsockname()[1]


@pytest.fixture
def silent_listener():
    """A listening socket nobody accepts from: a TLS handshake with it never gets an answer."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(10)
    yield sock
    sock.close()


class TestTlsConnections:
    def test_echo_through_create_connection_and_create_server(self, loop):
        async def main():
            server_protocols = []
            server = await tls_echo_server(loop, server_protocols)
            transport, protocol = await loop.create_connection(
                Recorder, "127.0.0.1", port_of(server), ssl=client_context(), server_hostname="localhost"
            )
            assert protocol.events == ["made"]
            assert protocol.transport is transport
            transport.write(PAYLOAD)
            assert await protocol.received(len(PAYLOAD)) == PAYLOAD
            transport.close()
            assert await protocol.lost is None
            (server_protocol,) = server_protocols
            assert await server_protocol.lost is None
            assert bytes(server_protocol.data) == PAYLOAD
            server.close()
            await server.wait_closed()

        run(loop, main())

    def test_close_sends_close_notify_the_peer_sees_as_eof(self, loop):
        async def main():
            server_protocols = []
            server = await tls_echo_server(loop, server_protocols)
            transport, protocol = await loop.create_connection(
                Recorder, "127.0.0.1", port_of(server), ssl=client_context(), server_hostname="localhost"
            )
            transport.write(b"ping")
            await protocol.received(4)
            transport.close()
            assert transport.is_closing()
            await protocol.lost
            (server_protocol,) = server_protocols
            await server_protocol.lost
            assert server_protocol.events == ["made", "eof", ("lost", None)]
            # The peer's protocol returned no wish to keep the connection open: its TLS layer
            # answers with its own close_notify, which this side sees as EOF too.
            assert protocol.events == ["made", "eof", ("lost", None)]
            server.close()
            await server.wait_closed()

        run(loop, main())

    def test_extra_info(self, loop):
        async def main():
            server = await tls_echo_server(loop)
            context = client_context()
            transport, protocol = await loop.create_connection(
                Recorder, "127.0.0.1", port_of(server), ssl=context, server_hostname="localhost"
            )
            assert transport.get_extra_info("sslcontext") is context
            ssl_object = transport.get_extra_info("ssl_object")
            assert isinstance(ssl_object, ssl.SSLObject)
            assert ssl_object.server_hostname == "localhost"
            peercert = transport.get_extra_info("peercert")
            assert dict(item[0] for item in peercert["subject"]) == {"commonName": "localhost"}
            assert peercert == ssl_object.getpeercert()
            cipher = transport.get_extra_info("cipher")
            assert cipher == ssl_object.cipher()
            assert len(cipher) == 3 and cipher[1].startswith("TLSv1")
            assert transport.get_extra_info("compression") == ssl_object.compression()
            # What the TLS layer does not know comes from the socket transport under it.
            assert transport.get_extra_info("peername") == ("127.0.0.1", port_of(server))
            assert transport.get_extra_info("socket").family == socket.AF_INET
            assert transport.get_extra_info("no such thing", "default") == "default"
            transport.close()
            await protocol.lost
            server.close()
            await server.wait_closed()

        run(loop, main())

    def test_ssl_true_uses_a_default_context(self, loop):
        """`ssl=True` verifies against the system CAs, which do not know the test CA."""

        async def main():
            server = await tls_echo_server(loop)
            with pytest.raises(ssl.SSLCertVerificationError) as info:
                await loop.create_connection(
                    Recorder, "127.0.0.1", port_of(server), ssl=True, server_hostname="localhost"
                )
            assert info.value.reason == "CERTIFICATE_VERIFY_FAILED"
            server.close()
            await server.wait_closed()

        run(loop, main())


class TestTlsStreams:
    def test_echo(self, loop):
        async def handle(reader, writer):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        async def main():
            server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context())
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port_of(server), ssl=client_context(), server_hostname="localhost"
            )
            assert writer.get_extra_info("ssl_object") is not None
            assert not writer.can_write_eof()
            writer.write(PAYLOAD)
            await writer.drain()
            assert await reader.readexactly(len(PAYLOAD)) == PAYLOAD
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()

        run(loop, main())

    def test_start_tls_upgrade_of_a_stream(self, loop):
        """A plain-text greeting, then both sides switch to TLS on the same connection."""

        async def handle(reader, writer):
            assert await reader.readline() == b"STARTTLS\n"
            writer.write(b"GO\n")
            await writer.drain()
            await writer.start_tls(server_context())
            writer.write((await reader.readline()).upper())
            await writer.drain()
            writer.close()

        async def main():
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
            writer.write(b"STARTTLS\n")
            assert await reader.readline() == b"GO\n"
            assert writer.get_extra_info("ssl_object") is None
            await writer.start_tls(client_context(), server_hostname="localhost")
            assert writer.get_extra_info("ssl_object").version().startswith("TLSv1")
            writer.write(b"secret\n")
            assert await reader.readline() == b"SECRET\n"
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()

        run(loop, main())


class TestStartTls:
    def test_upgrade_with_protocols(self, loop):
        async def main():
            upgraded = loop.create_future()
            server_protocols = []

            class Upgrader(Recorder):
                def data_received(self, data):
                    super().data_received(data)
                    if self.data == b"STARTTLS":
                        self.transport.write(b"GO")
                        upgraded.set_result(loop.create_task(self.upgrade()))

                async def upgrade(self):
                    echo = Echo()
                    server_protocols.append(echo)
                    tls = await loop.start_tls(self.transport, echo, server_context(), server_side=True)
                    echo.connection_made(tls)
                    return tls

            server = await loop.create_server(Upgrader, "127.0.0.1", 0)
            transport, protocol = await loop.create_connection(Recorder, "127.0.0.1", port_of(server))
            transport.write(b"STARTTLS")
            assert await protocol.received(2) == b"GO"
            tls_protocol = Recorder()
            tls_transport = await loop.start_tls(
                transport, tls_protocol, client_context(), server_hostname="localhost"
            )
            server_tls = await (await upgraded)
            assert tls_transport.get_protocol() is tls_protocol
            assert transport.get_protocol() is not protocol
            assert tls_transport.get_extra_info("peercert") is not None
            assert server_tls.get_extra_info("peercert") is None  # no client certificate
            # start_tls does not call connection_made: the caller owns the new transport.
            assert tls_protocol.events == []
            tls_transport.write(b"over TLS")
            assert await tls_protocol.received(8) == b"over TLS"
            assert bytes(server_protocols[0].data) == b"over TLS"
            tls_transport.close()
            await tls_protocol.lost
            await server_protocols[0].lost
            server.close()
            await server.wait_closed()

        run(loop, main())

    def test_rejects_what_is_not_an_ssl_context(self, loop):
        async def main():
            server = await loop.create_server(Recorder, "127.0.0.1", 0)
            transport, protocol = await loop.create_connection(Recorder, "127.0.0.1", port_of(server))
            with pytest.raises(TypeError) as info:
                await loop.start_tls(transport, protocol, object())
            assert str(info.value).startswith(
                "sslcontext is expected to be an instance of ssl.SSLContext, got <object object"
            )
            assert not transport.is_closing()
            transport.close()
            await protocol.lost
            server.close()
            await server.wait_closed()

        run(loop, main())

    def test_rejects_a_transport_it_cannot_upgrade(self, loop):
        async def main():
            transport = asyncio.Transport()
            with pytest.raises(TypeError) as info:
                await loop.start_tls(transport, Recorder(), client_context())
            assert str(info.value) == f"transport {transport!r} is not supported by start_tls()"

        run(loop, main())

    def test_rejects_a_datagram_transport(self, loop):
        async def main():
            transport, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
            )
            with pytest.raises(TypeError, match="is not supported by start_tls"):
                await loop.start_tls(transport, Recorder(), client_context())
            transport.close()

        run(loop, main())

    @pytest.mark.parametrize("name", ["ssl_handshake_timeout", "ssl_shutdown_timeout"])
    def test_timeouts_must_be_positive(self, loop, name):
        async def main():
            server = await loop.create_server(Recorder, "127.0.0.1", 0)
            transport, protocol = await loop.create_connection(Recorder, "127.0.0.1", port_of(server))
            with pytest.raises(ValueError) as info:
                await loop.start_tls(transport, protocol, client_context(), **{name: 0})
            assert str(info.value) == f"{name} should be a positive number, got 0"
            transport.close()
            server.close()
            await server.wait_closed()

        run(loop, main())

    def test_handshake_timeout_closes_the_transport(self, loop, silent_listener):
        async def main():
            transport, _ = await loop.create_connection(Recorder, *silent_listener.getsockname())
            with pytest.raises(ConnectionAbortedError) as info:
                await loop.start_tls(
                    transport,
                    Recorder(),
                    client_context(),
                    server_hostname="localhost",
                    ssl_handshake_timeout=0.2,
                )
            assert str(info.value) == (
                "SSL handshake is taking longer than 0.2 seconds: aborting the connection"
            )
            assert transport.is_closing()

        run(loop, main())


class TestTlsErrors:
    def test_handshake_timeout_of_create_connection(self, loop, silent_listener):
        async def main():
            with pytest.raises(ConnectionAbortedError) as info:
                await loop.create_connection(
                    Recorder,
                    *silent_listener.getsockname(),
                    ssl=client_context(),
                    server_hostname="localhost",
                    ssl_handshake_timeout=0.2,
                )
            assert str(info.value) == (
                "SSL handshake is taking longer than 0.2 seconds: aborting the connection"
            )

        run(loop, main())

    def test_untrusted_certificate(self, loop):
        async def main():
            server = await tls_echo_server(loop)
            untrusting = ssl.create_default_context(cafile=str(CERTS / "other_ca.pem"))
            with pytest.raises(ssl.SSLCertVerificationError) as info:
                await loop.create_connection(
                    Recorder, "127.0.0.1", port_of(server), ssl=untrusting, server_hostname="localhost"
                )
            assert info.value.reason == "CERTIFICATE_VERIFY_FAILED"
            assert info.value.verify_message == "unable to get local issuer certificate"
            server.close()
            await server.wait_closed()

        run(loop, main())

    def test_hostname_mismatch(self, loop):
        async def main():
            server = await tls_echo_server(loop)
            with pytest.raises(ssl.SSLCertVerificationError) as info:
                await loop.create_connection(
                    Recorder,
                    "127.0.0.1",
                    port_of(server),
                    ssl=client_context(),
                    server_hostname="example.com",
                )
            assert info.value.verify_message == (
                "Hostname mismatch, certificate is not valid for 'example.com'."
            )
            server.close()
            await server.wait_closed()

        run(loop, main())

    def test_plain_client_against_a_tls_server(self, loop):
        """A server's failed handshake ends that connection only; the server keeps serving."""

        async def main():
            server = await tls_echo_server(loop)
            transport, protocol = await loop.create_connection(Recorder, "127.0.0.1", port_of(server))
            transport.write(b"GET / HTTP/1.0\r\n\r\n")
            await protocol.lost
            assert protocol.events[0] == "made"
            assert protocol.events[-1][0] == "lost"
            tls_transport, tls_protocol = await loop.create_connection(
                Recorder, "127.0.0.1", port_of(server), ssl=client_context(), server_hostname="localhost"
            )
            tls_transport.write(b"still there")
            assert await tls_protocol.received(11) == b"still there"
            tls_transport.close()
            await tls_protocol.lost
            server.close()
            await server.wait_closed()

        run(loop, main())


class TestMakeSslTransport:
    """`loop._make_ssl_transport`, the helper create_connection/create_server use, over a socket
    pair: both loops have it with this signature."""

    def test_both_ends_over_a_socket_pair(self, loop):
        async def main():
            client_sock, server_sock = socket.socketpair()
            for sock in (client_sock, server_sock):
                sock.setblocking(False)
            client_waiter = loop.create_future()
            server_waiter = loop.create_future()
            client, server = Recorder(), Echo()
            client_transport = loop._make_ssl_transport(
                client_sock,
                client,
                client_context(),
                client_waiter,
                server_hostname="localhost",
                extra={"label": "client"},
            )
            loop._make_ssl_transport(server_sock, server, server_context(), server_waiter, server_side=True)
            await asyncio.gather(client_waiter, server_waiter)
            assert client.events == ["made"] and server.events == ["made"]
            assert client.transport is client_transport
            assert client_transport.get_extra_info("label") == "client"
            assert client_transport.get_extra_info("socket").fileno() == client_sock.fileno()
            assert server.transport.get_extra_info("ssl_object").server_side
            client_transport.write(PAYLOAD)
            assert await client.received(len(PAYLOAD)) == PAYLOAD
            client_transport.close()
            assert await client.lost is None
            assert await server.lost is None

        run(loop, main())

    def test_handshake_error_fails_the_waiter(self, loop):
        async def main():
            client_sock, server_sock = socket.socketpair()
            for sock in (client_sock, server_sock):
                sock.setblocking(False)
            client_waiter = loop.create_future()
            server_waiter = loop.create_future()
            client, server = Recorder(), Recorder()
            loop._make_ssl_transport(
                client_sock, client, client_context(), client_waiter, server_hostname="wrong.example"
            )
            loop._make_ssl_transport(server_sock, server, server_context(), server_waiter, server_side=True)
            with pytest.raises(ssl.SSLCertVerificationError):
                await client_waiter
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await server_waiter
            # The app protocols never saw a connection.
            assert client.events == [] and server.events == []

        run(loop, main())
