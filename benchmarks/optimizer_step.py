"""Seconds per training step of the gpt2-tiny model (4 x 512 tokens: forward, backward, optimizer step) with AdamW
and with Muon (hf_recipes/optimizers.py), alternating, the first 2 of 12 steps left out, medians printed.

python benchmarks/optimizer_step.py
"""

from __future__ import annotations

import statistics
import time
from types import SimpleNamespace

import torch

from hf_recipes.modeling import build_model, gpt2_config
from hf_recipes.optimizers import muon_with_adamw

BATCH, BLOCK, VOCAB, STEPS, WARM_UP = 4, 512, 8192, 12, 2


def optimizer_for(name: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1, fused=True)
    # fp32 throughout, Newton-Schulz included, like this benchmark's forward and backward.
    args = SimpleNamespace(
        learning_rate=2e-3, adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8, weight_decay=0.1, bf16=False
    )
    return muon_with_adamw(model, 0.02, args)


def main() -> None:
    # dropout 0.0 as pretrain.yaml: with dropout SDPA leaves its fused CPU kernel, and the step is not the recipe's.
    config = gpt2_config("gpt2-tiny", vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0, dropout=0.0)
    batch = torch.randint(VOCAB, (BATCH, BLOCK), generator=torch.Generator().manual_seed(0))
    for name in ("adamw", "muon", "adamw", "muon"):
        torch.manual_seed(0)
        model = build_model(config)
        optimizer = optimizer_for(name, model)
        steps, updates = [], []
        for _ in range(STEPS):
            started = time.perf_counter()
            model(input_ids=batch, labels=batch).loss.backward()
            backward_done = time.perf_counter()
            optimizer.step()
            optimizer.zero_grad()
            done = time.perf_counter()
            steps.append(done - started)
            updates.append(done - backward_done)
        step, update = statistics.median(steps[WARM_UP:]), statistics.median(updates[WARM_UP:])
        print(f"{name}: step {step:.3f} s (optimizer {update:.3f} s), {BATCH * BLOCK / step:,.0f} tokens/s")


if __name__ == "__main__":
    main()
