"""Reward modeling: TRL's RewardTrainer on preference pairs (the built-in pairs or any format DPO takes), from a
chat model folder; writes a sequence-classification model whose score ranks answers, usable as GRPO's reward.

accelerate launch recipes/reward.py --config recipes/gpt2-tiny/reward.yaml [--key value ...]
"""

from __future__ import annotations

import functools

from datasets import Dataset
from transformers import AutoModelForSequenceClassification

from hf_recipes import lifecycle, modeling
from hf_recipes.chat import describe_pair, pairs_within
from hf_recipes.data.sources import load_preference_splits, split_arguments
from hf_recipes.plots import plot_losses
from hf_recipes.runtime import RecipeError, logger
from hf_recipes.tokenization import load_tokenizer
from hf_recipes.trainers import RecipeRewardTrainer


def main(argv: list[str]) -> None:
    run = lifecycle.start("reward", argv, starts_from="a chat model folder (e.g. outputs/gpt2-tiny/sft)")
    if run is None:
        return
    data_args, model_args, training_args = run.arguments
    if model_args.use_peft or model_args.load_in_4bit:
        raise RecipeError("reward modeling trains the whole model and its new score head here: use_peft: false")

    # Checks that need no weights: data, tokenizer and its template, vocab.
    train_pairs, eval_pairs = load_preference_splits(**split_arguments(data_args, training_args.seed))
    tokenizer = load_tokenizer(model_args.model_name_or_path, model_args.model_revision)
    if not tokenizer.chat_template:  # pairs are scored as the chat model renders them
        raise RecipeError(f"{model_args.model_name_or_path} has no chat template: start from an SFT folder")
    config = modeling.load_config(model_args.model_name_or_path, model_args.model_revision)
    modeling.check_vocab(config, tokenizer)
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

    # The causal LM's body with a new one-output score head (its weights are reported as newly initialized).
    model = AutoModelForSequenceClassification.from_pretrained(
        model_args.model_name_or_path, revision=model_args.model_revision, num_labels=1, dtype=model_args.dtype
    )
    model.config.pad_token_id = tokenizer.pad_token_id  # the score is read at the last token before padding
    run.record()
    trainer = RecipeRewardTrainer(
        model=model,
        args=training_args,
        train_dataset=Dataset.from_list([{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in train_rows]),
        eval_dataset=Dataset.from_list([{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in eval_rows]),
        processing_class=tokenizer,
        callbacks=run.callbacks(),
    )
    result = run.train(trainer)
    final_eval = trainer.evaluate()
    if not trainer.is_world_process_zero():
        return
    trainer.save_model(run.output_dir)
    tokenizer.save_pretrained(run.output_dir)
    metrics = {
        "pair_accuracy": final_eval["eval_accuracy"],
        "reward_margin": final_eval.get("eval_margin"),
        "eval_loss": final_eval["eval_loss"],
        "eval_pairs": len(eval_rows),
        "train_pairs": len(train_rows),
    }
    summary = f"Held-out pair accuracy {metrics['pair_accuracy']:.3f} on {len(eval_rows)} pairs"
    run.finish(trainer, result, metrics, functools.partial(plot_losses, title="reward modeling"), summary)
