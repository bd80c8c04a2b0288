"""Scaling out: every launch config loads in accelerate, and pretraining on two processes equals one process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType

from tests.conftest import REPO_ROOT, TINY_PRETRAIN_RUN

LAUNCH_CONFIGS = sorted((REPO_ROOT / "recipes" / "accelerate").glob("*.yaml"))
EXPECTED = {
    "cpu": DistributedType.NO,
    "gpu": DistributedType.NO,
    "ddp": DistributedType.MULTI_GPU,
    "fsdp": DistributedType.FSDP,
    "deepspeed_zero2": DistributedType.DEEPSPEED,
}
ACCELERATE = Path(sys.executable).with_name("accelerate")


def launch_args(config: Path):
    """What `accelerate launch --config_file <config>` makes of the file (its own parser and validation)."""
    args = launch_command_parser().parse_args(["--config_file", str(config), "recipes/pretrain.py"])
    return _validate_launch_command(args)


def test_every_launch_config_is_known():
    assert {path.stem for path in LAUNCH_CONFIGS} == set(EXPECTED)


@pytest.mark.parametrize("config", LAUNCH_CONFIGS, ids=lambda path: path.stem)
def test_launch_config_loads_in_accelerate(config):
    cluster = load_config_from_file(str(config))  # raises on a key accelerate does not know
    assert isinstance(cluster, ClusterConfig)
    assert cluster.distributed_type == EXPECTED[config.stem]
    args, defaults, _ = launch_args(config)
    # Nested keys are copied onto launch arguments by name; a misspelt one would be dropped without a word.
    for section in ("fsdp_config", "deepspeed_config"):
        for key in getattr(defaults, section) or {}:
            assert hasattr(args, key), f"{config.name}: {section}.{key} is not an accelerate launch option"
    if config.stem == "cpu":
        assert cluster.use_cpu and cluster.num_processes == 1


def test_fsdp_config_builds_an_fsdp2_plugin_that_saves_a_full_model():
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    args, _, _ = launch_args(REPO_ROOT / "recipes/accelerate/fsdp.yaml")
    with mock.patch.dict(os.environ, prepare_multi_gpu_env(args)):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.transformer_cls_names_to_wrap == ["GPT2Block"]
    # The Trainer writes model.safetensors under FSDP only from a full state dict; sharded, the output folder
    # would hold no model and no checkpoint would have the weights our resume looks for.
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"


def test_deepspeed_config_builds_a_zero2_plugin():
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    args, defaults, _ = launch_args(REPO_ROOT / "recipes/accelerate/deepspeed_zero2.yaml")
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command sets it
    _, env = prepare_deepspeed_cmd_env(args)
    with mock.patch.dict(os.environ, env):
        plugin = DeepSpeedPlugin()
    assert plugin.zero_stage == 2
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"  # taken from the recipe at run time


# ----------------------------------------------------------------------------------------------------------------
# Two processes on the CPU
# ----------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def subprocess_env() -> dict[str, str]:
    # Two processes share two cores: one thread each, or they oversubscribe and crawl.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def pretrain_args(output_dir: Path, per_device_batch: int) -> list[str]:
    # fp32: the 1e-4 match is of the arithmetic; bf16 rounds a batch split over two processes differently.
    return [
        *TINY_PRETRAIN_RUN,
        "--bf16",
        "false",
        "--per_device_train_batch_size",
        str(per_device_batch),
        "--output_dir",
        str(output_dir),
    ]


def run_checked(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    return output


@pytest.fixture(scope="module")
def two_process_and_one_process_runs(tmp_path_factory):
    """The tiny recipe with a global batch of 4 sequences: 2 processes x 2 and 1 process x 4."""
    root = tmp_path_factory.mktemp("distributed")
    env = subprocess_env()
    # --multi_gpu, not a MULTI_CPU config: without MPI that one starts a single process. use_cpu makes each
    # process take the CPU with gloo (without it, on a machine with no GPU, every process trains alone).
    two = run_checked(
        [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
         "recipes/pretrain.py", *pretrain_args(root / "two", 2), "--use_cpu", "true"],
        env,
    )  # fmt: skip
    one = run_checked([sys.executable, "recipes/pretrain.py", *pretrain_args(root / "one", 4)], env)
    return root / "two", two, root / "one", one


def log_history(folder: Path) -> list[dict]:
    return json.loads((folder / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]


def test_two_processes_both_train_one_data_parallel_run(two_process_and_one_process_runs):
    two, _, one, _ = two_process_and_one_process_runs
    for step in ("checkpoint-2", "checkpoint-4"):  # each process saves its own RNG state, nothing else twice
        assert sorted(p.name for p in (two / step).glob("rng_state*.pth")) == ["rng_state_0.pth", "rng_state_1.pth"]
    # One optimizer step consumes 4 blocks in both runs: the epoch advances by the same fraction per step.
    assert log_history(two)[0]["epoch"] == pytest.approx(log_history(one)[0]["epoch"])
    metrics_two = json.loads((two / "metrics.json").read_text())
    assert metrics_two["train_tokens"] == 4 * 2 * 2 * 64  # steps x processes x per-device batch x block


def test_two_processes_write_each_checkpoint_once(two_process_and_one_process_runs):
    two, output, _, _ = two_process_and_one_process_runs
    assert sorted(p.name for p in two.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    for folder in (two, two / "checkpoint-2", two / "checkpoint-4"):
        assert [p.name for p in folder.glob("*.safetensors")] == ["model.safetensors"], folder
    assert output.count("Validation perplexity") == 1  # the final report comes from rank 0 alone


def test_two_processes_match_one_process_with_the_same_global_batch(two_process_and_one_process_runs):
    two, _, one, _ = two_process_and_one_process_runs
    losses_two = [(e["step"], e["loss"]) for e in log_history(two) if "loss" in e]
    losses_one = [(e["step"], e["loss"]) for e in log_history(one) if "loss" in e]
    assert [step for step, _ in losses_two] == [1, 2, 3, 4]
    assert [s for s, _ in losses_two] == [s for s, _ in losses_one]
    for (step, a), (_, b) in zip(losses_two, losses_one, strict=True):
        assert abs(a - b) < 1e-4, f"step {step}: 2 processes {a} vs 1 process {b}"
    evals_two = [e["eval_loss"] for e in log_history(two) if "eval_loss" in e]
    evals_one = [e["eval_loss"] for e in log_history(one) if "eval_loss" in e]
    assert evals_two == pytest.approx(evals_one, abs=1e-4)


def worker_pids(output_dir: Path) -> dict[int, int]:
    """{rank: pid} of the training processes writing to `output_dir` (read from /proc: their command line and env)."""
    ranks = {}
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            environ = dict(
                item.split(b"=", 1) for item in (proc / "environ").read_bytes().split(b"\0") if b"=" in item
            )
        except (OSError, ValueError):
            continue
        if (
            str(output_dir).encode() in command
            and b"LOCAL_RANK" in environ
            and b"fault_launcher.py" in b" ".join(command)
        ):
            ranks[int(environ[b"LOCAL_RANK"])] = int(proc.name)
    return ranks


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker processes through /proc")
def test_sigterm_to_one_of_two_processes_stops_both_at_one_step_with_a_checkpoint_the_rerun_resumes(
    two_process_and_one_process_runs, tmp_path
):
    """Preemption reaches one worker: the other learns of it at the step's end (a collective), both save one
    complete checkpoint at the same step and exit, and the same launch again finishes the run as if uninterrupted."""
    import signal
    import time

    uninterrupted, _, _, _ = two_process_and_one_process_runs
    output_dir = tmp_path / "two"

    def launch() -> list[str]:  # a fresh rendezvous port for each launch
        return [
            str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
            str(REPO_ROOT / "tests" / "fault_launcher.py"), "pretrain", *pretrain_args(output_dir, 2),
            "--use_cpu", "true",
        ]  # fmt: skip

    env = {**subprocess_env(), "FAULT_STEP_DELAY": "1.0"}
    process = subprocess.Popen(launch(), cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not (output_dir / "checkpoint-2" / "trainer_state.json").is_file():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0].decode()[-3000:]
        time.sleep(0.05)
    os.kill(worker_pids(output_dir)[1], signal.SIGTERM)  # rank 1 only; rank 0 never sees the signal
    output = process.communicate(timeout=240)[0].decode()
    assert process.returncode != 0, output[-3000:]  # the launch reports the stop (torchrun: workers exited 143)
    stopped = [line for line in output.splitlines() if line.startswith("stopped by SIGTERM")]
    assert len(stopped) == 1, output[-3000:]  # printed once, by rank 0
    step = int(stopped[0].split(" at step ")[1].split(":")[0])
    assert 2 < step < 4 + 1
    saved = output_dir / f"checkpoint-{step}"
    assert sorted(p.name for p in saved.glob("rng_state*.pth")) == ["rng_state_0.pth", "rng_state_1.pth"]
    assert not (output_dir / "metrics.json").exists()

    rerun = run_checked(launch(), subprocess_env())
    assert f"Resuming from {saved}" in rerun
    resumed = [(e["step"], e["loss"]) for e in log_history(output_dir) if "loss" in e]
    expected = [(e["step"], e["loss"]) for e in log_history(uninterrupted) if "loss" in e]
    assert [s for s, _ in resumed] == [s for s, _ in expected] == [1, 2, 3, 4]
    for (s, a), (_, b) in zip(resumed, expected, strict=True):
        assert abs(a - b) < 1e-5, f"step {s}: resumed {a} vs uninterrupted {b}"
