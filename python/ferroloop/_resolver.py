"""Name resolution: `loop.getaddrinfo` and `loop.getnameinfo`.

Why not the stdlib's: the stock methods are `base_events.BaseEventLoop`'s, which cannot be taken
without that whole class; these do the same, in the same words.

`getaddrinfo` and `getnameinfo` run the blocking C calls in the default executor, never on
the loop's thread. In debug mode `getaddrinfo` logs the call and how long it took on the
`asyncio` logger: at INFO level when it took at least `slow_callback_duration`, DEBUG
otherwise.
"""

import socket
from asyncio.log import logger

__all__ = ("ResolverMixin",)


class ResolverMixin:
    """`getaddrinfo` and `getnameinfo` of `ferroloop.Loop`."""

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        """`socket.getaddrinfo` in the default executor."""
        resolve = self._getaddrinfo_debug if self.get_debug() else socket.getaddrinfo
        return await self.run_in_executor(None, resolve, host, port, family, type, proto, flags)

    def _getaddrinfo_debug(self, host, port, family, type_, proto, flags):
        """`socket.getaddrinfo`, logged with its duration (runs in the executor)."""
        parts = [f"{host}:{port!r}"]
        for name, value in (("family", family), ("type", type_), ("proto", proto), ("flags", flags)):
            if value:
                parts.append(f"{name}={value!r}")
        call = ", ".join(parts)
        logger.debug("Get address info %s", call)
        started = self.time()
        infos = socket.getaddrinfo(host, port, family, type_, proto, flags)
        elapsed = self.time() - started
        message = f"Getting address info {call} took {elapsed * 1e3:.3f}ms: {infos!r}"
        if elapsed >= self.slow_callback_duration:
            logger.info(message)
        else:
            logger.debug(message)
        return infos

    async def getnameinfo(self, sockaddr, flags=0):
        """`socket.getnameinfo` in the default executor."""
        return await self.run_in_executor(None, socket.getnameinfo, sockaddr, flags)
