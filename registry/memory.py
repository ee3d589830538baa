"""How the server process uses memory: fewer cycle collections while serving, and freed memory
handed back to the system after the few operations that touch the whole inventory at once."""

from __future__ import annotations

import ctypes
import gc


def tune_garbage_collector() -> None:
    """Fewer and cheaper cycle collections while serving: the default thresholds (a young collection
    every 700 allocations) cost real throughput with many connections open (bench/RESULTS.md), so
    start-up objects (modules, schemas) move to the permanent generation, and young collections
    wait for 10 000 allocations."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def _glibc():
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter runs on
        libc.mallopt, libc.malloc_trim  # noqa: B018 (only glibc has both)
        return libc
    except (OSError, AttributeError, TypeError):  # musl, macOS, Windows: their allocators are left as they are
        return None


_libc = _glibc()
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt() parameters, from glibc's malloc.h


def return_large_blocks_promptly() -> None:
    """Keep glibc from holding on to freed multi-MB buffers: by default it raises its mmap threshold
    to the size of the largest block freed, so after one large backup document the next ones come
    from the heap and stay mapped when freed. Fixed thresholds (which also turn that adjustment
    off): blocks of 256 KiB and more get their own mapping, returned to the system when freed."""
    if _libc is not None:
        _libc.mallopt(_M_MMAP_THRESHOLD, 256 * 1024)
        _libc.mallopt(_M_TRIM_THRESHOLD, 1024 * 1024)


def release_freed_memory() -> None:
    """Give the C heap's free pages back to the system after an operation that touched the whole
    inventory at once (restoring allocates many small objects for a moment, and glibc keeps their
    pages mapped after they are freed until malloc_trim returns them). glibc only."""
    if _libc is not None:
        _libc.malloc_trim(0)
