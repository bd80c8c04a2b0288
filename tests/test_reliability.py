"""Faults: killed between checkpoints or while saving one, damaged checkpoints, SIGTERM, divergence, a foreign folder.

Every kill is a real signal to a real subprocess (tests/fault_launcher.py runs the recipe with the fault injected).
The uninterrupted reference runs and the resumed runs are in-process, on one thread like the subprocesses, so on CPU
a resumed run must reproduce the reference's per-step losses and final weights bit for bit.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from hf_recipes import checkpoints as training
from hf_recipes.chat import attach_chat_template
from hf_recipes.runtime import RecipeError, run_recipe
from hf_recipes.stages import dpo, pretrain, sft
from tests.conftest import REPO_ROOT, TINY_PRETRAIN_RUN
from tests.tiny import save_tiny_model_folder

RECIPES = {"pretrain": pretrain, "sft": sft, "dpo": dpo}
LAUNCHER = REPO_ROOT / "tests" / "fault_launcher.py"

PRETRAIN = [*TINY_PRETRAIN_RUN, "--max_steps", "8", "--save_total_limit", "10"]  # later options win
CHAT = [
    "--max_train_examples", "24", "--max_eval_examples", "4", "--eval_max_new_tokens", "2", "--max_length", "200",
    "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8", "--max_steps", "6",
    "--warmup_steps", "0", "--logging_steps", "1", "--eval_steps", "2", "--save_steps", "2",
    "--save_total_limit", "10", "--eval_before_training", "false", "--report_to", "none", "--disable_tqdm", "true",
]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The subprocesses run with OMP_NUM_THREADS=1; the same kernels in-process give the same floats."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(stage: str, argv: list[str], output_dir: Path, *extra: str) -> None:
    RECIPES[stage].main([*argv, "--output_dir", str(output_dir), *extra])


def launch(stage: str, argv: list[str], output_dir: Path, **faults) -> subprocess.Popen:
    """The recipe as its own process (through the fault launcher), its stdout/stderr in <output_dir>.out/.err."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.update({f"FAULT_{name.upper()}": str(value) for name, value in faults.items()})
    command = [sys.executable, str(LAUNCHER), stage, *argv]
    with open(f"{output_dir}.out", "w") as out, open(f"{output_dir}.err", "w") as err:
        return subprocess.Popen(
            [*command, "--output_dir", str(output_dir)], env=env, stdout=out, stderr=err, cwd=REPO_ROOT
        )


def wait_for_checkpoint(process: subprocess.Popen, checkpoint: Path, timeout: float = 180) -> None:
    """Poll until `checkpoint` is complete; fail with the run's stderr if the process ends first."""
    deadline = time.monotonic() + timeout
    while not (checkpoint.is_dir() and not training.checkpoint_problems(checkpoint)):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no complete {checkpoint.name}; stderr:\n{Path(f'{checkpoint.parent}.err').read_text()}")
        time.sleep(0.02)


def numbers(folder: Path, step: int) -> list[dict]:
    """The trained numbers logged up to `step` (losses, gradient norms, learning rates, rewards), without timings."""
    history = json.loads((folder / f"checkpoint-{step}" / "trainer_state.json").read_text())["log_history"]
    wanted = ("loss", "grad_norm", "learning_rate", "rewards/", "logps/")
    return [
        {key: value for key, value in entry.items() if key == "step" or any(w in key for w in wanted)}
        for entry in history
    ]


def assert_same_run(reference: Path, resumed: Path, last_step: int, weights=("model.safetensors",)) -> None:
    expected = numbers(reference, last_step)
    assert sum("loss" in entry for entry in expected) >= last_step  # every step's loss is compared
    assert numbers(resumed, last_step) == expected
    for name in weights:
        before, after = load_file(reference / name), load_file(resumed / name)
        assert before.keys() == after.keys()
        assert all(torch.equal(before[key], after[key]) for key in before), name


# ----------------------------------------------------------------------------------------------------------------
# Pretraining: SIGKILL, SIGKILL while saving, SIGTERM, damaged checkpoints
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted 8-step run, checkpoints every 2 steps."""
    output_dir = tmp_path_factory.mktemp("reference") / "pretrain"
    run("pretrain", PRETRAIN, output_dir)
    return output_dir


def test_sigkill_between_checkpoints_then_the_same_command_resumes_to_identical_losses_and_weights(
    reference, tmp_path, caplog
):
    output_dir = tmp_path / "pretrain"
    process = launch("pretrain", PRETRAIN, output_dir, step_delay=0.3)
    wait_for_checkpoint(process, output_dir / "checkpoint-4")
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert not (output_dir / "metrics.json").exists() and not (output_dir / "model.safetensors").exists()
    left = training.last_complete_checkpoint(output_dir)
    assert 4 <= training.checkpoint_step(left) < 8  # killed between checkpoints, before the end

    run("pretrain", PRETRAIN, output_dir)
    assert f"Resuming from {left}" in caplog.text
    assert_same_run(reference, output_dir, 8)
    # Its train_seconds timed only the steps after the checkpoint, and the metrics say so for the report.
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == training.checkpoint_step(left)
    assert "resumed_from_step" not in json.loads((reference / "metrics.json").read_text())


def test_sigkill_while_a_checkpoint_is_written_never_resumes_from_it(reference, tmp_path, caplog):
    output_dir = tmp_path / "pretrain"
    process = launch("pretrain", PRETRAIN, output_dir, kill_in_save=4)
    assert process.wait(timeout=180) == -signal.SIGKILL
    half_written = output_dir / "checkpoint-4"
    assert (half_written / "model.safetensors").is_file()  # the kill landed inside the save
    assert training.checkpoint_problems(half_written) == ["no trainer_state.json", "no rng_state.pth"]

    run("pretrain", PRETRAIN, output_dir)
    assert f"Not resuming from {half_written}: no trainer_state.json, no rng_state.pth" in caplog.text
    assert f"Resuming from {output_dir / 'checkpoint-2'}" in caplog.text
    assert_same_run(reference, output_dir, 8)


@pytest.mark.parametrize("kept", ["10", "1"])  # with 1, the Trainer's end-of-training cleanup keeps only the best
def test_sigterm_saves_a_checkpoint_exits_143_and_the_next_launch_resumes_identically(
    reference, tmp_path, caplog, kept
):
    output_dir = tmp_path / "pretrain"
    argv = [*PRETRAIN, "--save_total_limit", kept]
    process = launch("pretrain", argv, output_dir, step_delay=0.3)
    wait_for_checkpoint(process, output_dir / "checkpoint-2")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143  # 128 + SIGTERM, as a shell reports a terminated job
    stopped = [line for line in Path(f"{output_dir}.err").read_text().splitlines() if line.startswith("stopped")]
    assert len(stopped) == 1, stopped
    step = int(stopped[0].split(" at step ")[1].split(":")[0])
    assert 2 < step < 8
    saved = output_dir / f"checkpoint-{step}"
    assert (
        stopped[0]
        == f"stopped by SIGTERM at step {step}: {saved} is saved; run the same command again to resume from it"
    )
    assert training.checkpoint_problems(saved) == []
    # Nothing of a finished run: no final model, no metrics, no "complete" record that would skip the rerun.
    assert not (output_dir / "metrics.json").exists() and not (output_dir / "model.safetensors").exists()
    assert "complete: true" not in (output_dir / "run_config.yaml").read_text()

    run("pretrain", argv, output_dir)
    assert f"Resuming from {saved}" in caplog.text
    assert_same_run(reference, output_dir, 8)


DAMAGES = {
    "no optimizer.pt": lambda c: (c / "optimizer.pt").unlink(),
    "no scheduler.pt": lambda c: (c / "scheduler.pt").unlink(),
    "no rng_state.pth": lambda c: (c / "rng_state.pth").unlink(),
    "no trainer_state.json": lambda c: (c / "trainer_state.json").unlink(),
    "model.safetensors is truncated": lambda c: truncate(c / "model.safetensors"),
    "optimizer.pt is truncated": lambda c: truncate(c / "optimizer.pt"),
    "trainer_state.json is truncated": lambda c: truncate(c / "trainer_state.json"),
}


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("problem", DAMAGES)
def test_a_damaged_checkpoint_is_refused_by_name_and_the_one_before_is_used(reference, tmp_path, caplog, problem):
    for step in (2, 4):
        shutil.copytree(reference / f"checkpoint-{step}", tmp_path / f"checkpoint-{step}")
    DAMAGES[problem](tmp_path / "checkpoint-4")
    assert training.last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    assert f"Not resuming from {tmp_path / 'checkpoint-4'}: {problem}" in caplog.text

    shutil.rmtree(tmp_path / "checkpoint-2")  # nothing complete left: stop, do not start over silently
    with pytest.raises(RecipeError, match=f"none is complete \\(checkpoint-4: {problem}\\)"):
        training.last_complete_checkpoint(tmp_path)


def test_resume_skips_a_truncated_weights_file_and_still_matches(reference, tmp_path, caplog):
    output_dir = tmp_path / "pretrain"
    shutil.copytree(reference, output_dir, ignore=shutil.ignore_patterns("checkpoint-6", "checkpoint-8"))
    for written_at_the_end in ("metrics.json", "model.safetensors"):
        (output_dir / written_at_the_end).unlink()
    truncate(output_dir / "checkpoint-4" / "model.safetensors")

    run("pretrain", PRETRAIN, output_dir)
    assert "checkpoint-4: model.safetensors is truncated" in caplog.text
    assert f"Resuming from {output_dir / 'checkpoint-2'}" in caplog.text
    assert_same_run(reference, output_dir, 8)


# ----------------------------------------------------------------------------------------------------------------
# Divergence: the run stops at the bad step, names it, and keeps the last good checkpoint
# ----------------------------------------------------------------------------------------------------------------

# AdamW everywhere: the absurd rates below are AdamW's (Muon's orthogonalized steps have a bounded size, so the
# recipe's default Muon on the blocks would not diverge at them); the stop under test does not depend on the optimizer.
DIVERGING = [*PRETRAIN, "--max_steps", "6", "--lr_scheduler_type", "constant_with_warmup", "--muon_learning_rate", "0"]
NO_EVAL = ["--eval_strategy", "no", "--load_best_model_at_end", "false"]


@pytest.mark.parametrize(
    ("extra", "problem", "kept"),
    [
        # Warm-up from 0 keeps step 1 harmless; then the absurd learning rate blows the model up.
        (["--learning_rate", "1000", "--warmup_steps", "2"], "grad_norm is nan at step 3", 2),
        (["--learning_rate", "1e20", "--warmup_steps", "4", "--save_steps", "1", "--eval_steps", "1"],
         "eval_loss is nan at step 2", 1),
        (["--learning_rate", "1e20", "--warmup_steps", "4", *NO_EVAL, "--report_to", "tensorboard"],
         "loss is nan at step 3", 2),
        # Beyond float32's range: the update makes the weights inf while loss and gradients are still finite.
        (["--learning_rate", "1e39", "--warmup_steps", "4", *NO_EVAL, "--save_steps", "1"],
         "the weights are not finite after step 2", 1),
    ],
)  # fmt: skip
def test_a_non_finite_loss_stops_with_exit_2_and_keeps_the_last_good_checkpoint(
    tmp_path, capsys, extra, problem, kept
):
    output_dir = tmp_path / "pretrain"
    with pytest.raises(SystemExit) as stopped:
        run_recipe(RECIPES["pretrain"].main, [*DIVERGING, "--output_dir", str(output_dir), *extra])
    assert stopped.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    last_good = output_dir / f"checkpoint-{kept}"
    assert errors == [
        f"error: training stopped: {problem} (try a lower learning_rate or max_grad_norm); "
        f"the last complete checkpoint is {last_good}"
    ]
    assert training.checkpoints(output_dir) == [last_good] and training.checkpoint_problems(last_good) == []
    assert all(tensor.isfinite().all() for tensor in load_file(last_good / "model.safetensors").values())
    assert not (output_dir / "metrics.json").exists() and not (output_dir / "model.safetensors").exists()
    history = json.loads((last_good / "trainer_state.json").read_text())["log_history"]
    losses = [entry[key] for entry in history for key in ("loss", "eval_loss") if key in entry]
    assert losses and all(math.isfinite(loss) and loss > 1 for loss in losses)  # 0.0 would be a hidden NaN
    if "tensorboard" in extra:  # what TensorBoard was told at the bad step: NaN, not 0.0 or a mean
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        (events,) = {path.parent for path in (output_dir / "runs").rglob("events.out.tfevents.*")}
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        logged = {event.step: event.value for event in accumulator.Scalars("train/loss")}
        assert math.isnan(logged[3]) and all(math.isfinite(logged[step]) for step in (1, 2))


# ----------------------------------------------------------------------------------------------------------------
# SFT and DPO with LoRA resume the same way
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_base(tmp_path_factory):
    """A tiny model folder whose tokenizer carries the llama2 template (as an SFT stage leaves it)."""
    folder = save_tiny_model_folder(tmp_path_factory.mktemp("chat_base"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    attach_chat_template(tokenizer, "llama2")
    tokenizer.save_pretrained(folder)
    return folder


def chat_argv(stage: str, base: Path) -> list[str]:
    recipe = "sft_lora.yaml" if stage == "sft" else "dpo.yaml"  # dpo.yaml is LoRA too
    return ["--config", str(REPO_ROOT / "recipes/gpt2-tiny" / recipe), *CHAT, "--model_name_or_path", str(base)]


@pytest.fixture(scope="module")
def chat_references(chat_base, tmp_path_factory):
    """Uninterrupted 6-step LoRA runs of SFT and DPO, built when first asked for."""
    built = {}

    def get(stage: str) -> Path:
        if stage not in built:
            built[stage] = tmp_path_factory.mktemp(f"{stage}_reference") / stage
            run(stage, chat_argv(stage, chat_base), built[stage])
        return built[stage]

    return get


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_lora_sft_and_dpo_killed_between_checkpoints_resume_to_identical_losses(
    stage, chat_base, chat_references, tmp_path, caplog
):
    reference = chat_references(stage)
    output_dir = tmp_path / stage
    process = launch(stage, chat_argv(stage, chat_base), output_dir, step_delay=0.3)
    wait_for_checkpoint(process, output_dir / "checkpoint-2")
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    left = training.last_complete_checkpoint(output_dir)
    assert 2 <= training.checkpoint_step(left) < 6
    assert (left / "adapter_model.safetensors").is_file()  # a LoRA checkpoint: the adapter, not the whole model

    run(stage, chat_argv(stage, chat_base), output_dir)
    assert_same_run(reference, output_dir, 6, weights=("adapter/adapter_model.safetensors", "model.safetensors"))


def test_full_model_sft_killed_between_checkpoints_resumes_to_identical_losses(chat_base, tmp_path):
    """Full SFT checkpoints hold the whole model and its optimizer state (LoRA ones only the adapter's)."""
    argv = ["--config", str(REPO_ROOT / "recipes/gpt2-tiny/sft.yaml"), *CHAT, "--model_name_or_path", str(chat_base)]
    reference = tmp_path / "reference"
    run("sft", argv, reference)
    output_dir = tmp_path / "sft"
    process = launch("sft", argv, output_dir, step_delay=0.3)
    wait_for_checkpoint(process, output_dir / "checkpoint-2")
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    left = training.last_complete_checkpoint(output_dir)
    assert 2 <= training.checkpoint_step(left) < 6 and (left / "model.safetensors").is_file()
    run("sft", argv, output_dir)
    assert json.loads((output_dir / "metrics.json").read_text())["resumed_from_step"] == training.checkpoint_step(left)
    assert_same_run(reference, output_dir, 6)


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_a_folder_holding_another_runs_checkpoints_is_refused_unless_overwritten(
    stage, chat_base, chat_references, tmp_path
):
    folder = tmp_path / stage
    shutil.copytree(chat_references(stage), folder)
    (folder / "metrics.json").unlink()  # an unfinished run of the other config
    with pytest.raises(RecipeError, match=r"holds checkpoints of a run with a different config \(learning_rate"):
        run(stage, chat_argv(stage, chat_base), folder, "--learning_rate", "0.0123")
    assert training.checkpoints(folder)  # nothing was deleted

    run(stage, chat_argv(stage, chat_base), folder, "--learning_rate", "0.0123", "--overwrite_output_dir", "true")
    state = json.loads((folder / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["log_history"][0]["learning_rate"] == pytest.approx(0.0123)  # the new run, from step 1
