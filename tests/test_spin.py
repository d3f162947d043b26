"""Polling before a wait blocks (`src/core/poller/spin.rs`): the `FERROLOOP_SPIN_US` setting,
and the loop's behaviour while its spin window is open (the same as the stock loop's: only
timing may change, never order, time-outs or wake-ups).

ferroloop only: the stock loop has no such setting."""

import asyncio
import os
import signal
import socket
import threading
import time
import warnings

import pytest

import ferroloop


def open_fds():
    return len(os.listdir("/proc/self/fd"))


class TestSetting:
    def test_default_is_fifty_microseconds(self, monkeypatch):
        monkeypatch.delenv("FERROLOOP_SPIN_US", raising=False)
        loop = ferroloop.new_event_loop()
        try:
            assert loop._spin_limit() == 50
        finally:
            loop.close()

    @pytest.mark.parametrize("value, micros", [("0", 0), ("200", 200), (" 7 ", 7), ("", 50)])
    def test_environment_sets_the_limit(self, monkeypatch, value, micros):
        monkeypatch.setenv("FERROLOOP_SPIN_US", value)
        loop = ferroloop.new_event_loop()
        try:
            assert loop._spin_limit() == micros
        finally:
            loop.close()

    @pytest.mark.parametrize("value", ["x", "-1", "1.5", "1000001"])
    def test_bad_value_is_a_clear_error_without_leaks(self, monkeypatch, value):
        monkeypatch.setenv("FERROLOOP_SPIN_US", value)
        before = open_fds()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ValueError, match="FERROLOOP_SPIN_US must be a whole number") as raised:
                ferroloop.new_event_loop()
            # The traceback in `raised` still holds the half-made loop: its fds must be closed.
            assert open_fds() == before
            del raised

    def test_limit_beyond_one_second_is_refused(self, ferro_loop):
        with pytest.raises(ValueError, match="from 0 to 1000000 microseconds, not 1000001"):
            ferro_loop._set_spin_limit(1_000_001)
        assert ferro_loop._spin_limit() == 50

    def test_set_and_read_back(self, ferro_loop):
        ferro_loop._set_spin_limit(0)
        assert ferro_loop._spin_limit() == 0
        ferro_loop._set_spin_limit(120)
        assert ferro_loop._spin_limit() == 120

    def test_closed_loop_refuses(self):
        loop = ferroloop.new_event_loop()
        loop.close()
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            loop._spin_limit()
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            loop._set_spin_limit(10)


def ping_pong(loop, rounds):
    """A thread answers each byte the loop sends over a socket pair at once: every wait of the
    loop is short and ended by an event, which opens the spin window."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)

    def echo():
        with theirs:
            while data := theirs.recv(1):
                theirs.sendall(data)

    thread = threading.Thread(target=echo)
    thread.start()

    async def main():
        for i in range(rounds):
            await loop.sock_sendall(ours, b"x")
            assert await loop.sock_recv(ours, 1) == b"x"

    try:
        loop.run_until_complete(main())
    finally:
        ours.close()
        thread.join()


class TestWhileSpinning:
    """Each test opens the window with a large limit, so that waits really spin."""

    @pytest.fixture
    def spinning(self, ferro_loop):
        ferro_loop._set_spin_limit(20_000)
        assert ferro_loop._spin_window() == 0
        ping_pong(ferro_loop, 200)
        assert ferro_loop._spin_window() > 0
        return ferro_loop

    def test_a_time_out_closes_the_window(self, spinning):
        spinning.run_until_complete(asyncio.sleep(0.01))
        assert spinning._spin_window() == 0

    def test_timers_are_never_early_and_keep_their_order(self, spinning):
        loop = spinning
        fired = []
        start = loop.time()
        for delay in (0.03, 0.001, 0.01, 0.0):
            loop.call_later(delay, lambda d=delay: fired.append((d, loop.time() - start)))
        loop.call_later(0.05, loop.stop)
        loop.run_forever()
        assert [d for d, _ in fired] == [0.0, 0.001, 0.01, 0.03]
        for delay, at in fired:
            assert at >= delay

    def test_sleep_longer_than_the_window_is_not_early(self, spinning):
        loop = spinning
        start = loop.time()
        loop.run_until_complete(asyncio.sleep(0.05))
        assert loop.time() - start >= 0.05

    def test_another_thread_wakes_it(self, spinning):
        loop = spinning
        fut = loop.create_future()
        threading.Timer(0.05, loop.call_soon_threadsafe, args=(fut.set_result, "woken")).start()
        start = time.monotonic()
        assert loop.run_until_complete(asyncio.wait_for(fut, 30)) == "woken"
        assert time.monotonic() - start < 10

    def test_io_order_is_the_stock_order(self, spinning):
        loop = spinning
        a, b = socket.socketpair()
        order = []
        try:
            loop.add_reader(a, lambda: (order.append("reader"), a.recv(1), loop.remove_reader(a)))
            b.send(b"x")
            loop.call_soon(order.append, "first")
            loop.call_soon(lambda: loop.call_soon(order.append, "next iteration"))
            loop.call_later(0.05, loop.stop)
            loop.run_forever()
        finally:
            a.close()
            b.close()
        assert order == ["first", "reader", "next iteration"]

    def test_ping_pong_without_spinning_too(self, ferro_loop):
        ferro_loop._set_spin_limit(0)
        ping_pong(ferro_loop, 200)
        assert ferro_loop._spin_limit() == 0


def test_a_spinning_wait_lets_other_threads_run(ferro_loop):
    """The spin releases the GIL, as a blocking wait does. The thread answering the loop needs
    the GIL to answer: were it held while the loop polls, each answer would come only once the
    window ran out, a wait that would then double the window: about a minute for 500 rounds
    (2.3 s for every 18), against a fraction of a second."""
    ferro_loop._set_spin_limit(1_000_000)
    start = time.monotonic()
    ping_pong(ferro_loop, 500)
    assert time.monotonic() - start < 20
    assert ferro_loop._spin_window() > 0


def test_a_signal_during_the_spin_is_handled_before_the_loop_sleeps(ferro_loop):
    """A program that gave `signal.set_wakeup_fd` an fd of its own: a signal that arrives while
    the loop polls before sleeping writes there, not to the loop's socket, and interrupts no
    blocking call. Its Python handler must still run before the loop goes to sleep, as it does
    when the signal interrupts a blocking wait; it used to wait for the loop's next event.

    A thread sends bytes 50 ms apart, which opens the window past 50 ms (each wait an event
    ends doubles it), then signals the main thread 10 ms after the last byte, while it polls."""
    loop = ferro_loop
    loop._set_spin_limit(1_000_000)
    theirs_r, theirs_w = socket.socketpair()
    ours, peer = socket.socketpair()
    for s in (theirs_w, ours):
        s.setblocking(False)
    handled, sent = [], []
    main_thread = threading.main_thread().ident

    def feed():
        for _ in range(20):
            time.sleep(0.05)
            peer.send(b"x")
        time.sleep(0.01)
        sent.append(time.monotonic())
        signal.pthread_kill(main_thread, signal.SIGUSR1)

    thread = threading.Thread(target=feed)

    async def main():
        signal.set_wakeup_fd(theirs_w.fileno(), warn_on_full_buffer=False)
        thread.start()
        for _ in range(20):
            assert await loop.sock_recv(ours, 1) == b"x"
        window = loop._spin_window()
        # Nothing else happens before this sleep ends: the old code ran the handler only then.
        await asyncio.sleep(3)
        return window

    old_handler = signal.signal(signal.SIGUSR1, lambda *_: handled.append(time.monotonic()))
    try:
        window = loop.run_until_complete(main())
    finally:
        thread.join()
        signal.signal(signal.SIGUSR1, old_handler)
        for s in (theirs_r, theirs_w, ours, peer):
            s.close()
    assert window > 50_000
    assert len(handled) == 1
    assert handled[0] - sent[0] < 1.5
