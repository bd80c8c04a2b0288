"""Evaluate every stage of a preset on the same held-out data: report.md, report.json, plots.

    python recipes/eval.py --config recipes/gpt2-tiny/evaluate.yaml [--key value ...]

The stage's code is hf_recipes/stages/evaluate.py; `hf-recipes evaluate ...` runs the same.
"""

from hf_recipes.runtime import run_recipe
from hf_recipes.stages.evaluate import main

if __name__ == "__main__":
    run_recipe(main)
