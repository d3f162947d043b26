"""Stream connections and servers: create_connection, create_server, their Unix-socket twins,
and connect_accepted_socket, with the stock semantics of `base_events` and `unix_events`.

Why not the stdlib's: the stock methods are `BaseEventLoop`'s and make selector transports;
these make the Rust stream transport, and reuse the stdlib where it is loop-independent
(`staggered_race` for happy eyeballs, `sslproto` for TLS).

What is worth knowing before reading the code:

- Addresses that are already numeric skip `getaddrinfo`, as the stock loop does (`_addr.py`).
- Each connection attempt records its errors in a list of its own, appended to a shared list
  when the attempt starts: with happy eyeballs the attempts overlap, and their errors must still
  come out in the order the attempts were started. When every attempt fails: one error is raised
  as is; several with the same text raise the first; otherwise one OSError lists all their texts
  ("Multiple exceptions: ..."); with `all_errors=True`, an ExceptionGroup holds them all.
- Happy eyeballs (RFC 8305) is `asyncio.staggered.staggered_race`, as stock: an attempt starts
  every `happy_eyeballs_delay` seconds or as soon as the previous one fails, and the first to
  connect wins; the others are cancelled, which closes their sockets. `interleave` reorders the
  addresses so that families alternate, after `interleave - 1` extra addresses of the first one.
- Parameters newer than the running Python (3.12's `all_errors`, 3.13's `keep_alive` and
  `cleanup_socket`) work on every Python. Their defaults are the running Python's: before 3.13
  a Unix server leaves its socket file behind unless `cleanup_socket=True` is passed. The text of bind errors follows the running Python:
  3.13 lowercases `str(exc)` ("[errno 98] address already in use"), earlier versions the
  strerror alone. create_server skips an address whose bind fails with EADDRNOTAVAIL (its
  family is not enabled on the host) as 3.13 does, and fails only when no address is left.
- The transports are the loop's: `_make_socket_transport` for plain streams, `_make_ssl_transport`
  (TLS through `asyncio.sslproto`) when `ssl` is given. The connection is returned only once
  the transport's waiter is done (`connection_made` called, TLS handshake finished); if waiting
  fails the transport is closed. A socket the loop connected itself is closed when no transport
  could be made for it (the protocol factory raised, say), where stock leaves it to the garbage
  collector; a socket the caller passed in stays the caller's, as in stock.
"""

import collections.abc
import errno
import itertools
import os
import socket
import sys
from asyncio import staggered, tasks
from asyncio.log import logger

from ferroloop._addr import (
    HAS_IPV6,
    is_filesystem_path,
    remove_stale_socket_file,
    resolve_address,
    set_reuse_port,
)
from ferroloop._server import Server

try:
    import ssl as _ssl
except ImportError:  # pragma: no cover
    _ssl = None

__all__ = ("NetMixin",)


# 3.13 made Unix servers remove their socket file on close; earlier versions leave it.
_CLEANUP_SOCKET_DEFAULT = sys.version_info >= (3, 13)

def _interleave_by_family(infos, first_family_count=1):
    """`infos` reordered so that address families alternate, the first family leading with
    `first_family_count` addresses (RFC 8305, section 4)."""
    by_family = {}
    for info in infos:
        by_family.setdefault(info[0], []).append(info)
    queues = list(by_family.values())
    lead = max(first_family_count - 1, 0)
    ordered = queues[0][:lead]
    queues[0] = queues[0][lead:]
    for row in itertools.zip_longest(*queues):
        ordered.extend(info for info in row if info is not None)
    return ordered


def _error_text(exc):
    """The lowercase text of an OSError, as the running Python's bind-error messages show it."""
    if sys.version_info >= (3, 13) or exc.strerror is None:
        return str(exc).lower()
    return exc.strerror.lower()


def _raise_connect_errors(errors, all_errors):
    """Raises what the stock loop raises when every connection attempt has failed."""
    try:
        if all_errors:
            raise ExceptionGroup("create_connection failed", errors)
        if len(errors) == 1:
            raise errors[0]
        if not errors:
            # Every attempt was cancelled before it failed (3.14 names this; before, IndexError).
            raise TimeoutError("create_connection failed")
        first = str(errors[0])
        if all(str(exc) == first for exc in errors):
            raise errors[0]
        raise OSError("Multiple exceptions: {}".format(", ".join(str(exc) for exc in errors)))
    finally:
        # The exception's traceback holds this frame: drop the list that holds the exception.
        errors = None


def _bind_local(sock, family, local_infos, errors):
    """Binds `sock` to the first local address of its family that accepts it; the failures
    go to `errors`. False when no address could be bound."""
    for local_family, _, _, _, local_address in local_infos:
        if local_family != family:
            continue
        try:
            sock.bind(local_address)
            return True
        except OSError as exc:
            msg = f"error while attempting to bind on address {local_address!r}: {_error_text(exc)}"
            errors.append(OSError(exc.errno, msg))
    return False


def _check_not_ssl_socket(sock):
    if _ssl is not None and isinstance(sock, _ssl.SSLSocket):
        raise TypeError("Socket cannot be of type SSLSocket")


def _check_stream_socket(sock):
    if sock.type != socket.SOCK_STREAM:
        raise ValueError(f"A Stream Socket was expected, got {sock!r}")


def _check_unix_stream_socket(sock):
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise ValueError(f"A UNIX Domain Stream Socket was expected, got {sock!r}")


def _check_ssl_only_options(ssl, ssl_handshake_timeout, ssl_shutdown_timeout):
    if ssl_handshake_timeout is not None and not ssl:
        raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
    if ssl_shutdown_timeout is not None and not ssl:
        raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")


def _server_hosts(host):
    """The hosts create_server binds to: '' means every interface, like None."""
    if host == "":
        return [None]
    if isinstance(host, str) or not isinstance(host, collections.abc.Iterable):
        return [host]
    return host


def _socket_file_of(sock):
    """(path, inode) of the file a Unix socket is bound to, or None."""
    path = sock.getsockname()
    if not is_filesystem_path(path):
        return None
    try:
        return path, os.stat(path).st_ino
    except FileNotFoundError:
        return None


class NetMixin:
    """create_connection, create_server and friends, for `ferroloop.Loop`."""

    # -- clients ---------------------------------------------------------------------------

    async def create_connection(
        self,
        protocol_factory,
        host=None,
        port=None,
        *,
        ssl=None,
        family=0,
        proto=0,
        flags=0,
        sock=None,
        local_addr=None,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        happy_eyeballs_delay=None,
        interleave=None,
        all_errors=False,
    ):
        """Connects a stream to host:port (or adopts `sock`); returns (transport, protocol)."""
        if server_hostname is not None and not ssl:
            raise ValueError("server_hostname is only meaningful with ssl")
        if server_hostname is None and ssl:
            # The certificate is checked against the host by default; '' skips the check.
            if not host:
                raise ValueError("You must set server_hostname when using ssl without a host")
            server_hostname = host
        _check_ssl_only_options(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        if sock is not None:
            _check_not_ssl_socket(sock)
        if happy_eyeballs_delay is not None and interleave is None:
            interleave = 1

        owns_sock = host is not None or port is not None
        if owns_sock:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            sock = await self._connect_any(
                host, port, family, proto, flags, local_addr, happy_eyeballs_delay, interleave, all_errors
            )
        elif sock is None:
            raise ValueError("host and port was not specified and no sock specified")
        else:
            # AF_UNIX is accepted here too, as stock does, as long as it is a stream.
            _check_stream_socket(sock)

        transport, protocol = await self._create_connection_transport(
            sock,
            protocol_factory,
            ssl,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            owns_sock=owns_sock,
        )
        if self.get_debug():
            # The socket of the transport: a TLS transport's differs from the one connected.
            logger.debug(
                "%r connected to %s:%r: (%r, %r)",
                transport.get_extra_info("socket"),
                host,
                port,
                transport,
                protocol,
            )
        return transport, protocol

    async def _connect_any(
        self, host, port, family, proto, flags, local_addr, happy_eyeballs_delay, interleave, all_errors
    ):
        """A socket connected to one of the addresses of host:port, tried in turn (or raced)."""
        infos = await resolve_address(self, (host, port), family=family, proto=proto, flags=flags)
        if not infos:
            raise OSError("getaddrinfo() returned empty list")
        local_infos = None
        if local_addr is not None:
            local_infos = await resolve_address(self, local_addr, family=family, proto=proto, flags=flags)
            if not local_infos:
                raise OSError("getaddrinfo() returned empty list")
        if interleave:
            infos = _interleave_by_family(infos, interleave)

        errors = []
        try:
            sock = None
            if happy_eyeballs_delay is None:
                for info in infos:
                    try:
                        sock = await self._connect_sock(errors, info, local_infos)
                        break
                    except OSError:
                        continue
            else:
                # Lambdas over `errors`, not partials holding it, and only the winner kept from the
                # race's result: nothing but this frame's cell refers to the list, which the
                # `finally` clears, so a failed attempt's exception does not keep it in a cycle.
                sock = (
                    await staggered.staggered_race(
                        (lambda info=info: self._connect_sock(errors, info, local_infos) for info in infos),
                        happy_eyeballs_delay,
                        loop=self,
                    )
                )[0]
            if sock is None:
                _raise_connect_errors([exc for attempt in errors for exc in attempt], all_errors)
            return sock
        finally:
            # The errors hold tracebacks, which hold this frame: break the cycle.
            errors = None

    async def _connect_sock(self, errors, addr_info, local_infos=None):
        """One connection attempt: a socket made, bound to a local address of the same
        family if any are given, and connected. Its errors go to a list appended to `errors`."""
        my_errors = []
        errors.append(my_errors)
        family, type_, proto, _, address = addr_info
        sock = None
        try:
            sock = socket.socket(family=family, type=type_, proto=proto)
            sock.setblocking(False)
            if local_infos is not None and not _bind_local(sock, family, local_infos, my_errors):
                if my_errors:
                    raise my_errors.pop()
                raise OSError(f"no matching local address with {family=} found")
            await self.sock_connect(sock, address)
            return sock
        except OSError as exc:
            my_errors.append(exc)
            if sock is not None:
                sock.close()
            raise
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        finally:
            errors = my_errors = None

    async def create_unix_connection(
        self,
        protocol_factory,
        path=None,
        *,
        ssl=None,
        sock=None,
        server_hostname=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """Connects a Unix stream socket to `path` (or adopts `sock`); returns
        (transport, protocol)."""
        assert server_hostname is None or isinstance(server_hostname, str)
        if ssl:
            if server_hostname is None:
                raise ValueError("you have to pass server_hostname when using ssl")
        else:
            if server_hostname is not None:
                raise ValueError("server_hostname is only meaningful with ssl")
            _check_ssl_only_options(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)

        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
            try:
                sock.setblocking(False)
                await self.sock_connect(sock, path)
            except BaseException:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError("no path and sock were specified")
            _check_unix_stream_socket(sock)
            sock.setblocking(False)

        return await self._create_connection_transport(
            sock,
            protocol_factory,
            ssl,
            server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            owns_sock=path is not None,
        )

    async def connect_accepted_socket(
        self,
        protocol_factory,
        sock,
        *,
        ssl=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
    ):
        """Wraps a socket accepted outside the loop in a server-side transport; returns
        (transport, protocol)."""
        _check_stream_socket(sock)
        _check_ssl_only_options(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        _check_not_ssl_socket(sock)
        transport, protocol = await self._create_connection_transport(
            sock,
            protocol_factory,
            ssl,
            "",
            server_side=True,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        if self.get_debug():
            logger.debug("%r handled: (%r, %r)", transport.get_extra_info("socket"), transport, protocol)
        return transport, protocol

    async def _create_connection_transport(
        self,
        sock,
        protocol_factory,
        ssl,
        server_hostname,
        server_side=False,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        *,
        owns_sock=False,
    ):
        """The transport of a connected socket, returned once it is connected (and, with TLS,
        once the handshake is done). A socket the loop made itself (`owns_sock`) is closed if
        no transport could be made to own it; the caller's own socket is left to the caller."""
        sock.setblocking(False)
        try:
            protocol = protocol_factory()
            waiter = self.create_future()
            if ssl:
                transport = self._make_ssl_transport(
                    sock,
                    protocol,
                    None if isinstance(ssl, bool) else ssl,
                    waiter,
                    server_side=server_side,
                    server_hostname=server_hostname,
                    ssl_handshake_timeout=ssl_handshake_timeout,
                    ssl_shutdown_timeout=ssl_shutdown_timeout,
                )
            else:
                transport = self._make_socket_transport(sock, protocol, waiter)
        except BaseException:
            if owns_sock:
                sock.close()
            raise
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return transport, protocol

    # -- servers ---------------------------------------------------------------------------

    async def create_server(
        self,
        protocol_factory,
        host=None,
        port=None,
        *,
        family=socket.AF_UNSPEC,
        flags=socket.AI_PASSIVE,
        sock=None,
        backlog=100,
        ssl=None,
        reuse_address=None,
        reuse_port=None,
        keep_alive=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        start_serving=True,
    ):
        """A TCP server listening on host:port (every address host resolves to; host may be a
        list of hosts), or on `sock`."""
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        if ssl_handshake_timeout is not None and ssl is None:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        if ssl_shutdown_timeout is not None and ssl is None:
            raise ValueError("ssl_shutdown_timeout is only meaningful with ssl")
        if sock is not None:
            _check_not_ssl_socket(sock)

        if host is not None or port is not None:
            if sock is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            if reuse_address is None:
                reuse_address = os.name == "posix" and sys.platform != "cygwin"
            infos = await tasks.gather(
                *(self._server_addrinfos(one_host, port, family, flags) for one_host in _server_hosts(host))
            )
            infos = set(itertools.chain.from_iterable(infos))
            sockets = self._bind_server_sockets(infos, reuse_address, reuse_port, keep_alive)
        elif sock is None:
            raise ValueError("Neither host/port nor sock were specified")
        else:
            _check_stream_socket(sock)
            sockets = [sock]

        for listener in sockets:
            listener.setblocking(False)
        server = Server(
            self, sockets, protocol_factory, ssl, backlog, ssl_handshake_timeout, ssl_shutdown_timeout
        )
        if start_serving:
            await server.start_serving()
        if self.get_debug():
            logger.info("%r is serving", server)
        return server

    async def _server_addrinfos(self, host, port, family, flags):
        infos = await resolve_address(self, (host, port), family=family, flags=flags)
        if not infos:
            raise OSError(f"getaddrinfo({host!r}) returned empty list")
        return infos

    def _bind_server_sockets(self, infos, reuse_address, reuse_port, keep_alive):
        """One listening socket per address; all closed again if any bind fails."""
        sockets = []
        completed = False
        try:
            for af, socktype, proto, _, address in infos:
                try:
                    sock = socket.socket(af, socktype, proto)
                except OSError:
                    # Taken for a family/type/protocol combination the host does not support.
                    if self.get_debug():
                        logger.warning(
                            "create_server() failed to create socket.socket(%r, %r, %r)",
                            af,
                            socktype,
                            proto,
                            exc_info=True,
                        )
                    continue
                sockets.append(sock)
                _set_server_options(sock, af, reuse_address, reuse_port, keep_alive)
                if not self._bind_server_socket(sock, address):
                    sockets.pop()
                    sock.close()
            if not sockets:
                raise OSError("could not bind on any address out of %r" % ([info[4] for info in infos],))
            completed = True
        finally:
            if not completed:
                for sock in sockets:
                    sock.close()
        return sockets

    def _bind_server_socket(self, sock, address):
        """Binds a server socket; False when the address is not available on this host."""
        try:
            sock.bind(address)
        except OSError as err:
            msg = "error while attempting to bind on address %r: %s" % (address, _error_text(err))
            if err.errno != errno.EADDRNOTAVAIL:
                raise OSError(err.errno, msg) from None
            # The family is not enabled on this host (bpo-30945): skip the address.
            if self.get_debug():
                logger.warning(msg)
            return False
        return True

    async def create_unix_server(
        self,
        protocol_factory,
        path=None,
        *,
        sock=None,
        backlog=100,
        ssl=None,
        ssl_handshake_timeout=None,
        ssl_shutdown_timeout=None,
        start_serving=True,
        cleanup_socket=_CLEANUP_SOCKET_DEFAULT,
    ):
        """A server listening on the Unix socket `path` (a stale socket file there is removed
        first), or on `sock`. With `cleanup_socket`, closing it removes its socket file."""
        if isinstance(ssl, bool):
            raise TypeError("ssl argument must be an SSLContext or None")
        _check_ssl_only_options(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)

        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            sock = _bind_unix_socket(os.fspath(path))
        elif sock is None:
            raise ValueError("path was not specified, and no sock specified")
        else:
            _check_unix_stream_socket(sock)

        unix_files = {}
        if cleanup_socket:
            socket_file = _socket_file_of(sock)
            if socket_file is not None:
                unix_files[sock] = socket_file

        sock.setblocking(False)
        server = Server(
            self,
            [sock],
            protocol_factory,
            ssl,
            backlog,
            ssl_handshake_timeout,
            ssl_shutdown_timeout,
            unix_files=unix_files,
        )
        if start_serving:
            await server.start_serving()
        return server


def _set_server_options(sock, family, reuse_address, reuse_port, keep_alive):
    if reuse_address:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, True)
    if reuse_port:
        set_reuse_port(sock)
    if keep_alive:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, True)
    if HAS_IPV6 and family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
        # Linux lets an IPv6 socket take IPv4 connections too; the IPv4 address has its own.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)


def _bind_unix_socket(path):
    """A Unix stream socket bound to `path`, after removing a stale socket file there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if is_filesystem_path(path):
        remove_stale_socket_file(path)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OSError(errno.EADDRINUSE, f"Address {path!r} is already in use") from None
        raise
    except BaseException:
        sock.close()
        raise
    return sock
