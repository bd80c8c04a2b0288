"""Freed tensor memory stays in the process: a step's large activations stop page-faulting in again every step."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Allocate, touch and free a 64 MiB tensor (gpt2-tiny's logits for a batch are 67 MB) again and again; print the
# page faults of the last four. glibc's own threshold stops at 32 MiB, so by default each one faults all its pages
# in again (16,384 of 4 KiB); with the thresholds raised the heap settled within ten allocations (twelve here) and
# then reuses the freed block.
FAULTS_OF_REPEATED_ALLOCATIONS = """
import resource, sys, torch
from hf_recipes.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
for _ in range(12):
    torch.empty(16 << 20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    torch.empty(16 << 20).fill_(1.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    command = [sys.executable, "-c", FAULTS_OF_REPEATED_ALLOCATIONS, mode]
    return int(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only (Linux)")
def test_large_freed_tensors_are_reused_instead_of_faulted_in_again():
    default, kept = page_faults("default"), page_faults("keep")
    assert default >= 4 * (64 << 20) // 4096 * 0.9
    assert kept < default / 20


def test_run_recipe_keeps_freed_memory_for_marked_stages_only(monkeypatch):
    from hf_recipes import allocator
    from hf_recipes.runtime import run_recipe
    from hf_recipes.stages import pretrain, sft

    applied = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: applied.append(True))
    ran = []
    run_recipe(allocator.keeps_freed_memory(lambda argv: ran.append("marked")), [])
    run_recipe(lambda argv: ran.append("unmarked"), [])
    assert ran == ["marked", "unmarked"] and applied == [True]
    # Pretraining's 67 MB logits are above glibc's own 32 MiB threshold; SFT's blocks are below it.
    assert getattr(pretrain.main, "keeps_freed_memory", False) and not getattr(sft.main, "keeps_freed_memory", False)
