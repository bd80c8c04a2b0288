"""Which attention heads of a GPT-2 look one token back, and which copy: per head, on spans of random tokens read
twice, the mean attention weight on the previous position (a previous-token head scores ~1) and, in the second
reading, on the position right after the earlier occurrence of the current token (an induction head scores ~1);
with the loss on the first and the second reading (a model that copies predicts the second almost perfectly).

Random tokens take what the text says out of it: only copying predicts them. Run it on the checkpoints of a
pretraining run to see when heads form or fade (benchmarks/LEARNING.md: the planted induction circuit).

python benchmarks/attention_heads.py outputs/gpt2-tiny/pretrain/checkpoint-150 outputs/gpt2-tiny/pretrain [...]
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoModelForCausalLM

from hf_recipes.evaluation import repeated_span_loss


def head_scores(model, spans: torch.Tensor) -> dict[str, torch.Tensor]:
    """Previous-token and induction scores, [layers, heads] each, on `spans` ([batch, span] token ids) read twice."""
    span = spans.shape[1]
    with torch.no_grad():
        weights = model(input_ids=torch.cat([spans, spans], dim=1), output_attentions=True).attentions
    later = torch.arange(1, 2 * span)
    repeat = torch.arange(span + 1, 2 * span)
    return {
        "previous_token": torch.stack([layer[:, :, later, later - 1].mean(dim=(0, 2)) for layer in weights]),
        "induction": torch.stack([layer[:, :, repeat, repeat - span + 1].mean(dim=(0, 2)) for layer in weights]),
    }


def random_spans(vocab_size: int, count: int = 8, span: int = 128, seed: int = 0) -> torch.Tensor:
    """Random token ids, leaving out the lowest 256 (single bytes, special tokens)."""
    return torch.randint(256, vocab_size, (count, span), generator=torch.Generator().manual_seed(seed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="model folders or checkpoints")
    parser.add_argument("--span", type=int, default=128)
    args = parser.parse_args()
    for folder in args.folders:
        model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
        spans = random_spans(model.config.vocab_size, span=args.span)
        scores = head_scores(model, spans)
        losses = repeated_span_loss(model, spans.tolist(), args.span)
        print(f"{folder}: loss {losses['loss_first']:.2f} first reading, {losses['loss_repeat']:.2f} repeated")
        for name, table in scores.items():
            rows = ["  ".join(f"{score:.2f}" for score in layer) for layer in table.tolist()]
            print(f"  {name:<15}" + "  |  ".join(f"L{index}: {row}" for index, row in enumerate(rows)))


if __name__ == "__main__":
    main()
