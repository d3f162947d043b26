"""Fork and threads: a child forked while a loop runs makes and runs its own loop (a server, a
subprocess, a signal handler) and leaves the parent's alone; eight loops run in eight threads at
once; eight threads calling `call_soon_threadsafe` at once each keep their order, nothing lost.

The fork cases run in a child interpreter of their own, so pytest's threads are not copied."""

import asyncio
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import ferroloop

ROOT = Path(__file__).resolve().parent.parent

FORK = """
    import asyncio, os, signal, sys, warnings
    import ferroloop
    warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads alive

    async def child_main():
        async def echo(reader, writer):
            writer.write(await reader.read(100))
            await writer.drain()
            writer.close()
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"from the child")
        echoed = await reader.read(100)
        writer.close()
        server.close()
        await server.wait_closed()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "print('sub')", stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        got = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, got.set)
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.wait_for(got.wait(), 10)
        return echoed == b"from the child" and out.strip() == b"sub"

    def in_child():
        try:
            if sys.version_info < (3, 12):  # what asyncio does in a forked child from 3.12 on
                asyncio.events._set_running_loop(None)
                signal.set_wakeup_fd(-1)
            loop = ferroloop.new_event_loop()
            ok = loop.run_until_complete(child_main())
            loop.close()
            os._exit(0 if ok else 3)
        except BaseException:
            import traceback
            traceback.print_exc()
            os._exit(4)

    async def parent_main():
        ticks = []
        async def ticker():
            while True:
                ticks.append(1)
                await asyncio.sleep(0.01)
        task = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        pid = os.fork()
        if pid == 0:
            in_child()
        before = len(ticks)
        status = await asyncio.get_running_loop().run_in_executor(None, os.waitpid, pid, 0)
        await asyncio.sleep(0.05)
        task.cancel()
        return os.waitstatus_to_exitcode(status[1]), len(ticks) > before

    with ferroloop.watchdog(5.0, file=None) if WATCHDOG else open(os.devnull) as _:
        print(*ferroloop.run(parent_main()))
"""


def run_fork(watchdog):
    code = f"WATCHDOG = {watchdog}\n" + textwrap.dedent(FORK)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_a_child_forked_from_a_running_loop_runs_its_own():
    # The child's status, then whether the parent's loop went on ticking meanwhile.
    assert run_fork(False) == ["0", "True"]


def test_a_fork_under_a_running_watchdog_leaves_the_child_free():
    assert run_fork(True) == ["0", "True"]


def test_eight_loops_in_eight_threads_at_once():
    results = {}
    barrier = threading.Barrier(8)

    async def work(n):
        barrier.wait(timeout=30)  # all eight loops are running before any goes on
        total = 0
        for i in range(200):
            fut = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0.0005, fut.set_result, i)
            total += await fut
        rsock, wsock = __import__("socket").socketpair()
        reader, writer = await asyncio.open_connection(sock=rsock)
        wsock.sendall(str(n).encode())
        got = await reader.read(10)
        writer.close()
        wsock.close()
        return total, got.decode()

    def thread(n):
        results[n] = ferroloop.run(work(n))

    threads = [threading.Thread(target=thread, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {n: (sum(range(200)), str(n)) for n in range(8)}


def test_call_soon_threadsafe_from_eight_threads_keeps_each_order():
    loop = ferroloop.new_event_loop()
    seen = []
    per_thread = 5000

    def post(n):
        for i in range(per_thread):
            loop.call_soon_threadsafe(seen.append, (n, i))

    async def main():
        threads = [threading.Thread(target=post, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads) or len(seen) < 8 * per_thread:
            await asyncio.sleep(0.001)
        for t in threads:
            t.join()

    try:
        loop.run_until_complete(asyncio.wait_for(main(), 60))
    finally:
        loop.close()
    assert len(seen) == 8 * per_thread
    for n in range(8):
        assert [i for m, i in seen if m == n] == list(range(per_thread))
