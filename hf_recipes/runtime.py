"""What every recipe does around its training: clean error exit, logging, seeding, run records, checkpoints, plots."""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

logger = logging.getLogger("hf_recipes")

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


class RecipeError(Exception):
    """Something the user can fix (config, paths, data, missing optional packages): one line, exit status 2."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ` (did you mean 'x'?)` for the closest candidate, or an empty string."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def run_recipe(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> None:
    """Run a recipe's `main(argv)`; a RecipeError becomes one line on stderr and exit status 2.

    `--debug` (anywhere on the command line) shows the full traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        main(argv)
    except RecipeError as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)


def setup_logging(main_process: bool = True) -> None:
    """Log our messages at INFO on the main process, and keep the libraries' own chatter at WARNING."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO if main_process else logging.WARNING)
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_warning()
    datasets.utils.logging.set_verbosity_warning()


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
    resolved = {}
    for group in argument_groups:
        resolved[type(group).__name__] = {
            field.name: plain(getattr(group, field.name))
            for field in dataclasses.fields(group)
            if field.name not in SECRET_FIELDS
        }
    return resolved


def write_run_config(output_dir: Path | str, *argument_groups: Any, **extra: Any) -> Path:
    """Write `run_config.yaml`: resolved config, library versions, git commit, and `extra` (data fingerprint...)."""
    import yaml

    precision = next((group.precision for group in argument_groups if hasattr(group, "precision")), None)
    record = {
        "config": resolved_config(*argument_groups),
        # The machine's part in the run: bf16 on or off, and why (hf_recipes.precision).
        **({"precision": {"bf16": precision.bf16, "why": precision.describe()}} if precision else {}),
        "versions": library_versions(),
        "git_commit": git_commit(Path(__file__).resolve().parent),
        **{key: plain(value) for key, value in extra.items()},
    }
    path = Path(output_dir) / "run_config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(record, sort_keys=False))
    return path


def write_metrics(output_dir: Path | str, metrics: dict[str, Any]) -> Path:
    """Merge `metrics` into the stage's `metrics.json` (so evaluation can add to what training wrote)."""
    path = Path(output_dir) / "metrics.json"
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(plain(metrics))
    path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    return path


def read_metrics(output_dir: Path | str) -> dict[str, Any]:
    """The stage's `metrics.json`, or an empty dict when there is none."""
    path = Path(output_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}
