"""cluster/memory.py: a step's freed blocks are kept for the next step instead of being page-faulted back in."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cluster.memory import is_glibc

# What a training or embedding step does to the allocator: it allocates its activations (here 4 blocks of 1 MiB),
# writes them, frees them together, and the next step asks for the same again. By default glibc trims the freed
# top of the heap (more than twice its largest block) back to the kernel, so every step faults its 4 MiB in again.
# Prints the page faults of each of the last 10 of 20 steps. A fresh process: the setting cannot be undone.
# (A training loop's faults were measured too, ~1,500 a step against 5, but glibc's adaptive thresholds make that
# count vary run to run between about 160 and 840; BENCHMARKS.md has the tokens/s.)
STEPS = """
import ctypes, sys
from cluster.memory import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes, libc.memset.argtypes = [ctypes.c_void_p], [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
def faults():
    return int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[7])
size = 1 << 20
for i in range(20):
    if i == 10:
        start = faults()
    blocks = [libc.malloc(size) for _ in range(4)]
    for b in blocks:
        libc.memset(b, 1, size)
    for b in blocks:
        libc.free(b)
print((faults() - start) // 10)
"""


def _faults_per_step(mode: str) -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", STEPS, mode], cwd=root, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": root}, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not is_glibc(), reason="the setting is glibc's")
def test_kept_freed_memory_stops_the_page_faults_of_each_step():
    default, kept = _faults_per_step("default"), _faults_per_step("kept")
    assert default >= 256, default  # 4 MiB of 4 KiB pages faulted in again each step
    assert kept * 10 < default, (kept, default)
