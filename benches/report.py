"""Turn raw samples into per-case statistics, and print them as text tables or markdown."""

import statistics
from dataclasses import dataclass

from cases import CASES


@dataclass
class Stats:
    loop: str
    samples: int
    failures: int
    ops: int = 0
    time_median: float = 0.0
    time_min: float = 0.0
    peak_rss_kib: float = 0.0  # median over samples of the worker's ru_maxrss at exit
    growth_median: float = 0.0  # memory cases only
    growth_min: float = 0.0
    cpu_median: float = 0.0  # cases that report CPU time
    cpu_min: float = 0.0

    @property
    def ok(self):
        return self.samples > 0

    @property
    def ops_per_s(self):
        return self.ops / self.time_median if self.time_median else 0.0

    def metric(self, kind):
        if kind == "memory":
            return self.growth_median
        return self.cpu_median if kind == "cpu" else self.time_median


def summarize(samples, cases, loops):
    """{case: {loop: Stats}} over the successful samples of each pair."""
    table = {}
    for case in cases:
        table[case] = {}
        for loop in loops:
            mine = [s for s in samples if s["case"] == case and s["loop"] == loop]
            table[case][loop] = _stats(loop, mine)
    return table


def _stats(loop, samples):
    good = [s for s in samples if "error" not in s]
    stats = Stats(loop, len(good), len(samples) - len(good))
    if not good:
        return stats
    times = [s["elapsed"] for s in good]
    stats.ops = good[0]["ops"]
    stats.time_median = statistics.median(times)
    stats.time_min = min(times)
    stats.peak_rss_kib = statistics.median(s["maxrss_kib"] for s in good)
    cpus = [s["cpu"] for s in good if "cpu" in s]
    if cpus:
        stats.cpu_median = statistics.median(cpus)
        stats.cpu_min = min(cpus)
    growths = [s["rss_growth_kib"] for s in good if "rss_growth_kib" in s]
    if growths:
        stats.growth_median = statistics.median(growths)
        stats.growth_min = min(growths)
    return stats


def ratio(stats, peer, kind):
    """peer_median / loop_median of the case's metric: >1 means `stats` is faster (or smaller)."""
    mine, theirs = stats.metric(kind), peer.metric(kind)
    if not (stats.ok and peer.ok) or mine <= 0:
        return None
    return theirs / mine


# --- formatting ---------------------------------------------------------------------------------


def fmt_time(seconds):
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.3f} s"


def fmt_rate(per_s):
    if per_s >= 1e6:
        return f"{per_s / 1e6:.2f}M/s"
    return f"{per_s / 1e3:.1f}k/s"


def fmt_kib(kib):
    return f"{kib / 1024:.1f} MiB"


def fmt_ratio(value):
    return "-" if value is None else f"{value:.2f}x"


def bytes_per_op(stats):
    return stats.growth_median * 1024 / stats.ops if stats.ops else 0.0


def _cells(stats, kind):
    """median, min, ops/s, peak RSS, then RSS growth and bytes per op for memory cases."""
    growth = kind == "memory"
    if not stats.ok:
        return ["failed"] + [""] * (5 if growth else 3)
    cells = [fmt_time(stats.time_median), fmt_time(stats.time_min), fmt_rate(stats.ops_per_s),
             fmt_kib(stats.peak_rss_kib)]
    if kind == "cpu":
        cells += [fmt_time(stats.cpu_median)]
    if growth:
        cells += [fmt_kib(stats.growth_median), f"{bytes_per_op(stats):.0f}"]
    return cells


def _headers(kind):
    heads = ["median", "min", "ops/s", "peak RSS"]
    if kind == "cpu":
        return heads + ["CPU"]
    return heads + (["RSS growth", "B/op"] if kind == "memory" else [])


def ratio_line(stats, by_loop, kind):
    """e.g. 'ferroloop: 3.10x asyncio, 1.40x uvloop, 1.10x rloop'."""
    parts = [f"{fmt_ratio(ratio(stats, peer, kind))} {name}"
             for name, peer in by_loop.items() if name != stats.loop]
    return f"{stats.loop}: " + ", ".join(parts)


def _align(rows):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in rows]


def text_report(table, rounds, scale):
    out = []
    for case_name, by_loop in table.items():
        case = CASES[case_name]
        kind = case.metric
        out.append(f"\n== {case_name}: {case.describe(scale)} ({rounds} rounds)")
        rows = [["loop"] + _headers(kind)]
        for stats in by_loop.values():
            failed = f"  ({stats.failures} failed)" if stats.failures else ""
            rows.append([stats.loop + failed] + _cells(stats, kind))
        out.extend(_align(rows))
        what = {"memory": "RSS growth, >1 = smaller", "cpu": "CPU time, >1 = less"}.get(
            kind, "median time, >1 = faster"
        )
        out.append(f"ratios (peer median / loop median, {what}):")
        out.extend("  " + ratio_line(stats, by_loop, kind) for stats in by_loop.values())
    return "\n".join(out)


def markdown_report(table, rounds, meta):
    loops = list(next(iter(table.values())))
    heads = ["case", "loop", "median", "min", "ops/s", "peak RSS", "RSS growth", "B/op"]
    heads += [f"vs {name}" for name in loops]
    lines = [f"Medians of {rounds} rounds, one fresh process per sample, rounds interleaved. "
             f"Ratios are peer median / loop median (>1 = faster, or smaller RSS growth for "
             f"the mem_ cases). {meta}", "",
             "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for case_name, by_loop in table.items():
        kind = CASES[case_name].metric
        for stats in by_loop.values():
            cells = _cells(stats, kind)
            cells += [""] * (6 - len(cells))
            cells += [fmt_ratio(ratio(stats, by_loop[p], kind)) if p != stats.loop else ""
                      for p in loops]
            lines.append("| " + " | ".join([case_name, stats.loop] + cells) + " |")
    return "\n".join(lines)
