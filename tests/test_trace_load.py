"""A real program traced: a `start_server` echo server under the project's load generator
(benches/loadgen) for 10 s. The trace stays within its ring's memory bound, and its JSON is what
Perfetto reads: every event has its phase's fields, and each task's slices nest."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ferroloop._trace_json import TASK_TID_BASE

ROOT = Path(__file__).resolve().parent.parent
LOADGEN_DIR = ROOT / "benches" / "loadgen"
LOADGEN = LOADGEN_DIR / "target" / "release" / "loadgen"
CAPACITY = 100_000

SERVER = textwrap.dedent(
    """
    import asyncio, json, os, sys, ferroloop

    def rss_kib():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def main(session):
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        said = asyncio.Event()

        def heard():
            os.read(0, 64)
            said.set()

        asyncio.get_running_loop().add_reader(0, heard)
        print(server.sockets[0].getsockname()[1], flush=True)
        await said.wait()  # the load is on, the ring has filled: the baseline
        said.clear()
        before = rss_kib()
        await said.wait()
        print(json.dumps({"before": before, "after": rss_kib(),
                          "bound": session._tracer.bound_bytes,
                          "pushed": session._tracer.position()[0]}), flush=True)
        server.close()

    with ferroloop.trace(sys.argv[1], capacity=int(sys.argv[2]), summary=False) as session:
        ferroloop.run(main(session))
    """
)


def build_loadgen():
    subprocess.run(
        ["cargo", "build", "--release", "--quiet"],
        cwd=LOADGEN_DIR,
        check=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def loaded_trace(tmp_path_factory):
    build_loadgen()
    out = tmp_path_factory.mktemp("load") / "server"
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(out), str(CAPACITY)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        port = int(server.stdout.readline())
        load = subprocess.Popen(
            [str(LOADGEN), "echo", f"127.0.0.1:{port}", "8", "512", "10"],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)  # the warm-up second and two more: far past CAPACITY events
        server.stdin.write("go\n")
        server.stdin.flush()
        report = json.loads(load.communicate(timeout=60)[0])
        server.stdin.write("stop\n")
        server.stdin.flush()
        figures = json.loads(server.stdout.readline())
        assert server.wait(timeout=120) == 0
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGKILL)
            server.wait()
    return out, report, figures


def test_the_trace_stays_within_the_rings_bound(loaded_trace):
    out, report, figures = loaded_trace
    assert report["requests"] > 1000
    # The ring had filled long before the baseline, and was overwritten many times after.
    assert figures["pushed"] > 5 * CAPACITY
    grown_kib = figures["after"] - figures["before"]
    assert grown_kib * 1024 < figures["bound"] + 8 * 1024 * 1024, figures
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["otherData"]["dropped_events"] > 0


def test_every_event_has_its_phases_fields_and_task_slices_nest(loaded_trace):
    out, _, _ = loaded_trace
    doc = json.loads(out.with_suffix(".json").read_text())
    tracks = {}
    for event in doc["traceEvents"]:
        assert {"name", "ph", "pid", "tid", "ts"} <= set(event), event
        assert isinstance(event["ts"], (int, float)) and event["ts"] >= 0
        if event["ph"] == "X":
            assert isinstance(event["dur"], (int, float)) and event["dur"] >= 0, event
            assert isinstance(event["cat"], str) and isinstance(event["args"], dict)
            if event["tid"] >= TASK_TID_BASE:
                tracks.setdefault(event["tid"], []).append(event)
        elif event["ph"] == "C":
            assert event["args"] and all(isinstance(v, (int, float)) for v in event["args"].values())
        else:
            assert event["ph"] == "M" and "args" in event, event
    # The echo handlers: a task per connection, waiting on stream reads between steps.
    assert len(tracks) >= 8
    for events in tracks.values():
        events.sort(key=lambda e: e["ts"])
        for before, after in zip(events, events[1:]):
            assert after["ts"] >= before["ts"] + before["dur"] - 1e-3, (before, after)
    cats = {e["cat"] for events in tracks.values() for e in events}
    assert {"running", "io"} <= cats
    counters = {e["name"] for e in doc["traceEvents"] if e["ph"] == "C"}
    assert counters >= {"ready queue", "bytes"}
