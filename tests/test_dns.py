"""loop.getaddrinfo / loop.getnameinfo on both loops: the results of the `socket` functions, run
off the loop's thread (the loop keeps running while they block), errors passed through,
debug-mode logging, and sock_connect resolving host names through loop.getaddrinfo.

No test needs a network: only "localhost" and numeric addresses are resolved for real.

Reference: CPython 3.11 asyncio (base_events.BaseEventLoop.getaddrinfo, _getaddrinfo_debug,
getnameinfo, _ensure_resolved; selector_events.BaseSelectorEventLoop.sock_connect).
"""

import asyncio
import logging
import socket
import threading

import pytest
from util import run

GUARD = 30.0


class TestGetaddrinfo:
    def test_same_result_as_socket_module(self, loop):
        expected = socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
        assert run(loop, loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)) == expected

    def test_all_arguments_passed_on(self, loop, monkeypatch):
        calls = []

        def fake(*args):
            calls.append(args)
            return []

        monkeypatch.setattr(socket, "getaddrinfo", fake)
        run(loop, loop.getaddrinfo("host", "http", family=2, type=1, proto=6, flags=4))
        assert calls == [("host", "http", 2, 1, 6, 4)]

    def test_options_are_keyword_only(self, loop):
        with pytest.raises(TypeError):
            run(loop, loop.getaddrinfo("localhost", 80, socket.AF_INET))

    def test_runs_off_the_loop_thread_while_the_loop_runs(self, loop, monkeypatch):
        # The fake resolver blocks until a loop callback releases it: if it ran on the loop's
        # thread, the callback could never run.
        released = threading.Event()
        threads = []

        def blocking(*args):
            threads.append(threading.current_thread())
            assert released.wait(GUARD)
            return [("resolved",)]

        monkeypatch.setattr(socket, "getaddrinfo", blocking)

        async def main():
            resolving = asyncio.ensure_future(loop.getaddrinfo("host", 80))
            while not threads:
                await asyncio.sleep(0.01)
            loop.call_soon(released.set)
            return await resolving

        assert run(loop, main()) == [("resolved",)]
        assert threads[0] is not threading.current_thread()

    def test_error_reaches_the_caller(self, loop):
        with pytest.raises(socket.gaierror):
            run(loop, loop.getaddrinfo("::1", 80, family=socket.AF_INET))

    def test_closed_loop(self, loop_factory):
        lp = loop_factory()
        lp.close()
        coro = lp.getaddrinfo("localhost", 80)
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            coro.send(None)


class TestGetaddrinfoDebugLogging:
    def test_call_and_duration_logged_at_debug_level(self, loop, caplog):
        loop.set_debug(True)
        loop.slow_callback_duration = 1e9
        with caplog.at_level(logging.DEBUG, logger="asyncio"):
            infos = run(loop, loop.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM, flags=socket.AI_CANONNAME))
        messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "asyncio"]
        call = f"localhost:80, type={socket.SOCK_STREAM!r}, flags={socket.AI_CANONNAME!r}"
        assert (logging.DEBUG, f"Get address info {call}") in messages
        timed = [m for m in messages if m[1].startswith(f"Getting address info {call} took ")]
        assert len(timed) == 1
        assert timed[0][0] == logging.DEBUG
        assert timed[0][1].endswith(f"ms: {infos!r}")

    def test_zero_arguments_left_out(self, loop, caplog):
        loop.set_debug(True)
        with caplog.at_level(logging.DEBUG, logger="asyncio"):
            run(loop, loop.getaddrinfo("localhost", None))
        assert "Get address info localhost:None" in [r.getMessage() for r in caplog.records]

    def test_slow_call_logged_at_info_level(self, loop, caplog):
        loop.set_debug(True)
        loop.slow_callback_duration = 0.0
        with caplog.at_level(logging.DEBUG, logger="asyncio"):
            run(loop, loop.getaddrinfo("127.0.0.1", 80, family=socket.AF_INET))
        timed = [r for r in caplog.records if r.getMessage().startswith("Getting address info 127.0.0.1:80")]
        assert len(timed) == 1
        assert timed[0].levelno == logging.INFO
        assert f"family={socket.AF_INET!r}" in timed[0].getMessage()

    @pytest.mark.nodebug
    def test_nothing_logged_outside_debug_mode(self, loop, caplog):
        with caplog.at_level(logging.DEBUG, logger="asyncio"):
            run(loop, loop.getaddrinfo("localhost", 80))
        assert not [r for r in caplog.records if "address info" in r.getMessage()]

    def test_error_logged_call_then_raised(self, loop, caplog):
        loop.set_debug(True)
        with caplog.at_level(logging.DEBUG, logger="asyncio"):
            with pytest.raises(socket.gaierror):
                run(loop, loop.getaddrinfo("::1", 80, family=socket.AF_INET))
        messages = [r.getMessage() for r in caplog.records]
        assert f"Get address info ::1:80, family={socket.AF_INET!r}" in messages
        assert not [m for m in messages if m.startswith("Getting address info")]


class TestGetnameinfo:
    def test_numeric(self, loop):
        flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
        assert run(loop, loop.getnameinfo(("127.0.0.1", 8080), flags)) == ("127.0.0.1", "8080")

    def test_same_result_as_socket_module(self, loop):
        expected = socket.getnameinfo(("127.0.0.1", 80), 0)
        assert run(loop, loop.getnameinfo(("127.0.0.1", 80))) == expected

    def test_runs_off_the_loop_thread(self, loop, monkeypatch):
        threads = []

        def fake(sockaddr, flags):
            threads.append(threading.current_thread())
            return ("name", "service")

        monkeypatch.setattr(socket, "getnameinfo", fake)
        assert run(loop, loop.getnameinfo(("10.0.0.1", 1))) == ("name", "service")
        assert threads[0] is not threading.current_thread()

    def test_bad_sockaddr(self, loop):
        with pytest.raises(TypeError):
            run(loop, loop.getnameinfo("127.0.0.1"))


class TestConnectResolution:
    @pytest.fixture
    def listener(self):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock
        sock.close()

    @pytest.fixture
    def resolutions(self, loop, monkeypatch):
        """The hosts loop.getaddrinfo was asked for (the real one answers)."""
        asked = []
        real = loop.getaddrinfo

        async def recording(host, port, **kwargs):
            asked.append((host, port, kwargs))
            return await real(host, port, **kwargs)

        monkeypatch.setattr(loop, "getaddrinfo", recording)
        return asked

    def test_host_name_resolved_through_loop(self, loop, listener, resolutions):
        port = listener.getsockname()[1]
        sock = socket.socket()
        try:
            sock.setblocking(False)
            run(loop, loop.sock_connect(sock, ("localhost", port)))
            assert sock.getpeername() == ("127.0.0.1", port)
        finally:
            sock.close()
        assert resolutions == [
            ("localhost", port, {"family": socket.AF_INET, "type": socket.SOCK_STREAM, "proto": 0, "flags": 0})
        ]

    def test_numeric_address_not_resolved(self, loop, listener, resolutions):
        sock = socket.socket()
        try:
            sock.setblocking(False)
            run(loop, loop.sock_connect(sock, listener.getsockname()))
        finally:
            sock.close()
        assert resolutions == []

    def test_service_name_port_resolved(self, loop, resolutions, monkeypatch):
        # "http" is not numeric: the address goes to getaddrinfo, whose answer is used.
        target = socket.socket()
        target.bind(("127.0.0.1", 0))
        target.listen(1)
        port = target.getsockname()[1]

        async def answer(host, port_, **kwargs):
            resolutions.append((host, port_))
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

        monkeypatch.setattr(loop, "getaddrinfo", answer)
        sock = socket.socket()
        try:
            sock.setblocking(False)
            run(loop, loop.sock_connect(sock, ("127.0.0.1", "http")))
            assert sock.getpeername() == ("127.0.0.1", port)
        finally:
            sock.close()
            target.close()
        assert resolutions == [("127.0.0.1", "http")]

    def test_unix_address_not_resolved(self, loop, tmp_path, resolutions):
        path = str(tmp_path / "s")
        server = socket.socket(socket.AF_UNIX)
        client = socket.socket(socket.AF_UNIX)
        try:
            server.bind(path)
            server.listen(1)
            client.setblocking(False)
            run(loop, loop.sock_connect(client, path))
        finally:
            client.close()
            server.close()
        assert resolutions == []
