"""The C allocator keeps what a forward frees for the next one (``models.memory``).

Judged by page faults, not time: each probe is a fresh process that runs a small
convolutional network on a batch of 16 rows 50 times and counts the minor page faults of
those 50 forwards. With glibc's defaults the activations are mapped and unmapped (or
trimmed and grown back) on every forward and their pages faulted in each time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from models.memory import keep_freed_memory

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import resource, sys
import torch
from models.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.set_num_threads(1)
layers = [torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU()] * 4
network = torch.nn.Sequential(*layers).eval()
rows = torch.rand(16, 16, 32, 32)
with torch.inference_mode():
    for _ in range(3):
        network(rows)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        network(rows)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc = pytest.mark.skipif(not keep_freed_memory(), reason="the C library is not glibc")


def page_faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return int(done.stdout.split()[-1])


@glibc
def test_forwards_fault_no_pages_once_freed_memory_is_kept() -> None:
    # Each forward's activations are 16 x 16 x 32 x 32 floats (1 MiB) a layer.
    default, kept = page_faults("default"), page_faults("keep")
    assert default > 50 * 256  # at least a mebibyte's pages a forward
    # The heap may still grow once or twice (seen: 0 and 256 pages in all fifty), never
    # once a forward.
    assert kept < 5 * 256 and kept * 10 < default
