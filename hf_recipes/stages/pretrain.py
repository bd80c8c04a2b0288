"""Pretrain a GPT-2-architecture model from scratch (or continue a Hub model) with the `transformers` Trainer.

accelerate launch recipes/pretrain.py --config recipes/gpt2-tiny/pretrain.yaml [--key value ...]
"""

from __future__ import annotations

import dataclasses
import functools

from transformers import default_data_collator

from hf_recipes import lifecycle
from hf_recipes.allocator import keeps_freed_memory
from hf_recipes.callbacks import RunLengthCallback, perplexity_of
from hf_recipes.chat import attach_chat_template
from hf_recipes.circuits import hold_circuit
from hf_recipes.data.curriculum import BlockCurriculum
from hf_recipes.data.packing import pack_corpus
from hf_recipes.data.sources import load_pretraining_corpus
from hf_recipes.evaluation import copying_probe
from hf_recipes.modeling import (
    log_pretraining_plan,
    model_size,
    pretraining_context_length,
    pretraining_model,
    tokens_per_step,
)
from hf_recipes.plots import plot_losses
from hf_recipes.runtime import RecipeError, logger
from hf_recipes.tokenization import pretraining_tokenizer
from hf_recipes.trainers import PretrainTrainer


def pretrain(run: lifecycle.StageRun) -> None:
    """Pretrain from scratch (or continue a model): tokenizer, packed corpus, Trainer, copying probe."""
    data_args, model_args, training_args = run.arguments

    # Everything a user can get wrong is checked before the model exists.
    n_positions = pretraining_context_length(model_args)
    if training_args.block_size > n_positions:
        raise RecipeError(f"block_size ({training_args.block_size}) is larger than n_positions ({n_positions})")
    if model_args.use_peft or model_args.load_in_4bit or model_args.load_in_8bit:
        raise RecipeError("pretraining trains every weight in full precision: use_peft/load_in_4bit are for sft/dpo")
    # Like attention_init, the hold is for a new model: with nothing planted there is nothing to hold.
    holds_circuit = training_args.hold_induction_circuit_steps != 0
    if holds_circuit and (model_args.attention_init != "induction" or model_args.model_name_or_path is not None):
        logger.info(
            "hold_induction_circuit_steps: no planted circuit to hold (attention_init normal or a model continued)"
        )
        holds_circuit = False
    corpus = load_pretraining_corpus(data_args, training_args.seed)
    with training_args.main_process_first(desc="tokenizer"):
        tokenizer = pretraining_tokenizer(model_args, corpus["train"][data_args.text_column], run.resume_dir)
    attach_chat_template(tokenizer, model_args.chat_template)
    with training_args.main_process_first(desc="packing"):
        packed = pack_corpus(corpus, tokenizer, data_args, training_args.block_size)

    model = pretraining_model(model_args, tokenizer)
    size = model_size(model, training_args.block_size)
    blocks = (None, None) if data_args.dataset_streaming else (len(packed["train"]), len(packed["validation"]))
    log_pretraining_plan(size, training_args, *blocks)
    curriculum = BlockCurriculum.from_arguments(data_args, training_args)
    if curriculum is not None:
        logger.info("Curriculum: %s", curriculum.describe())
    if training_args.should_save:  # before training: a resumed run must reuse exactly this tokenizer
        tokenizer.save_pretrained(run.output_dir)
    step_tokens = tokens_per_step(training_args)
    stage_callbacks = [RunLengthCallback(step_tokens)]
    if holds_circuit:
        stage_callbacks.append(
            hold_circuit(model, training_args.hold_induction_circuit_steps, training_args.hold_induction_copy_maps)
        )
    trainer = PretrainTrainer(
        model=model,
        # The initial evaluation runs inside train(), after accelerate wrapped the model: an evaluate() before train()
        # marks the bare model as prepared, DDP never wraps it, and each process then trains alone without a word.
        args=dataclasses.replace(training_args, eval_on_start=run.resume_dir is None),
        train_dataset=packed["train"],
        eval_dataset=packed["validation"],
        data_collator=default_data_collator,
        processing_class=tokenizer,
        callbacks=run.callbacks(*stage_callbacks),
        curriculum=curriculum,
    )
    result = run.train(trainer)
    initial = {}
    if run.resume_dir is None:
        initial_loss = next(e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e and e["step"] == 0)
        initial = {"initial_loss": initial_loss, "initial_perplexity": perplexity_of(initial_loss)}
    trainer.save_model(run.output_dir)
    final = trainer.evaluate()
    if not trainer.is_world_process_zero():
        return
    copying = copying_probe(trainer.model, packed["validation"], training_args.block_size)
    metrics = {
        **initial,
        "eval_loss": final["eval_loss"],
        "perplexity": perplexity_of(final["eval_loss"]),
        "train_tokens": result.global_step * step_tokens,
        "train_tokens_per_second": (result.global_step - run.first_step) * step_tokens / run.train_seconds,
        "parameters": size.total,
        "flops_per_token": size.flops_per_token,
        "copy_probe_loss_first": copying["loss_first"],
        "copy_probe_loss_repeat": copying["loss_repeat"],
    }
    summary = f"Validation perplexity {metrics['perplexity']:.2f}"
    run.finish(trainer, result, metrics, functools.partial(plot_losses, title="pretraining"), summary)


@keeps_freed_memory  # the full-vocabulary logits of a batch: 67 MB for gpt2-tiny's 4 x 512 tokens
def main(argv: list[str]) -> None:
    lifecycle.run_stage("pretrain", argv, pretrain)
