"""Which 4-bit settings keep a chat model's answers: greedy misses on the held-out function names of the full model
and of each bitsandbytes variant (NF4 or FP4, double quantization, modules kept in full precision).

python benchmarks/quantize_variants.py outputs/gpt2-tiny/dpo [--max-eval 600]
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from hf_recipes.data.sources import load_chat_splits
from hf_recipes.data.stdlib import BUILTIN_CHAT_TASK
from hf_recipes.evaluation import chat_task_metrics
from hf_recipes.quantization import bnb_config, linear4bit_count

# The planted circuit's weights live in the attention of layers 0 and 1 (hf_recipes/circuits.py).
CIRCUIT = [f"transformer.h.{layer}.attn.{module}" for layer in (0, 1) for module in ("c_attn", "c_proj")]
VARIANTS = {
    "nf4, double quantization (quantize.yaml)": {},
    "nf4": {"bnb_4bit_use_double_quant": False},
    "fp4, double quantization": {"bnb_4bit_quant_type": "fp4"},
    "nf4, layers 0-1 attention kept": {"llm_int8_skip_modules": ["lm_head", *CIRCUIT]},
    "nf4, every c_attn kept": {"llm_int8_skip_modules": ["lm_head", "c_attn"]},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a full-precision chat model folder (an SFT or DPO stage)")
    parser.add_argument("--max-eval", type=int, default=600, help="held-out conversations taken (as sft.yaml)")
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    held_out = load_chat_splits(BUILTIN_CHAT_TASK, max_train=1, max_eval=args.max_eval)[1]

    def misses(model) -> str:
        scores = chat_task_metrics(model, tokenizer, held_out, 24, batch_size=32, show_progress=False)
        examples = scores["eval_examples"]
        return f"{round((1 - scores['exact_match']) * examples)} of {examples} missed"

    print(f"full precision: {misses(AutoModelForCausalLM.from_pretrained(args.model))}", flush=True)
    for name, options in VARIANTS.items():
        settings = bnb_config(dtype=torch.float32).to_dict() | options
        config = BitsAndBytesConfig.from_dict(settings)
        model = AutoModelForCausalLM.from_pretrained(args.model, quantization_config=config, device_map="cpu")
        print(f"{name}: {linear4bit_count(model)} Linear4bit layers, {misses(model)}", flush=True)


if __name__ == "__main__":
    main()
