"""`loop.subprocess_exec` / `loop.subprocess_shell`, with the stock Unix loop's semantics.

The process transport is the standard library's `asyncio.base_subprocess.BaseSubprocessTransport`
(the stock Unix loop builds on it too): it starts the child with `subprocess.Popen`, connects its
stdin/stdout/stderr pipes through the loop's `connect_write_pipe`/`connect_read_pipe`, queues
the protocol's calls until all pipes are connected, and calls `connection_lost` once the child
has exited and every pipe is closed. So each Python version keeps its own details (3.13 signals
the child with `os.kill`, for one). What this module adds is the start of the child and the
waiting for its exit.

Waiting for the child, as the running Python's stock loop does. From 3.14 on the stock loop
owns a child watcher (`loop._watcher`): `unix_events._PidfdChildWatcher` where pidfds work, else
`_ThreadedChildWatcher`, whose thread waits without reaping (`waitid(WNOWAIT)`) and leaves the
reaping to the loop's thread. Either way the child is reaped and its exit published to the
transport in one callback, so no signal can ever be sent to a reaped (and possibly recycled)
pid. ferroloop uses those very classes there.

Before 3.14 the loop waits itself, without a thread or a SIGCHLD handler where it can: on Linux,
`os.pidfd_open(pid)` gives an fd that becomes readable when the child exits; the loop watches it
like any other fd, and the child is then reaped with `waitpid`, which does not block by then.
Where pidfds are missing (not Linux, a kernel before 5.3, or a seccomp policy refusing them) a
daemon thread per child blocks in `waitpid` instead. The transport hears of the exit as late as
the stock loop's watchers told it: one iteration after the reaping on 3.12 and 3.13, two on 3.11;
data read from the pipes meanwhile reaches the protocol first. The return code is negative for a
child killed by a signal.

If the child was reaped elsewhere (`Popen.poll()` called by the transport's `close`, or by
`send_signal` before 3.13, takes the status for itself), `waitpid` fails: Popen's return code
is used when it has one, and otherwise the stock warning is logged and 255 reported.

A child still running when the loop is closed is no longer watched; its pidfd is closed with
its transport.
"""

import os
import subprocess
import sys
import threading
import warnings
from asyncio import base_subprocess, tasks, unix_events
from asyncio.log import logger

# The loop owns a stock child watcher from 3.14 on (see the module docstring).
STOCK_WATCHERS = sys.version_info >= (3, 14)
# Before: how many loop iterations after the reaping the transport hears of the exit.
_EXIT_HOPS = 1 if sys.version_info >= (3, 12) else 2

__all__ = ("SubprocessMixin", "SubprocessTransport")


def _exit_code(status):
    """A wait status as a return code (negative signal number for a killed child)."""
    try:
        return os.waitstatus_to_exitcode(status)
    except ValueError:
        # A status Python does not understand: reported raw, which may help debugging.
        return status


def _format_pipe(fd):
    if fd == subprocess.PIPE:
        return "<pipe>"
    if fd == subprocess.STDOUT:
        return "<stdout>"
    return repr(fd)


def _check_popen_arguments(universal_newlines, shell, shell_wanted, bufsize, text, encoding, errors):
    """The stock refusals, in the stock order: the transport works on unbuffered bytes, and
    `shell` must match the method called."""
    if universal_newlines:
        raise ValueError("universal_newlines must be False")
    if bool(shell) != shell_wanted:
        raise ValueError(f"shell must be {shell_wanted}")
    if bufsize != 0:
        raise ValueError("bufsize must be 0")
    if text:
        raise ValueError("text must be False")
    if encoding is not None:
        raise ValueError("encoding must be None")
    if errors is not None:
        raise ValueError("errors must be None")


class SubprocessMixin:
    """`subprocess_exec`, `subprocess_shell` and the factory of their transport."""

    async def subprocess_shell(
        self,
        protocol_factory,
        cmd,
        *,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=False,
        shell=True,
        bufsize=0,
        encoding=None,
        errors=None,
        text=None,
        **kwargs,
    ):
        """Runs `cmd` through the shell; returns (transport, protocol)."""
        if not isinstance(cmd, (bytes, str)):
            raise ValueError("cmd must be a string")
        _check_popen_arguments(universal_newlines, shell, True, bufsize, text, encoding, errors)
        protocol = protocol_factory()
        # Only the command is logged, not its arguments: they may hold secrets, or be long.
        debug_log = f"run shell command {cmd!r}" if self.get_debug() else None
        return await self._start_subprocess(
            protocol, debug_log, cmd, True, stdin, stdout, stderr, bufsize, kwargs
        )

    async def subprocess_exec(
        self,
        protocol_factory,
        program,
        *args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=False,
        shell=False,
        bufsize=0,
        encoding=None,
        errors=None,
        text=None,
        **kwargs,
    ):
        """Runs `program` with `args`, without a shell; returns (transport, protocol)."""
        _check_popen_arguments(universal_newlines, shell, False, bufsize, text, encoding, errors)
        popen_args = (program, *args)
        protocol = protocol_factory()
        debug_log = f"execute program {program!r}" if self.get_debug() else None
        return await self._start_subprocess(
            protocol, debug_log, popen_args, False, stdin, stdout, stderr, bufsize, kwargs
        )

    async def _start_subprocess(
        self, protocol, debug_log, args, shell, stdin, stdout, stderr, bufsize, kwargs
    ):
        if debug_log is not None:
            self._log_subprocess(debug_log, stdin, stdout, stderr)
        transport = await self._make_subprocess_transport(
            protocol, args, shell, stdin, stdout, stderr, bufsize, **kwargs
        )
        if debug_log is not None:
            logger.info("%s: %r", debug_log, transport)
        return transport, protocol

    @staticmethod
    def _log_subprocess(msg, stdin, stdout, stderr):
        info = [msg]
        if stdin is not None:
            info.append(f"stdin={_format_pipe(stdin)}")
        if stdout is not None and stderr == subprocess.STDOUT:
            info.append(f"stdout=stderr={_format_pipe(stdout)}")
        else:
            if stdout is not None:
                info.append(f"stdout={_format_pipe(stdout)}")
            if stderr is not None:
                info.append(f"stderr={_format_pipe(stderr)}")
        logger.debug(" ".join(info))

    async def _make_subprocess_transport(
        self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra=None, **kwargs
    ):
        """Starts the child and returns its transport once its pipes are connected. If that
        fails (or is cancelled), the child is killed and reaped before the error propagates."""
        waiter = self.create_future()
        transport = SubprocessTransport(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize,
            waiter=waiter, extra=extra, **kwargs,
        )
        if STOCK_WATCHERS:
            self._watcher.add_child_handler(transport.get_pid(), self._child_watcher_callback, transport)
        else:
            transport._watch_child()
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transport.close()
            if STOCK_WATCHERS:
                # As 3.14: a cancellation of this call does not leave the child unreaped.
                await tasks.shield(transport._wait())
            else:
                await transport._wait()
            raise
        return transport

    if STOCK_WATCHERS:

        def _child_watcher_callback(self, pid, returncode, transport):
            """The watcher's report: reaped and published in one step (see the module doc)."""
            transport._process_exited(returncode)


class _Watcher:
    """`loop._watcher` (3.14+): the stock watcher, made at first use, as the stock loop makes
    one in its constructor (the choice follows `unix_events.can_use_pidfd()` then)."""

    def __get__(self, loop, owner=None):
        if loop is None:
            return self
        if unix_events.can_use_pidfd():
            watcher = unix_events._PidfdChildWatcher()
        else:
            watcher = unix_events._ThreadedChildWatcher()
        vars(loop)["_watcher"] = watcher
        return watcher


if STOCK_WATCHERS:
    SubprocessMixin._watcher = _Watcher()


class SubprocessTransport(base_subprocess.BaseSubprocessTransport):
    """The transport of a child process; see the module docstring."""

    # Read by __del__, which also runs when the constructor failed.
    _pidfd = None

    def _start(self, args, shell, stdin, stdout, stderr, bufsize, **kwargs):
        self._proc = subprocess.Popen(
            args,
            shell=shell,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            universal_newlines=False,
            bufsize=bufsize,
            **kwargs,
        )

    def _watch_child(self):
        """Starts waiting for the child's exit: through a pidfd, or else a thread."""
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                self._pidfd = pidfd_open(self._pid)
            except OSError:
                pass
            else:
                self._loop._add_reader(self._pidfd, self._pidfd_readable)
                return
        self._start_wait_thread()

    def _pidfd_readable(self):
        loop = self._loop
        loop._remove_reader(self._pidfd)
        returncode = self._reap()
        self._close_pidfd()
        self._report_exit(loop, returncode)

    def _start_wait_thread(self):
        loop = self._loop
        pid = self._pid

        def wait():
            returncode = self._reap()
            if loop.get_debug():
                logger.debug("process %s exited with returncode %s", pid, returncode)
            try:
                self._report_exit(loop, returncode)
            except RuntimeError:
                logger.warning("Loop %r that handles pid %r is closed", loop, pid)

        threading.Thread(target=wait, name=f"ferroloop-waitpid-{pid}", daemon=True).start()

    def _reap(self):
        """The child's return code, from `waitpid` (which has the child exited by now)."""
        pid = self._pid
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            proc = self._proc
            if proc is not None and proc.returncode is not None:
                return proc.returncode
            logger.warning(
                "child process pid %d exit status already read:  will report returncode 255", pid
            )
            return 255
        return _exit_code(status)

    def _report_exit(self, loop, returncode):
        """Tells the transport, as many iterations later as the stock loop of this Python (see
        the module docstring). Raises RuntimeError if the loop is closed."""
        if _EXIT_HOPS == 1:
            loop.call_soon_threadsafe(self._process_exited, returncode)
        else:
            loop.call_soon_threadsafe(loop.call_soon, self._process_exited, returncode)

    def _close_pidfd(self):
        pidfd = self._pidfd
        if pidfd is not None:
            self._pidfd = None
            os.close(pidfd)

    def __del__(self, _warn=warnings.warn):
        super().__del__(_warn)
        self._close_pidfd()
