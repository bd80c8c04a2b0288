"""The built-in data: the running Python's standard library source, and the function-name chat task made from it.

The train/validation split is by module path through a hash, so every machine with the same Python gets the same
split, and validation functions (for SFT and DPO) come from modules never seen in training.
"""

from __future__ import annotations

import ast
import hashlib
import keyword
import random
import re
import sysconfig
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# The built-in chat task's dataset name ("Extract the function name from the code").
BUILTIN_CHAT_TASK = "stdlib-function-name"

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
    split: str,
    limit: int | None = None,
    validation_percent: float = VALIDATION_PERCENT,
    root: Path = STDLIB_ROOT,
    renamed_share: float = 0.0,
    code_lines: int | None = None,
    made_up_names: MadeUpNames | None = None,
) -> list[dict[str, list[dict[str, str]]]]:
    """Every function of the split's modules as a conversation, in a stable order (first `limit` if given).

    `renamed_share` of the functions (a stable choice) get a made-up name, in the code and the answer: see
    `renamed_function`; `made_up_names` says what they are made of (default: the words of the split's function names,
    in snake case). `code_lines` cuts each function to its first lines (its def line comes first).
    """
    modules = split_modules(split, validation_percent, root)
    if renamed_share > 0 and made_up_names is None:
        made_up_names = MadeUpNames(name_pieces(tuple(modules), root))
    conversations = []
    for module in modules:
        for index, (name, code) in enumerate(_module_functions(module, root)):
            if renamed_share > 0:
                rng = random.Random(f"{module}:{index}")  # the same choice and name on every machine
                if rng.random() < renamed_share:
                    name, code = renamed_function(name, code, made_up_names, rng)
            if code_lines:
                code = "\n".join(code.splitlines()[:code_lines])
            conversations.append(function_name_conversation(code, name))
            if limit is not None and len(conversations) >= limit:
                return conversations
    return conversations


# Why rename: pretraining has read every training module, so a real training function's name can be recalled
# from memory; held-out functions come from unseen modules and their names must be copied from the code. Made-up
# names can only be copied, so they put SFT's gradient on the skill the held-out set measures.


@cache
def name_pieces(modules: tuple[str, ...], root: Path) -> tuple[str, ...]:
    """The lower-case words that the modules' function names are made of (`get_default_args` -> get, default,
    args): the vocabulary of made-up names."""
    words = set()
    for module in modules:
        for name, _ in _module_functions(module, root):
            words.update(word.lower() for word in re.findall(r"[a-z]+|[A-Z][a-z]+", name) if len(word) > 1)
    return tuple(sorted(words - set(keyword.kwlist)))


@dataclass(frozen=True)
class MadeUpNames:
    """What made-up names are made of: one to three `pieces`, joined in one of `styles` (snake: `a_b`,
    concatenated: `ab`, camel: `AB`) picked at random for each name."""

    pieces: tuple[str, ...]
    styles: tuple[str, ...] = ("snake",)
    # The share of names of several words that keep their first words and get new last ones (`_get_versions` ->
    # `_get_tension`); see `renamed_function`.
    kept_words_share: float = 0.0

    def join(self, pieces: list[str], style: str) -> str:
        if style == "snake":
            return "_".join(pieces)
        if style == "concatenated":
            return "".join(pieces)
        if style == "camel":
            return "".join(piece[:1].upper() + piece[1:] for piece in pieces)
        raise ValueError(f"unknown name style {style!r}; styles are snake, concatenated, camel")


def vocabulary_names(tokenizer) -> MadeUpNames:
    """Made-up names from the identifier-like entries of a tokenizer's vocabulary (`tension`, `ickle`, `Se`; the
    leading space and underscores dropped), in all three styles.

    Why: the misses on long held-out names are rare tokens (`is_un|speci|fied` answered `is_unuallyfied`): the
    induction head attends to the right token and the model still does not write it. Function-name words tokenize
    into common tokens, so SFT on them never copies a rare one; here every identifier-like token can come up
    (benchmarks/LEARNING.md, "Made-up names from the vocabulary")."""
    pieces = set()
    for token in tokenizer.get_vocab():
        text = tokenizer.convert_tokens_to_string([token]).strip().lstrip("_")
        if re.fullmatch(r"[A-Za-z][A-Za-z0-9]+", text):
            pieces.add(text)
    return MadeUpNames(tuple(sorted(pieces)), ("snake", "concatenated", "camel"))


def name_words(name: str) -> tuple[list[str], str]:
    """(words, style) of a name without its leading underscores: `get_default_args` -> ([get, default, args],
    snake), `GetKeySet` -> ([Get, Key, Set], camel), `mksalt` -> ([mksalt], concatenated)."""
    bare = name.lstrip("_")
    if "_" in bare.strip("_"):
        return [word for word in bare.split("_") if word], "snake"
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+", bare)
    if len(words) > 1 and "".join(words) == bare:
        return words, "camel"
    return [bare], "concatenated"


def renamed_function(name: str, code: str, names: MadeUpNames, rng: random.Random) -> tuple[str, str]:
    """(new name, code with every whole-word use of `name` replaced): one to three random pieces of `names`,
    keeping a private name's leading underscores. Dunder methods and names too short to be unique keep theirs.

    With `names.kept_words_share`, that share of the names of several words keep their first words and get one or
    two new last ones in the name's own style (`_get_versions` -> `_get_tension`, `GetKeySet` -> `GetKeyTension`).
    Why: a whole made-up name occurs once in its code, so copying it is never ambiguous; held-out names often
    start with words the code uses elsewhere (`_get_` before other calls), and the model must copy the rest from
    the def line, not from another `_get_x`. Such names were missed three times as often; at 0.5 these names did
    not change that, so the recipes leave the share at 0 (benchmarks/LEARNING.md, "Made-up names that keep their
    first words")."""
    if not names.pieces or (name.startswith("__") and name.endswith("__")) or len(name) < 3:
        return name, code
    underscores = name[: len(name) - len(name.lstrip("_"))]
    new_body = _body_with_kept_words(name, names, rng) if names.kept_words_share else None
    if new_body is None:  # drawn only here, so names made without kept words stay the same names
        pieces = rng.sample(names.pieces, min(len(names.pieces), rng.randint(1, 3)))
        style = rng.choice(names.styles) if len(names.styles) > 1 else names.styles[0]  # one style: no draw
        new_body = names.join(pieces, style)
    new_name = underscores + new_body
    if new_name == name or re.search(rf"\b{re.escape(new_name)}\b", code):
        return name, code  # the new name must not already mean something in this code
    return new_name, re.sub(rf"\b{re.escape(name)}\b", new_name, code)


def _body_with_kept_words(name: str, names: MadeUpNames, rng: random.Random) -> str | None:
    """`name`'s first words and one or two new pieces in its own style, without its leading underscores, for
    `names.kept_words_share` of the names of several words (None for the others)."""
    words, style = name_words(name)
    if len(words) < 2 or rng.random() >= names.kept_words_share:
        return None
    kept = words[: rng.randint(1, len(words) - 1)]
    new_words = rng.sample(names.pieces, min(len(names.pieces), rng.randint(1, 2)))
    joiner = "_" if style == "snake" else ""  # the kept words as written: `getKey` stays lower camel
    return joiner.join(kept) + joiner + names.join(new_words, style)


# ----------------------------------------------------------------------------------------------------------------
# Preference pairs for the function-name task (DPO)
# ----------------------------------------------------------------------------------------------------------------

# Parameters every method has: as wrong answers they teach nothing the model does not already know.
TRIVIAL_NAMES = frozenset({"self", "cls"})


def wrong_name_candidates(name: str, code: str, module_definitions: Iterable[str]) -> list[list[str]]:
    """Wrong answers found in the code, by kind: [functions it calls, its parameters, other definitions in the module].

    Each list is in source order, without duplicates and without `name` itself.
    """
    calls, parameters = [], []
    try:
        tree = ast.parse(code)
    except SyntaxError:  # a fragment that does not parse alone still has the module's other definitions
        tree = None
    if tree is not None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                if isinstance(node.func, ast.Name):
                    calls.append(node.func.id)
                elif isinstance(node.func, ast.Attribute):
                    calls.append(node.func.attr)
        function = tree.body[0] if tree.body else None
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = function.args
            every = [*arguments.posonlyargs, *arguments.args, arguments.vararg, *arguments.kwonlyargs, arguments.kwarg]
            parameters = [argument.arg for argument in every if argument is not None]
    kinds = [calls, [p for p in parameters if p not in TRIVIAL_NAMES], list(module_definitions)]
    return [[candidate for candidate in dict.fromkeys(kind) if candidate != name] for kind in kinds]


def pick_wrong_names(name: str, code: str, module_definitions: Iterable[str], key: str, count: int = 1) -> list[str]:
    """Up to `count` plausible wrong answers, chosen by a hash of `key` (the same on every machine); [] if the code
    has none.

    The hash picks the kind to try first and the kinds then take turns, so the pairs mix called functions,
    parameters and sibling definitions; the first name is the same whatever `count` is.
    """
    kinds = wrong_name_candidates(name, code, module_definitions)
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    in_turn = [kinds[(digest + offset) % len(kinds)] for offset in range(len(kinds))]
    start = digest // len(kinds)
    picked = []
    for turn in range(max(map(len, kinds))):
        for kind in in_turn:
            if turn < len(kind):
                picked.append(kind[(start + turn) % len(kind)])
                if len(picked) == count:
                    return picked
    return picked


def function_name_pairs(
    split: str,
    limit: int | None = None,
    validation_percent: float = VALIDATION_PERCENT,
    root: Path = STDLIB_ROOT,
    wrong_names: int = 1,
) -> list[dict[str, list[dict[str, str]]]]:
    """The function-name task as conversational preference pairs, from the split's modules only, in a stable order.

    prompt = the SFT conversation without its answer (system + user), chosen = the function's name, rejected = a
    plausible wrong name from the same code (`pick_wrong_names`): `wrong_names` pairs per function where its code
    offers that many; functions with no wrong name to offer are skipped.
    """
    pairs = []
    for module in split_modules(split, validation_percent, root):
        functions = _module_functions(module, root)
        definitions = [defined for defined, _ in functions]
        for index, (name, code) in enumerate(functions):
            messages = function_name_conversation(code, name)["messages"]
            for rejected in pick_wrong_names(name, code, definitions, key=f"{module}:{index}", count=wrong_names):
                pairs.append(
                    {
                        "prompt": messages[:-1],
                        "chosen": messages[-1:],
                        "rejected": [{"role": "assistant", "content": rejected}],
                    }
                )
                if limit is not None and len(pairs) >= limit:
                    return pairs
    return pairs
