"""Supervised fine-tuning in a chat template (full, LoRA or QLoRA) with TRL's SFTTrainer.

    accelerate launch recipes/sft.py --config recipes/gpt2-tiny/sft.yaml [--key value ...]

The stage's code is hf_recipes/stages/sft.py; `hf-recipes sft ...` runs the same.
"""

from hf_recipes.runtime import run_recipe
from hf_recipes.stages.sft import main

if __name__ == "__main__":
    run_recipe(main)
