"""Preference tuning of the SFT model with TRL's DPOTrainer (LoRA by default, or the full model).

accelerate launch recipes/dpo.py --config recipes/gpt2-tiny/dpo.yaml [--key value ...]
"""

from __future__ import annotations

import functools

from hf_recipes import lifecycle, modeling
from hf_recipes.evaluation import headline
from hf_recipes.plots import plot_dpo
from hf_recipes.runtime import logger
from hf_recipes.stages.chat_inputs import preference_data
from hf_recipes.trainers import RecipeDPOTrainer


def preference_tune(run: lifecycle.StageRun) -> None:
    """Preference-tune the SFT model on the recipe's pairs, with the reference it is held to."""
    data_args, model_args, training_args = run.arguments

    # Checks that need no weights: data, tokenizer and its template, vocab, reference, LoRA targets, 4-bit.
    data = preference_data(data_args, model_args, training_args, "DPO")
    tokenizer, train_rows, eval_rows = data.tokenizer, data.train_rows, data.eval_rows
    reference = model_args.ref_model_name_or_path
    if reference:
        modeling.check_vocab(modeling.load_config(reference), tokenizer)
    lora = modeling.lora_config(model_args)
    quantization = modeling.quantization_config(model_args)
    pairs_per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    logger.info(
        "Per optimizer step: %d pairs = %d sequences (policy forward+backward, reference forward) of up to %.0f "
        "tokens on average",
        *(pairs_per_step, 2 * pairs_per_step, sum(row["length"] for row in train_rows) / len(train_rows)),
    )

    model = modeling.load_chat_model(model_args, quantization)
    # LoRA: TRL scores the reference with the adapter disabled (no second copy). Full model: TRL would reload the
    # reference from the model's path, so it is loaded here, explicitly, from the folder the policy came from.
    ref_model = None
    if reference:
        ref_model = modeling.load_chat_model(model_args, name_or_path=reference)
    elif not model_args.use_peft:
        ref_model = modeling.load_chat_model(model_args)
    eval_conversations = [{"messages": pair["prompt"] + pair["chosen"]} for pair in eval_rows]
    trainer = run.chat_trainer(
        RecipeDPOTrainer,
        model,
        tokenizer,
        eval_conversations,
        train_rows,
        eval_rows,
        ref_model=ref_model,
        peft_config=lora,
    )

    def results(final_eval, scores):
        metrics = {
            "reward_accuracy": final_eval["eval_rewards/accuracies"],
            "reward_margin": final_eval["eval_rewards/margins"],
            "eval_loss": final_eval["eval_loss"],
            "eval_pairs": len(eval_rows),
            "first_batch_dpo_loss": trainer.first_loss,
            "train_pairs": len(train_rows),
            "train_pairs_too_long": len(data.train_pairs) - len(train_rows),
            "eval_pairs_too_long": len(data.eval_pairs) - len(eval_rows),
            "beta": training_args.beta,
            "loss_type": training_args.loss_type,
            "lora": bool(model_args.use_peft),
        }
        accuracy, margin = metrics["reward_accuracy"], metrics["reward_margin"]
        return metrics, f"Held-out reward accuracy {accuracy:.3f}, margin {margin:.3f}; {headline(scores)}"

    plot = functools.partial(plot_dpo, loss_name=" + ".join(training_args.loss_type))
    run.train_chat_model(trainer, tokenizer, model_args, results, plot)


def main(argv: list[str]) -> None:
    lifecycle.run_stage("dpo", argv, preference_tune, starts_from="the SFT folder (e.g. outputs/gpt2-tiny/sft)")
