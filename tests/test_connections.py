"""create_connection, create_unix_connection and connect_accepted_socket, on both loops: TCP over
IPv4 and IPv6, Unix sockets, argument validation with the stock messages, how failed attempts are
reported, happy eyeballs and interleaving, and the reliability checks (no fd leak over many
connections, every byte delivered before EOF on close, one connection_lost on a peer reset).

Reference: CPython asyncio base_events.create_connection / _connect_sock /
_create_connection_transport, unix_events.create_unix_connection (3.11, and 3.12/3.13 for
all_errors). Tests of parameters the running stock loop lacks use `ferro_loop` only."""

import asyncio
import os
import socket
import ssl
import struct

import pytest
from conftest import requires_ipv6
from util import TIMEOUT, fd_count, run



class Recorder(asyncio.Protocol):
    """Records the calls it gets; `lost` is done when connection_lost is called."""

    def __init__(self):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.lost = asyncio.get_event_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        if not self.lost.done():
            self.lost.set_result(exc)


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


@pytest.fixture
def listener():
    """A listening IPv4 socket served by nothing: connections queue in its backlog."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(100)
    yield sock
    sock.close()


@pytest.fixture
def refused_port():
    """A local port nothing listens on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


async def echo_server(loop, host="127.0.0.1"):
    return await loop.create_server(Echo, host, 0)


async def round_trip(transport, protocol, payload=b"ping"):
    transport.write(payload)
    while len(protocol.data) < len(payload):
        await asyncio.sleep(0.001)
    return bytes(protocol.data)


def read_to_eof(sock):
    """Everything a blocking read of `sock` gets until EOF (run in a thread when the loop must
    keep running meanwhile)."""
    sock.setblocking(True)
    sock.settimeout(TIMEOUT)
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)



class TestCreateConnectionTcp:
    def test_ipv4_round_trip_and_extra_info(self, loop):
        async def main():
            server = await echo_server(loop)
            port = server.sockets[0].getsockname()[1]
            transport, protocol = await loop.create_connection(Recorder, "127.0.0.1", port)
            assert isinstance(protocol, Recorder)
            assert protocol.transport is transport
            assert protocol.events == ["made"]
            assert await round_trip(transport, protocol) == b"ping"
            assert transport.get_extra_info("peername") == ("127.0.0.1", port)
            assert transport.get_extra_info("sockname")[0] == "127.0.0.1"
            sock = transport.get_extra_info("socket")
            assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
            transport.close()
            assert await protocol.lost is None
            server.close()
            await server.wait_closed()

        run(loop, main())

    @requires_ipv6
    def test_ipv6_round_trip(self, loop):
        async def main():
            server = await echo_server(loop, "::1")
            port = server.sockets[0].getsockname()[1]
            transport, protocol = await loop.create_connection(Recorder, "::1", port)
            assert await round_trip(transport, protocol) == b"ping"
            assert transport.get_extra_info("socket").family == socket.AF_INET6
            assert transport.get_extra_info("peername")[:2] == ("::1", port)
            transport.close()
            await protocol.lost
            server.close()
            await server.wait_closed()

        run(loop, main())

    def test_host_name_is_resolved(self, loop):
        async def main():
            server = await echo_server(loop)
            port = server.sockets[0].getsockname()[1]
            transport, protocol = await loop.create_connection(
                Recorder, "localhost", str(port), family=socket.AF_INET
            )
            assert transport.get_extra_info("peername") == ("127.0.0.1", port)
            assert await round_trip(transport, protocol) == b"ping"
            transport.close()
            await protocol.lost
            server.close()

        run(loop, main())

    def test_numeric_host_skips_getaddrinfo(self, loop, listener):
        """The stock loop resolves nothing for an IP literal; neither may ferroloop."""
        calls = []

        async def spy(*args, **kwargs):
            calls.append(args)
            raise AssertionError("getaddrinfo called")

        loop.getaddrinfo = spy
        port = listener.getsockname()[1]

        async def main():
            transport, protocol = await loop.create_connection(Recorder, "127.0.0.1", port)
            transport.close()
            await protocol.lost

        run(loop, main())
        assert calls == []

    def test_local_addr(self, loop, listener):
        async def main():
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                local = probe.getsockname()
            transport, protocol = await loop.create_connection(
                Recorder, *listener.getsockname(), local_addr=local
            )
            assert transport.get_extra_info("sockname") == local
            transport.close()
            await protocol.lost

        run(loop, main())

    def test_local_addr_in_use(self, loop, listener):
        async def main():
            with pytest.raises(OSError) as info:
                await loop.create_connection(
                    Recorder, *listener.getsockname(), local_addr=listener.getsockname()
                )
            assert info.value.errno is not None
            assert "error while attempting to bind on address" in str(info.value)
            assert str(listener.getsockname()) in str(info.value)

        run(loop, main())

    @requires_ipv6
    def test_local_addr_of_no_matching_family(self, loop, listener):
        async def main():
            with pytest.raises(OSError, match="no matching local address with family="):
                await loop.create_connection(Recorder, *listener.getsockname(), local_addr=("::1", 0))

        run(loop, main())

    def test_sock_argument(self, loop):
        async def main():
            server = await echo_server(loop)
            sock = socket.create_connection(server.sockets[0].getsockname())
            transport, protocol = await loop.create_connection(Recorder, sock=sock)
            assert not sock.getblocking()
            assert await round_trip(transport, protocol, b"via sock") == b"via sock"
            transport.close()
            await protocol.lost
            assert sock.fileno() == -1
            server.close()

        run(loop, main())

    def test_refused(self, loop, refused_port):
        async def main():
            with pytest.raises(ConnectionRefusedError):
                await loop.create_connection(Recorder, "127.0.0.1", refused_port)

        run(loop, main())

    def test_protocol_factory_error_propagates(self, loop, listener):
        class Boom(Exception):
            pass

        def factory():
            raise Boom

        async def main():
            with pytest.raises(Boom):
                await loop.create_connection(factory, *listener.getsockname())

        run(loop, main())

    def test_debug_logs_the_connection(self, loop, listener, caplog):
        loop.set_debug(True)

        async def main():
            transport, protocol = await loop.create_connection(Recorder, *listener.getsockname())
            transport.close()
            await protocol.lost

        with caplog.at_level("DEBUG", logger="asyncio"):
            run(loop, main())
        assert any(" connected to 127.0.0.1:" in rec.getMessage() for rec in caplog.records)


class TestCreateConnectionValidation:
    @pytest.mark.parametrize(
        "kwargs, exc, message",
        [
            (dict(host="h", port=1, server_hostname="h"), ValueError, "server_hostname is only meaningful with ssl"),
            (dict(port=1, ssl=True), ValueError, "You must set server_hostname when using ssl without a host"),
            (dict(host="h", port=1, ssl_handshake_timeout=1), ValueError, "ssl_handshake_timeout is only meaningful"),
            (dict(host="h", port=1, ssl_shutdown_timeout=1), ValueError, "ssl_shutdown_timeout is only meaningful"),
            (dict(), ValueError, "host and port was not specified and no sock specified"),
        ],
    )
    def test_bad_arguments(self, loop, kwargs, exc, message):
        with pytest.raises(exc, match=message):
            run(loop, loop.create_connection(Recorder, **kwargs))

    def test_host_and_sock(self, loop):
        with socket.socket() as sock:
            with pytest.raises(ValueError, match="host/port and sock can not be specified at the same time"):
                run(loop, loop.create_connection(Recorder, "127.0.0.1", 1, sock=sock))

    def test_datagram_sock(self, loop):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            with pytest.raises(ValueError, match="A Stream Socket was expected, got"):
                run(loop, loop.create_connection(Recorder, sock=sock))

    def test_ssl_socket(self, loop):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        with context.wrap_socket(socket.socket(), do_handshake_on_connect=False) as sock:
            with pytest.raises(TypeError, match="Socket cannot be of type SSLSocket"):
                run(loop, loop.create_connection(Recorder, sock=sock))


def fake_resolver(loop, infos):
    """Makes `loop.getaddrinfo` answer `infos` for any name, as the stock tests do."""

    async def getaddrinfo(host, port, **kwargs):
        return infos

    loop.getaddrinfo = getaddrinfo


def v4(port):
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))


def v6(port):
    return (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("::1", port, 0, 0))


def refused_ports(count):
    socks = [socket.socket() for _ in range(count)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


class TestAttempts:
    def test_first_address_refused_second_connects(self, loop, listener):
        (dead,) = refused_ports(1)
        fake_resolver(loop, [v4(dead), v4(listener.getsockname()[1])])

        async def main():
            transport, protocol = await loop.create_connection(Recorder, "example.test", 80)
            assert transport.get_extra_info("peername") == listener.getsockname()
            transport.close()
            await protocol.lost

        run(loop, main())

    def test_errors_with_different_texts_are_combined(self, loop):
        first, second = refused_ports(2)
        fake_resolver(loop, [v4(first), v4(second)])

        async def main():
            with pytest.raises(OSError) as info:
                await loop.create_connection(Recorder, "example.test", 80)
            message = str(info.value)
            assert type(info.value) is OSError
            assert message.startswith("Multiple exceptions: ")
            assert message.index(str(first)) < message.index(str(second))

        run(loop, main())

    def test_errors_with_the_same_text_raise_the_first(self, loop):
        (dead,) = refused_ports(1)
        fake_resolver(loop, [v4(dead), v4(dead)])

        async def main():
            with pytest.raises(ConnectionRefusedError):
                await loop.create_connection(Recorder, "example.test", 80)

        run(loop, main())

    def test_empty_resolution(self, loop):
        fake_resolver(loop, [])

        async def main():
            with pytest.raises(OSError, match=r"getaddrinfo\(\) returned empty list"):
                await loop.create_connection(Recorder, "example.test", 80)

        run(loop, main())

    def test_happy_eyeballs_falls_back_to_the_next_address(self, loop, listener):
        (dead,) = refused_ports(1)
        fake_resolver(loop, [v4(dead), v4(listener.getsockname()[1])])

        async def main():
            transport, protocol = await loop.create_connection(
                Recorder, "example.test", 80, happy_eyeballs_delay=30.0
            )
            assert transport.get_extra_info("peername") == listener.getsockname()
            transport.close()
            await protocol.lost

        run(loop, main())

    def test_happy_eyeballs_all_refused(self, loop):
        ports = refused_ports(3)
        fake_resolver(loop, [v4(port) for port in ports])

        async def main():
            with pytest.raises(OSError, match="Multiple exceptions: "):
                await loop.create_connection(Recorder, "example.test", 80, happy_eyeballs_delay=0.01)

        run(loop, main())

    @requires_ipv6
    @pytest.mark.parametrize("interleave, order", [(None, "aab"), (1, "aba"), (2, "aab")])
    def test_interleave_orders_attempts_by_family(self, loop, interleave, order):
        a1, a2, b1 = refused_ports(3)
        fake_resolver(loop, [v4(a1), v4(a2), v6(b1)])

        async def main():
            with pytest.raises(OSError) as info:
                await loop.create_connection(Recorder, "example.test", 80, interleave=interleave)
            return str(info.value)

        message = run(loop, main())
        marks = ((f"'127.0.0.1', {a1})", "a"), (f"'127.0.0.1', {a2})", "a"), (f"'::1', {b1}, ", "b"))
        positions = sorted((message.index(mark), name) for mark, name in marks)
        assert "".join(name for _, name in positions) == order


class TestFerroloopOnly:
    """What the running stock loop lacks: all_errors (3.12) on every Python, and no socket left
    open when the protocol factory fails."""

    def test_socket_closed_when_protocol_factory_fails(self, ferro_loop, listener):
        def factory():
            raise ZeroDivisionError

        async def main():
            before = fd_count()
            with pytest.raises(ZeroDivisionError) as info:
                await ferro_loop.create_connection(factory, *listener.getsockname())
            # The traceback keeps the frames, and with them the socket object, alive.
            assert info.traceback
            assert fd_count() == before

        run(ferro_loop, main())

    def test_all_errors_raises_an_exception_group(self, ferro_loop, refused_port):
        async def main():
            with pytest.raises(ExceptionGroup) as info:
                await ferro_loop.create_connection(Recorder, "127.0.0.1", refused_port, all_errors=True)
            assert str(info.value).startswith("create_connection failed")
            assert [type(exc) for exc in info.value.exceptions] == [ConnectionRefusedError]

        run(ferro_loop, main())

    def test_all_errors_keeps_every_attempt(self, ferro_loop):
        ports = refused_ports(2)
        fake_resolver(ferro_loop, [v4(port) for port in ports])

        async def main():
            with pytest.raises(ExceptionGroup) as info:
                await ferro_loop.create_connection(Recorder, "example.test", 80, all_errors=True)
            assert len(info.value.exceptions) == 2

        run(ferro_loop, main())


class TestUnixConnection:
    def test_path_round_trip(self, loop, tmp_path):
        path = str(tmp_path / "echo.sock")

        async def main():
            server = await loop.create_unix_server(Echo, path)
            transport, protocol = await loop.create_unix_connection(Recorder, path)
            assert await round_trip(transport, protocol, b"unix") == b"unix"
            assert transport.get_extra_info("peername") == path
            assert transport.get_extra_info("socket").family == socket.AF_UNIX
            transport.close()
            await protocol.lost
            server.close()
            await server.wait_closed()

        run(loop, main())

    def test_pathlike(self, loop, tmp_path):
        path = tmp_path / "echo.sock"

        async def main():
            server = await loop.create_unix_server(Echo, path)
            transport, protocol = await loop.create_unix_connection(Recorder, path)
            assert await round_trip(transport, protocol) == b"ping"
            transport.close()
            await protocol.lost
            server.close()

        run(loop, main())

    def test_sock_argument(self, loop):
        a, b = socket.socketpair()

        async def main():
            transport, protocol = await loop.create_unix_connection(Recorder, sock=a)
            b.sendall(b"from b")
            while len(protocol.data) < 6:
                await asyncio.sleep(0.001)
            assert bytes(protocol.data) == b"from b"
            transport.close()
            await protocol.lost

        try:
            run(loop, main())
        finally:
            b.close()

    def test_missing_path(self, loop, tmp_path):
        with pytest.raises(FileNotFoundError):
            run(loop, loop.create_unix_connection(Recorder, str(tmp_path / "nothing")))

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            (dict(path="/x", ssl=True), "you have to pass server_hostname when using ssl"),
            (dict(path="/x", server_hostname="h"), "server_hostname is only meaningful with ssl"),
            (dict(path="/x", ssl_handshake_timeout=1), "ssl_handshake_timeout is only meaningful with ssl"),
            (dict(path="/x", ssl_shutdown_timeout=1), "ssl_shutdown_timeout is only meaningful with ssl"),
            (dict(), "no path and sock were specified"),
        ],
    )
    def test_bad_arguments(self, loop, kwargs, message):
        with pytest.raises(ValueError, match=message):
            run(loop, loop.create_unix_connection(Recorder, **kwargs))

    def test_path_and_sock(self, loop):
        with socket.socket(socket.AF_UNIX) as sock:
            with pytest.raises(ValueError, match="path and sock can not be specified at the same time"):
                run(loop, loop.create_unix_connection(Recorder, "/x", sock=sock))

    @pytest.mark.parametrize(
        "family, type_", [(socket.AF_INET, socket.SOCK_STREAM), (socket.AF_UNIX, socket.SOCK_DGRAM)]
    )
    def test_wrong_socket(self, loop, family, type_):
        with socket.socket(family, type_) as sock:
            with pytest.raises(ValueError, match="A UNIX Domain Stream Socket was expected, got"):
                run(loop, loop.create_unix_connection(Recorder, sock=sock))


class TestConnectAcceptedSocket:
    def test_server_side_transport(self, loop, listener):
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()

        async def main():
            transport, protocol = await loop.connect_accepted_socket(Recorder, accepted)
            assert protocol.events == ["made"]
            client.sendall(b"hello")
            while len(protocol.data) < 5:
                await asyncio.sleep(0.001)
            assert bytes(protocol.data) == b"hello"
            transport.write(b"back")
            transport.close()
            await protocol.lost

        try:
            run(loop, main())
            assert read_to_eof(client) == b"back"
        finally:
            client.close()

    def test_datagram_socket(self, loop):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            with pytest.raises(ValueError, match="A Stream Socket was expected, got"):
                run(loop, loop.connect_accepted_socket(Recorder, sock))

    def test_ssl_timeouts_without_ssl(self, loop):
        a, b = socket.socketpair()
        with a, b:
            with pytest.raises(ValueError, match="ssl_handshake_timeout is only meaningful with ssl"):
                run(loop, loop.connect_accepted_socket(Recorder, a, ssl_handshake_timeout=1))
            with pytest.raises(ValueError, match="ssl_shutdown_timeout is only meaningful with ssl"):
                run(loop, loop.connect_accepted_socket(Recorder, a, ssl_shutdown_timeout=1))


class TestReliability:
    CYCLES = 20_000

    @pytest.mark.nodebug
    def test_connect_close_cycles_leak_no_fds(self, loop):
        """Many connect/close cycles through a server leave the process's fd count flat."""

        class Closer(asyncio.Protocol):
            def connection_made(self, transport):
                transport.close()

        async def cycle(address):
            transport, protocol = await loop.create_connection(Recorder, *address)
            transport.close()
            await protocol.lost

        async def main():
            server = await loop.create_server(Closer, "127.0.0.1", 0, backlog=1000)
            address = server.sockets[0].getsockname()
            for _ in range(50):
                await cycle(address)
            before = fd_count()
            for _ in range(self.CYCLES):
                await cycle(address)
            server.close()
            await server.wait_closed()
            return before

        before = run(loop, main())
        # The server's own sockets are closed by now, and every connection with them.
        assert fd_count() <= before

    def test_close_after_large_write_delivers_every_byte(self, loop, listener):
        # More than the kernel buffers on both sides can hold, so that close() finds data waiting.
        payload = os.urandom(32 * 1024 * 1024)

        async def main():
            transport, protocol = await loop.create_connection(Recorder, *listener.getsockname())
            peer, _ = listener.accept()
            transport.write(payload)
            assert transport.get_write_buffer_size() > 0
            transport.close()
            received = await loop.run_in_executor(None, read_to_eof, peer)
            peer.close()
            assert await protocol.lost is None
            return received

        received = run(loop, main())
        assert len(received) == len(payload)
        assert received == payload

    def test_peer_reset_while_writing_loses_the_connection_once(self, loop, listener):
        async def main():
            transport, protocol = await loop.create_connection(Recorder, *listener.getsockname())
            peer, _ = listener.accept()
            # SO_LINGER with a zero timeout: close() sends a reset instead of a FIN.
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.close()
            chunk = b"x" * 65536
            while not protocol.lost.done():
                transport.write(chunk)
                await asyncio.sleep(0.001)
            for _ in range(10):
                await asyncio.sleep(0)
            transport.write(chunk)
            return protocol

        protocol = run(loop, main())
        lost = [event for event in protocol.events if event[0] == "lost"]
        assert len(lost) == 1
        assert isinstance(lost[0][1], ConnectionError)
        assert protocol.transport.is_closing()
