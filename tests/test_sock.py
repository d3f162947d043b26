"""loop.sock_recv / sock_recv_into / sock_recvfrom / sock_recvfrom_into / sock_sendall /
sock_sendto / sock_connect / sock_accept / sock_sendfile on both loops: results, waiting for
readiness, cancellation, errors reaching the awaiting coroutine, and the stock argument checks.

Reference: CPython 3.11 asyncio (selector_events.BaseSelectorEventLoop.sock_*,
base_events.BaseEventLoop.sock_sendfile, unix_events._UnixSelectorEventLoop._sock_sendfile_native).
"""

import asyncio
import errno
import io
import os
import socket
import ssl
import struct

import pytest
from util import run

# Every test coroutine is bounded: a lost wake-up fails the test instead of hanging it.
GUARD = 30.0
MIB = 1024 * 1024


class SocketSubclass(socket.socket):
    """Not exactly `socket.socket`: ferroloop runs sock_recv and sock_sendall on it in Python,
    where a plain socket takes the Rust fast path."""


@pytest.fixture(params=["plain", "subclass"])
def socket_kind(request):
    return request.param


def nonblocking(sock, kind):
    if kind == "subclass":
        sock = SocketSubclass(fileno=sock.detach())
    sock.setblocking(False)
    return sock


@pytest.fixture
def pair(socket_kind):
    a, b = socket.socketpair()
    a = nonblocking(a, socket_kind)
    b = nonblocking(b, socket_kind)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


@pytest.fixture
def tcp_pair(listener, socket_kind):
    """A connected TCP pair (client, server side), both non-blocking."""
    client = socket.create_connection(listener.getsockname())
    listener.setblocking(True)
    server, _ = listener.accept()
    listener.setblocking(False)
    client = nonblocking(client, socket_kind)
    server = nonblocking(server, socket_kind)
    yield client, server
    client.close()
    server.close()


@pytest.fixture
def udp_pair():
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def refused_address():
    """A local TCP address nothing listens on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    address = sock.getsockname()
    sock.close()
    return address


def fill_send_buffer(sock):
    """Sends until the kernel's buffer is full (the next send would block)."""
    chunk = b" " * 65536
    size = len(chunk)
    while size:
        try:
            sock.send(chunk[:size])
        except BlockingIOError:
            size //= 2


async def recv_exactly(loop, sock, n, chunk=65536):
    data = bytearray()
    while len(data) < n:
        block = await loop.sock_recv(sock, chunk)
        if not block:
            break
        data += block
    return bytes(data)


async def recv_until_eof(loop, sock):
    data = bytearray()
    while True:
        block = await loop.sock_recv(sock, 65536)
        if not block:
            return bytes(data)
        data += block


class TestRecv:
    def test_returns_data_already_there(self, loop, pair):
        a, b = pair
        b.send(b"ready")
        assert run(loop, loop.sock_recv(a, 100)) == b"ready"

    def test_waits_for_data(self, loop, pair):
        a, b = pair
        loop.call_soon(b.send, b"later")
        assert run(loop, loop.sock_recv(a, 100)) == b"later"

    def test_returns_at_most_n_bytes(self, loop, pair):
        a, b = pair
        b.send(b"abcdef")
        assert run(loop, loop.sock_recv(a, 4)) == b"abcd"
        assert run(loop, loop.sock_recv(a, 4)) == b"ef"

    def test_size_too_large_to_allocate_is_memory_error(self, loop, pair):
        a, b = pair
        b.send(b"kept")
        with pytest.raises(MemoryError):
            run(loop, loop.sock_recv(a, 2**62))
        assert run(loop, loop.sock_recv(a, 100)) == b"kept"

    @staticmethod
    def socket_at(fd):
        """A new connected socket placed at the fd number `fd` (closed before), and its peer."""
        sock, peer = socket.socketpair()
        if sock.fileno() != fd:
            os.dup2(sock.fileno(), fd)
            sock.close()
            sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        peer.setblocking(False)
        return sock, peer

    @pytest.mark.parametrize("old_wait", ["completed", "cancelled"])
    @pytest.mark.parametrize("duplicate", [False, True], ids=["closed", "dup-kept"])
    def test_a_closed_sockets_fd_number_waits_afresh(self, loop, pair, old_wait, duplicate):
        # A wait on a socket that reuses a closed socket's number is not confused with the old
        # registration, also when a duplicate keeps the old socket open and it gets data.
        a, b = pair
        kept = a.dup() if duplicate else None
        if old_wait == "completed":
            loop.call_later(0.01, b.send, b"first")
            assert run(loop, loop.sock_recv(a, 100)) == b"first"
        else:
            waiting = loop.create_task(loop.sock_recv(a, 100))
            loop.run_until_complete(asyncio.sleep(0.01))
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                loop.run_until_complete(waiting)
        fd = a.fileno()
        a.close()
        c, d = self.socket_at(fd)
        try:
            if kept is not None:
                b.send(b"to the old socket")
            loop.call_later(0.05, d.send, b"new")
            assert run(loop, loop.sock_recv(c, 100)) == b"new"
            if kept is not None:
                assert kept.recv(100) == b"to the old socket"
        finally:
            c.close()
            d.close()
            if kept is not None:
                kept.close()

    def test_large_read_after_small_ones_returns_all_that_waits(self, loop, tcp_pair):
        # ferroloop sizes a stream socket's reads by what the previous ones brought; a burst
        # after small reads still comes back whole, up to n, as one recv(n) returns it.
        client, server = tcp_pair
        for _ in range(3):
            client.send(b"small")
            assert run(loop, loop.sock_recv(server, 65536)) == b"small"
        burst = bytes(range(256)) * 192  # 48 KiB
        client.setblocking(True)
        client.sendall(burst)
        client.setblocking(False)
        deadline = loop.time() + GUARD
        while loop.time() < deadline:
            waiting = server.recv(65536, socket.MSG_PEEK)
            if len(waiting) == len(burst):
                break
        assert run(loop, loop.sock_recv(server, 65536)) == burst

    @pytest.mark.parametrize("kind", ["udp", "seqpacket"])
    def test_datagram_longer_than_earlier_ones_is_not_cut(self, loop, kind):
        # Each recv takes one whole datagram (up to n): a read sized by earlier small
        # datagrams would cut a longer one.
        if kind == "udp":
            a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            a.bind(("127.0.0.1", 0))
            b.connect(a.getsockname())
        else:
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        a.setblocking(False)
        try:
            for _ in range(3):
                b.send(b"tiny")
                assert run(loop, loop.sock_recv(a, 65536)) == b"tiny"
            long = bytes(range(256)) * 80  # 20 KiB
            b.send(long)
            b.send(b"next")
            assert run(loop, loop.sock_recv(a, 65536)) == long
            assert run(loop, loop.sock_recv(a, 65536)) == b"next"
        finally:
            a.close()
            b.close()

    def test_empty_bytes_at_end_of_stream(self, loop, pair):
        a, b = pair
        loop.call_soon(b.shutdown, socket.SHUT_WR)
        assert run(loop, loop.sock_recv(a, 100)) == b""

    def test_reader_removed_once_done(self, loop, pair):
        a, b = pair

        async def main():
            loop.call_soon(b.send, b"x")
            data = await loop.sock_recv(a, 10)
            await asyncio.sleep(0)
            return data, loop.remove_reader(a)

        assert run(loop, main()) == (b"x", False)

    def test_cancelled_recv_leaves_socket_usable(self, loop, pair):
        a, b = pair

        async def main():
            task = asyncio.ensure_future(loop.sock_recv(a, 100))
            await asyncio.sleep(0)
            task.cancel()
            await asyncio.sleep(0)
            assert task.cancelled()
            assert loop.remove_reader(a) is False
            b.send(b"after cancel")
            return await loop.sock_recv(a, 100)

        assert run(loop, main()) == b"after cancel"

    def test_recv_started_right_after_cancel_gets_data(self, loop, pair):
        # The cancelled call's clean-up runs one iteration later, after the new call registered
        # its reader: it must not remove that reader.
        a, b = pair

        async def main():
            task = asyncio.ensure_future(loop.sock_recv(a, 100))
            await asyncio.sleep(0)
            task.cancel()
            loop.call_later(0.05, b.send, b"second")
            # Awaited directly, not in a new task: it registers before the clean-up runs.
            return await loop.sock_recv(a, 100)

        assert run(loop, main(), timeout=5) == b"second"

    def test_reset_by_peer_reaches_waiting_recv(self, loop, tcp_pair):
        client, server = tcp_pair

        def reset():
            # SO_LINGER with a zero timeout: close() sends RST.
            server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            server.close()

        loop.call_soon(reset)
        with pytest.raises(ConnectionResetError):
            run(loop, loop.sock_recv(client, 100))

    def test_closed_socket_bad_file_descriptor(self, loop, pair):
        a, _ = pair
        a.close()
        with pytest.raises(OSError) as info:
            run(loop, loop.sock_recv(a, 10))
        assert info.value.errno == errno.EBADF

    def test_not_a_socket(self, loop):
        with pytest.raises(AttributeError):
            run(loop, loop.sock_recv(object(), 10))


class TestRecvInto:
    def test_fills_buffer(self, loop, pair):
        a, b = pair
        loop.call_soon(b.send, b"hello")
        buf = bytearray(10)
        assert run(loop, loop.sock_recv_into(a, buf)) == 5
        assert buf[:5] == b"hello"

    def test_memoryview_slice(self, loop, pair):
        a, b = pair
        b.send(b"abcdef")
        buf = bytearray(b"..........")
        with memoryview(buf) as view:
            assert run(loop, loop.sock_recv_into(a, view[2:5])) == 3
        assert buf == b"..abc....."

    def test_cancelled_recv_into_leaves_socket_usable(self, loop, pair):
        a, b = pair
        buf = bytearray(16)

        async def main():
            task = asyncio.ensure_future(loop.sock_recv_into(a, buf))
            await asyncio.sleep(0)
            task.cancel()
            await asyncio.sleep(0)
            loop.call_soon(b.send, b"data")
            return await loop.sock_recv_into(a, buf)

        assert run(loop, main()) == 4
        assert buf[:4] == b"data"


class TestDatagrams:
    def test_sendto_and_recvfrom(self, loop, udp_pair):
        a, b = udp_pair

        async def main():
            receiving = asyncio.ensure_future(loop.sock_recvfrom(b, 100))
            await asyncio.sleep(0)
            sent = await loop.sock_sendto(a, b"ping", b.getsockname())
            return sent, await receiving

        assert run(loop, main()) == (4, (b"ping", a.getsockname()))

    def test_recvfrom_truncates_to_bufsize(self, loop, udp_pair):
        a, b = udp_pair
        a.sendto(b"0123456789", b.getsockname())
        data, address = run(loop, loop.sock_recvfrom(b, 4))
        assert (data, address) == (b"0123", a.getsockname())

    def test_recvfrom_into_whole_buffer_by_default(self, loop, udp_pair):
        a, b = udp_pair
        loop.call_soon(a.sendto, b"datagram", b.getsockname())
        buf = bytearray(32)
        assert run(loop, loop.sock_recvfrom_into(b, buf)) == (8, a.getsockname())
        assert buf[:8] == b"datagram"

    def test_recvfrom_into_nbytes_limits(self, loop, udp_pair):
        a, b = udp_pair
        a.sendto(b"datagram", b.getsockname())
        buf = bytearray(32)
        assert run(loop, loop.sock_recvfrom_into(b, buf, 4)) == (4, a.getsockname())
        assert buf[:5] == b"data\x00"

    def test_recvfrom_into_nbytes_larger_than_buffer(self, loop, udp_pair):
        _, b = udp_pair
        with pytest.raises(ValueError, match="nbytes is greater than the length of the buffer"):
            run(loop, loop.sock_recvfrom_into(b, bytearray(4), 8))

    def test_sendto_retried_when_writable(self, loop, udp_pair):
        # A socket whose first sendto would block: the datagram goes out once writable.
        a, b = udp_pair

        class BlocksOnce(socket.socket):
            blocked = False

            def sendto(self, *args):
                if not self.blocked:
                    self.blocked = True
                    raise BlockingIOError(errno.EAGAIN, "would block")
                return super().sendto(*args)

        sock = BlocksOnce(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sent = run(loop, loop.sock_sendto(sock, b"retried", b.getsockname()))
            assert sent == 7
            assert sock.blocked
            assert run(loop, loop.sock_recvfrom(b, 100))[0] == b"retried"
        finally:
            sock.close()

    def test_sendto_bad_address(self, loop, udp_pair):
        a, _ = udp_pair
        with pytest.raises(TypeError):
            run(loop, loop.sock_sendto(a, b"x", "not an address"))


class TestSendall:
    def test_small_payload(self, loop, pair):
        a, b = pair
        assert run(loop, loop.sock_sendall(a, b"hello")) is None
        assert b.recv(100) == b"hello"

    def test_several_mib_against_a_slow_reader(self, loop, tcp_pair):
        client, server = tcp_pair
        payload = os.urandom(MIB) * 6

        async def slow_reader():
            await asyncio.sleep(0.05)
            data = bytearray()
            while len(data) < len(payload):
                data += await loop.sock_recv(server, 4096)
                await asyncio.sleep(0)
            return bytes(data)

        async def main():
            reading = asyncio.ensure_future(slow_reader())
            result = await loop.sock_sendall(client, payload)
            return result, await reading

        result, received = run(loop, main())
        assert result is None
        assert len(received) == len(payload)
        assert received == payload

    def test_accepts_bytearray_and_memoryview(self, loop, pair):
        a, b = pair
        run(loop, loop.sock_sendall(a, bytearray(b"one")))
        run(loop, loop.sock_sendall(a, memoryview(b"-two")))
        assert b.recv(100) == b"one-two"

    def test_cancelled_sendall_leaves_socket_usable(self, loop, pair):
        a, b = pair
        fill_send_buffer(a)

        async def main():
            task = asyncio.ensure_future(loop.sock_sendall(a, b"hello"))
            await asyncio.sleep(0)
            task.cancel()
            await asyncio.sleep(0)
            assert task.cancelled()
            assert loop.remove_writer(a) is False
            reading = asyncio.ensure_future(recv_until_eof(loop, b))
            await loop.sock_sendall(a, b"world")
            a.shutdown(socket.SHUT_WR)
            return await reading

        data = run(loop, main())
        assert data.strip(b" ") == b"world"

    def test_sendall_started_right_after_cancel_completes(self, loop, pair):
        a, b = pair
        fill_send_buffer(a)

        async def main():
            task = asyncio.ensure_future(loop.sock_sendall(a, b"hello"))
            await asyncio.sleep(0)
            task.cancel()
            reading = asyncio.ensure_future(recv_until_eof(loop, b))
            try:
                await loop.sock_sendall(a, b"world")
                a.shutdown(socket.SHUT_WR)
                return await reading
            finally:
                reading.cancel()

        assert run(loop, main(), timeout=5).strip(b" ") == b"world"

    def test_peer_closed(self, loop, pair):
        a, b = pair
        b.close()
        with pytest.raises(BrokenPipeError):
            run(loop, loop.sock_sendall(a, b"x"))

    def test_peer_closes_while_waiting(self, loop, pair):
        a, b = pair
        fill_send_buffer(a)
        loop.call_later(0.05, b.close)
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            run(loop, loop.sock_sendall(a, b"more" * 100000))

    def test_not_bytes(self, loop, pair):
        a, _ = pair
        with pytest.raises(TypeError):
            run(loop, loop.sock_sendall(a, "text"))


class TestConnect:
    def test_connects_to_listener(self, loop, listener):
        sock = socket.socket()
        try:
            sock.setblocking(False)
            assert run(loop, loop.sock_connect(sock, listener.getsockname())) is None
            assert sock.getpeername() == listener.getsockname()
        finally:
            sock.close()

    def test_writer_removed_once_connected(self, loop, listener):
        sock = socket.socket()

        async def main():
            await loop.sock_connect(sock, listener.getsockname())
            await asyncio.sleep(0)
            return loop.remove_writer(sock)

        try:
            sock.setblocking(False)
            assert run(loop, main()) is False
        finally:
            sock.close()

    def test_refused(self, loop, refused_address):
        sock = socket.socket()
        try:
            sock.setblocking(False)
            with pytest.raises(ConnectionRefusedError) as info:
                run(loop, loop.sock_connect(sock, refused_address))
            assert info.value.errno == errno.ECONNREFUSED
        finally:
            sock.close()

    def test_unix_socket(self, loop, tmp_path):
        path = str(tmp_path / "sock")
        server = socket.socket(socket.AF_UNIX)
        client = socket.socket(socket.AF_UNIX)
        try:
            server.bind(path)
            server.listen(1)
            client.setblocking(False)
            run(loop, loop.sock_connect(client, path))
            assert client.getpeername() == path
        finally:
            client.close()
            server.close()

    def test_unix_socket_missing_path(self, loop, tmp_path):
        client = socket.socket(socket.AF_UNIX)
        try:
            client.setblocking(False)
            with pytest.raises(FileNotFoundError):
                run(loop, loop.sock_connect(client, str(tmp_path / "missing")))
        finally:
            client.close()

    def test_cancelled_connect_then_connect_again(self, loop, listener):
        sock = socket.socket()

        async def main():
            task = asyncio.ensure_future(loop.sock_connect(sock, listener.getsockname()))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await loop.sock_connect(sock, listener.getsockname())
            return sock.getpeername()

        try:
            sock.setblocking(False)
            assert run(loop, main()) == listener.getsockname()
        finally:
            sock.close()

    def test_address_without_port(self, loop):
        sock = socket.socket()
        try:
            sock.setblocking(False)
            with pytest.raises(ValueError, match="not enough values to unpack"):
                run(loop, loop.sock_connect(sock, ("127.0.0.1",)))
        finally:
            sock.close()

    def test_tuple_address_on_unix_socket(self, loop):
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.setblocking(False)
            with pytest.raises(TypeError):
                run(loop, loop.sock_connect(sock, ("127.0.0.1", 80)))
        finally:
            sock.close()

    def test_ipv6_address_on_ipv4_socket(self, loop):
        sock = socket.socket(socket.AF_INET)
        try:
            sock.setblocking(False)
            with pytest.raises(socket.gaierror):
                run(loop, loop.sock_connect(sock, ("::1", 80)))
        finally:
            sock.close()


class TestAccept:
    def test_connection_already_waiting(self, loop, listener):
        client = socket.create_connection(listener.getsockname())
        try:
            conn, address = run(loop, loop.sock_accept(listener))
            with conn:
                assert address == client.getsockname()
                assert conn.gettimeout() == 0
                assert not conn.getblocking()
        finally:
            client.close()

    def test_waits_for_connection(self, loop, listener):
        client = socket.socket()

        async def main():
            accepting = asyncio.ensure_future(loop.sock_accept(listener))
            await asyncio.sleep(0)
            assert not accepting.done()
            await loop.sock_connect(client, listener.getsockname())
            return await accepting

        try:
            client.setblocking(False)
            conn, address = run(loop, main())
            with conn:
                assert address == client.getsockname()
                assert conn.gettimeout() == 0
                run(loop, loop.sock_sendall(conn, b"welcome"))
                assert run(loop, loop.sock_recv(client, 100)) == b"welcome"
        finally:
            client.close()

    def test_cancelled_accept_then_accept_again(self, loop, listener):
        client = socket.socket()

        async def main():
            task = asyncio.ensure_future(loop.sock_accept(listener))
            await asyncio.sleep(0)
            task.cancel()
            await asyncio.sleep(0)
            assert task.cancelled()
            await loop.sock_connect(client, listener.getsockname())
            return await loop.sock_accept(listener)

        try:
            client.setblocking(False)
            conn, address = run(loop, main())
            conn.close()
            assert address == client.getsockname()
        finally:
            client.close()

    def test_not_listening(self, loop):
        sock = socket.socket()
        try:
            sock.setblocking(False)
            with pytest.raises(OSError) as info:
                run(loop, loop.sock_accept(sock))
            assert info.value.errno == errno.EINVAL
        finally:
            sock.close()


class TestChecks:
    OPERATIONS = {
        "sock_recv": lambda loop, s: loop.sock_recv(s, 10),
        "sock_recv_into": lambda loop, s: loop.sock_recv_into(s, bytearray(10)),
        "sock_recvfrom": lambda loop, s: loop.sock_recvfrom(s, 10),
        "sock_recvfrom_into": lambda loop, s: loop.sock_recvfrom_into(s, bytearray(10)),
        "sock_sendall": lambda loop, s: loop.sock_sendall(s, b"x"),
        "sock_sendto": lambda loop, s: loop.sock_sendto(s, b"x", ("127.0.0.1", 9)),
        "sock_connect": lambda loop, s: loop.sock_connect(s, ("127.0.0.1", 9)),
        "sock_accept": lambda loop, s: loop.sock_accept(s),
        "sock_sendfile": lambda loop, s: loop.sock_sendfile(s, io.BytesIO(b"x")),
    }

    @pytest.mark.parametrize("name", sorted(OPERATIONS))
    def test_blocking_socket_refused_in_debug_mode(self, loop, name):
        loop.set_debug(True)
        sock = socket.socket()
        try:
            with pytest.raises(ValueError, match="^the socket must be non-blocking$"):
                run(loop, self.OPERATIONS[name](loop, sock))
        finally:
            sock.close()

    @pytest.mark.nodebug
    def test_blocking_socket_used_outside_debug_mode(self, loop):
        a, b = socket.socketpair()
        try:
            b.send(b"as stock")
            assert run(loop, loop.sock_recv(a, 100)) == b"as stock"
        finally:
            a.close()
            b.close()

    @pytest.mark.parametrize("name", sorted(OPERATIONS))
    def test_ssl_socket_refused(self, loop, name):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        sock = context.wrap_socket(socket.socket(), server_hostname="example.com", do_handshake_on_connect=False)
        try:
            sock.setblocking(False)
            with pytest.raises(TypeError, match="^Socket cannot be of type SSLSocket$"):
                run(loop, self.OPERATIONS[name](loop, sock))
        finally:
            sock.close()

    def test_fd_owned_by_transport(self, loop, pair):
        a, _ = pair

        async def main():
            transport, _ = await loop.create_connection(asyncio.Protocol, sock=a)
            try:
                for coro in (loop.sock_recv(a, 10), loop.sock_recvfrom(a, 10)):
                    with pytest.raises(RuntimeError, match="is used by transport"):
                        await coro
            finally:
                transport.close()

        run(loop, main())


@pytest.fixture
def data_file(tmp_path):
    data = bytes(range(256)) * 4096 * 3  # 3 MiB
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    with open(path, "rb") as file:
        yield file, data


class TestSendfile:
    def test_whole_file(self, loop, tcp_pair, data_file):
        client, server = tcp_pair
        file, data = data_file

        async def main():
            reading = asyncio.ensure_future(recv_exactly(loop, server, len(data)))
            sent = await loop.sock_sendfile(client, file)
            return sent, await reading

        sent, received = run(loop, main())
        assert sent == len(data)
        assert received == data
        assert file.tell() == len(data)

    def test_offset_and_count(self, loop, tcp_pair, data_file):
        client, server = tcp_pair
        file, data = data_file

        async def main():
            sent = await loop.sock_sendfile(client, file, 1000, 2000)
            return sent, await recv_exactly(loop, server, 2000)

        sent, received = run(loop, main())
        assert sent == 2000
        assert received == data[1000:3000]
        assert file.tell() == 3000

    def test_offset_past_the_end(self, loop, tcp_pair, data_file):
        client, _ = tcp_pair
        file, data = data_file
        assert run(loop, loop.sock_sendfile(client, file, len(data) + 10)) == 0

    def test_empty_file(self, loop, tcp_pair, tmp_path):
        client, _ = tcp_pair
        path = tmp_path / "empty"
        path.write_bytes(b"")
        with open(path, "rb") as file:
            assert run(loop, loop.sock_sendfile(client, file)) == 0
            assert file.tell() == 0

    def test_mixed_with_sendall(self, loop, tcp_pair, data_file):
        client, server = tcp_pair
        file, data = data_file

        async def main():
            reading = asyncio.ensure_future(recv_exactly(loop, server, len(data) + 10))
            await loop.sock_sendall(client, b"head:")
            await loop.sock_sendfile(client, file)
            await loop.sock_sendall(client, b":tail")
            return await reading

        assert run(loop, main()) == b"head:" + data + b":tail"

    def test_falls_back_without_a_file_descriptor(self, loop, tcp_pair):
        client, server = tcp_pair
        data = os.urandom(300_000)
        file = io.BytesIO(data)

        async def main():
            reading = asyncio.ensure_future(recv_exactly(loop, server, len(data) - 5))
            sent = await loop.sock_sendfile(client, file, 5)
            return sent, await reading

        sent, received = run(loop, main())
        assert sent == len(data) - 5
        assert received == data[5:]
        assert file.tell() == len(data)

    def test_fallback_with_count(self, loop, tcp_pair):
        client, server = tcp_pair
        file = io.BytesIO(b"0123456789")
        assert run(loop, loop.sock_sendfile(client, file, 2, 5)) == 5
        assert run(loop, recv_exactly(loop, server, 5)) == b"23456"
        assert file.tell() == 7

    def test_no_fallback(self, loop, tcp_pair):
        client, _ = tcp_pair
        with pytest.raises(asyncio.SendfileNotAvailableError, match="not a regular file"):
            run(loop, loop.sock_sendfile(client, io.BytesIO(b"x"), fallback=False))

    def test_peer_closed(self, loop, tcp_pair, data_file):
        client, server = tcp_pair
        file, _ = data_file
        server.close()
        with pytest.raises(OSError):
            run(loop, loop.sock_sendfile(client, file))

    def test_text_file(self, loop, tcp_pair, tmp_path):
        client, _ = tcp_pair
        path = tmp_path / "text"
        path.write_text("text")
        with open(path) as file:
            with pytest.raises(ValueError, match="^file should be opened in binary mode$"):
                run(loop, loop.sock_sendfile(client, file))

    def test_datagram_socket(self, loop, udp_pair, data_file):
        a, _ = udp_pair
        file, _ = data_file
        with pytest.raises(ValueError, match="^only SOCK_STREAM type sockets are supported$"):
            run(loop, loop.sock_sendfile(a, file))

    @pytest.mark.parametrize(
        "kwargs, exc, message",
        [
            ({"count": 0}, ValueError, r"count must be a positive integer \(got 0\)"),
            ({"count": -1}, ValueError, r"count must be a positive integer \(got -1\)"),
            ({"count": "1"}, TypeError, r"count must be a positive integer \(got '1'\)"),
            ({"offset": -1}, ValueError, r"offset must be a non-negative integer \(got -1\)"),
            ({"offset": 1.5}, TypeError, r"offset must be a non-negative integer \(got 1.5\)"),
        ],
    )
    def test_bad_offset_or_count(self, loop, tcp_pair, data_file, kwargs, exc, message):
        client, _ = tcp_pair
        file, _ = data_file
        with pytest.raises(exc, match=f"^{message}$"):
            run(loop, loop.sock_sendfile(client, file, **kwargs))


def test_cancelled_zero_copy_sendfile_keeps_file_position(ferro_loop, data_file):
    # ferroloop only: the stock zero-copy path leaves the position where it was (0) when
    # cancelled, although bytes were sent; here it is moved past the bytes sent, as after an
    # error and as the stock fallback path does.
    file, data = data_file
    a, b = socket.socketpair()

    async def main():
        task = asyncio.ensure_future(ferro_loop.sock_sendfile(a, file))
        # The first os.sendfile fills the socket buffer (far smaller than the file): the task
        # then waits for writability.
        for _ in range(3):
            await asyncio.sleep(0)
        assert not task.done()
        task.cancel()
        await asyncio.sleep(0)
        assert task.cancelled()
        await asyncio.sleep(0)
        return ferro_loop.remove_writer(a)

    try:
        a.setblocking(False)
        assert run(ferro_loop, main()) is False
        assert 0 < file.tell() < len(data)
    finally:
        a.close()
        b.close()


def test_cancelled_and_finished_waits_free_their_future_without_the_collector(ferro_loop):
    """The Rust fast path's waiter and its future form no cycle left for the collector, either
    when the wait completes or when it is cancelled."""
    import gc
    import weakref

    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    refs = []
    loop = ferro_loop

    async def main():
        for cancel in (True, False):
            task = loop.create_task(loop.sock_recv(a, 10))
            await asyncio.sleep(0)
            refs.append(weakref.ref(task._fut_waiter))
            if cancel:
                task.cancel()
            else:
                b.send(b"x")
            try:
                await task
            except asyncio.CancelledError:
                pass
            for _ in range(3):
                await asyncio.sleep(0)

    gc.disable()
    try:
        loop.run_until_complete(main())
        assert [r() for r in refs] == [None, None]
    finally:
        gc.enable()
        a.close()
        b.close()
