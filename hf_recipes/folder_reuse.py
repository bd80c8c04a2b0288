"""Whether a stage's output folder is reused, resumed or started over: a finished run of the same recipe on the same
inputs is skipped, checkpoints of the same run are resumed, another run's checkpoints are refused (or deleted when
told to overwrite), and checkpoints trained from inputs that changed since are deleted.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from hf_recipes.checkpoints import checkpoints
from hf_recipes.run_folder import METRICS, read_run_config, resolved_config
from hf_recipes.runtime import RecipeError

logger = logging.getLogger("hf_recipes")

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


def finished_earlier(
    output_dir: Path | str, *argument_groups, inputs: dict[str, str], overwrite: bool = False
) -> bool:
    """True when the output folder holds a finished run of this same config on these same inputs.

    `make all` run again then skips the stage; overwrite_output_dir forces it to train again.
    """
    output_dir = Path(output_dir)
    if overwrite or not (output_dir / METRICS).is_file():
        return False
    previous = read_run_config(output_dir)
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


def prepare_output_dir(training_args, *argument_groups, inputs: dict[str, str]) -> Path:
    """Create the output folder; refuse one holding another run's checkpoints unless told to overwrite them.

    "Another run" means its run_config.yaml resolved to different values (ignoring RESUME_NEUTRAL_FIELDS), so
    re-running the same command resumes, and pointing a new recipe at an old folder does not silently mix them.
    Checkpoints trained from other inputs (the model folder before it was trained again) are stale: they are
    deleted and the stage starts over, instead of "resuming" at the old run's last step with its weights.
    """
    output_dir = Path(training_args.output_dir)
    found = checkpoints(output_dir)
    previous = read_run_config(output_dir)
    stale_inputs = bool(found) and previous.get("inputs", inputs) != inputs
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
        (output_dir / METRICS).unlink(missing_ok=True)  # no number of the old run may survive into the new
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
