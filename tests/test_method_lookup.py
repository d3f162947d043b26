"""Parity tests: a transport finds `protocol.data_received` (a buffered protocol's `get_buffer`
and `buffer_updated`) anew at every read.

The stock transport calls `self._protocol.data_received(data)`, so whatever changes what that
attribute lookup finds takes effect at the next read: an attribute set on the instance or put in
its `__dict__`, a new `__dict__`, a method replaced on the class or a base, a new `__class__`.
ferroloop keeps the function one lookup found and checks, at each read, the class's version and
the instance's own attributes instead (`src/transports/method_cache.rs`). These tests make each
change after several reads have filled that cache, with the instance's attributes stored inline
and in a dict of their own, and check that the next read goes where the stock one goes.

Each test runs on the stock loop and on ferroloop, over a Unix socket pair: one end is the
transport's (`connect_accepted_socket`), the other a plain socket the test writes to.
"""

import asyncio
import socket

import pytest

TIMEOUT = 30.0


class Connection:
    """A transport over one end of a socket pair, its protocol, and the peer end."""

    def __init__(self, loop, protocol):
        self.loop = loop
        ours, self.peer = socket.socketpair()
        self.transport, self.protocol = loop.run_until_complete(
            asyncio.wait_for(loop.connect_accepted_socket(lambda: protocol, ours), TIMEOUT)
        )
        self.sent = 0

    def send(self, data):
        """Sends `data` and runs the loop until the protocol has recorded one more read."""
        before = len(self.protocol.got)
        self.peer.send(data)

        async def wait():
            while len(self.protocol.got) == before:
                await asyncio.sleep(0.001)

        self.loop.run_until_complete(asyncio.wait_for(wait(), TIMEOUT))
        return self.protocol.got[-1]

    def close(self):
        self.transport.close()
        self.peer.close()
        self.loop.run_until_complete(asyncio.sleep(0))


def recorder_class():
    """A new Protocol class per test, so that changing the class touches no other test."""

    class Recorder(asyncio.Protocol):
        def __init__(self):
            self.got = []

        def data_received(self, data):
            self.got.append(("class", data))

    return Recorder


@pytest.fixture
def conn(loop):
    made = []

    def make(protocol):
        c = Connection(loop, protocol)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def warm(c, reads=3):
    for i in range(reads):
        assert c.send(b"w%d" % i) == ("class", b"w%d" % i)


def test_instance_attribute_set_then_deleted(conn):
    c = conn(recorder_class()())
    warm(c)
    p = c.protocol
    p.data_received = lambda data: p.got.append(("instance", data))
    assert c.send(b"a") == ("instance", b"a")
    assert c.send(b"b") == ("instance", b"b")
    del p.data_received
    assert c.send(b"c") == ("class", b"c")


def test_instance_attribute_through_the_dict(conn):
    c = conn(recorder_class()())
    warm(c)
    p = c.protocol
    vars(p)["data_received"] = lambda data: p.got.append(("dict", data))
    assert c.send(b"a") == ("dict", b"a")
    vars(p).pop("data_received")
    assert c.send(b"b") == ("class", b"b")


def test_another_instance_set_the_name_first(conn):
    cls = recorder_class()
    other = cls()
    other.data_received = print  # the name now has a place among the class's attribute names
    c = conn(cls())
    warm(c)
    p = c.protocol
    p.data_received = lambda data: p.got.append(("instance", data))
    assert c.send(b"a") == ("instance", b"a")
    del p.data_received
    assert c.send(b"b") == ("class", b"b")


@pytest.mark.parametrize("key", ["str", "int"])
def test_attributes_in_a_dict_of_their_own(conn, key):
    """`vars()` makes CPython 3.11 move an instance's attributes into a dict; a server that
    makes many protocols before any sets an attribute ends the same way. A dict may also hold
    keys that are not strings."""
    p = recorder_class()()
    vars(p)[1 if key == "int" else "other"] = "x"
    c = conn(p)
    warm(c)
    p.data_received = lambda data: p.got.append(("instance", data))
    assert c.send(b"a") == ("instance", b"a")
    p.counter = 0  # the dict changes, without the name
    assert c.send(b"b") == ("instance", b"b")
    del p.data_received
    assert c.send(b"c") == ("class", b"c")
    vars(p)["data_received"] = lambda data: p.got.append(("dict", data))
    assert c.send(b"d") == ("dict", b"d")


def test_dict_replaced(conn):
    c = conn(recorder_class()())
    warm(c)
    p = c.protocol
    p.__dict__ = {"got": p.got, "data_received": lambda data: p.got.append(("new dict", data))}
    assert c.send(b"a") == ("new dict", b"a")
    p.__dict__ = {"got": p.got}
    assert c.send(b"b") == ("class", b"b")


def test_class_method_replaced(conn):
    cls = recorder_class()
    c = conn(cls())
    warm(c)
    cls.data_received = lambda self, data: self.got.append(("replaced", data))
    assert c.send(b"a") == ("replaced", b"a")


def test_base_class_method_replaced(conn):
    base = recorder_class()

    class Sub(base):
        pass

    c = conn(Sub())
    warm(c)
    base.data_received = lambda self, data: self.got.append(("base", data))
    assert c.send(b"a") == ("base", b"a")
    Sub.data_received = lambda self, data: self.got.append(("sub", data))
    assert c.send(b"b") == ("sub", b"b")
    del Sub.data_received
    assert c.send(b"c") == ("base", b"c")


def test_class_of_the_instance_changed(conn):
    cls = recorder_class()

    class Other(cls):
        def data_received(self, data):
            self.got.append(("other", data))

    c = conn(cls())
    warm(c)
    c.protocol.__class__ = Other
    assert c.send(b"a") == ("other", b"a")
    c.protocol.__class__ = cls
    assert c.send(b"b") == ("class", b"b")


def test_method_installs_its_successor_while_attributes_change_at_each_read(conn):
    cls = recorder_class()

    class Counting(cls):
        def data_received(self, data):
            self.count = getattr(self, "count", 0) + 1  # the dict changes at every read
            self.got.append(("class", data))
            if self.count == 4:
                self.data_received = lambda d: self.got.append(("installed", d))

    c = conn(Counting())
    warm(c)
    assert c.send(b"a") == ("class", b"a")
    assert c.send(b"b") == ("installed", b"b")
    assert c.protocol.count == 4


def test_protocol_with_slots(conn):
    class Slotted(asyncio.Protocol):
        __slots__ = ("got",)

        def __init__(self):
            self.got = []

        def data_received(self, data):
            self.got.append(("slots", data))

    c = conn(Slotted())
    warm_reads = [c.send(b"w%d" % i) for i in range(3)]
    assert warm_reads == [("slots", b"w%d" % i) for i in range(3)]
    Slotted.data_received = lambda self, data: self.got.append(("replaced", data))
    assert c.send(b"a") == ("replaced", b"a")
    with pytest.raises(AttributeError):
        c.protocol.data_received = print


def test_new_protocol_of_the_same_class(conn):
    cls = recorder_class()
    c = conn(cls())
    warm(c)
    second = cls()
    second.data_received = lambda data: second.got.append(("second", data))
    c.transport.set_protocol(second)
    c.protocol = second
    assert c.send(b"a") == ("second", b"a")
    third = cls()
    c.transport.set_protocol(third)
    c.protocol = third
    assert c.send(b"b") == ("class", b"b")


@pytest.mark.parametrize("kind", ["staticmethod", "callable object", "property", "classmethod"])
def test_methods_that_are_not_plain_functions(conn, kind):
    log = []

    class Caller:
        def __call__(self, data):
            log.append(("callable", data))

    cls = recorder_class()
    if kind == "staticmethod":
        cls.data_received = staticmethod(lambda data: log.append(("static", data)))
    elif kind == "callable object":
        cls.data_received = Caller()
    elif kind == "property":
        cls.data_received = property(lambda self: lambda data: log.append(("property", data)))
    else:
        cls.data_received = classmethod(lambda klass, data: log.append((klass.__name__, data)))
    p = cls()
    c = conn(p)
    for i in range(3):
        p.got.append(None)  # `send` waits for a new entry: the log is where reads go
        c.peer.send(b"x%d" % i)
        c.loop.run_until_complete(asyncio.wait_for(until(lambda: len(log) > i), TIMEOUT))
    expected = {
        "staticmethod": "static",
        "callable object": "callable",
        "property": "property",
        "classmethod": "Recorder",
    }[kind]
    assert log == [(expected, b"x%d" % i) for i in range(3)]


async def until(predicate):
    while not predicate():
        await asyncio.sleep(0.001)


def test_custom_getattribute_sees_every_read(conn):
    lookups = []

    class Watched(recorder_class()):
        def __getattribute__(self, name):
            if name == "data_received":
                lookups.append(name)
            return super().__getattribute__(name)

    c = conn(Watched())
    warm(c, reads=4)
    assert len(lookups) == 4


def test_wrong_signature_reports_the_stock_message(conn):
    errors = []

    class Wrong(asyncio.Protocol):
        got = []

        def data_received(self):
            raise AssertionError("not reached")

        def connection_lost(self, exc):
            errors.append(("lost", type(exc)))

    c = conn(Wrong())
    c.loop.set_exception_handler(lambda loop, context: errors.append(context))
    c.peer.send(b"x")
    c.loop.run_until_complete(asyncio.wait_for(until(lambda: len(errors) >= 2), TIMEOUT))
    context = errors[0]
    assert context["message"] == "Fatal error: protocol.data_received() call failed."
    assert isinstance(context["exception"], TypeError)
    assert str(context["exception"]) == (
        f"{Wrong.data_received.__qualname__}() takes 1 positional argument but 2 were given"
    )
    assert errors[1] == ("lost", TypeError)


def buffered_class():
    """A new BufferedProtocol class per test; `got` records (which method, what) per read."""

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.got = []
            self.buffer = bytearray(64)

        def get_buffer(self, sizehint):
            return self.buffer

        def buffer_updated(self, nbytes):
            self.got.append(("class", bytes(self.buffer[:nbytes])))

    return Buffered


def test_buffered_methods_replaced_after_reads(conn):
    cls = buffered_class()
    c = conn(cls())
    warm(c)
    p = c.protocol
    p.buffer_updated = lambda n: p.got.append(("instance", bytes(p.buffer[:n])))
    assert c.send(b"a") == ("instance", b"a")
    del p.buffer_updated
    assert c.send(b"b") == ("class", b"b")
    other = bytearray(64)
    cls.get_buffer = lambda self, sizehint: other
    cls.buffer_updated = lambda self, n: self.got.append(("other buffer", bytes(other[:n])))
    assert c.send(b"c") == ("other buffer", b"c")
    p.get_buffer = lambda sizehint: memoryview(p.buffer)[:1]
    cls.buffer_updated = lambda self, n: self.got.append(("class", bytes(self.buffer[:n])))
    before = len(p.got)
    c.peer.send(b"de")  # a 1-byte buffer: two reads
    c.loop.run_until_complete(asyncio.wait_for(until(lambda: len(p.got) >= before + 2), TIMEOUT))
    assert p.got[before:] == [("class", b"d"), ("class", b"e")]
