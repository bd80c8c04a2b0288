"""Export a GPT-2 stage's model as GGUF (f16, q8_0) for llama.cpp, verified by reading it back with transformers.

    python recipes/export_gguf.py --config recipes/gpt2-tiny/gguf.yaml [--key value ...]

The stage's code is hf_recipes/stages/gguf.py; `hf-recipes gguf ...` runs the same.
"""

from hf_recipes.runtime import run_recipe
from hf_recipes.stages.gguf import main

if __name__ == "__main__":
    run_recipe(main)
