"""Preference tuning of the SFT model with TRL's DPOTrainer (LoRA by default, or the full model).

accelerate launch recipes/dpo.py --config recipes/gpt2-tiny/dpo.yaml [--key value ...]
"""

from __future__ import annotations

import functools

from datasets import Dataset

from hf_recipes import lifecycle, modeling
from hf_recipes.chat import describe_pair, pairs_within
from hf_recipes.data.sources import load_preference_splits, split_arguments
from hf_recipes.evaluation import headline, scores_of_stage
from hf_recipes.plots import plot_dpo
from hf_recipes.runtime import RecipeError, logger
from hf_recipes.tokenization import load_tokenizer
from hf_recipes.trainers import RecipeDPOTrainer


def main(argv: list[str]) -> None:
    run = lifecycle.start("dpo", argv, starts_from="the SFT folder (e.g. outputs/gpt2-tiny/sft)")
    if run is None:
        return
    data_args, model_args, training_args = run.arguments

    # Checks that need no weights: data, tokenizer and its template, vocab, reference, LoRA targets, 4-bit.
    train_pairs, eval_pairs = load_preference_splits(**split_arguments(data_args, training_args.seed))
    tokenizer = load_tokenizer(model_args.model_name_or_path, model_args.model_revision)
    if not tokenizer.chat_template:  # DPO keeps the SFT model's template: a new one would be a different task
        raise RecipeError(f"{model_args.model_name_or_path} has no chat template: start DPO from an SFT folder")
    config = modeling.load_config(model_args.model_name_or_path, model_args.model_revision)
    modeling.check_vocab(config, tokenizer)
    reference = model_args.ref_model_name_or_path
    if reference:
        modeling.check_vocab(modeling.load_config(reference), tokenizer)
    lora = modeling.lora_config(model_args)
    quantization = modeling.quantization_config(model_args)

    max_length = modeling.max_length_within_positions(training_args.max_length, config)
    train_rows = pairs_within(tokenizer, train_pairs, max_length)
    eval_rows = pairs_within(tokenizer, eval_pairs, max_length)
    logger.info(
        "Pairs within max_length=%d tokens: train %d of %d, held-out %d of %d (longer ones left out)",
        *(max_length, len(train_rows), len(train_pairs), len(eval_rows), len(eval_pairs)),
    )
    if not train_rows or not eval_rows:
        raise RecipeError(f"no pair fits max_length={max_length}; raise max_length or use shorter data")
    pairs_per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    logger.info(
        "Per optimizer step: %d pairs = %d sequences (policy forward+backward, reference forward) of up to %.0f "
        "tokens on average",
        *(pairs_per_step, 2 * pairs_per_step, sum(row["length"] for row in train_rows) / len(train_rows)),
    )
    logger.info("First training pair, through the model's chat template:\n%s", describe_pair(tokenizer, train_rows[0]))

    model = modeling.load_chat_model(model_args, quantization)
    # LoRA: TRL scores the reference with the adapter disabled (no second copy). Full model: TRL would reload the
    # reference from the model's path, so it is loaded here, explicitly, from the folder the policy came from.
    ref_model = None
    if reference:
        ref_model = modeling.load_chat_model(model_args, name_or_path=reference)
    elif not model_args.use_peft:
        ref_model = modeling.load_chat_model(model_args)
    eval_conversations = [{"messages": pair["prompt"] + pair["chosen"]} for pair in eval_rows]
    scores = functools.partial(scores_of_stage, tokenizer=tokenizer, conversations=eval_conversations,
                               data_args=data_args, batch_size=training_args.per_device_eval_batch_size)  # fmt: skip
    before = scores(model, when="before") if data_args.eval_before_training and run.resume_dir is None else {}
    run.record()
    trainer = RecipeDPOTrainer(
        model=model,
        ref_model=ref_model,
        args=training_args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=run.callbacks(),
        check_reference=training_args.check_reference,
    )
    trained = run.train_chat_model(trainer, tokenizer, model_args, functools.partial(scores, when="after"))
    if trained is None:  # not the main process
        return
    result, final_eval, after = trained
    metrics = {
        **before,
        **after,
        "reward_accuracy": final_eval["eval_rewards/accuracies"],
        "reward_margin": final_eval["eval_rewards/margins"],
        "eval_loss": final_eval["eval_loss"],
        "eval_pairs": len(eval_rows),
        "first_batch_dpo_loss": trainer.first_loss,
        "train_pairs": len(train_rows),
        "train_pairs_too_long": len(train_pairs) - len(train_rows),
        "eval_pairs_too_long": len(eval_pairs) - len(eval_rows),
        "beta": training_args.beta,
        "loss_type": training_args.loss_type,
        "lora": bool(model_args.use_peft),
    }
    summary = (
        f"Held-out reward accuracy {metrics['reward_accuracy']:.3f}, margin {metrics['reward_margin']:.3f}; "
        f"{headline(before, after)}"
    )
    plot = functools.partial(plot_dpo, loss_name=" + ".join(training_args.loss_type))
    run.finish(trainer, result, metrics, plot, summary)
