"""Dataset mixtures in TRL's style: several sources (the built-in task, local files, Hub datasets), each with its own
split and a share of the mixture (`fraction`) or a number of rows (`rows`), blended into one training set.

In a recipe, TRL's mapping per source:

    dataset_mixture:
      - path: stdlib-function-name
        fraction: 0.75
      - path: data/my_chat.jsonl.gz
        fraction: 0.25

On the command line, `SOURCE[:AMOUNT]` per source, AMOUNT a fraction (`0.25`) or a number of rows (`2000`):

    make sft ARGS="--dataset_mixture stdlib-function-name:0.75 data/my_chat.jsonl:0.25"

Fractions follow TRL's rule: set for every source or for none, normalized to sum to one, and the mixture is as
large as it can be without repeating a row of any source (`max_train_examples` caps it further). Every source keeps
its own held-out rows (the built-in task's validation modules, a Hub dataset's test split, a local file's
`validation_percent`), so nothing held out is trained on; `max_eval_examples` is shared among the sources.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

logger = logging.getLogger("hf_recipes")


@dataclass(frozen=True)
class MixtureSource:
    path: str  # what `dataset_name` takes: the built-in task, a local file or folder, a Hub dataset id
    name: str | None = None  # Hub dataset config
    revision: str | None = None
    split: str = "train"
    test_split: str | None = "validation"
    fraction: float | None = None
    rows: int | None = None


def parse_source(entry: Any) -> MixtureSource:
    """One entry: TRL's mapping (path, name, revision, split, test_split, fraction or rows) or `SOURCE[:AMOUNT]`."""
    if isinstance(entry, dict):
        known = {field.name for field in fields(MixtureSource)}
        unknown = sorted(set(entry) - known)
        if unknown or "path" not in entry:
            problem = f"unknown key(s) {', '.join(unknown)}" if unknown else "no 'path'"
            raise ValueError(f"dataset_mixture entry {entry}: {problem}; keys: {', '.join(sorted(known))}")
        source = MixtureSource(**entry)
    elif isinstance(entry, str) and entry:
        path, _, amount = entry.rpartition(":") if _has_amount(entry) else (entry, "", "")
        if not amount:
            source = MixtureSource(path=path)
        elif amount.isdigit():
            source = MixtureSource(path=path, rows=int(amount))
        else:
            source = MixtureSource(path=path, fraction=float(amount))
    else:
        raise ValueError(f"dataset_mixture entry {entry!r}: write SOURCE[:AMOUNT] or a mapping with a 'path'")
    if source.fraction is not None and source.rows is not None:
        raise ValueError(f"dataset_mixture entry '{source.path}': give fraction or rows, not both")
    if source.fraction is not None and not 0 < source.fraction <= 1:
        raise ValueError(f"dataset_mixture entry '{source.path}': fraction {source.fraction} is not in (0, 1]")
    if source.rows is not None and source.rows < 1:
        raise ValueError(f"dataset_mixture entry '{source.path}': rows {source.rows} is not a positive count")
    return source


def _has_amount(entry: str) -> bool:
    """`data/x.jsonl:0.25` has one; `C:\\data\\x.jsonl` and `user/dataset` do not."""
    _, colon, amount = entry.rpartition(":")
    try:
        float(amount)
    except ValueError:
        return False
    return bool(colon)


def parse_mixture(entries: list[Any]) -> list[MixtureSource]:
    """Every entry parsed and the mixture checked as a whole (TRL's rule: fractions for all sources or for none)."""
    sources = [parse_source(entry) for entry in entries]
    with_fraction = [source.path for source in sources if source.fraction is not None]
    if with_fraction and len(with_fraction) != len(sources):
        raise ValueError(
            f"dataset_mixture gives a fraction for {', '.join(with_fraction)} only: give one to every source or to "
            "none (then each source gives all its rows, or `rows` of them)"
        )
    return sources


def mixture_sizes(sources: list[MixtureSource], available: list[int], max_total: int | None) -> list[int]:
    """How many training rows each source gives: by fraction (the largest mixture that repeats no row, within
    `max_total`), or its `rows` (all of them when unset), the total cut to `max_total` in proportion."""
    if sources and sources[0].fraction is not None:
        total_fraction = sum(source.fraction for source in sources)
        shares = [source.fraction / total_fraction for source in sources]
        largest = min(count / share for count, share in zip(available, shares, strict=True))
        total = min(largest, max_total) if max_total is not None else largest
        # floor with a tolerance: 0.6 / 0.8 * 400 is 299.99999999999994 in floating point.
        return [min(count, math.floor(share * total + 1e-9)) for count, share in zip(available, shares, strict=True)]
    sizes = [min(count, source.rows or count) for source, count in zip(sources, available, strict=True)]
    for source, count in zip(sources, available, strict=True):
        if source.rows and source.rows > count:
            logger.warning("dataset_mixture: %s asks for %d rows, has %d: all used", source.path, source.rows, count)
    if max_total is not None and sum(sizes) > max_total:
        scale = max_total / sum(sizes)
        sizes = [math.floor(size * scale) for size in sizes]
    return sizes


def load_mixture(
    entries: list[Any],
    load_splits: Callable[..., tuple[list[dict], list[dict]]],
    max_train: int | None,
    max_eval: int | None,
    validation_percent: float,
    seed: int,
    **load_options: Any,
) -> tuple[list[dict], list[dict]]:
    """(train, held-out) rows of the mixture through `load_splits` (load_chat_splits, load_preference_splits), each
    source's rows shuffled (seeded) before its share is taken and the blend shuffled again; the mixture is logged."""
    sources = parse_mixture(entries)
    eval_each = None if max_eval is None else max(1, max_eval // len(sources))
    loaded = [
        load_splits(
            dataset_name=source.path,
            dataset_config=source.name,
            dataset_revision=source.revision,
            train_split=source.split,
            test_split=source.test_split,
            max_eval=eval_each,
            validation_percent=validation_percent,
            seed=seed,
            **load_options,
        )
        for source in sources
    ]
    sizes = mixture_sizes(sources, [len(train) for train, _ in loaded], max_train)
    rng = random.Random(seed)
    train, held_out, lines = [], [], []
    for source, (source_train, source_held_out), size in zip(sources, loaded, sizes, strict=True):
        rows = list(source_train)
        rng.shuffle(rows)
        train += rows[:size]
        held_out += source_held_out
        lines.append((source, size, len(source_train), len(source_held_out)))
    rng.shuffle(train)
    logger.info(
        "Dataset mixture: %d training rows, %d held out\n%s",
        len(train),
        len(held_out),
        "\n".join(
            f"  {source.path} (split {source.split}): {size} of {available} rows = {size / max(1, len(train)):.1%} "
            f"of the mixture; {held} held out"
            for source, size, available, held in lines
        ),
    )
    return train, held_out
