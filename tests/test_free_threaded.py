"""Loops in many threads at once, as free-threaded Python (3.14t, 3.15t) runs them on every core.

The stress test runs on every build (with the GIL the threads take turns, which is still eight
loops sharing one process); without the GIL it is what exercises the locks that stand in for
it (`src/cpython/thread_lock.rs`): eight loops serve one `reuse_port` port, connect to each
other, use TLS, timers and subprocesses, and flood each other with `call_soon_threadsafe`,
`run_coroutine_threadsafe` and handles cancelled from the sending thread.
"""

import asyncio
import gc
import os
import socket
import subprocess
import sys
import sysconfig
import threading
import time

import pytest

import ferroloop
import tls_certs
from util import fd_count

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
LOOPS = 8
# Calls each loop sends to each other loop per round; a tenth under `-X dev`, where every handle
# records the stack it was made on.
STORM = 400 if sys.flags.dev_mode else 4000
# Rounds before fds and RSS are taken as the baseline: the allocators' arenas grow to their
# working size over the first two (seen up to +20 MiB under PYTHONMALLOC=debug).
WARM_UP = 2


@pytest.mark.skipif(not FREE_THREADED, reason="a free-threaded build only")
def test_importing_and_running_leaves_the_gil_off():
    """A module that does not declare itself GIL-free turns the GIL back on when imported, with a
    RuntimeWarning; `-W error` makes that warning fail the child."""
    code = (
        "import asyncio, sys, ferroloop\n"
        "async def main():\n"
        "    await asyncio.sleep(0)\n"
        "    r, w = await asyncio.open_connection(*server.sockets[0].getsockname())\n"
        "    w.close()\n"
        "async def serve():\n"
        "    global server\n"
        "    server = await asyncio.start_server(lambda r, w: w.close(), '127.0.0.1', 0)\n"
        "    await main()\n"
        "ferroloop.run(serve())\n"
        "print(sys._is_gil_enabled())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    assert proc.stderr == ""


def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Round:
    """One round of the stress: LOOPS loops in LOOPS threads, and what each received."""

    def __init__(self, port, contexts):
        self.port = port
        self.server_ctx, self.client_ctx = contexts
        self.loops = [None] * LOOPS
        self.ready = threading.Barrier(LOOPS, timeout=60)
        # received[n]: (sender, seq) of every storm call loop n ran, in the order it ran them.
        self.received = [[] for _ in range(LOOPS)]
        # Handles cancelled from the sending thread, and any that ran after that.
        self.cancelled = set()
        self.ran_after_cancel = []
        self.results = {}
        self.errors = []

    async def echo(self, reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def storm(self, n, done):
        """Sends STORM calls to every other loop, cancelling every fifth right after sending."""
        me = asyncio.get_running_loop()
        for seq in range(STORM):
            for m, other in enumerate(self.loops):
                if m == n:
                    continue
                handle = other.call_soon_threadsafe(self.received[m].append, (n, seq))
                if seq % 5 == 4:
                    token = (n, m, seq)
                    doomed = other.call_soon_threadsafe(self.may_run, token)
                    doomed.cancel()
                    assert doomed.cancelled()
                    # From here on, the callback must not start.
                    self.cancelled.add(token)
                del handle
            if seq % 100 == 0:
                await asyncio.sleep(0)
        # Then one coroutine run on each other loop, answered here.
        futures = [
            asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.answer(n), other), loop=me)
            for m, other in enumerate(self.loops)
            if m != n
        ]
        answers = await asyncio.gather(*futures)
        done.set()
        return answers

    def may_run(self, token):
        """Runs only if it won the race with its cancel(), which waits for it to return."""
        if token in self.cancelled:
            self.ran_after_cancel.append(token)

    async def answer(self, n):
        await asyncio.sleep(0.001)
        return (n, threading.get_ident())

    async def clients(self, n):
        """Plain and TLS round trips to the shared port, served by whichever loop the kernel
        picks."""
        total = 0
        for i in range(20):
            tls = i % 4 == 3
            reader, writer = await asyncio.open_connection(
                "127.0.0.1",
                self.port[1 if tls else 0],
                ssl=self.client_ctx if tls else None,
                server_hostname="localhost" if tls else None,
            )
            payload = f"{n}:{i}:".encode() * (1 + i * 50)
            writer.write(payload)
            await writer.drain()
            got = await reader.readexactly(len(payload))
            assert got == payload
            writer.close()
            await writer.wait_closed()
            total += len(got)
        return total

    async def timers(self):
        loop = asyncio.get_running_loop()
        fired = []
        start = loop.time()
        for i in range(50):
            loop.call_at(start + (50 - i) * 0.001, fired.append, 50 - i)
        await asyncio.sleep(0.1)
        return fired == sorted(fired)

    async def child(self, n):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", f"print({n} * 2)", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        return int(out)

    async def main(self, n):
        loop = asyncio.get_running_loop()
        self.loops[n] = loop
        plain = await asyncio.start_server(
            self.echo, "127.0.0.1", self.port[0], reuse_port=True
        )
        tls = await asyncio.start_server(
            self.echo, "127.0.0.1", self.port[1], reuse_port=True, ssl=self.server_ctx
        )
        await loop.run_in_executor(None, self.ready.wait)
        done = asyncio.Event()
        results = await asyncio.gather(
            self.storm(n, done), self.clients(n), self.timers(), self.child(n)
        )
        # Every loop keeps serving until all have finished sending to it.
        await loop.run_in_executor(None, self.ready.wait)
        plain.close()
        tls.close()
        await plain.wait_closed()
        await tls.wait_closed()
        return results

    def thread(self, n):
        try:
            self.results[n] = ferroloop.run(self.main(n))
        except BaseException as e:  # reported by the test, not lost in the thread
            self.errors.append((n, repr(e)))
            self.ready.abort()

    def run(self):
        threads = [threading.Thread(target=self.thread, args=(n,)) for n in range(LOOPS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        assert self.errors == []


def free_port_pair():
    ports = []
    socks = []
    for _ in range(2):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return tuple(ports)


def test_eight_loops_in_eight_threads_serve_and_flood_each_other():
    contexts = tls_certs.server_context(), tls_certs.client_context()
    fds = rss = None
    for round_number in range(WARM_UP + 3):
        r = Round(free_port_pair(), contexts)
        r.run()
        for n in range(LOOPS):
            answers, served, timers_in_order, child = r.results[n]
            assert all(who == n for who, _ in answers)
            assert len({ident for _, ident in answers}) == LOOPS - 1
            assert served == sum(len(f"{n}:{i}:".encode()) * (1 + i * 50) for i in range(20))
            assert timers_in_order
            assert child == n * 2
            # Nothing lost, each sender's order kept.
            got = r.received[n]
            assert len(got) == (LOOPS - 1) * STORM
            for m in range(LOOPS):
                if m != n:
                    assert [seq for s, seq in got if s == m] == list(range(STORM))
        assert r.ran_after_cancel == []
        del r
        gc.collect()
        time.sleep(0.2)  # the executor's and the children's threads wind down
        if round_number == WARM_UP - 1:
            fds, rss = fd_count(), rss_mib()
    # Three more rounds after the warm-up leave no fd and, within the allocators' noise (which
    # the debug allocator doubles), no memory.
    assert fd_count() <= fds
    assert rss_mib() < rss + max(32, rss / 4)


# --- the cross-thread entry points, hammered while the loop runs ---------------------------------

THREADS = 4
ROUNDS = 300 if sys.flags.dev_mode else 3000


def run_while_ticking(loop, seconds_cap, done):
    """Runs `loop` until `done()` holds, with a timer ticking so that calls made without a
    wake-up (`stop()`, plain `call_soon` from another thread) are seen within a millisecond."""

    async def main():
        deadline = loop.time() + seconds_cap
        while not done() and loop.time() < deadline:
            await asyncio.sleep(0.001)

    loop.run_until_complete(main())


def hammer(target, *args):
    threads = [threading.Thread(target=target, args=args) for _ in range(THREADS)]
    for t in threads:
        t.start()
    return threads


@pytest.mark.nodebug
def test_call_soon_from_other_threads_is_safe_outside_debug_mode(loop):
    """Not thread-safe by contract, and the stock loop does not check it outside debug mode;
    without the GIL it must still never corrupt the loop: every call lands, in each thread's
    order."""
    got = [[] for _ in range(THREADS)]

    def send(_):
        n = send.counter.pop()
        for i in range(ROUNDS):
            loop.call_soon(got[n].append, i)

    send.counter = list(range(THREADS))
    threads = hammer(send, None)
    run_while_ticking(loop, 60, lambda: all(len(g) == ROUNDS for g in got))
    for t in threads:
        t.join()
    assert got == [list(range(ROUNDS))] * THREADS


def test_timers_cancelled_from_other_threads_while_the_loop_runs(loop):
    """Plain handles cancelled by other threads while the loop fires or drops them. Unlike
    `call_soon_threadsafe`'s handles they promise no order between a cancel() and a run under
    way; what holds is that each ran at most once, every one ends cancelled, nothing crashed."""
    ran = []
    handles = [loop.call_later(0.001 * (i % 50), ran.append, i) for i in range(THREADS * ROUNDS)]

    def cancel(part):
        for i in range(part, len(handles), THREADS):
            handles[i].cancel()

    threads = [threading.Thread(target=cancel, args=(p,)) for p in range(THREADS)]
    for t in threads:
        t.start()
    run_while_ticking(loop, 60, lambda: not any(t.is_alive() for t in threads))
    run_while_ticking(loop, 0.1, lambda: False)
    for t in threads:
        t.join()
    assert all(h.cancelled() for h in handles)
    assert len(set(ran)) == len(ran)


def test_stop_from_another_thread_stops_the_loop(loop):
    ticks = []

    def tick():
        ticks.append(None)
        loop.call_later(0.001, tick)

    loop.call_soon(tick)
    stopper = threading.Timer(0.05, loop.stop)
    stopper.start()
    loop.run_forever()
    stopper.join()
    assert ticks
    assert not loop.is_running()


def test_close_from_another_thread_while_running_is_refused(loop):
    errors = []

    def close():
        try:
            loop.close()
        except RuntimeError as e:
            errors.append(str(e))
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(threading.Thread(target=close).start)
    loop.run_forever()
    assert errors == ["Cannot close a running event loop"]
    assert not loop.is_closed()


def test_a_wrong_thread_call_in_debug_mode_gets_the_stock_error(loop):
    loop.set_debug(True)
    errors = []

    def wrong():
        for method in (loop.call_soon, lambda cb: loop.call_later(0, cb)):
            try:
                method(print)
            except RuntimeError as e:
                errors.append(str(e))
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(threading.Thread(target=wrong).start)
    loop.run_forever()
    message = "Non-thread-safe operation invoked on an event loop other than the current one"
    assert errors == [message, message]


def test_executor_and_coroutine_results_from_many_threads(loop):
    """run_in_executor and run_coroutine_threadsafe, many at once: every result comes back to
    its own caller."""

    async def double(x):
        await asyncio.sleep(0)
        return 2 * x

    def submit(x):
        return asyncio.run_coroutine_threadsafe(double(x), loop).result(30)

    async def main():
        return await asyncio.gather(*(loop.run_in_executor(None, submit, x) for x in range(200)))

    assert loop.run_until_complete(main()) == [2 * x for x in range(200)]
