"""Experiment trackers beside TensorBoard: trackio (Hugging Face's, local-first) and Weights & Biases, through the
Trainer's own callbacks (`report_to: trackio`, `report_to: [tensorboard, wandb]`).

Each is an optional extra (`pip install 'hf-recipes[trackio]'`, `[wandb]`): a recipe naming a missing one fails when
the stage starts, not after data and model have loaded, and a finished run records where its logs are
(`tracking` in run_config.yaml), which the model card links.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from hf_recipes.runtime import RecipeError

# report_to name -> the package it needs (also the name of the extra that installs it).
TRACKER_PACKAGES = {"trackio": "trackio", "wandb": "wandb"}


def trackers_of(training_args) -> list[str]:
    """The trackers of TRACKER_PACKAGES that the run reports to."""
    report_to = training_args.report_to or []
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    if "all" in names:  # the Trainer's "every integration installed": it picks only installed ones itself
        return [name for name, package in TRACKER_PACKAGES.items() if importlib.util.find_spec(package)]
    return [name for name in names if name in TRACKER_PACKAGES]


def require_trackers(training_args) -> None:
    """A one-line error naming the extra to install, for each tracker in report_to whose package is missing."""
    for name in trackers_of(training_args):
        if importlib.util.find_spec(TRACKER_PACKAGES[name]) is None:
            raise RecipeError(
                f"report_to: {name} needs the {TRACKER_PACKAGES[name]} package: pip install 'hf-recipes[{name}]' "
                "(or report_to: tensorboard, which needs nothing more)"
            )


def tracking_record(training_args) -> dict[str, dict[str, Any]]:
    """Where each tracker of the run keeps its logs: a link where it has one, else the local place and its viewer."""
    record: dict[str, dict[str, Any]] = {}
    names = trackers_of(training_args)
    if "trackio" in names:
        project, space = training_args.project, training_args.trackio_space_id
        local = Path(os.environ.get("TRACKIO_DIR", Path.home() / ".cache" / "huggingface" / "trackio"))
        logs = f"https://huggingface.co/spaces/{space}" if space else f"{local} (trackio show --project {project})"
        record["trackio"] = {"project": project, "run": training_args.run_name, "logs": logs}
    if "wandb" in names:
        import wandb

        run = wandb.run
        if run is not None:
            offline = run.settings.mode in ("offline", "dryrun") or not run.url
            run_folder = Path(run.dir).parent
            logs = f"{run_folder} (offline: wandb sync {run_folder})" if offline else run.url
            record["wandb"] = {"project": run.project, "run": run.name, "logs": logs}
    return record
