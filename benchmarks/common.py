"""What every benchmark shares: interleaved side-by-side timing, the median, and a description of the machine."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def interleaved(sides: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Call each side `repeats` times, alternating which goes first, so drift and contention hit both alike.

    Each side returns one measurement (a rate: higher is better) with its own warm-up already left out.
    """
    names = list(sides)
    results: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        order = names if repeat % 2 == 0 else names[::-1]
        for name in order:
            results[name].append(sides[name]())
            print(f"  repeat {repeat + 1}/{repeats} {name}: {results[name][-1]:,.1f}", file=sys.stderr, flush=True)
    return results


def median(values: list[float]) -> float:
    return statistics.median(values)


def comparison(
    benchmark: str, goal: float, results: dict[str, list[float]], reference: str, unit: str = "tokens_per_second"
) -> dict:
    """The head every benchmark's result shares: the ratio of medians (ours / reference) against its goal, each
    side's measurements, and each repeat's pair ratio (the two sides measured back to back)."""
    ours, theirs = results["ours"], results[reference]
    return {
        "benchmark": benchmark,
        "ratio": median(ours) / median(theirs),
        "goal": goal,
        f"ours_{unit}": ours,
        f"{reference}_{unit}": theirs,
        "paired_ratios": [a / b for a, b in zip(ours, theirs, strict=True)],
    }


class Stopwatch:
    """perf_counter that synchronizes an accelerator first (its work runs ahead of the host)."""

    def __init__(self, device: str = "cpu"):
        self.device = device

    def __call__(self) -> float:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment() -> dict[str, str]:
    """Machine, library versions, date and commit: what a reader needs to compare a result with another."""
    import torch

    from hf_recipes.precision import cpu_bf16_support
    from hf_recipes.run_folder import library_versions

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git_commit(),
        "machine": f"{_cpu_model()}, {os.cpu_count()} logical CPUs",
        # The same CPU name covers generations that differ 3x in fp32 speed, and bf16 runs only where native.
        "cpu": f"{torch.backends.cpu.get_cpu_capability()}; bf16: {cpu_bf16_support()[1]}",
        "torch threads": str(torch.get_num_threads()),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    versions = library_versions()
    keep = ("python", "torch", "transformers", "trl", "accelerate", "datasets", "tokenizers")
    info["versions"] = ", ".join(f"{name} {versions[name]}" for name in keep if name in versions)
    return info


def stdlib_texts(split: str = "train", max_documents: int | None = None) -> list[str]:
    """Documents of the built-in corpus (the running Python's standard library), in the recipe's split."""
    from hf_recipes.data.sources import load_text_source

    data = load_text_source("stdlib")[split]
    if max_documents is not None:
        data = data.select(range(min(max_documents, len(data))))
    return list(data["text"])


def report(result: dict, json_path: str | None = None) -> None:
    """Print the result and the environment as JSON; also write them to json_path (where run_all.py reads them)."""
    text = json.dumps({"environment": environment(), **result}, indent=2)
    print(text)
    if json_path:
        Path(json_path).write_text(text + "\n")
