"""Export a stage's model in 4-bit (bitsandbytes NF4/FP4), verified by reloading it from disk.

    python recipes/quantize.py --config recipes/gpt2-tiny/quantize.yaml [--key value ...]

The stage's code is hf_recipes/stages/quantize.py; `hf-recipes quantize ...` runs the same.
"""

from hf_recipes.runtime import run_recipe
from hf_recipes.stages.quantize import main

if __name__ == "__main__":
    run_recipe(main)
