"""A reward model (sequence classification) trained on preference pairs from a chat model, for GRPO or evaluation.

    accelerate launch recipes/reward.py --config recipes/gpt2-tiny/reward.yaml [--key value ...]

The stage's code is hf_recipes/stages/reward.py; `hf-recipes reward ...` runs the same.
"""

from hf_recipes.runtime import run_recipe
from hf_recipes.stages.reward import main

if __name__ == "__main__":
    run_recipe(main)
