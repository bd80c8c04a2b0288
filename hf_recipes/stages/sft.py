"""Supervised fine-tuning in a chat template (full, LoRA or QLoRA) with TRL's SFTTrainer.

accelerate launch recipes/sft.py --config recipes/gpt2-tiny/sft.yaml [--key value ...]
"""

from __future__ import annotations

import functools
from dataclasses import replace

from hf_recipes import lifecycle, modeling
from hf_recipes.callbacks import perplexity_of
from hf_recipes.chat import attach_chat_template, log_training_rows, tokenize_for_training
from hf_recipes.circuits import check_circuit_layout, hold_circuit
from hf_recipes.data.sources import load_chat_splits, load_training_splits
from hf_recipes.evaluation import headline
from hf_recipes.plots import plot_losses
from hf_recipes.runtime import RecipeError, logger
from hf_recipes.tokenization import load_tokenizer
from hf_recipes.trainers import RecipeSFTTrainer


def fine_tune(run: lifecycle.StageRun) -> None:
    """Fine-tune the model on the recipe's conversations and score it on the held-out ones."""
    data_args, model_args, training_args = run.arguments

    # Checks that need no weights: data, tokenizer, template, vocab, LoRA targets, 4-bit.
    tokenizer = load_tokenizer(model_args.model_name_or_path, model_args.model_revision)
    train_conversations, eval_conversations = load_training_splits(
        load_chat_splits, data_args, training_args.seed, tokenizer=tokenizer
    )
    if data_args.chat_template or not tokenizer.chat_template:
        attach_chat_template(tokenizer, data_args.chat_template or "llama2")
    config = modeling.load_config(model_args.model_name_or_path, model_args.model_revision)
    modeling.check_vocab(config, tokenizer)
    lora = modeling.lora_config(model_args)
    quantization = modeling.quantization_config(model_args)
    max_length = modeling.max_length_within_positions(training_args.max_length, config)
    tokenize = functools.partial(tokenize_for_training, tokenizer, max_length=max_length)
    train_rows, train_kept = tokenize(
        train_conversations, where="train", assistant_only=training_args.assistant_only_loss
    )
    eval_rows, eval_kept = tokenize(
        eval_conversations, where="held-out", assistant_only=training_args.assistant_only_loss
    )
    logger.info(
        "Conversations within max_length=%d tokens: train %d of %d, held-out %d of %d (longer ones left out)",
        *(max_length, len(train_kept), len(train_conversations), len(eval_kept), len(eval_conversations)),
    )
    if not train_rows or not eval_rows:
        raise RecipeError(f"no conversation fits max_length={max_length}; raise max_length or use shorter data")
    log_training_rows(tokenizer, train_rows, train_kept, len(train_conversations))

    # LoRA trains adapters, not the base weights: nothing to write back (merged, the adapters move it a little).
    holds_circuit = training_args.hold_induction_circuit_steps != 0 and lora is None
    if holds_circuit:
        check_circuit_layout(config)
    model = modeling.load_chat_model(model_args, quantization)
    trainer = run.chat_trainer(
        RecipeSFTTrainer,
        model,
        tokenizer,
        eval_kept,
        train_rows,
        eval_rows,
        peft_config=lora,
        # Our rows already carry labels masked from the template's generation blocks; TRL's own assistant-only pass
        # needs untokenized conversations, so it is switched off here rather than run twice.
        args=replace(training_args, assistant_only_loss=False),
    )
    if holds_circuit:  # the values the model came with: a pretraining that held its planted circuit kept them
        trainer.add_callback(
            hold_circuit(model, training_args.hold_induction_circuit_steps, training_args.hold_induction_copy_maps)
        )

    def results(final_eval, scores):
        metrics = {
            "eval_loss": final_eval["eval_loss"],  # the loss on held-out answers (and their eos) only
            "answer_perplexity": perplexity_of(final_eval["eval_loss"]),
            "train_examples": len(train_rows),
            "train_examples_too_long": len(train_conversations) - len(train_kept),
            "eval_examples_too_long": len(eval_conversations) - len(eval_kept),
            "lora": bool(model_args.use_peft),
            "load_in_4bit": bool(model_args.load_in_4bit),
        }
        return metrics, f"Held-out answer perplexity {metrics['answer_perplexity']:.2f}, {headline(scores)}"

    plot = functools.partial(plot_losses, title="supervised fine-tuning")
    run.train_chat_model(trainer, tokenizer, model_args, results, plot)


def main(argv: list[str]) -> None:
    lifecycle.run_stage("sft", argv, fine_tune, starts_from="the pretrained folder (e.g. outputs/gpt2-tiny/pretrain)")
