"""TLS, sendfile, datagrams, pipes and subprocesses are loaded when the loop first needs them
(`_LATER` in python/ferroloop/_loop.py): importing ferroloop and making a loop leaves their
modules unimported, the first lookup of any of their methods brings them in, and then every
name of the class resolves exactly as it would with all the mixins among its bases.

ferroloop only: the stock loop has no mixins."""

import inspect
import subprocess
import sys
from asyncio import events

import ferroloop
from ferroloop import _core, _loop
from ferroloop._datagram import DatagramMixin
from ferroloop._net import NetMixin
from ferroloop._pipes import PipeMixin
from ferroloop._resolver import ResolverMixin
from ferroloop._sendfile import SendfileMixin
from ferroloop._signals import SignalMixin
from ferroloop._subprocess import SubprocessMixin
from ferroloop._sock import SockMixin
from ferroloop._tls import TlsMixin

LATER_MODULES = [
    "ferroloop._tls", "ferroloop._sendfile", "ferroloop._datagram", "ferroloop._pipes", "ferroloop._subprocess"
]


class Eager(
    _core.LoopCore, SockMixin, ResolverMixin, NetMixin, TlsMixin, SendfileMixin, DatagramMixin, PipeMixin,
    SubprocessMixin, SignalMixin, events.AbstractEventLoop,
):
    """The class with every mixin among its bases, in the order they had there."""


def later_names():
    return {name for names in _loop._LATER.values() for name in names}


def load_all():
    for name in later_names():
        getattr(ferroloop.Loop, name)


def run_fresh(code):
    """Runs `code` in a new interpreter; its standard output."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_new_loop_imports_none_of_them():
    # ... nor does a TCP server and client through streams.
    out = run_fresh(
        "import asyncio, sys, ferroloop\n"
        "async def echo(reader, writer):\n"
        "    writer.write(await reader.read(100)); await writer.drain(); writer.close()\n"
        "async def main():\n"
        "    server = await asyncio.start_server(echo, '127.0.0.1', 0)\n"
        "    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())\n"
        "    writer.write(b'hi'); print(await reader.read(100))\n"
        "    writer.close(); server.close(); await server.wait_closed()\n"
        "ferroloop.run(main())\n"
        f"print([m for m in {LATER_MODULES!r} if m in sys.modules])\n"
    )
    assert out.splitlines() == ["b'hi'", "[]"]


def test_first_use_loads_the_mixin_and_works():
    # A datagram endpoint as the first thing a process does: only its own module comes in.
    out = run_fresh(
        "import asyncio, sys, ferroloop\n"
        "class Echo(asyncio.DatagramProtocol):\n"
        "    def connection_made(self, t): self.t = t\n"
        "    def datagram_received(self, data, addr): self.t.sendto(data.upper(), addr)\n"
        "class Client(asyncio.DatagramProtocol):\n"
        "    def __init__(self, got): self.got = got\n"
        "    def datagram_received(self, data, addr): self.got.set_result(data)\n"
        "async def main():\n"
        "    loop = asyncio.get_running_loop()\n"
        "    server, _ = await loop.create_datagram_endpoint(Echo, local_addr=('127.0.0.1', 0))\n"
        "    got = loop.create_future()\n"
        "    client, _ = await loop.create_datagram_endpoint(\n"
        "        lambda: Client(got), remote_addr=server.get_extra_info('sockname'))\n"
        "    client.sendto(b'ping')\n"
        "    print(await asyncio.wait_for(got, 10))\n"
        "    client.close(); server.close()\n"
        "ferroloop.run(main())\n"
        f"print(sorted(m for m in {LATER_MODULES!r} if m in sys.modules))\n"
    )
    assert out.splitlines() == ["b'PING'", "['ferroloop._datagram']"]


def test_names_resolve_as_with_every_mixin_a_base():
    load_all()
    own = set(vars(ferroloop.Loop)) - later_names()
    checked = 0
    for name in dir(Eager):
        if name in own:
            continue
        assert inspect.getattr_static(ferroloop.Loop, name) is inspect.getattr_static(Eager, name), name
        checked += 1
    assert checked > 100
    assert later_names() <= set(dir(Eager))


def test_every_later_name_is_one_its_mixin_provides():
    mixins = {
        "TlsMixin": TlsMixin, "SendfileMixin": SendfileMixin, "DatagramMixin": DatagramMixin, "PipeMixin": PipeMixin,
        "SubprocessMixin": SubprocessMixin,
    }
    for (_, cls_name), names in _loop._LATER.items():
        provided = {n for k in mixins[cls_name].__mro__[:-1] for n in vars(k) if not n.startswith("__")}
        assert set(names) == provided, cls_name


def test_first_use_of_subprocesses_and_sendfile():
    # A subprocess first (the pipe mixin, with the subprocess one it builds on), then
    # loop.sendfile on a connection (the sendfile mixin alone).
    out = run_fresh(
        "import asyncio, os, sys, tempfile, ferroloop\n"
        "later = " + repr(LATER_MODULES) + "\n"
        "def loaded(): return sorted(m for m in later if m in sys.modules)\n"
        "async def main():\n"
        "    loop = asyncio.get_running_loop()\n"
        "    proc = await asyncio.create_subprocess_exec(\n"
        "        sys.executable, '-c', 'print(6 * 7)', stdout=asyncio.subprocess.PIPE)\n"
        "    print((await proc.communicate())[0].strip(), loaded())\n"
        "    got = []\n"
        "    async def take(reader, writer):\n"
        "        got.append(await reader.read()); writer.close()\n"
        "    server = await asyncio.start_server(take, '127.0.0.1', 0)\n"
        "    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())\n"
        "    with tempfile.TemporaryFile() as f:\n"
        "        f.write(b'x' * 100000); f.seek(0)\n"
        "        sent = await loop.sendfile(writer.transport, f)\n"
        "    writer.close(); await writer.wait_closed()\n"
        "    server.close(); await server.wait_closed()\n"
        "    print(sent, len(got[0]), loaded())\n"
        "ferroloop.run(main())\n"
    )
    assert out.splitlines() == [
        "b'42' ['ferroloop._pipes', 'ferroloop._subprocess']",
        "100000 100000 ['ferroloop._pipes', 'ferroloop._sendfile', 'ferroloop._subprocess']",
    ]


def test_a_subclass_override_wins_before_and_after_loading():
    out = run_fresh(
        "import ferroloop\n"
        "class Mine(ferroloop.Loop):\n"
        "    def start_tls(self, *args, **kwargs): return 'mine'\n"
        "loop = Mine()\n"
        "print(type(vars(ferroloop.Loop)['start_tls']).__name__, loop.start_tls())\n"
        "print(loop._make_ssl_transport.__func__.__qualname__, loop.start_tls())\n"
        "loop.close()\n"
    )
    assert out.splitlines() == ["_LoadedAtFirstUse mine", "TlsMixin._make_ssl_transport mine"]


def test_a_name_patched_before_first_use_keeps_its_patch():
    out = run_fresh(
        "from unittest import mock\n"
        "import ferroloop\n"
        "loop = ferroloop.new_event_loop()\n"
        "with mock.patch.object(ferroloop.Loop, 'start_tls', lambda self, *a: 'patched'):\n"
        "    loop._make_ssl_transport  # loads the TLS mixin while start_tls is patched\n"
        "    print(loop.start_tls())\n"
        "print(loop.start_tls.__func__.__qualname__)\n"
        "loop.close()\n"
    )
    assert out.splitlines() == ["patched", "TlsMixin.start_tls"]
