"""add_reader / remove_reader / add_writer / remove_writer on socket pairs, on both loops, and
I/O fairness: a loop that always has ready callbacks still polls its fds.

Reference: CPython 3.11 asyncio (selector_events.BaseSelectorEventLoop._add_reader and friends,
selectors._fileobj_to_fd, base_events.BaseEventLoop._run_once)."""

import errno
import os

import pytest

HANG_GUARD = 10.0


def run_once(loop):
    """Runs exactly one iteration of `loop` (stop() called before run_forever)."""
    loop.call_soon(loop.stop)
    loop.run_forever()


def run_with_guard(loop):
    """run_forever, stopped by a failsafe timer if the test's own stop never comes; returns
    whether the failsafe fired."""
    fired = []

    def failsafe():
        fired.append(True)
        loop.stop()

    guard = loop.call_later(HANG_GUARD, failsafe)
    loop.run_forever()
    guard.cancel()
    return bool(fired)


class TestReader:
    def test_add_reader_returns_none(self, loop, pair):
        a, _ = pair
        assert loop.add_reader(a, lambda: None) is None
        assert loop.add_writer(a, lambda: None) is None
        assert loop.remove_reader(a) is True
        assert loop.remove_writer(a) is True

    def test_reader_called_with_args_when_data_arrives(self, loop, pair):
        a, b = pair
        seen = []

        def on_readable(*args):
            seen.append((args, a.recv(100)))
            loop.stop()

        loop.add_reader(a, on_readable, 1, "x")
        loop.call_later(0.05, b.send, b"hello")
        assert not run_with_guard(loop)
        assert seen == [((1, "x"), b"hello")]
        assert loop.remove_reader(a) is True

    def test_reader_not_called_without_data(self, loop, pair):
        a, _ = pair
        calls = []
        loop.add_reader(a, calls.append, "r")
        for _ in range(3):
            run_once(loop)
        assert calls == []
        loop.remove_reader(a)

    def test_level_triggered_called_every_iteration_while_unread(self, loop, pair):
        a, b = pair
        calls = []
        loop.add_reader(a, calls.append, "r")
        b.send(b"data stays unread")
        for _ in range(4):
            run_once(loop)
        assert calls == ["r"] * 4
        # Once drained, the reader is no longer called.
        assert a.recv(100) == b"data stays unread"
        for _ in range(3):
            run_once(loop)
        assert calls == ["r"] * 4
        b.send(b"more")
        run_once(loop)
        assert calls == ["r"] * 5
        loop.remove_reader(a)

    def test_remove_reader_true_then_false(self, loop, pair):
        a, _ = pair
        assert loop.remove_reader(a) is False  # never registered
        loop.add_reader(a, lambda: None)
        assert loop.remove_reader(a) is True
        assert loop.remove_reader(a) is False

    def test_removed_reader_not_called(self, loop, pair):
        a, b = pair
        calls = []
        loop.add_reader(a, calls.append, "r")
        b.send(b"x")
        run_once(loop)
        assert calls == ["r"]
        assert loop.remove_reader(a) is True
        run_once(loop)
        run_once(loop)
        assert calls == ["r"]

    def test_remove_reader_same_iteration_before_it_runs(self, loop, pair):
        """A reader removed by an earlier callback of the iteration in which its fd became
        readable is not called (its handle is cancelled)."""
        a, b = pair
        calls = []
        b.send(b"x")
        loop.add_reader(a, calls.append, "r")
        # The removal is queued before the iteration's I/O callbacks.
        loop.call_soon(loop.remove_reader, a)
        run_once(loop)
        run_once(loop)
        assert calls == []

    def test_add_reader_replaces_previous_callback(self, loop, pair):
        a, b = pair
        calls = []
        loop.add_reader(a, calls.append, "old")
        loop.add_reader(a, calls.append, "new")
        b.send(b"x")
        run_once(loop)
        run_once(loop)
        assert calls == ["new", "new"]
        # One registration: one removal succeeds, the second finds nothing.
        assert loop.remove_reader(a) is True
        assert loop.remove_reader(a) is False

    def test_remove_reader_from_its_own_callback(self, loop, pair):
        a, b = pair
        calls = []
        results = []

        def on_readable():
            calls.append(1)
            results.append(loop.remove_reader(a))

        loop.add_reader(a, on_readable)
        b.send(b"never read")
        for _ in range(4):
            run_once(loop)
        assert calls == [1]
        assert results == [True]
        assert loop.remove_reader(a) is False

    def test_readd_reader_from_its_own_callback(self, loop, pair):
        a, b = pair
        calls = []

        def first():
            calls.append("first")
            loop.add_reader(a, second)

        def second():
            calls.append("second")

        loop.add_reader(a, first)
        b.send(b"x")
        for _ in range(3):
            run_once(loop)
        assert calls == ["first", "second", "second"]
        loop.remove_reader(a)

    def test_socket_object_and_int_fd_are_the_same_registration(self, loop, pair):
        a, b = pair
        calls = []
        loop.add_reader(a, calls.append, "by object")
        assert loop.remove_reader(a.fileno()) is True
        assert loop.remove_reader(a) is False
        loop.add_reader(a.fileno(), calls.append, "by fd")
        loop.add_reader(a, calls.append, "replaced by object")
        b.send(b"x")
        run_once(loop)
        assert calls == ["replaced by object"]
        assert loop.remove_reader(a) is True
        assert loop.remove_reader(a.fileno()) is False

    def test_reader_on_object_with_fileno(self, loop, pair):
        a, b = pair

        class HasFileno:
            def fileno(self):
                return a.fileno()

        calls = []
        loop.add_reader(HasFileno(), calls.append, "r")
        b.send(b"x")
        run_once(loop)
        assert calls == ["r"]
        assert loop.remove_reader(a.fileno()) is True

    def test_reader_exception_goes_to_exception_handler(self, loop, pair):
        a, b = pair
        contexts = []
        after = []
        loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

        def bad():
            a.recv(100)
            raise ZeroDivisionError("reader failed")

        loop.add_reader(a, bad)
        b.send(b"x")
        loop.call_later(0.05, after.append, "loop kept running")
        loop.call_later(0.1, loop.stop)
        assert not run_with_guard(loop)
        assert after == ["loop kept running"]
        assert len(contexts) == 1
        assert isinstance(contexts[0]["exception"], ZeroDivisionError)
        assert "handle" in contexts[0]
        loop.remove_reader(a)

    def test_reader_fd_closed_while_registered(self, loop, pair):
        a, b = pair
        dup = os.dup(a.fileno())
        calls = []
        loop.add_reader(dup, calls.append, "r")
        run_once(loop)
        os.close(dup)
        run_once(loop)  # the poller must cope with a registered fd that was closed
        assert loop.remove_reader(dup) is True
        assert loop.remove_reader(dup) is False
        assert calls == []


class TestWriter:
    def test_writer_called_with_args_when_writable(self, loop, pair):
        a, _ = pair
        calls = []
        loop.add_writer(a, calls.append, "w")
        run_once(loop)
        run_once(loop)
        assert calls == ["w", "w"]  # level-triggered: a socket with room stays writable
        assert loop.remove_writer(a) is True
        assert loop.remove_writer(a) is False
        run_once(loop)
        assert calls == ["w", "w"]

    def test_writer_not_called_while_buffer_full(self, loop, pair):
        a, b = pair
        try:
            while True:
                a.send(b"\0" * 65536)
        except BlockingIOError:
            pass
        calls = []
        loop.add_writer(a, calls.append, "w")
        run_once(loop)
        run_once(loop)
        assert calls == []

        def drain():
            try:
                while b.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass

        loop.call_later(0.05, drain)

        def on_writable():
            calls.append("w")
            loop.stop()

        loop.add_writer(a, on_writable)
        assert not run_with_guard(loop)
        assert calls == ["w"]
        loop.remove_writer(a)

    def test_add_writer_replaces_previous_callback(self, loop, pair):
        a, _ = pair
        calls = []
        loop.add_writer(a, calls.append, "old")
        loop.add_writer(a.fileno(), calls.append, "new")
        run_once(loop)
        assert calls == ["new"]
        assert loop.remove_writer(a) is True
        assert loop.remove_writer(a) is False

    def test_remove_writer_from_its_own_callback(self, loop, pair):
        a, _ = pair
        calls = []

        def on_writable():
            calls.append(loop.remove_writer(a))

        loop.add_writer(a, on_writable)
        for _ in range(3):
            run_once(loop)
        assert calls == [True]


class TestReaderAndWriterOnSameFd:
    def test_both_called(self, loop, pair):
        a, b = pair
        calls = []
        loop.add_reader(a, calls.append, "r")
        loop.add_writer(a, calls.append, "w")
        run_once(loop)
        assert calls == ["w"]  # writable, nothing to read yet
        b.send(b"x")
        calls.clear()
        run_once(loop)
        assert calls == ["r", "w"]  # the reader of an fd is queued before its writer
        assert loop.remove_reader(a) is True
        assert loop.remove_writer(a) is True

    def test_removing_one_keeps_the_other(self, loop, pair):
        a, b = pair
        calls = []
        loop.add_reader(a, calls.append, "r")
        loop.add_writer(a, calls.append, "w")
        b.send(b"x")
        assert loop.remove_writer(a) is True
        run_once(loop)
        assert calls == ["r"]
        loop.add_writer(a, calls.append, "w")
        assert loop.remove_reader(a) is True
        calls.clear()
        run_once(loop)
        assert calls == ["w"]
        assert loop.remove_reader(a) is False
        assert loop.remove_writer(a) is True
        calls.clear()
        run_once(loop)
        assert calls == []

    def test_reader_removes_writer_and_writer_removes_reader(self, loop, pair):
        """The reader of an fd is queued before its writer (as the stock loop does); it removes
        the writer, whose already-queued handle is cancelled, so the writer never runs."""
        a, b = pair
        calls = []

        def on_read():
            calls.append("r")
            loop.remove_writer(a)

        def on_write():
            calls.append("w")
            loop.remove_reader(a)

        loop.add_reader(a, on_read)
        loop.add_writer(a, on_write)
        b.send(b"x")
        run_once(loop)
        run_once(loop)
        assert calls == ["r", "r"]
        loop.remove_reader(a)
        loop.remove_writer(a)


class TestBadInput:
    @pytest.mark.parametrize("method", ["add_reader", "add_writer"])
    @pytest.mark.parametrize("bad", ["abc", 1.5, None, object()], ids=["str", "float", "None", "object"])
    def test_invalid_file_object(self, loop, method, bad):
        with pytest.raises(ValueError) as info:
            getattr(loop, method)(bad, lambda: None)
        assert str(info.value) == f"Invalid file object: {bad!r}"

    @pytest.mark.parametrize("method", ["remove_reader", "remove_writer"])
    def test_remove_invalid_file_object(self, loop, method):
        with pytest.raises(ValueError, match=r"^Invalid file object: 'abc'$"):
            getattr(loop, method)("abc")

    @pytest.mark.parametrize("method", ["add_reader", "add_writer"])
    def test_negative_fd(self, loop, method):
        with pytest.raises(ValueError) as info:
            getattr(loop, method)(-1, lambda: None)
        assert str(info.value) == "Invalid file descriptor: -1"

    def test_negative_fd_from_fileno(self, loop):
        class Bad:
            def fileno(self):
                return -5

        with pytest.raises(ValueError) as info:
            loop.add_reader(Bad(), lambda: None)
        assert str(info.value) == "Invalid file descriptor: -5"

    @pytest.mark.parametrize("method", ["remove_reader", "remove_writer"])
    def test_remove_negative_fd(self, loop, method):
        with pytest.raises(ValueError, match=r"^Invalid file descriptor: -1$"):
            getattr(loop, method)(-1)

    def test_fileno_raising_is_invalid_file_object(self, loop):
        class Closed:
            def fileno(self):
                raise ValueError("I/O operation on closed file")

            def __repr__(self):
                return "<Closed>"

        with pytest.raises(ValueError, match=r"^Invalid file object: <Closed>$"):
            loop.add_reader(Closed(), lambda: None)

    def test_unopened_fd_raises_ebadf_and_registers_nothing(self, loop):
        fd = 65000
        with pytest.raises(OSError) as info:
            loop.add_reader(fd, lambda: None)
        assert info.value.errno == errno.EBADF
        assert loop.remove_reader(fd) is False
        assert loop.remove_writer(fd) is False

    def test_unopened_fd_error_message_matches_stock(self, loop):
        with pytest.raises(OSError) as info:
            loop.add_reader(65000, lambda: None)
        assert str(info.value) == f"[Errno {errno.EBADF}] {os.strerror(errno.EBADF)}"


class TestClosedLoop:
    def test_remove_on_closed_loop_returns_false(self, loop, pair):
        a, _ = pair
        loop.add_reader(a, lambda: None)
        loop.add_writer(a, lambda: None)
        loop.close()
        assert loop.remove_reader(a) is False
        assert loop.remove_writer(a) is False
        assert loop.remove_reader(a.fileno()) is False

    @pytest.mark.parametrize("method", ["add_reader", "add_writer"])
    def test_add_on_closed_loop_raises(self, loop, pair, method):
        a, _ = pair
        loop.close()
        with pytest.raises(RuntimeError) as info:
            getattr(loop, method)(a, lambda: None)
        assert str(info.value) == "Event loop is closed"


class TestStarvation:
    """A callback that always re-schedules itself keeps the ready queue non-empty forever; the
    loop must still poll (with a zero time-out) on every iteration and run I/O callbacks."""

    def test_pending_data_reader_not_starved(self, loop, pair):
        a, b = pair
        busy_runs = []
        reader_saw = []

        def busy():
            busy_runs.append(1)
            if len(busy_runs) > 100_000:  # hang guard
                loop.stop()
                return
            loop.call_soon(busy)

        def on_readable():
            reader_saw.append(len(busy_runs))
            a.recv(100)
            loop.stop()

        b.send(b"x")
        loop.call_soon(busy)
        loop.add_reader(a, on_readable)
        loop.run_forever()
        loop.remove_reader(a)
        assert reader_saw, f"reader never called; busy callback ran {len(busy_runs)} times"
        assert reader_saw[0] <= 5, f"busy callback ran {reader_saw[0]} times before the reader"

    def test_data_arriving_later_not_starved(self, loop, pair):
        a, b = pair
        busy_runs = []
        sent_at = []
        reader_saw = []

        def busy():
            busy_runs.append(1)
            if len(busy_runs) == 20:
                b.send(b"x")
                sent_at.append(len(busy_runs))
            if len(busy_runs) > 100_000:  # hang guard
                loop.stop()
                return
            loop.call_soon(busy)

        def on_readable():
            reader_saw.append(len(busy_runs))
            a.recv(100)
            loop.stop()

        loop.add_reader(a, on_readable)
        loop.call_soon(busy)
        loop.run_forever()
        loop.remove_reader(a)
        assert sent_at == [20]
        assert reader_saw, f"reader never called; busy callback ran {len(busy_runs)} times"
        assert reader_saw[0] - sent_at[0] <= 5, (
            f"busy callback ran {reader_saw[0] - sent_at[0]} times between the send and the reader"
        )

    def test_writer_not_starved(self, loop, pair):
        a, _ = pair
        busy_runs = []
        writer_saw = []

        def busy():
            busy_runs.append(1)
            if len(busy_runs) > 100_000:
                loop.stop()
                return
            loop.call_soon(busy)

        def on_writable():
            writer_saw.append(len(busy_runs))
            loop.stop()

        loop.call_soon(busy)
        loop.add_writer(a, on_writable)
        loop.run_forever()
        loop.remove_writer(a)
        assert writer_saw and writer_saw[0] <= 5, (writer_saw, len(busy_runs))

    def test_busy_loop_and_reader_interleave(self, loop, pair):
        """With data always pending, the busy callback and the reader alternate, one run each
        per iteration."""
        a, b = pair
        order = []

        def busy():
            order.append("busy")
            if len(order) < 40:
                loop.call_soon(busy)
            else:
                loop.stop()

        loop.add_reader(a, order.append, "reader")
        b.send(b"never read")
        loop.call_soon(busy)
        loop.run_forever()
        loop.remove_reader(a)
        assert order.count("reader") >= 15, order
        # No two busy runs without a reader run in between (after the first iteration).
        first = order.index("reader")
        assert first <= 2, order
        tail = "".join("b" if x == "busy" else "r" for x in order[first:])
        assert "bb" not in tail, order
