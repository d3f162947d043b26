"""Helpers the test modules share."""

import asyncio
import os

# How long a test's awaitable may take before it counts as hung: generous, so that a busy 2-core
# machine never fails a test by slowness; a test still fails rather than stalls the run.
TIMEOUT = 60.0


def run(loop, awaitable, timeout=TIMEOUT):
    """Runs `awaitable` to completion on `loop`, failing with TimeoutError past `timeout`."""
    return loop.run_until_complete(asyncio.wait_for(awaitable, timeout))


def fd_count():
    """How many fds this process has open now."""
    return len(os.listdir("/proc/self/fd"))
