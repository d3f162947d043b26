"""Pausing and resuming reading for the transports written in Python (the datagram transport
and a pipe's read end), as the stock transports do it.

A transport using `ReadPausing` has `_loop`, `_closing`, `_paused`, `_read_ready()` and the
Context its callbacks run in (`_context`, see `_in_context.py`), and says which fd its reads come
from and which object owns it (`_read_source()`). Reading starts
once `connection_made` has run (`_start_reading`, scheduled by the transport), unless the
transport was paused or closed since; `_read_polling` says whether its reader is registered.
Pausing a transport that is closing or already paused does nothing, and so does resuming one that
is closing or not paused; in debug mode each change is logged, as stock does.
"""

from asyncio.log import logger


class ReadPausing:
    _read_polling = False

    def _start_reading(self):
        if self.is_reading():
            self._watch_reads()

    def _watch_reads(self):
        fd, owner = self._read_source()
        self._loop._add_reader(fd, self._read_ready, owner=owner, context=self._context)
        self._read_polling = True

    def _unwatch_reads(self):
        fd, owner = self._read_source()
        self._read_polling = False
        self._loop._remove_reader(fd, owner=owner)

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
