"""Keeping the C heap from holding memory the gateway has given back.

glibc's malloc gives each thread its own arena and raises its mmap threshold each
time a large block is freed, so large transient blocks (reads of the store in the
worker threads, hashing, request bodies) end up in arenas that are not returned to
the system: on a 512 MiB task, RSS then grows by tens of MiB beyond what the
gateway actually holds. A fixed mmap threshold returns every block of 128 KiB or
more at once, and two arenas bound the rest.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def tune(mmap_threshold: int = 128 * 1024, arena_max: int = 2) -> bool:
    """Apply the settings above to this process's glibc malloc; False where there is no glibc.

    Call before worker threads start (arenas already made are kept)."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_ARENA_MAX, arena_max))
    if not ok:
        log.warning("could not tune the C allocator")
    return ok
