"""Network benchmarks: echo servers written three ways, a minimal HTTP server, and one 1 GiB
upload, each on every loop, side by side.

    python benches/net/run.py [--rounds 5] [--seconds 5] [--cases ...] [--loops ...] [--markdown]

The client is `benches/loadgen` (Rust, one thread, non-blocking; built here with cargo on first
use). For every sample a fresh server process (`server.py LOOP MODE`) is started, the client runs
a one-second warm-up and then the measured window, and the server's user and system CPU time over
that window are read from /proc/PID/stat. Reported per loop: requests per second, CPU time per
request (user and system apart, in microseconds) and the server's peak RSS (VmHWM; every loop's
bytecode is compiled first, as an installed package's is). On a 2-core
machine the request rate is bound by the kernel and the client, so CPU per request is the steadier
figure. Rounds are interleaved (round, case, loop, with the loop order rotated every round) and
each figure is the median over rounds.

This machine also switches between two speeds for minutes at a time (every loop's rate on a row
at 32 connections drops or rises by some 25% together), so the median of a loop's five samples
can fall on its slow ones while another loop's falls on its fast ones. The loops of one case in
one round run back to back, within some 20 s, so they mostly meet the same speed: the report
ends with ferroloop's rate over the better peer's taken round by round (`paired`), next to the
ratio of the medians.

`--pin CPU` runs the server and the client on that one CPU. With one connection, each request
then costs a context switch instead of waking an idle CPU: on this 2-core virtual machine that
wake-up is most of a round trip, so the unpinned one-connection rows rank loops by how often
they are still running when the next request arrives, rather than by how fast they serve it.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOADGEN_DIR = HERE.parent / "loadgen"
LOADGEN = LOADGEN_DIR / "target" / "release" / "loadgen"
LOOPS = ("asyncio", "uvloop", "rloop", "zuvloop", "ferroloop")
TICKS = os.sysconf("SC_CLK_TCK")


def cases():
    """name -> (server mode, loadgen arguments after the address, whether it is timed by rounds)."""
    table = {}
    for mode in ("sock", "streams", "protocol"):
        for size, label in ((1024, "1k"), (10 * 1024, "10k"), (100 * 1024, "100k")):
            for conns in (1, 32):
                table[f"echo-{mode}-{label}-c{conns}"] = (mode, ["echo", "{addr}", str(conns), str(size), "{seconds}"])
    table["http-c64"] = ("http", ["http", "{addr}", "64", "{seconds}"])
    table["push-1g"] = ("push", ["push", "{addr}", str(1 << 30)])
    return table


def build_loadgen():
    """Builds the client, or rebuilds it if its source changed (cargo does nothing otherwise)."""
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=LOADGEN_DIR, check=True)


def cpu_ticks(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])  # utime, stime


def peak_rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def pinned(cpu):
    """A `preexec_fn` that keeps the child on `cpu`, or None for no pinning."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def start_client(server, loop, case, seconds, cpu=None):
    """Waits for `server` to print READY, then starts the load generator of `case` on it."""
    ready = server.stdout.readline().split()
    if not ready or ready[0] != "READY":
        raise RuntimeError(f"{loop} server did not start for {case}")
    addr = f"127.0.0.1:{ready[1]}"
    args = [a.format(addr=addr, seconds=seconds) for a in cases()[case][1]]
    return subprocess.Popen(
        [str(LOADGEN), *args], stdout=subprocess.PIPE, text=True, preexec_fn=pinned(cpu)
    )


def start_server(loop, mode, cpu=None, threads=1):
    """A fresh `server.py LOOP MODE [THREADS]` process, its READY line still to be read."""
    return subprocess.Popen(
        [sys.executable, str(HERE / "server.py"), loop, mode, str(threads)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=pinned(cpu),
    )


def stop_server(server, timeout=10):
    """SIGTERM, then SIGKILL if the server is still there after `timeout` seconds."""
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def sample(loop, case, seconds, cpu=None, threads=1):
    mode, template = cases()[case]
    server = start_server(loop, mode, cpu, threads)
    try:
        client = start_client(server, loop, case, seconds, cpu)
        if template[0] != "push":
            time.sleep(1.0)  # the client's warm-up second
        before = cpu_ticks(server.pid)
        out, _ = client.communicate(timeout=600)
        after = cpu_ticks(server.pid)
        if client.returncode != 0:
            raise RuntimeError(f"loadgen failed on {loop} {case}")
        result = json.loads(out)
        count = result.get("requests") or 1
        user = (after[0] - before[0]) / TICKS
        system = (after[1] - before[1]) / TICKS
        return {
            "rps": result.get("rps") or result.get("mib_per_s"),
            "user_us": user / count * 1e6,
            "sys_us": system / count * 1e6,
            "user_s": user,
            "sys_s": system,
            "rss_mib": peak_rss_kib(server.pid) / 1024,
        }
    finally:
        stop_server(server)


def compile_bytecode(loops):
    """Makes sure every loop's Python code has its bytecode on disk, as an installed package
    has: otherwise a loop installed from a source tree (`pip install -e .`) compiles its modules
    at every start, and the compiler's memory shows in the server's peak RSS."""
    for loop in loops:
        if loop == "asyncio":
            continue
        module = importing(loop)
        code = f"{module}; import compileall, os; compileall.compile_dir(os.path.dirname({module.split()[-1]}.__file__), quiet=1)"
        subprocess.run([sys.executable, "-c", code], capture_output=True)


def importing(loop):
    """The statement that imports `loop`'s module as `server.py` does."""
    if loop == "ferroloop-other":
        return "import os, sys; sys.path.insert(0, os.environ['FERROLOOP_OTHER_SITE']); import ferroloop"
    return f"import {loop}"


def available(loops):
    ok = []
    for loop in loops:
        probe = "import asyncio" if loop == "asyncio" else importing(loop)
        if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0:
            ok.append(loop)
        else:
            print(f"skipping {loop}: not installed", file=sys.stderr)
    return ok


def report(results, loops, markdown):
    lines = []
    head = ["case", "loop", "rate", "user µs/req", "sys µs/req", "peak RSS MiB"]
    if markdown:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
    else:
        lines.append("  ".join(f"{h:>14}" for h in head))
    for case, per_loop in results.items():
        for loop in loops:
            samples = per_loop.get(loop) or []
            if not samples:
                continue
            med = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
            unit = "MiB/s" if case.startswith("push") else "req/s"
            cells = [case, loop, f"{med['rps']:.0f} {unit}"]
            if case.startswith("push"):
                cells += [f"{med['user_s']:.2f} s", f"{med['sys_s']:.2f} s"]
            else:
                cells += [f"{med['user_us']:.1f}", f"{med['sys_us']:.1f}"]
            cells.append(f"{med['rss_mib']:.1f}")
            if markdown:
                lines.append("| " + " | ".join(cells) + " |")
            else:
                lines.append("  ".join(f"{c:>14}" for c in cells))
    paired = paired_ratios(results)
    if paired:
        lines.append("")
        lines.append("ferroloop's rate over the better peer's: ratio of the medians; median of the rounds' ratios (each round's)")
        for case, (of_medians, per_round) in paired.items():
            rounds = " ".join(f"{r:.2f}" for r in per_round)
            lines.append(f"{case}: {of_medians:.2f}x; paired {statistics.median(per_round):.2f}x ({rounds})")
    return "\n".join(lines)


def paired_ratios(results, peers=("uvloop", "rloop", "zuvloop")):
    """Per case, ferroloop's rate over the better peer's: the ratio of the medians, and the ratio
    in each round where ferroloop and a peer both have a sample."""
    out = {}
    for case, per_loop in results.items():
        ours = {s["round"]: s["rps"] for s in per_loop.get("ferroloop", [])}
        theirs = {}
        for peer in peers:
            for s in per_loop.get(peer, []):
                theirs[s["round"]] = max(theirs.get(s["round"], 0), s["rps"])
        per_round = [ours[r] / theirs[r] for r in sorted(ours) if theirs.get(r)]
        if not per_round:
            continue
        best = max(statistics.median(s["rps"] for s in per_loop[p]) for p in peers if per_loop.get(p))
        out[case] = (statistics.median(ours.values()) / best, per_round)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--cases", default=",".join(cases()))
    parser.add_argument("--loops", default=",".join(LOOPS))
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", help="write every sample to this file")
    parser.add_argument("--pin", type=int, metavar="CPU", help="run server and client on this CPU")
    args = parser.parse_args()
    build_loadgen()
    loops = available(args.loops.split(","))
    compile_bytecode(loops)
    chosen = args.cases.split(",")
    results = {case: {} for case in chosen}
    for rnd in range(args.rounds):
        order = loops[rnd % len(loops):] + loops[: rnd % len(loops)]
        for case in chosen:
            for loop in order:
                try:
                    s = sample(loop, case, args.seconds, args.pin)
                except Exception as exc:  # one failed sample is reported, the run goes on
                    print(f"round {rnd + 1} {case} {loop}: FAILED {exc}", file=sys.stderr)
                    continue
                s["round"] = rnd
                results[case].setdefault(loop, []).append(s)
                print(f"round {rnd + 1} {case} {loop}: {s['rps']:.0f}/s user {s['user_us']:.1f} µs", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(report(results, loops, args.markdown))


if __name__ == "__main__":
    main()
