"""Pretraining tokens per second of gpt2-tiny with GPT-2's GELU as one fused op ("gelu_pytorch_tanh", what
hf_recipes.modeling builds) against the same function as transformers' "gelu_new" chain of elementwise ops.

Both sides are bench_pretrain's bare loop (forward, backward, clipping, AdamW on the same packed blocks, the recipe's
precision), on copies of one initialised model, alternating; their losses on one batch are checked to agree.

python benchmarks/bench_activation.py                  # the precision this CPU runs (bf16 autocast where native)
python benchmarks/bench_activation.py -- --bf16 false  # fp32
"""

from __future__ import annotations

import argparse
import copy

from bench_pretrain import bare_side, enough_blocks, prepare
from common import comparison, interleaved, report

GOAL = 1.05


def loss_of(model, ids, bf16: bool) -> float:
    import torch

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return model(input_ids=ids, labels=ids).loss.item()


def run(
    repeats: int = 5, warmup: int = 3, measure: int = 20, max_documents: int = 400, overrides: list[str] | None = None
) -> dict:
    import torch
    from transformers.activations import ACT2FN

    recipe = "recipes/gpt2-tiny/pretrain.yaml"
    training_args, _, fused, blocks, size = prepare(recipe, max_documents, None, overrides or [])
    chained = copy.deepcopy(fused)
    chained.config.activation_function = "gelu_new"
    for block in chained.transformer.h:
        block.mlp.act = ACT2FN["gelu_new"]
    sequences_per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    tokens_per_step = sequences_per_step * training_args.block_size
    blocks = enough_blocks(blocks, (warmup + measure) * sequences_per_step)
    ids = torch.tensor(blocks["input_ids"][:sequences_per_step])
    sides = {
        "ours": bare_side(training_args, fused, blocks, warmup, measure, tokens_per_step),
        "gelu_new": bare_side(training_args, chained, blocks, warmup, measure, tokens_per_step),
    }
    results = interleaved(sides, repeats)
    return {
        **comparison("pretrain tokens/s, fused GELU / gelu_new", GOAL, results, "gelu_new"),
        "loss_fused": loss_of(fused, ids, training_args.bf16),
        "loss_gelu_new": loss_of(chained, ids, training_args.bf16),
        "settings": {
            "recipe": recipe,
            "model": size.describe(),
            "activation_function": f"{fused.config.activation_function} / {chained.config.activation_function}",
            "precision": "bf16" if training_args.bf16 else "fp32",
            "tokens_per_step": tokens_per_step,
            "warm-up steps left out / measured steps / repeats": f"{warmup} / {measure} / {repeats}",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--measure", type=int, default=20)
    parser.add_argument("--max_documents", type=int, default=400)
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON to PATH")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, after --: -- --key value ...")
    args = parser.parse_args()
    report(run(args.repeats, args.warmup, args.measure, args.max_documents, args.overrides), args.json)


if __name__ == "__main__":
    main()
