"""A TLS client over a blocking socket and memory BIOs, run in a thread by the TLS close tests.

With `ssl.SSLObject` the test decides which TLS records leave together and when: the client's
last handshake flight and its first data in one write (`handshake(then=...)`), data sent after the
server's close_notify arrived but before the client read it (`read_app` reads records one at a
time), a close_notify without waiting for the server's (`send_close_notify`).
"""

import socket
import ssl
import threading

from tls_certs import client_context

TIMEOUT = 20


class BioClient:
    def __init__(self, sock):
        sock.settimeout(TIMEOUT)
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = client_context().wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")

    def flush(self):
        if self.outgoing.pending:
            self.sock.sendall(self.outgoing.read())

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the TCP connection")
        self.incoming.write(data)

    def handshake(self, then=b""):
        """Completes the handshake; `then` is encrypted at once and leaves in the same write as
        the client's last handshake flight."""
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                self._fill()
        if then:
            self.tls.write(then)
        self.flush()

    def send(self, data):
        self.tls.write(data)
        self.flush()

    def read_app(self, size):
        """Exactly `size` bytes of application data, leaving any record after them unread."""
        got = bytearray()
        while len(got) < size:
            try:
                chunk = self.tls.read(size - len(got))
            except ssl.SSLWantReadError:
                self._fill()
                continue
            if not chunk:
                raise ConnectionError("close_notify before the data")
            got += chunk
        return bytes(got)

    def read_to_close_notify(self):
        """Application data up to the server's close_notify."""
        got = bytearray()
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                self._fill()
                continue
            except ssl.SSLZeroReturnError:
                return bytes(got)
            if not chunk:
                return bytes(got)
            got += chunk

    def send_close_notify(self):
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass  # sent; the server's close_notify is not awaited
        self.flush()

    def read_tcp_to_end(self):
        """Whatever raw bytes come until the server closes the TCP connection."""
        data = bytearray()
        while chunk := self.sock.recv(65536):
            data += chunk
        return bytes(data)


class InThread:
    """Runs `client(sock)` in a thread over a new connection to `address`; `result()` waits
    for its return value (or raises what it raised)."""

    def __init__(self, address, client):
        self._outcome = None
        self._thread = threading.Thread(target=self._run, args=(address, client), daemon=True)
        self._thread.start()

    def _run(self, address, client):
        try:
            with socket.create_connection(address, timeout=TIMEOUT) as sock:
                self._outcome = (True, client(sock))
        except BaseException as exc:
            self._outcome = (False, exc)

    def result(self):
        self._thread.join(TIMEOUT + 5)
        assert self._outcome is not None, "the client thread did not finish"
        ok, value = self._outcome
        if not ok:
            raise value
        return value
