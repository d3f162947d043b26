"""Reliability under load, on both loops: a server holding 10,000 connections opened by a client
in another process, and a writer whose reader is slow while 1 GiB goes through (flow control
keeps the writer's memory bounded by its high-water mark).

The other process is a plain blocking-socket Python script, so what is measured is only the loop
under test. Nothing here is timed; the limits are on outcomes (every connection served, every
byte delivered, buffers and memory bounded).
"""

import asyncio
import resource
import subprocess
import sys
import textwrap

import pytest

CONNECTIONS = 10_000
GIB = 1 << 30
CHUNK = 256 * 1024

# The client: opens CONNECTIONS connections, all held open at once, then sends one byte on each
# and reads its echo, then closes them all. Prints "ok N" with the number of echoes it got.
HOLDING_CLIENT = textwrap.dedent(
    """
    import resource, socket, sys
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port, count = int(sys.argv[1]), int(sys.argv[2])
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        socks.append(s)
    print("connected", flush=True)
    sys.stdin.readline()          # the server has seen them all
    echoed = 0
    for s in socks:
        s.sendall(b"x")
    for s in socks:
        if s.recv(1) == b"x":
            echoed += 1
    for s in socks:
        s.close()
    print("ok", echoed, flush=True)
    """
)

# The reader: waits for a line on stdin before it starts, then reads everything to EOF and
# prints the byte count.
SLOW_READER = textwrap.dedent(
    """
    import socket, sys
    port = int(sys.argv[1])
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    print("connected", flush=True)
    sys.stdin.readline()
    total = 0
    while True:
        data = s.recv(1 << 20)
        if not data:
            break
        total += len(data)
    print(total, flush=True)
    """
)


def _raise_fd_limit(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft, hard


async def _readline(proc):
    return (await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)).strip()


def test_server_holds_ten_thousand_connections(loop):
    soft, hard = _raise_fd_limit(CONNECTIONS + 500)
    open_now = 0
    most = 0
    all_open = loop.create_future()
    all_closed = loop.create_future()

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            nonlocal open_now, most
            self.transport = transport
            open_now += 1
            most = max(most, open_now)
            if most == CONNECTIONS and not all_open.done():
                all_open.set_result(None)

        def data_received(self, data):
            self.transport.write(data)

        def connection_lost(self, exc):
            nonlocal open_now
            open_now -= 1
            if open_now == 0 and all_open.done() and not all_closed.done():
                all_closed.set_result(None)

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=4096)
        port = server.sockets[0].getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDING_CLIENT, str(port), str(CONNECTIONS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert await asyncio.wait_for(_readline(proc), 300) == "connected"
            await asyncio.wait_for(all_open, 300)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            result = await asyncio.wait_for(_readline(proc), 300)
            server.close()
            await asyncio.wait_for(server.wait_closed(), 300)
            open_after_wait_closed = open_now
            # Every connection ends; the stock Server.wait_closed of 3.11 returns as soon as
            # close() has run, without waiting for them (fixed in 3.12), so wait here too.
            await asyncio.wait_for(all_closed, 300)
        finally:
            proc.kill()
            proc.wait()
        return result, open_after_wait_closed

    try:
        result, open_after_wait_closed = loop.run_until_complete(main())
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert result == f"ok {CONNECTIONS}"
    assert most == CONNECTIONS
    assert open_now == 0
    if not type(loop).__module__.startswith("asyncio") or sys.version_info >= (3, 12):
        assert open_after_wait_closed == 0  # wait_closed waited for every connection


def _rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_reader_keeps_the_writer_bounded_for_one_gib(loop):
    high_water = 256 * 1024
    state = {"paused": False, "pauses": 0, "largest_buffer": 0, "sent": 0, "rss_peak": 0}
    done = loop.create_future()

    class Writer(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            transport.set_write_buffer_limits(high=high_water)
            self.chunk = b"z" * CHUNK

        def pause_writing(self):
            state["paused"] = True
            state["pauses"] += 1
            state["rss_peak"] = max(state["rss_peak"], _rss_kib())

        def resume_writing(self):
            state["paused"] = False
            self.pump()

        def pump(self):
            while not state["paused"] and state["sent"] < GIB:
                self.transport.write(self.chunk)
                state["sent"] += CHUNK
                size = self.transport.get_write_buffer_size()
                state["largest_buffer"] = max(state["largest_buffer"], size)
            if state["sent"] >= GIB and not self.transport.is_closing():
                self.transport.close()

        def connection_lost(self, exc):
            if not done.done():
                done.set_result(exc)

    async def main():
        accepted = loop.create_future()

        def on_connect():
            protocol = Writer()
            made = protocol.connection_made

            def connection_made(transport):
                # Resolved once the protocol has its transport, not when it is made (the wake-up
                # of the awaiting task would come first and pump without a transport).
                made(transport)
                accepted.set_result(protocol)

            protocol.connection_made = connection_made
            return protocol

        server = await loop.create_server(on_connect, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-c", SLOW_READER, str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert await asyncio.wait_for(_readline(proc), 60) == "connected"
            writer = await asyncio.wait_for(accepted, 60)
            rss_before = _rss_kib()
            writer.pump()
            # The reader has not started: the writer must be paused, its buffer bounded.
            for _ in range(20):
                await asyncio.sleep(0.01)
            assert state["paused"]
            assert writer.transport.get_write_buffer_size() <= high_water + CHUNK
            proc.stdin.write("go\n")
            proc.stdin.flush()
            exc = await asyncio.wait_for(done, 300)
            received = int(await asyncio.wait_for(_readline(proc), 300))
            server.close()
            await server.wait_closed()
        finally:
            proc.kill()
            proc.wait()
        return rss_before, exc, received

    rss_before, exc, received = loop.run_until_complete(main())
    assert exc is None
    assert received == GIB
    assert state["pauses"] > 1
    assert state["largest_buffer"] <= high_water + CHUNK
    # Flow control, not the 1 GiB, decides the memory: well under 64 MiB of growth.
    assert state["rss_peak"] - rss_before < 64 * 1024
