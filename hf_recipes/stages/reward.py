"""Reward modeling: TRL's RewardTrainer on preference pairs (the built-in pairs or any format DPO takes), from a
chat model folder; writes a sequence-classification model whose score ranks answers, usable as GRPO's reward.

accelerate launch recipes/reward.py --config recipes/gpt2-tiny/reward.yaml [--key value ...]
"""

from __future__ import annotations

import functools

from transformers import AutoModelForSequenceClassification

from hf_recipes import lifecycle
from hf_recipes.plots import plot_losses
from hf_recipes.rewards import ANSWER_END, ANSWER_END_TEMPLATE_KWARGS
from hf_recipes.runtime import RecipeError
from hf_recipes.stages.chat_inputs import preference_data
from hf_recipes.trainers import RecipeRewardTrainer


def scored_at_answer_end(pairs: list[dict]) -> list[dict]:
    """The pairs as RewardTrainer rows that it renders with continue_final_message: each sequence ends with the
    answer's last token (no eos after it), where the score head reads."""
    keys = ("prompt", "chosen", "rejected")
    return [{**{key: pair[key] for key in keys}, "chat_template_kwargs": ANSWER_END_TEMPLATE_KWARGS} for pair in pairs]


def train_reward_model(run: lifecycle.StageRun) -> None:
    """Train a sequence-classification reward model on the recipe's pairs; held-out pair accuracy."""
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
    model.config.reward_read_at = ANSWER_END  # so GRPO reads it there too (rewards.reward_model_reward)

    trainer = RecipeRewardTrainer(
        model=model, **run.trainer_inputs(tokenizer, scored_at_answer_end(train_rows), scored_at_answer_end(eval_rows))
    )
    result = run.train(trainer)
    final_eval = trainer.evaluate()
    pair_accuracy = trainer.held_out_pair_accuracy()  # every process takes part in its gather
    if not trainer.is_world_process_zero():
        return
    trainer.save_model(run.output_dir)
    tokenizer.save_pretrained(run.output_dir)
    metrics = {
        "pair_accuracy": pair_accuracy,
        "pair_accuracy_batch_mean": final_eval["eval_accuracy"],  # TRL's, for comparison with its logged curve
        "reward_margin": final_eval.get("eval_margin"),
        "eval_loss": final_eval["eval_loss"],
        "eval_pairs": len(eval_rows),
        "train_pairs": len(train_rows),
    }
    summary = f"Held-out pair accuracy {metrics['pair_accuracy']:.3f} on {len(eval_rows)} pairs"
    run.finish(trainer, result, metrics, functools.partial(plot_losses, title="reward modeling"), summary)


def main(argv: list[str]) -> None:
    lifecycle.run_stage(
        "reward", argv, train_reward_model, starts_from="a chat model folder (e.g. outputs/gpt2-tiny/sft)"
    )
