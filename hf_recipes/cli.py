"""`hf-recipes <stage> --config <recipe.yaml> [--key value ...]`: the stage code `recipes/<stage>.py` runs, for people
who `pip install hf-recipes`. A --config that is not a file is looked up among the recipes shipped with the package:

    hf-recipes pretrain --config gpt2-tiny/pretrain.yaml --max_steps 100
    accelerate launch -m hf_recipes.cli sft --config gpt2-tiny/sft.yaml      # through Accelerate, as the Makefile does
"""

from __future__ import annotations

import importlib
import sys
from importlib import resources
from pathlib import Path

from hf_recipes.runtime import did_you_mean, run_recipe

STAGES = ("pretrain", "sft", "dpo", "reward", "grpo", "quantize", "gguf", "evaluate", "generate", "push")
RECIPES_PACKAGE = "hf_recipes.recipes"  # recipes/ of the repository, shipped in the wheel


def usage() -> str:
    return (
        f"usage: hf-recipes {{{','.join(STAGES)}}} --config RECIPE.yaml [--key value ...] [--debug]\n"
        f"shipped recipes: {', '.join(shipped_recipes()) or 'none'}"
    )


def shipped_recipes() -> list[str]:
    """`preset/stage.yaml` of every recipe in the package (the repository's recipes/ in a checkout)."""
    try:
        root = resources.files(RECIPES_PACKAGE)
    except ModuleNotFoundError:
        return []
    return sorted(
        f"{preset.name}/{recipe.name}"
        for preset in root.iterdir()
        if preset.is_dir() and preset.name != "accelerate"
        for recipe in preset.iterdir()
        if recipe.name.endswith(".yaml")
    )


def with_shipped_config(argv: list[str]) -> list[str]:
    """`--config gpt2-tiny/sft.yaml` names the shipped recipe when no such file is here."""
    if "--config" not in argv or argv.index("--config") + 1 >= len(argv):
        return argv
    index = argv.index("--config") + 1
    if not Path(argv[index]).is_file() and argv[index] in shipped_recipes():
        with resources.as_file(resources.files(RECIPES_PACKAGE).joinpath(argv[index])) as path:
            argv = [*argv[:index], str(path), *argv[index + 1 :]]
    return argv


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if argv else 2)
    if argv[0] not in STAGES:
        print(f"error: unknown stage '{argv[0]}'{did_you_mean(argv[0], STAGES)}\n{usage()}", file=sys.stderr)
        sys.exit(2)
    stage = importlib.import_module(f"hf_recipes.stages.{argv[0]}")
    run_recipe(stage.main, with_shipped_config(argv[1:]))


if __name__ == "__main__":
    main()
