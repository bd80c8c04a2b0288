"""Load and validate a text source for pretraining: the built-in `stdlib` corpus, local files, or a Hub dataset.

Every mistake a user can make here (missing file, missing column, empty data, bad encoding, uncached Hub id while
offline) is a RecipeError raised before any model loads.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict

from hf_recipes.data import stdlib
from hf_recipes.data.files import BUILDERS, COMPRESSIONS, data_suffix, looks_like_a_data_file, open_data_file
from hf_recipes.data.stdlib import BUILTIN_CHAT_TASK
from hf_recipes.runtime import RecipeError, logger


def stdlib_corpus(validation_percent: float = stdlib.VALIDATION_PERCENT) -> DatasetDict:
    """The standard library source as {train, validation} datasets of `path` and `text`, cached by `datasets`."""
    splits = {}
    for split in ("train", "validation"):
        modules = stdlib.split_modules(split, validation_percent)
        # from_generator caches by a hash of the function and its arguments: the same Python gives the same cache.
        splits[split] = Dataset.from_generator(
            stdlib.iter_documents, gen_kwargs={"modules": modules, "root": str(stdlib.STDLIB_ROOT)}
        )
    return DatasetDict(splits)


def local_files(path: Path) -> list[Path]:
    """The data files under `path` (itself, or the supported files of a folder), with one extension."""
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and data_suffix(p) in BUILDERS)
        if not files:
            raise RecipeError(f"{path}: no data files ({', '.join(BUILDERS)}) in this folder")
    suffixes = {BUILDERS.get(data_suffix(p)) for p in files}
    if None in suffixes:
        raise RecipeError(
            f"{files[0]}: unsupported file type; use one of {', '.join(BUILDERS)} (or compressed: "
            f"{', '.join(COMPRESSIONS)})"
        )
    if len(suffixes) > 1:
        raise RecipeError(f"{path}: mixes file types ({', '.join(sorted(p.suffix for p in files))}); use one kind")
    return files


def _check_text_files(files: list[Path], path: Path) -> None:
    """Refuse undecodable bytes (with file and line) and files with nothing in them."""
    if all(file.stat().st_size == 0 for file in files):
        raise RecipeError(f"{path} is empty")
    for file in files:
        if data_suffix(file) == ".parquet":
            continue
        with open_data_file(file) as handle:
            data = handle.read()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = data[: error.start].count(b"\n") + 1
            raise RecipeError(f"{file}:{line}: not UTF-8 text (byte offset {error.start})") from None


def load_local(path: Path, streaming: bool = False):
    """Load local files with the `datasets` builder for their extension, as a single 'train' split."""
    files = local_files(path)
    _check_text_files(files, path)
    builder = BUILDERS[data_suffix(files[0])]
    try:
        return datasets.load_dataset(builder, data_files={"train": [str(f) for f in files]}, streaming=streaming)
    except Exception as error:  # the builders raise ValueError, ArrowInvalid, DatasetGenerationError, ...
        cause = error.__cause__ or error
        raise RecipeError(f"{path}: could not be read as {builder}: {str(cause).splitlines()[0]}") from error


def load_hub(name: str, config: str | None, revision: str | None, streaming: bool):
    """Load a Hub dataset (or from the local cache when offline), turning failures into what to do."""
    try:
        return datasets.load_dataset(name, config, revision=revision, streaming=streaming)
    except Exception as error:  # datasets raises many types here (ConnectionError, FileNotFoundError, ValueError...)
        offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
        if offline:
            raise RecipeError(
                f"dataset '{name}' is not a local path and is not in the datasets cache, and offline mode "
                "(HF_DATASETS_OFFLINE/HF_HUB_OFFLINE=1) forbids downloading it: run once online or pass a local path"
            ) from error
        raise RecipeError(f"could not load dataset '{name}': {str(error).splitlines()[0]}") from error


def load_text_source(
    dataset_name: str,
    text_column: str = "text",
    dataset_config: str | None = None,
    dataset_revision: str | None = None,
    train_split: str = "train",
    test_split: str | None = None,
    validation_percent: float = stdlib.VALIDATION_PERCENT,
    streaming: bool = False,
    seed: int = 0,
) -> DatasetDict:
    """A {train, validation} DatasetDict with one `text` column, validated; errors name the file and the columns."""
    if dataset_name == "stdlib":
        if streaming:
            raise RecipeError("the built-in 'stdlib' corpus fits in memory; set dataset_streaming: false")
        return stdlib_corpus(validation_percent)
    where = f"dataset '{dataset_name}'"
    if os.path.exists(dataset_name):
        raw = load_local(Path(dataset_name), streaming)
        where = dataset_name
    elif dataset_name.startswith((".", "/", "~")) or looks_like_a_data_file(dataset_name):
        raise RecipeError(f"data file not found: {dataset_name}")
    else:
        raw = load_hub(dataset_name, dataset_config, dataset_revision, streaming)
    if train_split not in raw:
        raise RecipeError(f"{where} has no split '{train_split}'; it has {', '.join(raw)}")
    train = raw[train_split]
    columns = train.column_names or []
    if text_column not in columns:
        raise RecipeError(f"{where} has no column '{text_column}'; its columns are {', '.join(columns)}")
    if test_split is not None:
        if test_split not in raw:
            raise RecipeError(f"{where} has no split '{test_split}'; it has {', '.join(raw)}")
        splits = {"train": train, "validation": raw[test_split]}
    elif streaming:
        raise RecipeError("a streamed dataset needs dataset_test_split to validate on (it cannot be split by count)")
    else:
        if len(train) == 0:
            raise RecipeError(f"{where} is empty")
        held_out = train.train_test_split(test_size=max(1, round(len(train) * validation_percent / 100)), seed=seed)
        splits = {"train": held_out["train"], "validation": held_out["test"]}
    result = DatasetDict({split: data.select_columns([text_column]) for split, data in splits.items()})
    if not streaming:
        for split, data in result.items():
            if len(data) == 0 or not any(isinstance(t, str) and t.strip() for t in data[:1000][text_column]):
                raise RecipeError(f"{where}: the {split} split has no text in column '{text_column}'")
    return result


# ----------------------------------------------------------------------------------------------------------------
# Conversations (SFT, evaluation)
# ----------------------------------------------------------------------------------------------------------------


def load_chat_source(
    dataset_name: str,
    split: str,
    dataset_config: str | None = None,
    dataset_revision: str | None = None,
    limit: int | None = None,
    validation_percent: float = stdlib.VALIDATION_PERCENT,
    renamed_share: float = 0.0,
    code_lines: int | None = None,
    made_up_names: stdlib.MadeUpNames | None = None,
) -> list[dict]:
    """`[{"messages": [...]}, ...]` from the built-in task, a local file (.jsonl/.json/.parquet) or a Hub dataset.

    Any row shape that `formats` knows (messages, prompt/completion, alpaca, sharegpt) is converted, and every row
    is validated with its location (`file.jsonl:17`, `dataset 'x' row 17`) before any model loads.
    `renamed_share` gives that share of the built-in task's training functions a made-up name, and `code_lines` cuts
    them to their first lines (other data: both ignored); `made_up_names`: what the made-up names are made of.
    """
    from hf_recipes.data import formats

    if dataset_name == BUILTIN_CHAT_TASK:
        shown = (
            {"renamed_share": renamed_share, "code_lines": code_lines, "made_up_names": made_up_names}
            if split == "train"
            else {}
        )  # held out: as is
        return stdlib.function_name_conversations(split, limit, validation_percent, **shown)
    if renamed_share and split == "train":  # the recipes set it; `--dataset_name my.jsonl` alone must just work
        logger.info("renamed_function_share applies to the built-in task only: %s keeps its names", dataset_name)
    rows, source = located_rows(dataset_name, split, dataset_config, dataset_revision, limit)
    return formats.conversations_from_rows(rows, source=source)


def located_rows(dataset_name: str, split: str, dataset_config, dataset_revision, limit: int | None):
    """(rows, source): each row with its location (`file.jsonl:17`, `dataset 'x' row 17`) for its error messages,
    from a local file or folder (no splits: `split` is ignored) or a Hub dataset's `split`."""
    from hf_recipes.data import formats

    if os.path.exists(dataset_name):
        files = local_files(Path(dataset_name))
        if data_suffix(files[0]) == ".jsonl":
            rows = (located for file in files for located in formats.jsonl_rows(file))
        else:
            rows = formats.dataset_rows(load_local(Path(dataset_name))["train"], dataset_name)
        source = dataset_name
    elif dataset_name.startswith((".", "/", "~")) or looks_like_a_data_file(dataset_name):
        raise RecipeError(f"data file not found: {dataset_name}")
    else:
        raw = load_hub(dataset_name, dataset_config, dataset_revision, streaming=False)
        if split not in raw:
            raise RecipeError(f"dataset '{dataset_name}' has no split '{split}'; it has {', '.join(raw)}")
        rows = formats.dataset_rows(raw[split], dataset_name)
        source = f"dataset '{dataset_name}' split '{split}'"
    if limit is not None:
        rows = (row for _, row in zip(range(limit), rows, strict=False))
    return rows, source


# ----------------------------------------------------------------------------------------------------------------
# Preference pairs (DPO)
# ----------------------------------------------------------------------------------------------------------------


def load_preference_source(dataset_name, split, dataset_config=None, dataset_revision=None, limit=None,
                           validation_percent: float = stdlib.VALIDATION_PERCENT,
                           wrong_names: int = 1) -> list[dict]:  # fmt: skip
    """`[{"prompt": [...], "chosen": [...], "rejected": [...]}, ...]` (conversational) from the built-in pairs, a
    local file (.jsonl/.json/.parquet) or a Hub dataset.

    Every row is validated with its location (`file.jsonl:17`, `dataset 'x' row 17`) before any model loads. A local
    source has no splits: `split` is ignored and the whole file is returned (the caller holds rows out).
    """
    from hf_recipes.data import formats

    if dataset_name == BUILTIN_CHAT_TASK:
        pairs = stdlib.function_name_pairs(split, limit, validation_percent, wrong_names=wrong_names)
        if not pairs:
            raise RecipeError(f"the built-in task has no '{split}' pairs (validation_percent={validation_percent})")
        return pairs
    rows, source = located_rows(dataset_name, split, dataset_config, dataset_revision, limit)
    return formats.preference_pairs_from_rows(rows, source=source)


def held_out_splits(
    dataset_name: str,
    load,
    train_split: str = "train",
    test_split: str | None = "validation",
    max_train: int | None = None,
    max_eval: int | None = None,
    validation_percent: float = stdlib.VALIDATION_PERCENT,
    seed: int = 0,
) -> tuple[list[dict], list[dict]]:
    """(train, held-out) rows through `load(split, limit)`: the built-in task's module split, a Hub dataset's
    `test_split`, or, for a local source (which has no splits), `validation_percent` of its rows held out after a
    seeded shuffle, so held-out rows are never trained on."""
    import random

    no_split = test_split in (None, "", "none")
    if dataset_name == BUILTIN_CHAT_TASK:  # held out by module, never by row
        return load(train_split, max_train), load("validation" if no_split else test_split, max_eval)
    if not os.path.exists(dataset_name) and not no_split:
        return load(train_split, max_train), load(test_split, max_eval)
    rows = load(train_split, None)
    if len(rows) < 2:
        raise RecipeError(f"{dataset_name}: {len(rows)} row(s); need at least 2 to hold one out for evaluation")
    random.Random(seed).shuffle(rows)
    held_out = max(1, round(len(rows) * validation_percent / 100))
    return rows[held_out:][:max_train], rows[:held_out][:max_eval]


def split_arguments(data_args, seed: int) -> dict:
    """A chat stage's data fields (HeldOutChatData) as the arguments of load_chat_splits / load_preference_splits."""
    return {
        "dataset_name": data_args.dataset_name,
        "dataset_config": data_args.dataset_config,
        "dataset_revision": data_args.dataset_revision,
        "train_split": data_args.dataset_train_split,
        "test_split": data_args.dataset_test_split,
        "max_train": data_args.max_train_examples,
        "max_eval": data_args.max_eval_examples,
        "validation_percent": data_args.validation_percent,
        "seed": seed,
    }


def load_training_splits(
    load_splits, data_args, seed: int, tokenizer=None, **load_options
) -> tuple[list[dict], list[dict]]:
    """(train, held-out) rows of the recipe's `dataset_name`, or of its `dataset_mixture` when it has one, through
    `load_splits` (load_chat_splits, load_preference_splits or load_prompt_splits). `tokenizer`: the model's, for
    made-up names from its vocabulary (`renamed_function_pieces: vocabulary`)."""
    if hasattr(data_args, "renamed_function_share"):  # SFT's and GRPO's data (BuiltinTrainingFunctions)
        load_options["renamed_share"] = data_args.renamed_function_share
        load_options["code_lines"] = data_args.training_code_lines
        kept_words_share = data_args.renamed_function_kept_words_share
        if not 0.0 <= kept_words_share <= 1.0:
            raise RecipeError(f"renamed_function_kept_words_share must be within [0, 1], not {kept_words_share}")
        if kept_words_share and data_args.renamed_function_pieces != "vocabulary":
            raise RecipeError("renamed_function_kept_words_share needs renamed_function_pieces: vocabulary")
        if data_args.renamed_function_share and data_args.renamed_function_pieces == "vocabulary":
            if tokenizer is None:
                raise RecipeError("renamed_function_pieces: vocabulary needs the model's tokenizer")
            names = stdlib.vocabulary_names(tokenizer)
            if not names.pieces:
                raise RecipeError("renamed_function_pieces: vocabulary: the tokenizer has no identifier-like tokens")
            load_options["made_up_names"] = replace(names, kept_words_share=kept_words_share)
    if hasattr(data_args, "wrong_names_per_function"):  # DPO's and reward modeling's data (BuiltinTrainingPairs)
        load_options["wrong_names"] = data_args.wrong_names_per_function
    if not data_args.dataset_mixture:
        return load_splits(**split_arguments(data_args, seed), **load_options)
    from hf_recipes.data.mixture import load_mixture

    return load_mixture(
        data_args.dataset_mixture,
        load_splits,
        max_train=data_args.max_train_examples,
        max_eval=data_args.max_eval_examples,
        validation_percent=data_args.validation_percent,
        seed=seed,
        **load_options,
    )


def load_chat_splits(
    dataset_name: str,
    dataset_config=None,
    dataset_revision=None,
    renamed_share=0.0,
    code_lines=None,
    made_up_names=None,
    **split_args,
):
    """(train, held-out) conversations; see `held_out_splits` for how rows are held out."""

    def load(split: str, limit: int | None) -> list[dict]:
        percent = split_args.get("validation_percent", stdlib.VALIDATION_PERCENT)
        shown = {"renamed_share": renamed_share, "code_lines": code_lines, "made_up_names": made_up_names}
        return load_chat_source(dataset_name, split, dataset_config, dataset_revision, limit, percent, **shown)

    return held_out_splits(dataset_name, load, **split_args)


def load_preference_splits(dataset_name: str, dataset_config=None, dataset_revision=None, wrong_names=1, **split_args):
    """(train, held-out) preference pairs; see `held_out_splits` for how rows are held out. `wrong_names`: pairs
    per built-in training function (held out: one each)."""

    def load(split: str, limit: int | None) -> list[dict]:
        percent = split_args.get("validation_percent", stdlib.VALIDATION_PERCENT)
        per_function = wrong_names if split == "train" else 1
        source = (dataset_name, split, dataset_config, dataset_revision)
        return load_preference_source(*source, limit, percent, per_function)

    return held_out_splits(dataset_name, load, **split_args)


def load_pretraining_corpus(data_args, seed: int) -> dict[str, Any]:
    """The train and validation splits of the recipe's text source, the train split cut to `max_documents`."""
    corpus = load_text_source(
        data_args.dataset_name,
        data_args.text_column,
        data_args.dataset_config,
        data_args.dataset_revision,
        data_args.dataset_train_split,
        data_args.dataset_test_split,
        data_args.validation_percent,
        data_args.dataset_streaming,
        seed,
    )
    if data_args.max_documents is not None and not data_args.dataset_streaming:
        corpus["train"] = corpus["train"].select(range(min(data_args.max_documents, len(corpus["train"]))))
    return corpus
