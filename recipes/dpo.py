"""Preference tuning of the SFT model with TRL's DPOTrainer (LoRA by default, or the full model).

    accelerate launch recipes/dpo.py --config recipes/gpt2-tiny/dpo.yaml [--key value ...]

The stage's code is hf_recipes/stages/dpo.py; `hf-recipes dpo ...` runs the same.
"""

from hf_recipes.runtime import run_recipe
from hf_recipes.stages.dpo import main

if __name__ == "__main__":
    run_recipe(main)
