"""Reward modeling: TRL's RewardTrainer on preference pairs (the built-in pairs or any format DPO takes), from a
chat model folder; writes a sequence-classification model whose score ranks answers, usable as GRPO's reward.

accelerate launch recipes/reward.py --config recipes/gpt2-tiny/reward.yaml [--key value ...]
"""

from __future__ import annotations

import functools

from datasets import Dataset
from transformers import AutoModelForSequenceClassification

from hf_recipes import lifecycle
from hf_recipes.plots import plot_losses
from hf_recipes.runtime import RecipeError
from hf_recipes.stages.chat_inputs import preference_data
from hf_recipes.trainers import RecipeRewardTrainer


def main(argv: list[str]) -> None:
    run = lifecycle.start("reward", argv, starts_from="a chat model folder (e.g. outputs/gpt2-tiny/sft)")
    if run is None:
        return
    data_args, model_args, training_args = run.arguments
    if model_args.use_peft or model_args.load_in_4bit:
        raise RecipeError("reward modeling trains the whole model and its new score head here: use_peft: false")

    # Checks that need no weights: data, tokenizer and its template, vocab.
    data = preference_data(data_args, model_args, training_args, "reward modeling")
    tokenizer, train_rows, eval_rows = data.tokenizer, data.train_rows, data.eval_rows

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
