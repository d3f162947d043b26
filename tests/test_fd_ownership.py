"""A file descriptor belongs to the object it came from: what the loop does when that object is
closed or detached while the loop still uses its number (`src/owner`).

The kernel gives each new file the lowest free number, so a closed socket's number is at once
someone else's. Each test closes (or detaches) an object under something of the loop's that
kept its number, lets a new socket take the number, and checks that nothing reaches the new
socket and that what was pending ends as the README's list of differences says: at once with
`OSError(EBADF)` on ferroloop, where the stock loop's call waits forever. Where the stock loop
has the behaviour too, the test runs on both loops.
"""

import asyncio
import errno
import gc
import os
import socket
import subprocess
import sys
import textwrap
import weakref

import pytest

import ferroloop
from util import fd_count, run

# Generous: these bound how long a call that must end promptly may take on a busy machine.
PROMPT = 5.0


def is_ferroloop(loop):
    return not isinstance(loop, asyncio.BaseEventLoop)



def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def take_number(number):
    """A connected socket pair whose first end has fd `number` (the lowest free one)."""
    held = []
    try:
        for _ in range(50):
            a, b = pair()
            if a.fileno() == number:
                return a, b
            held.append(a)
            held.append(b)
            if a.fileno() > number and b.fileno() > number:
                break
        raise AssertionError(f"fd {number} was not reused")
    finally:
        for s in held:
            s.close()


# -- sock_* calls closed under --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["recv", "recv_into", "sendall"])
def test_a_pending_call_on_a_closed_socket_ends_with_ebadf(ferro_loop, kind):
    loop = ferro_loop
    a, peer = pair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    async def main():
        if kind == "recv":
            call = loop.sock_recv(a, 100)
        elif kind == "recv_into":
            call = loop.sock_recv_into(a, bytearray(100))
        else:
            call = loop.sock_sendall(a, b"A" * (8 << 20))
        task = asyncio.ensure_future(call)
        await asyncio.sleep(0.01)
        assert not task.done()
        a.close()
        # The number is at once someone else's: a greeting waits on the new socket.
        b, b_peer = take_number(number)
        b_peer.send(b"greeting")
        with pytest.raises(OSError) as caught:
            await asyncio.wait_for(task, PROMPT)
        assert caught.value.errno == errno.EBADF
        assert await loop.sock_recv(b, 100) == b"greeting"
        b.close()
        b_peer.close()

    number = a.fileno()
    run(loop, main())
    peer.setblocking(True)
    peer.settimeout(1)
    data = b""
    try:
        while chunk := peer.recv(1 << 20):
            data += chunk
    except (TimeoutError, OSError):
        pass
    assert set(data) <= {ord("A")}
    peer.close()


def test_sock_accept_on_a_closed_listener_ends_with_ebadf(ferro_loop):
    loop = ferro_loop
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)

    async def main():
        task = asyncio.ensure_future(loop.sock_accept(listener))
        await asyncio.sleep(0.01)
        listener.close()
        with pytest.raises(OSError) as caught:
            await asyncio.wait_for(task, PROMPT)
        assert caught.value.errno == errno.EBADF

    run(loop, main())


def test_closing_from_another_thread_ends_the_call_on_the_loops_thread(ferro_loop):
    loop = ferro_loop
    a, peer = pair()

    async def main():
        task = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        await loop.run_in_executor(None, a.close)
        with pytest.raises(OSError) as caught:
            await asyncio.wait_for(task, PROMPT)
        assert caught.value.errno == errno.EBADF

    run(loop, main())
    loop.run_until_complete(loop.shutdown_default_executor())
    peer.close()


def test_a_detached_socket_is_no_longer_read(ferro_loop):
    # detach() tells no one: the stale call ends when the number's next owner registers it
    # (the kernel no longer knows the old registration), before any byte of its is read.
    loop = ferro_loop
    a, peer = pair()

    async def main():
        task = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        number = a.detach()
        os.close(number)
        b, b_peer = take_number(number)
        got = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0.01)
        b_peer.send(b"greeting")
        assert await asyncio.wait_for(got, PROMPT) == b"greeting"
        with pytest.raises(OSError) as caught:
            await asyncio.wait_for(task, PROMPT)
        assert caught.value.errno == errno.EBADF
        b.close()
        b_peer.close()

    run(loop, main())
    peer.close()


def test_makefile_keeps_the_socket_open_until_its_file_closes(ferro_loop):
    # close() with a makefile() object open does not close the fd (stock semantics): the call
    # goes on, and ends when the file object's close really closes the socket.
    loop = ferro_loop
    a, peer = pair()
    f = a.makefile("rb")

    async def main():
        task = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        a.close()
        assert a.fileno() != -1
        peer.send(b"still open")
        assert await asyncio.wait_for(task, PROMPT) == b"still open"
        task = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        f.close()
        assert a.fileno() == -1
        with pytest.raises(OSError) as caught:
            await asyncio.wait_for(task, PROMPT)
        assert caught.value.errno == errno.EBADF

    run(loop, main())
    peer.close()


def test_the_io_refs_stand_in_counts_as_the_int_it_replaced(ferro_loop):
    loop = ferro_loop
    a, peer = pair()

    async def main():
        task = asyncio.ensure_future(loop.sock_recv(a, 10))
        await asyncio.sleep(0)
        peer.send(b"x")
        assert await task == b"x"

    run(loop, main())
    refs = a._io_refs
    assert isinstance(refs, ferroloop._core.IoRefs)
    assert refs == 0 and not refs and int(refs) == 0 and repr(refs) == "0" and hash(refs) == 0
    f = a.makefile("rb")
    assert a._io_refs is refs and refs == 1 and refs > 0 and refs + 1 == 2 and 3 - refs == 2
    f.close()
    assert refs == 0 and refs <= 0
    a.close()
    assert a.fileno() == -1
    peer.close()


# -- readers and writers --------------------------------------------------------------------


def test_add_reader_with_a_socket_is_dropped_when_the_socket_closes(loop):
    a, peer = pair()
    seen = []
    loop.add_reader(a, lambda: seen.append(a.fileno()))
    number = a.fileno()
    sizes = loop._queue_sizes() if is_ferroloop(loop) else None
    a.close()
    b, b_peer = take_number(number)
    b_peer.send(b"for b")

    async def main():
        got = await asyncio.wait_for(loop.sock_recv(b, 100), PROMPT)
        assert got == b"for b"

    run(loop, main())
    # The reader registered for a never ran for b's readiness.
    assert seen == []
    if sizes is not None:
        assert sizes[3] == 1
        assert loop._queue_sizes()[3] == 0
    for s in (b, b_peer, peer):
        s.close()


def test_a_new_registration_drops_what_the_kernel_forgot(ferro_loop):
    # A reader registered with a bare number whose file was closed behind the loop's back: the
    # next registration of the number finds the old one stale and drops it (the stock loop
    # raises FileNotFoundError here and leaves the new socket unwatched).
    loop = ferro_loop
    a, peer = pair()
    number = a.fileno()
    calls = []
    loop.add_reader(number, calls.append, "stale")
    os.close(a.detach())
    b, b_peer = take_number(number)
    loop.add_writer(b, calls.append, "writable")
    loop.run_until_complete(asyncio.sleep(0.05))
    loop.remove_writer(b)
    b_peer.send(b"x")
    loop.run_until_complete(asyncio.sleep(0.05))
    assert "stale" not in calls and "writable" in calls
    assert loop.remove_reader(number) is False
    for s in (b, b_peer, peer):
        s.close()


# -- transports -----------------------------------------------------------------------------


def test_a_transport_whose_socket_is_closed_under_it_ends_and_writes_nothing(ferro_loop):
    loop = ferro_loop
    a, peer = pair()
    lost = loop.create_future()

    class Proto(asyncio.Protocol):
        def connection_lost(self, exc):
            lost.set_result(exc)

    async def main():
        transport, _ = await loop.connect_accepted_socket(Proto, a)
        number = a.fileno()
        a.close()
        b, b_peer = take_number(number)
        # The transport hears of it at once (the stock one only at its next write), and what
        # is written later goes nowhere.
        exc = await asyncio.wait_for(lost, PROMPT)
        assert isinstance(exc, OSError) and exc.errno == errno.EBADF
        transport.write(b"A" * 100)
        await asyncio.sleep(0.05)
        with pytest.raises(BlockingIOError):
            b_peer.recv(1)
        b.send(b"hello")
        assert b_peer.recv(10) == b"hello"
        b.close()
        b_peer.close()

    run(loop, main())
    peer.close()


def test_a_pipe_closed_under_its_transport_is_not_read_through_its_number(ferro_loop):
    loop = ferro_loop
    r, w = os.pipe()
    pipe = open(r, "rb", buffering=0)
    received = []

    class Proto(asyncio.Protocol):
        def data_received(self, data):
            received.append(data)

    async def main():
        transport, _ = await loop.connect_read_pipe(Proto, pipe)
        pipe.close()
        b, b_peer = take_number(r)
        b_peer.send(b"for b")
        await asyncio.sleep(0.05)
        assert await asyncio.wait_for(loop.sock_recv(b, 100), PROMPT) == b"for b"
        assert received == []
        transport.close()
        b.close()
        b_peer.close()

    run(loop, main())
    os.close(w)


# -- closing the loop ------------------------------------------------------------------------


def test_closing_the_loop_with_calls_pending_leaks_nothing():
    gc.collect()
    before = fd_count()
    loop = ferroloop.new_event_loop()
    socks = [pair() for _ in range(4)]

    async def start():
        for a, _ in socks:
            asyncio.ensure_future(loop.sock_recv(a, 10))
        await asyncio.sleep(0.01)

    loop.run_until_complete(start())
    ref = weakref.ref(loop)
    for task in asyncio.all_tasks(loop):
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    del loop, task
    gc.collect()
    assert ref() is None
    for a, b in socks:
        a.close()
        b.close()
    assert fd_count() == before


# -- the fallback without layout reads ----------------------------------------------------------


def test_the_fileno_fallback_gives_the_same_protection():
    # With layout reads off, ownership is checked through fileno(): the same outcomes.
    code = textwrap.dedent(
        """
        import asyncio, errno, os, socket, ferroloop
        assert not ferroloop._core._tricks()["socket_fd"]
        loop = ferroloop.new_event_loop()

        def pair():
            a, b = socket.socketpair()
            a.setblocking(False)
            b.setblocking(False)
            return a, b

        async def main():
            a, peer = pair()
            task = asyncio.ensure_future(loop.sock_recv(a, 10))
            await asyncio.sleep(0.01)
            number = a.detach()
            os.close(number)
            b, b_peer = pair()
            assert b.fileno() == number
            got = asyncio.ensure_future(loop.sock_recv(b, 10))
            await asyncio.sleep(0.01)
            b_peer.send(b"for b")
            print("b got", (await got).decode())
            try:
                await asyncio.wait_for(task, 5)
            except OSError as exc:
                print("stale", errno.errorcode[exc.errno])
            transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, b)
            b.close()
            c, c_peer = pair()
            assert c.fileno() == number
            transport.write(b"x")
            await asyncio.sleep(0.01)
            try:
                c_peer.recv(10)
                print("c got bytes")
            except BlockingIOError:
                print("c got nothing")
            print("closing", transport.is_closing())

        loop.run_until_complete(main())
        """
    )
    env = dict(os.environ, FERROLOOP_LAYOUT_READS="0")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["b got for b", "stale EBADF", "c got nothing", "closing True"]


@pytest.mark.skipif(os.environ.get("FERROLOOP_LAYOUT_READS") == "0", reason="turned off")
def test_layout_reads_are_on_by_default():
    assert ferroloop._core._tricks()["socket_fd"]
