"""Pausing and resuming reading for the transports written in Python (the datagram transport
and a pipe's read end), as the stock transports do it.

A transport using `ReadPausing` has `_loop`, `_closing` and `_paused`, and two methods:
`_watch_reads()` registers its reader and `_unwatch_reads()` removes it. Pausing a transport
that is closing or already paused does nothing, and so does resuming one that is closing or not
paused; in debug mode each change is logged, as stock does.
"""

from asyncio.log import logger


class ReadPausing:
    def is_reading(self):
        return not self._paused and not self._closing

    def pause_reading(self):
        if not self.is_reading():
            return
        self._paused = True
        self._unwatch_reads()
        if self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self):
        if self._closing or not self._paused:
            return
        self._paused = False
        self._watch_reads()
        if self._loop.get_debug():
            logger.debug("%r resumes reading", self)
