"""Process-wide CPU settings: the memory allocator.

glibc serves every allocation above a threshold (dynamic, at most 32 MiB) with its own ``mmap`` and gives it
back with ``munmap`` when freed; smaller freed memory at the top of the heap is given back too (``trim``).
A training step allocates and frees the same large activations every step (an LSTM's gates on a
Hanoi batch: 8 x 2,926 tokens x 4 x 96 floats, about 36 MB), so each step the kernel hands out fresh zeroed
pages and takes a page fault for every 4 KiB touched. On the 2-core CPU this was 28% of an iterative-Hanoi
run's CPU time, in the kernel (``bench/malloc.py`` measures it). `keep_freed_memory` tells glibc to
serve everything from the heap and keep what is freed, so the next step reuses the same pages: the
process's peak memory stays resident (a few hundred MB more for that run) in exchange.

The CLI calls it once at start-up. It does nothing off glibc, or when the environment already chooses
(``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``, an ``LD_PRELOAD``ed allocator such as jemalloc), or with
``TOOLSSM_MALLOC=system``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_ENV_CHOICES = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the kernel; True if it did."""
    if not sys.platform.startswith("linux") or os.environ.get("TOOLSSM_MALLOC") == "system":
        return False
    if any(os.environ.get(k) for k in _ENV_CHOICES):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # both return 1 on success; a trim threshold of 2 GiB - 1 (the largest int) keeps every freed page
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
