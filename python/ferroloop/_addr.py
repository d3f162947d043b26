"""Addresses and socket options shared by connections, servers, datagram endpoints and the
`sock_*` methods.

Numeric addresses skip `getaddrinfo` (a round trip through the default executor), as the stock
loop's `_ipaddr_info`/`_ensure_resolved` do: `numeric_addrinfo` builds the entry getaddrinfo
would return. A host with an IPv6 zone index ("fe80::1%eth0") is resolved anyway, because Linux's
`inet_pton` refuses the "%" suffix; a port that is a service name ("http") is resolved too.
"""

import os
import socket
import stat
from asyncio.log import logger

__all__ = (
    "HAS_IPV6",
    "numeric_addrinfo",
    "resolve_address",
    "is_filesystem_path",
    "remove_stale_socket_file",
    "set_reuse_port",
)

HAS_IPV6 = hasattr(socket, "AF_INET6")


def _numeric_port(port):
    """The port as an int, 0 when absent, or None when it is a service name to resolve."""
    if port is None or (isinstance(port, (bytes, str)) and not port):
        return 0
    try:
        return int(port)
    except (TypeError, ValueError):
        return None


def numeric_addrinfo(host, port, family, type_, proto, flowinfo=0, scopeid=0):
    """The getaddrinfo() entry for a host that is already an IP address, or None when the
    address has to be resolved."""
    if host is None or proto not in (0, socket.IPPROTO_TCP, socket.IPPROTO_UDP):
        return None
    if type_ == socket.SOCK_STREAM:
        proto = socket.IPPROTO_TCP
    elif type_ == socket.SOCK_DGRAM:
        proto = socket.IPPROTO_UDP
    else:
        return None
    port = _numeric_port(port)
    if port is None:
        return None
    if family != socket.AF_UNSPEC:
        families = (family,)
    elif HAS_IPV6:
        families = (socket.AF_INET, socket.AF_INET6)
    else:
        families = (socket.AF_INET,)
    if isinstance(host, bytes):
        host = host.decode("idna")
    if "%" in host:
        return None
    for af in families:
        try:
            socket.inet_pton(af, host)
        except OSError:
            continue
        if HAS_IPV6 and af == socket.AF_INET6:
            return af, type_, proto, "", (host, port, flowinfo, scopeid)
        return af, type_, proto, "", (host, port)
    return None


async def resolve_address(loop, address, *, family=0, type_=socket.SOCK_STREAM, proto=0, flags=0):
    """getaddrinfo() entries for `address` (host, port[, flowinfo, scopeid]), without asking
    the resolver when the host is numeric."""
    host, port = address[:2]
    info = numeric_addrinfo(host, port, family, type_, proto, *address[2:])
    if info is not None:
        return [info]
    return await loop.getaddrinfo(host, port, family=family, type=type_, proto=proto, flags=flags)


def is_filesystem_path(path):
    """Whether a Unix socket address names a file (not an abstract or unbound address)."""
    return bool(path) and path[0] not in (0, "\x00")


def remove_stale_socket_file(path):
    """Removes a socket file left at `path` by a server that is gone, as stock does."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        # The directory may allow creating the socket and nothing else.
        logger.error("Unable to check or remove stale UNIX socket %r: %r", path, err)


def set_reuse_port(sock):
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("reuse_port not supported by socket module")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        raise ValueError(
            "reuse_port not supported by socket module, SO_REUSEPORT defined but not implemented."
        ) from None
