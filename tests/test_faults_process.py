"""Fault injection beyond a single connection, on both loops: children that die with their pipes
full; signals during every phase of plain TCP and TLS connections, socket operations and
children; a saturated default executor; and EMFILE on accept.

Each fault must end in the stock loop's exception on the stock loop's callback, and the loop
must go on serving: in every test a second, healthy connection or operation completes on the same
loop during or after the fault. The faults come from other processes, signals, threads or
resource limits, so what is checked is only how the loop under test reacts.

Linux only, as the loops' tests are: leaks are counted in /proc. Reference: CPython asyncio
unix_events, base_subprocess, selector_events, base_events (3.11). The helpers are in faults.py;
faults of TCP peers are in test_faults_net.py, those of TLS peers in test_faults_tls.py.
"""

import asyncio
import concurrent.futures
import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

pytest.register_assert_rewrite("faults")

# After register_assert_rewrite, so that the asserts of faults.py explain their failures.
from faults import (  # noqa: E402
    CHUNK,
    FLOOD,
    TIMEOUT,
    TLS_CLIENT,
    Healthy,
    StreamServer,
    intact,
    nothing_left_behind,
    raw_peer,
    reports,
    sock_recv_exactly,
    still_serving,
)
from tls_certs import server_context  # noqa: E402
from util import run  # noqa: E402

# The autouse fixtures of faults.py apply to this module's tests because they are imported into
# it (pytest looks for fixtures among a test module's names); naming them here marks them used.
AUTOUSE_FIXTURES = (nothing_left_behind, reports)


# 1. Children that die with their pipes in use

# Reads 64 KiB of its stdin, then kills itself.
DIES_READING = "import os, sys; sys.stdin.buffer.read(65536); os.kill(os.getpid(), 9)"

# Writes CHUNK's stream to stdout and stderr, each from its own thread, until killed.
FILLS_PIPES = textwrap.dedent(
    """
    import os, threading
    twice = memoryview(bytes(range(256)) * 512)
    def pump(fd):
        offset = 0
        while True:
            offset = (offset + os.write(fd, twice[offset : offset + 65536])) % 256
    threading.Thread(target=pump, args=(2,), daemon=True).start()
    pump(1)
    """
)

# Copies stdin to stdout.
CAT = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"


async def healthy_child():
    """A child that echoes its input, run to completion through communicate()."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CAT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(CHUNK * 16), TIMEOUT)
    assert out == CHUNK * 16
    assert proc.returncode == 0


def is_broken_pipe(exc):
    """The stock write pipe transport fails with BrokenPipeError(32, ...) when os.write() hits
    EPIPE, but with a bare BrokenPipeError() when it first learns of the closed pipe from its
    reader callback (unix_events _UnixWritePipeTransport._read_ready): which comes first is a
    race, so both count."""
    return type(exc) is BrokenPipeError and exc.errno in (None, errno.EPIPE)


class TestChildDies:
    def test_stdin_drain_raises_when_the_child_dies(self, loop):
        """The pending drain() raises BrokenPipeError, a later one ConnectionResetError('Connection
        lost'), wait_closed() the BrokenPipeError again, and wait() gives -SIGKILL."""

        async def main():
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", DIES_READING, stdin=subprocess.PIPE
            )
            healthy = asyncio.ensure_future(healthy_child())
            proc.stdin.write(FLOOD)
            with pytest.raises(BrokenPipeError) as info:
                await asyncio.wait_for(proc.stdin.drain(), TIMEOUT)
            assert is_broken_pipe(info.value)
            with pytest.raises(ConnectionResetError, match="^Connection lost$"):
                await proc.stdin.drain()
            with pytest.raises(BrokenPipeError) as info:
                await proc.stdin.wait_closed()
            assert is_broken_pipe(info.value)
            assert await asyncio.wait_for(proc.wait(), TIMEOUT) == -signal.SIGKILL
            await healthy
            await healthy_child()

        run(loop, main())

    def test_subprocess_protocol_sees_the_broken_stdin(self, loop):
        """pipe_connection_lost(0, BrokenPipeError) and process_exited, in either order (the
        child's exit and its pipe's closing are seen by different watchers), then
        connection_lost(None)."""

        async def main():
            events = []
            done = loop.create_future()

            class Child(asyncio.SubprocessProtocol):
                def pause_writing(self):
                    events.append("pause")

                def pipe_connection_lost(self, fd, exc):
                    events.append(("pipe lost", fd, is_broken_pipe(exc)))

                def process_exited(self):
                    events.append("exited")

                def connection_lost(self, exc):
                    events.append(("lost", exc))
                    done.set_result(None)

            transport, _ = await loop.subprocess_exec(
                Child, sys.executable, "-c", DIES_READING, stdin=subprocess.PIPE, stdout=None, stderr=None
            )
            try:
                transport.get_pipe_transport(0).write(FLOOD)
                await healthy_child()
                await asyncio.wait_for(done, TIMEOUT)
                assert len(events) == 4 and events[0] == "pause" and events[3] == ("lost", None)
                assert sorted(events[1:3], key=str) == [("pipe lost", 0, True), "exited"]
                assert transport.get_returncode() == -signal.SIGKILL
            finally:
                transport.close()
            await healthy_child()

        run(loop, main())

    def test_child_killed_with_its_output_pipes_full(self, loop):
        """Killed while writing to stdout and stderr pipes the parent has stopped reading (its
        StreamReaders hold more than twice their limit, so their transports are paused): wait()
        gives -SIGKILL, and each read() ends with what was written, intact."""

        async def main():
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", FILLS_PIPES, stdout=subprocess.PIPE, stderr=subprocess.PIPE, limit=4096
            )
            try:
                outputs = (proc.stdout, proc.stderr)
                firsts = [await asyncio.wait_for(output.readexactly(1), TIMEOUT) for output in outputs]
                await healthy_child()
                pipes = [proc._transport.get_pipe_transport(fd) for fd in (1, 2)]
                while any(pipe.is_reading() for pipe in pipes):
                    await asyncio.sleep(0.01)  # bounded by run()'s timeout
            finally:
                proc.kill()
            while proc.returncode is None:  # the exit is seen with the pipes still full
                await asyncio.sleep(0.01)  # bounded by run()'s timeout
            assert proc.returncode == -signal.SIGKILL
            returncode, *rests = await asyncio.wait_for(
                asyncio.gather(proc.wait(), proc.stdout.read(), proc.stderr.read()), TIMEOUT
            )
            assert returncode == -signal.SIGKILL
            for first_byte, rest in zip(firsts, rests):
                assert intact(first_byte + rest) and len(rest) >= 2 * 4096
            await healthy_child()

        run(loop, main())


# 2. Signals during every phase of a connection

BIG = CHUNK * 64  # 4 MiB


async def exercise_raw(loop, port):
    """The loop's socket methods (sock_connect, sock_sendall, sock_recv) echo BIG through a
    `StreamServer`."""
    sock = await raw_peer(loop, port)
    with sock:
        echoed = asyncio.ensure_future(sock_recv_exactly(loop, sock, len(BIG)))
        await loop.sock_sendall(sock, b"E" + BIG)
        assert await echoed == BIG


async def exercise(port, connections=10, **kwargs):
    """Opens and closes `connections` echo connections to a `StreamServer` (connect, TLS
    handshake if kwargs say so, shutdown), then sends BIG through one and reads it back."""
    for _ in range(connections):
        healthy = await Healthy.open(port, **kwargs)
        await healthy.close()
    healthy = await Healthy.open(port, **kwargs)
    echoed = asyncio.ensure_future(healthy.reader.readexactly(len(BIG)))
    healthy.writer.write(BIG)
    await healthy.writer.drain()
    assert await echoed == BIG
    await healthy.close()


async def exercise_children(count=3):
    """Runs `count` children to completion, one after another."""
    for _ in range(count):
        await healthy_child()


@contextlib.contextmanager
def signals_flowing(loop, how, count):
    """Signals arrive every millisecond or so until the block ends, each calling `count`:
    SIGALRM from an interval timer to a Python signal handler ("signal.signal") or to a loop
    handler ("add_signal_handler"), or SIGUSR1 sent by os.kill from a thread to a loop handler
    ("os.kill"). The timer and the handlers are restored afterwards."""
    signum = signal.SIGUSR1 if how == "os.kill" else signal.SIGALRM
    previous = signal.getsignal(signum)
    stop = threading.Event()

    def kill_often():
        while not stop.wait(0.001):
            os.kill(os.getpid(), signal.SIGUSR1)

    if how == "signal.signal":
        signal.signal(signum, lambda *args: count())
    else:
        loop.add_signal_handler(signum, count)
    try:
        if how == "os.kill":
            killer = threading.Thread(target=kill_often)
            killer.start()
        else:
            signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
        yield
    finally:
        if how == "os.kill":
            stop.set()
            killer.join()
        else:
            signal.setitimer(signal.ITIMER_REAL, 0, 0)
        # A signal already delivered may still have its Python handler pending: let it run
        # before the handler goes.
        time.sleep(0.01)
        if how != "signal.signal":
            loop.remove_signal_handler(signum)
        signal.signal(signum, previous)


class TestSignals:
    @pytest.mark.parametrize("how", ["signal.signal", "add_signal_handler", "os.kill"])
    def test_connections_complete_while_signals_arrive(self, loop, how):
        """Streams over plain TCP and TLS, the loop's socket methods, and child processes, side
        by side: no InterruptedError surfaces and every byte arrives."""

        async def main():
            received = 0

            def count():
                nonlocal received
                received += 1

            plain = await StreamServer().start()
            tls = await StreamServer().start(ssl=server_context())
            with signals_flowing(loop, how, count):
                await asyncio.gather(
                    exercise(plain.port),
                    exercise(tls.port, **TLS_CLIENT),
                    exercise_raw(loop, plain.port),
                    exercise_children(),
                )
                await plain.close()
                await tls.close()
            assert received > 0

        run(loop, main())


# 3. A saturated default executor


def test_getaddrinfo_waits_for_a_saturated_default_executor(loop):
    """With the default executor's only worker busy for a second, open_connection("localhost")
    waits for it (getaddrinfo runs in that executor) and then connects; timers keep firing
    meanwhile."""

    async def main():
        server = await StreamServer().start()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=1))
        job = loop.run_in_executor(None, time.sleep, 1.0)
        ticks_during_job = 0

        def tick():
            nonlocal ticks_during_job
            if not job.done():
                ticks_during_job += 1
                loop.call_later(0.05, tick)

        loop.call_later(0.05, tick)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("localhost", server.port, family=socket.AF_INET), TIMEOUT
        )
        assert job.done()
        assert ticks_during_job >= 2
        healthy = Healthy(reader, writer)
        writer.write(b"E")
        await healthy.round_trip()
        await still_serving(server.port, healthy)
        await server.close()

    run(loop, main())


# 4. EMFILE on accept

# Run as `python -c EMFILE_SERVER asyncio|ferroloop`: an echo server on the named loop, whose
# connections stay open until the client closes. The fd table is filled (under a low soft
# RLIMIT_NOFILE) but for 3 fds; clients connect one by one, from sockets made beforehand,
# and the first 3 are served, taking those fds; the accept for the fourth fails with EMFILE.
# Half a second later, the first client is served again, the fds are freed, and the fourth
# client and a fifth must be served. Prints JSON: what the exception handler got, how often
# while the fds were out, whether the fourth client was still waiting then, and the echoes.
EMFILE_SERVER = textwrap.dedent(
    """
    import asyncio, errno, json, os, resource, socket, sys

    BACKLOG = 5
    if sys.argv[1] == "ferroloop":
        import ferroloop
        loop = ferroloop.new_event_loop()
    else:
        loop = asyncio.SelectorEventLoop()
    reports = []
    loop.set_exception_handler(lambda loop, context: reports.append(context))

    async def echo(reader, writer):
        while data := await reader.read(100):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def round_trip(sock, payload):
        await loop.sock_sendall(sock, payload)
        return (await loop.sock_recv(sock, 100)).decode()

    async def client(sock, address, payload):
        await loop.sock_connect(sock, address)
        return await round_trip(sock, payload)

    async def main():
        server = await asyncio.start_server(echo, "127.0.0.1", 0, backlog=BACKLOG)
        address = server.sockets[0].getsockname()
        clients = [socket.socket() for _ in range(5)]
        for sock in clients:
            sock.setblocking(False)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 16, hard))
        fillers = []
        try:
            while True:
                fillers.append(os.dup(0))
        except OSError as exc:
            assert exc.errno == errno.EMFILE, exc
        for _ in range(3):
            os.close(fillers.pop())
        served = [await asyncio.wait_for(client(clients[i], address, b"client%d" % i), 20) for i in range(3)]
        fourth = asyncio.ensure_future(client(clients[3], address, b"client3"))
        while not reports:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        reports_while_out = len(reports)
        fourth_waited = not fourth.done()
        served.append(await asyncio.wait_for(round_trip(clients[0], b"meanwhile"), 20))
        for fd in fillers:
            os.close(fd)
        served.append(await asyncio.wait_for(fourth, 20))
        served.append(await asyncio.wait_for(client(clients[4], address, b"client4"), 20))
        for sock in clients:
            sock.close()
        server.close()
        await server.wait_closed()
        kinds = {(c["message"], type(c["exception"]).__name__, c["exception"].errno) for c in reports}
        print(json.dumps({
            "reports": sorted(kinds),
            "reports_while_out": reports_while_out,
            "fourth_waited": fourth_waited,
            "served": served,
        }))

    loop.run_until_complete(asyncio.wait_for(main(), 40))
    loop.close()
    """
)


def test_emfile_on_accept_pauses_then_recovers(loop):
    """Out of fds, the stock loop reports "socket.accept() out of system resource" to the
    exception handler with the OSError(EMFILE), stops accepting for a second
    (ACCEPT_RETRY_DELAY) rather than spinning on the ready listener, and goes on serving the
    connections it has; once fds are free, it serves the waiting client and new ones. The server
    runs in a child process, as a lowered RLIMIT_NOFILE is process-wide; `loop` only names the
    kind of loop it runs."""
    name = "ferroloop" if type(loop).__module__.startswith("ferroloop") else "asyncio"
    done = subprocess.run(
        [sys.executable, "-c", EMFILE_SERVER, name], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["reports"] == [["socket.accept() out of system resource", "OSError", errno.EMFILE]]
    # One round of accept() calls in that half second: the stock loop goes on calling it after
    # the first EMFILE, reporting each, up to `backlog` (5) times in all, or backlog + 1 from
    # 3.14 on; ferroloop ends the round at the first (a documented difference,
    # ferroloop/_server.py). A loop spinning on the ready listener would report far more.
    assert 1 <= result["reports_while_out"] <= 5 + 1
    assert result["fourth_waited"]
    assert result["served"] == ["client0", "client1", "client2", "meanwhile", "client3", "client4"]
