"""Talk to a model folder (full, merged, LoRA adapter or 4-bit) through its own chat template.

    python recipes/generate.py --model_name_or_path outputs/gpt2-tiny/quantized-nf4 [--prompt ...]

The stage's code is hf_recipes/stages/generate.py; `hf-recipes generate ...` runs the same.
"""

from hf_recipes.runtime import run_recipe
from hf_recipes.stages.generate import main

if __name__ == "__main__":
    run_recipe(main)
