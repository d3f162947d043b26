"""The classes `isinstance` sees for ferroloop's Rust transports.

A Rust extension type cannot inherit from `asyncio.Transport` (a Python class whose `__slots__`
give it an instance layout of its own), yet programs check `isinstance(t, asyncio.Transport)`.
Python's `isinstance` also consults an object's `__class__` attribute when the real type does not
match, so each Rust transport reports one of these classes as its `__class__`: they subclass the
asyncio transport classes, carry the documentation, and are never instantiated.
`type(transport)` remains the Rust type.
"""

import asyncio


class StreamTransport(asyncio.Transport):
    """A TCP or Unix stream transport of ferroloop (implemented in Rust)."""

    __slots__ = ()

    def __new__(cls, *args, **kwargs):
        raise TypeError(
            "ferroloop transports are made by the loop (create_connection, create_server, ...)"
        )
