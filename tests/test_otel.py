"""`ferroloop.instrument()`: `loop.stats()` as OpenTelemetry metrics, read back through the SDK's
in-memory reader.

The loop is stopped whenever metrics are collected (but in the one test of a collection from
another thread), so its counters do not move in between and the published figures can be
compared exactly with `loop.stats()` taken around the collection. Durations are checked only
from below, so nothing here depends on how fast the machine is."""

import asyncio
import gc
import socket
import subprocess
import sys
import threading
import time
import weakref

import pytest
from opentelemetry import metrics as otel_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Gauge, InMemoryMetricReader, Sum

import ferroloop
from ferroloop import LagHistogram
from util import run

NS = "python.asyncio.eventloop"
ID = f"{NS}.id"
GAUGES = {f"{NS}.utilization": "1"} | {f"{NS}.delay.{s}": "s" for s in ("min", "max", "mean", "p50", "p90", "p99")}
COUNTERS = {
    f"{NS}.time": "s",
    f"{NS}.callbacks": "{callback}",
    f"{NS}.slow_callbacks": "{callback}",
    f"{NS}.io_events": "{event}",
    f"{NS}.polls": "{poll}",
    f"{NS}.timers": "{timer}",
}
UP_DOWN_COUNTERS = {f"{NS}.ready": "{callback}"}


@pytest.fixture
def reader():
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader):
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


def collect(reader):
    """One collection: {instrument name: {attributes as a sorted tuple: value}}."""
    data = reader.get_metrics_data()
    if data is None:
        return {}
    return {
        m.name: {tuple(sorted(p.attributes.items())): p.value for p in m.data.data_points}
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }


def value(collected, name, loop_id=0, **attributes):
    """The value `name` reported for loop `loop_id` with `attributes` (keys without the namespace)."""
    key = {f"{NS}.{k}": v for k, v in attributes.items()} | {ID: loop_id}
    return collected[f"{NS}.{name}"][tuple(sorted(key.items()))]


def run_once(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()


def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def workload(loop):
    """Callbacks (one of 10 ms), timers (one cancelled), socket I/O and sleeps."""
    ran = []

    async def main():
        loop.call_soon(spin, 0.01)
        for i in range(5):
            loop.call_soon(ran.append, i)
        loop.call_later(0, ran.append, "timer")
        loop.call_later(60, ran.append, "never").cancel()
        a, b = socket.socketpair()
        try:
            got = loop.create_future()
            loop.add_reader(a, lambda: got.done() or got.set_result(a.recv(10)))
            b.send(b"x")
            assert await got == b"x"
            loop.remove_reader(a)
        finally:
            a.close()
            b.close()
        for _ in range(3):
            await asyncio.sleep(0.01)

    run(loop, main())
    assert ran == [0, 1, 2, 3, 4, "timer"]


def test_importing_ferroloop_does_not_import_opentelemetry():
    code = "import sys, ferroloop; print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_without_opentelemetry_api_it_says_which_extra(ferro_loop, monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"pip install ferroloop\[otel\]"):
        ferroloop.instrument(ferro_loop)


def test_names_units_and_kinds(ferro_loop, reader, provider):
    ferroloop.instrument(ferro_loop, provider)
    workload(ferro_loop)
    data = reader.get_metrics_data()
    [scope] = data.resource_metrics[0].scope_metrics
    assert (scope.scope.name, scope.scope.version) == ("ferroloop", ferroloop.__version__)
    found = {m.name: m for m in scope.metrics}
    assert {n: m.unit for n, m in found.items()} == GAUGES | COUNTERS | UP_DOWN_COUNTERS
    for name in GAUGES:
        assert isinstance(found[name].data, Gauge), name
    for name in COUNTERS:
        assert isinstance(found[name].data, Sum) and found[name].data.is_monotonic, name
    for name in UP_DOWN_COUNTERS:
        assert isinstance(found[name].data, Sum) and not found[name].data.is_monotonic, name

    collected = collect(reader)
    assert set(collected[f"{NS}.time"]) == {
        ((f"{NS}.id", 0), (f"{NS}.state", state)) for state in ("active", "idle")
    }
    assert set(collected[f"{NS}.timers"]) == {
        ((f"{NS}.id", 0), (f"{NS}.timer.state", state)) for state in ("scheduled", "fired", "cancelled")
    }
    for name in [*GAUGES, *UP_DOWN_COUNTERS, f"{NS}.callbacks"]:
        assert set(collected[name]) == {((ID, 0),)}, name


def test_counters_are_the_loops_stats(ferro_loop, reader, provider):
    loop = ferro_loop
    loop.slow_callback_duration = 0.005
    ferroloop.instrument(loop, provider)
    workload(loop)
    before = loop.stats()
    collected = collect(reader)
    after = loop.stats()
    for stats in (before, after):  # the loop did not run: the two agree
        assert value(collected, "callbacks") == stats.callbacks
        assert value(collected, "io_events") == stats.io_events
        assert value(collected, "polls") == stats.polls
        assert value(collected, "slow_callbacks") == stats.slow_callbacks
        for state in ("scheduled", "fired", "cancelled"):
            assert value(collected, "timers", **{"timer.state": state}) == getattr(stats, f"timers_{state}")
        assert value(collected, "time", state="active") == stats.busy_time
        assert value(collected, "time", state="idle") == stats.idle_time
        assert value(collected, "ready") == stats.ready == 0
    assert value(collected, "callbacks") >= 1 + 5 + 1  # workload's own
    assert value(collected, "slow_callbacks") >= 1
    assert value(collected, "timers", **{"timer.state": "cancelled"}) >= 1
    assert value(collected, "io_events") >= 1
    active, idle = value(collected, "time", state="active"), value(collected, "time", state="idle")
    assert 0.5 * 3 * 0.01 <= idle and active > 0
    assert active + idle <= after.elapsed
    assert value(collected, "utilization") == pytest.approx(after.utilization)
    assert 0.0 < value(collected, "utilization") < 1.0


def test_ready_is_the_queue_now(ferro_loop, reader, provider):
    ferroloop.instrument(ferro_loop, provider)
    for _ in range(3):
        ferro_loop.call_soon(lambda: None)
    assert value(collect(reader), "ready") == 3
    run_once(ferro_loop)
    assert value(collect(reader), "ready") == 0


def expected_delays(first, second):
    lag = LagHistogram(second.lag.bounds, tuple(b - a for a, b in zip(first.lag.counts, second.lag.counts)))
    return lag, {f"delay.p{p}": lag.percentile(p) for p in (50, 90, 99)} | {
        "delay.min": lag.percentile(0),
        "delay.max": lag.percentile(100),
    }


def test_utilization_and_delays_are_over_the_interval(ferro_loop, reader, provider):
    loop = ferro_loop
    ferroloop.instrument(loop, provider)
    run(loop, asyncio.sleep(0.03))  # mostly idle
    first = loop.stats()
    collect(reader)

    # Busy only: the stop callback waits in the queue behind the spin.
    loop.call_soon(spin, 0.05)
    run_once(loop)
    second = loop.stats()
    collected = collect(reader)
    busy, idle = second.busy_time - first.busy_time, second.idle_time - first.idle_time
    assert value(collected, "utilization") == pytest.approx(busy / (busy + idle))
    assert abs(busy / (busy + idle) - second.utilization) > 0.01  # not the cumulative figure
    lag, expected = expected_delays(first, second)
    assert lag.count < second.lag.count
    for name, seconds in expected.items():
        assert value(collected, name) == pytest.approx(seconds), name
    edges = lag.bounds[:-1] + lag.bounds[-2:-1]
    mean = sum(e * n for e, n in zip(edges, lag.counts)) / lag.count
    assert value(collected, "delay.mean") == pytest.approx(mean)
    assert value(collected, "delay.max") >= 0.05
    assert value(collected, "delay.min") <= value(collected, "delay.mean") <= value(collected, "delay.max")

    # Nothing ran since: an empty interval, while the counters stay where they were.
    collected = collect(reader)
    assert value(collected, "utilization") == 0.0
    for stat in ("min", "max", "mean", "p50", "p90", "p99"):
        assert value(collected, f"delay.{stat}") == 0.0
    assert value(collected, "callbacks") == second.callbacks


def test_lag_beyond_the_last_bound_counts_as_that_bound():
    from ferroloop._otel import _delays

    bounds = (1.0, 2.0, float("inf"))
    assert _delays(bounds, (0, 0, 3)) == dict.fromkeys(("min", "max", "mean", "p50", "p90", "p99"), 2.0)
    assert _delays(bounds, (1, 0, 1))["mean"] == 1.5


def test_the_programs_own_reset_is_left_alone_and_counters_never_go_back(ferro_loop, reader, provider):
    loop = ferro_loop
    ferroloop.instrument(loop, provider)
    workload(loop)
    first = value(collect(reader), "callbacks")
    assert loop.stats().callbacks == first  # instrument() did not reset the loop's counters
    loop.stats(reset=True)
    for _ in range(4):
        loop.call_soon(lambda: None)
    run_once(loop)
    since_reset = loop.stats()
    collected = collect(reader)
    assert since_reset.callbacks == 5
    assert value(collected, "callbacks") == first + since_reset.callbacks
    busy, idle = since_reset.busy_time, since_reset.idle_time
    assert value(collected, "utilization") == pytest.approx(busy / (busy + idle))


def test_one_collection_reads_the_stats_once(reader, provider):
    reads = []

    class Counting(ferroloop.Loop):
        def stats(self, reset=False):
            reads.append(reset)
            return super().stats(reset)

    loop = Counting()
    try:
        ferroloop.instrument(loop, provider)
        workload(loop)
        collect(reader)
        assert reads == [False]
        collect(reader)
        collect(reader)
        assert reads == [False] * 3
    finally:
        loop.close()


def test_loops_on_one_provider_are_told_apart(reader, provider):
    loops = [ferroloop.new_event_loop() for _ in range(2)]
    try:
        handles = [ferroloop.instrument(loop, provider) for loop in loops]
        assert [h.id for h in handles] == [0, 1]
        workload(loops[1])
        collected = collect(reader)
        for handle, loop in zip(handles, loops):
            assert value(collected, "callbacks", handle.id) == loop.stats().callbacks
        assert value(collected, "callbacks", 0) < value(collected, "callbacks", 1)

        with pytest.raises(RuntimeError, match="already instrumented"):
            ferroloop.instrument(loops[0], provider)
        handles[0].close()
        again = ferroloop.instrument(loops[0], provider)
        assert again.id == 2
        assert set(collect(reader)[f"{NS}.callbacks"]) == {((ID, 1),), ((ID, 2),)}
    finally:
        for loop in loops:
            loop.close()


def test_close_stops_publishing(ferro_loop, reader, provider):
    handle = ferroloop.instrument(ferro_loop, provider)
    workload(ferro_loop)
    assert value(collect(reader), "callbacks") > 0
    handle.close()
    assert collect(reader) == {}
    handle.close()


def test_a_with_block_closes_it(ferro_loop, reader, provider):
    with ferroloop.instrument(ferro_loop, provider) as handle:
        run_once(ferro_loop)
        assert value(collect(reader), "callbacks", handle.id) >= 1
    assert collect(reader) == {}


def test_a_closed_loop_is_no_longer_reported(ferro_loop, reader, provider):
    ferroloop.instrument(ferro_loop, provider)
    run_once(ferro_loop)
    assert collect(reader)
    ferro_loop.close()
    assert collect(reader) == {}


def test_instrumenting_does_not_keep_the_loop_alive(reader, provider):
    loop = ferroloop.new_event_loop()
    handle = ferroloop.instrument(loop, provider)
    run_once(loop)
    assert collect(reader)
    ref = weakref.ref(loop)
    del loop
    gc.collect()
    assert ref() is None
    assert collect(reader) == {}
    handle.close()


def test_the_running_loop_and_the_global_provider_by_default(ferro_loop, reader, provider, monkeypatch):
    monkeypatch.setattr(otel_metrics, "get_meter_provider", lambda: provider)

    async def main():
        return ferroloop.instrument()

    handle = run(ferro_loop, main())
    assert value(collect(reader), "callbacks", handle.id) == ferro_loop.stats().callbacks


def test_without_a_running_loop_it_is_a_runtime_error(provider):
    with pytest.raises(RuntimeError, match="no event loop is running"):
        ferroloop.instrument(meter_provider=provider)


def test_a_loop_other_than_ferroloop_is_a_type_error(reader, provider):
    stock = asyncio.SelectorEventLoop()
    try:
        with pytest.raises(TypeError, match="needs a ferroloop loop.*SelectorEventLoop"):
            ferroloop.instrument(stock, provider)

        async def main():
            ferroloop.instrument(meter_provider=provider)

        with pytest.raises(TypeError, match="needs a ferroloop loop"):
            run(stock, main())
    finally:
        stock.close()
    assert collect(reader) == {}


def test_collected_from_another_thread_while_the_loop_runs(ferro_loop, reader, provider):
    """As a periodic exporter does: its own thread, the loop running in another."""
    loop = ferro_loop
    ferroloop.instrument(loop, provider)
    ticks = []
    collected = []

    def tick():
        ticks.append(None)
        loop.call_later(0.001, tick)

    def collector():
        for _ in range(5):
            collected.append(collect(reader))
            time.sleep(0.01)
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(tick)
    thread = threading.Thread(target=collector)
    loop.call_soon(thread.start)
    loop.run_forever()
    thread.join()
    counts = [value(c, "callbacks") for c in collected]
    assert counts == sorted(counts) and counts[-1] <= loop.stats().callbacks
    assert all(0.0 <= value(c, "utilization") <= 1.0 for c in collected)
