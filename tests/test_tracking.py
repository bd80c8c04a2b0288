"""trackio and Weights & Biases, offline: a tiny pretraining run logs the same losses the Trainer recorded to
trackio's local store and to a wandb offline run, records where they are, and the model card links them; a missing
tracker package is a one-line error at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

import hf_recipes.tracking as tracking
from hf_recipes.model_card import render_model_card
from hf_recipes.run_folder import read_run_config
from hf_recipes.runtime import RecipeError
from tests.conftest import REPO_ROOT, TINY_PRETRAIN_RUN

# In a fresh process: trackio reads TRACKIO_DIR when it is imported, wandb its mode when a run starts.
RUN = """
import sys
from hf_recipes.stages import pretrain
pretrain.main(sys.argv[1:])
"""


def pretrain_reporting_to(tracker: str, output_dir, env: dict[str, str]) -> dict:
    argv = [*TINY_PRETRAIN_RUN, "--output_dir", str(output_dir), "--run_name", "tiny-run", "--project", "hf-tiny"]
    argv[argv.index("--report_to") + 1] = tracker
    result = subprocess.run(
        [sys.executable, "-c", RUN, *argv],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((output_dir / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def test_trackio_logs_the_run_s_losses_to_its_local_store_and_the_card_says_where(tmp_path):
    store, output = tmp_path / "trackio", tmp_path / "run"
    losses = pretrain_reporting_to("trackio", output, {"TRACKIO_DIR": str(store)})
    read = subprocess.run(
        [sys.executable, "-c", "import json; from trackio.sqlite_storage import SQLiteStorage as S; "
         "print(json.dumps(S.get_logs('hf-tiny', 'tiny-run')))"],
        capture_output=True, text=True, env={**os.environ, "TRACKIO_DIR": str(store)}, timeout=120,
    )  # fmt: skip
    assert read.returncode == 0, read.stderr[-2000:]
    # trackio counts its own steps (an evaluation takes one), so the losses are compared in order.
    logged = [row["train/loss"] for row in sorted(json.loads(read.stdout), key=lambda row: row["step"])
              if "train/loss" in row]  # fmt: skip
    assert logged == pytest.approx([losses[step] for step in sorted(losses)]) and len(logged) == 4
    record = read_run_config(output)["tracking"]["trackio"]
    assert record == {"project": "hf-tiny", "run": "tiny-run", "logs": f"{store} (trackio show --project hf-tiny)"}
    assert f"- trackio, project `hf-tiny`, run `tiny-run`: {store}" in str(render_model_card(output))


def test_wandb_offline_writes_a_run_to_sync_later_and_the_record_says_how(tmp_path):
    output = tmp_path / "run"
    pretrain_reporting_to("wandb", output, {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)})
    (run_folder,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list(run_folder.glob("*.wandb")), "the offline run holds its logged history"
    record = read_run_config(output)["tracking"]["wandb"]
    assert record["run"] == "tiny-run"
    assert record["logs"] == f"{run_folder} (offline: wandb sync {run_folder})"


def test_a_tracker_whose_package_is_missing_is_refused_in_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        RecipeError, match=r"report_to: trackio needs the trackio package: pip install 'hf-recipes\[trackio\]'"
    ):
        tracking.require_trackers(SimpleNamespace(report_to=["tensorboard", "trackio"]))
    tracking.require_trackers(SimpleNamespace(report_to=["tensorboard"]))  # TensorBoard needs nothing more
    assert tracking.trackers_of(SimpleNamespace(report_to="all")) == []  # "all" means the installed ones
