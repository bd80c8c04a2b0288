"""Preference tuning of the SFT model with TRL's DPOTrainer (LoRA by default, or the full model).

accelerate launch recipes/dpo.py --config recipes/gpt2-tiny/dpo.yaml [--key value ...]
"""

import functools
import math
import os
import time
from collections import defaultdict

import torch
from datasets import Dataset
from transformers import set_seed
from trl import DPOTrainer

from hf_recipes import modeling, runtime, training
from hf_recipes.chat import render
from hf_recipes.configs import parse_stage
from hf_recipes.data.sources import load_preference_splits, split_arguments
from hf_recipes.evaluation import chat_task_metrics
from hf_recipes.runtime import RecipeError, logger
from hf_recipes.tokenization import load_tokenizer

LN2 = math.log(2)  # the sigmoid DPO loss when policy and reference agree: -log sigmoid(0)


class RecipeDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer, stopping at the first training batch unless the reference is the starting policy."""

    def __init__(self, *args, check_reference: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.check_reference = check_reference
        self.first_loss: float | None = None

    def _set_signature_columns_if_needed(self):
        # Keep the `length` column through column pruning: train_sampling_strategy group_by_length batches pairs of
        # similar length, so far fewer padding tokens are computed.
        super()._set_signature_columns_if_needed()
        self._signature_columns = [*self._signature_columns, self.args.length_column_name]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # The first batch of a fresh run (not of a resumed one), as the optimizer is about to step on it.
        if self.first_loss is None and model.training and self.state.global_step == 0:
            loss = (result[0] if return_outputs else result).item()
            self.first_loss = loss if self.plain_sigmoid() else self.sigmoid_loss(model, inputs)
            logger.info(
                "First batch DPO loss %.6f (ln 2 = %.6f when the reference is the policy)", self.first_loss, LN2
            )
            if self.check_reference and abs(self.first_loss - LN2) > 1e-3:
                dropout = "" if self.args.disable_dropout else "; or dropout is on: keep disable_dropout: true"
                raise RecipeError(
                    f"the first batch's DPO loss is {self.first_loss:.6f}, not ln 2 = {LN2:.6f}: the reference "
                    f"model is not the starting policy{dropout} (leave ref_model_name_or_path unset, or set "
                    "check_reference: false when a different reference is intended)"
                )
        return result

    def plain_sigmoid(self) -> bool:
        return self.loss_types == ["sigmoid"] and not self.use_weighting

    def sigmoid_loss(self, model, inputs) -> float:
        """The batch's plain sigmoid DPO loss through TRL's own loss code, without gradient or logged metrics.

        For a mix such as loss_type [sigmoid, sft], whose total is not ln 2 at the start even when the reference is
        right, while its DPO part is.
        """
        saved = (self.loss_types, self.loss_weights, self.use_weighting, self._metrics, self._total_train_tokens)
        self.loss_types, self.loss_weights, self.use_weighting = ["sigmoid"], [1.0], False
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        try:
            with torch.no_grad():
                return self._compute_loss(model, inputs, return_outputs=False).item()
        finally:
            self.loss_types, self.loss_weights, self.use_weighting, self._metrics, self._total_train_tokens = saved


def pairs_within(tokenizer, pairs: list[dict], max_length: int) -> list[dict]:
    """The pairs whose prompt + longer answer fits `max_length` tokens (never truncated: a cut answer compares
    nothing), each with that `length` in tokens."""
    texts = [render(tokenizer, pair["prompt"] + pair[side]) for pair in pairs for side in ("chosen", "rejected")]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    rows = [{**pair, "length": max(lengths[2 * i], lengths[2 * i + 1])} for i, pair in enumerate(pairs)]
    return [row for row in rows if row["length"] <= max_length]


def describe_pair(tokenizer, pair: dict) -> str:
    prompt = render(tokenizer, pair["prompt"], add_generation_prompt=True)
    answers = {
        side: render(tokenizer, pair["prompt"] + pair[side]).removeprefix(prompt) for side in ("chosen", "rejected")
    }
    return f"{prompt}\n  chosen:   {answers['chosen']!r}\n  rejected: {answers['rejected']!r}"


def plot_dpo(log_history: list[dict], path, loss_name: str) -> None:
    """Loss and reward accuracy (train windows, held-out) against step, as a PNG."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    def series(key):
        return [(entry["step"], entry[key]) for entry in log_history if key in entry] or [(0, math.nan)]

    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(*zip(*series("loss"), strict=True), label=f"train loss ({loss_name})")
    axis.plot(*zip(*series("eval_loss"), strict=True), "o", label="held-out loss")
    axis.set(xlabel="optimizer step", ylabel="loss (nats)", title="preference tuning (DPO)")
    right = axis.twinx()
    right.plot(
        *zip(*series("rewards/accuracies"), strict=True), "--", color="tab:green", label="train reward accuracy"
    )
    right.plot(
        *zip(*series("eval_rewards/accuracies"), strict=True), "s", color="tab:green", label="held-out reward accuracy"
    )
    right.set(ylabel="reward accuracy (chosen above rejected)", ylim=(0, 1.02))
    figure.legend(loc="lower center", ncols=2, fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str]) -> None:
    data_args, model_args, training_args = parse_stage("dpo", argv)
    runtime.setup_logging(training_args.process_index == 0)
    logger.info("%s", training_args.precision.describe())  # e.g. fp32 on a CPU without native bf16
    set_seed(training_args.seed)
    push_target = training.take_hub_settings(training_args)  # the Trainer never pushes; checked now
    inputs = training.input_fingerprints(model_args.model_name_or_path, model_args.ref_model_name_or_path)
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
        raise RecipeError("model_name_or_path is required: the SFT folder (e.g. outputs/gpt2-tiny/sft)")
    with training_args.main_process_first(desc="output folder"):  # one process deletes old checkpoints
        output_dir = training.prepare_output_dir(training_args, data_args, model_args, inputs=inputs)
    resume_dir = training.last_complete_checkpoint(output_dir) if not training_args.overwrite_output_dir else None

    # Checks that need no weights: data, tokenizer and its template, vocab, reference, LoRA targets, 4-bit.
    train_pairs, eval_pairs = load_preference_splits(
        data_args.dataset_name,
        data_args.dataset_config,
        data_args.dataset_revision,
        **split_arguments(data_args, training_args.seed),
    )
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

    max_length = training.max_length_within_positions(training_args.max_length, config)
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

    load = functools.partial(
        modeling.load_model, dtype=model_args.dtype, attn_implementation=model_args.attn_implementation or "sdpa"
    )
    model = load(model_args.model_name_or_path, model_args.model_revision, quantization_config=quantization)
    # LoRA: TRL scores the reference with the adapter disabled (no second copy). Full model: TRL would reload the
    # reference from the model's path, so it is loaded here, explicitly, from the folder the policy came from.
    if reference or not model_args.use_peft:
        ref_model = load(reference) if reference else load(model_args.model_name_or_path, model_args.model_revision)
    else:
        ref_model = None
    eval_conversations = [{"messages": pair["prompt"] + pair["chosen"]} for pair in eval_rows]
    batch_size = training_args.per_device_eval_batch_size
    before = {}
    if data_args.eval_before_training and resume_dir is None:
        logger.info("Exact match and stop rate before DPO, on %d held-out prompts", len(eval_conversations))
        scores = chat_task_metrics(model, tokenizer, eval_conversations, data_args.eval_max_new_tokens, batch_size)
        before = {"exact_match_before": scores["exact_match"], "stop_rate_before": scores["stop_rate"]}
        logger.info("Before DPO: %s", before)

    runtime.write_run_config(output_dir, data_args, model_args, training_args, stage="dpo", inputs=inputs)
    sigterm = training.SigtermCallback()
    trainer = RecipeDPOTrainer(
        model=model,
        ref_model=ref_model,
        args=training_args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[training.NonFiniteLossCallback(), sigterm],
        check_reference=training_args.check_reference,
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

    logger.info("Exact match and stop rate after DPO, on %d held-out prompts", len(eval_conversations))
    after = chat_task_metrics(model, tokenizer, eval_conversations, data_args.eval_max_new_tokens, batch_size)
    runtime.write_metrics(
        output_dir,
        {
            **before,
            **after,
            "reward_accuracy": final_eval["eval_rewards/accuracies"],
            "reward_margin": final_eval["eval_rewards/margins"],
            "eval_loss": final_eval["eval_loss"],
            "eval_pairs": len(eval_rows),
            "first_batch_dpo_loss": trainer.first_loss,
            "train_loss": result.training_loss,
            "train_steps": result.global_step,
            "train_pairs": len(train_rows),
            "train_pairs_too_long": len(train_pairs) - len(train_rows),
            "eval_pairs_too_long": len(eval_pairs) - len(eval_rows),
            "train_seconds": seconds,
            **training.resume_record(first_step),
            "beta": training_args.beta,
            "loss_type": training_args.loss_type,
            "lora": bool(model_args.use_peft),
        },
    )
    plot_dpo(trainer.state.log_history, output_dir / "plots" / "loss.png", " + ".join(training_args.loss_type))
    training.remove_pickled_args(output_dir)
    runtime.write_run_config(
        output_dir, data_args, model_args, training_args, stage="dpo", complete=True, inputs=inputs
    )
    logger.info(
        "Held-out reward accuracy %.3f, margin %.3f; exact match %.3f (before %s), stop rate %.3f; model folder: %s",
        *(final_eval["eval_rewards/accuracies"], final_eval["eval_rewards/margins"], after["exact_match"]),
        *(before.get("exact_match_before", "not measured"), after["stop_rate"], output_dir),
    )
    if push_target:
        push_target.push(output_dir)


if __name__ == "__main__":
    runtime.run_recipe(main)
