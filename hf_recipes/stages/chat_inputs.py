"""What the stages that start from a chat model (DPO, reward, GRPO) read before any weights: its tokenizer with its
chat template, its config (vocabulary checked), and for the preference stages the pairs that fit the context."""

from __future__ import annotations

from dataclasses import dataclass

from hf_recipes import modeling
from hf_recipes.chat import describe_pair, pairs_within
from hf_recipes.data.sources import load_preference_splits, load_training_splits
from hf_recipes.runtime import RecipeError, logger
from hf_recipes.tokenization import load_tokenizer


def chat_tokenizer_and_config(model_args, stage: str):
    """The start model's tokenizer and config; refused without a chat template (the data is rendered as the chat
    model was trained on it: a new template would be another task)."""
    tokenizer = load_tokenizer(model_args.model_name_or_path, model_args.model_revision)
    if not tokenizer.chat_template:
        raise RecipeError(f"{model_args.model_name_or_path} has no chat template: start {stage} from an SFT folder")
    config = modeling.load_config(model_args.model_name_or_path, model_args.model_revision)
    modeling.check_vocab(config, tokenizer)
    return tokenizer, config


@dataclass
class PreferenceData:
    tokenizer: object
    config: object
    train_pairs: list[dict]
    eval_pairs: list[dict]
    train_rows: list[dict]  # the pairs that fit max_length, each with its `length`
    eval_rows: list[dict]


def preference_data(data_args, model_args, training_args, stage: str) -> PreferenceData:
    """Pairs (train, held-out) through the chat model's template, the ones longer than max_length left out."""
    train_pairs, eval_pairs = load_training_splits(load_preference_splits, data_args, training_args.seed)
    tokenizer, config = chat_tokenizer_and_config(model_args, stage)
    max_length = modeling.max_length_within_positions(training_args.max_length, config)
    train_rows = pairs_within(tokenizer, train_pairs, max_length)
    eval_rows = pairs_within(tokenizer, eval_pairs, max_length)
    logger.info(
        "Pairs within max_length=%d tokens: train %d of %d, held-out %d of %d (longer ones left out)",
        *(max_length, len(train_rows), len(train_pairs), len(eval_rows), len(eval_pairs)),
    )
    if not train_rows or not eval_rows:
        raise RecipeError(f"no pair fits max_length={max_length}; raise max_length or use shorter data")
    logger.info("First training pair, through the model's chat template:\n%s", describe_pair(tokenizer, train_rows[0]))
    return PreferenceData(tokenizer, config, train_pairs, eval_pairs, train_rows, eval_rows)
