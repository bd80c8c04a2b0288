"""Reinforcement learning with verifiable rewards (GRPO) from a chat model, on prompts with reference answers.

    accelerate launch recipes/grpo.py --config recipes/gpt2-tiny/grpo.yaml [--key value ...]

The stage's code is hf_recipes/stages/grpo.py; `hf-recipes grpo ...` runs the same.
"""

from hf_recipes.runtime import run_recipe
from hf_recipes.stages.grpo import main

if __name__ == "__main__":
    run_recipe(main)
