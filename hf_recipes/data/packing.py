"""Pretraining packing: tokenize documents, join them with eos, cut the stream into full `block_size` blocks."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

logger = logging.getLogger("hf_recipes")


def pack_ids(documents: Iterable[list[int]], block_size: int, eos_token_id: int) -> tuple[list[list[int]], int]:
    """Join token lists with eos and cut into full blocks; returns (blocks, tokens left over at the end)."""
    stream: list[int] = []
    for ids in documents:
        stream.extend(ids)
        stream.append(eos_token_id)
    usable = len(stream) // block_size * block_size
    return [stream[start : start + block_size] for start in range(0, usable, block_size)], len(stream) - usable


def packing_function(
    tokenizer: PreTrainedTokenizerBase, block_size: int, text_column: str = "text", arrays: bool = False
):
    """A batched `datasets.map` function: texts in, full blocks of `input_ids` and identical `labels` out.

    Leftover tokens at the end of each map batch are dropped (at most block_size - 1 per 1,000 documents).
    `arrays` returns one numpy array per column instead of lists: datasets writes it to Arrow in one go, where it
    inspects lists element by element (a third of the packing time); streamed rows stay lists.
    """

    def pack(batch: dict[str, list[Any]]) -> dict[str, list[list[int]] | np.ndarray]:
        encoded = tokenizer(batch[text_column], add_special_tokens=False)["input_ids"]
        blocks, _ = pack_ids(encoded, block_size, tokenizer.eos_token_id)
        # Labels are the inputs: the model shifts them by one position itself.
        if arrays:
            array = np.array(blocks, dtype=np.int64).reshape(-1, block_size)
            return {"input_ids": array, "labels": array}
        return {"input_ids": blocks, "labels": [list(block) for block in blocks]}

    return pack


def pack_dataset(dataset, tokenizer: PreTrainedTokenizerBase, block_size: int, text_column: str = "text"):
    """Pack a `datasets` Dataset (or IterableDataset) of texts into blocks; every other column is dropped."""
    import datasets

    columns = dataset.column_names
    # Only map-style datasets show a progress bar (and cache the result); streaming ones pack lazily.
    in_memory = isinstance(dataset, datasets.Dataset)
    kwargs = {"desc": f"Packing into {block_size}-token blocks"} if in_memory else {}
    return dataset.map(
        packing_function(tokenizer, block_size, text_column, arrays=in_memory),
        batched=True,
        batch_size=1000,
        remove_columns=columns,
        **kwargs,
    )


def copy_rich_block(block: np.ndarray, rng: np.random.Generator, min_span: int, max_span: int) -> np.ndarray:
    """The block rewritten as consecutive spans of its own text, each read twice: `a a b b c c ...`, cut to length.

    The second reading of each span can only be predicted by copying from the first (an induction head's job), so
    the gradient towards copying is in every span instead of in rare natural repeats. Half the block's text is
    dropped; labels stay the inputs.
    """
    pieces, start, filled = [], 0, 0
    while filled < len(block):
        span = block[start : start + int(rng.integers(min_span, max_span + 1))]
        if len(span) == 0:  # the block's text is used up before the rewrite is full: read it again
            start = 0
            continue
        pieces += [span, span]
        start += len(span)
        filled += 2 * len(span)
    return np.concatenate(pieces)[: len(block)]


def make_copy_rich(blocks, share: float, min_span: int, max_span: int, seed: int):
    """Rewrite `share` of the packed blocks with `copy_rich_block` (which ones, and the span lengths, by `seed`)."""
    if share <= 0:
        return blocks

    def rewrite(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, np.ndarray]:
        rows = []
        for ids, index in zip(batch["input_ids"], indices, strict=True):
            rng = np.random.default_rng([seed, index])
            ids = np.asarray(ids, dtype=np.int64)
            rows.append(copy_rich_block(ids, rng, min_span, max_span) if rng.random() < share else ids)
        array = np.stack(rows)
        return {"input_ids": array, "labels": array}

    return blocks.map(rewrite, batched=True, with_indices=True, desc=f"Copy-rich blocks ({share:.0%})")


def pack_corpus(corpus: dict[str, Any], tokenizer: PreTrainedTokenizerBase, data_args, block_size: int, seed: int):
    """Both splits packed into blocks; the train split copy-rich where the recipe asks, validation cut to
    `eval_blocks` (natural text, so perplexity means the same with or without copy-rich training)."""
    packed = {
        split: pack_dataset(data, tokenizer, block_size, data_args.text_column) for split, data in corpus.items()
    }
    packed["train"] = make_copy_rich(packed["train"], data_args.copy_block_share, *data_args.copy_span_tokens, seed)
    if data_args.eval_blocks is not None and not data_args.dataset_streaming:
        packed["validation"] = packed["validation"].select(
            range(min(data_args.eval_blocks, len(packed["validation"])))
        )
    return packed
