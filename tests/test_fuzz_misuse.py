"""Misuse fuzzing: random sequences of loop calls, with right, wrong and hostile arguments, run
on the stock loop and on ferroloop side by side; both must answer each call alike.

What it does. A hypothesis `RuleBasedStateMachine` holds two sides: the stock loop
(`asyncio.SelectorEventLoop()`) and ferroloop (`ferroloop.new_event_loop()`), each with its own
pool of sockets, futures and handles. Every rule is one operation (scheduling callbacks, handles,
readers and writers, `sock_*` calls, futures and tasks, running, stopping and closing, calls from
other threads and from inside callbacks, executors, signals, name resolution, debug mode, the
exception handler and task factory), drawn with arguments from lists of good, bad and hostile
values, and applied to the stock side first, then to ferroloop's with the same arguments (a
socket argument is each side's own socket).

Why outcome classes. The stock loop is the specification, but two loops never return the same
objects, so each call's outcome is reduced to a class before it is compared:
- a result: its type name, and its value where that is deterministic (None, bools, ints,
  strings, bytes; a float only as finite, infinite or NaN; the repr of a handle; the state of a
  future); sequences element by element;
- an exception: its type and its message.
After every step the two sides' records must also agree: what the scheduled callbacks did, in
order (each records its label, and what a re-entrant call inside it gave), which reader and
writer callbacks ran, and what the exception handler received (the message, the exception's
type, the context's keys).

Normalisations, each because the two sides legitimately differ there (see `NORMALISATIONS`):
addresses in object reprs; a socket's fd in its repr and each side's listening port (each side
has its own sockets); `Task-N` names (one counter for both loops' tasks); a TimerHandle's
deadline in its repr (a clock reading); the class named in an argument error or a task's repr
("BaseEventLoop.call_soon() missing ..." is "Loop.call_soon() missing ..." on ferroloop: a class
name, not a behaviour); places in the loop's own code (asyncio's files, ferroloop's) in reprs.
Not compared at all: what the exception handler hears from the garbage collector ("Task
exception was never retrieved" and the like, `COLLECTOR_MESSAGES`), as when an object is
collected depends on the reference cycles the loop's own frames make.

Excluded, as the README's list of deliberate differences ("Where ferroloop differs from the stock
loop") says, and only that (each exclusion's comment cites its item):
- timers with equal deadlines: their callbacks are compared as a set, not in order;
- a timer whose deadline is NaN is cancelled as soon as it is made (on the stock loop also taken
  out of its heap, which a NaN breaks): when it would run is not compared;
- readers and writers dropped when their socket closes: a step that would find such a
  registration by the closed socket object (the stock selector still can) is skipped, and
  counted;
- a number registered again after its file closed: the machine never lets a number be reused
  within a run (its sockets are made up front; a connection it accepts is closed at once);
- `sock_*` calls ended by a close under them: a call gets a bounded number of iterations and is
  cancelled, never left waiting across steps;
- the private `_scheduled` flag, the timer heap's contents, the bound methods in the loop's
  `__dict__`, polling before sleeping, shared `contextvars` snapshots and the transport and
  datagram items are not observed by any rule.

Timing is kept out of what is compared. "Run briefly" runs a fixed number of iterations (a
`call_soon` chain stops the loop), not a span of time; timers are either due already (negative,
zero, past deadlines) or far away (an hour and more), so their order never depends on how long
a step took; a `sock_*` call gets a fixed number of iterations; only calls that wait for a thread
(executors, name resolution) wait up to a few seconds.

No step may hang: every run is bounded as above, threads are joined with a time-out, and each
step re-arms a faulthandler time limit that prints every thread's traceback and exits. No file
descriptor may leak: at teardown, after both loops and everything the machine made are closed,
/proc/self/fd must have no more entries than before the machine started.

No network: only numeric addresses, None and the loopback interface.

Each difference found has a regression test in test_fuzz_regressions.py: the bugs were fixed;
what ferroloop answers differently on purpose (the README lists it) is skipped, and counted,
through `DIFFERENCES`.

Profiles. By default ("ci") the run is bounded to about a minute on a slow 2-core machine. Set
`FERROLOOP_FUZZ_PROFILE=long` for a long run (5000 machines). The counts of machines and steps
are written to the terminal at the end of the module. hypothesis prints the failing steps (and a
`@reproduce_failure` blob) when the two loops disagree.
"""

import asyncio
import concurrent.futures
import contextvars
import faulthandler
import functools
import gc
import heapq
import math
import os
import re
import resource
import signal
import socket
import sys
import threading
import warnings
from decimal import Decimal
from fractions import Fraction

import conftest
import ferroloop
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

PROFILES = {
    # CI's examples are the same on every run (derandomize), so that main's CI cannot turn red
    # by chance; the long profile draws new ones each time.
    "ci": {"max_examples": 800, "stateful_step_count": 50, "derandomize": True},
    "long": {"max_examples": 5000, "stateful_step_count": 60},
}
PROFILE = os.environ.get("FERROLOOP_FUZZ_PROFILE", "ci")
if PROFILE not in PROFILES:
    raise ValueError(f"FERROLOOP_FUZZ_PROFILE must be one of {sorted(PROFILES)}, not {PROFILE!r}")

# Hostile steps make coroutines that are never awaited (as callbacks, task factories' victims,
# arguments a closed loop refuses): their warnings are the point, not a failure.
pytestmark = pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")

RUN_ITERATIONS = 6  # loop iterations a "run briefly" step or a bounded run_until_complete gets
IO_SPINS = 10  # iterations a sock_* call gets to complete before it is cancelled
THREAD_WAIT = 5.0  # seconds a call that waits for another thread (executor, resolver) gets
SOCK_TIMEOUT = 0.05  # a socket "in blocking mode": gettimeout() != 0, with a bound on its waits
STEP_LIMIT = 60  # seconds any one step may take before faulthandler ends the process
CLOSING_STEP = PROFILES[PROFILE]["stateful_step_count"] // 2  # the first that may close the loop

STATS = {"machines": 0, "steps": 0, "skipped as documented differences": 0}

PENDING = "still pending"  # what a bounded wait gives for a call that did not complete


def choose(names, good):
    """A strategy drawing one of `names`: half the time one of the `good` ones (right arguments
    get past the first check, deeper into the loop), half the time one of the others."""
    right = [name for name in names if name in good]
    wrong = [name for name in names if name not in good]
    return st.one_of(st.sampled_from(right), st.sampled_from(wrong))


def fd_count():
    return len(os.listdir("/proc/self/fd"))


def arm_step_limit():
    faulthandler.dump_traceback_later(STEP_LIMIT, exit=True, file=conftest._hang_report or sys.stderr)


@pytest.fixture(autouse=True)
def _hang_guard():
    """Replaces conftest's limit on a whole test: this one test runs for minutes under the long
    profile, so each step re-arms the limit instead (`arm_step_limit`)."""
    arm_step_limit()
    yield
    faulthandler.cancel_dump_traceback_later()


class _CountReport:
    """Writes the counts in pytest's terminal summary."""

    def pytest_terminal_summary(self, terminalreporter):
        terminalreporter.write_line(
            f"test_fuzz_misuse ({PROFILE} profile): {STATS['machines']} machines, "
            f"{STATS['steps']} steps compared, "
            f"{STATS['skipped as documented differences']} skipped as documented differences"
        )


@pytest.fixture(scope="module", autouse=True)
def _report_counts(request):
    plugins = request.config.pluginmanager
    if not plugins.has_plugin("fuzz-misuse-counts"):
        plugins.register(_CountReport(), "fuzz-misuse-counts")
    yield
    # Tasks a stopped run left before their first step hold coroutines never started: collect
    # them here, where their warnings are expected, not at interpreter exit.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
        gc.collect()


# -- what the two sides' outcomes are reduced to ---------------------------------------------

NORMALISATIONS = [
    # Object reprs show addresses, which differ between any two objects.
    (re.compile(r"0x[0-9a-fA-F]+"), "0x?"),
    # A socket's repr shows its fd and ports; each side has its own sockets.
    (re.compile(r"fd=\d+"), "fd=?"),
    (re.compile(r"((?:laddr|raddr)=\('[^']*', )\d+"), r"\1?"),
    # Task names count tasks in the process, and both loops' tasks share that count.
    (re.compile(r"Task-\d+"), "Task-?"),
    # A TimerHandle's repr shows its deadline, a clock reading (NaN and infinities are kept).
    (re.compile(r"when=\d[\d.e+-]*"), "when=?"),
    # An argument error names the class that defines the method: BaseEventLoop for the stock
    # loop, Loop for ferroloop. A class name, not a behaviour.
    (re.compile(r"\b\w+\.(?=\w+\(\) (?:got|missing|takes))"), ""),
    # Likewise a task's repr running a loop method's coroutine (shutdown_default_executor()).
    (re.compile(r"coro=<\w+\.(\w+\(\)) running at "), r"coro=<\1 running at "),
    # Places in the loop's own code (where a future it made was created, where a coroutine of
    # its runs): asyncio's files or ferroloop's.
    (
        re.compile(
            "(?:"
            + "|".join(re.escape(os.path.dirname(m.__file__)) for m in (asyncio, ferroloop))
            + r")/[\w/]+\.py:\d+"
        ),
        "<loop code>",
    ),
    # In debug mode a future's repr says where it was created: the innermost frame of its source
    # traceback, which for the stock loop's create_future() is asyncio's own code, and for
    # ferroloop's (Rust, no frame of its own) the caller's line.
    (re.compile(r"created at (?:<loop code>|[^>]+)"), "created at ?"),
]


# What a task or future says when the garbage collector finds it unfinished or its exception
# unretrieved. When that is depends on the reference cycles the loop's own frames put it in (the
# stock loop's Python frames hold some that ferroloop's Rust loop does not), not on the loop's
# behaviour: not compared.
COLLECTOR_MESSAGES = {
    "Task exception was never retrieved",
    "Future exception was never retrieved",
    "Task was destroyed but it is pending!",
}


def type_name(obj):
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}" if isinstance(obj, BaseException) else cls.__name__


class CallbackError(Exception):
    """What the "raise" callbacks and coroutines raise."""


# -- callbacks, the same functions on both sides (their reprs show in messages) --------------


def cb_record(side, label):
    side.log.append((label,))


def cb_raise(side, label):
    side.log.append((label, "raising"))
    raise CallbackError(label)


def cb_exit(side, label):
    side.log.append((label, "raising SystemExit"))
    raise SystemExit(label)


def cb_nested(side, label):
    side.log.append((label, "scheduling"))
    side.loop.call_soon(cb_record, side, label + ".nested")


def cb_io(side, label):
    # Readers and writers run on every iteration their fd is ready, as many times as a run has
    # iterations: only whether they ran is compared.
    side.io_fired.add(label)


def cb_reenter(side, label, what):
    """A callback that calls the loop (or another loop) from inside a run."""
    side.log.append((label, what, side.outcome(REENTRY[what])[0]))


def cb_thread(side, label, method):
    """A callback that has another thread schedule a callback on the running loop."""
    result = side.in_thread(lambda s: getattr(s.loop, method)(cb_record, s, label + ".thread"))
    side.log.append((label, method + " from a thread", result))


async def co_record(side, label):
    side.log.append((label, "coroutine"))
    return label


async def co_raise(side, label):
    side.log.append((label, "coroutine raising"))
    raise CallbackError(label)


async def co_exit(side, label):
    side.log.append((label, "coroutine raising SystemExit"))
    raise SystemExit(label)


def task_factory(side, loop, coro, **kwargs):
    side.log.append(("task factory", sorted(kwargs)))
    return asyncio.Task(coro, loop=loop, **kwargs)


def task_factory_returning_none(loop, coro, **kwargs):
    coro.close()


def handler_raising(loop, context):
    raise CallbackError("exception handler")


def executor_value(x):
    return x * 2


def executor_raise():
    raise CallbackError("in executor")


REENTRY = {
    "run_until_complete inside": lambda s: s.loop.run_until_complete(s.kept(s.loop.create_future())),
    "run_forever inside": lambda s: s.loop.run_forever(),
    "close inside": lambda s: s.loop.close(),
    "stop inside": lambda s: s.loop.stop(),
    "another loop's run_until_complete inside": lambda s: s.other.run_until_complete(
        s.kept(s.other.create_future())
    ),
    "is_running inside": lambda s: s.loop.is_running(),
    "set_debug(True) inside": lambda s: s.loop.set_debug(True),
}

# What a scheduled callback is: name -> (side, label) -> (callback, args).
CALLBACKS = {
    "record": lambda s, label: (cb_record, (s, label)),
    "raise": lambda s, label: (cb_raise, (s, label)),
    # SystemExit (and KeyboardInterrupt, which the machine leaves to Ctrl-C) goes out of the run.
    "raise SystemExit": lambda s, label: (cb_exit, (s, label)),
    "nested call_soon": lambda s, label: (cb_nested, (s, label)),
    **{what: (lambda what: lambda s, label: (cb_reenter, (s, label, what)))(what) for what in REENTRY},
    "call_soon from a thread inside": lambda s, label: (cb_thread, (s, label, "call_soon")),
    "call_soon_threadsafe from a thread inside": lambda s, label: (
        cb_thread,
        (s, label, "call_soon_threadsafe"),
    ),
    "too many arguments": lambda s, label: (cb_record, (s, label, "extra")),
    "too few arguments": lambda s, label: (cb_record, (s,)),
    "int": lambda s, label: (1, ()),
    "None": lambda s, label: (None, ()),
    "str": lambda s, label: ("cb", ()),
    "coroutine function": lambda s, label: (co_record, (s, label)),
    "coroutine object": lambda s, label: (s.coroutine(co_record(s, label)), ()),
}
CALLBACK = choose(
    CALLBACKS,
    {"record", "raise", "raise SystemExit", "nested call_soon", *REENTRY, "call_soon from a thread inside",
     "call_soon_threadsafe from a thread inside"},
)

# Keyword arguments of call_soon & co.: name -> side -> kwargs.
SCHEDULE_KWARGS = {
    "none": lambda s: {},
    "context=None": lambda s: {"context": None},
    "context=copy_context()": lambda s: {"context": contextvars.copy_context()},
    "context=1": lambda s: {"context": 1},
    "unknown keyword": lambda s: {"foo": 1},
}
SCHEDULE_KWARG = choose(SCHEDULE_KWARGS, {"none", "context=None", "context=copy_context()"})

# Delays for call_later. Only due (<= 0) or far (>= an hour) ones: a timer due within a run
# would run in an iteration that depends on how long the steps took.
DELAYS = {
    "0": 0,
    "-0.0": -0.0,
    "-1": -1,
    "-inf": -math.inf,
    "nan": math.nan,
    "inf": math.inf,
    "3600": 3600,
    "1e300": 1e300,
    "10**400": 10**400,
    "-10**400": -(10**400),
    "True": True,
    "Fraction(-1, 3)": Fraction(-1, 3),
    "Decimal(1)": Decimal(1),
    "'1'": "1",
    "None": None,
    "1j": 1j,
}
DELAY = choose(DELAYS, {"0", "-0.0", "-1", "-inf", "inf", "3600", "1e300"})

# Deadlines for call_at: relative to the side's clock at the machine's start (the same for both
# sides), or raw values. Several steps may pick the same one: equal deadlines.
WHENS = {
    "start - 1": lambda s: s.start - 1,
    "start": lambda s: s.start,
    "start + 3600": lambda s: s.start + 3600,
    **{name: (lambda v: lambda s: v)(value) for name, value in DELAYS.items() if name != "3600"},
}
WHEN = choose(WHENS, {"start - 1", "start", "start + 3600", "-inf", "inf", "1e300"})

# Pool sockets: 0-1 and 2-3 are socketpairs, 4 a listening TCP socket, 5 an unconnected one.
PAIR_SOCKS = range(4)
ALL_SOCKS = range(6)
LISTENER, CLIENT = 4, 5


class FileLike:
    """An object with a fileno() method."""

    def __init__(self, name, fileno):
        self.name = name
        self._fileno = fileno

    def fileno(self):
        return self._fileno()

    def __repr__(self):
        return f"<FileLike {self.name}>"


def _raise(exc):
    raise exc


# What add_reader & co. get for their fd: name -> side -> object.
FDS = {
    **{f"socket {i}": (lambda i: lambda s: s.socks[i])(i) for i in ALL_SOCKS},
    **{f"fileno of socket {i}": (lambda i: lambda s: s.socks[i].fileno())(i) for i in ALL_SOCKS},
    "file-like of socket 0": lambda s: FileLike("of socket 0", lambda: s.socks[0].fileno()),
    "closed fd": lambda s: s.closed_fd,
    "-1": lambda s: -1,
    "2**31": lambda s: 2**31,
    "2**63": lambda s: 2**63,
    "2**70": lambda s: 2**70,
    "file-like of closed fd": lambda s: FileLike("of closed fd", lambda: s.closed_fd),
    "file-like raising OSError": lambda s: FileLike("raising OSError", lambda: _raise(OSError("boom"))),
    "file-like raising ValueError": lambda s: FileLike(
        "raising ValueError", lambda: _raise(ValueError("boom"))
    ),
    "file-like raising TypeError": lambda s: FileLike("raising TypeError", lambda: _raise(TypeError("boom"))),
    "file-like returning -1": lambda s: FileLike("returning -1", lambda: -1),
    "file-like returning 'x'": lambda s: FileLike("returning 'x'", lambda: "x"),
    "file-like returning None": lambda s: FileLike("returning None", lambda: None),
    "file-like returning -1.5": lambda s: FileLike("returning -1.5", lambda: -1.5),
    "file-like returning 2**70": lambda s: FileLike("returning 2**70", lambda: 2**70),
    "'x'": lambda s: "x",
    "None": lambda s: None,
    "1.5": lambda s: 1.5,
}
FD = choose(FDS, {name for name in FDS if "socket" in name})

# Callbacks for add_reader/add_writer. Any but "record" is removed in the step that adds it: a
# bad callback fails on every iteration its fd is ready, and how many iterations that is
# depends on timing.
IO_CALLBACKS = {
    "record": lambda s, label: (cb_io, (s, label)),
    "too many arguments": lambda s, label: (cb_io, (s, label, "extra")),
    "int": lambda s, label: (1, ()),
    "None": lambda s, label: (None, ()),
    "coroutine function": lambda s, label: (co_record, (s, label)),
}
IO_CALLBACK = choose(IO_CALLBACKS, {"record"})

# Sockets for the sock_* calls: name -> side -> object.
SOCKS = {
    **{f"socket {i}": (lambda i: lambda s: s.socks[i])(i) for i in ALL_SOCKS},
    "None": lambda s: None,
    "int": lambda s: 3,
    "file-like": lambda s: FileLike("of socket 0", lambda: s.socks[0].fileno()),
}
SOCK = choose(SOCKS, {f"socket {i}" for i in ALL_SOCKS})
DATA_SOCK = choose(
    [f"socket {i}" for i in PAIR_SOCKS] + ["None", "int", "file-like"], {f"socket {i}" for i in PAIR_SOCKS}
)

RECV_SIZES = {
    "0": 0,
    "1": 1,
    "100": 100,
    "-1": -1,
    "2**62": 2**62,
    "2**63": 2**63,
    "2**70": 2**70,
    "'x'": "x",
    "None": None,
    "1.5": 1.5,
}
RECV_SIZE = choose(RECV_SIZES, {"1", "100"})
RECV_BUFFERS = {
    "bytearray(0)": lambda: bytearray(0),
    "bytearray(8)": lambda: bytearray(8),
    "bytes": lambda: b"abc",
    "memoryview(bytearray(8))": lambda: memoryview(bytearray(8)),
    "non-contiguous memoryview": lambda: memoryview(bytearray(8))[::2],
    "'x'": lambda: "x",
    "None": lambda: None,
}
RECV_BUFFER = choose(RECV_BUFFERS, {"bytearray(0)", "bytearray(8)", "memoryview(bytearray(8))"})
# Small enough that all a machine sends fits in a socketpair's buffer.
SEND_DATA = {
    "b''": lambda: b"",
    "b'ping'": lambda: b"ping",
    "1000 bytes": lambda: bytes(range(250)) * 4,
    "bytearray": lambda: bytearray(b"pong"),
    "memoryview": lambda: memoryview(b"view"),
    "str": lambda: "text",
    "None": lambda: None,
    "int": lambda: 1,
}
SEND = choose(SEND_DATA, {"b'ping'", "1000 bytes", "bytearray", "memoryview"})
# Addresses that need no resolver thread (numeric, or refused before resolution): a call that
# waits for the resolver would end in a number of iterations that depends on timing.
ADDRESSES = {
    "the side's listener": lambda s: s.listener_address,
    "('127.0.0.1', 1)": lambda s: ("127.0.0.1", 1),
    "('127.0.0.1', -1)": lambda s: ("127.0.0.1", -1),
    "('127.0.0.1', 2**70)": lambda s: ("127.0.0.1", 2**70),
    "('127.0.0.1',)": lambda s: ("127.0.0.1",),
    "'x'": lambda s: "x",
    "1": lambda s: 1,
    "None": lambda s: None,
}
ADDRESS = choose(ADDRESSES, {"the side's listener", "('127.0.0.1', 1)"})

# What run_until_complete and create_task get: name -> side -> object.
AWAITABLES = {
    "record coroutine": lambda s: s.coroutine(co_record(s, "awaited")),
    "raising coroutine": lambda s: s.coroutine(co_raise(s, "awaited")),
    "coroutine raising SystemExit": lambda s: s.coroutine(co_exit(s, "awaited")),
    "awaitable object": lambda s: Awaitable(s),
    "another loop's future": lambda s: s.kept(s.other.create_future()),
    "another loop's done future": lambda s: s.kept(done_future(s.other)),
    "generator": lambda s: (x for x in ()),
    "coroutine function": lambda s: co_record,
    "int": lambda s: 1,
    "None": lambda s: None,
    "str": lambda s: "x",
}
AWAITABLE = choose(
    AWAITABLES,
    {"record coroutine", "raising coroutine", "coroutine raising SystemExit", "awaitable object"},
)


class Awaitable:
    """Awaitable, but no coroutine and no future."""

    def __init__(self, side):
        self.side = side

    def __await__(self):
        return co_record(self.side, "awaitable object").__await__()

    def __repr__(self):
        return "<Awaitable>"


def done_future(loop):
    fut = loop.create_future()
    fut.set_result("done")
    return fut


EXECUTORS = {
    "None (the default)": lambda s: None,
    "a ThreadPoolExecutor": lambda s: s.executor(),
    "a shut down ThreadPoolExecutor": lambda s: s.shut_down_executor(),
    "int": lambda s: 1,
    "str": lambda s: "x",
}
EXECUTOR = choose(EXECUTORS, {"None (the default)", "a ThreadPoolExecutor"})
EXECUTOR_CALLS = {
    "returning": lambda s: (executor_value, (21,)),
    "raising": lambda s: (executor_raise, ()),
    "too many arguments": lambda s: (executor_value, (1, 2)),
    "int": lambda s: (1, ()),
    "None": lambda s: (None, ()),
    "coroutine function": lambda s: (co_record, (s, "executor")),
}
EXECUTOR_CALL = choose(EXECUTOR_CALLS, {"returning", "raising"})
DEFAULT_EXECUTORS = {
    "a ThreadPoolExecutor": lambda s: s.executor(),
    "a shut down ThreadPoolExecutor": lambda s: s.shut_down_executor(),
    "None": lambda s: None,
    "int": lambda s: 1,
    "a plain Executor": lambda s: concurrent.futures.Executor(),
}
DEFAULT_EXECUTOR = choose(DEFAULT_EXECUTORS, {"a ThreadPoolExecutor"})
EXCEPTION_HANDLERS = {
    "the recorder": lambda s: s.on_exception,
    "a raising handler": lambda s: handler_raising,
    "None": lambda s: None,
    "int": lambda s: 1,
    "str": lambda s: "x",
}
EXCEPTION_HANDLER = choose(EXCEPTION_HANDLERS, {"the recorder"})
TASK_FACTORIES = {
    "a recording factory": lambda s: functools.partial(task_factory, s),
    "a factory returning None": lambda s: task_factory_returning_none,
    "None": lambda s: None,
    "int": lambda s: 1,
    "str": lambda s: "x",
}
TASK_FACTORY = choose(TASK_FACTORIES, {"a recording factory", "None"})
DEBUG_VALUES = {"True": True, "False": False, "1": 1, "0": 0, "'yes'": "yes", "None": None}
DEBUG_VALUE = choose(DEBUG_VALUES, {"True", "False"})
TASK_NAMES = {"none": None, "'name'": "name", "1": 1}

# Signals: the machine never sends one, it only registers and removes handlers.
SIGNALS = {
    "SIGUSR1": signal.SIGUSR1,
    "SIGUSR2": signal.SIGUSR2,
    "SIGKILL": signal.SIGKILL,
    "SIGSTOP": signal.SIGSTOP,
    "0": 0,
    "-1": -1,
    "65": 65,
    "2**70": 2**70,
    "'x'": "x",
    "None": None,
    "1.5": 1.5,
}
SIGNAL = choose(SIGNALS, {"SIGUSR1", "SIGUSR2"})
SIGNAL_CALLBACKS = {
    "record": lambda s, label: (cb_record, (s, label)),
    "int": lambda s, label: (1, ()),
    "coroutine function": lambda s, label: (co_record, (s, label)),
    "coroutine object": lambda s, label: (s.coroutine(co_record(s, label)), ()),
}
SIGNAL_CALLBACK = choose(SIGNAL_CALLBACKS, {"record"})
HANDLED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)

GAI_HOSTS = {
    "None": None,
    "'127.0.0.1'": "127.0.0.1",
    "'::1'": "::1",
    "b'127.0.0.1'": b"127.0.0.1",
    "1": 1,
    "1.5": 1.5,
}
GAI_HOST = choose(GAI_HOSTS, {"None", "'127.0.0.1'", "'::1'"})
GAI_PORTS = {
    "None": None,
    "0": 0,
    "80": 80,
    "'80'": "80",
    "b'80'": b"80",
    "-1": -1,
    "2**70": 2**70,
    "1.5": 1.5,
}
GAI_PORT = choose(GAI_PORTS, {"0", "80", "'80'"})
GAI_KWARGS = {
    "none": {},
    "family=AF_INET": {"family": socket.AF_INET},
    "family=AF_INET6": {"family": socket.AF_INET6},
    "family=-1": {"family": -1},
    "family='x'": {"family": "x"},
    "type=SOCK_STREAM": {"type": socket.SOCK_STREAM},
    "flags=AI_NUMERICHOST": {"flags": socket.AI_NUMERICHOST},
    "flags='x'": {"flags": "x"},
}
GAI_KWARG = choose(
    GAI_KWARGS, {"none", "family=AF_INET", "family=AF_INET6", "type=SOCK_STREAM", "flags=AI_NUMERICHOST"}
)
# Always numeric: a name lookup could go to the network.
NUMERIC = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
NAMEINFO_ADDRESSES = {
    "('127.0.0.1', 80)": ("127.0.0.1", 80),
    "('::1', 80, 0, 0)": ("::1", 80, 0, 0),
    "('127.0.0.1',)": ("127.0.0.1",),
    "('127.0.0.1', 'x')": ("127.0.0.1", "x"),
    "('127.0.0.1', -1)": ("127.0.0.1", -1),
    "'x'": "x",
    "None": None,
}
NAMEINFO_ADDRESS = choose(NAMEINFO_ADDRESSES, {"('127.0.0.1', 80)", "('::1', 80, 0, 0)"})
NAMEINFO_FLAGS = {"numeric": NUMERIC, "'x'": "x", "None": None}
NAMEINFO_FLAG = choose(NAMEINFO_FLAGS, {"numeric"})

# Contexts for call_exception_handler.
HANDLER_CONTEXTS = {
    "message": lambda: {"message": "m"},
    "message and exception": lambda: {"message": "m", "exception": CallbackError("context")},
    "no message": lambda: {"exception": CallbackError("context")},
    "empty": lambda: {},
    "int": lambda: 1,
    "None": lambda: None,
}
HANDLER_CONTEXT = choose(HANDLER_CONTEXTS, {"message", "message and exception"})


def _recorder(s, label):
    return functools.partial(cb_record, s, label)


# Loop methods called with their own arguments missing, one too many, by keyword, or with an
# unknown keyword: name -> (side, label) -> (method, args, kwargs). Coroutines returned are not
# awaited (closed at teardown).
SIGNATURES = {
    "call_soon()": lambda s, label: ("call_soon", (), {}),
    "call_soon(callback=)": lambda s, label: ("call_soon", (), {"callback": _recorder(s, label)}),
    "call_later(0)": lambda s, label: ("call_later", (0,), {}),
    "call_later(delay=, callback=)": lambda s, label: (
        "call_later",
        (),
        {"delay": 0, "callback": _recorder(s, label)},
    ),
    "call_at()": lambda s, label: ("call_at", (), {}),
    "call_at(when=, callback=)": lambda s, label: (
        "call_at",
        (),
        {"when": s.start, "callback": _recorder(s, label)},
    ),
    "call_soon_threadsafe(callback=)": lambda s, label: (
        "call_soon_threadsafe",
        (),
        {"callback": _recorder(s, label)},
    ),
    "add_reader(socket 1)": lambda s, label: ("add_reader", (s.socks[1],), {}),
    "add_reader(fd=, callback=)": lambda s, label: (
        "add_reader",
        (),
        {"fd": s.socks[1], "callback": functools.partial(cb_io, s, label)},
    ),
    "remove_reader()": lambda s, label: ("remove_reader", (), {}),
    "remove_reader(fd=)": lambda s, label: ("remove_reader", (), {"fd": s.socks[1]}),
    "remove_reader(socket 1, 1)": lambda s, label: ("remove_reader", (s.socks[1], 1), {}),
    "add_writer(fd=, callback=)": lambda s, label: (
        "add_writer",
        (),
        {"fd": s.socks[2], "callback": functools.partial(cb_io, s, label)},
    ),
    "remove_writer(fd=)": lambda s, label: ("remove_writer", (), {"fd": s.socks[2]}),
    "sock_recv(socket 1)": lambda s, label: ("sock_recv", (s.socks[1],), {}),
    "sock_recv(sock=, n=)": lambda s, label: ("sock_recv", (), {"sock": s.socks[1], "n": 1}),
    "sock_recv(socket 1, 1, 2)": lambda s, label: ("sock_recv", (s.socks[1], 1, 2), {}),
    "sock_recv(socket 1, 1, bogus=)": lambda s, label: ("sock_recv", (s.socks[1], 1), {"bogus": 1}),
    "sock_recv_into(socket 1)": lambda s, label: ("sock_recv_into", (s.socks[1],), {}),
    "sock_sendall(socket 0)": lambda s, label: ("sock_sendall", (s.socks[0],), {}),
    "sock_sendall(sock=, data=)": lambda s, label: (
        "sock_sendall",
        (),
        {"sock": s.socks[0], "data": b"kw"},
    ),
    "sock_connect(socket 5)": lambda s, label: ("sock_connect", (s.socks[CLIENT],), {}),
    "sock_accept()": lambda s, label: ("sock_accept", (), {}),
    "sock_accept(sock=)": lambda s, label: ("sock_accept", (), {"sock": s.socks[LISTENER]}),
    "run_until_complete()": lambda s, label: ("run_until_complete", (), {}),
    "run_until_complete(future=)": lambda s, label: (
        "run_until_complete",
        (),
        {"future": s.kept(done_future(s.loop))},
    ),
    "run_until_complete(done future, bogus=)": lambda s, label: (
        "run_until_complete",
        (s.kept(done_future(s.loop)),),
        {"bogus": 1},
    ),
    "run_forever(1)": lambda s, label: ("run_forever", (1,), {}),
    "stop(1)": lambda s, label: ("stop", (1,), {}),
    "close(1)": lambda s, label: ("close", (1,), {}),
    "time(1)": lambda s, label: ("time", (1,), {}),
    "is_running(1)": lambda s, label: ("is_running", (1,), {}),
    "is_closed(1)": lambda s, label: ("is_closed", (1,), {}),
    "get_debug(1)": lambda s, label: ("get_debug", (1,), {}),
    "set_debug()": lambda s, label: ("set_debug", (), {}),
    "set_debug(enabled=)": lambda s, label: ("set_debug", (), {"enabled": False}),
    "create_future(1)": lambda s, label: ("create_future", (1,), {}),
    "create_task()": lambda s, label: ("create_task", (), {}),
    "create_task(coro=)": lambda s, label: ("create_task", (), {"coro": s.coroutine(co_record(s, label))}),
    "create_task(coroutine, 'name')": lambda s, label: (
        "create_task",
        (s.coroutine(co_record(s, label)), "name"),
        {},
    ),
    "create_task(coroutine, context=copy_context())": lambda s, label: (
        "create_task",
        (s.coroutine(co_record(s, label)),),
        {"context": contextvars.copy_context()},
    ),
    "create_task(coroutine, context=1)": lambda s, label: (
        "create_task",
        (s.coroutine(co_record(s, label)),),
        {"context": 1},
    ),
    "create_task(coroutine, bogus=)": lambda s, label: (
        "create_task",
        (s.coroutine(co_record(s, label)),),
        {"bogus": 1},
    ),
    "run_in_executor()": lambda s, label: ("run_in_executor", (), {}),
    "run_in_executor(None)": lambda s, label: ("run_in_executor", (None,), {}),
    "set_exception_handler()": lambda s, label: ("set_exception_handler", (), {}),
    "set_exception_handler(handler=)": lambda s, label: (
        "set_exception_handler",
        (),
        {"handler": s.on_exception},
    ),
    "get_exception_handler(1)": lambda s, label: ("get_exception_handler", (1,), {}),
    "set_task_factory()": lambda s, label: ("set_task_factory", (), {}),
    "set_task_factory(factory=)": lambda s, label: ("set_task_factory", (), {"factory": None}),
    "set_default_executor()": lambda s, label: ("set_default_executor", (), {}),
    "getaddrinfo()": lambda s, label: ("getaddrinfo", (), {}),
    "getaddrinfo('127.0.0.1')": lambda s, label: ("getaddrinfo", ("127.0.0.1",), {}),
    "getaddrinfo('127.0.0.1', 80, 0)": lambda s, label: ("getaddrinfo", ("127.0.0.1", 80, 0), {}),
    "getaddrinfo(host=, port=)": lambda s, label: ("getaddrinfo", (), {"host": "127.0.0.1", "port": 80}),
    "getaddrinfo('127.0.0.1', 80, bogus=)": lambda s, label: (
        "getaddrinfo",
        ("127.0.0.1", 80),
        {"bogus": 1},
    ),
    "getnameinfo()": lambda s, label: ("getnameinfo", (), {}),
    "getnameinfo(sockaddr=, flags=)": lambda s, label: (
        "getnameinfo",
        (),
        {"sockaddr": ("127.0.0.1", 80), "flags": NUMERIC},
    ),
    "add_signal_handler(SIGUSR1)": lambda s, label: ("add_signal_handler", (signal.SIGUSR1,), {}),
    "add_signal_handler(sig=, callback=)": lambda s, label: (
        "add_signal_handler",
        (),
        {"sig": signal.SIGUSR2, "callback": _recorder(s, label)},
    ),
    "remove_signal_handler()": lambda s, label: ("remove_signal_handler", (), {}),
    "remove_signal_handler(sig=)": lambda s, label: ("remove_signal_handler", (), {"sig": signal.SIGUSR2}),
    "call_exception_handler()": lambda s, label: ("call_exception_handler", (), {}),
    "call_exception_handler(context=)": lambda s, label: (
        "call_exception_handler",
        (),
        {"context": {"message": label}},
    ),
    "shutdown_asyncgens(1)": lambda s, label: ("shutdown_asyncgens", (1,), {}),
    # Not shutdown_default_executor with an argument: ferroloop takes 3.12's `timeout` on every
    # version, as the README's "What works" says.
}
# The pool socket those of them that add or remove a reader or writer pass.
SIGNATURE_SOCKETS = {
    "add_reader(fd=, callback=)": 1,
    "remove_reader(fd=)": 1,
    "add_writer(fd=, callback=)": 2,
    "remove_writer(fd=)": 2,
}


# -- documented differences -------------------------------------------------------------
#
# What the fuzzer found that ferroloop answers differently on purpose: each is in the README's
# "Where ferroloop differs from the stock loop" and pinned by a test in test_fuzz_regressions.py,
# which asserts both answers. A step that matches one is run on neither loop and counted as
# skipped. Each entry: (the regression test, predicate(machine, op, args)). The bugs the fuzzer
# found were fixed; their tests are in test_fuzz_regressions.py too.


def _step(ops, **values):
    """A predicate: the step is one of `ops`, each named argument one of its `values`."""

    def matches(machine, op, args):
        return op in ops and all(args.get(name) in allowed for name, allowed in values.items())

    return matches


SCHEDULING = {"call_soon", "call_soon_threadsafe", "call_later", "call_at"}
READERS_AND_WRITERS = {"add_reader", "add_writer", "remove_reader", "remove_writer"}

DIFFERENCES = [
    (
        "test_context_that_is_no_context_fails_when_the_callback_runs",
        lambda machine, op, args: (op in SCHEDULING and args["kwargs"] == "context=1")
        or (op == "call" and args["call"] == "create_task(coroutine, context=1)"),
    ),
    (
        "test_call_at_keeps_the_deadline_it_was_given / test_call_at_huge_int_deadline / "
        "test_call_at_deadline_that_is_no_number_fails_comparing_with_other_timers",
        _step(
            {"call_at"},
            when={"0", "-1", "-0.0", "10**400", "-10**400", "True"}
            | {"Fraction(-1, 3)", "Decimal(1)", "'1'", "1j"},
        ),
    ),
    (
        "test_call_later_complex_delay_fails_comparing_with_other_timers",
        _step({"call_later"}, delay={"1j"}),
    ),
    (
        "test_get_debug_returns_what_set_debug_was_given",
        _step({"set_debug"}, value={"1", "0", "'yes'", "None"}),
    ),
    (
        "test_sock_recv_on_a_socket_with_a_timeout_waits_in_the_socket",
        lambda machine, op, args: op == "sock_recv"
        and not machine.debug
        and machine.in_timeout_mode(args["sock"]),
    ),
    (
        "test_cancelled_handle_repr_keeps_the_callback_when_cancelled_in_debug_mode",
        # Ferroloop decides by the debug mode the handle was made in (which the stock handle's
        # source traceback tells), the stock loop by the one it is cancelled in.
        lambda machine, op, args: op == "cancel"
        and machine.debug != bool(machine.sides[0].handles[args["handle"]]._source_traceback),
    ),
    (
        "test_handle_repr_shows_arguments_by_the_debug_mode_of_the_moment",
        # Where arguments show only in debug mode (3.13 on), ferroloop decides by the mode the
        # handle was made in, the stock loop by the mode when the repr is made.
        lambda machine, op, args: op == "handle state"
        and not conftest.args_shown(machine.sides[0].other)
        and machine.debug != bool(machine.sides[0].handles[args["handle"]]._source_traceback),
    ),
    (
        "test_task_factory_returning_no_task",
        # 3.13 only: the stock loop calls set_name(None) on a factory's task given no name.
        lambda machine, op, args: (3, 13) <= sys.version_info < (3, 14)
        and machine.sides[0].loop.get_task_factory() is not None
        and (op in ("create_task", "run_until_complete") or op == "call" and "create_task(" in args["call"]),
    ),
    (
        "test_methods_without_arguments_refuse_one_as_stock",
        _step(
            {"call"},
            call={"stop(1)", "time(1)", "is_running(1)", "is_closed(1)", "get_debug(1)", "create_future(1)"},
        ),
    ),
    (
        "test_create_task_with_an_extra_positional_argument",
        _step({"call"}, call={"create_task(coroutine, 'name')"}),
    ),
    ("test_create_task_with_an_unknown_keyword", _step({"call"}, call={"create_task(coroutine, bogus=)"})),
    (
        "test_remove_reader_of_a_detached_socket_finds_its_registration / "
        "test_add_reader_again_with_a_detached_socket_replaces_its_registration",
        lambda machine, op, args: machine.stale_registration(op, args) == "detached",
    ),
]


# -- one side: a loop and what the machine made for it ----------------------------------------


class Side:
    """A loop and everything the machine made for it, with the records the comparison reads."""

    def __init__(self, factory, closed_fd):
        self.closed_fd = closed_fd
        self.log = []  # what callbacks did, in order
        self.io_fired = set()  # labels of reader and writer callbacks that ran
        self.handled = []  # what the exception handler received
        self.when = {}  # label -> deadline, for the callbacks of timers
        self.handles = []
        self.futures = []
        self._kept = []  # everything made, kept alive until teardown (no mid-run collection)
        self._coroutines = []
        self._executors = []
        self.raw_fds = []  # fds of detached sockets
        self.detached = set()  # indices of the pool sockets detached
        self._threads = []
        self.socks = []
        self.loop = factory()
        self.other = factory()  # another loop of the same kind, for futures of another loop
        self.loop.set_exception_handler(self.on_exception)
        self.start = self.loop.time()
        self.run_id = 0
        a0, a1 = socket.socketpair()
        b0, b1 = socket.socketpair()
        self.socks = [a0, a1, b0, b1, socket.socket(), socket.socket()]
        for sock in self.socks:
            sock.setblocking(False)
        self.socks[LISTENER].bind(("127.0.0.1", 0))
        self.socks[LISTENER].listen(8)
        self.listener_address = self.socks[LISTENER].getsockname()
        self.port = re.compile(rf"\b{self.listener_address[1]}\b")

    def __repr__(self):
        # Callback reprs (in handle reprs and messages) show their arguments: the same on both.
        return "<side>"

    def kept(self, obj):
        self._kept.append(obj)
        return obj

    def coroutine(self, coro):
        self._coroutines.append(coro)
        return coro

    def executor(self):
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._executors.append(executor)
        return executor

    def shut_down_executor(self):
        executor = self.executor()
        executor.shutdown()
        return executor

    def on_exception(self, loop, context):
        if context.get("message") in COLLECTOR_MESSAGES:
            return
        exc = context.get("exception")
        self.handled.append(
            (self.normalise(context.get("message", "")), type_name(exc) if exc else None, sorted(context))
        )

    # -- outcomes --------------------------------------------------------------------------

    def normalise(self, text):
        for pattern, replacement in NORMALISATIONS:
            text = pattern.sub(replacement, text)
        # Each side's listener has its own port (in "Connect call failed (...)" and reprs).
        return self.port.sub("<listener port>", text)

    def summarise(self, value):
        if value is None or isinstance(value, (bool, int, str, bytes)):
            return (type(value).__name__, value)
        if isinstance(value, float):
            return ("float", "nan" if math.isnan(value) else "inf" if math.isinf(value) else "finite")
        if isinstance(value, (list, tuple)):
            return (type(value).__name__, tuple(self.summarise(v) for v in value))
        if type(value).__name__ in ("Handle", "TimerHandle"):
            return (type(value).__name__, self.normalise(repr(value)))
        if isinstance(value, asyncio.Future):
            state = "cancelled" if value.cancelled() else "done" if value.done() else "pending"
            name = self.normalise(value.get_name()) if isinstance(value, asyncio.Task) else None
            return (type(value).__name__, state, name)
        return (type(value).__name__,)

    def outcome(self, op):
        """op(self)'s outcome class, and its value (None when it raised)."""
        try:
            value = self.kept(op(self))
        except (Exception, asyncio.CancelledError, SystemExit) as exc:
            return ("raised", type_name(exc), self.normalise(str(exc))), None
        return ("returned", self.summarise(value)), value

    def records(self):
        return {
            "callbacks": self._ordered_log(),
            "readers and writers that ran": sorted(self.io_fired),
            "exception handler": self.handled,
        }

    def _ordered_log(self):
        # README: "Timers with equal deadlines run in the order they were scheduled (the stock
        # heap leaves ties in no particular order)." Such callbacks run one after another; each
        # run of them is compared sorted.
        log, i = [], 0
        while i < len(self.log):
            when = self.when.get(self.log[i][0])
            j = i + 1
            while when is not None and j < len(self.log) and self.when.get(self.log[j][0]) == when:
                j += 1
            log.extend(sorted(self.log[i:j]))
            i = j
        return log

    # -- running ---------------------------------------------------------------------------

    def guard(self, iterations):
        """Stops the loop after `iterations` iterations of the run about to start, unless the
        run has ended by then."""
        self.run_id += 1
        run_id = self.run_id

        def tick(n):
            if self.run_id != run_id:
                return
            if n == 0:
                self.loop.stop()
            else:
                self.loop.call_soon(tick, n - 1)

        self.loop.call_soon(tick, iterations)

    def run_briefly(self):
        self.guard(RUN_ITERATIONS)
        try:
            return self.loop.run_forever()
        finally:
            self.run_id += 1

    def run_until_complete(self, awaitable):
        if self.loop.is_closed():
            return self.loop.run_until_complete(awaitable)  # refused at once, no guard needed
        self.guard(RUN_ITERATIONS)
        try:
            return self.loop.run_until_complete(awaitable)
        finally:
            self.run_id += 1

    def drive(self, make, wait):
        """The outcome of awaiting make() in a run bounded by `wait`: iterations, or seconds for
        a call that waits for a thread. A call not done by then is cancelled. On a closed loop,
        the run is the side's other loop's: a closed loop cannot run, but what its methods
        return can still be awaited elsewhere."""
        loop = self.other if self.loop.is_closed() else self.loop
        bounded = _waited(loop, make, wait) if isinstance(wait, float) else _spun(loop, make, wait)
        return loop.run_until_complete(self.kept(asyncio.Task(bounded, loop=loop)))

    def in_thread(self, op):
        """op(self)'s outcome class, run in another thread."""
        result = []
        thread = threading.Thread(target=lambda: result.append(self.outcome(op)[0]))
        self._threads.append(thread)
        thread.start()
        thread.join(THREAD_WAIT)
        return result[0] if result else "the thread did not finish"

    # -- teardown --------------------------------------------------------------------------

    def close(self):
        """Closes everything this side made: the loops first, the sockets last."""
        for loop in (self.loop, self.other):
            loop.set_exception_handler(lambda loop, context: None)
            # A task whose run was stopped stays pending. Its coroutine is closed here, in this
            # thread, not by the garbage collector in whatever thread it runs: the stock
            # shutdown_default_executor() joins a thread in a `finally`, which can deadlock there.
            for task in asyncio.all_tasks(loop):
                task.get_coro().close()
            if not loop.is_closed():
                loop.close()
        for thread in self._threads:
            thread.join(THREAD_WAIT)
        for executor in self._executors:
            executor.shutdown(wait=True)
        for obj in self._coroutines + self._kept:
            if asyncio.iscoroutine(obj):
                obj.close()  # no "never awaited" warning later
            elif isinstance(obj, asyncio.Future) and obj.done() and not obj.cancelled():
                obj.exception()  # retrieved: no "exception was never retrieved" later
        for sock in self.socks:
            sock.close()
        for fd in self.raw_fds:
            os.close(fd)


def _task(loop, awaitable):
    # Not loop.create_task: the machine's own waits must not go through a task factory it set.
    if asyncio.iscoroutine(awaitable):
        return asyncio.Task(awaitable, loop=loop)
    return asyncio.ensure_future(awaitable, loop=loop)


async def _spun(loop, make, iterations):
    inner = _task(loop, make())
    for _ in range(iterations):
        if inner.done():
            break
        await asyncio.sleep(0)
    return await _finish(inner)


async def _waited(loop, make, seconds):
    inner = _task(loop, make())
    await asyncio.wait({inner}, timeout=seconds)
    return await _finish(inner)


async def _finish(inner):
    if inner.done():
        return inner.result()
    inner.cancel()
    try:
        await inner
    except asyncio.CancelledError:
        return PENDING
    return inner.result()


def _free_fd():
    """A file descriptor number not in use, high enough that nothing opens it meanwhile."""
    fd = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 4096) - 1
    while fd > 0:
        try:
            os.fstat(fd)
        except OSError:
            return fd
        fd -= 1
    raise RuntimeError("no free fd number")


# -- the machine ------------------------------------------------------------------------------


class MisuseMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        STATS["machines"] += 1
        self.step_no = 0
        self.fds_before = fd_count()
        self.signal_handlers = {sig: signal.getsignal(sig) for sig in HANDLED_SIGNALS}
        self.wakeup_fd = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(self.wakeup_fd)
        self.sides = []
        closed_fd = _free_fd()
        for kind in ("asyncio", "ferroloop"):
            self.sides.append(Side(conftest.LOOP_FACTORIES[kind], closed_fd))

    def teardown(self):
        try:
            for side in self.sides:
                side.close()
        finally:
            for sig, handler in self.signal_handlers.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(self.wakeup_fd)
        fds = fd_count()
        assert fds <= self.fds_before, f"{fds - self.fds_before} fds leaked: {os.listdir('/proc/self/fd')}"

    # -- the comparison --------------------------------------------------------------------

    def check(self, op, fn, **args):
        """Runs fn(side) on the stock side, then on ferroloop's; both must have the same outcome
        class, and then the same records. Returns both values (None where it raised), or None
        for a step skipped as a known bug or a documented difference."""
        for _test, matches in DIFFERENCES:
            if matches(self, op, args):
                STATS["skipped as documented differences"] += 1
                return None
        if self.stale_registration(op, args) == "closed":
            # README, "Where ferroloop differs": "Readers and writers added with a socket object
            # are removed when that socket closes." The stock selector keeps the registration
            # and still finds it by the socket object: adding or removing with it succeeds
            # there, and fails on ferroloop (fileno() is -1).
            STATS["skipped as documented differences"] += 1
            return None
        arm_step_limit()
        STATS["steps"] += 1
        self.step_no += 1
        results = [side.outcome(fn) for side in self.sides]
        (stock, _), (ferro, _) = results
        assert ferro == stock, f"{op}({args}):\n  stock:     {stock!r}\n  ferroloop: {ferro!r}"
        stock_records, ferro_records = (side.records() for side in self.sides)
        for what, stock_record in stock_records.items():
            assert ferro_records[what] == stock_record, (
                f"after {op}({args}), {what}:\n  stock:     {stock_record!r}\n"
                f"  ferroloop: {ferro_records[what]!r}"
            )
        return [value for _, value in results]

    @property
    def label(self):
        return f"s{self.step_no + 1}"

    def stale_registration(self, op, args):
        """When a reader or writer step passes a pool socket that is closed ("closed") or
        detached ("detached") as an object, and the stock selector still holds a registration
        made with that object; else None."""
        if op in READERS_AND_WRITERS and args["fd"].startswith("socket "):
            i = int(args["fd"].removeprefix("socket "))
        elif op == "call" and args["call"] in SIGNATURE_SOCKETS:
            i = SIGNATURE_SOCKETS[args["call"]]
        else:
            return None
        stock = self.sides[0]
        sock, selector = stock.socks[i], stock.loop._selector
        if sock.fileno() >= 0 or selector is None:
            return None
        if not any(key.fileobj is sock for key in selector.get_map().values()):
            return None
        return "detached" if i in stock.detached else "closed"

    @property
    def debug(self):
        return bool(self.sides[0].loop.get_debug())

    def in_timeout_mode(self, sock):
        """Whether SOCKS[sock] is an open socket with a timeout (on the stock side)."""
        obj = SOCKS[sock](self.sides[0])
        return isinstance(obj, socket.socket) and obj.fileno() >= 0 and obj.gettimeout() != 0

    # -- scheduling ------------------------------------------------------------------------

    def _schedule(self, op, callback, kwargs, timing, **args):
        label = self.label

        def schedule(side):
            cb, cb_args = CALLBACKS[callback](side, label)
            call = getattr(side.loop, op)
            handle = call(*timing(side), cb, *cb_args, **SCHEDULE_KWARGS[kwargs](side))
            if op in ("call_later", "call_at"):
                when = side.when[label] = handle.when()
                if when != when:  # NaN
                    _forget_nan_timer(side, handle)
            return handle

        handles = self.check(op, schedule, callback=callback, kwargs=kwargs, **args)
        if handles and None not in handles:
            for side, handle in zip(self.sides, handles):
                side.handles.append(handle)

    @rule(
        op=st.sampled_from(["call_soon", "call_soon_threadsafe"]),
        callback=CALLBACK,
        kwargs=SCHEDULE_KWARG,
    )
    def call_soon(self, op, callback, kwargs):
        self._schedule(op, callback, kwargs, lambda side: ())

    @rule(
        delay=DELAY,
        callback=CALLBACK,
        kwargs=SCHEDULE_KWARG,
    )
    def call_later(self, delay, callback, kwargs):
        self._schedule("call_later", callback, kwargs, lambda side: (DELAYS[delay],), delay=delay)

    @rule(
        when=WHEN,
        callback=CALLBACK,
        kwargs=SCHEDULE_KWARG,
    )
    def call_at(self, when, callback, kwargs):
        self._schedule("call_at", callback, kwargs, lambda side: (WHENS[when](side),), when=when)

    @rule(
        op=st.sampled_from(["call_soon", "call_soon_threadsafe", "call_later"]),
        callback=st.sampled_from(["record", "raise", "int", "coroutine function"]),
    )
    def call_from_a_thread(self, op, callback):
        """The loop is not running: no call is refused for its thread, even in debug mode."""
        label = self.label

        def from_thread(side):
            cb, cb_args = CALLBACKS[callback](side, label)
            timing = (-1,) if op == "call_later" else ()
            return side.in_thread(lambda s: getattr(s.loop, op)(*timing, cb, *cb_args))

        self.check(op + " from a thread", from_thread, callback=callback)

    @precondition(lambda self: self.sides[0].handles)
    @rule(data=st.data(), times=st.integers(1, 2))
    def cancel_handle(self, data, times):
        i = data.draw(st.integers(0, len(self.sides[0].handles) - 1), label="handle")

        def cancel(side):
            handle = side.handles[i]
            return [handle.cancel() for _ in range(times)] + [handle.cancelled(), handle]

        self.check("cancel", cancel, handle=i, times=times)

    @precondition(lambda self: self.sides[0].handles)
    @rule(data=st.data())
    def handle_state(self, data):
        i = data.draw(st.integers(0, len(self.sides[0].handles) - 1), label="handle")

        def state(side):
            handle = side.handles[i]
            when = handle.when() if hasattr(handle, "when") else None
            return (handle.cancelled(), when, handle)

        self.check("handle state", state, handle=i)

    # -- running, stopping, closing ---------------------------------------------------------

    @rule()
    def run_briefly(self):
        self.check("run briefly", Side.run_briefly)

    @rule(awaitable=AWAITABLE)
    def run_until_complete(self, awaitable):
        self.check(
            "run_until_complete",
            lambda side: side.run_until_complete(AWAITABLES[awaitable](side)),
            awaitable=awaitable,
        )

    @precondition(lambda self: self.sides[0].futures)
    @rule(data=st.data())
    def run_until_future_done(self, data):
        i = data.draw(st.integers(0, len(self.sides[0].futures) - 1), label="future")
        self.check(
            "run_until_complete(future)", lambda side: side.run_until_complete(side.futures[i]), future=i
        )

    @rule(call=st.sampled_from(list(SIGNATURES)))
    def call_by_signature(self, call):
        label = self.label

        def by_signature(side):
            method, args, kwargs = SIGNATURES[call](side, label)
            result = getattr(side.loop, method)(*args, **kwargs)
            if asyncio.iscoroutine(result):
                side.coroutine(result)
            return result

        self.check("call", by_signature, call=call)

    @rule(context=HANDLER_CONTEXT)
    def call_exception_handler(self, context):
        self.check(
            "call_exception_handler",
            lambda side: side.loop.call_exception_handler(HANDLER_CONTEXTS[context]()),
            context=context,
        )

    @rule()
    def shutdown_asyncgens(self):
        self.check("shutdown_asyncgens", lambda side: side.drive(side.loop.shutdown_asyncgens, IO_SPINS))

    @rule()
    def stop(self):
        self.check("stop", lambda side: side.loop.stop())

    # Closing ends what most rules can do: not in the first half of a machine's steps.
    @precondition(lambda self: self.step_no >= CLOSING_STEP)
    @rule(times=st.integers(1, 2))
    def close(self, times):
        self.check("close", lambda side: [side.loop.close() for _ in range(times)], times=times)

    @rule()
    def state(self):
        def state(side):
            loop = side.loop
            now = loop.time()
            return (loop.is_running(), loop.is_closed(), loop.get_debug(), now, now >= side.start)

        self.check("state", state)

    @rule(value=DEBUG_VALUE)
    def set_debug(self, value):
        def set_debug(side):
            return (side.loop.set_debug(DEBUG_VALUES[value]), side.loop.get_debug())

        self.check("set_debug", set_debug, value=value)

    # -- futures and tasks -----------------------------------------------------------------

    @rule()
    def create_future(self):
        futures = self.check("create_future", lambda side: side.loop.create_future())
        if futures and None not in futures:
            for side, fut in zip(self.sides, futures):
                side.futures.append(fut)

    @precondition(lambda self: self.sides[0].futures)
    @rule(data=st.data(), how=st.sampled_from(["set_result", "set_exception", "cancel"]))
    def complete_future(self, data, how):
        i = data.draw(st.integers(0, len(self.sides[0].futures) - 1), label="future")
        args = {"set_result": ("result",), "set_exception": (CallbackError("future"),), "cancel": ()}[how]

        def complete(side):
            return getattr(side.futures[i], how)(*args)

        self.check("future " + how, complete, future=i)

    @rule(awaitable=AWAITABLE, name=st.sampled_from(sorted(TASK_NAMES)))
    def create_task(self, awaitable, name):
        def create(side):
            return side.kept(side.loop.create_task(AWAITABLES[awaitable](side), name=TASK_NAMES[name]))

        self.check("create_task", create, awaitable=awaitable, name=name)

    @rule(factory=TASK_FACTORY)
    def set_task_factory(self, factory):
        def set_factory(side):
            return (side.loop.set_task_factory(TASK_FACTORIES[factory](side)), side.loop.get_task_factory())

        self.check("set_task_factory", set_factory, factory=factory)

    @rule(handler=EXCEPTION_HANDLER)
    def set_exception_handler(self, handler):
        def set_handler(side):
            return (
                side.loop.set_exception_handler(EXCEPTION_HANDLERS[handler](side)),
                side.loop.get_exception_handler(),
            )

        self.check("set_exception_handler", set_handler, handler=handler)

    # -- readers and writers ---------------------------------------------------------------

    @rule(
        op=st.sampled_from(["add_reader", "add_writer"]),
        fd=FD,
        callback=IO_CALLBACK,
    )
    def add_reader_or_writer(self, op, fd, callback):
        label = self.label

        def add(side):
            fileobj = FDS[fd](side)
            cb, cb_args = IO_CALLBACKS[callback](side, label)
            added = getattr(side.loop, op)(fileobj, cb, *cb_args)
            if callback == "record":
                return added
            return (added, getattr(side.loop, op.replace("add", "remove"))(fileobj))

        self.check(op, add, fd=fd, callback=callback)

    @rule(op=st.sampled_from(["remove_reader", "remove_writer"]), fd=FD)
    def remove_reader_or_writer(self, op, fd):
        self.check(op, lambda side: getattr(side.loop, op)(FDS[fd](side)), fd=fd)

    # -- sockets ---------------------------------------------------------------------------

    @rule(sock=st.sampled_from(list(ALL_SOCKS)), how=st.sampled_from(["close", "detach"]))
    def close_socket(self, sock, how):
        def close(side):
            if how == "close":
                return side.socks[sock].close()
            fd = side.socks[sock].detach()
            if fd >= 0:
                side.raw_fds.append(fd)
                side.detached.add(sock)
            return fd >= 0

        self.check("socket " + how, close, sock=sock)

    @rule(sock=st.sampled_from(list(ALL_SOCKS)), mode=st.sampled_from(["non-blocking", "timeout"]))
    def set_socket_mode(self, sock, mode):
        timeout = 0.0 if mode == "non-blocking" else SOCK_TIMEOUT
        self.check(
            "socket settimeout", lambda side: side.socks[sock].settimeout(timeout), sock=sock, mode=mode
        )

    def _sock_call(self, op, make, **args):
        self.check(op, lambda side: side.drive(lambda: make(side), IO_SPINS), **args)

    @rule(sock=DATA_SOCK, size=RECV_SIZE)
    def sock_recv(self, sock, size):
        self._sock_call(
            "sock_recv",
            lambda side: side.loop.sock_recv(SOCKS[sock](side), RECV_SIZES[size]),
            sock=sock,
            size=size,
        )

    @rule(sock=DATA_SOCK, buffer=RECV_BUFFER)
    def sock_recv_into(self, sock, buffer):
        def recv_into(side):
            buf = RECV_BUFFERS[buffer]()
            return side.loop.sock_recv_into(SOCKS[sock](side), buf)

        self._sock_call("sock_recv_into", recv_into, sock=sock, buffer=buffer)

    @rule(sock=DATA_SOCK, data=SEND)
    def sock_sendall(self, sock, data):
        self._sock_call(
            "sock_sendall",
            lambda side: side.loop.sock_sendall(SOCKS[sock](side), SEND_DATA[data]()),
            sock=sock,
            data=data,
        )

    @rule(sock=SOCK, address=ADDRESS)
    def sock_connect(self, sock, address):
        self._sock_call(
            "sock_connect",
            lambda side: side.loop.sock_connect(SOCKS[sock](side), ADDRESSES[address](side)),
            sock=sock,
            address=address,
        )

    @rule(sock=SOCK)
    def sock_accept(self, sock):
        async def accept(side):
            conn, address = await side.loop.sock_accept(SOCKS[sock](side))
            # Closed at once: a number the machine registers is never reused (see the docstring).
            with conn:
                return (type(conn).__name__, conn.gettimeout(), type(address).__name__)

        self._sock_call("sock_accept", accept, sock=sock)

    # -- executors and name resolution -----------------------------------------------------

    @rule(executor=EXECUTOR, call=EXECUTOR_CALL)
    def run_in_executor(self, executor, call):
        def run(side):
            func, args = EXECUTOR_CALLS[call](side)
            fut = side.loop.run_in_executor(EXECUTORS[executor](side), func, *args)
            return side.drive(lambda: fut, THREAD_WAIT)

        self.check("run_in_executor", run, executor=executor, call=call)

    @rule(executor=DEFAULT_EXECUTOR)
    def set_default_executor(self, executor):
        self.check(
            "set_default_executor",
            lambda side: side.loop.set_default_executor(DEFAULT_EXECUTORS[executor](side)),
            executor=executor,
        )

    # Ends what every later executor call can do: not in the first half of a machine's steps.
    @precondition(lambda self: self.step_no >= CLOSING_STEP)
    @rule()
    def shutdown_default_executor(self):
        self.check(
            "shutdown_default_executor",
            lambda side: side.drive(side.loop.shutdown_default_executor, THREAD_WAIT),
        )

    @rule(
        host=GAI_HOST,
        port=GAI_PORT,
        kwargs=GAI_KWARG,
    )
    def getaddrinfo(self, host, port, kwargs):
        def resolve(side):
            return side.drive(
                lambda: side.loop.getaddrinfo(GAI_HOSTS[host], GAI_PORTS[port], **GAI_KWARGS[kwargs]),
                THREAD_WAIT,
            )

        self.check("getaddrinfo", resolve, host=host, port=port, kwargs=kwargs)

    @rule(address=NAMEINFO_ADDRESS, flags=NAMEINFO_FLAG)
    def getnameinfo(self, address, flags):
        def resolve(side):
            return side.drive(
                lambda: side.loop.getnameinfo(NAMEINFO_ADDRESSES[address], NAMEINFO_FLAGS[flags]),
                THREAD_WAIT,
            )

        self.check("getnameinfo", resolve, address=address, flags=flags)

    # -- signals ---------------------------------------------------------------------------

    @rule(sig=SIGNAL, callback=SIGNAL_CALLBACK)
    def add_signal_handler(self, sig, callback):
        label = self.label

        def add(side):
            cb, cb_args = SIGNAL_CALLBACKS[callback](side, label)
            return side.loop.add_signal_handler(SIGNALS[sig], cb, *cb_args)

        self.check("add_signal_handler", add, sig=sig, callback=callback)

    @rule(sig=SIGNAL)
    def remove_signal_handler(self, sig):
        self.check(
            "remove_signal_handler", lambda side: side.loop.remove_signal_handler(SIGNALS[sig]), sig=sig
        )


def _forget_nan_timer(side, handle):
    """README: "From 3.14 (and late 3.13 releases) the stock loop fails with ValueError in its
    selector for a timer whose delay is NaN; ferroloop runs it at once": when a NaN timer runs
    is a deliberate difference (and before 3.13 a NaN breaks the stock heap's order for every
    timer). The timer is taken out of the stock heap (which cannot hold it) and cancelled on
    both loops."""
    if isinstance(side.loop, asyncio.BaseEventLoop):
        side.loop._scheduled.remove(handle)
        heapq.heapify(side.loop._scheduled)
        handle._scheduled = False  # out of the heap: not counted among its cancelled timers
    handle.cancel()


TestFuzzMisuse = MisuseMachine.TestCase
TestFuzzMisuse.settings = settings(
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    **PROFILES[PROFILE],
)
