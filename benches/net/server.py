"""The servers the network benchmarks measure, one process each:

    python benches/net/server.py LOOP MODE [THREADS]

LOOP is asyncio, uvloop, rloop, zuvloop, ferroloop or ferroloop-other (another build, from
$FERROLOOP_OTHER_SITE); MODE one of
  sock      echo with loop.sock_accept / sock_recv / sock_sendall
  streams   echo with asyncio.start_server, StreamReader.read and StreamWriter.write + drain
  protocol  echo with an asyncio.Protocol writing back what data_received got
  http      a minimal HTTP/1.1 keep-alive server on an asyncio.Protocol
  push      streams: counts the bytes of one upload until EOF, answers the count (8 bytes)

It listens on 127.0.0.1 on a free port, prints `READY <port>` and serves until SIGTERM. With
THREADS (benches/threads.py), as many loops serve in as many threads, each with its own listening
socket on that one port (`SO_REUSEPORT`: the kernel spreads connections among them).
"""

import asyncio
import os
import signal
import socket
import struct
import sys

READ_SIZE = 64 * 1024
HTTP_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!"
)


def make_loop(name):
    if name == "asyncio":
        return asyncio.SelectorEventLoop()
    if name == "ferroloop-other":
        # Another build of ferroloop (the one before a change), installed with
        # `pip install --target DIR`: FERROLOOP_OTHER_SITE=DIR, as for benches/run.py.
        sys.path.insert(0, os.environ["FERROLOOP_OTHER_SITE"])
        name = "ferroloop"
    module = __import__(name)
    return module.new_event_loop()


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class HttpProtocol(asyncio.Protocol):
    """Answers every complete request head with the same small response; no bodies."""

    def connection_made(self, transport):
        self.transport = transport
        self.pending = b""

    def data_received(self, data):
        data = self.pending + data if self.pending else data
        count = data.count(b"\r\n\r\n")
        if count:
            self.transport.write(HTTP_RESPONSE * count)
            data = data[data.rfind(b"\r\n\r\n") + 4 :]
        self.pending = data


async def sock_echo(loop, conn):
    with conn:
        try:
            while True:
                data = await loop.sock_recv(conn, READ_SIZE)
                if not data:
                    return
                await loop.sock_sendall(conn, data)
        except (ConnectionResetError, BrokenPipeError):
            return


async def serve_sock(loop, listener):
    listener.setblocking(False)
    tasks = set()
    while True:
        conn, _ = await loop.sock_accept(listener)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = loop.create_task(sock_echo(loop, conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def streams_echo(reader, writer):
    try:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionResetError, BrokenPipeError):
        pass
    writer.close()


async def streams_push(reader, writer):
    total = 0
    while True:
        data = await reader.read(READ_SIZE)
        if not data:
            break
        total += len(data)
    writer.write(struct.pack(">Q", total))
    await writer.drain()
    writer.close()


def listening(port=0):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    return listener


async def main(loop, mode, stop, listener=None, announce=True):
    listener = listener or listening()
    port = listener.getsockname()[1]
    if mode == "sock":
        server = loop.create_task(serve_sock(loop, listener))
    elif mode in ("streams", "push"):
        handler = streams_echo if mode == "streams" else streams_push
        server = await asyncio.start_server(handler, sock=listener, limit=READ_SIZE * 4)
    else:
        factory = EchoProtocol if mode == "protocol" else HttpProtocol
        server = await loop.create_server(factory, sock=listener)
    if announce:
        print(f"READY {port}", flush=True)
    await stop
    if isinstance(server, asyncio.Task):
        server.cancel()
    else:
        server.close()


def run_threads(loop_name, mode, threads):
    """`threads` loops, one per thread, each serving its own listener on one shared port."""
    import threading

    first = listening()
    listeners = [first] + [listening(first.getsockname()[1]) for _ in range(threads - 1)]
    stops = []
    ready = threading.Barrier(threads + 1)

    def serve(listener):
        loop = make_loop(loop_name)
        stop = loop.create_future()
        stops.append((loop, stop))
        loop.call_soon(ready.wait)
        loop.run_until_complete(main(loop, mode, stop, listener, announce=False))
        loop.close()

    pool = [threading.Thread(target=serve, args=(lst,)) for lst in listeners]
    for t in pool:
        t.start()
    ready.wait()

    def stop_all(*_):
        for loop, stop in stops:
            loop.call_soon_threadsafe(stop.set_result, None)

    signal.signal(signal.SIGTERM, stop_all)
    print(f"READY {first.getsockname()[1]}", flush=True)
    while any(t.is_alive() for t in pool):
        for t in pool:
            t.join(0.2)


def run():
    loop_name, mode = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 3 and int(sys.argv[3]) > 1:
        run_threads(loop_name, mode, int(sys.argv[3]))
        return
    loop = make_loop(loop_name)
    asyncio.set_event_loop(loop)
    stop = loop.create_future()
    signal.signal(signal.SIGTERM, lambda *_: loop.call_soon_threadsafe(stop.set_result, None))
    loop.run_until_complete(main(loop, mode, stop))


if __name__ == "__main__":
    run()
