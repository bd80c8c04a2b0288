"""Publish a stage's model folder on the Hugging Face Hub, with a model card of what was measured.

    python recipes/push.py --model_name_or_path outputs/gpt2-tiny/sft --repo_id me/gpt2-tiny-sft [--private true]

The stage's code is hf_recipes/stages/push.py; `hf-recipes push ...` runs the same.
"""

from hf_recipes.runtime import run_recipe
from hf_recipes.stages.push import main

if __name__ == "__main__":
    run_recipe(main)
