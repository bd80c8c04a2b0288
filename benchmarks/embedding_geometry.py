"""Why rare tokens are hard to copy: the token embeddings of a model with the planted induction circuit, by how often
each token occurs in the built-in task's training prompts.

For each frequency bucket it prints
- `copies itself`: the share of tokens whose logit is the highest when the held induction head's output for that token
  alone (layer 1's ln_1, head 0's value and output maps) is read out through the tied embedding: the direct copy path
  that `plant_induction_circuit` builds (every token at the plant);
- `pairwise cos`: the mean cosine between the bucket's embeddings (a shared direction makes them alike);
- `norm`: the mean embedding norm, and how much of it lies `along` the mean of all embeddings and `across` it.

python benchmarks/embedding_geometry.py outputs/gpt2-tiny/pretrain [--prompts 4000] [--at-plant]
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from hf_recipes.circuits import head_slices, plant_induction_circuit
from hf_recipes.data.sources import load_chat_splits
from hf_recipes.data.stdlib import BUILTIN_CHAT_TASK

BUCKETS = [(0, 1), (1, 5), (5, 20), (20, 100), (100, 1000), (1000, None)]


def token_counts(tokenizer, prompts: int) -> torch.Tensor:
    """How often each token occurs in the first `prompts` training conversations (prompt and answer)."""
    counts = Counter()
    for conversation in load_chat_splits(BUILTIN_CHAT_TASK, max_train=prompts, max_eval=1)[0]:
        for message in conversation["messages"]:
            counts.update(tokenizer(message["content"], add_special_tokens=False)["input_ids"])
    return torch.tensor([counts.get(token, 0) for token in range(len(tokenizer))])


@torch.no_grad()
def direct_copy_ranks(model: GPT2LMHeadModel) -> torch.Tensor:
    """Each token's rank among all tokens when the induction head (layer 1, head 0) writes it and the tied embedding
    reads the logits back (0: the token copies itself)."""
    width = model.config.n_embd
    _, _, value_columns, output_rows = head_slices(width, width // model.config.n_head, head=0)
    embedding = model.transformer.wte.weight
    block = model.transformer.h[1]
    normed = torch.nn.functional.layer_norm(embedding, (width,), block.ln_1.weight, None, block.ln_1.eps)
    value = normed @ block.attn.c_attn.weight[:, value_columns]
    logits = (value @ block.attn.c_proj.weight[output_rows]) @ embedding.T
    return (logits > logits.diagonal()[:, None]).sum(dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a gpt2-tiny folder whose pretraining planted the induction circuit")
    parser.add_argument("--prompts", type=int, default=4000, help="training conversations counted")
    parser.add_argument("--at-plant", action="store_true", help="a freshly planted model of the folder's config")
    args = parser.parse_args()

    if args.at_plant:
        torch.manual_seed(42)
        model = plant_induction_circuit(GPT2LMHeadModel(GPT2Config.from_pretrained(args.model))).eval()
    else:
        model = GPT2LMHeadModel.from_pretrained(args.model).eval()
    counts = token_counts(AutoTokenizer.from_pretrained(args.model), args.prompts)
    ranks = direct_copy_ranks(model)
    embedding = model.transformer.wte.weight.detach()
    mean = torch.nn.functional.normalize(embedding.mean(dim=0), dim=0)
    header = f"{'count in prompts':>16}  {'tokens':>6}  {'copies itself':>13}  {'pairwise cos':>12}"
    print(f"{header}  {'norm':>5}  {'along':>5}  {'across':>6}")
    for low, high in BUCKETS:
        chosen = (counts >= low) & (counts < high) if high is not None else counts >= low
        vectors = embedding[chosen]
        if len(vectors) < 2:
            continue
        unit = torch.nn.functional.normalize(vectors, dim=1)
        pairwise = ((unit @ unit.T).sum() - len(unit)) / (len(unit) * (len(unit) - 1))
        along = vectors @ mean
        across = (vectors - along[:, None] * mean).norm(dim=1)
        label = f"{low}-{high - 1}" if high is not None else f">= {low}"
        print(
            f"{label:>16}  {len(vectors):6d}  {(ranks[chosen] == 0).float().mean():13.3f}  {pairwise:12.2f}"
            f"  {vectors.norm(dim=1).mean():5.2f}  {along.mean():5.2f}  {across.mean():6.2f}"
        )


if __name__ == "__main__":
    main()
