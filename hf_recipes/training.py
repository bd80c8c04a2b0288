"""What the stages add to the `transformers`/TRL trainers: complete-checkpoint resume, perplexity in the logs,
a hard stop on a non-finite loss, a checkpoint-and-exit on SIGTERM, a measured run-length estimate, and loss plots."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

from hf_recipes.runtime import RecipeError

logger = logging.getLogger("hf_recipes")

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors")


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------


def checkpoint_problems(checkpoint: Path) -> list[str]:
    """What a checkpoint lacks to be resumed exactly (empty when complete).

    Stock `get_last_checkpoint` takes any `checkpoint-N` folder, even one half-written when the run was killed;
    resuming from it crashes, and one missing its optimizer or RNG state "resumes" to a different loss.
    """
    problems = []
    state = checkpoint / "trainer_state.json"
    if not state.is_file():  # written last: its absence means an unfinished save
        problems.append("no trainer_state.json")
    elif not json_complete(state):  # written in place, not atomically: a kill mid-write leaves half of it
        problems.append("trainer_state.json is truncated")
    weights = [checkpoint / name for name in WEIGHT_FILES if (checkpoint / name).is_file()]
    if not weights:
        problems.append("no model weights")
    for file in weights:
        if not safetensors_complete(file):
            problems.append(f"{file.name} is truncated")
    for name in ("optimizer.pt", "scheduler.pt"):
        if not (checkpoint / name).is_file():
            problems.append(f"no {name}")
    rng_states = list(checkpoint.glob("rng_state*.pth"))
    if not rng_states:
        problems.append("no rng_state.pth")
    for file in [checkpoint / "optimizer.pt", checkpoint / "scheduler.pt", *rng_states]:
        if file.is_file() and not zipfile.is_zipfile(file):  # torch.save writes a zip: a cut one lacks its index
            problems.append(f"{file.name} is truncated")
    return problems


def json_complete(path: Path) -> bool:
    """True when the file parses as JSON."""
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


def safetensors_complete(path: Path) -> bool:
    """True when the file is as long as its own header says (a killed write leaves it shorter)."""
    try:
        with path.open("rb") as file:
            header_length = int.from_bytes(file.read(8), "little")
            header = json.loads(file.read(header_length))
    except (OSError, ValueError):
        return False
    data_length = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    return path.stat().st_size == 8 + header_length + data_length


def checkpoints(output_dir: Path | str) -> list[Path]:
    """The `checkpoint-N` folders of a run, newest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := CHECKPOINT_PATTERN.match(p.name))]
    return [path for _, path in sorted(found, reverse=True)]


def checkpoint_step(checkpoint: Path | None) -> int:
    """The optimizer step a checkpoint was saved at (0 for none)."""
    return int(CHECKPOINT_PATTERN.match(checkpoint.name).group(1)) if checkpoint else 0


def resume_record(first_step: int) -> dict[str, int]:
    """`resumed_from_step` for a run resumed from a checkpoint: its train_seconds then cover only the steps after."""
    return {"resumed_from_step": first_step} if first_step else {}


def last_complete_checkpoint(output_dir: Path | str) -> Path | None:
    """The newest checkpoint that can be resumed exactly; incomplete ones are named in the log and skipped."""
    found = checkpoints(output_dir)
    for checkpoint in found:
        problems = checkpoint_problems(checkpoint)
        if not problems:
            return checkpoint
        logger.warning("Not resuming from %s: %s", checkpoint, ", ".join(problems))
    if found:
        raise RecipeError(
            f"{output_dir} holds checkpoints but none is complete ({found[0].name}: "
            f"{', '.join(checkpoint_problems(found[0]))}); delete them or set overwrite_output_dir: true"
        )
    return None


def max_length_within_positions(max_length: int, config) -> int:
    """`max_length` capped at the model's context: a longer example would index past its position embeddings."""
    positions = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if not positions or max_length <= positions:
        return max_length
    logger.warning(
        "max_length %d is more than the model's %d positions: examples longer than %d tokens are left out",
        *(max_length, positions, positions),
    )
    return positions


# Fields that may change between a run and its resumption without making it another run.
RESUME_NEUTRAL_FIELDS = frozenset(
    {
        "output_dir",  # a moved or copied folder is still the same run
        "run_name",
        "overwrite_output_dir",
        "resume_from_checkpoint",
        "logging_steps",
        "disable_tqdm",
        "report_to",
        "push_to_hub",
    }
)


def config_changes(previous: dict, current: dict) -> list[str]:
    """Fields whose resolved value differs between two run_config.yaml `config` sections."""
    return sorted(
        name
        for group, fields in current.items()
        for name, value in fields.items()
        if name not in RESUME_NEUTRAL_FIELDS and previous.get(group, {}).get(name, value) != value
    )


def input_fingerprints(*paths: str | None) -> dict[str, str]:
    """Size and mtime of the weights in each local input folder: a re-trained input means this stage is stale."""
    fingerprints = {}
    for path in paths:
        if path and Path(path).is_dir():
            files = sorted(Path(path).glob("*.safetensors"))
            fingerprints[str(path)] = ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    return fingerprints


def _previous_record(output_dir: Path) -> dict:
    import yaml

    record = output_dir / "run_config.yaml"
    return (yaml.safe_load(record.read_text()) or {}) if record.is_file() else {}


def finished_earlier(
    output_dir: Path | str, *argument_groups, inputs: dict[str, str], overwrite: bool = False
) -> bool:
    """True when the output folder holds a finished run of this same config on these same inputs.

    `make all` run again then skips the stage; overwrite_output_dir forces it to train again.
    """
    from hf_recipes.runtime import resolved_config

    output_dir = Path(output_dir)
    if overwrite or not (output_dir / "metrics.json").is_file():
        return False
    previous = _previous_record(output_dir)
    return (
        previous.get("complete") is True
        and not config_changes(previous.get("config", {}), resolved_config(*argument_groups))
        and previous.get("inputs", {}) == inputs
    )


def skip_if_finished(
    output_dir: Path | str, *argument_groups, inputs: dict[str, str], overwrite: bool = False
) -> bool:
    """Log and return True when the stage's output is already complete for this recipe and these inputs."""
    if not finished_earlier(output_dir, *argument_groups, inputs=inputs, overwrite=overwrite):
        return False
    logger.info(
        "%s already holds this finished run (same recipe, same inputs): skipping it "
        "(overwrite_output_dir: true runs it again)",
        output_dir,
    )
    return True


def prepare_output_dir(training_args, *argument_groups, inputs: dict[str, str] | None = None) -> Path:
    """Create the output folder; refuse one holding another run's checkpoints unless told to overwrite them.

    "Another run" means its run_config.yaml resolved to different values (ignoring RESUME_NEUTRAL_FIELDS), so
    re-running the same command resumes, and pointing a new recipe at an old folder does not silently mix them.
    Checkpoints trained from other inputs (the model folder before it was trained again) are stale: they are
    deleted and the stage starts over, instead of "resuming" at the old run's last step with its weights.
    """
    import shutil

    from hf_recipes.runtime import resolved_config

    output_dir = Path(training_args.output_dir)
    found = checkpoints(output_dir)
    previous = _previous_record(output_dir)
    stale_inputs = bool(found) and inputs is not None and previous.get("inputs", inputs) != inputs
    if training_args.overwrite_output_dir or stale_inputs:
        if stale_inputs:
            logger.warning(
                "%s holds checkpoints trained from other inputs (%s changed since): deleting them and starting over",
                *(output_dir, ", ".join(sorted(set(inputs) | set(previous["inputs"])))),
            )
        elif found:
            logger.warning("overwrite_output_dir: deleting %d checkpoint(s) in %s", len(found), output_dir)
        for checkpoint in found:
            shutil.rmtree(checkpoint)
        (output_dir / "metrics.json").unlink(missing_ok=True)  # no number of the old run may survive into the new
    elif found:
        changed = config_changes(previous.get("config", {}), resolved_config(training_args, *argument_groups))
        if changed:
            raise RecipeError(
                f"{output_dir} holds checkpoints of a run with a different config ({', '.join(changed[:5])}"
                f"{'...' if len(changed) > 5 else ''} changed): set overwrite_output_dir: true to start over, "
                "or choose another output_dir"
            )
    output_dir.mkdir(parents=True, exist_ok=True)
    # TensorBoard logs in <output_dir>/runs. Set explicitly: a log before training starts (our initial evaluation)
    # would otherwise open the writer before the callback knows the output folder, and it falls back to ./runs.
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(output_dir / "runs")
    return output_dir


# ----------------------------------------------------------------------------------------------------------------
# Logging and callbacks
# ----------------------------------------------------------------------------------------------------------------


class PerplexityLogMixin:
    """Adds `eval_perplexity` = exp(eval_loss) wherever the trainer logs an eval loss (console, TensorBoard, state)."""

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "eval_loss" in logs:
            logs["eval_perplexity"] = perplexity_of(logs["eval_loss"])
        super().log(logs, *args, **kwargs)


class TiedWeightsLoadMixin:
    """No "missing keys: lm_head.weight" warning when the best checkpoint is loaded back at the end of training.

    Checkpoints leave out the output embedding tied to the input one; the in-place load updates both, so its absence
    is expected (GPT-2 does not list it in `_keys_to_ignore_on_save`, which is what the Trainer checks).
    """

    def _issue_warnings_after_load(self, load_result) -> None:
        tied = set()
        if getattr(self.model.config, "tie_word_embeddings", False):
            tied = {name for name, _ in self.model.named_parameters(remove_duplicate=False)} - {
                name for name, _ in self.model.named_parameters()
            }
        missing = [key for key in load_result.missing_keys if key not in tied]
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))


def perplexity_of(loss: float) -> float:
    """exp(loss), capped so a diverged run reports a huge number instead of overflowing."""
    return math.exp(min(loss, 50.0))


class NonFiniteLossCallback(TrainerCallback):
    """Stop at the first logged NaN/inf loss with a clear error; the last complete checkpoint stays as it was.

    A non-finite gradient norm stops it too: that step's update may already have made the weights NaN, and the
    checkpoint of that step (saved right after this log) would keep them. Not under fp16, whose loss scaler skips
    inf-gradient steps on purpose. Needs `logging_nan_inf_filter=False` (our default): with the stock True, a NaN
    loss is logged as the mean of the steps before it.
    """

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "eval_loss", *(() if args.fp16 else ("grad_norm",))):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(value):
                self.stop(f"{key} is {value} at step {state.global_step}", args)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # An update that overflows (an absurd learning rate) leaves this step's loss and gradients finite and the
        # weights inf: check them before the checkpoint this step is about to save.
        if control.should_save and model is not None and not all(p.isfinite().all() for p in model.parameters()):
            self.stop(f"the weights are not finite after step {state.global_step}", args)

    @staticmethod
    def stop(problem: str, args) -> None:
        last_good = next((c for c in checkpoints(args.output_dir) if not checkpoint_problems(c)), None)
        kept = f"; the last complete checkpoint is {last_good}" if last_good else "; no checkpoint was saved"
        raise RecipeError(f"training stopped: {problem} (try a lower learning_rate or max_grad_norm){kept}")


class SigtermCallback(TrainerCallback):
    """On SIGTERM (preemption, a scheduler's time limit, `kill`), save a checkpoint after the current step and stop.

    The handler only sets a flag: the step in flight finishes, the Trainer writes a complete checkpoint, and the recipe
    then calls `exit_if_stopped`, which exits with status 143 (128 + SIGTERM) before any final model, metrics or
    "complete" record is written. Running the same command again resumes from that checkpoint.
    """

    def __init__(self):
        self.received: int | None = None
        self.previous = None

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():  # Python only sets handlers on the main thread
            self.previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.received = signum  # nothing else here: logging or saving could re-enter code the signal interrupted

    def on_step_end(self, args, state, control, **kwargs):
        received = self.received is not None
        if args.world_size > 1:  # every process must stop at the same step, or the checkpoint's collectives hang
            import torch
            from accelerate.utils import reduce

            received = bool(reduce(torch.tensor([float(received)], device=args.device), reduction="sum").item())
            self.received = self.received or (signal.SIGTERM if received else None)
        if received:
            logger.warning("SIGTERM: saving checkpoint-%d and stopping", state.global_step)
            control.should_save = True
            control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        # With save_total_limit 1 and load_best_model_at_end, the Trainer's end of training deletes every checkpoint
        # but the best: the one just saved to resume from would go, and the steps since the best would be redone.
        # The limit is already applied to this save (the rotation keeps the newest and the best); lifting it now only
        # skips that final cleanup, and the run exits right after.
        if self.received is not None and args.save_total_limit == 1:
            args.save_total_limit = None

    def on_train_end(self, args, state, control, **kwargs):
        if self.previous is not None:  # from here on SIGTERM ends the process at once: there is no step to save
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None

    def exit_if_stopped(self, trainer) -> None:
        """After `trainer.train()`: exit 143 with a one-line note naming the checkpoint when SIGTERM stopped it."""
        if self.received is None:
            return
        if trainer.is_world_process_zero():
            checkpoint = next((c for c in checkpoints(trainer.args.output_dir) if not checkpoint_problems(c)), None)
            print(
                f"stopped by SIGTERM at step {trainer.state.global_step}: {checkpoint} is saved; run the same command "
                "again to resume from it",
                file=sys.stderr,
                flush=True,
            )
        sys.exit(128 + self.received)


class RunLengthCallback(TrainerCallback):
    """After a few warm-up steps, log the measured speed and the estimated time to finish."""

    def __init__(self, tokens_per_step: int, measure_after: int = 5, measure_steps: int = 10):
        self.tokens_per_step = tokens_per_step
        self.measure_after = measure_after
        self.measure_steps = measure_steps
        self.started: tuple[int, float] | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        steps_done = state.global_step
        if self.started is None and steps_done >= self.measure_after:
            self.started = (steps_done, time.perf_counter())
        elif self.started and steps_done == self.started[0] + self.measure_steps:
            seconds_per_step = (time.perf_counter() - self.started[1]) / self.measure_steps
            remaining = (state.max_steps - steps_done) * seconds_per_step
            logger.info(
                "Measured %.2f s/step (%s tokens/s): about %.1f more minutes of training for %d steps",
                seconds_per_step,
                f"{self.tokens_per_step / seconds_per_step:,.0f}",
                remaining / 60,
                state.max_steps,
            )


def seconds_spent_evaluating(log_history: list[dict], after_step: int = 0) -> float:
    """Total eval runtime logged after `after_step` (to subtract from training wall time)."""
    return sum(entry.get("eval_runtime", 0.0) for entry in log_history if entry.get("step", 0) > after_step)


@dataclass(frozen=True)
class PushTarget:
    """Where a stage pushes its finished folder (through hub.push_folder, never through the Trainer)."""

    repo_id: str
    private: bool
    token: str

    def push(self, folder: Path | str):
        from hf_recipes.hub import push_folder

        return push_folder(folder, self.repo_id, private=self.private, token=self.token)


def take_hub_settings(training_args) -> PushTarget | None:
    """Take the Hub settings out of the training arguments, and check a push can work before anything loads.

    The Trainer pickles hub_token into training_args.bin; given push_to_hub it creates the repository (public
    unless hub_private_repo) when built and uploads every checkpoint with runs/ and training_args.bin. So the
    Trainer never sees either: only our filtered push_folder pushes, once, at the end.
    """
    token = getattr(training_args, "hub_token", None)
    training_args.hub_token = None
    if not training_args.push_to_hub:
        return None
    training_args.push_to_hub = False
    from hf_recipes.hub import check_can_write

    repo_id = training_args.hub_model_id
    return PushTarget(repo_id, bool(training_args.hub_private_repo), check_can_write(repo_id, token))


def remove_pickled_args(output_dir: Path | str) -> None:
    """Delete training_args.bin: a pickle (unsafe to load) that nothing of ours reads."""
    for path in Path(output_dir).glob("**/training_args.bin"):
        path.unlink()


def plot_losses(log_history: list[dict], path: Path | str, title: str) -> Path | None:
    """Training and validation loss against step, as a PNG (None when there is nothing to plot)."""
    train = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry and "step" in entry]
    evals = [(entry["step"], entry["eval_loss"]) for entry in log_history if "eval_loss" in entry]
    if not train and not evals:
        return None
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    if train:
        axis.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        axis.plot(*zip(*evals, strict=True), marker="o", label="validation loss")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("cross-entropy (nats/token)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
