"""The soak's churn client: connections that open, misbehave and close, all the time.

    python benches/soak/churn.py PORTS_JSON

PORTS_JSON is the server's READY object's "ports" ({"streams": ..., "protocol": ..., "http": ...,
"tls": ...}). Plain blocking sockets in threads, one operation at a time per thread, so a thread
holds at most one connection at any moment (the harness's fd tolerance relies on it: WORKERS
below is the bound). Each thread repeats one kind of operation until SIGTERM:

  connect     connect, one 1 KiB echo, close (streams and protocol servers in turn)
  tls_clean   TLS handshake, one echo, close_notify both ways (unwrap), close
  tls_abrupt  TLS handshake, one echo, close the socket without close_notify
  slow        8 MiB to the streams echo with a 16 KiB receive buffer, read back 16 KiB per
              5 ms: more than the server's socket can hold (Linux grows a send buffer up
              to 4 MiB), so its write buffer fills and its drain() waits
  reset       256 KiB in flight (or a few thousand pipelined HTTP requests), then SO_LINGER
              {1, 0} and close: the server gets ECONNRESET mid-transfer (all four servers in turn)
  half_close  64 KiB, shutdown(SHUT_WR), read the echo to EOF (streams and protocol in turn)

Every echo is checked byte for byte. On SIGUSR1 it prints one JSON line: completed operations
per kind, unexpected errors per kind, the first few error messages, and the number of threads.
On SIGTERM, or once its parent is gone, the threads finish their operation, the last line is
printed, and it exits.
"""

import json
import os
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from collections import Counter
from pathlib import Path

HOST = "127.0.0.1"
CA = Path(__file__).resolve().parent.parent.parent / "tests" / "certs" / "ca.pem"
TIMEOUT = 20.0  # a server stalled this long is an error, not load
PAUSE = 0.001  # between two operations of one thread: keeps the GIL from starving the others
WORKERS = {"connect": 2, "tls": 2, "slow": 2, "reset": 1, "half_close": 1}
PATTERN = bytes(range(251)) * (9 * 1024 * 1024 // 251)
SMALL, MEDIUM, BIG, SLOW_TOTAL = 1024, 64 * 1024, 256 * 1024, 8 * 1024 * 1024
HTTP_REQUESTS = b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n" * 4000

STOP = threading.Event()
LOCK = threading.RLock()  # report() also runs as a signal handler
DONE, ERRORS, SAMPLES = Counter(), Counter(), []


class ProtocolError(Exception):
    pass


def connect(port, timeout=TIMEOUT):
    return socket.create_connection((HOST, port), timeout=timeout)


def expect(sock, data):
    """Reads len(data) bytes and checks they are `data`."""
    got = bytearray()
    while len(got) < len(data):
        chunk = sock.recv(min(65536, len(data) - len(got)))
        if not chunk:
            raise ProtocolError(f"EOF after {len(got)} of {len(data)} echoed bytes")
        got += chunk
    if got != data:
        raise ProtocolError("echo differs from what was sent")


def op_connect(ports, i):
    with connect(ports["streams" if i % 2 else "protocol"]) as s:
        s.sendall(PATTERN[:SMALL])
        expect(s, PATTERN[:SMALL])
    return "connect"


def op_tls(ports, i, context):
    raw = connect(ports["tls"])  # closed by its own `with` if the handshake fails
    with raw, context.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(PATTERN[:SMALL])
        expect(s, PATTERN[:SMALL])
        if i % 2:
            return "tls_abrupt"  # the with block closes the fd: no close_notify is sent
        s.unwrap()
        return "tls_clean"


def op_slow(ports, i):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # before connect: no autotuning
        s.settimeout(TIMEOUT)
        s.connect((HOST, ports["streams"]))
        s.setblocking(False)
        sent = received = 0
        deadline = time.monotonic() + TIMEOUT
        while received < SLOW_TOTAL:
            if time.monotonic() > deadline:
                raise TimeoutError(f"slow reader: {received} of {SLOW_TOTAL} bytes echoed")
            if sent < SLOW_TOTAL:
                try:
                    sent += s.send(PATTERN[sent : min(SLOW_TOTAL, sent + 65536)])
                except BlockingIOError:
                    pass
            time.sleep(0.005)
            try:
                chunk = s.recv(16384)
            except BlockingIOError:
                continue
            if not chunk or chunk != PATTERN[received : received + len(chunk)]:
                raise ProtocolError(f"slow reader: bad echo or EOF at byte {received}")
            received += len(chunk)
    return "slow"


def op_reset(ports, i, context):
    target = ("streams", "protocol", "http", "tls")[i % 4]
    s = connect(ports[target])
    try:
        if target == "tls":
            s = context.wrap_socket(s, server_hostname="localhost")
        s.settimeout(0.5)
        try:
            s.sendall(HTTP_REQUESTS if target == "http" else PATTERN[:BIG])
        except TimeoutError:
            pass  # the server stopped reading: mid-transfer, as wanted
        s.settimeout(TIMEOUT)
        s.recv(4096)  # the server is answering now
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        s.close()  # with linger {1, 0}: RST, not FIN
    return "reset"


def op_half_close(ports, i):
    with connect(ports["streams" if i % 2 else "protocol"]) as s:
        s.sendall(PATTERN[:MEDIUM])
        s.shutdown(socket.SHUT_WR)
        expect(s, PATTERN[:MEDIUM])
        if s.recv(1):
            raise ProtocolError("half-close: more bytes than were sent")
    return "half_close"


def worker(kind, ports, context):
    operation = {
        "connect": op_connect,
        "tls": lambda p, i: op_tls(p, i, context),
        "slow": op_slow,
        "reset": lambda p, i: op_reset(p, i, context),
        "half_close": op_half_close,
    }[kind]
    i = 0
    while not STOP.is_set():
        i += 1
        try:
            done = operation(ports, i)
            with LOCK:
                DONE[done] += 1
        except Exception as e:  # every failure is counted and reported, none stops the thread
            with LOCK:
                ERRORS[kind] += 1
                if len(SAMPLES) < 10:
                    SAMPLES.append(f"{kind}: {type(e).__name__}: {e}")
        time.sleep(PAUSE)


def report(*_):
    with LOCK:
        line = {"done": dict(DONE), "errors": dict(ERRORS), "error_samples": list(SAMPLES),
                "workers": sum(WORKERS.values())}
    print(json.dumps(line), flush=True)


def main():
    ports = json.loads(sys.argv[1])
    context = ssl.create_default_context(cafile=str(CA))
    signal.signal(signal.SIGUSR1, report)
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    threads = [
        threading.Thread(target=worker, args=(kind, ports, context), name=f"{kind}-{n}", daemon=True)
        for kind, count in WORKERS.items()
        for n in range(count)
    ]
    for t in threads:
        t.start()
    parent = os.getppid()
    while not STOP.is_set() and os.getppid() == parent:  # no orphan if the harness is killed
        time.sleep(0.1)
    STOP.set()
    for t in threads:
        t.join(TIMEOUT + 5)
    report()


if __name__ == "__main__":
    main()
