"""A real network program on ferroloop: an `asyncio.start_server` echo server and clients that
talk to it over TCP, all on one loop, one thread.

    python -m ferroloop run examples/echo.py          # any asyncio script, run on ferroloop
    python examples/echo.py                           # the same, ferroloop chosen in code

The server upper-cases each line it reads. Ten clients connect at once, each sends three lines and
checks the answers; then the server is closed and `wait_closed()` waits for its connections to
end. It prints what the clients saw and which loop served them, and exits with status 1 if any
answer was wrong.
"""

import asyncio
import sys

CLIENTS = 10
LINES = (b"hello\n", b"ferroloop\n", b"bye\n")


async def handle(reader, writer):
    """One connection: answer every line until the client closes."""
    while line := await reader.readline():
        writer.write(line.upper())
        await writer.drain()
    writer.close()
    await writer.wait_closed()


async def client(port, number):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    for line in LINES:
        writer.write(line)
        await writer.drain()
        answers.append(await reader.readline())
    writer.close()
    await writer.wait_closed()
    return number, answers


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        results = await asyncio.gather(*(client(port, n) for n in range(CLIENTS)))
    await server.wait_closed()
    expected = [line.upper() for line in LINES]
    wrong = [n for n, answers in results if answers != expected]
    loop = asyncio.get_running_loop()
    print(f"{CLIENTS} clients, {len(LINES)} lines each, served on port {port} by {type(loop).__module__}.{type(loop).__name__}")
    print(f"client 0 got: {b' '.join(results[0][1]).decode().split()}")
    if wrong:
        print(f"wrong answers for clients {wrong}")
        return 1
    print("all answers correct")
    return 0


if __name__ == "__main__":
    import ferroloop

    sys.exit(ferroloop.run(main()))
