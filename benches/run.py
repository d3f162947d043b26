"""Compare asyncio event loops side by side: stock asyncio, uvloop, rloop and ferroloop.

Method
------
* Fresh process per sample. Every measurement is one worker subprocess
  (`python benches/run.py --worker CASE LOOP`) that imports only the loop under test, builds the
  loop from its factory, runs one case, and prints one JSON line: the elapsed seconds measured
  inside the worker with time.perf_counter() around the timed part only (not interpreter start,
  imports or loop creation) and the peak RSS (ru_maxrss, KiB). No sample inherits another's heap,
  caches or allocator state, and one loop crashing cannot take the others down.
* Interleaving. `for round: for case: for loop` runs one worker per step, with the loop order
  rotated each round, so slow drift on a noisy machine (thermal, other tenants) is spread over all
  loops instead of landing on whichever ran last.
* Medians. Each (case, loop) is summarized by the median of its rounds (the minimum is shown too).
  Ratios are peer_median / loop_median, so >1 means the loop is faster than that peer; the mem_
  cases compare RSS growth the same way (>1 means it uses less memory).

Loops whose module cannot be imported (or cannot make a loop) are skipped with a message.
Run `python benches/run.py --help` for the options; benches/README.md describes the cases.
"""

import argparse
import json
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

from cases import CASES
from report import markdown_report, summarize, text_report
from worker import LOOPS, QUICK_SCALE, probe, worker

HERE = Path(__file__).resolve()


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Benchmark asyncio event loops side by side.")
    default_loops = ",".join(name for name in LOOPS if name != "ferroloop-traced")
    parser.add_argument("--loops", default=default_loops,
                        help=f"comma-separated loops (default: {default_loops}; also ferroloop-traced)")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated cases (default: all: {','.join(CASES)})")
    parser.add_argument("--rounds", type=int, default=5, help="samples per case and loop (default 5)")
    parser.add_argument("--quick", action="store_true", help="scale sizes down 10x (smoke run)")
    parser.add_argument("--json", metavar="OUT", help="write all raw samples to this JSON file")
    parser.add_argument("--markdown", action="store_true",
                        help="print one markdown table instead of the text tables")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per worker (default 600)")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "LOOP"), help=argparse.SUPPRESS)
    parser.add_argument("--probe", metavar="LOOP", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.loops = _names(parser, args.loops, LOOPS, "loop")
    args.cases = _names(parser, args.cases, CASES, "case")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def _names(parser, text, known, what):
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown {what}(s): {', '.join(unknown)}; choose from {', '.join(known)}")
    return names


# --- subprocesses -------------------------------------------------------------------------------


def _spawn(extra, timeout):
    """Run this script with `extra` arguments; return its last stdout line parsed, or an error."""
    cmd = [sys.executable, str(HERE)] + extra
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": _failure(done), "returncode": done.returncode}
    return json.loads(lines[-1])


def _failure(done):
    """The last line of stderr, else how the process ended."""
    stderr = done.stderr.strip().splitlines()
    if stderr:
        return stderr[-1]
    if done.returncode < 0:
        return f"killed by {signal.Signals(-done.returncode).name}"
    return f"exit status {done.returncode}"


def probe_loops(names, timeout):
    """Split `names` into {loop: version} that work and [(loop, reason)] to skip."""
    available, skipped = {}, []
    for name in names:
        result = _spawn(["--probe", name], timeout)
        if "error" in result:
            skipped.append((name, _skip_reason(name, result["error"])))
        else:
            available[name] = result["version"]
    return available, skipped


def _skip_reason(name, error):
    if error == f"ModuleNotFoundError: No module named '{LOOPS[name][0]}'":
        return "not installed"
    return f"cannot make a loop: {error}"


def schedule(rounds, cases, loops):
    """Yield (round, case, loop): rounds outermost, loop order rotated by one each round."""
    for rnd in range(rounds):
        shift = rnd % len(loops)
        order = loops[shift:] + loops[:shift]
        for case in cases:
            for loop in order:
                yield rnd + 1, case, loop


def run_one(rnd, case, loop, args):
    extra = ["--worker", case, loop] + (["--quick"] if args.quick else [])
    sample = {"round": rnd, "case": case, "loop": loop}
    sample.update(_spawn(extra, args.timeout))
    _progress(sample, args.rounds)
    return sample


def _progress(sample, rounds):
    head = f"[{sample['round']}/{rounds}] {sample['case']:<16} {sample['loop']:<10}"
    if "error" in sample:
        body = f"FAILED: {sample['error']}"
    else:
        body = f"{sample['elapsed']:.4f} s  {sample['maxrss_kib'] / 1024:.1f} MiB"
        if "rss_growth_kib" in sample:
            body += f"  (+{sample['rss_growth_kib'] / 1024:.1f} MiB)"
    print(f"{head} {body}", file=sys.stderr, flush=True)


# --- main ---------------------------------------------------------------------------------------


def scale(args):
    return QUICK_SCALE if args.quick else 1.0


def describe(available, args):
    loops = ", ".join(f"{name} {version}" for name, version in available.items())
    size = "quick (sizes / 10)" if args.quick else "full size"
    return f"Python {platform.python_version()} on {platform.machine()}, {size}; {loops}."


def write_json(path, meta, samples):
    Path(path).write_text(json.dumps({"meta": meta, "samples": samples}, indent=1) + "\n")


def bench(args):
    available, skipped = probe_loops(args.loops, args.timeout)
    for name, reason in skipped:
        print(f"skipping {name}: {reason}", flush=True)
    if not available:
        print("no loop to benchmark", file=sys.stderr)
        return 1
    loops = list(available)
    samples = [run_one(rnd, case, loop, args)
               for rnd, case, loop in schedule(args.rounds, args.cases, loops)]
    meta = {"python": platform.python_version(), "platform": platform.platform(),
            "loops": available, "skipped": dict(skipped), "cases": args.cases,
            "rounds": args.rounds, "quick": args.quick,
            "sizes": {c: CASES[c].size_for(scale(args)) for c in args.cases},
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if args.json:
        write_json(args.json, meta, samples)
    table = summarize(samples, args.cases, loops)
    if args.markdown:
        print(markdown_report(table, args.rounds, describe(available, args)))
    else:
        print(describe(available, args))
        print(text_report(table, args.rounds, scale(args)))
    return 1 if any("error" in s for s in samples) else 0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.probe:
        probe(args.probe)
    elif args.worker:
        worker(*args.worker, quick=args.quick)
    else:
        return bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
