"""Checkpoints that can be resumed exactly: complete ones are found, half-written ones are named and skipped."""

from __future__ import annotations

import json
import logging
import re
import zipfile
from pathlib import Path

from hf_recipes.runtime import RecipeError

logger = logging.getLogger("hf_recipes")


CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors")


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
