"""Keep freed tensor memory in the process (Linux, glibc) instead of handing it back to the kernel every step.

glibc's malloc serves a block above its mmap threshold (128 KiB at start, rising to at most 32 MiB as blocks are
freed) with fresh pages from the kernel and unmaps it on free. A training step allocates and frees the same large
activations every step (gpt2-tiny's 8,192-way logits for 4 x 512 tokens: 67 MB), so every step faulted their pages
in again: almost a fifth of a CPU pretraining run's time was the kernel's. With both thresholds raised the freed
blocks stay in the heap for the next step, as jemalloc or tcmalloc would keep them; the process keeps what it
freed until it exits (gpt2-tiny pretraining's peak: 2.6 GB against 1.8 GB).

Only stages marked `@keeps_freed_memory` get it (run_recipe applies it): pretraining. The chat stages' blocks stay
under glibc's own 32 MiB (TRL projects only the labelled positions through the LM head), so glibc already reuses
them: 300 SFT steps spent 5 s in the kernel either way, and SFT trained 529 s with it and 534 s without.
Measured: benchmarks/bench_allocator.py (RESULTS.md) and benchmarks/LEARNING.md.
"""

from __future__ import annotations

import ctypes
import platform
from collections.abc import Callable

M_TRIM_THRESHOLD = -1  # <malloc.h>: free memory at the top of the heap returned to the kernel above this
M_MMAP_THRESHOLD = -3  # <malloc.h>: blocks at least this large come from mmap
KEEP_BLOCKS_UP_TO = 1 << 30  # bytes: the largest activation a CPU recipe holds is well below this


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True if applied (False off glibc: macOS, musl)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # mallopt returns 1 on success; older glibc refuses an mmap threshold above 32 MiB, so fall back to that.
    mmap_set = libc.mallopt(M_MMAP_THRESHOLD, KEEP_BLOCKS_UP_TO) or libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
    trim_set = libc.mallopt(M_TRIM_THRESHOLD, KEEP_BLOCKS_UP_TO)
    return bool(mmap_set and trim_set)


def keeps_freed_memory(main: Callable) -> Callable:
    """Mark a stage's `main` whose steps allocate blocks above 32 MiB: run_recipe keeps freed memory for it."""
    main.keeps_freed_memory = True
    return main
