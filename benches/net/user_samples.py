"""User CPU time per request of each loop's server, sampled by perf: a finer-grained
counterpart of `run.py`'s user time from /proc.

    python benches/net/user_samples.py [--cases http-c64] [--loops ...] [--rounds 6] [--seconds 3]

Why: this kernel splits a process's CPU time into user and system by the mode each clock tick
(4 ms at HZ=250) lands in, so a 3 s sample of a server that spends 85% of its time in the
kernel holds about a hundred user ticks, and `run.py`'s user figure moves by 10-20% from one
round to the next. Here `perf record -e cpu-clock:u -F 2000` samples the server every 0.5 ms and
keeps only the samples taken in user mode: eight times as many, each worth 0.5 ms of user time.
Same server, client, warm-up and interleaving as `run.py`; medians over rounds, and the ratio of
ferroloop's median to the better (lower) of uvloop's and rloop's. Needs `perf` and permission to
attach to a process (root, or a low enough `kernel.perf_event_paranoid`).
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import (
    available,
    build_loadgen,
    cases,
    compile_bytecode,
    start_client,
    start_server,
    stop_server,
)

FREQUENCY = 2000


def sample(loop, case, seconds):
    """User µs per request of one server over the client's measured window."""
    server = start_server(loop, cases()[case][0])
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "perf.data"
        try:
            client = start_client(server, loop, case, seconds)
            time.sleep(1.0)  # the client's warm-up second
            perf = subprocess.Popen(
                ["perf", "record", "-q", "-e", "cpu-clock:u", "-F", str(FREQUENCY),
                 "-p", str(server.pid), "-o", str(data)],
                stderr=subprocess.DEVNULL,
            )
            out, _ = client.communicate(timeout=600)
            perf.send_signal(2)
            perf.wait(timeout=60)
        finally:
            stop_server(server)
        script = subprocess.run(
            ["perf", "script", "-i", str(data), "-F", "ip"],
            capture_output=True, text=True, check=True,
        )
    samples = len(script.stdout.splitlines())
    return samples / FREQUENCY / json.loads(out)["requests"] * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="http-c64")
    parser.add_argument("--loops", default="uvloop,rloop,zuvloop,ferroloop")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    if shutil.which("perf") is None:
        sys.exit("perf is needed: install it, e.g. apt install linux-perf")
    build_loadgen()
    loops = available(args.loops.split(","))
    compile_bytecode(loops)
    chosen = args.cases.split(",")
    results = {case: {loop: [] for loop in loops} for case in chosen}
    for rnd in range(args.rounds):
        order = loops[rnd % len(loops):] + loops[: rnd % len(loops)]
        for case in chosen:
            for loop in order:
                us = sample(loop, case, args.seconds)
                results[case][loop].append(us)
                print(f"round {rnd + 1} {case} {loop}: user {us:.3f} µs", file=sys.stderr)
    print("| case | " + " | ".join(loops) + " | ferroloop / best of uvloop, rloop, zuvloop |")
    print("|---" * (len(loops) + 2) + "|")
    for case in chosen:
        med = {loop: statistics.median(results[case][loop]) for loop in loops}
        peers = [med[p] for p in ("uvloop", "rloop", "zuvloop") if p in med]
        ratio = f"{med['ferroloop'] / min(peers):.2f}x" if peers and "ferroloop" in med else "-"
        cells = [f"{med[loop]:.3f}" for loop in loops]
        print(f"| {case} | " + " | ".join(cells) + f" | {ratio} |")


if __name__ == "__main__":
    main()
