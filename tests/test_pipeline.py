"""The `make all` pipeline in miniature: every stage's real script through `accelerate launch`, then a rerun that
reuses every finished stage."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import QUIET, REPO_ROOT, TINY_PRETRAIN_RUN

ACCELERATE = str(Path(sys.executable).parent / "accelerate")
LAUNCH = [ACCELERATE, "launch", "--quiet", "--config_file", str(REPO_ROOT / "recipes/accelerate/cpu.yaml")]
TINY_TRAINING = [*QUIET, "--logging_steps", "1", "--warmup_steps", "0"]


def stage_commands(out: Path) -> list[tuple[str, list[str]]]:
    recipes = REPO_ROOT / "recipes"
    conversations = ["--max_train_examples", "24", "--max_eval_examples", "6", "--eval_max_new_tokens", "4"]
    return [
        ("pretrain", [*LAUNCH, str(recipes / "pretrain.py"), *TINY_PRETRAIN_RUN,
                      "--output_dir", str(out / "pretrain")]),
        ("sft", [*LAUNCH, str(recipes / "sft.py"), "--config", str(recipes / "gpt2-tiny/sft.yaml"), *conversations,
                 "--max_length", "200", "--per_device_train_batch_size", "4", "--max_steps", "3", "--eval_steps", "3",
                 "--save_steps", "3", *TINY_TRAINING,
                 "--model_name_or_path", str(out / "pretrain"), "--output_dir", str(out / "sft")]),
        ("dpo", [*LAUNCH, str(recipes / "dpo.py"), "--config", str(recipes / "gpt2-tiny/dpo.yaml"), *conversations,
                 "--max_length", "200", "--per_device_train_batch_size", "4", "--max_steps", "2", "--eval_steps", "2",
                 "--save_steps", "2", *TINY_TRAINING,
                 "--model_name_or_path", str(out / "sft"), "--output_dir", str(out / "dpo")]),
        ("reward", [*LAUNCH, str(recipes / "reward.py"), "--config", str(recipes / "gpt2-tiny/reward.yaml"),
                    *conversations, "--max_length", "200", "--per_device_train_batch_size", "4", "--max_steps", "2",
                    "--eval_steps", "2", "--save_steps", "2", *TINY_TRAINING,
                    "--model_name_or_path", str(out / "sft"), "--output_dir", str(out / "reward")]),
        ("grpo", [*LAUNCH, str(recipes / "grpo.py"), "--config", str(recipes / "gpt2-tiny/grpo.yaml"),
                  "--max_train_examples", "16", "--max_eval_examples", "4", "--eval_max_new_tokens", "4",
                  "--num_generations", "4", "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "1",
                  "--max_completion_length", "4", "--max_steps", "2", "--save_steps", "2", *TINY_TRAINING,
                  "--model_name_or_path", str(out / "dpo"), "--output_dir", str(out / "grpo")]),
        ("quantize", [*LAUNCH, str(recipes / "quantize.py"), "--config", str(recipes / "gpt2-tiny/quantize.yaml"),
                      "--block_size", "64", "--eval_blocks", "8", "--max_eval_examples", "6", "--max_new_tokens", "4",
                      "--model_name_or_path", str(out / "dpo"), "--output_dir", str(out / "quantized-nf4")]),
        ("eval", [*LAUNCH, str(recipes / "eval.py"), "--config", str(recipes / "gpt2-tiny/evaluate.yaml"),
                  "--outputs_dir", str(out), "--max_eval_examples", "6", "--max_length", "200", "--block_size", "64",
                  "--eval_blocks", "8", "--max_new_tokens", "4"]),
    ]  # fmt: skip


def run_stage(name: str, command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    logs = {name: run_stage(name, command) for name, command in stage_commands(out)}
    return out, logs


def test_every_stage_leaves_a_complete_folder(pipeline):
    out, _ = pipeline
    for stage in ("pretrain", "sft", "dpo", "grpo", "quantized-nf4"):
        for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "metrics.json"):
            assert (out / stage / name).is_file(), f"{stage}/{name}"
    assert (out / "dpo" / "adapter" / "adapter_model.safetensors").is_file()
    assert abs(json.loads((out / "grpo" / "metrics.json").read_text())["initial_kl"]) < 1e-6
    assert json.loads((out / "reward" / "metrics.json").read_text())["train_steps"] == 2
    assert json.loads((out / "quantized-nf4" / "metrics.json").read_text())["verified"] is True
    assert not list(out.glob("**/training_args.bin"))


def test_eval_prints_and_writes_the_report_of_every_stage(pipeline):
    out, logs = pipeline
    stages = [row["stage"] for row in json.loads((out / "report.json").read_text())["stages"]]
    assert stages == ["pretrain", "sft", "dpo", "grpo", "quantized-nf4"]
    rows = {row["stage"]: row for row in json.loads((out / "report.json").read_text())["stages"]}
    for stage in stages:
        # The stage's own row, with the numbers report.json holds for it (not just any table row).
        numbers = rows[stage]
        row = f"| {stage} | {numbers['perplexity']:.2f} | {numbers['exact_match']:.3f} | {numbers['stop_rate']:.3f} |"
        assert row in logs["eval"]
        assert row in (out / "report.md").read_text()
    assert "Chat with the final model: make chat MODEL=" in logs["eval"]
    assert (out / "plots" / "exact_match.png").is_file() and (out / "plots" / "loss_curves.png").is_file()


def test_second_run_reuses_every_finished_stage(pipeline):
    out, _ = pipeline
    trained = ("pretrain", "sft", "dpo", "grpo")
    weights = {stage: (out / stage / "model.safetensors").stat().st_mtime_ns for stage in trained}
    for name, command in stage_commands(out):
        log = run_stage(name, command)
        if name == "eval":
            assert log.count("unchanged since the last report") == 5
        else:
            assert "already holds this finished run" in log, name
    assert weights == {stage: (out / stage / "model.safetensors").stat().st_mtime_ns for stage in weights}
