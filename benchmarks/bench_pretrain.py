"""Tokens per second of our pretraining path against a bare PyTorch loop: same model, optimizer, batches and threads.

Ours is what hf_recipes.stages.pretrain builds: the recipe's TrainingArguments, PretrainTrainer with its callbacks and
default_data_collator over packed blocks. The reference is a plain loop over the same blocks already on the device
(autocast, clipping and the optimizer as the recipe sets them: Muon + AdamW, or AdamW). Both sides alternate, each
repeat leaves its warm-up steps out, and the median of each side is reported.

python benchmarks/bench_pretrain.py                                      # CPU, gpt2-tiny recipe
python benchmarks/bench_pretrain.py --recipe recipes/gpt2/pretrain.yaml  # GPU, GPT-2 124M recipe (+ MFU)
"""

from __future__ import annotations

import argparse
import copy
import math
import tempfile

from common import Stopwatch, comparison, interleaved, median, report, stdlib_texts

GOAL_CPU = 0.95
GOAL_GPU = 0.85
# Dense bf16 peak FLOP/s by GPU name, the most specific name first (the PaLM MFU convention: dense, no sparsity).
# torch names an H100 SXM "NVIDIA H100 80GB HBM3" and an H200 "NVIDIA H200"; the H200 has the H100 SXM's compute.
BF16_PEAKS = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))
GPT2_VOCAB = 50257  # a recipe that names GPT-2's tokenizer gets a BPE of that size: the Hub may be out of reach


def bf16_peak(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU from its name, or None for a GPU not in BF16_PEAKS (then no MFU is given)."""
    return next((peak for key, peak in BF16_PEAKS if key in device_name), None)


def prepare(recipe: str, max_documents: int, vocab_size: int | None, overrides: list[str]):
    """The recipe's arguments, a fresh model, and its training split packed into blocks, as the recipe makes them."""
    from datasets import Dataset

    from hf_recipes.config import parse_stage
    from hf_recipes.data.packing import pack_dataset
    from hf_recipes.modeling import model_size, pretraining_model
    from hf_recipes.tokenization import train_bpe_tokenizer

    output_dir = tempfile.mkdtemp(prefix="bench_pretrain_")
    _, model_args, training_args = parse_stage(
        "pretrain",
        ["--config", recipe, "--output_dir", output_dir, "--report_to", "none", "--disable_tqdm", "true",
         "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false", *overrides],
    )  # fmt: skip
    texts = stdlib_texts("train", max_documents)
    # The Hub may be out of reach (GPU machine): a BPE of GPT-2's size trained here gives GPT-2's shapes.
    if vocab_size is None:
        vocab_size = GPT2_VOCAB if model_args.tokenizer_name_or_path else model_args.tokenizer_vocab_size
    tokenizer = train_bpe_tokenizer(texts, vocab_size, show_progress=False)
    import torch

    torch.manual_seed(training_args.seed)
    model = pretraining_model(model_args, tokenizer)
    blocks = pack_dataset(Dataset.from_dict({"text": texts}), tokenizer, training_args.block_size)
    return training_args, tokenizer, model, blocks, model_size(model, training_args.block_size)


def enough_blocks(blocks, needed: int):
    """Repeat the packed blocks until one run never crosses an epoch boundary (the real corpus is far larger)."""
    from datasets import concatenate_datasets

    return concatenate_datasets([blocks] * math.ceil(needed / len(blocks))) if len(blocks) < needed else blocks


def trainer_side(training_args, tokenizer, base_model, blocks, warmup: int, measure: int, tokens_per_step: int):
    """One fresh PretrainTrainer run (as the pretrain stage builds it); tokens/s over the steps after warm-up."""
    from transformers import TrainerCallback, default_data_collator

    from hf_recipes.callbacks import NonFiniteLossCallback, RunLengthCallback
    from hf_recipes.trainers import PretrainTrainer

    watch = Stopwatch(training_args.device.type)

    class StepClock(TrainerCallback):
        """Clock at the end of step `warmup` and of the last step: the logging in between is counted."""

        def __init__(self):
            self.times: dict[int, float] = {}

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (warmup, warmup + measure):
                self.times[state.global_step] = watch()

    def run() -> float:
        clock = StepClock()
        trainer = PretrainTrainer(
            model=copy.deepcopy(base_model),  # the Trainer wraps the model's forward: never reuse a wrapped one
            args=training_args,
            train_dataset=blocks,
            data_collator=default_data_collator,
            processing_class=tokenizer,
            callbacks=[NonFiniteLossCallback(), RunLengthCallback(tokens_per_step), clock],
        )
        trainer.train()
        seconds = clock.times[warmup + measure] - clock.times[warmup]
        del trainer
        return measure * tokens_per_step / seconds

    return run


def recipe_optimizer(model, training_args):
    """The optimizer the recipe's Trainer builds: Muon for the blocks' projections and AdamW for the rest when the
    recipe sets `muon_learning_rate` (both sides pay for its Newton-Schulz iterations), AdamW otherwise."""
    import torch

    if training_args.muon_learning_rate:
        from hf_recipes.optimizers import muon_with_adamw

        return muon_with_adamw(model, training_args.muon_learning_rate, training_args)
    return torch.optim.AdamW(
        model.parameters(),
        lr=training_args.learning_rate,
        betas=(training_args.adam_beta1, training_args.adam_beta2),
        eps=training_args.adam_epsilon,
        weight_decay=training_args.weight_decay,
        fused=training_args.optim == "adamw_torch_fused",
    )


def bare_side(training_args, base_model, blocks, warmup: int, measure: int, tokens_per_step: int):
    """The reference: the same blocks as one tensor on the device, forward/backward/clip/optimizer, nothing else."""
    import torch

    device = training_args.device
    model = copy.deepcopy(base_model).to(device)
    model.train()
    forward = torch.compile(model) if training_args.torch_compile else model
    data = torch.tensor(blocks["input_ids"], dtype=torch.long, device=device)
    batch, accumulation = training_args.per_device_train_batch_size, training_args.gradient_accumulation_steps
    dtype = torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else None
    watch = Stopwatch(device.type)

    def run() -> float:
        optimizer = recipe_optimizer(model, training_args)
        cursor = 0
        for step in range(warmup + measure):
            if step == warmup:
                started = watch()
            for _ in range(accumulation):
                if cursor + batch > len(data):
                    cursor = 0
                ids = data[cursor : cursor + batch]
                cursor += batch
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    loss = forward(input_ids=ids, labels=ids).loss / accumulation
                loss.backward()
            if training_args.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), training_args.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        seconds = watch() - started
        return measure * tokens_per_step / seconds

    return run


def run(
    recipe: str = "recipes/gpt2-tiny/pretrain.yaml",
    repeats: int = 5,
    warmup: int = 3,
    measure: int = 20,
    max_documents: int = 400,
    vocab_size: int | None = None,
    overrides: list[str] | None = None,
) -> dict:
    import torch

    training_args, tokenizer, model, blocks, size = prepare(recipe, max_documents, vocab_size, overrides or [])
    sequences_per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    tokens_per_step = sequences_per_step * training_args.block_size
    blocks = enough_blocks(blocks, (warmup + measure) * sequences_per_step)
    max_steps = warmup + measure
    training_args.max_steps = max_steps
    sides = {
        "ours": trainer_side(training_args, tokenizer, model, blocks, warmup, measure, tokens_per_step),
        "bare": bare_side(training_args, model, blocks, warmup, measure, tokens_per_step),
    }
    results = interleaved(sides, repeats)
    on_gpu = training_args.device.type == "cuda"
    goal = GOAL_GPU if on_gpu else GOAL_CPU
    result = {
        **comparison("pretrain tokens/s, our Trainer path / bare PyTorch loop", goal, results, "bare"),
        "settings": {
            "recipe": recipe,
            "model": size.describe(),
            "tokens_per_step": tokens_per_step,
            "batch x accumulation x block": f"{training_args.per_device_train_batch_size} x "
            f"{training_args.gradient_accumulation_steps} x {training_args.block_size}",
            "precision": "bf16" if training_args.bf16 else "fp32",
            "torch_compile": training_args.torch_compile,
            "optimizer": f"MuonWithAdamW (Muon lr {training_args.muon_learning_rate:g}, AdamW lr "
            f"{training_args.learning_rate:g})"
            if training_args.muon_learning_rate
            else str(training_args.optim),
            "logging_steps": training_args.logging_steps,
            "dataloader_num_workers": training_args.dataloader_num_workers,
            "warm-up steps left out / measured steps / repeats": f"{warmup} / {measure} / {repeats}",
            "device": torch.cuda.get_device_name(0) if on_gpu else "cpu",
        },
    }
    if on_gpu:
        result["flops_per_token"] = size.flops_per_token
        peak = bf16_peak(result["settings"]["device"])
        result["bf16_peak"] = f"{peak / 1e12:.0f} TFLOP/s dense bf16" if peak else "unknown GPU: no MFU (BF16_PEAKS)"
        if peak:
            result["mfu_ours"] = median(results["ours"]) * size.flops_per_token / peak
            result["mfu_bare"] = median(results["bare"]) * size.flops_per_token / peak
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/gpt2-tiny/pretrain.yaml")
    # 5 x 20 steps: 3 x 10 measured 0.85 and 5 x 20 0.94 minutes later, same code: short runs are noisy here.
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--measure", type=int, default=20)
    parser.add_argument("--max_documents", type=int, default=400)
    parser.add_argument(
        "--vocab_size", type=int, default=None, help="BPE size (default: the recipe's; GPT-2's if it names one)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON to PATH")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, after --: -- --key value ...")
    args = parser.parse_args()
    result = run(
        args.recipe, args.repeats, args.warmup, args.measure, args.max_documents, args.vocab_size, args.overrides
    )
    report(result, args.json)


if __name__ == "__main__":
    main()
