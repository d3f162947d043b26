"""The README's "With your framework" lines, run as written: each block marked
`<!-- framework: NAME -->` is taken from README.md, so the README cannot show a line that no
longer works. Servers get a free port added (their defaults could be taken) and must answer a
request from inside ferroloop; the other lines must run their program on ferroloop."""

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

import ferroloop

README = Path(__file__).resolve().parent.parent / "README.md"
LOOP_MODULE = ferroloop.Loop.__module__

# An ASGI application that answers with the module of the loop it runs on.
ASGI_APP = textwrap.dedent(
    """
    import asyncio

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = type(asyncio.get_running_loop()).__module__.encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
    """
)

FASTAPI_APP = textwrap.dedent(
    """
    import asyncio
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    app = FastAPI()

    @app.get("/", response_class=PlainTextResponse)
    async def root():
        return type(asyncio.get_running_loop()).__module__
    """
)


def readme_block(name):
    """The code block after `<!-- framework: NAME -->` in the README."""
    match = re.search(rf"<!-- framework: {re.escape(name)} -->\n```[a-z]*\n(.*?)```", README.read_text(), re.S)
    assert match, f"README has no block for {name}"
    return match.group(1)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment():
    """This Python's scripts (uvicorn, ...) and `python` first on PATH, as in an activated venv."""
    bindir = os.path.dirname(sys.executable)
    return dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""), PYTHONWARNINGS="")


def command(line):
    argv = shlex.split(line)
    if argv[0] == "python":
        argv[0] = sys.executable
    return argv


def serve_and_ask(argv, port, cwd, deadline=60.0):
    """Starts the server, asks it for / until it answers, stops it; returns the answer."""
    server = subprocess.Popen(
        argv, cwd=cwd, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        give_up = time.monotonic() + deadline
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    return response.read().decode()
            except OSError:
                if server.poll() is not None or time.monotonic() > give_up:
                    output = server.stdout.read().decode(errors="replace") if server.poll() is not None else ""
                    pytest.fail(f"{argv} did not answer (exit {server.poll()}): {output}")
                time.sleep(0.2)
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        server.stdout.close()


@pytest.mark.parametrize("app", [ASGI_APP, FASTAPI_APP], ids=["asgi", "fastapi"])
def test_uvicorn(tmp_path, app):
    (tmp_path / "main.py").write_text(app)
    port = free_port()
    argv = command(readme_block("uvicorn")) + ["--port", str(port)]
    assert serve_and_ask(argv, port, tmp_path) == LOOP_MODULE


def test_hypercorn(tmp_path):
    (tmp_path / "main.py").write_text(ASGI_APP)
    port = free_port()
    argv = command(readme_block("hypercorn")) + ["--bind", f"127.0.0.1:{port}"]
    assert serve_and_ask(argv, port, tmp_path) == LOOP_MODULE


def test_granian(tmp_path):
    # Its workers are spawned processes on 3.14+: the launcher registers the loop in each.
    (tmp_path / "main.py").write_text(ASGI_APP)
    port = free_port()
    launcher = readme_block("granian")
    assert 'Granian("main:app", ' in launcher
    (tmp_path / "serve.py").write_text(launcher.replace('Granian("main:app", ', f'Granian("main:app", port={port}, '))
    assert serve_and_ask([sys.executable, "serve.py"], port, tmp_path) == LOOP_MODULE


def test_aiohttp(tmp_path):
    port = free_port()
    line = readme_block("aiohttp").strip()
    assert line.startswith("web.run_app(app, ")
    program = textwrap.dedent(
        """
        import asyncio
        from aiohttp import web
        import ferroloop

        async def root(request):
            return web.Response(text=type(asyncio.get_running_loop()).__module__)

        app = web.Application()
        app.add_routes([web.get("/", root)])
        """
    ) + line.replace("web.run_app(app, ", f"web.run_app(app, host='127.0.0.1', port={port}, ", 1)
    (tmp_path / "main.py").write_text(program)
    assert serve_and_ask([sys.executable, "main.py"], port, tmp_path) == LOOP_MODULE


def run_python(cwd, *argv):
    """Runs this Python with `argv` in `cwd`; its standard output (it must succeed)."""
    proc = subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=environment(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def run_program(tmp_path, program, *argv):
    (tmp_path / "main.py").write_text(program)
    return run_python(tmp_path, *(argv or ["main.py"]))


def test_anyio(tmp_path):
    program = textwrap.dedent(
        """
        import asyncio
        import anyio
        import ferroloop

        async def main():
            await anyio.sleep(0)
            print(type(asyncio.get_running_loop()).__module__)

        """
    ) + readme_block("anyio")
    assert run_program(tmp_path, program).strip() == LOOP_MODULE


def test_pytest_asyncio(tmp_path):
    (tmp_path / "conftest.py").write_text(readme_block("pytest-asyncio"))
    (tmp_path / "test_on_ferroloop.py").write_text(
        textwrap.dedent(
            f"""
            import asyncio
            import pytest

            @pytest.mark.asyncio
            async def test_runs_on_ferroloop():
                assert type(asyncio.get_running_loop()).__module__ == {LOOP_MODULE!r}
            """
        )
    )
    out = run_python(
        tmp_path, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "-o", "asyncio_default_fixture_loop_scope=function", "test_on_ferroloop.py",
    )
    assert "1 passed" in out


def test_any_program_through_the_command_line(tmp_path):
    program = "import asyncio\nasync def main():\n    print(type(asyncio.get_running_loop()).__module__)\nasyncio.run(main())\n"
    assert run_program(tmp_path, program, "-m", "ferroloop", "run", "main.py").strip() == LOOP_MODULE


def test_the_check_for_the_running_loop(tmp_path):
    check = re.search(r"```python\n(isinstance\(asyncio.get_running_loop\(\), ferroloop.Loop\)).*?\n```", README.read_text())
    assert check, "README lost its check for the running loop"
    program = f"import asyncio, ferroloop\nasync def main():\n    print({check.group(1)})\nferroloop.run(main())\nasyncio.run(main())\n"
    assert run_program(tmp_path, program).split() == ["True", "False"]
