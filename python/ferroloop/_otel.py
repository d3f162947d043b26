"""OpenTelemetry metrics from `loop.stats()`: `ferroloop.instrument()`.

opentelemetry-api is an optional dependency (`pip install ferroloop[otel]`), imported when
`instrument()` is first called and never by `import ferroloop`.

The names. OpenTelemetry's semantic conventions describe an event loop only for Node.js
(`nodejs.eventloop.*`, in development) and nothing for asyncio. The instruments here follow
Node's names, kinds and units under `python.asyncio.eventloop.*`: named for the API the loop
implements, not for ferroloop, so that a dashboard would carry over to any asyncio loop
publishing the same. To Node's `utilization`, `time` (by `...eventloop.state`, active or idle)
and `delay.*` gauges they add the counters Node has no word for:

    name (after python.asyncio.eventloop.)   kind            unit        attribute
    utilization                              gauge           1
    time                                     counter         s           state: active, idle
    delay.{min,max,mean,p50,p90,p99}         gauge           s
    callbacks, slow_callbacks                counter         {callback}
    io_events                                counter         {event}
    polls                                    counter         {poll}
    timers                                   counter         {timer}     timer.state: scheduled,
                                                                           fired, cancelled
    ready                                    up-down counter {callback}

Intervals. Utilization and the delays are gauges of the interval since the previous collection
(figures since the loop started would flatten as it ages), the counters totals. Each collection
reads `loop.stats()` once per loop, all its callbacks sharing that read, and takes the
difference from the previous collection's read (the first one's interval is the counters' own).
Never `stats(reset=True)`: that would take the reset a program makes for its own figures. If
the program resets between two collections, the counters going back say so and that interval is
what followed the reset; the totals published still never go back. With several readers on one
provider, an interval is since the previous collection by any of them.

The delays come from `LoopStats.lag`, a histogram of buckets each twice as wide as the last:
each wait counts as its bucket's upper edge (as `LagHistogram.percentile` answers), so a figure
is at most twice the truth (or 1 µs), and waits of 17 s or more count as 17 s. No
`delay.stddev`: across such buckets the spread would be theirs rather than the waits'. An
interval without waits reports 0.

One set of instruments per meter provider. OpenTelemetry's API registers an instrument name
once per meter (the SDK returns the first and drops a second's callbacks) and cannot unregister
a callback, so all the loops instrumented on one provider share its instruments, each loop told
apart by `python.asyncio.eventloop.id` (0, 1, ... in the order `instrument()` was called on that
provider), and a closed handle, a closed loop or a collected one is simply no longer observed.
"""

import asyncio
import dataclasses
import itertools
import threading
import weakref

from ferroloop._core import __version__
from ferroloop._stats import LagHistogram

__all__ = ("instrument", "Instrumentation")

_NS = "python.asyncio.eventloop"
_COUNTED = (
    "callbacks",
    "slow_callbacks",
    "io_events",
    "polls",
    "timers_scheduled",
    "timers_fired",
    "timers_cancelled",
    "busy_time",
    "idle_time",
)
_TIMERS = ("scheduled", "fired", "cancelled")


def _total(name):
    return lambda sample: [(sample.totals[name], {})]


# (kind, name, unit, description, what one loop's sample observes: [(value, attributes)]).
_INSTRUMENTS = (
    (
        "gauge",
        "utilization",
        "1",
        "Event loop utilization, busy / (busy + idle), since the previous collection.",
        lambda s: [(s.utilization, {})],
    ),
    (
        "counter",
        "time",
        "s",
        "Cumulative duration of time the event loop has been in each state.",
        lambda s: [
            (s.totals["busy_time"], {f"{_NS}.state": "active"}),
            (s.totals["idle_time"], {f"{_NS}.state": "idle"}),
        ],
    ),
    *(
        (
            "gauge",
            f"delay.{stat}",
            "s",
            f"Event loop {stat} delay since the previous collection: how late timers ran and "
            "how long ready callbacks waited.",
            lambda s, stat=stat: [(s.delays[stat], {})],
        )
        for stat in ("min", "max", "mean", "p50", "p90", "p99")
    ),
    ("counter", "callbacks", "{callback}", "Callbacks run.", _total("callbacks")),
    (
        "counter",
        "slow_callbacks",
        "{callback}",
        "Callbacks that took the loop's slow_callback_duration or longer.",
        _total("slow_callbacks"),
    ),
    ("counter", "io_events", "{event}", "Readiness events of file descriptors.", _total("io_events")),
    ("counter", "polls", "{poll}", "Waits for I/O, including those that did not block.", _total("polls")),
    (
        "counter",
        "timers",
        "{timer}",
        "Timers scheduled, fired, and cancelled before they ran.",
        lambda s: [(s.totals[f"timers_{state}"], {f"{_NS}.timer.state": state}) for state in _TIMERS],
    ),
    ("up_down_counter", "ready", "{callback}", "Callbacks in the ready queue.", lambda s: [(s.ready, {})]),
)

_publishers = weakref.WeakKeyDictionary()  # meter provider -> its _Publisher
_publishers_lock = threading.Lock()


def instrument(loop=None, meter_provider=None):
    """Publishes a ferroloop loop's `stats()` as OpenTelemetry metrics until the returned handle
    is closed or the loop is; the loop is held weakly. `loop` defaults to the running loop,
    `meter_provider` to OpenTelemetry's global one (meter "ferroloop").

    The instruments follow the semantic conventions' `nodejs.eventloop.*` (utilization, time,
    delay.*), which have no asyncio counterpart, under the namespace `python.asyncio.eventloop.*`,
    and add callbacks, slow_callbacks, io_events, polls, timers and ready; each observation
    carries `python.asyncio.eventloop.id`, the handle's `id`. `ferroloop._otel` lists them."""
    try:
        from opentelemetry import metrics
    except ImportError as exc:
        raise ImportError(
            "ferroloop.instrument() needs opentelemetry-api: pip install ferroloop[otel]"
        ) from exc
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "ferroloop.instrument() has no loop to instrument: no event loop is running in "
                "this thread; pass loop= or call it from code running on the loop"
            ) from None
    if not callable(getattr(loop, "stats", None)):
        raise TypeError(
            f"ferroloop.instrument() needs a ferroloop loop (one with stats()), not {type(loop).__name__}"
        )
    if meter_provider is None:
        meter_provider = metrics.get_meter_provider()
    with _publishers_lock:
        publisher = _publishers.get(meter_provider)
        if publisher is None:
            meter = meter_provider.get_meter("ferroloop", __version__)
            publisher = _publishers[meter_provider] = _Publisher(meter, metrics.Observation)
    return publisher.add(loop)


class Instrumentation:
    """What `ferroloop.instrument()` returns: `close()`, or the end of a `with` block on it, stops
    publishing the loop's figures. `id` is the loop's `python.asyncio.eventloop.id`."""

    def __init__(self, loop, ident):
        self.id = ident
        self._loop = weakref.ref(loop)
        self._closed = False
        self._last = None  # the last read's counters, then its lag counts
        self._elapsed = 0.0
        self._totals = dict.fromkeys(_COUNTED, 0)

    def close(self):
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _live_loop(self):
        loop = self._loop()
        return None if self._closed or loop is None or loop.is_closed() else loop

    def _read(self):
        """This collection's `_Sample` of the loop, or None once closed, or the loop is."""
        loop = self._live_loop()
        if loop is None:
            return None
        stats = loop.stats()
        now = [getattr(stats, f) for f in _COUNTED] + list(stats.lag.counts)
        delta = [a - b for a, b in zip(now, self._last)] if self._last else now
        if min(delta) < 0 or stats.elapsed < self._elapsed:
            delta = now  # reset by the program since the last read: count from the reset
        self._last, self._elapsed = now, stats.elapsed
        changes = dict(zip(_COUNTED, delta))
        for f in _COUNTED:
            self._totals[f] += changes[f]
        active = changes["busy_time"] + changes["idle_time"]
        return _Sample(
            self.id,
            dict(self._totals),
            changes["busy_time"] / active if active > 0 else 0.0,
            _delays(stats.lag.bounds, tuple(delta[len(_COUNTED) :])),
            stats.ready,
        )


@dataclasses.dataclass(frozen=True)
class _Sample:
    """One loop's figures for one collection."""

    id: int
    totals: dict[str, float]
    """Since the counters started, across the program's resets."""
    utilization: float
    delays: dict[str, float]
    ready: int


def _delays(bounds, counts):
    """The delay gauges of an interval's lag histogram: each wait as its bucket's upper edge,
    the last bucket's (unbounded) as its lower; 0.0 for an empty one."""
    lag = LagHistogram(bounds, counts)
    cap = bounds[-2]
    edges = bounds[:-1] + (cap,)
    return {
        "min": min(lag.percentile(0), cap),
        "max": min(lag.percentile(100), cap),
        "mean": sum(e * n for e, n in zip(edges, counts)) / lag.count if lag.count else 0.0,
        "p50": min(lag.percentile(50), cap),
        "p90": min(lag.percentile(90), cap),
        "p99": min(lag.percentile(99), cap),
    }


class _Publisher:
    """One meter provider's instruments and the loops they observe."""

    def __init__(self, meter, observation):
        self._lock = threading.Lock()
        self._handles = []
        self._ids = itertools.count()
        self._samples = []
        self._observed = set()  # the instruments that have seen `_samples`
        for kind, name, unit, description, observe in _INSTRUMENTS:
            create = getattr(meter, f"create_observable_{kind}")
            callback = self._callback(name, observe, observation)
            create(f"{_NS}.{name}", callbacks=[callback], unit=unit, description=description)

    def add(self, loop):
        with self._lock:
            if any(h._live_loop() is loop for h in self._handles):
                raise RuntimeError("this loop is already instrumented on this meter provider")
            handle = Instrumentation(loop, next(self._ids))
            self._handles.append(handle)
        return handle

    def _callback(self, name, observe, observation):
        def callback(options):
            return [
                observation(value, {**attributes, f"{_NS}.id": sample.id})
                for sample in self._collect(name)
                for value, attributes in observe(sample)
            ]

        return callback

    def _collect(self, name):
        """The loops' samples for the collection under way. OpenTelemetry's Python API has no
        batch callback: a collection calls each instrument's once, so the first instrument to call
        again starts the next collection, and the loops are read then, once for all of them."""
        with self._lock:
            if not self._observed or name in self._observed:
                read = [(h, h._read()) for h in self._handles]
                self._handles = [h for h, sample in read if sample]
                self._samples = [sample for _, sample in read if sample]
                self._observed.clear()
            self._observed.add(name)
            return self._samples
