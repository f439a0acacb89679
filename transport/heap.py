"""Heap pages freed after a burst given back to the system.

A burst of large requests (a thousand 40 kB documents at once, refused or
not) needs their bytes all at the same time; once answered they are freed,
but glibc's allocator keeps most of the freed pages in its heap, between
chunks still in use, so the process's resident memory stays at the peak.
`malloc_trim(0)` hands every whole free page back (since glibc 2.8, from
the middle of the heap too).

It walks the whole heap (some 10 ms for 700 MB, the event loop waiting), so
it runs only around growth: when the resident memory, looked at every
`interval` seconds, has grown by `_GROWTH` since the last trim, and at the
`_TRAILING` looks after that (a burst's memory is freed when it ends).
Never while memory holds steady. Only where the allocator is glibc's and
/proc tells the resident size; elsewhere this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

_GROWTH = 16 * 1024 * 1024  # bytes of resident memory gained before a trim
_TRAILING = 3  # trims after the last growth seen
_STATM = Path("/proc/self/statm")


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


def _resident() -> int:
    """Resident bytes (procfs answers from memory: no wait on a disk)."""
    return int(_STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _can_trim() -> Callable[[], None] | None:
    trim = _malloc_trim()
    try:
        _resident()
    except (OSError, ValueError, IndexError):
        return None
    return trim


async def give_back_freed_memory(interval: float) -> None:
    """Look every `interval` seconds, until cancelled."""
    trim = _can_trim()
    if trim is None:
        log.debug("no malloc_trim here: freed heap pages stay with the process")
        return
    baseline = _resident()
    trailing = 0
    while True:
        await asyncio.sleep(interval)
        current = _resident()
        if current > baseline + _GROWTH:
            # Grown: what grew it is freed when it ends, which the resident
            # size does not show; trim now and at the next few looks.
            trailing = _TRAILING
        if trailing:
            trailing -= 1
            trim()
            current = _resident()
            baseline = current
        baseline = min(baseline, current)
