"""Pretrain a GPT-2-architecture model from scratch (or continue one) with the `transformers` Trainer.

    accelerate launch recipes/pretrain.py --config recipes/gpt2-tiny/pretrain.yaml [--key value ...]

The stage's code is hf_recipes/stages/pretrain.py; `hf-recipes pretrain ...` runs the same.
"""

from hf_recipes.runtime import run_recipe
from hf_recipes.stages.pretrain import main

if __name__ == "__main__":
    run_recipe(main)
