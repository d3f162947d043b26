"""Fault injection on plain TCP, on both loops: peers that reset, half-close, stall with a full
window, or are killed mid-transfer, against stream servers and plain protocols.

Each fault must end in the stock loop's exception on the stock loop's callback, and the loop
must go on serving: in every test a second, healthy connection completes on the same loop during
or after the fault. The peers are raw sockets (or other processes), so what is checked is only
how the loop under test reacts.

Linux only, as the loops' tests are: what a reset or a killed peer looks like is Linux's, and
leaks are counted in /proc. Reference: CPython asyncio selector_events, streams (3.11). The
helpers are in faults.py; TLS faults are in test_faults_tls.py, those of child processes,
signals and resources in test_faults_process.py.
"""

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap

import pytest

pytest.register_assert_rewrite("faults")

# After register_assert_rewrite, so that the asserts of faults.py explain their failures.
from faults import (  # noqa: E402
    CHUNK,
    FLOOD,
    TIMEOUT,
    first,
    intact,
    is_reset,
    nothing_left_behind,
    protocol_round_trip,
    protocol_server,
    raw_peer,
    reports,
    reset,
    sock_recv_exactly,
    sock_recv_to_eof,
    stream_server,
)
from util import run  # noqa: E402

# The autouse fixtures of faults.py apply to this module's tests because they are imported into
# it (pytest looks for fixtures among a test module's names); naming them here marks them used.
AUTOUSE_FIXTURES = (nothing_left_behind, reports)


async def raises_reset(*awaitables):
    """Awaits each of `awaitables`, checking it raises the ConnectionResetError of ECONNRESET."""
    for awaitable in awaitables:
        with pytest.raises(ConnectionResetError) as info:
            await asyncio.wait_for(awaitable, TIMEOUT)
        assert is_reset(info.value)


# 1. Resets


async def reset_stream_peer(loop, server, request, expected=b""):
    """A raw peer of `server` (a `stream_server`) sends `request`, reads the reply until it has
    `expected`, and resets; returns the outcome of its connection on the server."""
    peer = await raw_peer(loop, server.port)
    await loop.sock_sendall(peer, request)
    if expected:
        assert await sock_recv_exactly(loop, peer, len(expected)) == expected
    reset(peer)
    return await server.outcome()


class TestReset:
    def test_reset_while_the_stream_server_reads(self, loop):
        """recv() fails with ECONNRESET: StreamReader.read raises ConnectionResetError."""

        async def main():
            async with stream_server() as server:
                mode, where, exc = await reset_stream_peer(loop, server, b"Ehello", b"hello")
                assert (mode, where, is_reset(exc)) == (b"E", "read", True)

        run(loop, main())

    def test_reset_while_the_stream_server_writes(self, loop):
        """The peer takes part of a flood, then resets: the drain() the server is in raises
        ConnectionResetError (the read side sees ECONNRESET first and connection_lost passes it
        on to the drain waiter)."""

        async def main():
            async with stream_server() as server:
                mode, where, exc = await reset_stream_peer(loop, server, b"F", CHUNK)
                assert (mode, where, is_reset(exc)) == (b"F", "drain", True)

        run(loop, main())

    def test_reset_with_data_in_flight_to_the_stream_server(self, loop):
        """The peer resets right after sending 1 MiB: what reached the server is read, then
        read() raises ConnectionResetError (a reset is never taken for EOF)."""

        async def main():
            async with stream_server() as server:
                mode, where, exc = await reset_stream_peer(loop, server, b"H" + CHUNK * 16)
                assert (mode, where, is_reset(exc)) == (b"H", "read", True)

        run(loop, main())

    def test_reset_with_data_in_flight_to_the_protocol(self, loop):
        """data_received gets an intact prefix of what was sent, then
        connection_lost(ConnectionResetError), with no eof_received."""

        async def main():
            async with protocol_server(loop) as (protocols, port):
                peer = await raw_peer(loop, port)
                await loop.sock_sendall(peer, b"S" + CHUNK * 16)
                reset(peer)
                protocol = await first(protocols)
                assert is_reset(await asyncio.wait_for(protocol.lost, TIMEOUT))
                assert protocol.events == ["made", ("lost", ConnectionResetError)]
                assert intact(bytes(protocol.data[1:]))

        run(loop, main())

    def test_reset_while_the_protocol_reads(self, loop):
        async def main():
            async with protocol_server(loop) as (protocols, port):
                peer = await raw_peer(loop, port)
                await loop.sock_sendall(peer, b"Ehello")
                assert await sock_recv_exactly(loop, peer, 5) == b"hello"
                reset(peer)
                (protocol,) = protocols
                assert is_reset(await asyncio.wait_for(protocol.lost, TIMEOUT))
                assert protocol.events == ["made", ("lost", ConnectionResetError)]

        run(loop, main())

    def test_reset_while_the_protocol_is_paused_reading(self, loop):
        """A transport paused for reading does not watch its socket: the reset goes unnoticed
        until resume_reading, which delivers the data sent before it, then
        connection_lost(ConnectionResetError)."""

        async def main():
            async with protocol_server(loop, paused_reading=True) as (protocols, port):
                peer = await raw_peer(loop, port)
                await loop.sock_sendall(peer, b"Shello")
                protocol = await first(protocols)
                reset(peer)
                await protocol_round_trip(loop, port)
                done, _ = await asyncio.wait([protocol.lost], timeout=0.2)
                assert not done and protocol.events == ["made"]
                protocol.transport.resume_reading()
                assert is_reset(await asyncio.wait_for(protocol.lost, TIMEOUT))
                assert protocol.events == ["made", ("lost", ConnectionResetError)]
                assert protocol.data == b"Shello"

        run(loop, main())

    def test_reset_during_sendfile(self, loop):
        """loop.sendfile() of a file larger than the socket buffers, to a peer that takes 64 KiB
        and resets: os.sendfile fails with ECONNRESET and sendfile raises it. That consumed the
        socket's error, so the transport, reading again, then finds a plain EOF:
        eof_received, connection_lost(None)."""

        async def main():
            async with protocol_server(loop) as (protocols, port):
                with tempfile.TemporaryFile() as file:
                    file.write(FLOOD)
                    file.seek(0)
                    with await raw_peer(loop, port) as peer:
                        protocol = await first(protocols)
                        sending = asyncio.ensure_future(loop.sendfile(protocol.transport, file))
                        assert await sock_recv_exactly(loop, peer, len(CHUNK)) == FLOOD[: len(CHUNK)]
                        await protocol_round_trip(loop, port)
                        assert not sending.done()
                        reset(peer)
                    await raises_reset(sending)
                assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
                assert protocol.events == ["made", "eof", ("lost", type(None))]

        run(loop, main())

    def test_reset_while_the_protocol_writes(self, loop):
        """The flood is buffered past the high-water mark (pause_writing), the peer takes part of
        it and resets: connection_lost(ConnectionResetError), and no resume_writing."""

        async def main():
            async with protocol_server(loop) as (protocols, port):
                peer = await raw_peer(loop, port)
                await loop.sock_sendall(peer, b"F")
                assert await sock_recv_exactly(loop, peer, len(CHUNK)) == CHUNK
                (protocol,) = protocols
                await asyncio.wait_for(protocol.paused, TIMEOUT)
                reset(peer)
                assert is_reset(await asyncio.wait_for(protocol.lost, TIMEOUT))
                assert protocol.events == ["made", "pause", ("lost", ConnectionResetError)]

        run(loop, main())


# 2. Half-close


class TestHalfClose:
    def test_stream_server_sees_eof_then_replies(self, loop):
        """StreamReaderProtocol keeps the transport open on EOF: read() returns what came, at_eof()
        is true, and the reply still reaches the peer, followed by the server's own EOF."""

        async def main():
            async with stream_server() as server:
                with await raw_peer(loop, server.port) as peer:
                    request = CHUNK * 16
                    await loop.sock_sendall(peer, b"H" + request)
                    peer.shutdown(socket.SHUT_WR)
                    assert await sock_recv_to_eof(loop, peer) == request.upper()
                assert await server.outcome() == (b"H", "wait_closed", None)

        run(loop, main())

    @pytest.mark.parametrize("keeps_open", [True, None])
    def test_protocol_replies_after_eof(self, loop, keeps_open):
        """eof_received returning true keeps the transport open for the reply; returning None
        closes it, but only once the reply written in eof_received has gone out."""

        async def main():
            reply = CHUNK * 16
            server = protocol_server(loop, eof_keeps_open=keeps_open, eof_reply=None if keeps_open else reply)
            async with server as (protocols, port):
                with await raw_peer(loop, port) as peer:
                    await loop.sock_sendall(peer, b"Hhello")
                    peer.shutdown(socket.SHUT_WR)
                    protocol = await first(protocols)
                    await asyncio.wait_for(protocol.got(6), TIMEOUT)
                    if keeps_open:
                        await asyncio.wait_for(protocol.eof, TIMEOUT)
                        assert protocol.events == ["made", "eof"]
                        assert not protocol.transport.is_closing()
                        protocol.transport.write(reply)
                        protocol.transport.close()
                    assert await sock_recv_to_eof(loop, peer) == reply
                assert await asyncio.wait_for(protocol.lost, TIMEOUT) is None
                assert protocol.events == ["made", "eof", ("lost", type(None))]

        run(loop, main())


# 3. A peer that stalls with a full window


@contextlib.asynccontextmanager
async def stalled_writer(loop):
    """Connects a peer that never reads to a server whose handler writes FLOOD and then waits in
    drain(), and checks the drain is blocked. Yields the peer, the server's writer and drain
    task, and the `Healthy` client of a `stream_server` opened before the peer, which is checked
    after the block, before both servers close."""
    server_side = asyncio.Queue()

    async def handle(reader, writer):
        writer.write(FLOOD)
        await server_side.put((writer, asyncio.ensure_future(writer.drain())))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with stream_server() as echo:
        peer = await raw_peer(loop, server.sockets[0].getsockname()[1])
        writer, drain = await asyncio.wait_for(server_side.get(), TIMEOUT)
        done, _ = await asyncio.wait([drain], timeout=0.2)
        assert not done, "drain() returned although the peer reads nothing"
        assert writer.transport.get_write_buffer_size() > 0
        yield peer, writer, drain, echo.healthy
    server.close()
    await server.wait_closed()


class TestStalledPeer:
    def test_stream_drain_raises_when_the_stalled_peer_resets(self, loop):
        """connection_lost(ConnectionResetError) fails the pending drain and wait_closed."""

        async def main():
            async with stalled_writer(loop) as (peer, writer, drain, healthy):
                await healthy.round_trip()
                reset(peer)
                await raises_reset(drain, writer.wait_closed())

        run(loop, main())

    def test_stream_drain_returns_when_the_server_aborts(self, loop):
        """abort() ends the connection with connection_lost(None): the pending drain returns, and
        a later one raises ConnectionResetError('Connection lost')."""

        async def main():
            async with stalled_writer(loop) as (peer, writer, drain, healthy):
                with peer:
                    writer.transport.abort()
                    assert await asyncio.wait_for(drain, TIMEOUT) is None
                    assert writer.transport.get_write_buffer_size() == 0
                    with pytest.raises(ConnectionResetError, match="^Connection lost$"):
                        await writer.drain()
                    assert await asyncio.wait_for(writer.wait_closed(), TIMEOUT) is None

        run(loop, main())

    def test_stream_close_then_the_stalled_peer_resets(self, loop):
        """close() with the buffer full waits to flush it, reading no more: the reset is seen by
        the next send(), which fails with ECONNRESET, and the pending drain and wait_closed raise
        that ConnectionResetError."""

        async def main():
            async with stalled_writer(loop) as (peer, writer, drain, healthy):
                writer.close()
                assert writer.is_closing()
                done, _ = await asyncio.wait([drain], timeout=0.2)
                assert not done, "drain() returned although the buffer cannot be flushed"
                await healthy.round_trip()
                reset(peer)
                await raises_reset(drain, writer.wait_closed())

        run(loop, main())

    @pytest.mark.parametrize("ending", ["peer resets", "server aborts"])
    def test_protocol_paused_until_the_connection_ends(self, loop, ending):
        """pause_writing once the flood passes the high-water mark; no resume_writing, as the peer
        never reads; connection_lost gets the reset, or None after abort()."""

        async def main():
            async with protocol_server(loop) as (protocols, port):
                with await raw_peer(loop, port) as peer:
                    await loop.sock_sendall(peer, b"F")
                    protocol = await first(protocols)
                    await asyncio.wait_for(protocol.paused, TIMEOUT)
                    assert protocol.paused.result() > 64 * 1024
                    await protocol_round_trip(loop, port)
                    if ending == "peer resets":
                        reset(peer)
                    else:
                        protocol.transport.abort()
                    exc = await asyncio.wait_for(protocol.lost, TIMEOUT)
                if ending == "peer resets":
                    assert is_reset(exc)
                else:
                    assert exc is None
                assert protocol.events == ["made", "pause", ("lost", type(exc))]
                assert protocol.transport.get_write_buffer_size() == 0

        run(loop, main())


# 4. A peer process killed mid-transfer

# A client that connects to argv[1], sends argv[2], then: "send" sends CHUNK's stream forever;
# "receive" reads 64 KiB of the server's flood, says "ready" and then reads nothing more.
KILLED_CLIENT = textwrap.dedent(
    """
    import socket, sys, time
    sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    sock.sendall(sys.argv[2].encode())
    if sys.argv[3] == "send":
        chunk = bytes(range(256)) * 256
        while True:
            sock.sendall(chunk)
    got = 0
    while got < 65536:
        got += len(sock.recv(65536 - got))
    print("ready", flush=True)
    time.sleep(60)
    """
)


class KilledClient:
    """The KILLED_CLIENT process, killed with SIGKILL by `kill()` and always reaped."""

    def __init__(self, port, mode, direction):
        self.process = subprocess.Popen(
            [sys.executable, "-c", KILLED_CLIENT, str(port), mode, direction], stdout=subprocess.PIPE
        )

    async def ready(self):
        line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), TIMEOUT)
        assert line == b"ready\n"

    async def kill(self):
        self.process.kill()
        assert await asyncio.to_thread(self.process.wait) == -signal.SIGKILL

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.process.kill()
        self.process.wait()
        self.process.stdout.close()


class TestPeerKilled:
    def test_killed_while_sending(self, loop):
        """The killed process had nothing unread, so the kernel ends its connection with FIN once
        the data it had sent is delivered: the server gets that data, intact, then EOF."""

        async def main():
            async with protocol_server(loop) as (protocols, port):
                with KilledClient(port, "S", "send") as client:
                    victim = await first(protocols)
                    await asyncio.wait_for(victim.got(1 << 20), TIMEOUT)
                    await protocol_round_trip(loop, port)
                    await client.kill()
                assert await asyncio.wait_for(victim.lost, TIMEOUT) is None
                assert victim.events == ["made", "eof", ("lost", type(None))]
                assert intact(bytes(victim.data[1:]))

        run(loop, main())

    def test_killed_while_receiving_from_a_stream_server(self, loop):
        """The killed process leaves the flood unread: the kernel resets the connection, and the
        server's pending drain() raises ConnectionResetError."""

        async def main():
            async with stream_server() as server:
                with KilledClient(server.port, "F", "receive") as client:
                    await client.ready()
                    await server.healthy.round_trip()
                    await client.kill()
                mode, where, exc = await server.outcome()
                assert (mode, where, is_reset(exc)) == (b"F", "drain", True)

        run(loop, main())

    def test_killed_while_receiving_from_a_protocol(self, loop):
        async def main():
            async with protocol_server(loop) as (protocols, port):
                with KilledClient(port, "F", "receive") as client:
                    await client.ready()
                    victim = await first(protocols)
                    await protocol_round_trip(loop, port)
                    await client.kill()
                assert is_reset(await asyncio.wait_for(victim.lost, TIMEOUT))
                assert victim.events == ["made", "pause", ("lost", ConnectionResetError)]

        run(loop, main())
