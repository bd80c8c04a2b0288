"""Supervised fine-tuning in a chat template (full, LoRA or QLoRA) with TRL's SFTTrainer.

accelerate launch recipes/sft.py --config recipes/gpt2-tiny/sft.yaml [--key value ...]
"""

import dataclasses
import time

from datasets import Dataset
from transformers import set_seed
from trl import SFTTrainer

from hf_recipes import modeling, runtime, training
from hf_recipes.chat import attach_chat_template, render_trained_tokens, tokenize_for_training
from hf_recipes.configs import parse_stage
from hf_recipes.data.sources import load_chat_splits, split_arguments
from hf_recipes.evaluation import chat_task_metrics
from hf_recipes.runtime import RecipeError, logger
from hf_recipes.tokenization import load_tokenizer


class RecipeSFTTrainer(training.PerplexityLogMixin, SFTTrainer):
    """TRL's SFTTrainer, logging eval perplexity next to eval loss."""


def main(argv: list[str]) -> None:
    data_args, model_args, training_args = parse_stage("sft", argv)
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
    if not model_args.model_name_or_path:
        raise RecipeError("model_name_or_path is required: the pretrained folder (e.g. outputs/gpt2-tiny/pretrain)")
    with training_args.main_process_first(desc="output folder"):  # one process deletes old checkpoints
        output_dir = training.prepare_output_dir(training_args, data_args, model_args, inputs=inputs)
    resume_dir = training.last_complete_checkpoint(output_dir) if not training_args.overwrite_output_dir else None

    # Checks that need no weights: data, tokenizer, template, vocab, LoRA targets, 4-bit.
    train_conversations, eval_conversations = load_chat_splits(
        data_args.dataset_name,
        data_args.dataset_config,
        data_args.dataset_revision,
        data_args.renamed_function_share,
        **split_arguments(data_args, training_args.seed),
    )
    tokenizer = load_tokenizer(model_args.model_name_or_path, model_args.model_revision)
    if data_args.chat_template or not tokenizer.chat_template:
        attach_chat_template(tokenizer, data_args.chat_template or "llama2")
    config = modeling.load_config(model_args.model_name_or_path, model_args.model_revision)
    modeling.check_vocab(config, tokenizer)
    lora = modeling.lora_config(model_args)
    quantization = modeling.quantization_config(model_args)

    max_length = training.max_length_within_positions(training_args.max_length, config)
    assistant_only = training_args.assistant_only_loss
    train_rows, train_kept = tokenize_for_training(tokenizer, train_conversations, max_length, "train", assistant_only)
    eval_rows, eval_kept = tokenize_for_training(tokenizer, eval_conversations, max_length, "held-out", assistant_only)
    logger.info(
        "Conversations within max_length=%d tokens: train %d of %d, held-out %d of %d (longer ones left out)",
        max_length,
        len(train_kept),
        len(train_conversations),
        len(eval_kept),
        len(eval_conversations),
    )
    if not train_rows or not eval_rows:
        raise RecipeError(f"no conversation fits max_length={max_length}; raise max_length or use shorter data")
    trained_tokens = sum(sum(label != -100 for label in row["labels"]) for row in train_rows)
    logger.info(
        "Train tokens: %s in total, %s of them trained (assistant answers and their eos)",
        f"{sum(len(row['input_ids']) for row in train_rows):,}",
        f"{trained_tokens:,}",
    )
    logger.info(
        "First training example, trained tokens in «»:\n%s",
        render_trained_tokens(tokenizer, train_kept[0]["messages"]),
    )

    model = modeling.load_model(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        dtype=model_args.dtype,
        quantization_config=quantization,
        attn_implementation=model_args.attn_implementation or "sdpa",
    )
    batch_size = training_args.per_device_eval_batch_size
    before = {}
    if data_args.eval_before_training and resume_dir is None:
        logger.info("Exact match and stop rate before SFT, on %d held-out conversations", len(eval_kept))
        scores = chat_task_metrics(model, tokenizer, eval_kept, data_args.eval_max_new_tokens, batch_size)
        before = {"exact_match_before": scores["exact_match"], "stop_rate_before": scores["stop_rate"]}
        logger.info("Before SFT: %s", before)

    runtime.write_run_config(output_dir, data_args, model_args, training_args, stage="sft", inputs=inputs)
    sigterm = training.SigtermCallback()
    trainer = RecipeSFTTrainer(
        model=model,
        # Our rows already carry labels masked from the template's generation blocks; TRL's own assistant-only pass
        # needs untokenized conversations, so it is switched off here rather than run twice.
        args=dataclasses.replace(training_args, assistant_only_loss=False),
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[training.NonFiniteLossCallback(), sigterm],
    )
    first_step = training.checkpoint_step(resume_dir)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_dir) if resume_dir else None)
    sigterm.exit_if_stopped(trainer)  # exit 143 after a checkpoint: no final model from a run cut short
    seconds = time.perf_counter() - started - training.seconds_spent_evaluating(trainer.state.log_history, first_step)
    final_eval = trainer.evaluate()

    if not trainer.is_world_process_zero():
        return
    if model_args.use_peft:  # keep the adapter, and write the merged model so the folder loads as a plain model
        trainer.model.save_pretrained(output_dir / "adapter")
        model = modeling.merge_lora(
            model_args.model_name_or_path, str(output_dir / "adapter"), model_args.model_revision
        )
    else:
        model = trainer.model
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)

    logger.info("Exact match and stop rate after SFT, on %d held-out conversations", len(eval_kept))
    after = chat_task_metrics(model, tokenizer, eval_kept, data_args.eval_max_new_tokens, batch_size)
    runtime.write_metrics(
        output_dir,
        {
            **before,
            **after,
            "eval_loss": final_eval["eval_loss"],
            "train_loss": result.training_loss,
            "train_steps": result.global_step,
            "train_examples": len(train_rows),
            "train_examples_too_long": len(train_conversations) - len(train_kept),
            "eval_examples_too_long": len(eval_conversations) - len(eval_kept),
            "train_seconds": seconds,
            **training.resume_record(first_step),
            "lora": bool(model_args.use_peft),
            "load_in_4bit": bool(model_args.load_in_4bit),
        },
    )
    training.plot_losses(trainer.state.log_history, output_dir / "plots" / "loss.png", "supervised fine-tuning")
    training.remove_pickled_args(output_dir)
    runtime.write_run_config(
        output_dir, data_args, model_args, training_args, stage="sft", complete=True, inputs=inputs
    )
    logger.info(
        "Exact match %.3f (before %s), stop rate %.3f; model folder: %s",
        after["exact_match"],
        before.get("exact_match_before", "not measured"),
        after["stop_rate"],
        output_dir,
    )
    if push_target:
        push_target.push(output_dir)


if __name__ == "__main__":
    runtime.run_recipe(main)
