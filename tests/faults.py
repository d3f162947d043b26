"""What the fault-injection tests (test_faults_*.py) share: the fixtures that check a test leaves
nothing behind and that the loop reports nothing unexpected, misbehaving raw peers, and the
healthy servers and clients that show the loop still serving after a fault.

Not a test module, so pytest does not collect it. Its fixtures are autouse: a test module gets
them by importing them by name, as pytest looks for fixtures among a test module's names.
"""

import asyncio
import contextlib
import errno
import gc
import glob
import logging
import os
import pathlib
import socket
import struct

import pytest
from tls_certs import client_context, server_context

TIMEOUT = 20.0
CHUNK = bytes(range(256)) * 256  # 64 KiB
FLOOD = CHUNK * 256  # 16 MiB: more than loopback's socket buffers hold
TLS_CLIENT = {"ssl": client_context(), "server_hostname": "localhost"}


def open_fds():
    return set(os.listdir("/proc/self/fd"))


def children():
    """This process's child processes, zombies included."""
    tasks = glob.glob("/proc/self/task/*/children")
    return {pid for path in tasks for pid in pathlib.Path(path).read_text().split()}


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """Every test closes its sockets and reaps its children. (Set up before `loop`, so checked
    after the loop is closed.)"""
    fds = open_fds()
    yield
    gc.collect()
    assert open_fds() == fds
    assert children() == set()


@pytest.fixture(autouse=True)
def reports(loop, caplog):
    """What the loop passes to its exception handler. The stock loop reports none of these
    faults, nor logs a warning about them (a transport's OSError is logged only in debug mode,
    at DEBUG level), so a test must take out the reports it expects, and any other report or
    warning fails it."""
    reported = []
    loop.set_exception_handler(lambda loop, context: reported.append(context))
    yield reported
    assert [context["message"] for context in reported] == []
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []


def intact(data, skip=0):
    """Whether `data` is the stream of CHUNK repeated, from its byte `skip` on."""
    return data == (CHUNK * (2 + len(data) // len(CHUNK)))[skip : skip + len(data)]


def reset(sock):
    """Closes `sock` with SO_LINGER on and a linger of 0: the kernel sends RST, not FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def is_reset(exc):
    """Whether `exc` is the ConnectionResetError that recv() or send() raise on ECONNRESET."""
    return type(exc) is ConnectionResetError and exc.errno == errno.ECONNRESET


async def raw_peer(loop, port):
    """A non-blocking client socket connected to 127.0.0.1:port, for peers that misbehave."""
    sock = socket.socket()
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


async def sock_recv_exactly(loop, sock, size):
    data = bytearray()
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


async def sock_recv_to_eof(loop, sock):
    data = bytearray()
    while chunk := await loop.sock_recv(sock, 65536):
        data += chunk
    return bytes(data)


class Healthy:
    """A well-behaved echo client of a `StreamServer`, opened before the fault and checked
    after it, so that the loop is shown serving it across the fault."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port, **kwargs):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, **kwargs)
        writer.write(b"E")
        self = cls(reader, writer)
        await self.round_trip()
        return self

    async def round_trip(self, payload=CHUNK * 4):
        self.writer.write(payload)
        await self.writer.drain()
        assert await self.reader.readexactly(len(payload)) == payload

    async def close(self):
        self.writer.close()
        await self.writer.wait_closed()


async def still_serving(port, before=None, **kwargs):
    """Checks the server on `port` still echoes: over `before` (a `Healthy` opened before the
    fault) and over a new connection."""
    if before is not None:
        await before.round_trip()
        await before.close()
    after = await Healthy.open(port, **kwargs)
    await after.close()


class StreamServer:
    """A streams server whose client picks a mode with its first byte: b"E" echoes until EOF;
    b"H" reads to EOF, then replies with what it read, upper-cased, if the reader is at EOF;
    b"F" floods the client until the connection fails. Each connection's outcome, as
    (mode, where, exception or None), goes to `outcomes`."""

    def __init__(self):
        self.outcomes = asyncio.Queue()
        self.server = None

    async def start(self, **kwargs):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, **kwargs)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def handle(self, reader, writer):
        where, outcome = "read", None
        try:
            mode = await reader.readexactly(1)
            if mode == b"E":
                while data := await reader.read(65536):
                    where = "drain"
                    writer.write(data)
                    await writer.drain()
                    where = "read"
            elif mode == b"H":
                data = await reader.read()
                where = "drain"
                writer.write(data.upper() if reader.at_eof() else b"not at EOF")
                await writer.drain()
            else:
                where = "drain"
                while True:
                    writer.write(CHUNK)
                    await writer.drain()
            where = "wait_closed"
            writer.close()
            await writer.wait_closed()
        except Exception as exc:
            outcome = exc
            writer.close()
        await self.outcomes.put((mode, where, outcome))

    async def outcome(self):
        return await asyncio.wait_for(self.outcomes.get(), TIMEOUT)

    async def close(self):
        self.server.close()
        await self.server.wait_closed()


@contextlib.asynccontextmanager
async def stream_server(tls=False, **kwargs):
    """A `StreamServer`, over TLS if `tls`, started with `kwargs`, whose `healthy` is a `Healthy`
    client opened before the block. After the block: `still_serving` over that client and a new
    one, then the server is closed."""
    client = TLS_CLIENT if tls else {}
    if tls:
        kwargs["ssl"] = server_context()
    server = await StreamServer().start(**kwargs)
    server.healthy = await Healthy.open(server.port, **client)
    yield server
    await still_serving(server.port, server.healthy, **client)
    await server.close()


class Recorder(asyncio.Protocol):
    """A plain protocol recording its callbacks. The first byte from the client picks what it
    does: b"E" echoes, b"F" writes FLOOD at once, any other only records. eof_received writes
    `eof_reply` if given and returns `eof_keeps_open`; with `paused_reading`, connection_made
    pauses reading. Futures: `eof`, `paused` (with the write buffer size then), `lost` (with
    connection_lost's argument); `got(n)` waits for n bytes."""

    def __init__(self, eof_keeps_open=None, eof_reply=None, paused_reading=False):
        loop = asyncio.get_running_loop()
        self.events = []
        self.data = bytearray()
        self.eof = loop.create_future()
        self.paused = loop.create_future()
        self.lost = loop.create_future()
        self.eof_keeps_open = eof_keeps_open
        self.eof_reply = eof_reply
        self.paused_reading = paused_reading
        self._wanted = None

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")
        if self.paused_reading:
            transport.pause_reading()

    def data_received(self, data):
        first = not self.data
        self.data += data
        if first and data[:1] == b"F":
            self.transport.write(FLOOD)
        elif self.data[:1] == b"E":
            self.transport.write(data[1:] if first else data)
        if self._wanted is not None and len(self.data) >= self._wanted[0]:
            self._wanted[1].set_result(None)
            self._wanted = None

    def eof_received(self):
        self.events.append("eof")
        self.eof.set_result(None)
        if self.eof_reply is not None:
            self.transport.write(self.eof_reply)
        return self.eof_keeps_open

    def pause_writing(self):
        self.events.append("pause")
        self.paused.set_result(self.transport.get_write_buffer_size())

    def resume_writing(self):
        self.events.append("resume")

    def connection_lost(self, exc):
        self.events.append(("lost", type(exc)))
        self.lost.set_result(exc)

    async def got(self, size):
        if len(self.data) < size:
            self._wanted = (size, asyncio.get_running_loop().create_future())
            await self._wanted[1]


@contextlib.asynccontextmanager
async def protocol_server(loop, **kwargs):
    """A server of `Recorder`s; yields the list of its protocols and its port. The first
    connection's Recorder is made with the kwargs, later (healthy) ones with none. After the
    block: a `protocol_round_trip`, then the server is closed."""
    protocols = []

    def factory():
        protocol = Recorder(**kwargs) if not protocols else Recorder()
        protocols.append(protocol)
        return protocol

    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield protocols, port
    await protocol_round_trip(loop, port)
    server.close()
    await server.wait_closed()


async def first(protocols):
    """The first protocol of a `protocol_server`, once its connection_made has been called."""

    async def made():
        while not protocols or not protocols[0].events:
            await asyncio.sleep(0.01)
        return protocols[0]

    return await asyncio.wait_for(made(), TIMEOUT)


async def protocol_round_trip(loop, port):
    """A well-behaved client of a `protocol_server`: one echo, then close."""
    sock = await raw_peer(loop, port)
    with sock:
        await loop.sock_sendall(sock, b"E" + CHUNK)
        assert await sock_recv_exactly(loop, sock, len(CHUNK)) == CHUNK
