"""The one error class users see, how a recipe turns it into one line, and logging."""

from __future__ import annotations

import difflib
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger("hf_recipes")


class RecipeError(Exception):
    """Something the user can fix (config, paths, data, missing optional packages): one line, exit status 2."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ` (did you mean 'x'?)` for the closest candidate, or an empty string."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def run_recipe(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> None:
    """Run a recipe's `main(argv)`; a RecipeError becomes one line on stderr and exit status 2.

    `--debug` (anywhere on the command line) shows the full traceback instead. A `main` marked
    `@keeps_freed_memory` runs with freed memory kept in the process (hf_recipes.allocator).
    """
    if getattr(main, "keeps_freed_memory", False):
        from hf_recipes import allocator

        allocator.keep_freed_memory()
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
