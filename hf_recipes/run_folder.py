"""A stage folder's record, read and written here only: run_config.yaml, metrics.json, the fingerprint of its
weights, what kind of model folder it is, and the marker of a 4-bit export that failed its check."""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from hf_recipes.runtime import RecipeError

RUN_CONFIG = "run_config.yaml"
METRICS = "metrics.json"
ADAPTER_FOLDER = "adapter"  # SFT/DPO with LoRA keep the adapter alone here, next to the merged model
NOT_VERIFIED_FILE = "NOT_VERIFIED.txt"  # left by an export (4-bit, GGUF) that failed its check: record_verdict
TRACKED_PACKAGES = (
    "hf-recipes",
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "evaluate",
    "bitsandbytes",
    "tokenizers",
    "huggingface_hub",
    "safetensors",
)
# Fields that must never be written anywhere: they carry credentials.
SECRET_FIELDS = frozenset({"hub_token", "token"})


# ----------------------------------------------------------------------------------------------------------------
# run_config.yaml: the resolved recipe, versions, commit, inputs, and whether the run completed
# ----------------------------------------------------------------------------------------------------------------


def library_versions() -> dict[str, str]:
    """Versions of the packages a result depends on ('not installed' where absent)."""
    versions = {"python": sys.version.split()[0]}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit(path: Path | str = ".") -> str | None:
    """The commit of the checkout at `path` (with `-dirty` when it has uncommitted changes), or None."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=path, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}-dirty" if dirty else commit


@functools.cache
def code_commit() -> str | None:
    """The commit of the hf_recipes code this process runs, read once: at the run's start (`lifecycle.start`), as a
    long run outlives commits made while it trains."""
    return git_commit(Path(__file__).resolve().parent)


def plain(value: Any) -> Any:
    """Turn dataclass field values (enums, paths, tuples, nested dicts) into YAML/JSON-safe values."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def resolved_config(*argument_groups: Any) -> dict[str, dict[str, Any]]:
    """Every field of every argument dataclass, by class name, secrets left out."""
    return {
        type(group).__name__: {
            field.name: plain(getattr(group, field.name))
            for field in dataclasses.fields(group)
            if field.name not in SECRET_FIELDS
        }
        for group in argument_groups
    }


def write_run_config(output_dir: Path | str, *argument_groups: Any, **extra: Any) -> Path:
    """Write `run_config.yaml`: resolved config, precision, versions, git commit, and `extra` (stage, inputs...)."""
    import yaml

    precision = next((group.precision for group in argument_groups if hasattr(group, "precision")), None)
    record = {
        "config": resolved_config(*argument_groups),
        # The machine's part in the run: bf16 on or off, and why (hf_recipes.precision).
        **({"precision": {"bf16": precision.bf16, "why": precision.describe()}} if precision else {}),
        "versions": library_versions(),
        "git_commit": code_commit(),
        **{key: plain(value) for key, value in extra.items()},
    }
    path = Path(output_dir) / RUN_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(record, sort_keys=False))
    return path


def read_run_config(folder: Path | str) -> dict[str, Any]:
    """The folder's run_config.yaml, or {} when there is none."""
    import yaml

    path = Path(folder) / RUN_CONFIG
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def config_value(run_config: dict[str, Any], key: str) -> Any:
    """The first argument group's value for `key` in a run_config.yaml (groups are keyed by dataclass name)."""
    for group in run_config.get("config", {}).values():
        if isinstance(group, dict) and group.get(key) is not None:
            return group[key]
    return None


# ----------------------------------------------------------------------------------------------------------------
# metrics.json: the stage's measured numbers
# ----------------------------------------------------------------------------------------------------------------


def write_metrics(output_dir: Path | str, metrics: dict[str, Any]) -> Path:
    """Merge `metrics` into the stage's `metrics.json` (so evaluation can add to what training wrote)."""
    path = Path(output_dir) / METRICS
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(plain(metrics))
    path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    return path


def clear_verdict(folder: Path | str) -> None:
    """Before an export is written again: a previous run's verdict must not outlive the files it judged."""
    for stale in (METRICS, NOT_VERIFIED_FILE):
        (Path(folder) / stale).unlink(missing_ok=True)


def record_verdict(folder: Path | str, metrics: dict[str, Any], problems: list[str], export: str) -> None:
    """metrics.json with `verified`; with `problems`, also NOT_VERIFIED.txt naming them and a RecipeError."""
    folder = Path(folder)
    write_metrics(folder, {**metrics, "verified": not problems})
    marker = folder / NOT_VERIFIED_FILE
    if not problems:
        marker.unlink(missing_ok=True)
        return
    reason = "; ".join(problems)
    marker.write_text(f"This {export} failed verification: {reason}.\nDo not use or publish it.\n")
    raise RecipeError(f"{folder} NOT verified: {reason}")


def read_metrics(output_dir: Path | str) -> dict[str, Any]:
    """The stage's `metrics.json`, or an empty dict when there is none."""
    path = Path(output_dir) / METRICS
    return json.loads(path.read_text()) if path.exists() else {}


def training_time(folder: Path | str) -> dict[str, Any]:
    """The stage's measured training seconds and, for a resumed run, the step it resumed from (its seconds then
    cover only the steps after it)."""
    metrics = read_metrics(folder)
    return {"train_seconds": metrics.get("train_seconds"), "resumed_from_step": metrics.get("resumed_from_step")}


# ----------------------------------------------------------------------------------------------------------------
# The weights: fingerprint, kind of folder, size
# ----------------------------------------------------------------------------------------------------------------


def weights_fingerprint(folder: Path | str) -> str:
    """Size and modification time of every weights file: changes whenever a stage rewrites its model."""
    files = sorted(Path(folder).glob("*.safetensors"))
    return ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)


def input_fingerprints(*paths: str | None) -> dict[str, str]:
    """The weights fingerprint of each local input folder: a re-trained input means a stage is stale."""
    return {str(path): weights_fingerprint(path) for path in paths if path and Path(path).is_dir()}


def model_folder_kind(folder: Path | str) -> str:
    """'model' (config.json + model*.safetensors) or 'adapter' (a LoRA adapter only); anything else is an error."""
    path = Path(folder)
    if not path.is_dir():
        raise RecipeError(f"model folder not found: {folder}")
    if (path / "config.json").is_file() and any(path.glob("model*.safetensors")):
        return "model"
    if (path / "adapter_config.json").is_file() and (path / "adapter_model.safetensors").is_file():
        return "adapter"
    raise RecipeError(f"{folder} holds no model (no config.json / *.safetensors)")


def folder_size_bytes(folder: Path | str) -> int:
    """Bytes on disk of a model folder's weight files (model*.safetensors, every shard)."""
    return sum(path.stat().st_size for path in Path(folder).glob("model*.safetensors") if path.is_file())
