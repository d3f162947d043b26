"""User-space instructions per request of each loop's server, counted by callgrind: the steady
counterpart of `run.py`'s user CPU time per request.

    python benches/net/instructions.py [--cases ...] [--loops ...] [--seconds 4]

Why: on this shared 2-core machine the user CPU time per request that `run.py` reads from
/proc moves by 10-20% from one round to the next (the kernel samples user and system time at
clock ticks, and caches and neighbours vary), so a 10% change cannot be seen in a few rounds.
An instruction count does not move: the same build gives the same figure to within 0.5%.
It is not time: a cache miss costs more than an add, and a copy done with `rep movsb` (glibc's
`memcpy` for large blocks) counts one instruction per byte, so a loop that copies every message
shows it here far more than in its CPU time. Both figures are reported.

Each server runs under `valgrind --tool=callgrind` (install valgrind to use this), with the
same Rust load generator as `run.py`. Counting starts after a one-second warm-up
(`callgrind_control -z`) and ends when the client stops (`callgrind_control -d`); the figure is
that count divided by the requests the client completed meanwhile. Kernel work (system calls,
the TCP stack) is not counted. The server is some 5x slower under callgrind, so more events
arrive per wake-up than at full speed: compare loops with each other, not with `run.py`.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import available, build_loadgen, cases, compile_bytecode, start_client, stop_server

HERE = Path(__file__).resolve().parent
DEFAULT_CASES = ("echo-protocol-1k-c32", "echo-protocol-10k-c32", "echo-protocol-100k-c32", "http-c64")


def dumped_instructions(path):
    for line in path.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no instruction count in {path}")


def sample(loop, case, seconds):
    mode = cases()[case][0]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             sys.executable, str(HERE / "server.py"), loop, mode],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            client = start_client(server, loop, case, seconds)
            time.sleep(1.0)  # the client's warm-up second
            subprocess.run(["callgrind_control", "-z", str(server.pid)], capture_output=True, check=True)
            result, _ = client.communicate(timeout=600)
            subprocess.run(["callgrind_control", "-d", str(server.pid)], capture_output=True, check=True)
            requests = json.loads(result)["requests"]
            # The explicit dump is the first numbered file; the plain one is written at exit.
            return dumped_instructions(Path(f"{out}.1")) / requests
        finally:
            stop_server(server, timeout=60)  # a threaded server can outlast SIGTERM under valgrind


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES))
    parser.add_argument("--loops", default="asyncio,uvloop,rloop,zuvloop,ferroloop")
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind (with callgrind_control) is needed: install it, e.g. apt install valgrind")
    build_loadgen()
    loops = available(args.loops.split(","))
    compile_bytecode(loops)
    print("| case | " + " | ".join(loops) + " | ferroloop / best of uvloop, rloop, zuvloop |")
    print("|---" * (len(loops) + 2) + "|")
    for case in args.cases.split(","):
        counts = {loop: sample(loop, case, args.seconds) for loop in loops}
        peers = [counts[p] for p in ("uvloop", "rloop", "zuvloop") if p in counts]
        ratio = f"{counts['ferroloop'] / min(peers):.2f}x" if peers and "ferroloop" in counts else "-"
        cells = [f"{counts[loop]:,.0f}" for loop in loops]
        print(f"| {case} | " + " | ".join(cells) + f" | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
