"""The streams API (asyncio.open_connection, start_server, open_unix_connection,
start_unix_server, StreamReader, StreamWriter) unpatched, on top of each loop's connections and
servers: echo over TCP and Unix sockets, reads of every kind, EOF in both directions, drain's
back-pressure, close and wait_closed, many clients at once.

Reference: CPython asyncio streams (3.11)."""

import asyncio
import socket

import pytest
from util import run


async def echo_lines(reader, writer):
    """A handler echoing each line until EOF, then closing."""
    while line := await reader.readline():
        writer.write(line)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def iterations(count=10):
    for _ in range(count):
        await asyncio.sleep(0)


class TestTcp:
    def test_echo(self, loop):
        async def main():
            server = await asyncio.start_server(echo_lines, "127.0.0.1", 0)
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            writer.write(b"one\n")
            writer.writelines([b"two", b"\n", b"three\n"])
            await writer.drain()
            assert await reader.readline() == b"one\n"
            assert await reader.readuntil(b"\n") == b"two\n"
            assert await reader.readexactly(6) == b"three\n"
            writer.write_eof()
            assert await reader.read() == b""
            assert reader.at_eof()
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()

        run(loop, main())

    def test_extra_info_and_transport(self, loop):
        async def main():
            seen = loop.create_future()

            async def handler(reader, writer):
                seen.set_result(writer.get_extra_info("peername"))
                writer.close()

            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            address = server.sockets[0].getsockname()
            reader, writer = await asyncio.open_connection(*address)
            assert writer.get_extra_info("peername") == address
            assert await seen == writer.get_extra_info("sockname")
            assert isinstance(writer.transport, asyncio.Transport)
            assert writer.can_write_eof()
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()
            assert writer.is_closing()
            server.close()
            await server.wait_closed()

        run(loop, main())

    def test_read_sizes_and_incomplete_read(self, loop):
        async def main():
            async def handler(reader, writer):
                writer.write(b"0123456789")
                await writer.drain()
                writer.close()

            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            assert await reader.readexactly(4) == b"0123"
            with pytest.raises(asyncio.IncompleteReadError) as info:
                await reader.readexactly(100)
            assert info.value.partial == b"456789"
            assert await reader.read(10) == b""
            writer.close()
            await writer.wait_closed()
            server.close()

        run(loop, main())

    def test_line_over_limit(self, loop):
        async def main():
            async def handler(reader, writer):
                writer.write(b"x" * 100 + b"\n")
                await writer.drain()
                writer.close()

            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname(), limit=10)
            with pytest.raises(ValueError, match="chunk is longer than limit"):
                await reader.readline()
            writer.close()
            await writer.wait_closed()
            server.close()

        run(loop, main())

    def test_drain_waits_for_the_reader(self, loop):
        """A writer that outpaces a reader that is not reading is held by drain() until the
        reader catches up."""
        payload = b"z" * (32 * 1024 * 1024)

        async def main():
            start_reading = asyncio.Event()
            received = loop.create_future()

            async def handler(reader, writer):
                await start_reading.wait()
                received.set_result(len(await reader.read()))
                writer.close()

            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            writer.write(payload)
            draining = asyncio.ensure_future(writer.drain())
            await iterations()
            assert not draining.done()
            assert writer.transport.get_write_buffer_size() > 0
            start_reading.set()
            await draining
            writer.write_eof()
            assert await received == len(payload)
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()

        run(loop, main())

    def test_many_clients(self, loop):
        async def client(address, index):
            reader, writer = await asyncio.open_connection(*address)
            lines = [f"{index}-{n}\n".encode() for n in range(20)]
            for line in lines:
                writer.write(line)
            writer.write_eof()
            got = await reader.read()
            writer.close()
            await writer.wait_closed()
            return got == b"".join(lines)

        async def main():
            server = await asyncio.start_server(echo_lines, "127.0.0.1", 0)
            address = server.sockets[0].getsockname()
            results = await asyncio.gather(*(client(address, i) for i in range(50)))
            server.close()
            await server.wait_closed()
            return results

        assert run(loop, main()) == [True] * 50

    def test_peer_close_gives_eof(self, loop):
        async def main():
            async def handler(reader, writer):
                writer.close()
                await writer.wait_closed()

            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            assert await reader.read(100) == b""
            assert reader.at_eof()
            writer.close()
            await writer.wait_closed()
            server.close()

        run(loop, main())

    def test_start_server_without_serving_then_serve(self, loop):
        async def main():
            server = await asyncio.start_server(echo_lines, "127.0.0.1", 0, start_serving=False)
            assert not server.is_serving()
            async with server:
                await server.start_serving()
                reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
                writer.write(b"hi\n")
                assert await reader.readline() == b"hi\n"
                writer.close()
                await writer.wait_closed()
            assert not server.is_serving()

        run(loop, main())

    def test_open_connection_with_sock(self, loop):
        async def main():
            server = await asyncio.start_server(echo_lines, "127.0.0.1", 0)
            sock = socket.create_connection(server.sockets[0].getsockname())
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(b"via sock\n")
            assert await reader.readline() == b"via sock\n"
            writer.close()
            await writer.wait_closed()
            server.close()

        run(loop, main())

    def test_open_connection_refused(self, loop):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            run(loop, asyncio.open_connection("127.0.0.1", port))

    def test_wait_closed_of_the_server_waits_for_the_handler_connection(self, loop):
        async def main():
            connected = asyncio.Event()

            async def handler(reader, writer):
                connected.set()
                await reader.read()
                writer.close()

            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            await connected.wait()
            closed = asyncio.ensure_future(server.wait_closed())
            await iterations()
            server.close()
            await iterations()
            assert not closed.done()
            writer.close()
            await writer.wait_closed()
            await closed

        run(loop, main())


class TestUnix:
    def test_echo(self, loop, tmp_path):
        path = str(tmp_path / "streams.sock")

        async def main():
            server = await asyncio.start_unix_server(echo_lines, path)
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"over unix\n")
            await writer.drain()
            assert await reader.readline() == b"over unix\n"
            assert writer.get_extra_info("peername") == path
            writer.write_eof()
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()

        run(loop, main())

    def test_open_unix_connection_with_sock(self, loop, tmp_path):
        path = str(tmp_path / "streams.sock")

        async def main():
            server = await asyncio.start_unix_server(echo_lines, path)
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(path)
            reader, writer = await asyncio.open_unix_connection(sock=sock)
            writer.write(b"x\n")
            assert await reader.readline() == b"x\n"
            writer.close()
            await writer.wait_closed()
            server.close()

        run(loop, main())

    def test_missing_path(self, loop, tmp_path):
        with pytest.raises(FileNotFoundError):
            run(loop, asyncio.open_unix_connection(str(tmp_path / "none.sock")))
