"""Prompts with reference answers, for reinforcement learning with verifiable rewards (GRPO).

A row is `{"prompt": messages, "answer": str}`: the built-in task's SFT conversations without their answer, or a
user's rows with `prompt` (a string or messages) or `messages` (a final assistant turn is dropped, and is the answer
when there is no `answer` column), checked before any model loads with errors that name the row.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hf_recipes.data import formats, stdlib
from hf_recipes.data.sources import BUILTIN_CHAT_TASK, held_out_splits, located_rows
from hf_recipes.runtime import RecipeError


def to_prompt_row(row: dict[str, Any], where: str) -> dict[str, Any]:
    """One user row as `{"prompt": messages ending with a user turn, "answer": str}`, validated."""
    if "prompt" in row:
        prompt = row["prompt"]
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    elif "messages" in row:
        messages = row["messages"]
    else:
        raise RecipeError(f"{where}: needs a 'prompt' (string or messages) or 'messages' column, and an 'answer'")
    if not isinstance(messages, list) or not messages:
        raise RecipeError(f"{where}: the prompt must be a non-empty string or list of messages")
    answer = row.get("answer")
    last = messages[-1]
    if isinstance(last, dict) and last.get("role") == "assistant":  # a whole conversation: its answer comes off
        answer = last.get("content") if answer is None else answer
        messages = messages[:-1]
    formats.validate_conversation(messages, where, require_answer=False)
    if not isinstance(answer, str) or not answer.strip():
        raise RecipeError(f"{where}: missing 'answer' (the reference the reward compares completions with)")
    return {"prompt": messages, "answer": answer}


def prompt_rows(located: Iterable[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [to_prompt_row(dict(row), where) for where, row in located]


def load_prompt_source(dataset_name, split, dataset_config=None, dataset_revision=None, limit=None,
                       validation_percent: float = stdlib.VALIDATION_PERCENT,
                       renamed_share: float = 0.0, code_lines: int | None = None,
                       made_up_names: stdlib.MadeUpNames | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Prompt rows from the built-in task or a file or Hub split. `renamed_share` of the built-in task's training
    functions get a made-up name: its answer can only be copied from the code, as a held-out name must be, where a
    real training name may be recalled from pretraining (which read every training function). `code_lines` cuts the
    training functions to their first lines; `made_up_names`: what the made-up names are made of."""
    if dataset_name == BUILTIN_CHAT_TASK:
        shown = (
            {"renamed_share": renamed_share, "code_lines": code_lines, "made_up_names": made_up_names}
            if split == "train"
            else {}
        )  # held out: as is
        conversations = stdlib.function_name_conversations(split, limit, validation_percent, **shown)
        return [{"prompt": c["messages"][:-1], "answer": c["messages"][-1]["content"]} for c in conversations]
    rows, _ = located_rows(dataset_name, split, dataset_config, dataset_revision, limit)
    return prompt_rows(rows)


def load_prompt_splits(
    dataset_name: str,
    dataset_config=None,
    dataset_revision=None,
    renamed_share=0.0,
    code_lines=None,
    made_up_names=None,
    **split_args,
):
    """(train, held-out) prompt rows; see `held_out_splits` for how rows are held out."""

    def load(split: str, limit: int | None) -> list[dict[str, Any]]:
        percent = split_args.get("validation_percent", stdlib.VALIDATION_PERCENT)
        shown = {"renamed_share": renamed_share, "code_lines": code_lines, "made_up_names": made_up_names}
        return load_prompt_source(dataset_name, split, dataset_config, dataset_revision, limit, percent, **shown)

    return held_out_splits(dataset_name, load, **split_args)
