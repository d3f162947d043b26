"""One loop per thread: how each loop's throughput scales from one thread to several, on a
free-threaded Python (3.14t, 3.15t), where loops in different threads run at once.

    .venv/3.14t/bin/python benches/threads.py [--threads 2] [--rounds 5] [--cases ...]
        [--loops ...] [--http-seconds 3] [--json OUT]

Every sample is a fresh worker process (`threads.py --worker CASE LOOP THREADS`) that starts
THREADS threads, each of which runs the case of `cases.py` at full size once untimed (its heap
and the process's pages warmed), makes a fresh loop and, once all are ready (a barrier), runs the
case again on it. Its throughput is all threads' work over the wall time from the barrier to the
last thread's end, so a loop that scales perfectly doubles it with two threads. (Without the
warm-up, two threads faulting in a fresh process's first pages at once wait on the kernel's
memory-map lock, which measures the kernel.) The `http` row is `net/run.py`'s `http-c64` sample
with `net/server.py LOOP http THREADS`: as many loops in threads, each with its own listening
socket on one `SO_REUSEPORT` port, under `loadgen http` with 64 connections; its throughput is
requests per second.

Rounds are interleaved (round, case, loop rotated, thread counts), and each figure is a median
over rounds. Reported per case and loop: the one-thread and THREADS-thread throughput, their
ratio (the scaling), and, from the one-thread figures, ferroloop's speed over each peer.

On a GIL build the threads take turns, and the scaling shows it (about 1x).
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "net"))

from cases import CASES  # noqa: E402
from worker import LOOPS, make_loop  # noqa: E402

# The in-process cases that measure time (memory cases measure one loop's RSS).
CORE_CASES = [name for name, case in CASES.items() if case.metric == "time"]
PEERS = ("uvloop", "zuvloop", "rloop", "asyncio")


def worker(case_name, loop_name, threads):
    """Runs `case_name` on `threads` loops in as many threads; prints ops per second."""
    case = CASES[case_name]
    n = case.size_for(1.0)
    barrier = threading.Barrier(threads + 1)
    ends, errors = [], []

    def body():
        try:
            warm = make_loop(loop_name)
            try:
                case.run(warm, n)
            finally:
                warm.close()
            loop = make_loop(loop_name)
            barrier.wait()
            try:
                case.run(loop, n)
            finally:
                loop.close()
            ends.append(time.perf_counter())
        except BaseException as e:  # reported as the sample's error
            errors.append(repr(e))
            barrier.abort()

    pool = [threading.Thread(target=body) for _ in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in pool:
        t.join()
    if errors:
        raise SystemExit(errors[0])
    print(json.dumps({"ops_per_s": threads * n / (max(ends) - start)}))


def sample(case, loop, threads, args):
    if case == "http":
        try:
            import run as net  # benches/net/run.py

            result = net.sample(loop, "http-c64", args.http_seconds, threads=threads)
            return {"ops_per_s": result["rps"]}
        except Exception as e:  # one failed sample is reported, the run goes on
            return {"error": repr(e)}
    done = subprocess.run(
        [sys.executable, str(HERE), "--worker", case, loop, str(threads)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
    return json.loads(lines[-1])


def available(loops):
    found = []
    for loop in loops:
        probe = subprocess.run(
            [sys.executable, str(HERE.parent / "run.py"), "--probe", loop], capture_output=True
        )
        if probe.returncode == 0:
            found.append(loop)
        else:
            print(f"skipping {loop}: cannot be imported or make a loop", flush=True)
    return found


def report(samples, cases, loops, threads):
    def median(case, loop, t):
        values = [s["ops_per_s"] for s in samples
                  if (s["case"], s["loop"], s["threads"]) == (case, loop, t) and "ops_per_s" in s]
        return statistics.median(values) if values else None

    peers = [p for p in PEERS if p in loops]
    head = f"| case | loop | 1 thread /s | {threads} threads /s | scaling |"
    if "ferroloop" in loops and peers:
        head += " ferroloop over it, 1 thread |"
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    for case in cases:
        ours = median(case, "ferroloop", 1)
        for loop in loops:
            one, many = median(case, loop, 1), median(case, loop, threads)
            row = f"| `{case}` | {loop} | {one or 0:,.0f} | {many or 0:,.0f} | "
            row += f"{many / one:.2f}x |" if one and many else "- |"
            if "ferroloop" in loops and peers:
                row += f" {ours / one:.2f}x |" if ours and one and loop != "ferroloop" else " |"
            print(row)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cases", default=",".join(CORE_CASES + ["http"]))
    parser.add_argument("--loops", default="ferroloop,uvloop,zuvloop")
    parser.add_argument("--http-seconds", type=float, default=3.0)
    parser.add_argument("--json", metavar="OUT")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        case, loop, threads = args.worker
        worker(case, loop, int(threads))
        return 0
    cases = args.cases.split(",")
    for case in cases:
        if case != "http" and case not in CASES:
            parser.error(f"unknown case {case}")
    loops = available([name for name in args.loops.split(",") if name in LOOPS])
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(f"Python {platform.python_version()} ({'GIL' if gil else 'free-threaded, GIL off'}), "
          f"{args.rounds} rounds, 1 vs {args.threads} threads", flush=True)
    samples = []
    for rnd in range(args.rounds):
        shift = rnd % len(loops)
        order = loops[shift:] + loops[:shift]
        for case in cases:
            for loop in order:
                for threads in (1, args.threads):
                    s = sample(case, loop, threads, args)
                    s.update(round=rnd + 1, case=case, loop=loop, threads=threads)
                    samples.append(s)
                    shown = s.get("error") or f"{s['ops_per_s']:,.0f}/s"
                    print(f"[{rnd + 1}/{args.rounds}] {case:<18} {loop:<10} x{threads} {shown}",
                          file=sys.stderr, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"python": platform.python_version(),
                                               "gil": gil, "samples": samples}, indent=1))
    report(samples, cases, loops, args.threads)
    return 1 if any("error" in s for s in samples) else 0


if __name__ == "__main__":
    sys.exit(main())
