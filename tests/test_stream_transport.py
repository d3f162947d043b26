"""Parity tests for the TCP/Unix stream transport made by `loop._make_socket_transport`.

Every test runs on the stock loop (`selector_events._SelectorSocketTransport`) and on ferroloop
(`src/transports/stream/`); the stock runs prove that each assertion is the stock behaviour.
The transports are made straight over `socket.socketpair()` pairs and over TCP connections on
127.0.0.1 built with plain sockets, so nothing here depends on create_connection/create_server.

The far end of each connection (the "peer") is driven through the loop with add_reader/add_writer
(`PeerReader`, `peer_send`), never with blocking calls, so both directions make progress in the
one loop thread. A peer that "does not read" is simply a socket nobody reads: the kernel buffers
fill and the transport has to buffer the rest, which is what the flow-control tests need.

Nothing here measures time: waits are for outcomes (`run_until`) under a generous time limit, and
"nothing happens while paused" is checked over several loop iterations with data already sitting
in the socket, which a reading loop would have picked up in the first one.

Reference: CPython 3.11 asyncio selector_events (_SelectorTransport, _SelectorSocketTransport),
transports._FlowControlMixin, base_events._set_nodelay, constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES.
"""

import array
import asyncio
import contextvars
import gc
import logging
import os
import re
import socket
import struct
import subprocess
import sys
from asyncio import trsock

import pytest

import ferroloop
from util import TIMEOUT, run

MiB = 1024 * 1024
DEFAULT_LIMITS = (16 * 1024, 64 * 1024)  # (low, high) of a new transport
MAX_READ = 256 * 1024  # the most one data_received gets
TAG = contextvars.ContextVar("TAG", default="unset")  # for the context test


# -- helpers ---------------------------------------------------------------------------------


def run_until(loop, predicate, timeout=TIMEOUT):
    """Runs the loop until `predicate()` holds (a TimeoutError past `timeout`)."""

    async def poll():
        while not predicate():
            await asyncio.sleep(0.001)

    run(loop, poll(), timeout)


def spin(loop, iterations):
    """Runs exactly `iterations` loop iterations, each polling the fds."""
    for _ in range(iterations):
        loop.call_soon(loop.stop)
        loop.run_forever()


def tcp_connection(proto=socket.IPPROTO_TCP):
    """A connected pair of non-blocking TCP sockets on 127.0.0.1 (client, accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
        client.connect(listener.getsockname())
        accepted, _ = listener.accept()
    client.setblocking(False)
    accepted.setblocking(False)
    return client, accepted


def unix_connection():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


CONNECTIONS = {"unix": unix_connection, "tcp": tcp_connection}


class PeerReader:
    """Reads the peer socket through the loop until end of stream; `done` gets every byte."""

    def __init__(self, loop, sock):
        self._loop = loop
        self._sock = sock
        self.data = bytearray()
        self.done = loop.create_future()
        loop.add_reader(sock, self._on_readable)

    def _on_readable(self):
        try:
            chunk = self._sock.recv(MiB)
        except BlockingIOError:
            return
        except OSError as exc:
            self._loop.remove_reader(self._sock)
            self.done.set_exception(exc)
            return
        if chunk:
            self.data += chunk
        else:
            self._loop.remove_reader(self._sock)
            self.done.set_result(bytes(self.data))


def peer_send(loop, sock, data, *, shutdown=False):
    """Sends `data` from the peer socket through the loop, then shuts its write side down if
    asked; the future returned is done once all of it is sent."""
    done = loop.create_future()
    view = memoryview(data)
    sent = 0

    def on_writable():
        nonlocal sent
        try:
            sent += sock.send(view[sent:])
        except BlockingIOError:
            return
        if sent == len(view):
            loop.remove_writer(sock)
            if shutdown:
                sock.shutdown(socket.SHUT_WR)
            done.set_result(None)

    loop.add_writer(sock, on_writable)
    return done


def fill_until_buffered(transport, chunk=b"f" * 16384, limit=5000):
    """Writes `chunk` while the kernel takes everything (the peer does not read) and once more
    after the transport starts buffering; returns the number of bytes written."""
    written = 0
    for _ in range(limit):
        transport.write(chunk)
        written += len(chunk)
        if transport.get_write_buffer_size():
            return written
    raise AssertionError("the socket never stopped taking data")


class Lifecycle:
    """The callbacks common to both protocol kinds, recorded in `events` (a list that may be
    shared with the test); `lost` is done with connection_lost's argument."""

    def __init__(self, loop, events=None, keep_open=None):
        self.loop = loop
        self.events = [] if events is None else events
        self.keep_open = keep_open
        self.transport = None
        self.lost = loop.create_future()
        self.write_sizes = {}  # "pause"/"resume" -> the buffer size when it was called

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def eof_received(self):
        self.events.append("eof")
        return self.keep_open

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self):
        self.events.append("pause")
        self.write_sizes["pause"] = self.transport.get_write_buffer_size()

    def resume_writing(self):
        self.events.append("resume")
        self.write_sizes["resume"] = self.transport.get_write_buffer_size()

    def _note_data(self):
        if not self.events or self.events[-1] != "data":
            self.events.append("data")

    def losses(self):
        return [event[1] for event in self.events if isinstance(event, tuple)]


class Recorder(Lifecycle, asyncio.Protocol):
    def __init__(self, loop, events=None, keep_open=None):
        super().__init__(loop, events, keep_open)
        self.chunks = []

    def data_received(self, data):
        self.chunks.append(data)
        self._note_data()

    @property
    def data(self):
        return b"".join(self.chunks)


class BufferedRecorder(Lifecycle, asyncio.BufferedProtocol):
    def __init__(self, loop, size=64 * 1024, events=None, keep_open=None):
        super().__init__(loop, events, keep_open)
        self.buffer = bytearray(size)
        self.hints = []
        self.updates = []
        self.data = bytearray()

    def get_buffer(self, sizehint):
        self.hints.append(sizehint)
        return self.buffer

    def buffer_updated(self, nbytes):
        self.updates.append(nbytes)
        self.data += self.buffer[:nbytes]
        self._note_data()


@pytest.fixture(params=sorted(CONNECTIONS))
def pair(request):
    """A connected pair (transport end, peer end): a Unix socketpair or a TCP connection."""
    a, b = CONNECTIONS[request.param]()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def tcp_pair():
    a, b = tcp_connection()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def unix_pair():
    a, b = unix_connection()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def opened(loop):
    """`opened(sock, protocol=None, **kwargs)` makes a transport on `loop` (a `Recorder` when no
    protocol is given) and returns (transport, protocol); any transport a failing test leaves
    open is aborted at teardown, so none outlives its loop."""
    made = []

    def make(sock, protocol=None, **kwargs):
        protocol = Recorder(loop) if protocol is None else protocol
        transport = loop._make_socket_transport(sock, protocol, **kwargs)
        made.append(transport)
        return transport, protocol

    yield make
    if not loop.is_closed() and not loop.is_running():
        for transport in made:
            if not transport.is_closing():
                transport.abort()
        spin(loop, 2)


@pytest.fixture
def handler_calls(loop):
    """The contexts the loop's exception handler receives."""
    calls = []
    loop.set_exception_handler(lambda lp, context: calls.append(context))
    return calls


def connect(loop, opened, sock, protocol=None, **kwargs):
    """A transport whose connection_made has run."""
    transport, protocol = opened(sock, protocol, **kwargs)
    run_until(loop, lambda: protocol.transport is not None)
    return transport, protocol


def close_and_wait(loop, transport, protocol):
    transport.close()
    run(loop, protocol.lost)


# -- callback order --------------------------------------------------------------------------


def test_connection_made_then_waiter_all_from_call_soon(loop, unix_pair, opened):
    a, _ = unix_pair
    order = []
    loop.call_soon(order.append, "before")
    waiter = loop.create_future()
    waiter.add_done_callback(lambda _: order.append("waiter"))
    transport, protocol = opened(a, Recorder(loop, events=order), waiter=waiter)
    loop.call_soon(order.append, "after")
    assert order == []
    assert run(loop, waiter) is None
    # The waiter's result is set in the callback queued at creation, so its own done callback
    # comes after anything queued right after creation.
    assert order == ["before", "made", "after", "waiter"]
    assert protocol.transport is transport
    close_and_wait(loop, transport, protocol)


def test_cancelled_waiter_is_left_alone(loop, unix_pair, opened, handler_calls):
    a, _ = unix_pair
    waiter = loop.create_future()
    waiter.cancel()
    transport, protocol = connect(loop, opened, a, waiter=waiter)
    spin(loop, 2)
    assert waiter.cancelled()
    assert handler_calls == []
    assert not transport.is_closing()
    close_and_wait(loop, transport, protocol)


def test_no_data_before_connection_made_even_if_peer_wrote_first(loop, pair, opened):
    a, b = pair
    b.send(b"early")
    transport, protocol = opened(a)
    run_until(loop, lambda: protocol.data == b"early")
    assert protocol.events == ["made", "data"]
    close_and_wait(loop, transport, protocol)


def test_close_before_connection_made_still_makes_then_loses(loop, pair, opened):
    a, _ = pair
    transport, protocol = opened(a)
    transport.close()
    assert transport.is_closing()
    assert run(loop, protocol.lost) is None
    spin(loop, 2)
    assert protocol.events == ["made", ("lost", None)]


def test_is_closing_and_protocol_through_the_lifecycle(loop, pair, opened):
    a, _ = pair
    transport, protocol = opened(a)
    assert not transport.is_closing()
    assert transport.get_protocol() is protocol
    run_until(loop, lambda: protocol.transport is not None)
    assert not transport.is_closing()
    transport.close()
    assert transport.is_closing()
    run(loop, protocol.lost)
    assert transport.is_closing()
    # The stock transport lets go of its protocol once connection_lost has run.
    assert transport.get_protocol() is None


def test_abort_sets_closing_at_once(loop, pair, opened):
    a, _ = pair
    transport, protocol = connect(loop, opened, a)
    transport.abort()
    assert transport.is_closing()
    assert not transport.is_reading()
    assert run(loop, protocol.lost) is None


def test_transport_is_an_asyncio_transport(loop, unix_pair, opened):
    a, _ = unix_pair
    transport, protocol = connect(loop, opened, a)
    assert isinstance(transport, asyncio.Transport)
    assert isinstance(transport, asyncio.ReadTransport)
    assert isinstance(transport, asyncio.WriteTransport)
    close_and_wait(loop, transport, protocol)


def test_repr_tracks_state(loop, unix_pair, opened):
    a, _ = unix_pair
    fd = a.fileno()
    transport, protocol = connect(loop, opened, a)
    text = repr(transport)
    assert f" fd={fd} read=polling write=<idle, bufsize=0>>" in text
    transport.pause_reading()
    assert " read=idle " in repr(transport)
    transport.close()
    assert f" closing fd={fd} " in repr(transport)
    run(loop, protocol.lost)
    assert repr(transport).endswith(f" closed fd={fd}>")


def test_server_attached_at_creation_and_detached_after_connection_lost(loop, pair, opened):
    a, _ = pair
    events = []

    class Server:
        def _attach(self, *args):
            events.append("attach")

        def _detach(self, *args):
            events.append("detach")

    transport, protocol = opened(a, Recorder(loop, events=events), server=Server())
    assert events == ["attach"]
    run_until(loop, lambda: protocol.transport is not None)
    close_and_wait(loop, transport, protocol)
    assert events == ["attach", "made", ("lost", None), "detach"]


def test_write_before_connection_made_is_sent(loop, pair, opened):
    a, b = pair
    transport, protocol = opened(a)
    transport.write(b"first")
    transport.close()
    assert run(loop, PeerReader(loop, b).done) == b"first"
    assert run(loop, protocol.lost) is None
    assert protocol.events == ["made", ("lost", None)]


def test_set_protocol_before_connection_made(loop, pair, opened):
    a, b = pair
    first = Recorder(loop)
    second = Recorder(loop)
    transport, _ = opened(a, first)
    transport.set_protocol(second)
    # connection_made was queued for the protocol given at creation; the rest goes to the new one.
    run_until(loop, lambda: first.transport is transport)
    run(loop, peer_send(loop, b, b"data", shutdown=True))
    assert run(loop, second.lost) is None
    assert first.events == ["made"]
    assert second.events == ["data", "eof", ("lost", None)]
    assert second.data == b"data"


def test_private_socket_attributes(loop, pair, opened):
    a, _ = pair
    fd = a.fileno()
    transport, protocol = connect(loop, opened, a)
    assert transport._sock is a
    assert transport._sock_fd == fd
    close_and_wait(loop, transport, protocol)
    assert transport._sock is None
    assert transport._sock_fd == fd
    assert a.fileno() == -1


# -- data integrity --------------------------------------------------------------------------


def test_many_writes_then_close_deliver_every_byte(loop, pair, opened):
    a, b = pair
    transport, protocol = connect(loop, opened, a)
    chunks = [bytes([i % 251]) * (1 + (i * 7919) % 4096) for i in range(3000)]
    reader = PeerReader(loop, b)
    for chunk in chunks:
        transport.write(chunk)
    transport.close()
    assert transport.is_closing()
    assert run(loop, reader.done) == b"".join(chunks)
    assert run(loop, protocol.lost) is None
    spin(loop, 3)
    assert protocol.losses() == [None]
    assert protocol.events[-1] == ("lost", None)
    assert transport.get_write_buffer_size() == 0


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_large_write_then_close_flushes_before_connection_lost(loop, pair, opened, kind):
    a, b = pair
    transport, protocol = connect(loop, opened, a)
    payload = os.urandom(8 * MiB)
    transport.write(kind(payload))
    transport.close()
    assert transport.is_closing()
    reader = PeerReader(loop, b)
    assert run(loop, reader.done) == payload
    assert run(loop, protocol.lost) is None
    spin(loop, 3)
    # Whatever the kernel did not take at once went past the high-water mark, and draining it
    # while closing still resumes the protocol before connection_lost.
    assert protocol.events in (
        ["made", ("lost", None)],
        ["made", "pause", "resume", ("lost", None)],
    )


def test_write_while_close_is_flushing_is_delivered(loop, pair, opened):
    a, b = pair
    transport, protocol = connect(loop, opened, a)
    written = fill_until_buffered(transport)
    transport.close()
    transport.write(b"late")
    reader = PeerReader(loop, b)
    assert run(loop, reader.done) == b"f" * written + b"late"
    assert run(loop, protocol.lost) is None


def test_a_producer_paced_by_flow_control_delivers_everything(loop, pair, opened):
    # Writes until paused, three times over (how much the kernel takes first varies: TCP
    # autotuning may take megabytes), then closes; every byte arrives.
    a, b = pair
    chunk = b"p" * 10000
    pauses = 3

    class Producer(Recorder):
        sent = 0

        def produce(self):
            while self.events.count("pause") < pauses:
                if self.events[-1] == "pause":
                    return
                self.sent += 1
                self.transport.write(chunk)
            self.transport.close()

        def resume_writing(self):
            super().resume_writing()
            self.produce()

    protocol = Producer(loop)
    transport, _ = connect(loop, opened, a, protocol)
    protocol.produce()
    reader = PeerReader(loop, b)
    assert run(loop, reader.done) == chunk * protocol.sent
    assert run(loop, protocol.lost) is None
    assert protocol.events.count("pause") == protocol.events.count("resume") == pauses
    assert protocol.events[-1] == ("lost", None)


def test_eof_on_a_closing_transport_waits_for_the_buffer(loop, pair, opened):
    a, b = pair
    transport, protocol = connect(loop, opened, a)
    written = fill_until_buffered(transport)
    b.shutdown(socket.SHUT_WR)
    run_until(loop, lambda: "eof" in protocol.events)
    # eof_received returned None: the transport closes, but only after its buffer drains.
    assert transport.is_closing()
    spin(loop, 3)
    assert not protocol.lost.done()
    reader = PeerReader(loop, b)
    assert run(loop, reader.done) == b"f" * written
    assert run(loop, protocol.lost) is None
    assert protocol.events == ["made", "eof", ("lost", None)]


def test_peer_data_arrives_whole_in_reads_of_at_most_256_kib(loop, pair, opened):
    a, b = pair
    transport, protocol = connect(loop, opened, a)
    payload = os.urandom(4 * MiB)
    run(loop, peer_send(loop, b, payload, shutdown=True))
    assert run(loop, protocol.lost) is None
    assert protocol.data == payload
    assert max(len(chunk) for chunk in protocol.chunks) <= MAX_READ
    assert {type(chunk) for chunk in protocol.chunks} == {bytes}
    assert protocol.events == ["made", "data", "eof", ("lost", None)]
    assert transport.is_closing()


def test_one_read_takes_everything_waiting_after_small_messages(loop, pair, opened):
    # One event reads what one 256 KiB recv would, even right after small reads (ferroloop
    # sizes its buffer by the previous reads and must grow it when more is waiting).
    a, b = pair
    transport, protocol = connect(loop, opened, a)
    b.send(b"small")
    run_until(loop, lambda: protocol.data == b"small")
    transport.pause_reading()
    payload = os.urandom(60000)
    sent = 0
    while sent < len(payload):
        sent += b.send(payload[sent:])
    transport.resume_reading()
    run_until(loop, lambda: len(protocol.data) == 5 + len(payload))
    assert protocol.chunks == [b"small", payload]
    close_and_wait(loop, transport, protocol)


def test_reads_run_in_the_transports_own_context(loop, opened):
    # As stock: data_received sees the variables current when the transport was made, what it
    # sets stays for the transport's next reads, and no other transport sees it.
    class Tagging(Recorder):
        def __init__(self, loop):
            super().__init__(loop)
            self.seen = []

        def data_received(self, data):
            super().data_received(data)
            self.seen.append(TAG.get())
            TAG.set(data.decode())

    pairs = [socket.socketpair() for _ in range(2)]

    def body():
        TAG.set("made")
        made = [connect(loop, opened, a, Tagging(loop)) for a, _ in pairs]
        TAG.set("later")
        for count, message in enumerate(("one", "two"), 1):
            for index, (_, b) in enumerate(pairs):
                b.send(f"{message}{index}".encode())
            run_until(loop, lambda: all(len(p.seen) == count for _, p in made))
        for transport, protocol in made:
            close_and_wait(loop, transport, protocol)
        return [p.seen for _, p in made]

    try:
        assert contextvars.copy_context().run(body) == [["made", "one0"], ["made", "one1"]]
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_bytearray_and_memoryview_data(loop, pair, opened):
    a, b = pair
    transport, protocol = connect(loop, opened, a)
    transport.write(bytearray(b"ab"))
    transport.write(memoryview(b"xcdx")[1:3])
    transport.write(memoryview(bytearray(b"ef")))
    transport.writelines([b"g", bytearray(b"h"), memoryview(b"i")])
    reader = PeerReader(loop, b)
    transport.close()
    assert run(loop, reader.done) == b"abcdefghi"
    assert run(loop, protocol.lost) is None


def test_buffered_bytearray_is_copied_at_write(loop, pair, opened):
    a, b = pair
    transport, protocol = connect(loop, opened, a)
    written = fill_until_buffered(transport)
    data = bytearray(b"A" * 1000)
    transport.write(data)
    data[:] = b"B" * 1000
    reader = PeerReader(loop, b)
    transport.close()
    got = run(loop, reader.done)
    if isinstance(loop, asyncio.BaseEventLoop) and sys.version_info >= (3, 12):
        # From 3.12 the stock transport buffers the caller's object itself, so a change made
        # after write() is what goes out; ferroloop sends what was written (README).
        assert got in (b"f" * written + b"A" * 1000, b"f" * written + b"B" * 1000)
    else:
        assert got == b"f" * written + b"A" * 1000
    assert run(loop, protocol.lost) is None


# -- end of stream ---------------------------------------------------------------------------


def test_eof_received_true_keeps_the_transport_writable(loop, pair, opened):
    a, b = pair
    transport, protocol = connect(loop, opened, a, Recorder(loop, keep_open=True))
    run(loop, peer_send(loop, b, b"ping", shutdown=True))
    run_until(loop, lambda: "eof" in protocol.events)
    spin(loop, 3)
    assert not transport.is_closing()
    assert not protocol.lost.done()
    # The stock transport stops reading at EOF without marking itself paused.
    assert transport.is_reading()
    transport.write(b"pong")
    reader = PeerReader(loop, b)
    run_until(loop, lambda: reader.data == b"pong")
    assert not reader.done.done()
    transport.close()
    assert run(loop, reader.done) == b"pong"
    assert run(loop, protocol.lost) is None
    assert protocol.events == ["made", "data", "eof", ("lost", None)]


@pytest.mark.parametrize("keep_open", [None, False, 0, b""])
def test_eof_received_falsy_closes(loop, pair, opened, keep_open):
    a, b = pair
    transport, protocol = connect(loop, opened, a, Recorder(loop, keep_open=keep_open))
    b.shutdown(socket.SHUT_WR)
    assert run(loop, protocol.lost) is None
    assert transport.is_closing()
    assert protocol.events == ["made", "eof", ("lost", None)]
    assert run(loop, PeerReader(loop, b).done) == b""


def test_write_eof_half_closes_and_reading_goes_on(loop, pair, opened):
    a, b = pair
    transport, protocol = connect(loop, opened, a)
    assert transport.can_write_eof() is True
    transport.write(b"last")
    transport.write_eof()
    transport.write_eof()
    assert not transport.is_closing()
    assert run(loop, PeerReader(loop, b).done) == b"last"
    run(loop, peer_send(loop, b, b"more", shutdown=True))
    assert run(loop, protocol.lost) is None
    assert protocol.data == b"more"
    assert protocol.events == ["made", "data", "eof", ("lost", None)]


def test_write_eof_waits_for_the_buffer(loop, pair, opened):
    a, b = pair
    transport, protocol = connect(loop, opened, a)
    written = fill_until_buffered(transport)
    transport.write_eof()
    assert transport.get_write_buffer_size() > 0
    assert run(loop, PeerReader(loop, b).done) == b"f" * written
    assert not transport.is_closing()
    close_and_wait(loop, transport, protocol)


def test_write_eof_after_close_is_ignored(loop, pair, opened):
    a, b = pair
    transport, protocol = connect(loop, opened, a)
    transport.close()
    transport.write_eof()
    assert run(loop, protocol.lost) is None
    assert run(loop, PeerReader(loop, b).done) == b""


# -- flow control ----------------------------------------------------------------------------


def test_pause_writing_once_above_high_water_and_resume_once_below_low(loop, pair, opened):
    a, b = pair
    transport, protocol = connect(loop, opened, a)
    low, high = transport.get_write_buffer_limits()
    assert (low, high) == DEFAULT_LIMITS
    chunk = b"w" * 16384
    written = 0
    while "pause" not in protocol.events:
        transport.write(chunk)
        written += len(chunk)
        assert written < 256 * MiB
    assert high < protocol.write_sizes["pause"] <= high + len(chunk)
    assert transport.get_write_buffer_size() <= high + len(chunk)
    # More writes while paused are buffered without another pause_writing.
    for _ in range(3):
        transport.write(chunk)
        written += len(chunk)
    assert protocol.events.count("pause") == 1
    assert "resume" not in protocol.events
    reader = PeerReader(loop, b)
    run_until(loop, lambda: "resume" in protocol.events)
    assert protocol.write_sizes["resume"] <= low
    transport.close()
    assert run(loop, reader.done) == chunk * (written // len(chunk))
    assert run(loop, protocol.lost) is None
    assert protocol.events == ["made", "pause", "resume", ("lost", None)]


def test_close_while_paused_resumes_before_connection_lost(loop, pair, opened):
    a, b = pair
    transport, protocol = connect(loop, opened, a)
    written = 0
    while "pause" not in protocol.events:
        transport.write(b"c" * 16384)
        written += 16384
        assert written < 256 * MiB
    transport.close()
    reader = PeerReader(loop, b)
    assert run(loop, reader.done) == b"c" * written
    assert run(loop, protocol.lost) is None
    assert protocol.events == ["made", "pause", "resume", ("lost", None)]


def test_set_write_buffer_limits_values(loop, unix_pair, opened):
    a, _ = unix_pair
    transport, protocol = connect(loop, opened, a)
    assert transport.get_write_buffer_limits() == DEFAULT_LIMITS
    transport.set_write_buffer_limits(high=100)
    assert transport.get_write_buffer_limits() == (25, 100)
    transport.set_write_buffer_limits(low=10)
    assert transport.get_write_buffer_limits() == (10, 40)
    transport.set_write_buffer_limits(high=10, low=5)
    assert transport.get_write_buffer_limits() == (5, 10)
    transport.set_write_buffer_limits(high=3)
    assert transport.get_write_buffer_limits() == (0, 3)
    transport.set_write_buffer_limits(0, 0)
    assert transport.get_write_buffer_limits() == (0, 0)
    transport.set_write_buffer_limits()
    assert transport.get_write_buffer_limits() == DEFAULT_LIMITS
    close_and_wait(loop, transport, protocol)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"high": 1, "low": 2}, "high (1) must be >= low (2) must be >= 0"),
        ({"low": -1}, "high (-4) must be >= low (-1) must be >= 0"),
        ({"high": -1}, "high (-1) must be >= low (-1) must be >= 0"),
        ({"high": 5, "low": -1}, "high (5) must be >= low (-1) must be >= 0"),
    ],
)
def test_set_write_buffer_limits_rejects_bad_values(loop, unix_pair, opened, kwargs, message):
    a, _ = unix_pair
    transport, protocol = connect(loop, opened, a)
    transport.set_write_buffer_limits(high=200, low=50)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        transport.set_write_buffer_limits(**kwargs)
    assert transport.get_write_buffer_limits() == (50, 200)
    close_and_wait(loop, transport, protocol)


def test_lowering_the_high_water_mark_pauses_at_once(loop, pair, opened):
    a, b = pair
    transport, protocol = connect(loop, opened, a)
    written = fill_until_buffered(transport, chunk=b"f" * 1024)
    assert transport.get_write_buffer_size() <= 1024
    assert "pause" not in protocol.events
    transport.set_write_buffer_limits(high=0)
    assert protocol.events == ["made", "pause"]
    reader = PeerReader(loop, b)
    run_until(loop, lambda: "resume" in protocol.events)
    assert protocol.write_sizes["resume"] == 0
    transport.close()
    assert run(loop, reader.done) == b"f" * written
    assert run(loop, protocol.lost) is None
    assert protocol.events == ["made", "pause", "resume", ("lost", None)]


@pytest.mark.parametrize("method", ["pause_writing", "resume_writing"])
def test_flow_control_callback_raising_goes_to_handler(loop, pair, opened, handler_calls, method):
    a, b = pair
    error = ZeroDivisionError(method)

    class Failing(Recorder):
        pass

    def fail(self):
        getattr(Recorder, method)(self)
        raise error

    setattr(Failing, method, fail)
    transport, protocol = connect(loop, opened, a, Failing(loop))
    chunk = b"w" * 16384
    written = 0
    while "pause" not in protocol.events:
        transport.write(chunk)
        written += len(chunk)
        assert written < 256 * MiB
    reader = PeerReader(loop, b)
    run_until(loop, lambda: "resume" in protocol.events)
    # Writing goes on: the failure is reported, the transport stays open.
    assert not transport.is_closing()
    transport.write(b"tail")
    transport.close()
    assert run(loop, reader.done) == chunk * (written // len(chunk)) + b"tail"
    assert run(loop, protocol.lost) is None
    assert handler_calls == [
        {
            "message": f"protocol.{method}() failed",
            "exception": error,
            "transport": transport,
            "protocol": protocol,
        }
    ]
    assert handler_calls[0]["exception"] is error
    assert handler_calls[0]["transport"] is transport


# -- reading pause ---------------------------------------------------------------------------


def test_pause_reading_holds_data_until_resume(loop, pair, opened):
    a, b = pair
    transport, protocol = connect(loop, opened, a)
    assert transport.is_reading()
    transport.pause_reading()
    assert not transport.is_reading()
    transport.pause_reading()
    assert not transport.is_reading()
    b.send(b"held")
    spin(loop, 5)
    assert protocol.chunks == []
    transport.resume_reading()
    assert transport.is_reading()
    transport.resume_reading()
    run_until(loop, lambda: protocol.data == b"held")
    close_and_wait(loop, transport, protocol)


def test_pause_reading_before_connection_made_is_honoured(loop, pair, opened):
    a, b = pair
    b.send(b"early")
    transport, protocol = opened(a)
    transport.pause_reading()
    spin(loop, 5)
    assert protocol.events == ["made"]
    transport.resume_reading()
    run_until(loop, lambda: protocol.data == b"early")
    close_and_wait(loop, transport, protocol)


def test_reading_stops_for_good_on_close(loop, pair, opened):
    a, b = pair
    transport, protocol = connect(loop, opened, a)
    transport.pause_reading()
    transport.close()
    assert not transport.is_reading()
    transport.resume_reading()
    assert not transport.is_reading()
    transport.pause_reading()
    assert run(loop, protocol.lost) is None
    assert not transport.is_reading()
    assert protocol.events == ["made", ("lost", None)]


# -- BufferedProtocol ------------------------------------------------------------------------


def test_buffered_protocol_receives_everything(loop, pair, opened):
    a, b = pair
    protocol = BufferedRecorder(loop)
    transport, _ = connect(loop, opened, a, protocol)
    payload = os.urandom(2 * MiB)
    run(loop, peer_send(loop, b, payload, shutdown=True))
    assert run(loop, protocol.lost) is None
    assert bytes(protocol.data) == payload
    assert set(protocol.hints) == {-1}
    assert sum(protocol.updates) == len(payload)
    assert all(0 < n <= len(protocol.buffer) for n in protocol.updates)
    # One get_buffer per read, the one that found end of stream included.
    assert len(protocol.hints) == len(protocol.updates) + 1
    assert protocol.events == ["made", "data", "eof", ("lost", None)]
    assert transport.is_closing()


def test_buffered_protocol_with_a_small_buffer(loop, pair, opened):
    a, b = pair
    protocol = BufferedRecorder(loop, size=7)
    connect(loop, opened, a, protocol)
    payload = os.urandom(10000)
    run(loop, peer_send(loop, b, payload, shutdown=True))
    assert run(loop, protocol.lost) is None
    assert bytes(protocol.data) == payload
    assert all(0 < n <= 7 for n in protocol.updates)
    assert len(protocol.updates) >= len(payload) // 7


def test_buffered_protocol_memoryview_buffer(loop, pair, opened):
    a, b = pair

    class ViewRecorder(BufferedRecorder):
        def get_buffer(self, sizehint):
            super().get_buffer(sizehint)
            return memoryview(self.buffer)[:5]

    protocol = ViewRecorder(loop)
    connect(loop, opened, a, protocol)
    run(loop, peer_send(loop, b, b"0123456789abc", shutdown=True))
    assert run(loop, protocol.lost) is None
    assert bytes(protocol.data) == b"0123456789abc"
    assert protocol.updates == [5, 5, 3]


def test_buffered_protocol_empty_buffer_is_fatal(loop, pair, opened, handler_calls):
    a, b = pair

    class Empty(BufferedRecorder):
        def get_buffer(self, sizehint):
            super().get_buffer(sizehint)
            return bytearray()

    protocol = Empty(loop)
    transport, _ = connect(loop, opened, a, protocol)
    b.send(b"x")
    exc = run(loop, protocol.lost)
    assert type(exc) is RuntimeError
    assert str(exc) == "get_buffer() returned an empty buffer"
    assert handler_calls == [
        {
            "message": "Fatal error: protocol.get_buffer() call failed.",
            "exception": exc,
            "transport": transport,
            "protocol": protocol,
        }
    ]
    assert handler_calls[0]["exception"] is exc
    assert transport.is_closing()
    assert protocol.events == ["made", ("lost", exc)]


@pytest.mark.parametrize("method", ["get_buffer", "buffer_updated"])
def test_buffered_protocol_callback_raising_is_fatal(loop, pair, opened, handler_calls, method):
    a, b = pair
    error = LookupError(method)

    class Failing(BufferedRecorder):
        pass

    def fail(self, arg):
        raise error

    setattr(Failing, method, fail)
    protocol = Failing(loop)
    transport, _ = connect(loop, opened, a, protocol)
    b.send(b"x")
    assert run(loop, protocol.lost) is error
    assert len(handler_calls) == 1
    context = handler_calls[0]
    assert context == {
        "message": f"Fatal error: protocol.{method}() call failed.",
        "exception": error,
        "transport": transport,
        "protocol": protocol,
    }
    assert context["exception"] is error
    spin(loop, 2)
    assert protocol.losses() == [error]


def test_buffered_protocol_read_only_buffer_is_a_fatal_type_error(
    loop, pair, opened, handler_calls
):
    a, b = pair

    class ReadOnly(BufferedRecorder):
        def get_buffer(self, sizehint):
            super().get_buffer(sizehint)
            return b"read-only"

    protocol = ReadOnly(loop)
    transport, _ = connect(loop, opened, a, protocol)
    b.send(b"x")
    exc = run(loop, protocol.lost)
    assert type(exc) is TypeError
    assert handler_calls == [
        {
            "message": "Fatal read error on socket transport",
            "exception": exc,
            "transport": transport,
            "protocol": protocol,
        }
    ]


@pytest.mark.parametrize("kind", ["plain", "buffered"])
def test_protocol_methods_are_looked_up_at_each_read(loop, pair, opened, kind):
    a, b = pair
    seen = []
    if kind == "plain":
        protocol = Recorder(loop)
        transport, _ = connect(loop, opened, a, protocol)
        protocol.data_received = seen.append
    else:
        protocol = BufferedRecorder(loop, size=16)
        transport, _ = connect(loop, opened, a, protocol)
        protocol.get_buffer = lambda sizehint: memoryview(protocol.buffer)[:2]
        protocol.buffer_updated = seen.append
    b.send(b"x")
    run_until(loop, lambda: seen or protocol.events[-1] == "data")
    assert seen == ([b"x"] if kind == "plain" else [1])
    assert protocol.events == ["made"]
    close_and_wait(loop, transport, protocol)


def test_set_protocol_switches_kinds_mid_stream(loop, pair, opened):
    a, b = pair
    first = Recorder(loop)
    second = BufferedRecorder(loop, size=1024)
    third = Recorder(loop)
    transport, _ = connect(loop, opened, a, first)
    run(loop, peer_send(loop, b, b"one"))
    run_until(loop, lambda: first.data == b"one")
    transport.set_protocol(second)
    assert transport.get_protocol() is second
    run(loop, peer_send(loop, b, b"two"))
    run_until(loop, lambda: second.data == b"two")
    assert set(second.hints) == {-1}
    transport.set_protocol(third)
    assert transport.get_protocol() is third
    run(loop, peer_send(loop, b, b"three", shutdown=True))
    assert run(loop, third.lost) is None
    assert first.data == b"one"
    assert second.data == b"two"
    assert third.data == b"three"
    # set_protocol does not call connection_made; the end goes to the protocol of the moment.
    assert first.events == ["made", "data"]
    assert second.events == ["data"]
    assert third.events == ["data", "eof", ("lost", None)]


# -- write() arguments -----------------------------------------------------------------------

NOT_BYTES = [("text", "str"), (1, "int"), (None, "NoneType"), (array.array("b", b"ab"), "array")]


def test_write_rejects_non_bytes_with_a_type_error(loop, unix_pair, opened):
    a, b = unix_pair
    transport, protocol = connect(loop, opened, a)
    for value, _ in NOT_BYTES:
        with pytest.raises(TypeError):
            transport.write(value)
    assert transport.get_write_buffer_size() == 0
    assert not transport.is_closing()
    transport.write(b"ok")
    transport.close()
    assert run(loop, PeerReader(loop, b).done) == b"ok"
    assert run(loop, protocol.lost) is None


# What the stock `write` names in its TypeError (reworded in 3.14).
WRITE_TYPES = "a bytes, bytearray, or memoryview object" if sys.version_info >= (3, 14) else "a bytes-like object"


def test_write_type_error_message(loop, unix_pair, opened):
    a, _ = unix_pair
    transport, protocol = connect(loop, opened, a)
    for value, name in NOT_BYTES:
        with pytest.raises(TypeError) as info:
            transport.write(value)
        assert str(info.value) == f"data argument must be {WRITE_TYPES}, not '{name}'"
    close_and_wait(loop, transport, protocol)


def test_write_binds_its_argument_as_a_python_method_would(loop, unix_pair, opened):
    a, b = unix_pair
    transport, protocol = connect(loop, opened, a)
    transport.write(b"a")
    transport.write(data=b"b")
    type(transport).write(transport, b"c")
    type(transport).write(transport, data=bytearray(b"d"))
    bad_calls = [
        (lambda: transport.write(), "missing 1 required positional argument: 'data'"),
        (lambda: transport.write(b"x", b"y"), "positional argument"),
        (lambda: transport.write(b"x", data=b"y"), "multiple values for argument 'data'"),
        (lambda: transport.write(dat=b"x"), "unexpected keyword argument 'dat'"),
    ]
    for call, words in bad_calls:
        with pytest.raises(TypeError, match=re.escape(words)):
            call()
    assert transport.get_write_buffer_size() == 0
    transport.close()
    assert run(loop, PeerReader(loop, b).done) == b"abcd"
    assert run(loop, protocol.lost) is None


def test_non_contiguous_memoryview_is_a_fatal_write_error(
    loop, unix_pair, opened, handler_calls
):
    a, _ = unix_pair
    transport, protocol = connect(loop, opened, a)
    transport.write(memoryview(b"abcdef")[::2])
    exc = run(loop, protocol.lost)
    assert type(exc) is BufferError
    assert handler_calls == [
        {
            "message": "Fatal write error on socket transport",
            "exception": exc,
            "transport": transport,
            "protocol": protocol,
        }
    ]


def test_write_after_write_eof_raises(loop, unix_pair, opened):
    a, _ = unix_pair
    transport, protocol = connect(loop, opened, a)
    transport.write_eof()
    for data in (b"x", b"", bytearray(b"y")):
        with pytest.raises(RuntimeError, match=r"^Cannot call write\(\) after write_eof\(\)$"):
            transport.write(data)
    # The type check comes first.
    with pytest.raises(TypeError):
        transport.write("x")
    close_and_wait(loop, transport, protocol)


def test_empty_writes_do_nothing(loop, pair, opened):
    a, _ = pair
    transport, protocol = connect(loop, opened, a)
    fill_until_buffered(transport)
    size = transport.get_write_buffer_size()
    for empty in (b"", bytearray(), memoryview(b"")):
        transport.write(empty)
    assert transport.get_write_buffer_size() == size
    transport.abort()
    assert run(loop, protocol.lost) is None


# -- abort and close -------------------------------------------------------------------------


def test_abort_drops_the_buffer(loop, pair, opened):
    a, b = pair
    transport, protocol = connect(loop, opened, a)
    written = fill_until_buffered(transport)
    transport.write(b"d" * MiB)
    written += MiB
    transport.abort()
    assert transport.is_closing()
    assert transport.get_write_buffer_size() == 0
    transport.abort()
    transport.close()
    assert run(loop, protocol.lost) is None
    received = run(loop, PeerReader(loop, b).done)
    assert len(received) < written
    assert received == b"f" * len(received)
    spin(loop, 3)
    # The buffer is dropped, not drained: no resume_writing.
    assert protocol.events == ["made", "pause", ("lost", None)]


def test_abort_after_close_drops_what_close_was_flushing(loop, pair, opened):
    a, b = pair
    transport, protocol = connect(loop, opened, a)
    written = fill_until_buffered(transport)
    transport.close()
    spin(loop, 2)
    assert not protocol.lost.done()
    transport.abort()
    assert transport.get_write_buffer_size() == 0
    assert run(loop, protocol.lost) is None
    assert len(run(loop, PeerReader(loop, b).done)) < written
    spin(loop, 3)
    assert protocol.losses() == [None]


def test_close_twice_loses_the_connection_once(loop, pair, opened):
    a, _ = pair
    transport, protocol = connect(loop, opened, a)
    transport.close()
    transport.close()
    assert run(loop, protocol.lost) is None
    transport.close()
    spin(loop, 3)
    assert protocol.losses() == [None]


# -- errors ----------------------------------------------------------------------------------


def test_peer_reset_mid_write_is_a_quiet_oserror(loop, pair, opened, handler_calls):
    a, b = pair
    if b.family == socket.AF_INET:
        # A zero linger makes close() send a reset instead of a FIN.
        b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport, protocol = connect(loop, opened, a)
    fill_until_buffered(transport)
    b.close()
    exc = run(loop, protocol.lost)
    assert isinstance(exc, OSError)
    spin(loop, 3)
    assert protocol.losses() == [exc]
    assert handler_calls == []
    assert transport.is_closing()
    assert transport.get_write_buffer_size() == 0


def test_peer_reset_while_idle_is_a_quiet_connection_reset(loop, tcp_pair, opened, handler_calls):
    a, b = tcp_pair
    b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport, protocol = connect(loop, opened, a)
    b.close()
    exc = run(loop, protocol.lost)
    assert isinstance(exc, ConnectionResetError)
    assert handler_calls == []
    assert protocol.events == ["made", ("lost", exc)]
    assert transport.is_closing()


def test_protocol_without_data_received(loop, pair, opened, handler_calls):
    a, b = pair
    lost = loop.create_future()

    class Bare:
        def connection_made(self, transport):
            pass

        def connection_lost(self, exc):
            lost.set_result(exc)

    protocol = Bare()
    transport, _ = opened(a, protocol)
    b.send(b"x")
    exc = run(loop, lost)
    assert type(exc) is AttributeError
    assert handler_calls == [
        {
            "message": "Fatal error: protocol.data_received() call failed.",
            "exception": exc,
            "transport": transport,
            "protocol": protocol,
        }
    ]


@pytest.mark.parametrize("method", ["data_received", "eof_received"])
def test_system_exit_from_a_protocol_propagates(loop, pair, opened, handler_calls, method):
    a, b = pair

    class Exiting(Recorder):
        pass

    def leave(self, *args):
        raise SystemExit(method)

    setattr(Exiting, method, leave)
    transport, protocol = connect(loop, opened, a, Exiting(loop))
    if method == "data_received":
        b.send(b"x")
    else:
        b.shutdown(socket.SHUT_WR)
    with pytest.raises(SystemExit, match=f"^{method}$"):
        run(loop, protocol.lost)
    # Not a fatal error: nothing reported, the transport still open.
    assert handler_calls == []
    assert not transport.is_closing()
    transport.abort()
    assert run(loop, protocol.lost) is None


def test_connection_lost_raising_still_closes_the_socket(loop, pair, opened, handler_calls):
    a, _ = pair
    error = OverflowError("lost")
    events = []

    class Failing(Recorder):
        def connection_lost(self, exc):
            super().connection_lost(exc)
            raise error

    class Server:
        def _attach(self, *args):
            events.append("attach")

        def _detach(self, *args):
            events.append("detach")

    transport, protocol = connect(loop, opened, a, Failing(loop, events=events), server=Server())
    transport.close()
    run_until(loop, lambda: handler_calls)
    assert events == ["attach", "made", ("lost", None), "detach"]
    assert a.fileno() == -1
    assert len(handler_calls) == 1
    assert handler_calls[0]["exception"] is error
    assert handler_calls[0]["message"].startswith("Exception in callback ")


def test_data_received_raising_is_fatal(loop, pair, opened, handler_calls):
    a, b = pair
    error = ValueError("boom")

    class Failing(Recorder):
        def data_received(self, data):
            super().data_received(data)
            raise error

    protocol = Failing(loop)
    transport, _ = connect(loop, opened, a, protocol)
    b.send(b"x")
    assert run(loop, protocol.lost) is error
    assert handler_calls == [
        {
            "message": "Fatal error: protocol.data_received() call failed.",
            "exception": error,
            "transport": transport,
            "protocol": protocol,
        }
    ]
    assert handler_calls[0]["exception"] is error
    assert handler_calls[0]["transport"] is transport
    assert handler_calls[0]["protocol"] is protocol
    assert transport.is_closing()
    spin(loop, 2)
    assert protocol.events == ["made", "data", ("lost", error)]


def test_eof_received_raising_is_fatal(loop, pair, opened, handler_calls):
    a, b = pair
    error = KeyError("eof")

    class Failing(Recorder):
        def eof_received(self):
            super().eof_received()
            raise error

    protocol = Failing(loop)
    transport, _ = connect(loop, opened, a, protocol)
    b.shutdown(socket.SHUT_WR)
    assert run(loop, protocol.lost) is error
    assert handler_calls == [
        {
            "message": "Fatal error: protocol.eof_received() call failed.",
            "exception": error,
            "transport": transport,
            "protocol": protocol,
        }
    ]
    assert handler_calls[0]["exception"] is error
    assert transport.is_closing()
    spin(loop, 2)
    assert protocol.events == ["made", "eof", ("lost", error)]


def test_writes_after_connection_lost_are_dropped_then_logged(loop, pair, opened, caplog):
    a, _ = pair
    transport, protocol = connect(loop, opened, a)
    close_and_wait(loop, transport, protocol)
    caplog.set_level(logging.WARNING, logger="asyncio")
    caplog.clear()
    for _ in range(10):
        transport.write(b"")
    for _ in range(4):
        transport.write(b"x")
    assert caplog.records == []
    transport.write(b"x")
    transport.write(bytearray(b"y"))
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("asyncio", logging.WARNING, "socket.send() raised exception."),
    ] * 2
    assert transport.get_write_buffer_size() == 0


def test_writes_after_abort_count_before_connection_lost_runs(loop, pair, opened, caplog):
    a, _ = pair
    transport, protocol = connect(loop, opened, a)
    caplog.set_level(logging.WARNING, logger="asyncio")
    transport.abort()
    for _ in range(4):
        transport.write(b"x")
    assert caplog.records == []
    transport.write(b"x")
    assert [r.getMessage() for r in caplog.records] == ["socket.send() raised exception."]
    assert run(loop, protocol.lost) is None


# -- debug logging ---------------------------------------------------------------------------


def transport_records(caplog, transport):
    """(format, args after the transport) of the asyncio log records about `transport`."""
    return [
        (record.msg, record.args[1:])
        for record in caplog.records
        if record.name == "asyncio" and record.args and record.args[0] is transport
    ]


def test_debug_mode_logs_reading_changes_and_eof(loop, pair, opened, caplog):
    a, b = pair
    loop.set_debug(True)
    caplog.set_level(logging.DEBUG, logger="asyncio")
    transport, protocol = connect(loop, opened, a, Recorder(loop, keep_open=True))
    transport.pause_reading()
    transport.pause_reading()
    transport.resume_reading()
    b.shutdown(socket.SHUT_WR)
    run_until(loop, lambda: "eof" in protocol.events)
    assert transport_records(caplog, transport) == [
        ("%r pauses reading", ()),
        ("%r resumes reading", ()),
        ("%r received EOF", ()),
    ]
    close_and_wait(loop, transport, protocol)


def test_debug_mode_logs_a_quiet_oserror_with_its_traceback(loop, tcp_pair, opened, caplog):
    a, b = tcp_pair
    loop.set_debug(True)
    caplog.set_level(logging.DEBUG, logger="asyncio")
    b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport, protocol = connect(loop, opened, a)
    b.close()
    exc = run(loop, protocol.lost)
    assert transport_records(caplog, transport) == [
        ("%r: %s", ("Fatal read error on socket transport",)),
    ]
    record = [r for r in caplog.records if r.msg == "%r: %s"][0]
    assert record.levelno == logging.DEBUG
    assert record.exc_info[1] is exc


# -- the empty waiter (loop.sendfile) --------------------------------------------------------


def test_empty_waiter_with_an_empty_buffer(loop, unix_pair, opened):
    a, b = unix_pair
    transport, protocol = connect(loop, opened, a)
    waiter = transport._make_empty_waiter()
    assert waiter.done() and waiter.result() is None
    with pytest.raises(RuntimeError, match=r"^Empty waiter is already set$"):
        transport._make_empty_waiter()
    with pytest.raises(RuntimeError, match=r"^unable to write; sendfile is in progress$"):
        transport.write(b"x")
    transport._reset_empty_waiter()
    transport.write(b"ok")
    transport.close()
    assert run(loop, PeerReader(loop, b).done) == b"ok"
    assert run(loop, protocol.lost) is None


def test_empty_waiter_done_once_the_buffer_drains(loop, pair, opened):
    a, b = pair
    transport, protocol = connect(loop, opened, a)
    written = fill_until_buffered(transport)
    waiter = transport._make_empty_waiter()
    spin(loop, 3)
    assert not waiter.done()
    reader = PeerReader(loop, b)
    assert run(loop, waiter) is None
    assert transport.get_write_buffer_size() == 0
    transport._reset_empty_waiter()
    transport.close()
    assert run(loop, reader.done) == b"f" * written
    assert run(loop, protocol.lost) is None


def test_empty_waiter_fails_when_the_connection_is_lost(loop, pair, opened):
    a, _ = pair
    transport, protocol = connect(loop, opened, a)
    fill_until_buffered(transport)
    waiter = transport._make_empty_waiter()
    transport.abort()
    assert run(loop, protocol.lost) is None
    assert waiter.done()
    exc = waiter.exception()
    assert type(exc) is ConnectionError
    assert str(exc) == "Connection is closed by peer"


# -- extra info ------------------------------------------------------------------------------


def test_extra_info_tcp(loop, tcp_pair, opened):
    a, b = tcp_pair
    transport, protocol = connect(loop, opened, a)
    sock = transport.get_extra_info("socket")
    assert isinstance(sock, trsock.TransportSocket)
    assert transport.get_extra_info("socket") is sock
    assert sock.fileno() == a.fileno()
    assert (sock.family, sock.type) == (socket.AF_INET, socket.SOCK_STREAM)
    assert transport.get_extra_info("sockname") == a.getsockname() == b.getpeername()
    assert transport.get_extra_info("peername") == a.getpeername() == b.getsockname()
    assert transport.get_extra_info("missing") is None
    assert transport.get_extra_info("missing", 42) == 42
    close_and_wait(loop, transport, protocol)
    assert transport.get_extra_info("peername") == b.getsockname()


def test_extra_info_unix(loop, unix_pair, opened):
    a, _ = unix_pair
    transport, protocol = connect(loop, opened, a)
    assert isinstance(transport.get_extra_info("socket"), trsock.TransportSocket)
    assert transport.get_extra_info("sockname") == a.getsockname()
    assert transport.get_extra_info("peername") == a.getpeername()
    close_and_wait(loop, transport, protocol)


def test_extra_info_given_at_creation_is_kept(loop, tcp_pair, opened):
    a, _ = tcp_pair
    extra = {"peername": ("203.0.113.1", 9), "custom": "value"}
    transport, protocol = connect(loop, opened, a, extra=extra)
    assert transport.get_extra_info("peername") == ("203.0.113.1", 9)
    assert transport.get_extra_info("custom") == "value"
    assert transport.get_extra_info("sockname") == a.getsockname()
    assert isinstance(transport.get_extra_info("socket"), trsock.TransportSocket)
    close_and_wait(loop, transport, protocol)


# -- the loop's fd ownership check -----------------------------------------------------------


def test_fd_methods_refused_while_the_transport_is_open(loop, pair, opened):
    a, _ = pair
    transport, protocol = connect(loop, opened, a)
    for target in (a.fileno(), a):
        calls = [
            lambda: loop.add_reader(target, lambda: None),
            lambda: loop.add_writer(target, lambda: None),
            lambda: loop.remove_reader(target),
            lambda: loop.remove_writer(target),
        ]
        for call in calls:
            with pytest.raises(RuntimeError) as info:
                call()
            assert str(info.value).startswith(f"File descriptor {target!r} is used by transport ")
    transport.close()
    # A closing transport no longer guards its fd.
    fd = a.fileno()
    loop.add_reader(fd, lambda: None)
    assert loop.remove_reader(fd) is True
    loop.add_writer(a, lambda: None)
    assert loop.remove_writer(a) is True
    assert run(loop, protocol.lost) is None


# -- TCP_NODELAY -----------------------------------------------------------------------------


def test_tcp_nodelay_set_on_tcp_sockets(loop, tcp_pair, opened):
    a, _ = tcp_pair
    assert a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    transport, protocol = opened(a)
    assert a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    close_and_wait(loop, transport, protocol)


def test_tcp_nodelay_on_sockets_made_without_a_protocol_number(loop, opened):
    # The stock check reads `sock.proto`, which is 0 for a socket made without a protocol
    # number: such a socket keeps Nagle's algorithm there. ferroloop decides by family and type
    # (a README difference): it is a TCP socket all the same.
    a, b = tcp_connection(proto=0)
    try:
        transport, protocol = opened(a)
        expected = 0 if isinstance(loop, asyncio.BaseEventLoop) else 1
        assert a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == expected
        close_and_wait(loop, transport, protocol)
    finally:
        a.close()
        b.close()


def test_tcp_nodelay_on_connections_accepted_on_a_socket_made_without_a_protocol(loop):
    listener = socket.socket()  # proto 0
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted = loop.create_future()

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            accepted.set_result(transport.get_extra_info("socket"))

    async def main():
        server = await loop.create_server(Proto, sock=listener)
        client = socket.socket()
        client.setblocking(False)
        await loop.sock_connect(client, listener.getsockname())
        sock = await asyncio.wait_for(accepted, TIMEOUT)
        value = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        tr, _ = await loop.create_connection(asyncio.Protocol, sock=client)
        client_value = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        tr.close()
        server.close()
        await server.wait_closed()
        return value, client_value

    got = run(loop, main())
    # The stock loop asks for proto == IPPROTO_TCP and leaves these two alone.
    assert got == ((0, 0) if isinstance(loop, asyncio.BaseEventLoop) else (1, 1))


# -- resources -------------------------------------------------------------------------------


def test_unclosed_transport_warns_and_closes_its_socket(loop, unix_pair):
    a, _ = unix_pair
    transport = loop._make_socket_transport(a, asyncio.Protocol())
    spin(loop, 2)
    # The loop's reader callback holds the transport; without it nothing else does.
    transport.pause_reading()
    with pytest.warns(ResourceWarning, match=r"^unclosed transport"):
        del transport
        gc.collect()
    assert a.fileno() == -1


def test_unclosed_transport_warning_names_the_transport_as_its_source(loop, unix_pair):
    a, _ = unix_pair
    transport = loop._make_socket_transport(a, asyncio.Protocol())
    spin(loop, 2)
    transport.pause_reading()
    with pytest.warns(ResourceWarning) as caught:
        del transport
        gc.collect()
    assert isinstance(caught[0].source, asyncio.Transport)


# A program that leaves a server's connection open when it ends: the transport is finalized
# while the interpreter shuts down, after imports have stopped working.
LEFT_OPEN_AT_EXIT = """
import asyncio, ferroloop

async def main():
    server = await asyncio.get_running_loop().create_server(asyncio.Protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(0.05)
    writer.close()

loop = ferroloop.new_event_loop()  # a global: finalized with the module, at shutdown
loop.run_until_complete(main())
"""


@pytest.mark.parametrize("warnings_flag", [[], ["-W", "always::ResourceWarning"]])
def test_transport_left_open_at_exit_warns_as_stock(warnings_flag):
    result = subprocess.run(
        [sys.executable, *warnings_flag, "-c", LEFT_OPEN_AT_EXIT],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Exception ignored" not in result.stderr
    assert "Error" not in result.stderr
    shown = re.search(r"ResourceWarning: unclosed transport <StreamTransport", result.stderr)
    assert bool(shown) == bool(warnings_flag), result.stderr


def open_fds():
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("kind", sorted(CONNECTIONS))
def test_no_fd_leaked(loop, kind):
    def one_connection():
        a, b = CONNECTIONS[kind]()
        try:
            protocol = Recorder(loop)
            transport = loop._make_socket_transport(a, protocol)
            reader = PeerReader(loop, b)
            transport.write(b"bye")
            transport.close()
            assert run(loop, reader.done) == b"bye"
            assert run(loop, protocol.lost) is None
            assert a.fileno() == -1
        finally:
            a.close()
            b.close()

    # The first connection may make the loop grow lazily made resources of its own.
    one_connection()
    gc.collect()
    before = open_fds()
    for _ in range(20):
        one_connection()
    gc.collect()
    assert open_fds() == before
