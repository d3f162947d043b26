"""Parity tests for the `bytes` a stream transport hands to `data_received`.

ferroloop receives into the `bytes` of an earlier read once the protocol has let it go (its only
reference is the transport's; see src/recv_bytes.rs). These tests pin down what a protocol must
never be able to see from that, on both loops: an object it still holds, directly, through a
memoryview or as a dict key, never changes; every object is a true `bytes` of the right length
and hash; every byte arrives once and in order, whatever the sizes of the messages in turn.

The peer sends one message at a time and waits until the protocol has all of it, so reads follow
the messages' sizes, growing and shrinking (the reuse depends on the size of the last read).
"""

import asyncio
import os
import socket

import pytest

import ferroloop
from util import run


# Sizes in turn: small, around the 1 KiB where reuse starts, growing past and shrinking below
# what the last read brought, and one larger than a single read takes.
SIZES = [1024, 1024, 1500, 3000, 700, 100_000, 1024, 2048, 5000, 1024, 40, 2500, 300_000, 1100]

# Small reads, which are copied into the earlier read's object when its room is between their
# size and twice it: the same size again, a little smaller or larger, half and double.
SMALL_SIZES = [60, 60, 60, 50, 70, 60, 30, 60, 120, 60, 61, 59, 1, 2, 3, 2, 500, 300, 400, 800]


def tcp_connection():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    a.setblocking(False)
    return a, b


def unix_connection():
    a, b = socket.socketpair()
    a.setblocking(False)
    return a, b


@pytest.fixture(params=["tcp", "unix"])
def pair(request):
    a, b = tcp_connection() if request.param == "tcp" else unix_connection()
    yield a, b
    a.close()
    b.close()


class Collector(asyncio.Protocol):
    """Counts what arrives; `on_data(data)` decides what of it to keep (subclasses)."""

    def __init__(self, loop):
        self.received = bytearray()
        self.lost = loop.create_future()
        self.problems = []

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if type(data) is not bytes:
            self.problems.append(f"got a {type(data).__name__}")
        copy = bytes(bytearray(data))
        if hash(data) != hash(copy) or len(data) != len(copy) or data != copy:
            self.problems.append("an object that does not equal its own copy")
        self.received += data
        self.on_data(data, copy)

    def on_data(self, data, copy):
        pass

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def exchange(loop, protocol, peer, sizes):
    """Sends messages of `sizes` one after another, each once the last has all arrived; returns
    everything sent."""
    sent = bytearray()
    before = len(protocol.received)

    async def send_all():
        for size in sizes:
            message = os.urandom(size)
            await loop.sock_sendall(peer, message)
            sent.extend(message)
            while len(protocol.received) - before < len(sent):
                await asyncio.sleep(0)

    peer.setblocking(False)
    run(loop, send_all())
    return bytes(sent)


def make(loop, sock, protocol):
    transport = loop._make_socket_transport(sock, protocol)

    async def made():
        while not hasattr(protocol, "transport"):
            await asyncio.sleep(0)

    run(loop, made())
    return transport


def finish(loop, transport, protocol):
    transport.close()
    run(loop, protocol.lost)


class KeepsEveryOther(Collector):
    """Keeps every other object it gets, with a copy of what it held then."""

    def __init__(self, loop):
        super().__init__(loop)
        self.kept = []
        self.count = 0

    def on_data(self, data, copy):
        self.count += 1
        if self.count % 2:
            self.kept.append((data, copy))

    def check_held(self):
        assert self.kept
        for data, copy in self.kept:
            assert data == copy


class KeepsViews(Collector):
    """Keeps only a memoryview of each object, never the object itself."""

    def __init__(self, loop):
        super().__init__(loop)
        self.views = []

    def on_data(self, data, copy):
        self.views.append((memoryview(data), copy))

    def check_held(self):
        for view, copy in self.views:
            assert view.tobytes() == copy
            assert view.nbytes == len(copy)


class HashesAndDrops(Collector):
    """Uses each object as a dict key for the length of the call, then lets it go: a hash the
    object cached must not outlive its contents."""

    def __init__(self, loop):
        super().__init__(loop)
        self.hashes = []

    def on_data(self, data, copy):
        seen = {data: len(data)}
        if seen.get(copy) != len(copy):
            self.problems.append("the object is not found by its copy")
        self.hashes.append((hash(copy), copy))

    def check_held(self):
        assert all(hash(copy) == h for h, copy in self.hashes)


class KeepsAfterward(KeepsEveryOther):
    """Lets each object go at once, except that every third call keeps the object of the
    previous call, taken back from where it was parked: an object kept late is safe as well."""

    def __init__(self, loop):
        super().__init__(loop)
        self.previous = None

    def on_data(self, data, copy):
        self.count += 1
        if self.count % 3 == 0 and self.previous is not None:
            self.kept.append(self.previous)
        self.previous = (data, copy) if self.count % 3 == 2 else None


@pytest.mark.parametrize("sizes", [SIZES, SMALL_SIZES], ids=["sizes", "small"])
@pytest.mark.parametrize("kind", [KeepsEveryOther, KeepsViews, HashesAndDrops, KeepsAfterward])
def test_what_a_protocol_holds_never_changes(loop, pair, kind, sizes):
    a, b = pair
    protocol = kind(loop)
    transport = make(loop, a, protocol)
    sent = exchange(loop, protocol, b, sizes * 3)
    finish(loop, transport, protocol)
    assert protocol.problems == []
    assert bytes(protocol.received) == sent
    protocol.check_held()


def test_two_transports_taking_turns_get_their_own_bytes(loop):
    # Two connections of one loop with messages of different sizes, read in the same
    # iterations: each protocol gets its own peer's bytes, whole and in order.
    pairs = [unix_connection(), tcp_connection()]
    try:
        protocols = [KeepsEveryOther(loop) for _ in pairs]
        transports = [make(loop, a, p) for (a, _), p in zip(pairs, protocols)]
        sent = [bytearray(), bytearray()]

        async def peer(i, sizes):
            b = pairs[i][1]
            b.setblocking(False)
            for size in sizes:
                message = os.urandom(size)
                await loop.sock_sendall(b, message)
                sent[i].extend(message)
                while len(protocols[i].received) < len(sent[i]):
                    await asyncio.sleep(0)

        run(loop, asyncio.gather(peer(0, SIZES * 2), peer(1, list(reversed(SIZES)) * 2)))
        for transport, protocol, data in zip(transports, protocols, sent):
            finish(loop, transport, protocol)
            assert protocol.problems == []
            assert bytes(protocol.received) == bytes(data)
            protocol.check_held()
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_large_reads_keep_no_large_spare(ferro_loop, pair):
    # ferroloop only: reads expected above 64 KiB leave nothing that large behind for the next
    # read (the spare would stay resident for the loop's life); reads of a few KiB still leave
    # their object to the next read.
    a, b = pair
    protocol = Collector(ferro_loop)
    transport = make(ferro_loop, a, protocol)
    sent = exchange(ferro_loop, protocol, b, [200_000] * 4)
    room = ferro_loop._read_spare_room()
    assert room is None or room <= 64 * 1024
    sent += exchange(ferro_loop, protocol, b, [10_000] * 4)
    room = ferro_loop._read_spare_room()
    if ferroloop._core._tricks()["bytes_reuse"]:
        assert room is not None and 10_000 <= room <= 64 * 1024
    else:
        assert room is None  # FERROLOOP_LAYOUT_READS=0: every read gets a new bytes
    finish(ferro_loop, transport, protocol)
    assert protocol.problems == []
    assert bytes(protocol.received) == sent
