"""3.14's task introspection from outside the process: `python -m asyncio ps PID` and `pstree
PID` read the running program's task lists from its memory (the C Task and running-loop state
CPython keeps per thread), so a ferroloop program's tasks must show there as on the stock loop."""

import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.skipif(sys.version_info < (3, 14), reason="asyncio ps/pstree are 3.14+")

PROGRAM = textwrap.dedent(
    """
    import asyncio, sys, ferroloop

    async def sleeper():
        await asyncio.sleep(3600)

    async def main():
        async with asyncio.TaskGroup() as group:
            group.create_task(sleeper(), name="ferroloop-sleeper-one")
            group.create_task(sleeper(), name="ferroloop-sleeper-two")
            await asyncio.sleep(0)
            print("ready", flush=True)
            await asyncio.sleep(3600)

    ferroloop.run(main())
    """
)


@pytest.fixture
def running_program():
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def asyncio_tool(command, pid):
    out = subprocess.run(
        [sys.executable, "-m", "asyncio", command, str(pid)], capture_output=True, text=True, timeout=60
    )
    if out.returncode != 0 and "ermission" in out.stderr:
        pytest.skip(f"this machine does not allow reading another process: {out.stderr.strip()}")
    return out


@pytest.mark.parametrize("command", ["ps", "pstree"])
def test_lists_a_running_programs_tasks(running_program, command):
    out = asyncio_tool(command, running_program.pid)
    assert out.returncode == 0, out.stderr
    for name in ("ferroloop-sleeper-one", "ferroloop-sleeper-two"):
        assert name in out.stdout, out.stdout
    assert "sleeper" in out.stdout
