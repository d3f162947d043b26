"""create_server, create_unix_server and the Server object, on both loops: listening and
accepting, start_serving, close and wait_closed (which waits for the connections), serve_forever,
`async with`, the addresses a server binds to, the accept loop under load and when out of file
descriptors, and Unix socket files (stale ones removed, cleanup on close).

Reference: CPython asyncio base_events.Server / create_server, selector_events._accept_connection,
unix_events.create_unix_server (3.11; 3.13 for keep_alive, cleanup_socket, close_clients,
abort_clients and wait_closed's final semantics). Tests of what the running stock loop lacks use
`ferro_loop` only."""

import asyncio
import errno
import logging
import os
import resource
import socket
import sys
import stat

import pytest
from conftest import requires_ipv6

import ferroloop
from util import TIMEOUT, run



class Conn(asyncio.Protocol):
    """A server-side protocol that records its connection; `lost` resolves on connection_lost."""

    instances = None

    def __init__(self):
        loop = asyncio.get_event_loop()
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self.data = bytearray()
        if Conn.instances is not None:
            Conn.instances.append(self)

    def connection_made(self, transport):
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        self.data += data

    def connection_lost(self, exc):
        self.lost.set_result(exc)


@pytest.fixture
def conns():
    Conn.instances = []
    yield Conn.instances
    Conn.instances = None


async def iterations(count=5):
    for _ in range(count):
        await asyncio.sleep(0)


def connect_blocking(address):
    return socket.create_connection(address[:2], timeout=TIMEOUT)


def lowest_free_fd():
    fd = os.dup(0)
    os.close(fd)
    return fd


def port_of(server):
    return server.sockets[0].getsockname()[1]


class TestServerObject:
    def test_is_serving_sockets_loop_and_repr(self, loop):
        async def main():
            server = await loop.create_server(Conn, "127.0.0.1", 0)
            assert isinstance(server, asyncio.AbstractServer)
            assert server.is_serving()
            assert server.get_loop() is loop
            (sock,) = server.sockets
            assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
            assert sock.getsockname()[0] == "127.0.0.1"
            assert repr(server) == f"<{type(server).__name__} sockets={server.sockets!r}>"
            server.close()
            assert not server.is_serving()
            assert server.sockets == ()
            assert repr(server) == f"<{type(server).__name__} sockets=()>"
            await server.wait_closed()

        run(loop, main())

    def test_accepts_and_passes_peername(self, loop, conns):
        async def main():
            server = await loop.create_server(Conn, "127.0.0.1", 0)
            client = connect_blocking(server.sockets[0].getsockname())
            transport = await wait_for_conn(conns)
            assert transport.get_extra_info("peername") == client.getsockname()
            assert transport.get_extra_info("sockname") == server.sockets[0].getsockname()
            client.sendall(b"data")
            while bytes(conns[0].data) != b"data":
                await asyncio.sleep(0.001)
            client.close()
            assert await conns[0].lost is None
            server.close()
            await server.wait_closed()

        run(loop, main())

    def test_close_stops_listening(self, loop):
        async def main():
            server = await loop.create_server(Conn, "127.0.0.1", 0)
            address = server.sockets[0].getsockname()
            server.close()
            await server.wait_closed()
            with pytest.raises(ConnectionRefusedError):
                connect_blocking(address)
            server.close()

        run(loop, main())

    def test_start_serving_false_listens_only_when_asked(self, loop, conns):
        async def main():
            server = await loop.create_server(Conn, "127.0.0.1", 0, start_serving=False)
            address = server.sockets[0].getsockname()
            assert not server.is_serving()
            with pytest.raises(ConnectionRefusedError):
                connect_blocking(address)
            await server.start_serving()
            assert server.is_serving()
            await server.start_serving()
            client = connect_blocking(address)
            await wait_for_conn(conns)
            assert len(conns) == 1
            client.close()
            await conns[0].lost
            server.close()
            await server.wait_closed()

        run(loop, main())

    def test_async_with_closes(self, loop):
        async def main():
            server = await loop.create_server(Conn, "127.0.0.1", 0)
            async with server as entered:
                assert entered is server
                assert server.is_serving()
            assert not server.is_serving()
            assert server.sockets == ()

        run(loop, main())

    def test_debug_logs_serving(self, loop, caplog):
        loop.set_debug(True)

        async def main():
            server = await loop.create_server(Conn, "127.0.0.1", 0)
            server.close()
            await server.wait_closed()

        with caplog.at_level(logging.INFO, logger="asyncio"):
            run(loop, main())
        assert any(rec.getMessage().endswith(" is serving") for rec in caplog.records)


async def wait_for_conn(conns, count=1):
    while len(conns) < count:
        await asyncio.sleep(0.001)
    await asyncio.gather(*(conn.made for conn in conns[:count]))
    return conns[count - 1].transport


class TestWaitClosed:
    def test_waits_for_open_connections(self, loop, conns):
        async def main():
            server = await loop.create_server(Conn, "127.0.0.1", 0)
            client = connect_blocking(server.sockets[0].getsockname())
            await wait_for_conn(conns)
            waiting = asyncio.ensure_future(server.wait_closed())
            await iterations()
            assert not waiting.done()
            server.close()
            await iterations()
            assert not waiting.done(), "returned with a connection still open"
            conns[0].transport.close()
            await waiting
            client.close()

        run(loop, main())

    def test_waits_for_close_without_connections(self, loop):
        async def main():
            server = await loop.create_server(Conn, "127.0.0.1", 0)
            waiting = asyncio.ensure_future(server.wait_closed())
            await iterations()
            assert not waiting.done()
            server.close()
            await waiting
            await server.wait_closed()

        run(loop, main())

    def test_called_after_close_still_waits_for_connections(self, ferro_loop, conns):
        """3.12.1's semantics on every Python (3.11's stock returns at once here)."""
        loop = ferro_loop

        async def main():
            server = await loop.create_server(Conn, "127.0.0.1", 0)
            client = connect_blocking(server.sockets[0].getsockname())
            await wait_for_conn(conns)
            server.close()
            waiting = asyncio.ensure_future(server.wait_closed())
            await iterations()
            assert not waiting.done()
            client.close()
            await waiting
            assert conns[0].lost.done()

        run(loop, main())

    def test_close_clients_and_abort_clients(self, ferro_loop, conns):
        loop = ferro_loop

        async def main():
            server = await loop.create_server(Conn, "127.0.0.1", 0)
            address = server.sockets[0].getsockname()
            clients = [connect_blocking(address) for _ in range(3)]
            await wait_for_conn(conns, 3)
            conns[0].transport.write(b"flushed first")
            server.close()
            server.close_clients()
            await asyncio.gather(*(conn.lost for conn in conns))
            await server.wait_closed()
            clients[0].settimeout(TIMEOUT)
            assert clients[0].recv(100) == b"flushed first"
            for client in clients:
                client.close()

            server = await loop.create_server(Conn, "127.0.0.1", 0)
            client = connect_blocking(server.sockets[0].getsockname())
            await wait_for_conn(conns, 4)
            server.abort_clients()
            assert await conns[3].lost is None
            server.close()
            await server.wait_closed()
            client.close()

        run(loop, main())


class TestServeForever:
    def test_cancel_closes_the_server(self, loop):
        async def main():
            server = await loop.create_server(Conn, "127.0.0.1", 0, start_serving=False)
            task = asyncio.ensure_future(server.serve_forever())
            await iterations()
            assert server.is_serving()
            with pytest.raises(RuntimeError, match="is already being awaited on serve_forever"):
                await server.serve_forever()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not server.is_serving()
            assert server.sockets == ()

        run(loop, main())

    def test_close_ends_serve_forever(self, loop):
        async def main():
            server = await loop.create_server(Conn, "127.0.0.1", 0)
            task = asyncio.ensure_future(server.serve_forever())
            await iterations()
            server.close()
            with pytest.raises(asyncio.CancelledError):
                await task

        run(loop, main())

    def test_on_closed_server(self, loop):
        async def main():
            server = await loop.create_server(Conn, "127.0.0.1", 0)
            server.close()
            with pytest.raises(RuntimeError, match="is closed"):
                await server.serve_forever()

        run(loop, main())


    def test_start_serving_on_closed_server(self, ferro_loop):
        """A clear RuntimeError, where stock fails with a TypeError."""

        async def main():
            server = await ferro_loop.create_server(Conn, "127.0.0.1", 0, start_serving=False)
            server.close()
            with pytest.raises(RuntimeError, match="is closed"):
                await server.start_serving()

        run(ferro_loop, main())


class TestAddresses:
    @requires_ipv6
    def test_list_of_hosts(self, loop):
        async def main():
            server = await loop.create_server(Conn, ["127.0.0.1", "::1"], 0)
            families = sorted(sock.family for sock in server.sockets)
            assert families == sorted([socket.AF_INET, socket.AF_INET6])
            server.close()
            await server.wait_closed()

        run(loop, main())

    def test_duplicate_hosts_bind_once(self, loop):
        async def main():
            server = await loop.create_server(Conn, ["127.0.0.1", "127.0.0.1"], 0)
            assert len(server.sockets) == 1
            server.close()

        run(loop, main())

    @pytest.mark.parametrize("host", [None, ""])
    def test_all_interfaces(self, loop, host, conns):
        async def main():
            server = await loop.create_server(Conn, host, 0, family=socket.AF_INET)
            (sock,) = server.sockets
            assert sock.getsockname()[0] == "0.0.0.0"
            client = connect_blocking(("127.0.0.1", sock.getsockname()[1]))
            await wait_for_conn(conns)
            client.close()
            await conns[0].lost
            server.close()

        run(loop, main())

    @requires_ipv6
    def test_ipv6_socket_is_v6_only(self, loop):
        async def main():
            server = await loop.create_server(Conn, "::", 0, family=socket.AF_INET6)
            (sock,) = server.sockets
            assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
            server.close()

        run(loop, main())

    def test_host_name(self, loop):
        async def main():
            server = await loop.create_server(Conn, "localhost", 0, family=socket.AF_INET)
            assert server.sockets[0].getsockname()[0] == "127.0.0.1"
            server.close()

        run(loop, main())

    def test_reuse_address_is_the_default(self, loop):
        async def main():
            server = await loop.create_server(Conn, "127.0.0.1", 0)
            assert server.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
            server.close()
            server = await loop.create_server(Conn, "127.0.0.1", 0, reuse_address=False)
            assert server.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
            server.close()

        run(loop, main())

    @pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
    def test_reuse_port(self, loop):
        async def main():
            first = await loop.create_server(Conn, "127.0.0.1", 0, reuse_port=True)
            port = port_of(first)
            second = await loop.create_server(Conn, "127.0.0.1", port, reuse_port=True)
            assert second.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
            first.close()
            second.close()

        run(loop, main())

    def test_address_in_use(self, loop):
        async def main():
            with socket.socket() as taken:
                taken.bind(("127.0.0.1", 0))
                taken.listen()
                address = taken.getsockname()
                with pytest.raises(OSError) as info:
                    await loop.create_server(Conn, *address)
            assert info.value.errno == errno.EADDRINUSE
            assert f"error while attempting to bind on address {address!r}: " in str(info.value)

        run(loop, main())

    def test_sock_argument(self, loop, conns):
        async def main():
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            server = await loop.create_server(Conn, sock=sock)
            assert not sock.getblocking()
            client = connect_blocking(sock.getsockname())
            await wait_for_conn(conns)
            client.close()
            server.close()
            assert sock.fileno() == -1

        run(loop, main())

    def test_keep_alive(self, ferro_loop):
        """3.13's keep_alive on every Python."""

        async def main():
            server = await ferro_loop.create_server(Conn, "127.0.0.1", 0, keep_alive=True)
            assert server.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
            server.close()
            server = await ferro_loop.create_server(Conn, "127.0.0.1", 0)
            assert server.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
            server.close()

        run(ferro_loop, main())


class TestValidation:
    @pytest.mark.parametrize(
        "kwargs, exc, message",
        [
            (dict(host="127.0.0.1", port=0, ssl=True), TypeError, "ssl argument must be an SSLContext or None"),
            (dict(host="127.0.0.1", port=0, ssl_handshake_timeout=1), ValueError, "ssl_handshake_timeout is only"),
            (dict(host="127.0.0.1", port=0, ssl_shutdown_timeout=1), ValueError, "ssl_shutdown_timeout is only"),
            (dict(), ValueError, "Neither host/port nor sock were specified"),
        ],
    )
    def test_bad_arguments(self, loop, kwargs, exc, message):
        with pytest.raises(exc, match=message):
            run(loop, loop.create_server(Conn, **kwargs))

    def test_host_and_sock(self, loop):
        with socket.socket() as sock:
            with pytest.raises(ValueError, match="host/port and sock can not be specified at the same time"):
                run(loop, loop.create_server(Conn, "127.0.0.1", 0, sock=sock))

    def test_datagram_sock(self, loop):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            with pytest.raises(ValueError, match="A Stream Socket was expected, got"):
                run(loop, loop.create_server(Conn, sock=sock))


class TestAcceptLoop:
    def test_many_pending_connections_all_accepted(self, loop, conns):
        async def main():
            server = await loop.create_server(Conn, "127.0.0.1", 0, backlog=200)
            address = server.sockets[0].getsockname()
            clients = [connect_blocking(address) for _ in range(150)]
            await wait_for_conn(conns, 150)
            peers = sorted(conn.transport.get_extra_info("peername") for conn in conns)
            assert peers == sorted(client.getsockname() for client in clients)
            for client in clients:
                client.close()
            await asyncio.gather(*(conn.lost for conn in conns))
            server.close()
            await server.wait_closed()

        run(loop, main())

    def test_protocol_factory_error_is_reported_in_debug_and_serving_goes_on(self, loop, conns):
        loop.set_debug(True)
        contexts = []
        loop.set_exception_handler(lambda lp, context: contexts.append(context))
        failures = [ZeroDivisionError("first")]

        def factory():
            if failures:
                raise failures.pop()
            return Conn()

        async def main():
            server = await loop.create_server(factory, "127.0.0.1", 0)
            address = server.sockets[0].getsockname()
            first = connect_blocking(address)
            while not contexts:
                await asyncio.sleep(0.001)
            second = connect_blocking(address)
            await wait_for_conn(conns)
            first.close()
            second.close()
            server.close()

        run(loop, main())
        (context,) = contexts
        assert context["message"] == "Error on transport creation for incoming connection"
        assert isinstance(context["exception"], ZeroDivisionError)

    @pytest.mark.nodebug
    def test_out_of_file_descriptors_pauses_accepting(self, loop, conns):
        """EMFILE on accept(): reported to the exception handler, the listening socket rests
        ACCEPT_RETRY_DELAY (1 s), then the waiting connection is accepted."""
        contexts = []
        loop.set_exception_handler(lambda lp, context: contexts.append(context))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

        async def main():
            server = await loop.create_server(Conn, "127.0.0.1", 0)
            client = socket.socket()
            try:
                # The next fd would be the lowest free one: make that number one too many.
                resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free_fd(), hard))
                client.connect(server.sockets[0].getsockname())
                while not contexts:
                    await asyncio.sleep(0.001)
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            await wait_for_conn(conns)
            client.close()
            await conns[0].lost
            server.close()
            await server.wait_closed()

        run(loop, main())
        assert contexts
        for context in contexts:
            assert context["message"] == "socket.accept() out of system resource"
            assert context["exception"].errno == errno.EMFILE
            assert context["socket"].family == socket.AF_INET
        if isinstance(loop, ferroloop.Loop):
            # Stock goes on calling accept() after the error, reporting it up to `backlog` times.
            assert len(contexts) == 1


class TestUnixServer:
    def test_serves_on_path(self, loop, tmp_path, conns):
        path = str(tmp_path / "s.sock")

        async def main():
            server = await loop.create_unix_server(Conn, path)
            assert server.is_serving()
            assert stat.S_ISSOCK(os.stat(path).st_mode)
            assert server.sockets[0].getsockname() == path
            client = socket.socket(socket.AF_UNIX)
            client.connect(path)
            await wait_for_conn(conns)
            client.close()
            await conns[0].lost
            server.close()
            await server.wait_closed()

        run(loop, main())

    def test_stale_socket_file_is_replaced(self, loop, tmp_path):
        path = str(tmp_path / "stale.sock")
        with socket.socket(socket.AF_UNIX) as old:
            old.bind(path)
        assert os.path.exists(path)

        async def main():
            server = await loop.create_unix_server(Conn, path)
            server.close()

        run(loop, main())

    def test_other_file_at_path(self, loop, tmp_path):
        path = str(tmp_path / "regular")
        with open(path, "w"):
            pass

        with pytest.raises(OSError, match=f"Address {path!r} is already in use") as info:
            run(loop, loop.create_unix_server(Conn, path))
        assert info.value.errno == errno.EADDRINUSE
        assert os.path.exists(path)

    def test_sock_argument(self, loop, tmp_path, conns):
        path = str(tmp_path / "s.sock")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)

        async def main():
            server = await loop.create_unix_server(Conn, sock=sock)
            client = socket.socket(socket.AF_UNIX)
            client.connect(path)
            await wait_for_conn(conns)
            client.close()
            server.close()

        run(loop, main())

    def test_abstract_address(self, loop, conns):
        name = f"\0ferroloop-test-{os.getpid()}"

        async def main():
            server = await loop.create_unix_server(Conn, name)
            client = socket.socket(socket.AF_UNIX)
            client.connect(name)
            await wait_for_conn(conns)
            client.close()
            server.close()

        run(loop, main())

    @pytest.mark.parametrize(
        "kwargs, exc, message",
        [
            (dict(path="/x", ssl=True), TypeError, "ssl argument must be an SSLContext or None"),
            (dict(path="/x", ssl_handshake_timeout=1), ValueError, "ssl_handshake_timeout is only meaningful"),
            (dict(path="/x", ssl_shutdown_timeout=1), ValueError, "ssl_shutdown_timeout is only meaningful"),
            (dict(), ValueError, "path was not specified, and no sock specified"),
        ],
    )
    def test_bad_arguments(self, loop, kwargs, exc, message):
        with pytest.raises(exc, match=message):
            run(loop, loop.create_unix_server(Conn, **kwargs))

    def test_path_and_sock(self, loop):
        with socket.socket(socket.AF_UNIX) as sock:
            with pytest.raises(ValueError, match="path and sock can not be specified at the same time"):
                run(loop, loop.create_unix_server(Conn, "/x", sock=sock))

    def test_wrong_socket(self, loop):
        with socket.socket() as sock:
            with pytest.raises(ValueError, match="A UNIX Domain Stream Socket was expected, got"):
                run(loop, loop.create_unix_server(Conn, sock=sock))

    def test_cleanup_socket_removes_the_file(self, ferro_loop, tmp_path):
        """3.13's cleanup_socket on every Python; its default is the running Python's (3.13
        cleans up, earlier versions leave the file, as their stock loops do)."""
        path = str(tmp_path / "s.sock")
        kept = str(tmp_path / "kept.sock")
        default = str(tmp_path / "default.sock")

        async def main():
            server = await ferro_loop.create_unix_server(Conn, path, cleanup_socket=True)
            server.close()
            assert not os.path.exists(path)
            server = await ferro_loop.create_unix_server(Conn, kept, cleanup_socket=False)
            server.close()
            assert os.path.exists(kept)
            server = await ferro_loop.create_unix_server(Conn, default)
            server.close()
            assert os.path.exists(default) == (sys.version_info < (3, 13))

        run(ferro_loop, main())

    def test_cleanup_leaves_a_replaced_file(self, ferro_loop, tmp_path):
        path = str(tmp_path / "s.sock")

        async def main():
            server = await ferro_loop.create_unix_server(Conn, path)
            os.unlink(path)
            with socket.socket(socket.AF_UNIX) as other:
                other.bind(path)
                server.close()
                assert os.path.exists(path), "removed another socket's file"

        run(ferro_loop, main())
