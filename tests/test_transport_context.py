"""Every protocol callback runs in the Context the transport was created in (a copy of it), as
with uvloop: also `connection_lost` after a `close()` from another task, `pause_writing` from
another task's `write()`, `resume_writing`, `eof_received`, `data_received` after another task's
`resume_reading()` or after `start_tls()`; for stream (plain and TLS), datagram and pipe
transports. The stock loop runs those in the Context of whichever task triggered them (see
`python/ferroloop/_in_context.py`); a protocol keeping per-connection state in context
variables then sees another task's.

The connection is made in a task where `var` is "conn"; everything else is done from tasks where
it is "other". Each callback records the value it sees.
"""

import asyncio
import contextvars
import os
import socket

from tls_certs import client_context, server_context
from util import run

var = contextvars.ContextVar("var", default="unset")
WAIT = 20


class Seen(asyncio.Protocol):
    """Records (callback, var) for each callback; `wait(name)` waits for one."""

    def __init__(self):
        self.seen = []
        self.transport = None
        self._changed = asyncio.Event()

    def _note(self, name):
        self.seen.append((name, var.get()))
        self._changed.set()

    async def wait(self, name):
        while name not in [n for n, _ in self.seen]:
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), WAIT)

    def connection_made(self, transport):
        self.transport = transport
        self._note("connection_made")

    def data_received(self, data):
        self._note("data_received")

    def datagram_received(self, data, addr):
        self._note("datagram_received")

    def error_received(self, exc):
        self._note("error_received")

    def eof_received(self):
        self._note("eof_received")

    def pause_writing(self):
        self._note("pause_writing")

    def resume_writing(self):
        self._note("resume_writing")

    def connection_lost(self, exc):
        self._note("connection_lost")

    def values(self):
        return {value for _, value in self.seen}


async def in_context(value, coro_fn, *args, **kwargs):
    """Runs `coro_fn(*args, **kwargs)` in a task of its own whose `var` is `value`."""

    async def body():
        var.set(value)
        return await coro_fn(*args, **kwargs)

    return await asyncio.get_running_loop().create_task(body())


async def other(fn, *args):
    """Calls `fn(*args)` from a task whose `var` is "other"."""

    async def call():
        return fn(*args)

    return await in_context("other", call)


def read_exactly(read, size):
    """Calls the blocking `read(n)` (a socket's `recv`, a file's `read`) until `size` bytes came."""
    while size > 0:
        chunk = read(min(size, 1 << 20))
        if not chunk:
            raise EOFError(f"{size} bytes short")
        size -= len(chunk)


async def pause_and_resume_writing(protocol, transport, size, read):
    """Another task writes `size` bytes past a small high-water mark: pause_writing; then the
    peer reads them all (`read`, as for `read_exactly`): resume_writing."""
    transport.set_write_buffer_limits(high=1024)
    await other(transport.write, b"y" * size)
    await protocol.wait("pause_writing")
    await asyncio.get_running_loop().run_in_executor(None, read_exactly, read, size)
    await protocol.wait("resume_writing")


def test_stream_callbacks_run_in_the_transport_context(ferro_loop):
    listener = socket.create_server(("127.0.0.1", 0))

    async def main():
        loop = asyncio.get_running_loop()
        connecting = in_context("conn", loop.create_connection, Seen, *listener.getsockname())
        (transport, protocol), (peer, _) = await asyncio.gather(
            connecting, loop.run_in_executor(None, listener.accept)
        )
        with peer:
            await protocol.wait("connection_made")
            # data_received after another task's pause_reading()/resume_reading()
            await other(transport.pause_reading)
            peer.sendall(b"x")
            await asyncio.sleep(0.05)
            await other(transport.resume_reading)
            await protocol.wait("data_received")
            # pause_writing from another task's write(), resume_writing once the peer reads
            await pause_and_resume_writing(protocol, transport, 8 << 20, peer.recv)
            # eof_received, then connection_lost after another task's close()
            peer.shutdown(socket.SHUT_WR)
            await protocol.wait("eof_received")
            await other(transport.close)
            await protocol.wait("connection_lost")
        return protocol

    with listener:
        protocol = run(ferro_loop, main())
    names = [name for name, _ in protocol.seen]
    assert names == [
        "connection_made",
        "data_received",
        "pause_writing",
        "resume_writing",
        "eof_received",
        "connection_lost",
    ]
    assert protocol.values() == {"conn"}


def test_tls_callbacks_run_in_the_transport_context(ferro_loop):
    async def main():
        loop = asyncio.get_running_loop()
        servers = []

        def factory():
            servers.append(Seen())
            return servers[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=server_context())
        async with server:
            host, port = server.sockets[0].getsockname()
            transport, protocol = await in_context(
                "conn", loop.create_connection, Seen, host, port, ssl=client_context(),
                server_hostname="localhost",
            )
            await protocol.wait("connection_made")
            peer = servers[0]
            await other(transport.pause_reading)
            peer.transport.write(b"x")
            await asyncio.sleep(0.05)
            await other(transport.resume_reading)
            await protocol.wait("data_received")
            peer.transport.pause_reading()
            transport.set_write_buffer_limits(high=1024)
            # The first write fills the TCP transport, which pauses TLS; the second stays in
            # TLS's buffer, past the high-water mark.
            for _ in range(2):
                await other(transport.write, b"y" * (4 << 20))
            await protocol.wait("pause_writing")
            peer.transport.resume_reading()
            await protocol.wait("resume_writing")
            await other(transport.close)
            await protocol.wait("connection_lost")
        return protocol

    protocol = run(ferro_loop, main())
    assert [name for name, _ in protocol.seen] == [
        "connection_made",
        "data_received",
        "pause_writing",
        "resume_writing",
        "eof_received",  # the server's close_notify, answering ours
        "connection_lost",
    ]
    assert protocol.values() == {"conn"}


def test_start_tls_data_runs_in_the_transport_context(ferro_loop):
    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            asyncio.Protocol, "127.0.0.1", 0, ssl=server_context()
        )
        async with server:
            host, port = server.sockets[0].getsockname()
            plain, protocol = await in_context("conn", loop.create_connection, Seen, host, port)
            await protocol.wait("connection_made")

            async def upgrade():
                return await loop.start_tls(
                    plain, protocol, client_context(), server_hostname="localhost"
                )

            tls = await in_context("other", upgrade)
            await other(tls.close)
            await protocol.wait("connection_lost")
        return protocol

    protocol = run(ferro_loop, main())
    assert protocol.values() == {"conn"}
    assert protocol.seen[-1][0] == "connection_lost"


def test_datagram_callbacks_run_in_the_transport_context(ferro_loop):
    async def main():
        loop = asyncio.get_running_loop()
        closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closed.bind(("127.0.0.1", 0))
        unreachable = closed.getsockname()
        closed.close()
        transport, protocol = await in_context(
            "conn", loop.create_datagram_endpoint, Seen, remote_addr=unreachable
        )
        await protocol.wait("connection_made")
        # Each send to a closed port is answered by an ICMP error, reported on a later
        # send or read: error_received, from another task's sendto() or from the read.
        for _ in range(50):
            await other(transport.sendto, b"ping")
            if any(name == "error_received" for name, _ in protocol.seen):
                break
            await asyncio.sleep(0.02)
        await protocol.wait("error_received")
        await other(transport.close)
        await protocol.wait("connection_lost")
        return protocol

    protocol = run(ferro_loop, main())
    assert protocol.values() == {"conn"}


def test_pipe_callbacks_run_in_the_transport_context(ferro_loop):
    async def main():
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        reader = os.fdopen(read_fd, "rb", buffering=0)
        try:
            transport, protocol = await in_context(
                "conn", loop.connect_write_pipe, Seen, os.fdopen(write_fd, "wb", buffering=0)
            )
            await protocol.wait("connection_made")
            await pause_and_resume_writing(protocol, transport, 1 << 20, reader.read)
            await other(transport.close)
            await protocol.wait("connection_lost")
        finally:
            reader.close()
        return protocol

    protocol = run(ferro_loop, main())
    assert [name for name, _ in protocol.seen] == [
        "connection_made",
        "pause_writing",
        "resume_writing",
        "connection_lost",
    ]
    assert protocol.values() == {"conn"}
