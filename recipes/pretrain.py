"""Pretrain a GPT-2-architecture model from scratch or from the Hub with the `transformers` Trainer.

accelerate launch recipes/pretrain.py --config recipes/gpt2-tiny/pretrain.yaml [--key value ...]
"""

import dataclasses
import itertools
import time

from transformers import AutoConfig, Trainer, default_data_collator, set_seed

from hf_recipes import runtime, training
from hf_recipes.chat import attach_chat_template
from hf_recipes.configs import parse_stage
from hf_recipes.data.packing import make_copy_rich, pack_dataset
from hf_recipes.data.sources import load_text_source
from hf_recipes.evaluation import repeated_span_loss
from hf_recipes.modeling import build_model, explain_load_error, gpt2_config, load_model, model_size, pad_vocab_size
from hf_recipes.runtime import RecipeError, logger
from hf_recipes.tokenization import load_tokenizer, train_bpe_tokenizer


class PretrainTrainer(training.PerplexityLogMixin, training.TiedWeightsLoadMixin, Trainer):
    """The stock Trainer, logging eval perplexity next to eval loss."""


def n_positions_of(model_args) -> int:
    """The context length the model will have, known before any weights load."""
    if model_args.model_name_or_path is None:
        from hf_recipes.modeling import PRESETS

        return model_args.n_positions or PRESETS.get(model_args.preset, {}).get("n_positions", 0)
    try:
        config = AutoConfig.from_pretrained(
            model_args.model_name_or_path,
            revision=model_args.model_revision,
            trust_remote_code=model_args.trust_remote_code,
        )
    except (OSError, ValueError) as error:
        raise explain_load_error(model_args.model_name_or_path, model_args.model_revision, "config", error) from error
    return getattr(config, "n_positions", None) or config.max_position_embeddings


def make_tokenizer(model_args, train_texts, resume_dir):
    """Reuse the run's own tokenizer on resume; else the named one, the model's, or a new BPE on the train split."""
    if resume_dir is not None:
        return load_tokenizer(str(resume_dir.parent))
    source = model_args.tokenizer_name_or_path or model_args.model_name_or_path
    if source:
        return load_tokenizer(
            source, revision=model_args.model_revision, trust_remote_code=model_args.trust_remote_code
        )
    logger.info(
        "Training a byte-level BPE tokenizer (vocab %d) on the training split", model_args.tokenizer_vocab_size
    )
    return train_bpe_tokenizer(train_texts, vocab_size=model_args.tokenizer_vocab_size)


def make_model(model_args, tokenizer):
    if model_args.model_name_or_path is None:
        config = gpt2_config(
            model_args.preset,
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            dropout=model_args.dropout,
            n_layer=model_args.n_layer,
            n_head=model_args.n_head,
            n_embd=model_args.n_embd,
            n_positions=model_args.n_positions,
        )
        return build_model(config)
    model = load_model(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=model_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation or "sdpa",
    )
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:  # e.g. the pad token we added to GPT-2's
        model.resize_token_embeddings(pad_vocab_size(len(tokenizer)))
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def copying_probe(model, validation, block_size: int) -> dict[str, float]:
    """Can the model copy? Loss on a repeated held-out span vs its first reading (logged; see repeated_span_loss)."""
    span = min(128, block_size // 2)
    blocks = [row["input_ids"] for row in itertools.islice(validation, 16)]  # works on streamed data too
    copying = repeated_span_loss(model, blocks, span)
    logger.info(
        "Copying probe: loss %.2f on %d-token held-out spans, %.2f on the same spans repeated right after "
        "(a model that can copy predicts a repeat almost perfectly)",
        copying["loss_first"],
        span,
        copying["loss_repeat"],
    )
    return copying


def main(argv: list[str]) -> None:
    data_args, model_args, training_args = parse_stage("pretrain", argv)
    runtime.setup_logging(training_args.process_index == 0)
    logger.info("%s", training_args.precision.describe())  # e.g. fp32 on a CPU without native bf16
    set_seed(training_args.seed)
    push_target = training.take_hub_settings(training_args)  # the Trainer never pushes; checked now
    inputs = training.input_fingerprints(model_args.model_name_or_path)
    if training.skip_if_finished(
        training_args.output_dir,
        training_args,
        data_args,
        model_args,
        inputs=inputs,
        overwrite=training_args.overwrite_output_dir,
    ):
        return
    with training_args.main_process_first(desc="output folder"):  # one process deletes old checkpoints
        output_dir = training.prepare_output_dir(training_args, data_args, model_args, inputs=inputs)
    resume_dir = training.last_complete_checkpoint(output_dir) if not training_args.overwrite_output_dir else None

    # Everything a user can get wrong is checked before the model exists.
    n_positions = n_positions_of(model_args)
    if training_args.block_size > n_positions:
        raise RecipeError(f"block_size ({training_args.block_size}) is larger than n_positions ({n_positions})")
    corpus = load_text_source(
        data_args.dataset_name,
        data_args.text_column,
        data_args.dataset_config,
        data_args.dataset_revision,
        data_args.dataset_train_split,
        data_args.dataset_test_split,
        data_args.validation_percent,
        data_args.dataset_streaming,
        training_args.seed,
    )
    if data_args.max_documents is not None and not data_args.dataset_streaming:
        corpus["train"] = corpus["train"].select(range(min(data_args.max_documents, len(corpus["train"]))))
    spans = data_args.copy_span_tokens
    if data_args.copy_block_share and not (
        0 < data_args.copy_block_share <= 1 and len(spans) == 2 and 2 <= spans[0] <= spans[1]
    ):
        raise RecipeError(
            f"copy_block_share must be in (0, 1] and copy_span_tokens [shortest, longest] with 2 <= shortest <= "
            f"longest (got {data_args.copy_block_share}, {spans})"
        )
    if data_args.copy_block_share and data_args.dataset_streaming:
        raise RecipeError("copy_block_share rewrites packed blocks in memory: not with dataset_streaming")
    if model_args.use_peft or model_args.load_in_4bit or model_args.load_in_8bit:
        raise RecipeError("pretraining trains every weight in full precision: use_peft/load_in_4bit are for sft/dpo")

    with training_args.main_process_first(desc="tokenizer"):
        tokenizer = make_tokenizer(model_args, corpus["train"][data_args.text_column], resume_dir)
    attach_chat_template(tokenizer, model_args.chat_template)
    with training_args.main_process_first(desc="packing"):
        packed = {
            split: pack_dataset(data, tokenizer, training_args.block_size, data_args.text_column)
            for split, data in corpus.items()
        }
        packed["train"] = make_copy_rich(packed["train"], data_args.copy_block_share, *spans, training_args.seed)
    if data_args.max_eval_samples is not None and not data_args.dataset_streaming:
        packed["validation"] = packed["validation"].select(
            range(min(data_args.max_eval_samples, len(packed["validation"])))
        )

    model = make_model(model_args, tokenizer)
    size = model_size(model, training_args.block_size)
    # per-device batch x devices x accumulation x block_size, e.g. 16 x 1 x 1 x 256 = 4,096 tokens/step
    tokens_per_step = (
        training_args.per_device_train_batch_size
        * training_args.world_size
        * training_args.gradient_accumulation_steps
        * training_args.block_size
    )
    train_blocks = len(packed["train"]) if not data_args.dataset_streaming else None
    total_tokens = (
        training_args.max_steps * tokens_per_step
        if training_args.max_steps > 0
        else round(training_args.num_train_epochs * (train_blocks or 0) * training_args.block_size)
    )
    logger.info("Model: %s", size.describe())
    if train_blocks is not None:
        logger.info(
            "Data: %s train blocks, %s validation blocks of %d tokens",
            f"{train_blocks:,}",
            f"{len(packed['validation']):,}",
            training_args.block_size,
        )
    logger.info(
        "Tokens per optimizer step: %s; total training tokens: %s; compute: %.2f PFLOPs",
        f"{tokens_per_step:,}",
        f"{total_tokens:,}",
        total_tokens * size.flops_per_token / 1e15,
    )

    if training_args.should_save:  # one writer per folder when several processes train
        tokenizer.save_pretrained(output_dir)  # before training: a resumed run must reuse exactly this tokenizer
        runtime.write_run_config(output_dir, data_args, model_args, training_args, stage="pretrain", inputs=inputs)
    sigterm = training.SigtermCallback()
    trainer = PretrainTrainer(
        model=model,
        # The initial evaluation runs inside train(), after accelerate wrapped the model: an evaluate() before train()
        # marks the bare model as prepared, DDP never wraps it, and each process then trains alone without a word.
        args=dataclasses.replace(training_args, eval_on_start=resume_dir is None),
        train_dataset=packed["train"],
        eval_dataset=packed["validation"],
        data_collator=default_data_collator,
        processing_class=tokenizer,
        callbacks=[training.NonFiniteLossCallback(), training.RunLengthCallback(tokens_per_step), sigterm],
    )
    if resume_dir is not None:
        logger.info("Resuming from %s", resume_dir)
    first_step = training.checkpoint_step(resume_dir)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_dir) if resume_dir else None)
    sigterm.exit_if_stopped(trainer)  # exit 143 after a checkpoint: no final model from a run cut short
    initial = {}
    if resume_dir is None:
        initial_loss = next(e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e and e["step"] == 0)
        initial = {"initial_loss": initial_loss, "initial_perplexity": training.perplexity_of(initial_loss)}
    # Tokens per second of training alone: evaluations (the initial one too) are not training throughput.
    evaluations = training.seconds_spent_evaluating(trainer.state.log_history, first_step if resume_dir else -1)
    seconds = time.perf_counter() - started - evaluations
    trainer.save_model(output_dir)
    final = trainer.evaluate()

    if trainer.is_world_process_zero():
        trained_tokens = result.global_step * tokens_per_step
        copying = copying_probe(trainer.model, packed["validation"], training_args.block_size)
        runtime.write_metrics(
            output_dir,
            {
                **initial,
                "eval_loss": final["eval_loss"],
                "perplexity": training.perplexity_of(final["eval_loss"]),
                "train_loss": result.training_loss,
                "train_steps": result.global_step,
                "train_tokens": trained_tokens,
                "train_tokens_per_second": (result.global_step - first_step) * tokens_per_step / seconds,
                "train_seconds": seconds,
                **training.resume_record(first_step),
                "parameters": size.total,
                "flops_per_token": size.flops_per_token,
                "copy_probe_loss_first": copying["loss_first"],
                "copy_probe_loss_repeat": copying["loss_repeat"],
            },
        )
        training.plot_losses(trainer.state.log_history, output_dir / "plots" / "loss.png", "pretraining")
        training.remove_pickled_args(output_dir)
        runtime.write_run_config(
            output_dir, data_args, model_args, training_args, stage="pretrain", complete=True, inputs=inputs
        )
        logger.info(
            "Validation perplexity %.2f; model folder: %s", training.perplexity_of(final["eval_loss"]), output_dir
        )
        if push_target:
            push_target.push(output_dir)


if __name__ == "__main__":
    runtime.run_recipe(main)
