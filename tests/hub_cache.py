"""Lay out a local folder exactly like the Hugging Face Hub cache, so a Hub id loads offline in tests.

<cache>/models--org--name/
    blobs/<sha256>                      each file's bytes, named by its hash (the Hub's LFS etag)
    snapshots/<commit>/<path>           relative symlinks into blobs/ (copies where symlinks are not allowed)
    refs/<revision>                     the commit hash the revision points to (no trailing newline)
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def repo_folder_name(repo_id: str, repo_type: str = "model") -> str:
    """`org/name` -> `models--org--name`, as huggingface_hub names it."""
    return f"{repo_type}s--" + repo_id.replace("/", "--")


def make_hub_cache(cache_dir: Path | str, repo_id: str, source_folder: Path | str, revision: str = "main") -> Path:
    """Copy every file of `source_folder` into the cache as `repo_id` at `revision`; return the snapshot path."""
    source = Path(source_folder)
    repo = Path(cache_dir) / repo_folder_name(repo_id)
    files = sorted(p for p in source.rglob("*") if p.is_file())
    hashes = {p.relative_to(source).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    # A stable 40-hex "commit": the same files give the same snapshot, like a Git tree hash would.
    commit = hashlib.sha1("".join(f"{name}\0{digest}\n" for name, digest in hashes.items()).encode()).hexdigest()

    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo / "snapshots" / commit
    for path in files:
        name = path.relative_to(source).as_posix()
        blob = repo / "blobs" / hashes[name]
        if not blob.exists():
            shutil.copyfile(path, blob)
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            target.symlink_to(os.path.relpath(blob, target.parent))
        except OSError:  # no symlinks (some Windows setups): huggingface_hub then copies too
            shutil.copyfile(blob, target)
    ref = repo / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)  # a revision may have slashes (refs/pr/1)
    ref.write_text(commit)
    return snapshot
