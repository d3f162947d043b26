"""Soak: a long-running server on one loop must leak neither file descriptors nor memory.

    python benches/soak.py --minutes N [--warmup SECONDS] [--interval SECONDS]
                           [--loop ferroloop|asyncio|uvloop] [--json FILE]
    python benches/soak.py --seconds S ...     # instead of --minutes, for short trials

What runs. One server process (benches/soak/server.py) serves, on one loop, a streams echo, a
Protocol echo, a minimal HTTP/1.1 keep-alive server and a TLS streams echo. Other processes load
it for the whole run: the Rust load generator (benches/loadgen) against the two echo servers and
the HTTP server, in slices of one interval each (so that each interval has its own requests per
second), and a churn client (benches/soak/churn.py) that keeps opening and closing connections,
TLS connections closed cleanly and abruptly, slow readers that make the server's drain() wait,
resets mid-transfer and half-closes. In the middle of each slice the harness reads the server's
open fds (/proc/PID/fd) and asks it for its sample (SIGUSR1: the lag of a timer that runs every
10 ms, max and p99 over the interval; on ferroloop loop.stats() too); a thread reads its RSS
(VmRSS) every 0.5 s. Warm-up: 60 s, or a third of the run if that is less.

The pass rule, over the samples taken after the warm-up, split in thirds:

* fds: the max of the last third may exceed the max of the first third by at most twice the
  churn client's threads (16). Mid-slice the count is: the fixed fds (stdio, listeners, the
  loop's own), the load generator's connections (the same number in every slice), and the churn
  connections in flight. Each churn thread holds one connection at a time, and the server may
  still hold about as many that the client has closed but whose close it has not yet handled.
  So without a leak every sample lies in [fixed, fixed + 2 x threads], and comparing maxima
  only has to absorb that band. The churn makes hundreds of connections a second: a leak of
  one fd in a thousand connections exceeds the band within a minute.
  Then, once all load has stopped, the server must be back at its idle fd count from before
  the load within SETTLE seconds: nothing is in flight any more, so that check is exact.
* RSS: the lowest reading of the last third may exceed the lowest of the first third by at most
  RSS_TOLERANCE_MIB (4). RSS is live memory, plus buffers in flight, plus what the allocator
  holds free; the last two come and go (on the stock loop the interval medians swing between
  33 and 39 MiB for minutes with no trend, as glibc trims and regrows its heap). A leak raises
  every reading, the lowest included; the swings raise only the high ones. So the lowest
  reading of a third is its best estimate of live memory. The tolerance is twice what the load
  holds in the server at once (slow readers', resets' and TLS buffers, under 2 MiB) and covers
  the allocator's steps (CPython's 1 MiB arenas). A 30-minute run detects a leak of 0.2 MiB a
  minute; `--minutes 1` is a smoke test (some 9 MiB a minute). Medians and the least-squares
  slope are printed for information.
* no load stream saw an error (loadgen exits 1 on a wrong byte; the churn client checks every
  echo and counts unexpected exceptions), and the server answered every sample.

Exceptions the server's loop reported (its exception handler; they are logged on its stderr,
which is printed at the end) are a warning, not a failure. Exit status 0 on PASS, 1 on FAIL.
Every child runs in its own session (a Ctrl-C reaches the harness alone) and is stopped on the
way out however the run ends; the server and the churn client also exit if the harness dies.

Files: this one (the run and the rule), benches/soak/server.py, benches/soak/churn.py and
benches/soak/procs.py (child processes, /proc readings, the load generator's slices).
"""

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "soak"))
from procs import (  # noqa: E402
    Child, RssPoller, fd_count, fd_targets, finish_slices, proc_figures, start_slices, stop_slices,
)

LOADGEN_DIR = HERE / "loadgen"
LOADGEN = LOADGEN_DIR / "target" / "release" / "loadgen"
# name: (server, loadgen arguments after the address, before the seconds)
LOADS = {
    "streams": ("streams", ["echo", "{addr}", "8", "4096"]),
    "protocol": ("protocol", ["echo", "{addr}", "8", "1024"]),
    "http": ("http", ["http", "{addr}", "16"]),
}
RSS_TOLERANCE_MIB = 4.0
SETTLE = 10.0  # seconds the server has, once the load stopped, to close every connection


def start_server(loop, stderr):
    server = Child([sys.executable, str(HERE / "soak" / "server.py"), loop], stderr=stderr)
    line = server.line(30)
    if not line or not line.startswith("READY "):
        server.stop()
        raise RuntimeError(f"the {loop} server did not start (see its stderr above)")
    return server, json.loads(line.split(" ", 1)[1])


def run_interval(server, churn, rss, ports, interval, start):
    """Runs one slice of load and samples the server in its middle."""
    slices = start_slices(LOADGEN, LOADS, ports, max(1, round(interval - 1)))
    try:
        time.sleep(interval / 2)  # the slice's connections are open, the previous slice's closed
        sample = {"elapsed": round(time.monotonic() - start, 1), **(proc_figures(server.proc.pid) or {})}
        sample.update(rss.take())  # the interval's median RSS replaces the instant's
        sample["server"], sample["churn"] = server.ask(), churn.ask()
        sample["rps"], sample["loadgen_errors"] = finish_slices(slices, interval + 30)
    finally:
        stop_slices(slices)
    return sample


def k(value):
    return "-" if value is None else f"{value / 1000:.1f}k"


def churn_delta(sample, previous):
    """The churn client's operations in this interval, by kind, and its errors so far."""
    done = (sample["churn"] or {}).get("done", {})
    before = ((previous or {}).get("churn") or {}).get("done", {})
    delta = {kind: done.get(kind, 0) - before.get(kind, 0) for kind in done}
    delta["tls"] = delta.pop("tls_clean", 0) + delta.pop("tls_abrupt", 0)
    kinds = ("connect", "tls", "slow", "reset", "half_close")
    errors = sum((sample["churn"] or {}).get("errors", {}).values())
    return " ".join(f"{kind} {delta.get(kind, 0)}" for kind in kinds) + f" errors {errors}"


def print_sample(sample, previous):
    server, rps = sample["server"], sample["rps"]
    utilization = (server.get("stats") or {}).get("utilization")
    print(
        f"{sample['elapsed']:7.1f}s  fds {sample['fds']:4d}  "
        f"rss {sample['rss_mib']:5.1f} MiB (min {sample.get('rss_min_mib', sample['rss_mib']):5.1f}) | "
        f"req/s streams {k(rps.get('streams'))} protocol {k(rps.get('protocol'))} http {k(rps.get('http'))} | "
        f"lag max {server['lag_max_ms'] or 0:.1f} p99 {server['lag_p99_ms'] or 0:.1f} ms"
        + (f" util {utilization:.0%}" if utilization is not None else "")
        + f" | churn {churn_delta(sample, previous)}"
        + (" (warm-up)" if sample["warmup"] else ""),
        flush=True,
    )
    for name, error in sample["loadgen_errors"].items():
        print(f"         loadgen {name}: {error}", flush=True)


def slope_per_minute(samples):
    """The least-squares slope of the interval medians of RSS, MiB per minute."""
    xs, ys = [s["elapsed"] / 60 for s in samples], [s["rss_mib"] for s in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def growth(post, fd_tolerance):
    """The fd and RSS rules (see the module doc) over the post-warm-up samples: their figures
    and failures."""
    third = max(1, len(post) // 3)
    first, last = post[:third], post[-third:]
    figures = {
        "fd_first_max": max(s["fds"] for s in first),
        "fd_last_max": max(s["fds"] for s in last),
        "rss_first_floor": min(s.get("rss_min_mib", s["rss_mib"]) for s in first),
        "rss_last_floor": min(s.get("rss_min_mib", s["rss_mib"]) for s in last),
        "rss_first_median": statistics.median(s["rss_mib"] for s in first),
        "rss_last_median": statistics.median(s["rss_mib"] for s in last),
        "rss_slope_mib_per_min": slope_per_minute(post),
    }
    failures = []
    if figures["fd_last_max"] > figures["fd_first_max"] + fd_tolerance:
        failures.append(f"fds grew: max {figures['fd_first_max']} in the first third, "
                        f"{figures['fd_last_max']} in the last (tolerance {fd_tolerance})")
    if figures["rss_last_floor"] - figures["rss_first_floor"] > RSS_TOLERANCE_MIB:
        failures.append(f"RSS grew: lowest {figures['rss_first_floor']:.1f} MiB in the first third, "
                        f"{figures['rss_last_floor']:.1f} in the last (tolerance {RSS_TOLERANCE_MIB:.0f})")
    return figures, failures


def judge(samples, churn_final, idle, settled, fd_tolerance):
    """The verdict: {"pass", "failures", "warnings", and the figures the rules used}.
    `settled` is what settle() found, None if the server died."""
    failures, warnings = [], []
    post = [s for s in samples if not s["warmup"]]
    verdict = {"post_warmup_samples": len(post), "fd_tolerance": fd_tolerance,
               "rss_tolerance_mib": RSS_TOLERANCE_MIB, "idle_fds": idle, "settled": settled}
    if settled is None:
        failures.append("the server died or stopped answering")
    elif settled["fds"] > idle:
        failures.append(f"{settled['fds']} fds open {SETTLE:.0f} s after the load stopped, {idle} "
                        f"before it; the extra ones: {settled['extra']}")
    if len(post) < 3:
        failures.append(f"{len(post)} samples after the warm-up, 3 needed: run longer or shorten --interval")
    else:
        figures, failed = growth(post, fd_tolerance)
        verdict.update(figures)
        failures += failed
    for s in samples:
        for name, error in s["loadgen_errors"].items():
            failures.append(f"loadgen {name} failed at {s['elapsed']} s: {error}")
    errors = (churn_final or {}).get("errors", "no final counts")
    if errors:
        first = (churn_final or {}).get("error_samples", [])[:3]
        failures.append(f"churn client errors: {errors}, the first: {first}")
    exceptions = max((s["server"].get("exceptions", 0) for s in samples), default=0)
    if exceptions:
        warnings.append(f"the server's loop reported {exceptions} exceptions (its stderr is above)")
    verdict.update({"pass": not failures, "failures": failures, "warnings": warnings})
    return verdict


def settle(pid, idle):
    """Waits up to SETTLE seconds for the server's fds to come back to `idle` (their targets):
    their count, the seconds it took, and what the extra ones point to."""
    start = time.monotonic()
    while fd_count(pid) > len(idle) and time.monotonic() - start < SETTLE:
        time.sleep(0.2)
    now = fd_targets(pid)
    extra = [t for t in now if t not in idle] if len(now) > len(idle) else []
    return {"fds": len(now), "after_s": round(time.monotonic() - start, 1), "extra": extra[:20]}


def load(server, churn, ready, args, total, warmup):
    """Runs the intervals until `total` seconds have passed or the server stops answering:
    the samples, and whether it answered to the end."""
    rss = RssPoller(server.proc.pid)
    samples, start = [], time.monotonic()
    try:
        while time.monotonic() - start < total:
            sample = run_interval(server, churn, rss, ready["ports"], args.interval, start)
            if sample["server"] is None or "fds" not in sample:
                return samples, False
            sample["warmup"] = sample["elapsed"] < warmup
            print_sample(sample, samples[-1] if samples else None)
            samples.append(sample)
        return samples, True
    finally:
        rss.stop()


def soak(args, total, warmup, server_log):
    """Starts the server and the churn client, runs the load, stops them, and judges."""
    server, ready = start_server(args.loop, server_log)
    churn = None
    try:
        pid = server.proc.pid
        print(f"server: {args.loop} ({ready['loop']} from {ready['module']}), pid {pid}, ports {ready['ports']}")
        time.sleep(0.5)
        idle = fd_targets(pid)
        print(f"run {total:.0f} s, warm-up {warmup:.0f} s, interval {args.interval:.0f} s; "
              f"idle fds {len(idle)}", flush=True)
        churn = Child([sys.executable, str(HERE / "soak" / "churn.py"), json.dumps(ready["ports"])])
        samples, answered = load(server, churn, ready, args, total, warmup)
        rest = churn.stop(timeout=30)  # its threads finish their operation, it prints its counts
        churn_final = json.loads(rest[-1]) if rest else None
        settled = settle(pid, idle) if answered and server.proc.poll() is None else None
        fd_tolerance = 2 * (churn_final or {}).get("workers", 0)
        return samples, churn_final, judge(samples, churn_final, len(idle), settled, fd_tolerance), ready
    finally:
        if churn:
            churn.stop()
        server.stop()


def print_verdict(v, churn_final):
    print(f"churn totals: {(churn_final or {}).get('done')}, errors {(churn_final or {}).get('errors')}")
    if "fd_first_max" in v:
        print(f"fds: max {v['fd_first_max']} in the first post-warm-up third, {v['fd_last_max']} in the "
              f"last (tolerance {v['fd_tolerance']}); idle {v['idle_fds']}, after the load "
              f"{(v['settled'] or {}).get('fds')}")
        print(f"rss: lowest {v['rss_first_floor']:.1f} MiB in the first third, {v['rss_last_floor']:.1f} in "
              f"the last (tolerance {v['rss_tolerance_mib']:.0f}); medians {v['rss_first_median']:.1f} and "
              f"{v['rss_last_median']:.1f}, slope {v['rss_slope_mib_per_min']:+.2f} MiB/min")
    for w in v["warnings"]:
        print(f"warning: {w}")
    print("PASS" if v["pass"] else "FAIL:\n  " + "\n  ".join(v["failures"]), flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    length = p.add_mutually_exclusive_group(required=True)
    length.add_argument("--minutes", type=float, help="length of the run")
    length.add_argument("--seconds", type=float, help="length of the run in seconds, for short trials")
    p.add_argument("--warmup", type=float,
                   help="seconds left out of the pass rule (default 60, at most a third of the run)")
    p.add_argument("--interval", type=float, default=5.0,
                   help="seconds per sample and per load slice (default 5, at least 3)")
    p.add_argument("--loop", default="ferroloop", choices=("ferroloop", "asyncio", "uvloop"))
    p.add_argument("--json", help="write every sample and the verdict to this file")
    args = p.parse_args()
    args.interval = max(3.0, args.interval)
    return args


def write_json(path, args, total, warmup, ready, samples, churn_final, verdict):
    meta = {"loop": args.loop, "server": ready, "python": sys.version.split()[0], "seconds": total,
            "warmup": warmup, "interval": args.interval}
    document = {"meta": meta, "samples": samples, "churn": churn_final, "verdict": verdict}
    Path(path).write_text(json.dumps(document, indent=1))


def main():
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the finally blocks run
    total = args.seconds if args.seconds is not None else args.minutes * 60
    warmup = args.warmup if args.warmup is not None else min(60.0, total / 3)
    if not LOADGEN.exists():
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=LOADGEN_DIR, check=True)
    with tempfile.TemporaryFile("w+") as server_log:
        try:
            samples, churn_final, verdict, ready = soak(args, total, warmup, server_log)
        except KeyboardInterrupt:
            print("interrupted: every process stopped", file=sys.stderr)
            return 130
        finally:
            server_log.seek(0)
            log = server_log.read()
            if log:
                print(f"--- server stderr ({log.count(chr(10))} lines, the first 40) ---")
                print("\n".join(log.splitlines()[:40]))
    verdict["server_stderr_lines"] = log.count("\n")
    if log and not verdict["warnings"]:
        verdict["warnings"].append(f"the server wrote {verdict['server_stderr_lines']} lines on stderr")
    print_verdict(verdict, churn_final)
    if args.json:
        write_json(args.json, args, total, warmup, ready, samples, churn_final, verdict)
    return 0 if verdict["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
