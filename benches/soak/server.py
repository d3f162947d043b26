"""The soak's server: one process, one loop, four servers.

    python benches/soak/server.py LOOP

LOOP is ferroloop (default), asyncio (the stock SelectorEventLoop) or uvloop. On 127.0.0.1, on
free ports, it serves at once:

  streams   echo with asyncio.start_server: read, write, drain, close, wait_closed
  protocol  echo with a plain asyncio.Protocol (benches/net/server.py's EchoProtocol)
  http      minimal HTTP/1.1 keep-alive (benches/net/server.py's HttpProtocol)
  tls       the streams echo behind ssl= (tests/certs/server.pem)

It prints `READY {json}` (the ports, the loop's class and the file its module came from), then
one JSON line each time it gets SIGUSR1, covering the time since the previous one:

  lag_max_ms, lag_p99_ms, lag_n   a timer asks to run every LAG_PERIOD seconds; its lag is how
                                  late it ran (loop.time() at the call minus its deadline).
                                  Works the same on every loop.
  open                            connections open now, per server (made and not yet lost)
  accepted                        connections accepted, per server, since the start
  drain_waits                     drains that had to wait (the write buffer was above its high
                                  water): the proof that the slow readers paused the server
  exceptions                      calls to the loop's exception handler since the start (each
                                  is also logged to stderr)
  stats                           ferroloop only: loop.stats(reset=True) figures

On SIGTERM, or once its parent is gone, it closes the servers and exits.
"""

import asyncio
import importlib.util
import json
import math
import os
import signal
import ssl
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CERTS = HERE.parent.parent / "tests" / "certs"
READ_SIZE = 64 * 1024
LAG_PERIOD = 0.01  # 100 lag samples a second: enough for a p99 over a 5 s interval


def _net_server():
    """benches/net/server.py, loaded by path (this file is also named server.py)."""
    spec = importlib.util.spec_from_file_location("net_server", HERE.parent / "net" / "server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


net = _net_server()
COUNTS = {"open": {}, "accepted": {}, "drain_waits": 0, "exceptions": 0}


def opened(name):
    COUNTS["open"][name] = COUNTS["open"].get(name, 0) + 1
    COUNTS["accepted"][name] = COUNTS["accepted"].get(name, 0) + 1


def lost(name):
    COUNTS["open"][name] -= 1


def counted(base, name):
    """A subclass of the protocol `base` that counts its connections under `name`."""

    class Counted(base):
        def connection_made(self, transport):
            opened(name)
            super().connection_made(transport)

        def connection_lost(self, exc):
            lost(name)
            super().connection_lost(exc)

    return Counted


def streams_echo(name):
    async def handle(reader, writer):
        opened(name)
        try:
            while data := await reader.read(READ_SIZE):
                writer.write(data)
                _, high = writer.transport.get_write_buffer_limits()
                if writer.transport.get_write_buffer_size() > high:
                    COUNTS["drain_waits"] += 1
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass  # resets and abrupt TLS closes: the churn client makes them on purpose
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, ssl.SSLError):
                pass
            lost(name)

    return handle


class LagMeter:
    """A timer that re-arms itself every LAG_PERIOD and records how late it ran."""

    def __init__(self, loop):
        self.loop = loop
        self.lags = []
        self.deadline = loop.time() + LAG_PERIOD
        loop.call_at(self.deadline, self.tick)

    def tick(self):
        now = self.loop.time()
        self.lags.append(max(0.0, now - self.deadline))
        self.deadline = now + LAG_PERIOD
        self.loop.call_at(self.deadline, self.tick)

    def take(self):
        """max and p99 (ms) of the lags since the last take, and their number."""
        lags, self.lags = sorted(self.lags), []
        if not lags:
            return {"lag_max_ms": None, "lag_p99_ms": None, "lag_n": 0}
        p99 = lags[math.ceil(len(lags) * 0.99) - 1]  # nearest rank
        return {"lag_max_ms": lags[-1] * 1e3, "lag_p99_ms": p99 * 1e3, "lag_n": len(lags)}


def loop_stats(loop):
    """ferroloop's own figures over the interval, or None on other loops."""
    if not hasattr(loop, "stats"):
        return None
    s = loop.stats(reset=True)
    return {
        "utilization": round(s.utilization, 4),
        "lag_p99_ms": s.lag.percentile(99) * 1e3,
        "callbacks": s.callbacks,
        "io_events": s.io_events,
        "longest_callback_ms": s.longest_callback * 1e3,
        "slow_callbacks": s.slow_callbacks,
        "ready": s.ready,
    }


def report(loop, meter):
    line = {**meter.take(), **COUNTS, "stats": loop_stats(loop)}
    print(json.dumps(line), flush=True)


def watch_parent(loop, parent, stop):
    """Stops the server if the harness is gone (killed before it could stop us)."""
    if os.getppid() != parent:
        stop.done() or stop.set_result(None)
    else:
        loop.call_later(1.0, watch_parent, loop, parent, stop)


def exception_handler(loop, context):
    COUNTS["exceptions"] += 1
    loop.default_exception_handler(context)


def tls_context():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERTS / "server.pem", CERTS / "server.key")
    return context


async def serve(loop, stop):
    host = "127.0.0.1"
    servers = {
        "streams": await asyncio.start_server(streams_echo("streams"), host, 0, backlog=1024),
        "protocol": await loop.create_server(counted(net.EchoProtocol, "protocol"), host, 0, backlog=1024),
        "http": await loop.create_server(counted(net.HttpProtocol, "http"), host, 0, backlog=1024),
        "tls": await asyncio.start_server(streams_echo("tls"), host, 0, ssl=tls_context(), backlog=1024),
    }
    ports = {name: s.sockets[0].getsockname()[1] for name, s in servers.items()}
    for name in ports:
        COUNTS["open"][name] = COUNTS["accepted"][name] = 0
    meter = LagMeter(loop)
    loop.add_signal_handler(signal.SIGUSR1, report, loop, meter)
    module = sys.modules[type(loop).__module__.split(".")[0]]
    ready = {"ports": ports, "loop": type(loop).__name__, "module": getattr(module, "__file__", None)}
    print("READY", json.dumps(ready), flush=True)
    await stop
    for s in servers.values():
        s.close()


def main():
    loop = net.make_loop(sys.argv[1] if len(sys.argv) > 1 else "ferroloop")
    asyncio.set_event_loop(loop)
    loop.set_exception_handler(exception_handler)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    watch_parent(loop, os.getppid(), stop)
    loop.run_until_complete(serve(loop, stop))
    # Connections still open (the harness was interrupted) are the kernel's to close: exiting
    # now spares the log the "Task was destroyed but it is pending" of each of their handlers.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
