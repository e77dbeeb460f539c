"""Process-wide CPU settings: the memory allocator, and oneMKL's vector math resolved before threads use it.

glibc serves every allocation above a threshold (dynamic, at most 32 MiB) with its own ``mmap`` and gives it
back with ``munmap`` when freed; smaller freed memory at the top of the heap is given back too (``trim``).
A training step allocates and frees the same large activations every step (an LSTM's gates on a
Hanoi batch: 8 x 2,926 tokens x 4 x 96 floats, about 36 MB), so each step the kernel hands out fresh zeroed
pages and takes a page fault for every 4 KiB touched. On the 2-core CPU this was 28% of an iterative-Hanoi
run's CPU time, in the kernel (``bench/malloc.py`` measures it). `keep_freed_memory` tells glibc to
serve everything from the heap and keep what is freed, so the next step reuses the same pages: the
process's peak memory stays resident (a few hundred MB more for that run) in exchange.

The CLI calls it once at start-up, and `toolssm.sweep` passes it on to the worker processes it spawns
(``--jobs`` > 1); a sweep's record says which allocator its run had (``malloc``). It does nothing off glibc, or when the environment already chooses
(``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``, an ``LD_PRELOAD``ed allocator such as jemalloc), or with
``TOOLSSM_MALLOC=system``.

`resolve_vector_math` works around a race in oneMKL 2024.2, the version torch's CPU wheels bundle
(pytorch/pytorch#188792). ATen computes float32/float64 ``exp``, ``log``, ``sin``, ``tanh``, ``sqrt``, ... with
oneMKL's vector math (VML), each intra-op thread on its own chunk. oneMKL picks each function's kernel lazily, at
its first call. When that first call runs on two threads at once, one thread can run a low-accuracy kernel for
its whole chunk, despite the high accuracy torch asks for. Only that one call is wrong: here a Mamba block's
``exp`` was off by up to 1.1e-4 on half its elements, the first step in a fresh 2-thread process when the other
core was busy, in about 1 process in 17 (``bench/vml_race.py``). Calling every such function once, on one
thread, on one element of each dtype, settles the choice before any thread races for it. ``toolssm.models``
does it when imported; it takes about 5 ms, once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_ENV_CHOICES = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")

# the torch functions whose float kernels call oneMKL's vector math (ATen's cpu/vml.h), and a few neighbours;
# calling one that does not is harmless
VML_FUNCTIONS = (
    "abs", "acos", "asin", "atan", "cos", "cosh", "erf", "erfc", "erfinv", "exp", "expm1", "log", "log10",
    "log1p", "log2", "sin", "sinh", "sqrt", "tan", "tanh", "trunc",
)  # fmt: skip


_kept = False  # keep_freed_memory has taken effect in this process


def freed_memory_kept() -> bool:
    """True once `keep_freed_memory` has taken effect in this process."""
    return _kept


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the kernel; True if it did."""
    global _kept
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
    ok = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    _kept = _kept or ok
    return ok


def resolve_vector_math() -> bool:
    """Call each of torch's oneMKL vector-math functions once, on this thread, on one float32 and one float64
    element, so oneMKL has chosen their kernels before two threads first call one at once; True if it ran
    (torch built with MKL)."""
    import torch

    if not torch.backends.mkl.is_available():
        return False
    for dtype in (torch.float32, torch.float64):
        x = torch.full((1,), 0.5, dtype=dtype)  # one element: under ATen's grain, so it runs on this thread
        for name in VML_FUNCTIONS:
            getattr(torch, name)(x)
    return True
