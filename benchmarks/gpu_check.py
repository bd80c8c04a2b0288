"""Issue 23's GPU measurements in one run: the pretraining benchmark, then the gpt2 pipeline from scratch on CUDA.

    python benchmarks/gpu_check.py OUT_DIR            # on a CUDA machine: GPT-2 124M, about 8 minutes
    python benchmarks/gpu_check.py OUT_DIR --tiny     # rehearsal on a CPU: the same commands on a 2-layer model

In order, each stage a fresh process whose output goes to OUT_DIR/gpu_check.log:
  bench     benchmarks/bench_pretrain.py --recipe recipes/gpt2/pretrain.yaml: tokens/s and MFU (the GPU's dense bf16
            peak named), our Trainer path against the bare PyTorch loop;
  pretrain  recipes/gpt2/pretrain.yaml, shortened, with a BPE of GPT-2's size trained here (no Hub on the device);
  sft, sft-lora, dpo, quantize, evaluate   the recipes/gpt2 recipes on it, shortened (4-bit export by bitsandbytes).
Models go to --work_dir (default outputs/gpu-check, emptied first); OUT_DIR gets three files only: gpu_check.log,
summary.json (every stage's command, status, time, metrics.json and the tokens/s read from its TensorBoard log)
and summary.md. Both summaries are rewritten after each stage, so a run cut short still reports what it finished.
A stage starts only while --budget seconds are not spent, and is stopped when they are.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench_pretrain import bf16_peak
from common import REPO_ROOT, environment, median

GPU_RECIPES = REPO_ROOT / "recipes" / "gpt2"
TRAIN_STAGES = ("pretrain", "sft", "sft-lora", "dpo")
# Every training stage: no progress bars in the log, no checkpoint or evaluation during the short runs (the recipes
# still evaluate once at the end), so the logged steps measure training alone.
SHORT = ["--disable_tqdm", "true", "--overwrite_output_dir", "true"]
NO_SAVES = ["--eval_strategy", "no", "--save_strategy", "no"]
# --tiny: the same commands on a CPU, small enough for a 2-core machine in a few minutes (fp32, no compile).
TINY_TRAIN = ["--use_cpu", "true", "--bf16", "false", "--tf32", "false", "--dataloader_pin_memory", "false"]
TINY_TRAIN += ["--dataloader_num_workers", "0", "--logging_steps", "2"]
TINY_MODEL = ["--n_layer", "2", "--n_head", "2", "--n_embd", "64", "--block_size", "128"]
TINY_CHAT = ["--dtype", "float32", "--max_steps", "4", "--per_device_train_batch_size", "4", "--max_length", "256"]
TINY_CHAT += ["--max_train_examples", "64", "--max_eval_examples", "16", "--per_device_eval_batch_size", "16"]
TINY_CHAT += ["--eval_max_new_tokens", "8"]


def stages(work: Path, tiny: bool) -> list[dict]:
    """Each stage: its command (GPU settings, then --tiny's on top: the last flag wins) and what it needs first."""
    python = [sys.executable]
    accelerate_config = f"recipes/accelerate/{'cpu' if tiny else 'gpu'}.yaml"
    launch = [*python, "-m", "accelerate.commands.launch", "--quiet", "--config_file", accelerate_config]
    # recipes/gpt2/pretrain.yaml names GPT-2's tokenizer on the Hub: unset, the recipe trains a BPE of that size.
    pretrain_recipe = work / "pretrain.yaml"
    pretrain_recipe.write_text(
        f"extends: {GPU_RECIPES / 'pretrain.yaml'}\ntokenizer_name_or_path: null\ntokenizer_vocab_size: 50257\n"
    )

    def tiny_only(*args: str) -> list[str]:
        return list(args) if tiny else []

    bench = ["--recipe", "recipes/gpt2/pretrain.yaml", "--json", str(work / "bench_pretrain.json")]
    bench += ["--repeats", "2", "--warmup", "3", "--measure", "8"]
    bench += tiny_only("--repeats", "1", "--warmup", "1", "--measure", "2", "--max_documents", "20")
    bench += tiny_only("--vocab_size", "512", "--", *TINY_TRAIN, *TINY_MODEL, "--torch_compile", "false")
    bench += tiny_only("--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1")
    pretrain = ["--config", str(pretrain_recipe), "--output_dir", str(work / "pretrain"), *SHORT, "--max_steps", "120"]
    pretrain += ["--gradient_accumulation_steps", "2", "--warmup_steps", "12", "--eval_steps", "120"]
    pretrain += ["--save_steps", "120", "--save_total_limit", "1"]
    pretrain += tiny_only(*TINY_TRAIN, *TINY_MODEL, "--torch_compile", "false", "--per_device_train_batch_size", "4")
    pretrain += tiny_only("--gradient_accumulation_steps", "1", "--max_steps", "6", "--warmup_steps", "1")
    pretrain += tiny_only("--eval_steps", "6", "--save_steps", "6", "--tokenizer_vocab_size", "1024")
    pretrain += tiny_only("--max_documents", "40", "--eval_blocks", "8", "--per_device_eval_batch_size", "8")

    def chat(recipe: str, model: str, output: str, steps: int) -> list[str]:
        args = ["--config", str(GPU_RECIPES / recipe), "--model_name_or_path", str(work / model)]
        args += ["--output_dir", str(work / output), *SHORT, *NO_SAVES, "--max_steps", str(steps)]
        args += ["--max_train_examples", "6000", "--max_eval_examples", "300"]
        # No score of the start model before training: a base model never emits eos, so scoring it before SFT
        # generates to the limit for every prompt (87 s of the first H200 run's budget per stage, for an exact match
        # of 0), and DPO starts from the SFT model that stage has just scored on the same conversations (the second
        # H200 run spent the rest of its budget scoring it again).
        args += ["--eval_before_training", "false"]
        return args + tiny_only(*TINY_TRAIN, *TINY_CHAT)

    quantize = ["--config", str(GPU_RECIPES / "quantize.yaml"), "--model_name_or_path", str(work / "dpo")]
    quantize += ["--output_dir", str(work / "quantized-nf4"), "--eval_blocks", "64", "--max_eval_examples", "128"]
    quantize += tiny_only("--compute_dtype", "float32", "--block_size", "128", "--eval_blocks", "4")
    quantize += tiny_only("--max_eval_examples", "16", "--max_new_tokens", "8", "--eval_batch_size", "16")
    evaluate = ["--config", str(GPU_RECIPES / "evaluate.yaml"), "--outputs_dir", str(work), "--eval_blocks", "64"]
    evaluate += ["--max_eval_examples", "300"]
    evaluate += tiny_only("--block_size", "128", "--eval_blocks", "4", "--max_eval_examples", "16")
    evaluate += tiny_only("--max_new_tokens", "8", "--batch_size", "16", "--max_length", "256")
    return [
        # At most 4 minutes of the budget: the pipeline after it needs the rest.
        {"name": "bench", "needs": [], "cap": 240, "command": [*python, "benchmarks/bench_pretrain.py", *bench]},
        {"name": "pretrain", "needs": [], "command": [*launch, "recipes/pretrain.py", *pretrain]},
        {
            "name": "sft",
            "needs": ["pretrain"],
            "command": [*launch, "recipes/sft.py", *chat("sft.yaml", "pretrain", "sft", 120)],
        },
        {
            "name": "sft-lora",
            "needs": ["pretrain"],
            "command": [*launch, "recipes/sft.py", *chat("sft_lora.yaml", "pretrain", "sft-lora", 60)],
        },
        {"name": "dpo", "needs": ["sft"], "command": [*launch, "recipes/dpo.py", *chat("dpo.yaml", "sft", "dpo", 60)]},
        {"name": "quantize", "needs": ["dpo"], "command": [*python, "recipes/quantize.py", *quantize]},
        {"name": "evaluate", "needs": ["pretrain"], "command": [*python, "recipes/eval.py", *evaluate]},
    ]


def run_stage(command: list[str], log, seconds: float) -> tuple[str, float]:
    """Run one command, output appended to the log; 'ok', 'failed (exit N)' or 'timed out', and its wall time."""
    # hf_recipes imports from an install, or from the checkout that gpu_check.sh puts on PYTHONPATH for this process.
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "TQDM_DISABLE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    started = time.perf_counter()
    # A session of its own: a timeout stops accelerate's child processes too, not only the launcher.
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    try:
        code = process.wait(timeout=seconds)
        status = "ok" if code == 0 else f"failed (exit {code})"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        status = f"timed out after {seconds:.0f} s"
    return status, time.perf_counter() - started


def logged_tokens_per_second(folder: Path, tokens_per_step: float | None) -> dict:
    """Steady training tokens/s from the run's TensorBoard log: between its first and last logged training step, so
    start-up, compilation and the first steps are left out. Non-padding tokens (TRL's num_tokens) where logged."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not (folder / "runs").is_dir():
        return {}
    events = EventAccumulator(str(folder / "runs"), size_guidance={"scalars": 0}).Reload()
    tags = events.Tags()["scalars"]
    if "train/loss" not in tags:
        return {}
    losses = events.Scalars("train/loss")
    if "train/num_tokens" in tags:
        tokens = [event.value for event in events.Scalars("train/num_tokens")]
    elif tokens_per_step:
        tokens = [event.step * tokens_per_step for event in losses]
    else:
        return {}
    seconds = losses[-1].wall_time - losses[0].wall_time
    if len(losses) < 2 or seconds <= 0:
        return {}
    return {
        "steady_tokens_per_second": (tokens[-1] - tokens[0]) / seconds,
        "steady_steps": f"{losses[0].step} to {losses[-1].step}",
        "tokens_trained": tokens[-1],
    }


def stage_numbers(name: str, work: Path, peak: float | None) -> dict:
    """What a finished stage measured: the benchmark's JSON, or the stage folder's metrics.json (+ tokens/s)."""
    if name == "bench":
        path = work / "bench_pretrain.json"
        return json.loads(path.read_text()) if path.is_file() else {}
    folder = work / ("quantized-nf4" if name == "quantize" else name)
    if name == "evaluate":
        path = work / "report.json"
        return {"report": json.loads(path.read_text())["stages"]} if path.is_file() else {}
    path = folder / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    numbers = {"metrics": metrics}
    if name in TRAIN_STAGES:
        steps, tokens = metrics.get("train_steps"), metrics.get("train_tokens")
        numbers.update(logged_tokens_per_second(folder, tokens / steps if steps and tokens else None))
        if metrics.get("train_seconds") and numbers.get("tokens_trained") and name != "pretrain":
            numbers["tokens_per_second_whole_run"] = numbers["tokens_trained"] / metrics["train_seconds"]
        if name == "pretrain" and peak and "steady_tokens_per_second" in numbers:
            numbers["steady_mfu"] = numbers["steady_tokens_per_second"] * metrics["flops_per_token"] / peak
    return numbers


def headline(name: str, numbers: dict) -> str:
    """One line of summary.md per stage."""
    if name == "bench":
        if "ratio" not in numbers:
            return ""
        ours, bare = (numbers[f"{side}_tokens_per_second"] for side in ("ours", "bare"))
        mfu = f"MFU {numbers['mfu_ours']:.3f} vs {numbers['mfu_bare']:.3f}, " if "mfu_ours" in numbers else ""
        return (
            f"Trainer path {median(ours):,.0f} / bare loop {median(bare):,.0f} tokens/s (medians), {mfu}"
            f"ratio of medians {numbers['ratio']:.3f}; peak {numbers.get('bf16_peak', 'n/a (CPU)')}"
        )
    if name == "evaluate":
        return "; ".join(
            f"{row['stage']} perplexity {row['perplexity']:.1f}, exact match {row['exact_match']:.3f}"
            for row in numbers.get("report", [])
        )
    metrics, parts = numbers.get("metrics", {}), []
    if "steady_tokens_per_second" in numbers:
        kind = "tokens/s" if name == "pretrain" else "non-padding tokens/s"
        parts.append(f"{numbers['steady_tokens_per_second']:,.0f} {kind} (steps {numbers['steady_steps']})")
    if "steady_mfu" in numbers:
        parts.append(f"MFU {numbers['steady_mfu']:.3f}")
    if "tokens_per_second_whole_run" in numbers:
        parts.append(f"{numbers['tokens_per_second_whole_run']:,.0f} over the whole training time")
    keys = ("perplexity", "exact_match", "stop_rate", "reward_accuracy", "perplexity_ratio", "exact_match_4bit")
    for key in (*keys, "train_seconds"):
        if isinstance(metrics.get(key), float):
            parts.append(f"{key} {metrics[key]:.3f}" if key != "train_seconds" else f"trained {metrics[key]:.0f} s")
    return "; ".join(parts)


def write_summary(out: Path, summary: dict, work: Path) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    lines = [f"# GPU check{' (--tiny: a rehearsal, not a measurement)' if summary['tiny'] else ''}", ""]
    lines += [f"- {key}: {value}" for key, value in summary["environment"].items()]
    lines += ["", "| stage | status | wall s | measured |", "| --- | --- | ---: | --- |"]
    for name, stage in summary["stages"].items():
        lines.append(f"| {name} | {stage['status']} | {stage.get('seconds', 0):.0f} | {stage.get('headline', '')} |")
    lines += ["", f"Total wall time: {summary['seconds']:.0f} s", ""]
    bench = summary["stages"].get("bench", {}).get("numbers", {})
    if bench.get("settings"):
        lines += ["## bench_pretrain settings", ""]
        lines += [f"- {key}: {value}" for key, value in bench["settings"].items()] + [""]
    if (work / "report.md").is_file():
        lines += ["## Evaluation report", "", (work / "report.md").read_text()]
    lines += ["## Commands", ""]
    lines += [f"- {name}: `{' '.join(stage['command'])}`" for name, stage in summary["stages"].items()]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path, help="where gpu_check.log, summary.json and summary.md go ($OUT)")
    parser.add_argument("--tiny", action="store_true", default=os.environ.get("GPU_CHECK_TINY") == "1")
    parser.add_argument("--work_dir", type=Path, default=REPO_ROOT / "outputs" / "gpu-check")
    parser.add_argument("--budget", type=float, default=510, help="seconds for all stages together")
    parser.add_argument("--only", nargs="*", help="run only these stages (their needs must exist in work_dir)")
    args = parser.parse_args()
    import torch

    if not args.tiny and not torch.cuda.is_available():
        sys.exit("error: no CUDA device; rehearse on a CPU with --tiny (or GPU_CHECK_TINY=1)")
    out, work = args.out_dir.resolve(), args.work_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.only:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    peak = bf16_peak(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else None
    summary = {"tiny": args.tiny, "environment": environment(), "stages": {}, "seconds": 0.0}
    started = time.perf_counter()
    with open(out / "gpu_check.log", "a", buffering=1) as log:
        if shutil.which("nvidia-smi"):
            log.write(subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout)
        for stage in stages(work, args.tiny):
            name, command = stage["name"], stage["command"]
            if args.only and name not in args.only:
                continue
            record = summary["stages"][name] = {"command": command}
            left = args.budget - (time.perf_counter() - started)
            missing = [
                need for need in stage["needs"] if summary["stages"].get(need, {"status": "ok"})["status"] != "ok"
            ]
            if missing or left < 15:
                record["status"] = f"skipped: {' and '.join(missing)} not ok" if missing else "skipped: budget spent"
            else:
                log.write(f"\n===== {name}: {' '.join(command)}\n")
                record["status"], record["seconds"] = run_stage(command, log, min(left, stage.get("cap", left)))
                numbers = stage_numbers(name, work, peak)
                record.update(headline=headline(name, numbers), numbers=numbers)
            print(f"{name}: {record['status']} {record.get('headline', '')}", flush=True)
            summary["seconds"] = time.perf_counter() - started
            write_summary(out, summary, work)
    failed = [name for name, stage in summary["stages"].items() if stage["status"] != "ok"]
    print(f"wrote {out / 'summary.md'}; total {summary['seconds']:.0f} s; not ok: {', '.join(failed) or 'none'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
