"""Keep freed memory in the process for reuse, instead of handing it back to the OS at every free.

glibc's malloc serves blocks over its mmap threshold (128 KiB at start; it adapts) with fresh
`mmap`s and trims the heap top above 128 KiB: a training step's tensors (a batch of 32 windows ×
144 steps × 40 units is 737 KiB) then come back as new pages every step, each page faulted in
and zeroed by the kernel. Measured here (M4 sizes, bare LSTM forward + backward + Adam, 2 threads,
four interleaved pairs of fresh processes): 2,400-4,000 page faults and 10.4-13.3 ms a step with
glibc's defaults; none and 6.6-7.5 ms with the two thresholds below. A long-lived process may
drift into either state: glibc's adaptive threshold ends wherever its earlier frees left it.

The cost is resident memory: up to `TRIM_THRESHOLD_BYTES` of freed heap stays mapped. Set
`SHADOWCAST_MALLOC_TUNING=0` to leave malloc as it is (or preload jemalloc/tcmalloc instead).
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
MMAP_THRESHOLD_BYTES = 32 << 20  # the largest glibc accepts on 64-bit (4 MiB × sizeof(long))
TRIM_THRESHOLD_BYTES = 128 << 20
ENV_SWITCH = "SHADOWCAST_MALLOC_TUNING"

_applied = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for the whole process (once; later calls are free).
    Returns whether they are set: False off Linux/glibc, or when switched off by the environment."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux") or os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # glibc returns 1 on success; musl's mallopt is a stub returning 0.
    _applied = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    return _applied
