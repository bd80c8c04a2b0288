"""Local data files by name: which `datasets` builder reads them, under which compression, and opening them.

No `datasets` import here: the model card and the JSON Lines reader use it too."""

from __future__ import annotations

from pathlib import Path

from hf_recipes.runtime import RecipeError

# File extension -> `datasets` builder; a text format may also be compressed (`data.jsonl.gz`), as `datasets` reads.
BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")


def data_suffix(path: Path | str) -> str:
    """The data format's extension, under any compression: `rows.jsonl.gz` -> `.jsonl`."""
    suffixes = Path(path).suffixes
    return suffixes[-2] if len(suffixes) > 1 and suffixes[-1] in COMPRESSIONS else Path(path).suffix


def looks_like_a_data_file(name: str) -> bool:
    return data_suffix(name) in BUILDERS


def open_data_file(path: Path):
    """A local data file opened for reading bytes, decompressed when its name says it is compressed."""
    import bz2
    import gzip
    import lzma

    openers = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
    suffix = Path(path).suffix
    if suffix == ".zst":
        try:
            import zstandard
        except ImportError:
            raise RecipeError(f"{path}: reading .zst needs the zstandard package: pip install zstandard") from None
        return zstandard.open(path, "rb")
    return openers.get(suffix, open)(path, "rb")
