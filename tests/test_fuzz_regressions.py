"""Differences test_fuzz_misuse.py found between ferroloop and the stock loop, each reduced to a
minimal example that asserts the stock loop's behaviour.

Every test runs on both loops (see conftest.py). Where ferroloop answers differently on purpose,
as the README's "Where ferroloop differs from the stock loop" lists, the test asserts the stock
answer on the stock loop and the documented one on ferroloop (`differs`); the fuzzer leaves those
steps out (test_fuzz_misuse.DIFFERENCES).
"""

import asyncio
import errno
import inspect
import socket
import sys
import warnings
from decimal import Decimal
from fractions import Fraction

import pytest
from conftest import args_shown

# Long enough for any call that completes at once; a call that waits for nothing that will come
# fails the test after this many seconds instead of hanging it.
WAIT = 1.0


def record(*args):
    pass


async def coroutine():
    pass


def run(loop, awaitable):
    return loop.run_until_complete(asyncio.wait_for(awaitable, WAIT))


def differs(loop):
    """Whether `loop` is ferroloop, in a test of a documented difference."""
    return not isinstance(loop, asyncio.SelectorEventLoop)


def outcome(call):
    try:
        return ("returned", call())
    except Exception as exc:
        return ("raised", type(exc), str(exc))


# -- scheduling ------------------------------------------------------------------------------


def test_context_that_is_no_context_fails_when_the_callback_runs(loop):
    """call_soon(..., context=1) is accepted; running the callback calls `context.run`, which an
    int lacks: the exception handler gets that AttributeError. (A task made with context=1 fails
    the same way at its first step.)"""
    contexts = []
    loop.set_exception_handler(lambda lp, context: contexts.append(context))
    loop.call_soon(record, context=1)
    loop.call_soon(loop.stop)
    loop.run_forever()
    if differs(loop):  # the Context is entered, not asked for a `run` method
        assert [type(c["exception"]) for c in contexts] == [TypeError]
        return
    assert [type(c["exception"]) for c in contexts] == [AttributeError]
    assert str(contexts[0]["exception"]) == "'int' object has no attribute 'run'"


@pytest.mark.parametrize("when", [1, True, Fraction(1, 3), Decimal(1), -0.0], ids=repr)
def test_call_at_keeps_the_deadline_it_was_given(loop, when):
    """The stock call_at stores `when` as given: when() returns that object (an int, a bool, a
    Fraction, a Decimal, a negative zero), not a float made of it."""
    if differs(loop) and isinstance(when, Decimal):  # no float arithmetic with it: refused
        with pytest.raises(TypeError):
            loop.call_at(when, record)
        return
    handle = loop.call_at(when, record)
    if differs(loop):  # kept as a float
        assert type(handle.when()) is float and handle.when() == float(when)
    else:
        assert type(handle.when()) is type(when)
        assert repr(handle.when()) == repr(when)
    handle.cancel()


@pytest.mark.parametrize("when", [10**400, -(10**400)], ids=["10**400", "-10**400"])
def test_call_at_huge_int_deadline(loop, when):
    """An int deadline beyond a float's range is stored as it is (no OverflowError); one far in
    the past runs at the next iteration."""
    ran = []
    if differs(loop):  # kept as a float, which it does not fit
        with pytest.raises(OverflowError, match="^int too large to convert to float$"):
            loop.call_at(when, ran.append, "ran")
        return
    handle = loop.call_at(when, ran.append, "ran")
    assert handle.when() == when
    if when < 0:
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert ran == ["ran"]
    # A stock loop that computes how long to wait for that timer fails: never run it again.
    loop.close()


@pytest.mark.parametrize("when, name", [("1", "str"), (1j, "complex")])
def test_call_at_deadline_that_is_no_number_fails_comparing_with_other_timers(loop, when, name):
    """With a timer pending, the stock heap compares the new deadline with its: a TypeError
    that names both types."""
    loop.call_later(10, record)
    if differs(loop):  # refused at once, with or without other timers
        with pytest.raises(TypeError):
            loop.call_at(when, record)
        return
    with pytest.raises(TypeError, match=rf"^'<' not supported between instances of '{name}' and 'float'$"):
        loop.call_at(when, record)
    # The stock heap holds that timer all the same, and fails at its next iteration: never run
    # the loop again.
    loop.close()


def test_call_later_complex_delay_fails_comparing_with_other_timers(loop):
    """time() + 1j is a complex deadline, which the stock heap cannot compare with a float."""
    loop.call_later(10, record)
    if differs(loop):  # refused at once (as for call_at)
        with pytest.raises(TypeError, match=r"^must be real number, not complex$"):
            loop.call_later(1j, record)
        return
    with pytest.raises(TypeError, match=r"^'<' not supported between instances of 'complex' and 'float'$"):
        loop.call_later(1j, record)
    loop.close()  # as above


@pytest.mark.parametrize("debug_made, debug_cancelled", [(False, True), (True, False)])
def test_cancelled_handle_repr_keeps_the_callback_when_cancelled_in_debug_mode(
    loop, debug_made, debug_cancelled
):
    """cancel() in debug mode keeps the handle's repr with its callback; outside debug mode it
    drops the callback: what counts is the mode when cancel() is called, not when the handle
    was made."""
    loop.set_debug(debug_made)
    handle = loop.call_later(10, record)
    loop.set_debug(debug_cancelled)
    handle.cancel()
    # ferroloop: the mode the handle was made in
    assert ("record()" in repr(handle)) is (debug_made if differs(loop) else debug_cancelled)


@pytest.mark.parametrize("debug_made, debug_shown", [(False, True), (True, False)])
def test_handle_repr_shows_arguments_by_the_debug_mode_of_the_moment(loop, debug_made, debug_shown):
    """Where a handle's repr shows its callback's arguments only in debug mode (3.13 on), what
    counts is the mode when the repr is made, not when the handle was."""
    loop.set_debug(debug_made)
    handle = loop.call_later(10, record, "argument")
    loop.set_debug(debug_shown)
    if differs(loop):  # the mode the handle was made in, where it matters
        always = "debug" not in inspect.signature(asyncio.format_helpers._format_callback_source).parameters
        assert ("record('argument')" in repr(handle)) is (debug_made or always)
    else:
        assert ("record('argument')" in repr(handle)) is args_shown(loop)
    handle.cancel()


# -- the loop's own state and arguments ------------------------------------------------------


@pytest.mark.parametrize("value", [1, 0, "yes", None], ids=repr)
def test_get_debug_returns_what_set_debug_was_given(loop, value):
    loop.set_debug(value)
    if differs(loop):  # a bool
        assert loop.get_debug() is bool(value)
        return
    assert type(loop.get_debug()) is type(value)
    assert loop.get_debug() == value


NO_ARGUMENTS = ["stop", "time", "is_running", "is_closed", "get_debug", "create_future"]


@pytest.mark.parametrize("method", NO_ARGUMENTS)
def test_methods_without_arguments_refuse_one_as_stock(loop, method):
    """The message of a Python method (the class name before it differs: BaseEventLoop, Loop)."""
    with pytest.raises(TypeError) as raised:
        getattr(loop, method)(1)
    if not differs(loop):  # worded as a C method's on ferroloop
        assert str(raised.value).endswith(f"{method}() takes 1 positional argument but 2 were given")


def test_create_task_with_an_extra_positional_argument(loop):
    coro = coroutine()
    try:
        with pytest.raises(TypeError) as raised:
            loop.create_task(coro, "name")
    finally:
        coro.close()
    if not differs(loop):  # worded as a C method's on ferroloop
        assert str(raised.value).endswith("create_task() takes 2 positional arguments but 3 were given")


def test_create_task_with_an_unknown_keyword(loop):
    """3.13 made create_task pass its keywords on to Task (which names itself); before, its own
    signature refuses them."""
    coro = coroutine()
    try:
        with pytest.raises(TypeError) as raised:
            loop.create_task(coro, bogus=1)
    finally:
        coro.close()
    if differs(loop) and sys.version_info < (3, 13):
        return  # worded as a C method's on ferroloop
    refused_by = "Task()" if sys.version_info >= (3, 13) else "create_task()"
    assert str(raised.value).endswith(f"{refused_by} got an unexpected keyword argument 'bogus'")


@pytest.mark.parametrize(
    "call",
    [
        lambda lp: lp.create_task(coroutine()),
        lambda lp: lp.create_task(coroutine(), name="name"),
        lambda lp: lp.run_until_complete(coroutine()),
    ],
    ids=["create_task", "create_task with a name", "run_until_complete"],
)
def test_task_factory_returning_no_task(loop, call):
    """A task factory that returns None. The stock loop's answer changed between versions (3.11
    warns and returns None for a name it cannot set, 3.13 fails with AttributeError setting a
    name, even None, 3.14 sets none), so the expected one is a stock loop's, here and now."""

    def outcome_on(lp):
        lp.set_task_factory(lambda lp, coro, **kwargs: coro.close())
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return outcome(lambda: call(lp))
        finally:
            lp.set_task_factory(None)

    stock = asyncio.SelectorEventLoop()
    try:
        expected = outcome_on(stock)
    finally:
        stock.close()
    got = outcome_on(loop)
    if differs(loop) and (3, 13) <= sys.version_info < (3, 14) and "set_name" in str(expected[-1]):
        # The stock 3.13 loop calls set_name(None) on a factory's task given no name (so an
        # eager task is named "None"); ferroloop names a task only when given a name, and then
        # goes on with the factory's None as the 3.14 loop does.
        assert got == expected or got == ("returned", None) or got[1] is AttributeError
        return
    assert got == expected


# -- readers and writers ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
@pytest.mark.parametrize("fd", [2**31, 2**63, 2**70], ids=["2**31", "2**63", "2**70"])
def test_add_reader_fd_beyond_c_int(loop, method, fd):
    """The stock selector passes the number to epoll as a C int."""
    with pytest.raises(OverflowError, match=r"^Python int too large to convert to C int$"):
        getattr(loop, method)(fd, record)


@pytest.mark.parametrize("method", ["remove_reader", "remove_writer"])
@pytest.mark.parametrize("fd", [2**31, 2**63, 2**70], ids=["2**31", "2**63", "2**70"])
def test_remove_reader_fd_beyond_c_int(loop, method, fd):
    """No such number is registered: the stock loop answers False without converting it."""
    assert getattr(loop, method)(fd) is False


@pytest.mark.parametrize("kind", ["reader", "writer"])
def test_remove_reader_of_a_detached_socket_finds_its_registration(loop, pair, kind):
    """A socket detached keeps its file open, and the registration made with the socket object
    stays: the stock selector still finds it by that object (fileno() is -1 now)."""
    a, _ = pair
    getattr(loop, f"add_{kind}")(a, record)
    fd = a.detach()
    try:
        if differs(loop):  # the registration went with the socket's fd; -1 is no fd
            with pytest.raises(ValueError, match="^Invalid file descriptor: -1$"):
                getattr(loop, f"remove_{kind}")(a)
        else:
            assert getattr(loop, f"remove_{kind}")(a) is True
    finally:
        socket.close(fd)


@pytest.mark.parametrize("kind", ["reader", "writer"])
def test_add_reader_again_with_a_detached_socket_replaces_its_registration(loop, pair, kind):
    a, b = pair
    ran = []
    getattr(loop, f"add_{kind}")(a, record)
    fd = a.detach()
    try:
        if differs(loop):  # as above
            with pytest.raises(ValueError, match="^Invalid file descriptor: -1$"):
                getattr(loop, f"add_{kind}")(a, ran.append, "ran")
            return
        assert getattr(loop, f"add_{kind}")(a, ran.append, "ran") is None
        b.send(b"x")  # for the reader
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert ran == ["ran"]
        getattr(loop, f"remove_{kind}")(fd)
    finally:
        socket.close(fd)


# -- sockets ---------------------------------------------------------------------------------


def test_sock_recv_of_zero_bytes_returns_at_once(loop, pair):
    a, _ = pair
    assert run(loop, loop.sock_recv(a, 0)) == b""


def test_sock_recv_of_zero_bytes_on_a_closed_socket(loop, pair):
    """socket.recv(0) returns b"" without a system call, so even on a closed socket."""
    a, _ = pair
    a.close()
    assert run(loop, loop.sock_recv(a, 0)) == b""


@pytest.mark.parametrize("size", [2**63, 2**70], ids=["2**63", "2**70"])
def test_sock_recv_size_beyond_ssize_t(loop, pair, size):
    a, _ = pair
    with pytest.raises(OverflowError, match=r"^Python int too large to convert to C ssize_t$"):
        run(loop, loop.sock_recv(a, size))


@pytest.mark.nodebug
@pytest.mark.parametrize("size", ["x", None, 1.5], ids=repr)
def test_sock_recv_checks_the_socket_before_the_size(loop, size):
    with pytest.raises(AttributeError, match=r"^'NoneType' object has no attribute 'recv'$"):
        run(loop, loop.sock_recv(None, size))


@pytest.mark.parametrize("size", ["x", None, 1.5], ids=repr)
def test_sock_recv_in_debug_mode_checks_blocking_before_the_size(loop, pair, size):
    a, _ = pair
    a.settimeout(0.05)
    loop.set_debug(True)
    with pytest.raises(ValueError, match=r"^the socket must be non-blocking$"):
        run(loop, loop.sock_recv(a, size))


@pytest.mark.nodebug
def test_sock_recv_on_a_socket_with_a_timeout_waits_in_the_socket(loop, pair):
    """Outside debug mode a socket with a timeout is not refused: the stock loop's recv waits in
    the socket for that long and fails with the socket's own TimeoutError."""
    a, b = pair
    a.settimeout(0.05)
    if differs(loop):  # waits on the loop, which goes on running, for data that comes later
        loop.call_later(0.2, b.send, b"x")
        assert run(loop, loop.sock_recv(a, 1)) == b"x"
        return
    with pytest.raises(TimeoutError, match=r"^timed out$"):
        run(loop, loop.sock_recv(a, 1))


def test_sock_sendall_of_no_bytes_on_a_closed_socket(loop, pair):
    """sock_sendall(sock, b"") still calls send(), which fails on a closed socket."""
    a, _ = pair
    a.close()
    with pytest.raises(OSError) as raised:
        run(loop, loop.sock_sendall(a, b""))
    assert raised.value.errno == errno.EBADF


def test_sock_sendall_of_no_bytes_to_a_closed_peer(loop, pair):
    a, b = pair
    b.close()
    with pytest.raises(BrokenPipeError):
        run(loop, loop.sock_sendall(a, b""))


@pytest.mark.nodebug
def test_sock_accept_of_an_object_without_fileno(loop):
    """Outside debug mode the stock sock_accept first asks for the fd."""
    with pytest.raises(AttributeError, match=r"^'NoneType' object has no attribute 'fileno'$"):
        run(loop, loop.sock_accept(None))
