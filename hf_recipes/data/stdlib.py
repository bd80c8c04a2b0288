"""The built-in data: the running Python's standard library source, and the function-name chat task made from it.

The train/validation split is by module path through a hash, so every machine with the same Python gets the same
split, and validation functions (for SFT and DPO) come from modules never seen in training.
"""

from __future__ import annotations

import ast
import hashlib
import sysconfig
import textwrap
from collections.abc import Iterator
from functools import cache
from pathlib import Path

STDLIB_ROOT = Path(sysconfig.get_paths()["stdlib"])
# Test suites and third-party packages are not "the standard library's own source".
EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})
VALIDATION_PERCENT = 5.0

SYSTEM_PROMPT = "You are a helpful assistant in programming."
INSTRUCTION = "Extract the function name from the code."


def stdlib_modules(root: Path = STDLIB_ROOT) -> list[str]:
    """Relative paths of the standard library's .py files (no tests, no site-packages), sorted."""
    modules = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if EXCLUDED_DIRS.isdisjoint(parts[:-1]) and not parts[-1].startswith("test_"):
            modules.append(path.relative_to(root).as_posix())
    return sorted(modules)


def split_of(module: str, validation_percent: float = VALIDATION_PERCENT) -> str:
    """'validation' or 'train' for a module path, decided by a hash of the path (stable across machines)."""
    bucket = int.from_bytes(hashlib.sha256(module.encode()).digest()[:8], "big") % 10_000
    return "validation" if bucket < validation_percent * 100 else "train"


def split_modules(split: str, validation_percent: float = VALIDATION_PERCENT, root: Path = STDLIB_ROOT) -> list[str]:
    """The module paths that belong to `split`."""
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', not {split!r}")
    return [module for module in stdlib_modules(root) if split_of(module, validation_percent) == split]


def read_source(module: str, root: Path = STDLIB_ROOT) -> str | None:
    """A module's text, or None for the few files that are not UTF-8 (lib2to3 test data and the like)."""
    try:
        return (root / module).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def iter_documents(modules: list[str], root: str) -> Iterator[dict[str, str]]:
    """Rows of the corpus dataset: one per module (a generator for `datasets.Dataset.from_generator`)."""
    for module in modules:
        text = read_source(module, Path(root))
        if text and text.strip():
            yield {"path": module, "text": text}


def validation_token_blocks(tokenizer, block_size: int, max_blocks: int | None = None) -> list[list[int]]:
    """The validation modules tokenized, joined with eos and cut into full blocks: the held-out perplexity data."""
    from hf_recipes.data.packing import pack_ids

    texts = [row["text"] for row in iter_documents(split_modules("validation"), str(STDLIB_ROOT))]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    blocks, _ = pack_ids(encoded, block_size, tokenizer.eos_token_id)
    return blocks[:max_blocks] if max_blocks is not None else blocks


# ----------------------------------------------------------------------------------------------------------------
# The function-name task
# ----------------------------------------------------------------------------------------------------------------


def functions_in(source: str) -> Iterator[tuple[str, str]]:
    """(name, source) of every function and method in a module, nested ones included, in source order."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return
    lines = source.splitlines()
    nodes = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for node in sorted(nodes, key=lambda node: (node.lineno, node.col_offset)):
        # Slicing lines once is ~10x faster than ast.get_source_segment, which re-splits the module every call.
        yield node.name, textwrap.dedent("\n".join(lines[node.lineno - 1 : node.end_lineno])).strip("\n")


def function_name_conversation(code: str, name: str) -> dict[str, list[dict[str, str]]]:
    """One example of the task: system prompt, the instruction with the code, and the name as the answer."""
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"{INSTRUCTION}\n\n{code}"},
            {"role": "assistant", "content": name},
        ]
    }


@cache
def _module_functions(module: str, root: Path) -> tuple[tuple[str, str], ...]:
    source = read_source(module, root)
    return tuple(functions_in(source)) if source else ()


def function_name_conversations(
    split: str, limit: int | None = None, validation_percent: float = VALIDATION_PERCENT, root: Path = STDLIB_ROOT
) -> list[dict[str, list[dict[str, str]]]]:
    """Every function of the split's modules as a conversation, in a stable order (first `limit` if given)."""
    conversations = []
    for module in split_modules(split, validation_percent, root):
        for name, code in _module_functions(module, root):
            conversations.append(function_name_conversation(code, name))
            if limit is not None and len(conversations) >= limit:
                return conversations
    return conversations
