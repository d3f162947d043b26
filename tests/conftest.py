"""Shared fixtures: most tests run twice, once on the stock loop and once on ferroloop, so the two
cannot drift apart. A test that only makes sense on ferroloop uses `ferro_loop`."""

import asyncio
import faulthandler
import gc
import os
import socket
import sys

import pytest

# A test that hangs (a loop that never stops) must fail the run, not stall CI: past this many
# seconds, every thread's traceback is printed and the process exits.
TEST_TIME_LIMIT = 120

# Where those tracebacks go: the terminal's stderr, duplicated in pytest_configure, when pytest's
# capture is suspended (it resumes only around each test). Not fd 2 as it is during a test, which
# pytest points at its capture file; the guard exits the process before pytest would show that
# file, so a hang would end the run with no word of where it hung.
_hang_report = None


def pytest_configure(config):
    global _hang_report, _live_failures
    config.addinivalue_line(
        "markers",
        "nodebug: asserts what a loop does outside asyncio's debug mode; under `python -X dev`, "
        "which turns debug mode on, the loops such a test makes start with it off",
    )
    if config.getoption("--live-failures"):
        _live_failures = config.pluginmanager
    _hang_report = os.fdopen(os.dup(2), "w")


def pytest_addoption(parser):
    parser.addoption(
        "--live-failures",
        action="store_true",
        help="print each failure's traceback when it happens, not only in the summary at the end",
    )


def pytest_runtest_logreport(report):
    """With --live-failures (scripts/test), a failure shows at once: a run of several minutes
    that fails early says so early, and a later hang (the guard exits without a summary) does
    not take the failures before it with it."""
    terminal = _live_failures and _live_failures.getplugin("terminalreporter")
    if report.failed and terminal:
        terminal.write_line("")
        terminal.write_sep("_", f"FAILED {report.nodeid} ({report.when})", red=True)
        terminal.write_line(report.longreprtext)


_live_failures = None


def pytest_unconfigure(config):
    faulthandler.cancel_dump_traceback_later()
    if _hang_report is not None:
        _hang_report.close()


@pytest.fixture(autouse=True)
def _hang_guard():
    faulthandler.dump_traceback_later(TEST_TIME_LIMIT, exit=True, file=_hang_report)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(autouse=True)
def _debug_mode_off_for_nodebug_tests(request, monkeypatch):
    """Under `-X dev` (scripts/test's memory-check run), a test marked `nodebug` gets loops
    with debug mode off, as both loops read it from `asyncio.coroutines._is_debug_mode()`."""
    if sys.flags.dev_mode and request.node.get_closest_marker("nodebug"):
        monkeypatch.setattr(asyncio.coroutines, "_is_debug_mode", lambda: False)


def _stock_loop():
    # The default policy's loop on Unix, without its policy API (deprecated from 3.14 on).
    return asyncio.SelectorEventLoop()


def _ferro_loop():
    import ferroloop

    return ferroloop.new_event_loop()


LOOP_FACTORIES = {"asyncio": _stock_loop, "ferroloop": _ferro_loop}


@pytest.fixture(params=sorted(LOOP_FACTORIES))
def loop_factory(request):
    """A callable returning a new, not-yet-current loop of the kind named by the test id."""
    return LOOP_FACTORIES[request.param]


@pytest.fixture
def loop(loop_factory):
    """A fresh loop, set as the current loop for the test, closed afterwards."""
    lp = loop_factory()
    asyncio.set_event_loop(lp)
    yield lp
    asyncio.set_event_loop(None)
    if not lp.is_closed():
        if not lp.is_running():
            lp.run_until_complete(lp.shutdown_default_executor())
        lp.close()
    gc.collect()


@pytest.fixture
def ferro_loop():
    lp = _ferro_loop()
    yield lp
    if not lp.is_closed():
        lp.close()


@pytest.fixture
def pair():
    """A connected pair of non-blocking Unix stream sockets, closed after the test (a module may
    define its own `pair`)."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def _ipv6_loopback():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def args_shown(loop):
    """Whether the running Python's asyncio shows a callback's arguments in handle reprs and
    "Exception in callback" messages: always before 3.14 (and early 3.12/3.13 releases), in
    debug mode only after, as they may hold secrets."""
    import inspect

    takes_debug = "debug" in inspect.signature(asyncio.format_helpers._format_callback_source).parameters
    return loop.get_debug() or not takes_debug


# For tests that need an IPv6 loopback address: `from conftest import requires_ipv6`.
requires_ipv6 = pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
