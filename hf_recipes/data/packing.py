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


def pack_corpus(corpus: dict[str, Any], tokenizer: PreTrainedTokenizerBase, data_args, block_size: int):
    """Both splits packed into natural blocks (the curriculum rewrites training batches as they are drawn:
    hf_recipes.data.curriculum), validation cut to `eval_blocks`."""
    packed = {
        split: pack_dataset(data, tokenizer, block_size, data_args.text_column) for split, data in corpus.items()
    }
    if data_args.eval_blocks is not None and not data_args.dataset_streaming:
        packed["validation"] = packed["validation"].select(
            range(min(data_args.eval_blocks, len(packed["validation"])))
        )
    return packed
