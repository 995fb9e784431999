"""Memory for tensors: kept by the C allocator between forwards, not handed back each time.

PyTorch's CPU allocator caches nothing: every forward allocates its activations through
the C library's ``malloc`` and frees them again (a batch of 8 CIFAR rows through ResNet-20
takes 512 KiB per activation). glibc serves a block above its *mmap threshold* (128 KiB at
start) with a fresh mapping and unmaps it when it is freed, raising the threshold to that
block's size only afterwards, and hands freed memory at the top of its heap back to the
system above its *trim threshold*. Either way the pages of the next forward are faulted in
anew, on every forward. Measured here (one AMD EPYC core, one torch thread, the frozen
CIFAR ResNet-20, batches in turn): with glibc's defaults 0.58 ms a row in batches of 6,
0.66 in batches of 8, 0.93 in batches of 16; with both thresholds fixed, 0.58, 0.55 and
0.51. Two single-threaded processes at once: 3,486 rows/s at best with the defaults (at 6
rows), 4,158 with the thresholds fixed (at 16 rows).

``keep_freed_memory`` fixes them (``mallopt``): blocks of up to ``MMAP_THRESHOLD`` come
from the heap, and up to ``TRIM_THRESHOLD`` freed at its top stay there for the next
forward. Every process that runs a model calls it first: a serving process before it loads
its models (``service.inference.pool``), a robustness-check job process
(``service.jobs.worker``), ``python -m robustness`` and ``python -m training train``, and
the benchmark of the forward limit (``benchmarks/forward_limit.py``), so that the limit is
measured as the service runs. An attack's step (forward and backward) allocates more: ten
PGD-style steps of the ResNet-20 on 100 rows, one thread, took 189 and 176 ms a step with
the defaults (297,197 and 251,356 page faults), 145 and 134 ms with the thresholds fixed
(5,600 and 6,400); a training step (forward, backward and SGD on 128 rows) 319 and 348 ms
with the defaults (242,153 and 255,017 faults), 262 and 261 ms kept. The cost: a process
keeps the memory of its largest forward (its resident size does not shrink back between
forwards), and blocks above ``MMAP_THRESHOLD`` are still mapped and unmapped. Elsewhere
than glibc nothing is changed.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest dynamic mmap threshold on 64-bit systems
TRIM_THRESHOLD = 512 << 20


def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds for this process; False where the C library
    is not glibc or refuses (nothing is changed then)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    applied = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and applied
    if not applied:
        log.warning("the C allocator refused the mmap or trim threshold; left as it was")
    return applied
