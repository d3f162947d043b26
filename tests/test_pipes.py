"""connect_read_pipe / connect_write_pipe and their transports, on both loops: the order of the
protocol's calls, the fd kinds accepted (pipes, sockets, character devices) and the stock
ValueError for the rest, reading to EOF, pause/resume, EIO on a pty, writing with buffering and
flow control, write_eof and close flushing first, abort, the writer noticing a closed reader
(cleanly or with BrokenPipeError), the repr, debug logging, and the ResourceWarning of a
transport never closed.

Nothing here measures time. A pipe nobody reads fills up (its capacity is 64 KiB on Linux), so
writing more than `BIG` makes the transport buffer; "nothing happens while paused" is checked
over several loop iterations with data already waiting, which a reading transport would have
picked up in the first.

Reference: CPython 3.11 asyncio unix_events (_UnixReadPipeTransport, _UnixWritePipeTransport),
base_events.connect_read_pipe/connect_write_pipe, transports._FlowControlMixin. Tests of
ferroloop-only details use `ferro_loop`.
"""

import asyncio
import errno
import gc
import logging
import os
import socket
import tempfile

import pytest
from util import run

BIG = 1024 * 1024  # more than a pipe holds


async def spin(n=10):
    """A few loop iterations."""
    for _ in range(n):
        await asyncio.sleep(0)


class Recorder(asyncio.Protocol):
    """Records every call; `done` resolves with connection_lost's argument."""

    def __init__(self):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.done = asyncio.get_event_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        self.data += data
        if not self.events or self.events[-1] != "data":
            self.events.append("data")

    def eof_received(self):
        self.events.append("eof")

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.done.set_result(exc)


@pytest.fixture
def pipe_fds():
    """An os.pipe() pair; whichever end a test did not hand to a file object is closed after."""
    r, w = os.pipe()
    fds = {"r": r, "w": w}
    yield fds
    for fd in fds.values():
        try:
            os.close(fd)
        except OSError:
            pass


def take(fds, end, mode):
    """The `end` of the pipe as an unbuffered file object, which now owns the fd."""
    fd = fds.pop(end)
    return open(fd, mode, buffering=0)


class TestReadPipe:
    def test_connect_read_and_eof(self, loop, pipe_fds):
        pipe = take(pipe_fds, "r", "rb")

        async def main():
            transport, protocol = await loop.connect_read_pipe(Recorder, pipe)
            assert protocol.events == ["made"]
            assert protocol.transport is transport
            assert transport.get_extra_info("pipe") is pipe
            assert transport.get_extra_info("nothing", 42) == 42
            assert not os.get_blocking(pipe.fileno())
            assert transport.is_reading() and not transport.is_closing()
            os.write(pipe_fds["w"], b"hello ")
            os.write(pipe_fds["w"], b"world")
            os.close(pipe_fds.pop("w"))
            exc = await protocol.done
            return transport, protocol, exc

        transport, protocol, exc = run(loop, main())
        assert exc is None
        assert bytes(protocol.data) == b"hello world"
        assert protocol.events == ["made", "data", "eof", "lost"]
        assert transport.is_closing()
        assert pipe.closed
        assert transport.get_protocol() is None

    def test_close_stops_reading(self, loop, pipe_fds):
        pipe = take(pipe_fds, "r", "rb")

        async def main():
            transport, protocol = await loop.connect_read_pipe(Recorder, pipe)
            transport.close()
            transport.close()
            assert transport.is_closing() and not transport.is_reading()
            os.write(pipe_fds["w"], b"unread")
            exc = await protocol.done
            await spin()
            return protocol, exc

        protocol, exc = run(loop, main())
        assert exc is None
        assert protocol.events == ["made", "lost"]
        assert pipe.closed

    def test_pause_and_resume_reading(self, loop, pipe_fds):
        pipe = take(pipe_fds, "r", "rb")

        async def main():
            transport, protocol = await loop.connect_read_pipe(Recorder, pipe)
            transport.pause_reading()
            transport.pause_reading()
            assert not transport.is_reading()
            os.write(pipe_fds["w"], b"waiting")
            await spin()
            assert protocol.data == b""
            transport.resume_reading()
            transport.resume_reading()
            assert transport.is_reading()
            while len(protocol.data) < 7:
                await asyncio.sleep(0)
            transport.close()
            await protocol.done
            return protocol

        protocol = run(loop, main())
        assert protocol.data == b"waiting"

    def test_pause_before_connection_made_is_kept(self, loop, pipe_fds):
        pipe = take(pipe_fds, "r", "rb")
        os.write(pipe_fds["w"], b"early")

        class PausesAtOnce(Recorder):
            def connection_made(self, transport):
                super().connection_made(transport)
                transport.pause_reading()

        async def main():
            transport, protocol = await loop.connect_read_pipe(PausesAtOnce, pipe)
            await spin()
            assert protocol.data == b""
            transport.resume_reading()
            while not protocol.data:
                await asyncio.sleep(0)
            transport.close()
            await protocol.done
            return protocol

        assert run(loop, main()).data == b"early"

    def test_set_protocol(self, loop, pipe_fds):
        pipe = take(pipe_fds, "r", "rb")

        async def main():
            transport, first = await loop.connect_read_pipe(Recorder, pipe)
            second = Recorder()
            transport.set_protocol(second)
            assert transport.get_protocol() is second
            os.write(pipe_fds["w"], b"for the second")
            os.close(pipe_fds.pop("w"))
            await second.done
            return first, second

        first, second = run(loop, main())
        assert first.events == ["made"]
        assert second.data == b"for the second"
        assert second.events == ["data", "eof", "lost"]

    def test_read_from_socket(self, loop):
        a, b = socket.socketpair()
        try:
            pipe = open(a.detach(), "rb", buffering=0)

            async def main():
                transport, protocol = await loop.connect_read_pipe(Recorder, pipe)
                b.sendall(b"via a socket")
                b.close()
                return protocol, await protocol.done

            protocol, exc = run(loop, main())
            assert exc is None
            assert protocol.data == b"via a socket"
            assert protocol.events == ["made", "data", "eof", "lost"]
        finally:
            b.close()

    def test_pty_eio_ends_quietly(self, loop):
        master, slave = os.openpty()
        pipe = open(master, "rb", buffering=0)
        handled = []
        loop.set_exception_handler(lambda lp, ctx: handled.append(ctx))

        async def main():
            transport, protocol = await loop.connect_read_pipe(Recorder, pipe)
            os.write(slave, b"x\n")
            while not protocol.data:
                await asyncio.sleep(0)
            os.close(slave)  # the master's reads now fail with EIO
            return protocol, await protocol.done

        try:
            protocol, exc = run(loop, main())
        except BaseException:
            os.close(slave)
            raise
        assert isinstance(exc, OSError) and exc.errno == errno.EIO
        assert protocol.events == ["made", "data", "lost"]
        assert handled == []
        assert pipe.closed

    def test_cancelled_connect_closes_the_transport(self, loop, pipe_fds):
        pipe = take(pipe_fds, "r", "rb")
        made = []

        def factory():
            protocol = Recorder()
            made.append(protocol)
            return protocol

        async def main():
            task = asyncio.ensure_future(loop.connect_read_pipe(factory, pipe))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return await made[0].done

        assert run(loop, main()) is None
        assert made[0].events == ["made", "lost"]
        assert pipe.closed


@pytest.mark.parametrize("connect", ["connect_read_pipe", "connect_write_pipe"])
def test_regular_file_is_refused(loop, connect):
    messages = {
        "connect_read_pipe": "Pipe transport is for pipes/sockets only.",
        "connect_write_pipe": "Pipe transport is only for pipes, sockets and character devices",
    }
    made = []
    with tempfile.TemporaryFile() as pipe:
        with pytest.raises(ValueError) as info:
            run(loop, getattr(loop, connect)(lambda: made.append(1) or Recorder(), pipe))
        assert str(info.value) == messages[connect]
        assert made == [1]  # the protocol is made before the check
        assert os.get_blocking(pipe.fileno())
        assert not pipe.closed


class TestWritePipe:
    def test_write_and_close(self, loop, pipe_fds):
        pipe = take(pipe_fds, "w", "wb")

        async def main():
            transport, protocol = await loop.connect_write_pipe(Recorder, pipe)
            assert protocol.events == ["made"]
            assert transport.get_extra_info("pipe") is pipe
            assert not os.get_blocking(pipe.fileno())
            assert transport.can_write_eof()
            transport.write(b"bytes, ")
            transport.write(bytearray(b"bytearray, "))
            transport.write(memoryview(b"memoryview"))
            transport.write(b"")
            assert transport.get_write_buffer_size() == 0
            transport.close()
            assert transport.is_closing()
            return transport, protocol, await protocol.done

        transport, protocol, exc = run(loop, main())
        assert exc is None
        assert protocol.events == ["made", "lost"]
        assert pipe.closed
        assert os.read(pipe_fds["r"], 100) == b"bytes, bytearray, memoryview"
        assert os.read(pipe_fds["r"], 100) == b""  # EOF: the transport closed the pipe

    def test_str_is_refused(self, loop, pipe_fds):
        pipe = take(pipe_fds, "w", "wb")

        async def main():
            transport, protocol = await loop.connect_write_pipe(Recorder, pipe)
            with pytest.raises(AssertionError):
                transport.write("text")
            transport.close()
            await protocol.done

        run(loop, main())

    def test_big_write_is_buffered_flow_controlled_and_delivered(self, loop, pipe_fds):
        rpipe = take(pipe_fds, "r", "rb")
        wpipe = take(pipe_fds, "w", "wb")
        payload = bytes(range(256)) * (BIG // 256)

        async def main():
            reader, rproto = await loop.connect_read_pipe(Recorder, rpipe)
            reader.pause_reading()
            writer, wproto = await loop.connect_write_pipe(Recorder, wpipe)
            assert writer.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
            writer.write(payload)
            buffered = writer.get_write_buffer_size()
            assert 0 < buffered < len(payload)
            assert wproto.events == ["made", "pause"]
            await spin()
            assert writer.get_write_buffer_size() == buffered  # nobody reads
            reader.resume_reading()
            writer.close()
            assert (await wproto.done) is None
            assert (await rproto.done) is None
            return rproto, wproto

        rproto, wproto = run(loop, main())
        assert bytes(rproto.data) == payload
        assert rproto.events == ["made", "data", "eof", "lost"]
        assert wproto.events == ["made", "pause", "resume", "lost"]

    def test_write_buffer_limits(self, loop, pipe_fds):
        pipe = take(pipe_fds, "w", "wb")

        async def main():
            transport, protocol = await loop.connect_write_pipe(Recorder, pipe)
            transport.set_write_buffer_limits(high=4096)
            assert transport.get_write_buffer_limits() == (1024, 4096)
            transport.set_write_buffer_limits(high=100, low=10)
            assert transport.get_write_buffer_limits() == (10, 100)
            with pytest.raises(ValueError):
                transport.set_write_buffer_limits(high=1, low=2)
            transport.abort()
            await protocol.done

        run(loop, main())

    def test_buffered_bytearray_is_copied(self, loop, pipe_fds):
        rpipe = take(pipe_fds, "r", "rb")
        wpipe = take(pipe_fds, "w", "wb")

        async def main():
            writer, wproto = await loop.connect_write_pipe(Recorder, wpipe)
            writer.write(b"x" * BIG)
            assert writer.get_write_buffer_size() > 0
            data = bytearray(b"original")
            writer.write(data)
            data[:] = b"CHANGED!"
            reader, rproto = await loop.connect_read_pipe(Recorder, rpipe)
            writer.close()
            await rproto.done
            return rproto

        rproto = run(loop, main())
        assert len(rproto.data) == BIG + 8
        assert rproto.data.endswith(b"original")

    def test_write_eof_flushes_then_closes(self, loop, pipe_fds):
        rpipe = take(pipe_fds, "r", "rb")
        wpipe = take(pipe_fds, "w", "wb")

        async def main():
            writer, wproto = await loop.connect_write_pipe(Recorder, wpipe)
            writer.write(b"y" * BIG)
            writer.write_eof()
            writer.write_eof()
            assert writer.is_closing()
            await spin()
            assert not wproto.done.done()  # still flushing: nobody reads yet
            reader, rproto = await loop.connect_read_pipe(Recorder, rpipe)
            assert (await wproto.done) is None
            await rproto.done
            return rproto, wproto

        rproto, wproto = run(loop, main())
        assert len(rproto.data) == BIG
        assert rproto.events[-2:] == ["eof", "lost"]
        assert wproto.events == ["made", "pause", "resume", "lost"]

    def test_write_after_close_is_dropped_then_logged(self, loop, pipe_fds, caplog):
        pipe = take(pipe_fds, "w", "wb")

        async def main():
            transport, protocol = await loop.connect_write_pipe(Recorder, pipe)
            transport.close()
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                for _ in range(4):
                    transport.write(b"dropped")
                assert not caplog.records
                for _ in range(3):
                    transport.write(b"dropped")
            await protocol.done

        run(loop, main())
        messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
        assert messages == ["pipe closed by peer or os.write(pipe, data) raised exception."] * 2
        assert os.read(pipe_fds["r"], 100) == b""

    def test_abort_drops_the_buffer(self, loop, pipe_fds):
        pipe = take(pipe_fds, "w", "wb")

        async def main():
            transport, protocol = await loop.connect_write_pipe(Recorder, pipe)
            transport.write(b"z" * BIG)
            assert transport.get_write_buffer_size() > 0
            transport.abort()
            assert transport.is_closing()
            assert transport.get_write_buffer_size() == 0
            return protocol, await protocol.done

        protocol, exc = run(loop, main())
        assert exc is None
        assert protocol.events == ["made", "pause", "lost"]
        received = 0
        while chunk := os.read(pipe_fds["r"], 65536):
            received += len(chunk)
        assert 0 < received < BIG

    def test_reader_gone_with_nothing_buffered_closes_cleanly(self, loop, pipe_fds):
        pipe = take(pipe_fds, "w", "wb")

        async def main():
            transport, protocol = await loop.connect_write_pipe(Recorder, pipe)
            transport.write(b"read by nobody")
            os.close(pipe_fds.pop("r"))
            exc = await protocol.done
            transport.write(b"after")
            return transport, protocol, exc

        transport, protocol, exc = run(loop, main())
        assert exc is None
        assert protocol.events == ["made", "lost"]
        assert transport.is_closing()
        assert pipe.closed

    def test_reader_gone_with_data_buffered_is_a_broken_pipe(self, loop, pipe_fds):
        pipe = take(pipe_fds, "w", "wb")

        async def main():
            transport, protocol = await loop.connect_write_pipe(Recorder, pipe)
            transport.write(b"w" * BIG)
            assert transport.get_write_buffer_size() > 0
            os.close(pipe_fds.pop("r"))
            return transport, protocol, await protocol.done

        transport, protocol, exc = run(loop, main())
        assert isinstance(exc, BrokenPipeError)
        assert protocol.events == ["made", "pause", "lost"]
        assert transport.get_write_buffer_size() == 0

    def test_socket_peer_closing(self, loop):
        a, b = socket.socketpair()
        try:
            pipe = open(a.detach(), "wb", buffering=0)

            async def main():
                transport, protocol = await loop.connect_write_pipe(Recorder, pipe)
                transport.write(b"to the socket")
                assert b.recv(100) == b"to the socket"
                b.close()
                return protocol, await protocol.done

            protocol, exc = run(loop, main())
            assert exc is None
            assert protocol.events == ["made", "lost"]
            assert pipe.closed
        finally:
            b.close()

    def test_character_device(self, loop):
        pipe = open(os.devnull, "wb", buffering=0)

        async def main():
            transport, protocol = await loop.connect_write_pipe(Recorder, pipe)
            transport.write(b"n" * BIG)
            assert transport.get_write_buffer_size() == 0
            transport.close()
            return protocol, await protocol.done

        protocol, exc = run(loop, main())
        assert exc is None
        assert protocol.events == ["made", "lost"]
        assert pipe.closed


def test_repr(loop, pipe_fds):
    rpipe = take(pipe_fds, "r", "rb")
    wpipe = take(pipe_fds, "w", "wb")

    async def main():
        reader, rproto = await loop.connect_read_pipe(Recorder, rpipe)
        writer, wproto = await loop.connect_write_pipe(Recorder, wpipe)
        rfd, wfd = rpipe.fileno(), wpipe.fileno()
        assert f"fd={rfd} polling" in repr(reader)
        reader.pause_reading()
        assert f"fd={rfd} idle" in repr(reader)
        assert f"fd={wfd} idle bufsize=0" in repr(writer)
        writer.write(b"r" * BIG)
        size = writer.get_write_buffer_size()
        assert f"fd={wfd} polling bufsize={size}" in repr(writer)
        writer.abort()
        assert " closing " in repr(writer)
        reader.close()
        await rproto.done
        await wproto.done
        assert repr(reader).startswith(f"<{type(reader).__name__} closed fd={rfd}")
        assert repr(writer).startswith(f"<{type(writer).__name__} closed fd={wfd}")

    run(loop, main())


def test_debug_logs(loop, pipe_fds, caplog):
    pipe = take(pipe_fds, "r", "rb")
    fd = pipe.fileno()
    loop.set_debug(True)

    async def main():
        transport, protocol = await loop.connect_read_pipe(Recorder, pipe)
        os.close(pipe_fds.pop("w"))
        await protocol.done
        return transport, protocol

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        transport, protocol = run(loop, main())
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert any(m.startswith(f"Read pipe {fd} connected: (<{type(transport).__name__} ") for m in messages)
    assert any(m.endswith(" was closed by peer") for m in messages)


def test_unclosed_transport_warns_and_closes_the_pipe(loop, pipe_fds):
    rpipe = take(pipe_fds, "r", "rb")
    wpipe = take(pipe_fds, "w", "wb")

    async def main():
        reader, _ = await loop.connect_read_pipe(asyncio.Protocol, rpipe)
        writer, _ = await loop.connect_write_pipe(asyncio.Protocol, wpipe)
        return [reader, writer]

    transports = run(loop, main())
    names = [type(t).__name__ for t in transports]
    loop.close()
    for transport in transports:
        assert " open" in repr(transport)  # the loop is gone, the pipe is not
    gc.disable()  # the transports must be collected inside pytest.warns, not before
    try:
        with pytest.warns(ResourceWarning) as warned:
            del transports, transport
            gc.collect()
    finally:
        gc.enable()
    messages = [str(w.message) for w in warned if issubclass(w.category, ResourceWarning)]
    for name in names:
        assert any(m.startswith(f"unclosed transport <{name} fd=") for m in messages)
    assert rpipe.closed and wpipe.closed


def test_connection_lost_once_whatever_the_closing_calls(ferro_loop, pipe_fds):
    """The stock write transport calls connection_lost twice (then fails) on abort after close;
    ferroloop's calls it once."""
    loop = ferro_loop
    pipe = take(pipe_fds, "w", "wb")

    async def main():
        transport, protocol = await loop.connect_write_pipe(Recorder, pipe)
        transport.close()
        transport.abort()
        transport.abort()
        await protocol.done
        await spin()
        transport.abort()
        transport.close()
        return protocol

    assert run(loop, main()).events == ["made", "lost"]
