"""The speed tricks that read CPython's private layouts (src/cpython/): which this build uses,
and `FERROLOOP_LAYOUT_READS=0` turning all of them off while the loop keeps working. A trick
that switched itself off (a failed probe, a version it does not know) shows here rather than
only as lost speed."""

import os
import subprocess
import sys
import sysconfig
import textwrap

import ferroloop

OFF = os.environ.get("FERROLOOP_LAYOUT_READS") == "0"
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def expected_tricks():
    on = not OFF
    return {
        "socket_fd": on,
        # Taking a reference to a slot's object needs the GIL.
        "socket_io_refs": on and not FREE_THREADED,
        "context_sharing": on,
        # The thread state's current Context, found by a probe (not on free-threaded builds).
        "current_context": on and not FREE_THREADED,
        # Allocation outside the collector's count reads the GIL build's GC state.
        "uncounted_handles": on and not FREE_THREADED,
        # Reads the dict and instance layouts of 3.11 and 3.13+; 3.12 (not testable here) and
        # free-threaded builds look the method up.
        "method_cache": on and sys.version_info[:2] != (3, 12) and not FREE_THREADED,
        "bytes_reuse": on,
    }


def test_the_tricks_this_build_uses():
    assert ferroloop._core._tricks() == expected_tricks()


def test_layout_reads_off_turns_every_trick_off_and_the_loop_works():
    code = textwrap.dedent(
        """
        import asyncio, contextvars, socket, ferroloop
        assert not any(ferroloop._core._tricks().values()), ferroloop._core._tricks()
        var = contextvars.ContextVar("var", default="unset")

        class Echo(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport = transport

            def data_received(self, data):
                self.transport.write(data)

        async def main():
            loop = asyncio.get_running_loop()
            seen = []
            var.set("a")
            loop.call_soon(lambda: seen.append(var.get()))
            var.set("b")
            loop.call_soon(lambda: seen.append(var.get()))
            await asyncio.sleep(0)
            server = await loop.create_server(Echo, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for size in (10, 3000, 70000):
                writer.write(b"x" * size)
                assert await reader.readexactly(size) == b"x" * size
            writer.close()
            server.close()
            await server.wait_closed()
            return seen

        print(ferroloop.run(main()))
        """
    )
    env = dict(os.environ, FERROLOOP_LAYOUT_READS="0")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['a',", "'b']"]
