"""What each pretraining step's blocks look like: copy-rich rewrites and short blocks, scheduled by step.

The packed dataset holds natural `block_size`-token blocks; the trainer hands every training batch to a
`BlockCurriculum` before the model sees it (evaluation batches stay natural, so perplexity and the copying probe
mean the same whatever the curriculum). Both schedules are functions of the optimizer step, so a resumed run sees
what an uninterrupted one would have.

- Copy-rich blocks: a share of the blocks is rewritten as short spans of their own text, each read twice, so the
  second reading can only be predicted by copying (the skill the chat task needs). The share can fade linearly to
  0 by a given step: copy-heavy first, natural text after.
- Short blocks first (sequence-length warm-up): each block of the step is cut into shorter sequences, the same
  tokens per step, the length growing from `start` to `block_size` by powers of two over the warm-up steps.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch


def copy_rich_positions(length: int, rng: np.random.Generator, min_span: int, max_span: int) -> np.ndarray:
    """Positions that rewrite a `length`-token block as consecutive spans of its own text, each read twice:
    `a a b b c c ...`, cut to length (`block[positions]`).

    The second reading of each span can only be predicted by copying from the first (an induction head's job), so
    the gradient towards copying is in every span instead of in rare natural repeats. Half the block's text is
    dropped; the labels are rewritten the same way.
    """
    pieces, start, filled = [], 0, 0
    while filled < length:
        span = np.arange(start, min(start + int(rng.integers(min_span, max_span + 1)), length))
        if len(span) == 0:  # the block's text is used up before the rewrite is full: read it again
            start = 0
            continue
        pieces += [span, span]
        start += len(span)
        filled += 2 * len(span)
    return np.concatenate(pieces)[:length]


@dataclasses.dataclass(frozen=True)
class BlockCurriculum:
    """How the training blocks of a step are rewritten (`__call__`); see the module docstring."""

    block_size: int
    copy_share: float = 0.0
    copy_span: tuple[int, int] = (16, 64)
    copy_fade_steps: int = 0  # 0: copy_share for the whole run
    short_block_start: int = 64
    short_block_steps: int = 0  # 0: every step trains full blocks
    seed: int = 0

    @classmethod
    def from_arguments(cls, data_args, training_args) -> BlockCurriculum | None:
        """The recipe's curriculum, or None when every step trains natural full blocks."""
        curriculum = cls(
            block_size=training_args.block_size,
            copy_share=data_args.copy_block_share,
            copy_span=tuple(data_args.copy_span_tokens),
            copy_fade_steps=data_args.copy_block_share_fade_steps,
            short_block_start=training_args.block_size_warmup_start,
            short_block_steps=training_args.block_size_warmup_steps,
            seed=training_args.seed,
        )
        return curriculum if curriculum.copy_share or curriculum.short_block_steps else None

    def copy_share_at(self, step: int) -> float:
        if not self.copy_fade_steps:
            return self.copy_share
        return self.copy_share * max(0.0, 1 - step / self.copy_fade_steps)

    def sequence_length_at(self, step: int) -> int:
        """The longest block_size / 2^k within the warm-up's linear length (start -> block_size by its last step)."""
        if step >= self.short_block_steps:
            return self.block_size
        target = self.short_block_start + (self.block_size - self.short_block_start) * step / self.short_block_steps
        length = self.block_size
        while length > target:
            length //= 2
        return length

    def describe(self) -> str:
        parts = []
        if self.copy_share:
            fade = f", fading to 0 by step {self.copy_fade_steps}" if self.copy_fade_steps else ""
            low, high = self.copy_span
            parts.append(f"{self.copy_share:.0%} of the blocks copy-rich ({low}-{high}-token spans read twice{fade})")
        if self.short_block_steps:
            parts.append(
                f"sequences of {self.short_block_start} tokens growing to {self.block_size} by step "
                f"{self.short_block_steps} (the same tokens per step)"
            )
        return "; ".join(parts)

    def __call__(self, batch: dict[str, torch.Tensor], step: int, stream: int = 0) -> dict[str, torch.Tensor]:
        """The batch of optimizer step `step` as the curriculum has it; `stream` tells apart the batches of one step
        (gradient accumulation, processes) so each gets its own random choices."""
        input_ids = batch["input_ids"]
        if input_ids.shape[1] != self.block_size:
            raise ValueError(f"expected blocks of {self.block_size} tokens, got {tuple(input_ids.shape)}")
        batch = dict(batch)
        share = self.copy_share_at(step)
        if share > 0:
            rng = np.random.default_rng([self.seed, step, stream])
            positions = torch.arange(self.block_size).repeat(len(input_ids), 1)
            for row in range(len(input_ids)):
                if rng.random() < share:
                    positions[row] = torch.from_numpy(copy_rich_positions(self.block_size, rng, *self.copy_span))
            positions = positions.to(input_ids.device)
            for key in ("input_ids", "labels"):
                batch[key] = torch.gather(batch[key], 1, positions)
        length = self.sequence_length_at(step)
        if length < self.block_size:
            for key in ("input_ids", "labels", "attention_mask"):
                if key in batch:
                    batch[key] = batch[key].reshape(-1, length)
        return batch
