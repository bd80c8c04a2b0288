"""One learning experiment: pretrain (and SFT) the gpt2-tiny recipes with a change, and add its row to LEARNING.md
(benchmarks/LEARNING.md, "Runs of benchmarks/learning.py"; a finished run of the same command is reused).

Each run trains from the same seed as the recipes, so rows differ by their change alone. SFT is measured on the
built-in task's 555 held-out functions (exact match overall and by answer length in tokens).

python benchmarks/learning.py --name copy-50 --change "half the blocks copy-rich" -- --copy_block_share 0.5
python benchmarks/learning.py --name base --pretrain-only
python benchmarks/learning.py --name sft-short --sft-args "--max_steps 700" -- --max_steps 1200
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
LEARNING = REPO_ROOT / "benchmarks" / "LEARNING.md"
RUNS_SECTION = "## Runs of benchmarks/learning.py"
DEFAULT_RECIPES = {
    "--pretrain-recipe": "recipes/gpt2-tiny/pretrain.yaml",
    "--sft-recipe": "recipes/gpt2-tiny/sft.yaml",
}


def run_stage(script: str, recipe: str, output_dir: Path, args: list[str]) -> dict:
    """Run one stage (a finished run of the same command is reused) and return its metrics.json."""
    command = [sys.executable, f"recipes/{script}.py", "--config", recipe, "--output_dir", str(output_dir), *args]
    print("$", shlex.join(command), flush=True)
    subprocess.run(command, cwd=REPO_ROOT, check=True)
    return json.loads((output_dir / "metrics.json").read_text())


def machine() -> str:
    import platform

    import torch

    from hf_recipes.precision import cpu_bf16_support

    native, _ = cpu_bf16_support()
    return f"{platform.processor() or platform.machine()} {torch.backends.cpu.get_cpu_capability()}" + (
        ", bf16 native" if native else ", fp32"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="Folder under outputs/learning/ and the row's name.")
    parser.add_argument("--change", default="", help="What differs from the recipes, in words.")
    for flag, recipe in DEFAULT_RECIPES.items():
        parser.add_argument(flag, default=recipe)
    parser.add_argument("--sft-args", default="", help="Overrides for SFT, one quoted string.")
    parser.add_argument("--pretrain-only", action="store_true", help="Stop after pretraining (no exact match).")
    parser.add_argument("pretrain_args", nargs=argparse.REMAINDER, help="-- then overrides for pretraining.")
    args = parser.parse_args(argv)
    args.pretrain_args = [a for a in args.pretrain_args if a != "--"]
    return args


def main() -> None:
    args = parse_args()
    folder = REPO_ROOT / "outputs" / "learning" / args.name
    pretrained = run_stage("pretrain", args.pretrain_recipe, folder / "pretrain", args.pretrain_args)
    sft = {}
    if not args.pretrain_only:
        sft_args = ["--model_name_or_path", str(folder / "pretrain"), *shlex.split(args.sft_args)]
        sft = run_stage("sft", args.sft_recipe, folder / "sft", sft_args)
    minutes = training_minutes(pretrained, sft)
    by_length = sft.get("exact_match_by_answer_tokens", {})
    # The commit of the code that trained the model (a reused run keeps the commit it was trained at).
    record = yaml.safe_load((folder / "pretrain" / "run_config.yaml").read_text())
    commit = (record.get("git_commit") or "unknown")[:7]
    command = shlex.join(["python", "benchmarks/learning.py", *command_options(args)])
    row = [
        args.name,
        args.change,
        machine(),
        f"{pretrained['train_tokens']:,}",
        minutes,
        f"{pretrained['perplexity']:.1f}",
        f"{pretrained['copy_probe_loss_first']:.2f} -> {pretrained['copy_probe_loss_repeat']:.2f}",
        f"{sft['exact_match']:.3f}" if sft else "-",
        "/".join(f"{by_length[k]['exact_match']:.2f}" for k in by_length) if by_length else "-",
        f"`{command}`",
        commit,
    ]
    add_row(LEARNING, "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    print(f"{datetime.now(timezone.utc):%H:%M} row added to {LEARNING}:\n" + " | ".join(row))


def training_minutes(pretrained: dict, sft: dict) -> str:
    """The stages' training minutes; a stage resumed from a checkpoint timed only its steps after it, and says so."""
    minutes = f"{(pretrained['train_seconds'] + sft.get('train_seconds', 0.0)) / 60:.1f}"
    resumed = [
        f"{stage} after step {metrics['resumed_from_step']:,}"
        for stage, metrics in (("pretraining", pretrained), ("SFT", sft))
        if metrics.get("resumed_from_step")
    ]
    return f"{minutes} ({', '.join(resumed)})" if resumed else minutes


def command_options(args: argparse.Namespace) -> list[str]:
    """The options that reproduce this run (the change's words left out, recipes named when not the default)."""
    options = ["--name", args.name]
    options += ["--pretrain-only"] if args.pretrain_only else ["--sft-args", args.sft_args] if args.sft_args else []
    for flag, default in DEFAULT_RECIPES.items():
        recipe = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if recipe != default:
            options += [flag, recipe]
    return [*options, "--", *args.pretrain_args]


def add_row(path: Path, row: str, section: str = RUNS_SECTION) -> None:
    """Insert `row` after the last table row of `section`, whatever follows that section in the file."""
    lines = path.read_text().splitlines()
    start = lines.index(section)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    last_row = max(i for i in range(start, end) if lines[i].startswith("|"))
    lines.insert(last_row + 1, row)
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
