"""The soak harness's process plumbing: children that answer SIGUSR1 with a JSON line, what
/proc says of a process, and the load generator's slices. Every child is started in its own
session, so a Ctrl-C reaches the harness alone, which then stops them (SIGTERM, then SIGKILL).
"""

import json
import os
import queue
import signal
import statistics
import subprocess
import threading
from pathlib import Path

ANSWER_TIMEOUT = 15.0  # seconds a child has to answer a SIGUSR1


class Child:
    """A child process whose stdout lines a thread puts in a queue."""

    def __init__(self, args, stderr=subprocess.DEVNULL):
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
            text=True, start_new_session=True,
        )
        self.lines = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def line(self, timeout):
        """The next stdout line, or None if the child ended or said nothing within `timeout`."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def ask(self):
        """Sends SIGUSR1 and returns the JSON line it answers, or None."""
        if self.proc.poll() is not None:
            return None
        self.proc.send_signal(signal.SIGUSR1)
        line = self.line(ANSWER_TIMEOUT)
        return json.loads(line) if line else None

    def stop(self, timeout=5.0):
        """SIGTERM, then SIGKILL after `timeout`; closes the pipe; returns the lines not read
        yet. Safe to call twice."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(2)
        self.proc.stdout.close()
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        return [line for line in rest if line]


def fd_targets(pid):
    """What each open fd of `pid` points to (socket:[inode], pipe:[inode], anon_inode:...)."""
    return sorted(os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def proc_figures(pid):
    """The process's open fds and RSS, or None if it is gone."""
    try:
        return {"fds": fd_count(pid), "rss_mib": rss_mib(pid)}
    except FileNotFoundError:
        return None


class RssPoller:
    """Reads a process's RSS every POLL seconds in a thread; `take()` returns the median, the
    lowest and the highest reading since the last take."""

    POLL = 0.5

    def __init__(self, pid):
        self.pid, self.readings, self.done = pid, [], threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self):
        while not self.done.wait(self.POLL):
            figures = proc_figures(self.pid)
            if figures is None:
                return
            self.readings.append(figures["rss_mib"])

    def take(self):
        readings, self.readings = self.readings, []
        if not readings:
            return {}
        median = statistics.median(readings)
        return {"rss_mib": median, "rss_min_mib": min(readings), "rss_max_mib": max(readings)}

    def stop(self):
        self.done.set()
        self.thread.join()


def start_slices(loadgen, loads, ports, seconds):
    """One loadgen per load stream (`loads`: name -> (server, arguments)); each measures
    `seconds` after its warm-up second."""
    slices = {}
    for name, (server, template) in loads.items():
        args = [a.format(addr=f"127.0.0.1:{ports[server]}") for a in template]
        slices[name] = subprocess.Popen(
            [str(loadgen), *args, str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True,
        )
    return slices


def finish_slices(slices, timeout):
    """name -> requests per second, and name -> error message for those that failed."""
    rps, errors = {}, {}
    for name, proc in slices.items():
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err = f"no answer within {timeout:.0f} s"
        if proc.returncode == 0:
            rps[name] = json.loads(out)["rps"]
        else:
            errors[name] = err.strip() or f"exit status {proc.returncode}"
    return rps, errors


def stop_slices(slices):
    """Kills what is left of the slices and closes their pipes."""
    for proc in slices.values():
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
