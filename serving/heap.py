"""Heap pages freed by a burst given back to the system.

A burst of large requests (a thousand 40 kB documents at once, refused or
not) needs their bytes all at the same time; once answered they are freed,
but glibc's allocator keeps most of the freed pages in its heaps, between
chunks still in use, so the process's resident memory stays at the peak.
`malloc_trim(0)` hands every whole free page back (since glibc 2.8, from
the middle of a heap too). This calls it now and then, only when the
process's allocator is glibc's; elsewhere it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[], None] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def run() -> None:
        trim(0)

    return run


async def give_back_freed_memory(interval: float) -> None:
    """Every `interval` seconds, until cancelled."""
    trim = _malloc_trim()
    if trim is None:
        log.debug("no malloc_trim here: freed heap pages stay with the process")
        return
    while True:
        await asyncio.sleep(interval)
        trim()
