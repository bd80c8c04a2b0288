"""Pretraining tokens per second of the gpt2-tiny recipe as every recipe runs it (freed memory kept in the process:
hf_recipes.allocator) against the same stage under glibc's default malloc, each a whole process, alternating.

"ours" is `python recipes/pretrain.py` (run_recipe raises the mmap and trim thresholds first); "glibc_default" calls
the same stage's main without it. Both read tokens/s from the run's metrics.json (training time only) and the
kernel's accounting of the process: system CPU seconds (page faults land there) and peak resident memory.

python benchmarks/bench_allocator.py                    # 60 steps a run, the precision this CPU runs
python benchmarks/bench_allocator.py -- --bf16 false    # fp32
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO_ROOT, comparison, interleaved, median, report

GOAL = 1.1
RECIPE = "recipes/gpt2-tiny/pretrain.yaml"
STAGE_WITHOUT_RUN_RECIPE = "import sys; from hf_recipes.stages.pretrain import main; main(sys.argv[1:])"
SIDES = ("ours", "glibc_default")


def pretraining_run(side: str, arguments: list[str], kernel: dict[str, list[float]]):
    """A function that runs one pretraining process for `side` and returns its tokens/s; appends the process's
    system CPU seconds and peak memory (MB) to `kernel`."""
    program = ["recipes/pretrain.py"] if side == "ours" else ["-c", STAGE_WITHOUT_RUN_RECIPE]

    def run() -> float:
        with tempfile.TemporaryDirectory(prefix="bench_allocator_") as output:
            command = [sys.executable, *program, *arguments, "--output_dir", output]
            process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            stderr = process.stderr.read()
            _, status, usage = os.wait4(process.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"{' '.join(command)} failed:\n{stderr.decode()[-3000:]}")
            kernel[f"{side}_system_seconds"].append(usage.ru_stime)
            kernel[f"{side}_peak_memory_mb"].append(usage.ru_maxrss / 1024)  # Linux reports KiB
            return json.loads((Path(output) / "metrics.json").read_text())["train_tokens_per_second"]

    return run


def run(repeats: int = 3, steps: int = 60, max_documents: int | None = None, overrides: list[str] | None = None):
    arguments = ["--config", RECIPE, "--max_steps", str(steps), "--eval_strategy", "no", "--save_strategy", "no"]
    arguments += ["--report_to", "none", *(["--max_documents", str(max_documents)] if max_documents else [])]
    arguments += overrides or []
    kernel = {f"{side}_{what}": [] for side in SIDES for what in ("system_seconds", "peak_memory_mb")}
    sides = {side: pretraining_run(side, arguments, kernel) for side in SIDES}
    results = interleaved(sides, repeats)
    return {
        **comparison("pretrain tokens/s, freed memory kept / glibc's default", GOAL, results, "glibc_default"),
        **{key: median(values) for key, values in kernel.items()},
        "settings": {
            "recipe": RECIPE,
            "steps per run / repeats": f"{steps} / {repeats}",
            "overrides": " ".join(overrides or []) or "none",
            "tokens/s": "the run's train_tokens_per_second (training time only, first steps included)",
            "system seconds, peak memory": "medians over the repeats, whole process",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--max_documents", type=int, help="fewer corpus documents (smoke tests)")
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON to PATH")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, after --: -- --key value ...")
    args = parser.parse_args()
    report(run(args.repeats, args.steps, args.max_documents, args.overrides), args.json)


if __name__ == "__main__":
    main()
