"""cluster/memory.py: a training step stops page-faulting its activations back in once freed blocks are kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# nanoGPT's CPU config; prints the page faults of the last 10 of 20 steps. Run in a fresh process: the setting is
# process-wide and cannot be undone.
STEPS = """
import sys, torch
from cluster.memory import keep_freed_memory
from training.model import GPT, GPTConfig
if sys.argv[1] == "kept":
    assert keep_freed_memory()
torch.set_num_threads(1)
torch.manual_seed(0)
model = GPT(GPTConfig(block_size=64, n_layer=4, n_head=4, n_embd=128, vocab_size=65))
opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.99), "cpu")
x, y = torch.randint(0, 65, (12, 64)), torch.randint(0, 65, (12, 64))
def faults():
    return int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[7])
for i in range(20):
    if i == 10:
        start = faults()
    _, loss = model(x, y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
print((faults() - start) // 10)
"""


def _faults_per_step(mode: str) -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", STEPS, mode], cwd=root, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": root}, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux") or not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith(
    "glibc"), reason="the setting is glibc's")
def test_kept_freed_memory_stops_the_page_faults_of_each_step():
    default, kept = _faults_per_step("default"), _faults_per_step("kept")
    if default < 200:
        pytest.skip(f"this glibc already reuses the freed blocks ({default} faults a step)")
    assert kept * 10 < default, (kept, default)
