"""The Server object returned by `create_server` and `create_unix_server`, with its accept loop.

Why not the stdlib's: the stock `base_events.Server` starts serving through the selector loop's
`_start_serving`, and differs between versions; this one accepts through the loop's Rust
registrations, in batches (faster under load), with the newest semantics on every version.

Semantics are the stock `base_events.Server` of the newest Python here (3.13), on every Python:

- The server knows its connections. Each transport it creates calls `_attach(transport)` when it
  is made and `_detach(transport)` after its `connection_lost`. They are kept in a WeakSet, as
  stock does, so that a transport the user drops is still collected (and warns that it was not
  closed) instead of being kept alive by its server. `close_clients` and `abort_clients` walk a
  copy of the set, because closing detaches.
- `wait_closed` returns once the server is closed *and* its last connection has ended, whichever
  comes first (3.12.1's fix: 3.11 returns at once when called after `close()`, with connections
  still open). `_wakeup` releases the waiters and sets `_waiters` to None, which records that
  both conditions hold, so later calls return at once.
- One readiness event of a listening socket accepts up to `backlog` connections: accepting a
  single one per event loop iteration falls behind under load (bpo-27906).
- Running out of file descriptors or kernel memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) is reported
  to the exception handler, and the listening socket leaves the poller for ACCEPT_RETRY_DELAY
  seconds: the kernel keeps reporting it readable, so staying registered would spin the loop.
  Stock goes on looping up to `backlog` times after such an error, reporting it and scheduling a
  retry each time; here the first one ends the round. A retry due after the server was closed is
  dropped. Any other error of `accept()` escapes the reader callback, where the loop reports it.
- Each accepted socket gets its transport in a task of its own, so that a TLS handshake never
  holds up the accept loop. Failures there are reported only in debug mode, as stock does; the
  accepted socket is closed if no transport was made to own it.
- A Unix server bound to a filesystem path removes its socket file when closed (3.13's
  `cleanup_socket`), but only if the file still has the inode it was bound to: another server may
  have taken the path over since.
- `start_serving()` on a closed server raises the RuntimeError serve_forever() raises there;
  stock fails with a TypeError from iterating over its dropped socket list.
"""

import errno
import os
import weakref
from asyncio import constants, events, exceptions, tasks, trsock
from asyncio.log import logger

__all__ = ("Server",)

# accept() errors that mean "try again later", not "this listening socket is broken".
_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


class Server(events.AbstractServer):
    """Listening sockets, the connections accepted on them, and the means to stop both."""

    def __init__(
        self,
        loop,
        sockets,
        protocol_factory,
        ssl_context,
        backlog,
        ssl_handshake_timeout,
        ssl_shutdown_timeout=None,
        unix_files=None,
    ):
        self._loop = loop
        self._sockets = sockets
        self._clients = weakref.WeakSet()
        self._waiters = []
        self._protocol_factory = protocol_factory
        self._ssl_context = ssl_context
        self._backlog = backlog
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        # listening socket -> (path, inode) of the socket file to remove when it is closed
        self._unix_files = dict(unix_files or {})
        self._serving = False
        self._serving_forever_fut = None

    def __repr__(self):
        return f"<{type(self).__name__} sockets={self.sockets!r}>"

    # -- connections -----------------------------------------------------------------------

    def _attach(self, transport):
        """Called by a transport made for this server, when it is made."""
        self._clients.add(transport)

    def _detach(self, transport):
        """Called by a transport made for this server, after its `connection_lost`."""
        self._clients.discard(transport)
        if not self._clients and self._sockets is None:
            self._wakeup()

    def _wakeup(self):
        waiters = self._waiters
        if waiters is None:
            return
        self._waiters = None
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def close_clients(self):
        """Closes every connection of this server (their buffered data is sent first)."""
        for transport in self._clients.copy():
            transport.close()

    def abort_clients(self):
        """Closes every connection of this server at once, dropping buffered data."""
        for transport in self._clients.copy():
            transport.abort()

    # -- serving ---------------------------------------------------------------------------

    def get_loop(self):
        return self._loop

    def is_serving(self):
        return self._serving

    @property
    def sockets(self):
        if self._sockets is None:
            return ()
        return tuple(trsock.TransportSocket(sock) for sock in self._sockets)

    def _start_serving(self):
        if self._serving:
            return
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._serving = True
        for sock in self._sockets:
            sock.listen(self._backlog)
            self._watch(sock)

    async def start_serving(self):
        """Starts accepting connections; does nothing if it already does."""
        self._start_serving()
        # One loop iteration, so that the listening sockets are registered when this returns.
        await tasks.sleep(0)

    async def serve_forever(self):
        """Accepts connections until cancelled; the server is then closed and waited for."""
        if self._serving_forever_fut is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._sockets is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except exceptions.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    def close(self):
        """Stops listening and closes the listening sockets; connections stay open."""
        sockets = self._sockets
        if sockets is None:
            return
        self._sockets = None
        for sock in sockets:
            self._stop_listening(sock)
        self._serving = False
        forever = self._serving_forever_fut
        if forever is not None and not forever.done():
            forever.cancel()
            self._serving_forever_fut = None
        if not self._clients:
            self._wakeup()

    async def wait_closed(self):
        """Waits until the server is closed and every connection it accepted has ended."""
        if self._waiters is None:
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter

    # -- the accept loop -------------------------------------------------------------------

    def _watch(self, sock):
        # Registered as the socket's (`src/owner`): closing it drops the reader first.
        self._loop._add_reader(sock.fileno(), self._accept_ready, sock, owner=sock)

    def _unwatch(self, sock):
        fd = sock.fileno()
        if fd >= 0:  # -1: closed by its owner, which dropped the reader then
            self._loop._remove_reader(fd, owner=sock)

    def _stop_listening(self, sock):
        self._unwatch(sock)
        unix_file = self._unix_files.pop(sock, None)
        sock.close()
        if unix_file is not None:
            _remove_socket_file(*unix_file)

    def _accept_ready(self, sock):
        """Reader callback of a listening socket: accepts what is waiting, up to `backlog`."""
        loop = self._loop
        for _ in range(self._backlog):
            try:
                conn, address = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                self._pause_accepting(sock, exc)
                return
            if loop.get_debug():
                logger.debug("%r got a new connection from %r: %r", self, address, conn)
            conn.setblocking(False)
            loop.create_task(self._accept_connection(conn, {"peername": address}))

    def _pause_accepting(self, sock, exc):
        self._loop.call_exception_handler(
            {
                "message": "socket.accept() out of system resource",
                "exception": exc,
                "socket": trsock.TransportSocket(sock),
            }
        )
        self._unwatch(sock)
        self._loop.call_later(constants.ACCEPT_RETRY_DELAY, self._resume_accepting, sock)

    def _resume_accepting(self, sock):
        if self._sockets is not None and sock in self._sockets:
            self._watch(sock)

    async def _accept_connection(self, conn, extra):
        """Makes the transport of an accepted socket and waits for it to be connected."""
        loop = self._loop
        protocol = None
        transport = None
        try:
            protocol = self._protocol_factory()
            waiter = loop.create_future()
            transport = self._make_transport(conn, protocol, waiter, extra)
            try:
                await waiter
            except BaseException:
                transport.close()
                # The exception in the waiter may reference the protocol: drop the cycle now.
                waiter = None
                raise
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if transport is None:
                conn.close()
            if loop.get_debug():
                context = {
                    "message": "Error on transport creation for incoming connection",
                    "exception": exc,
                }
                if protocol is not None:
                    context["protocol"] = protocol
                if transport is not None:
                    context["transport"] = transport
                loop.call_exception_handler(context)

    def _make_transport(self, conn, protocol, waiter, extra):
        loop = self._loop
        if self._ssl_context:
            return loop._make_ssl_transport(
                conn,
                protocol,
                self._ssl_context,
                waiter,
                server_side=True,
                server_hostname=None,
                extra=extra,
                server=self,
                ssl_handshake_timeout=self._ssl_handshake_timeout,
                ssl_shutdown_timeout=self._ssl_shutdown_timeout,
            )
        return loop._make_socket_transport(conn, protocol, waiter, extra=extra, server=self)


def _remove_socket_file(path, inode):
    """Removes the socket file a Unix server was bound to, if it is still that file."""
    try:
        if os.stat(path).st_ino == inode:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        logger.error("Unable to clean up listening UNIX socket %r: %r", path, err)
