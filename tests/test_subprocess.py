"""subprocess_exec / subprocess_shell and asyncio.create_subprocess_exec/shell, on both loops:
the stock argument checks and their messages, the order of the protocol's calls, pipes to and
from the child, return codes (negative for a signal), send_signal/terminate/kill, closing the
transport (killing a running child, sparing a finished one), ProcessLookupError once the
process is gone, Popen's errors and keyword arguments, and many children at once.

ferroloop waits for its children through pidfds, without threads; its own tests check that no
thread is started, and that the waiting-thread fallback works where pidfd_open is missing or
refused.

Children are Python one-liners or /bin/sh commands; nothing here measures time.

Reference: CPython 3.11 asyncio base_events.subprocess_exec/subprocess_shell,
base_subprocess.BaseSubprocessTransport, unix_events._UnixSubprocessTransport and the child
watchers, asyncio.subprocess.
"""

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading

import pytest
from util import run

PY = sys.executable
PIPE = subprocess.PIPE


class Recorder(asyncio.SubprocessProtocol):
    """Records every call; `done` resolves when connection_lost is called."""

    def __init__(self):
        self.events = []
        self.output = {1: bytearray(), 2: bytearray()}
        self.transport = None
        self.done = asyncio.get_event_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def pipe_data_received(self, fd, data):
        self.output[fd] += data

    def pipe_connection_lost(self, fd, exc):
        self.events.append(("pipe lost", fd, exc))

    def process_exited(self):
        self.events.append("exited")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.done.set_result(exc)


ARGUMENT_ERRORS = [
    ({"universal_newlines": True}, "universal_newlines must be False"),
    ({"bufsize": 1}, "bufsize must be 0"),
    ({"text": True}, "text must be False"),
    ({"encoding": "utf-8"}, "encoding must be None"),
    ({"errors": "strict"}, "errors must be None"),
    # The first refusal wins, in the stock order.
    ({"errors": "strict", "universal_newlines": True}, "universal_newlines must be False"),
    ({"encoding": "utf-8", "bufsize": 1}, "bufsize must be 0"),
]


class TestArguments:
    @pytest.mark.parametrize("kwargs, message", ARGUMENT_ERRORS + [({"shell": True}, "shell must be False")])
    def test_exec_refusals(self, loop, kwargs, message):
        made = []
        coro = loop.subprocess_exec(lambda: made.append(1), PY, "-c", "pass", **kwargs)
        with pytest.raises(ValueError) as info:
            run(loop, coro)
        assert str(info.value) == message
        assert made == []

    @pytest.mark.parametrize("kwargs, message", ARGUMENT_ERRORS + [({"shell": False}, "shell must be True")])
    def test_shell_refusals(self, loop, kwargs, message):
        made = []
        with pytest.raises(ValueError) as info:
            run(loop, loop.subprocess_shell(lambda: made.append(1), "exit 0", **kwargs))
        assert str(info.value) == message
        assert made == []

    def test_shell_wants_a_string(self, loop):
        with pytest.raises(ValueError) as info:
            run(loop, loop.subprocess_shell(Recorder, ["echo", "hi"]))
        assert str(info.value) == "cmd must be a string"

    def test_shell_flag_is_checked_after_universal_newlines(self, loop):
        with pytest.raises(ValueError) as info:
            run(loop, loop.subprocess_exec(Recorder, PY, shell=True, universal_newlines=True))
        assert str(info.value) == "universal_newlines must be False"

    def test_text_mode_of_create_subprocess(self, loop):
        async def main():
            with pytest.raises(ValueError, match="^text must be False$"):
                await asyncio.create_subprocess_exec(PY, "-c", "pass", text=True)
            with pytest.raises(ValueError, match="^encoding must be None$"):
                await asyncio.create_subprocess_shell("exit 0", encoding="utf-8")

        run(loop, main())


class TestProtocol:
    def test_exec_calls_in_order(self, loop):
        script = "import sys; sys.stdout.write('out'); sys.stderr.write('err'); sys.exit(5)"

        async def main():
            transport, protocol = await loop.subprocess_exec(Recorder, PY, "-c", script, stdin=None)
            assert protocol.transport is transport
            assert protocol.events == ["made"]
            await protocol.done
            return transport, protocol

        transport, protocol = run(loop, main())
        assert protocol.output == {1: b"out", 2: b"err"}
        events = protocol.events
        assert events[0] == "made" and events[-1] == "lost"
        pipes_lost = sorted(e for e in events if isinstance(e, tuple))
        assert pipes_lost == [("pipe lost", 1, None), ("pipe lost", 2, None)]
        assert "exited" in events
        assert transport.get_returncode() == 5
        transport.close()

    def test_pipes_and_getters(self, loop):
        async def main():
            transport, protocol = await loop.subprocess_exec(
                Recorder, PY, "-c", "import sys; sys.stdout.write(sys.stdin.read())", stderr=None
            )
            pid = transport.get_pid()
            assert isinstance(pid, int) and pid > 0
            assert transport.get_returncode() is None
            assert transport.get_extra_info("subprocess").pid == pid
            stdin = transport.get_pipe_transport(0)
            assert isinstance(stdin, asyncio.WriteTransport)
            assert isinstance(transport.get_pipe_transport(1), asyncio.ReadTransport)
            assert transport.get_pipe_transport(2) is None
            stdin.write(b"echoed back")
            stdin.close()
            await protocol.done
            return transport, protocol

        transport, protocol = run(loop, main())
        assert protocol.output[1] == b"echoed back"
        assert transport.get_returncode() == 0
        assert transport.is_closing() is False
        transport.close()
        assert transport.is_closing()

    def test_shell(self, loop):
        async def main():
            transport, protocol = await loop.subprocess_shell(Recorder, "echo from sh; exit 3", stdin=None)
            await protocol.done
            transport.close()
            return transport, protocol

        transport, protocol = run(loop, main())
        assert protocol.output[1] == b"from sh\n"
        assert transport.get_returncode() == 3

    def test_stderr_to_stdout(self, loop):
        script = "import sys; sys.stderr.write('err'); sys.stderr.flush(); sys.stdout.write('out')"

        async def main():
            transport, protocol = await loop.subprocess_exec(
                Recorder, PY, "-c", script, stdin=None, stderr=subprocess.STDOUT
            )
            assert transport.get_pipe_transport(2) is None
            await protocol.done
            transport.close()
            return protocol

        protocol = run(loop, main())
        assert protocol.output == {1: b"errout", 2: b""}

    def test_no_pipes(self, loop):
        async def main():
            transport, protocol = await loop.subprocess_exec(
                Recorder, PY, "-c", "raise SystemExit(9)", stdin=None, stdout=None, stderr=None
            )
            await protocol.done
            transport.close()
            return transport, protocol

        transport, protocol = run(loop, main())
        assert protocol.events == ["made", "exited", "lost"]
        assert transport.get_returncode() == 9


class TestProcess:
    def test_communicate(self, loop):
        script = "import sys; sys.stdout.write(sys.stdin.read().upper()); sys.exit(7)"

        async def main():
            proc = await asyncio.create_subprocess_exec(PY, "-c", script, stdin=PIPE, stdout=PIPE)
            out, err = await proc.communicate(b"shout")
            return proc, out, err

        proc, out, err = run(loop, main())
        assert (out, err) == (b"SHOUT", None)
        assert proc.returncode == 7

    def test_line_by_line(self, loop):
        script = "import sys\nfor line in sys.stdin:\n    print(len(line), flush=True)"

        async def main():
            proc = await asyncio.create_subprocess_exec(PY, "-c", script, stdin=PIPE, stdout=PIPE)
            answers = []
            for line in (b"a\n", b"bbb\n", b"ccccc\n"):
                proc.stdin.write(line)
                await proc.stdin.drain()
                answers.append(await proc.stdout.readline())
            proc.stdin.close()
            assert await proc.stdout.read() == b""
            return answers, await proc.wait()

        answers, code = run(loop, main())
        assert answers == [b"2\n", b"4\n", b"6\n"]
        assert code == 0

    def test_large_output(self, loop):
        size = 4 * 1024 * 1024

        async def main():
            proc = await asyncio.create_subprocess_exec(
                PY, "-c", f"import sys; sys.stdout.buffer.write(b'o' * {size})", stdout=PIPE
            )
            out, _ = await proc.communicate()
            return out, proc.returncode

        out, code = run(loop, main())
        assert len(out) == size and code == 0

    def test_child_that_does_not_read_its_input(self, loop):
        async def main():
            proc = await asyncio.create_subprocess_exec(PY, "-c", "pass", stdin=PIPE, stdout=PIPE)
            out, _ = await proc.communicate(b"i" * (4 * 1024 * 1024))  # the broken pipe is ignored
            return out, proc.returncode

        assert run(loop, main()) == (b"", 0)

    @pytest.mark.parametrize(
        "action, expected",
        [
            ("kill", -signal.SIGKILL),
            ("terminate", -signal.SIGTERM),
            ("send_signal", -signal.SIGUSR1),
        ],
    )
    def test_signals(self, loop, action, expected):
        async def main():
            proc = await asyncio.create_subprocess_exec(
                PY, "-c", "import sys, time; print('ready', flush=True); time.sleep(600)", stdout=PIPE
            )
            assert await proc.stdout.readline() == b"ready\n"
            assert proc.returncode is None
            if action == "send_signal":
                proc.send_signal(signal.SIGUSR1)
            else:
                getattr(proc, action)()
            return await proc.wait()

        assert run(loop, main()) == expected

    def test_signals_after_exit_raise_process_lookup_error(self, loop):
        async def main():
            proc = await asyncio.create_subprocess_exec(PY, "-c", "pass")
            assert await proc.wait() == 0
            for action in (proc.kill, proc.terminate, lambda: proc.send_signal(signal.SIGUSR1)):
                with pytest.raises(ProcessLookupError):
                    action()

        run(loop, main())

    def test_shell_process(self, loop):
        async def main():
            proc = await asyncio.create_subprocess_shell(
                "read x; echo got $x; exit 4", stdin=PIPE, stdout=PIPE
            )
            out, _ = await proc.communicate(b"it\n")
            return out, proc.returncode

        assert run(loop, main()) == (b"got it\n", 4)

    def test_popen_keyword_arguments(self, loop):
        script = "import os; print(os.getcwd(), os.environ['FERRO_TEST'], end='')"

        async def main(cwd):
            proc = await asyncio.create_subprocess_exec(
                PY, "-c", script, stdout=PIPE, cwd=cwd, env={**os.environ, "FERRO_TEST": "yes"}
            )
            out, _ = await proc.communicate()
            return out.decode()

        with tempfile.TemporaryDirectory() as cwd:
            assert run(loop, main(cwd)) == f"{os.path.realpath(cwd)} yes"

    def test_missing_program(self, loop):
        async def main():
            with pytest.raises(FileNotFoundError):
                await asyncio.create_subprocess_exec("/nonexistent/ferroloop-test-program")

        run(loop, main())

    def test_many_children_at_once(self, loop):
        async def one(i):
            proc = await asyncio.create_subprocess_exec("/bin/sh", "-c", f"exit {i}")
            return await proc.wait()

        async def main():
            return await asyncio.gather(*(one(i) for i in range(20)))

        assert run(loop, main()) == list(range(20))


class TestClose:
    def test_close_kills_a_running_child(self, loop):
        async def main():
            transport, protocol = await loop.subprocess_exec(
                Recorder, PY, "-c", "import time; time.sleep(600)", stdin=None, stdout=None, stderr=None
            )
            transport.close()
            assert transport.is_closing()
            await protocol.done
            return transport

        assert run(loop, main()).get_returncode() == -signal.SIGKILL

    def test_close_spares_a_finished_child(self, loop):
        async def main():
            transport, protocol = await loop.subprocess_exec(
                Recorder, PY, "-c", "pass", stdin=None, stdout=None, stderr=None
            )
            await protocol.done
            transport.close()
            return transport

        assert run(loop, main()).get_returncode() == 0

    def test_close_closes_the_pipes(self, loop):
        async def main():
            transport, protocol = await loop.subprocess_exec(
                Recorder, PY, "-c", "import sys; sys.stdin.read()", stderr=None
            )
            pipes = [transport.get_pipe_transport(fd) for fd in (0, 1)]
            transport.close()
            await protocol.done
            return pipes

        for pipe in run(loop, main()):
            assert pipe.is_closing()


# From 3.14 the loop waits through the stock child watchers (`loop._watcher`), as the stock loop
# does; these test ferroloop's own waiting, used before.
own_waiting = pytest.mark.skipif(
    sys.version_info >= (3, 14), reason="3.14+ waits through the stock child watchers"
)


class TestFerroloopChildWaiting:
    def test_no_thread_per_child(self, ferro_loop):
        if not hasattr(os, "pidfd_open"):
            pytest.skip("no pidfd_open here")

        async def main():
            before = threading.active_count()
            procs = [
                await asyncio.create_subprocess_exec(PY, "-c", "import sys; sys.stdin.read()", stdin=PIPE)
                for _ in range(3)
            ]
            during = threading.active_count()
            for proc in procs:
                proc.stdin.close()
            codes = [await proc.wait() for proc in procs]
            return before, during, codes

        before, during, codes = run(ferro_loop, main())
        assert during == before
        assert codes == [0, 0, 0]

    @pytest.mark.parametrize("how", ["missing", "refused"])
    @own_waiting
    def test_thread_fallback(self, ferro_loop, monkeypatch, how):
        if how == "missing":
            monkeypatch.delattr(os, "pidfd_open", raising=False)
        else:

            def refused(pid, flags=0):
                raise PermissionError("pidfd_open blocked by policy")

            monkeypatch.setattr(os, "pidfd_open", refused)

        async def main():
            proc = await asyncio.create_subprocess_exec(
                PY, "-c", "import sys; sys.exit(sys.stdin.read().count('x'))", stdin=PIPE
            )
            waiters = [t for t in threading.enumerate() if t.name.startswith("ferroloop-waitpid-")]
            await proc.communicate(b"xxx")
            killed = await asyncio.create_subprocess_exec(PY, "-c", "import time; time.sleep(600)")
            killed.kill()
            return waiters, proc.returncode, await killed.wait()

        waiters, code, killed_code = run(ferro_loop, main())
        assert len(waiters) == 1
        assert code == 3
        assert killed_code == -signal.SIGKILL

    @own_waiting
    def test_child_reaped_by_popen_keeps_its_return_code(self, ferro_loop, caplog):
        """The child exits and `close()` reaps it through Popen.poll() before the loop sees its
        pidfd: the return code comes from Popen, without the "already read" warning (the stock
        loop reports 255 there, or not, depending on a race with its waiting thread)."""

        async def main():
            transport, protocol = await ferro_loop.subprocess_exec(
                Recorder, PY, "-c", "raise SystemExit(6)", stdin=None, stdout=None, stderr=None
            )
            pid = transport.get_pid()
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
            transport.close()  # Popen.poll() reaps it
            await protocol.done
            return transport

        transport = run(ferro_loop, main())
        assert transport.get_returncode() == 6
        assert not [r for r in caplog.records if "exit status already read" in r.getMessage()]
