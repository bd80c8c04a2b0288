"""SFT rows in the common shapes (messages, prompt/completion, alpaca, sharegpt) -> checked `{"messages": [...]}`.

Every row travels with its location ("train.jsonl:17", "dataset 'x' row 17") so each problem is reported as
`<where>: <what is wrong>` before any model loads. Typical use:

    rows = jsonl_rows("train.jsonl")                 # or dataset_rows(hf_dataset, "user/name")
    conversations = conversations_from_rows(rows)    # [{"messages": [{"role": ..., "content": ...}, ...]}, ...]
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hf_recipes.data.files import open_data_file
from hf_recipes.runtime import RecipeError, did_you_mean

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "bot": "assistant",
    "system": "system",
}
# Detection order matters: a row with `messages` is taken as-is even when it also has other columns.
FORMAT_COLUMNS = {
    "messages": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "alpaca": ("instruction", "output"),
    "sharegpt": ("conversations",),
}
FORMATS = tuple(FORMAT_COLUMNS)

Messages = list[dict[str, str]]
Located = tuple[str, Mapping[str, Any]]


def detect_format(column_names: Iterable[str], where: str | None = None) -> str:
    """The row shape whose columns are all present: 'messages', 'prompt_completion', 'alpaca' or 'sharegpt'."""
    columns = set(column_names)
    for fmt, required in FORMAT_COLUMNS.items():
        if columns.issuperset(required):
            return fmt
    prefix = f"{where}: " if where else ""
    raise RecipeError(
        f"{prefix}no known conversation format fits the columns {sorted(columns)}; expected 'messages', "
        "'prompt' + 'completion', 'instruction' + 'output' (alpaca, optional 'input') or 'conversations' (sharegpt)"
    )


def _json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages about data files."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, Sequence):
        return "a list"
    return type(value).__name__


def _required(row: Mapping[str, Any], key: str, fmt: str, where: str) -> Any:
    value = row.get(key)
    if value is None:  # datasets fills a column that a row lacks with None
        raise RecipeError(f"{where}: missing '{key}' (the {fmt} format needs it)")
    return value


def _string(value: Any, what: str, where: str) -> str:
    if not isinstance(value, str):
        raise RecipeError(f"{where}: {what} must be a string, got {_json_type(value)}")
    return value


def _turns(value: Any, role: str, key: str, where: str) -> list[Any]:
    """A prompt/completion side: a string becomes one `role` message, a list is taken as messages."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, Sequence):
        return list(value)
    raise RecipeError(f"{where}: '{key}' must be a string or a list of messages, got {_json_type(value)}")


def to_messages(row: Mapping[str, Any], fmt: str, where: str) -> list[Any]:
    """Convert one row of format `fmt` to a message list (not yet validated)."""
    if fmt == "messages":
        messages = _required(row, "messages", fmt, where)
        if isinstance(messages, str) or not isinstance(messages, Sequence):
            raise RecipeError(f"{where}: 'messages' must be a list of messages, got {_json_type(messages)}")
        return list(messages)
    if fmt == "prompt_completion":
        prompt = _turns(_required(row, "prompt", fmt, where), "user", "prompt", where)
        return prompt + _turns(_required(row, "completion", fmt, where), "assistant", "completion", where)
    if fmt == "alpaca":
        instruction = _string(_required(row, "instruction", fmt, where), "'instruction'", where)
        extra = row.get("input")
        if extra is not None and _string(extra, "'input'", where).strip():
            instruction = f"{instruction}\n\n{extra}"
        output = _string(_required(row, "output", fmt, where), "'output'", where)
        return [{"role": "user", "content": instruction}, {"role": "assistant", "content": output}]
    if fmt == "sharegpt":
        return _sharegpt_messages(_required(row, "conversations", fmt, where), where)
    raise RecipeError(f"unknown data format '{fmt}'{did_you_mean(fmt, FORMATS)}; known: {', '.join(FORMATS)}")


def _sharegpt_messages(conversations: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(conversations, str) or not isinstance(conversations, Sequence):
        raise RecipeError(f"{where}: 'conversations' must be a list of turns, got {_json_type(conversations)}")
    messages = []
    for index, turn in enumerate(conversations):
        if not isinstance(turn, Mapping) or "from" not in turn or "value" not in turn:
            raise RecipeError(f"{where}: conversations[{index}] must be an object with 'from' and 'value'")
        speaker = turn["from"]
        if speaker not in SHAREGPT_ROLES:
            raise RecipeError(
                f"{where}: conversations[{index}] is from {speaker!r}"
                f"{did_you_mean(str(speaker), SHAREGPT_ROLES)}; expected one of {', '.join(SHAREGPT_ROLES)}"
            )
        messages.append({"role": SHAREGPT_ROLES[speaker], "content": turn["value"]})
    return messages


def validate_conversation(messages: Any, where: str, require_answer: bool = True) -> None:
    """Raise RecipeError `<where>: <problem>` unless `messages` is [system?] user, assistant, user, ... (, assistant).

    `require_answer`: a training row must end with the assistant's answer; a prompt for generation must not.
    """
    if isinstance(messages, str) or not isinstance(messages, Sequence) or not messages:
        raise RecipeError(f"{where}: messages must be a non-empty list of {{role, content}} objects")
    offset = 0  # index of the first user message: 1 after a system message
    for index, message in enumerate(messages):
        name = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise RecipeError(
                f"{where}: {name} must be an object with 'role' and 'content', got {_json_type(message)}"
            )
        role = message.get("role")
        if not isinstance(role, str):
            raise RecipeError(f"{where}: {name} has no 'role' string")
        if role not in ROLES:
            raise RecipeError(
                f"{where}: {name} has unknown role {role!r}{did_you_mean(role, ROLES)}; expected {', '.join(ROLES)}"
            )
        content = message.get("content")
        if not isinstance(content, str):
            raise RecipeError(f"{where}: {name} ({role}) has no 'content' string (got {_json_type(content)})")
        if role == "system":
            if index != 0:
                raise RecipeError(f"{where}: {name} is a system message; only the first message may be one")
            offset = 1
            continue
        expected = "user" if (index - offset) % 2 == 0 else "assistant"
        if role != expected:
            raise RecipeError(
                f"{where}: {name} is {role!r} where {expected!r} was expected; after an optional system message "
                "the turns alternate user/assistant, starting with user"
            )
        if role == "assistant" and not content.strip():
            raise RecipeError(f"{where}: {name} (assistant) is empty; there is nothing to learn from it")
    last = messages[-1]["role"]
    if last == "system":
        raise RecipeError(f"{where}: the conversation has a system message but no user message")
    if require_answer and last != "assistant":
        raise RecipeError(
            f"{where}: the conversation ends with a {last} message; it must end with the assistant's answer"
        )


def read_jsonl(path: Path | str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, row) for each non-blank line of a JSON Lines file; a bad line raises with its number."""
    path = Path(path)
    try:
        handle = open_data_file(path)
    except OSError as error:
        raise RecipeError(f"{path}: cannot read ({error.strerror or error})") from error
    with handle:
        offset = 0  # byte offset of the current line, for the not-UTF-8 message
        for line_number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise RecipeError(
                    f"{path}: not UTF-8 text (byte offset {offset + error.start}, line {line_number})"
                ) from error
            offset += len(raw)
            if line_number == 1:
                text = text.removeprefix("\ufeff")  # a byte-order mark that some editors write
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as error:
                raise RecipeError(
                    f"{path}:{line_number}: not valid JSON: {error.msg} (column {error.colno})"
                ) from error
            if not isinstance(row, dict):
                raise RecipeError(f"{path}:{line_number}: a row must be a JSON object, got {_json_type(row)}")
            yield line_number, row


def jsonl_rows(path: Path | str) -> Iterator[Located]:
    """The rows of a JSON Lines file, each with its location `<path>:<line>`."""
    for line_number, row in read_jsonl(path):
        yield f"{path}:{line_number}", row


def dataset_rows(rows: Iterable[Mapping[str, Any]], name: str) -> Iterator[Located]:
    """The rows of a loaded dataset, each with its location `dataset '<name>' row <index>` (0-based, as dataset[i])."""
    for index, row in enumerate(rows):
        yield f"dataset '{name}' row {index}", row


def conversations_from_rows(
    rows_with_locations: Iterable[Located],
    fmt: str | None = None,
    require_answer: bool = True,
    source: str = "the data",
) -> list[dict[str, Messages]]:
    """Detect the format from the first row (unless `fmt` is given), convert and validate every row.

    Returns `[{"messages": [{"role", "content"}, ...]}, ...]`; other columns and message keys are dropped so
    every row has the same schema.
    """
    conversations = []
    for where, row in rows_with_locations:
        if fmt is None:
            fmt = detect_format(row.keys(), where)
        messages = to_messages(row, fmt, where)
        validate_conversation(messages, where, require_answer=require_answer)
        conversations.append({"messages": [{"role": m["role"], "content": m["content"]} for m in messages]})
    if not conversations:
        raise RecipeError(f"{source}: no rows")
    return conversations


# ----------------------------------------------------------------------------------------------------------------
# Preference pairs (DPO): prompt + chosen + rejected
# ----------------------------------------------------------------------------------------------------------------

PREFERENCE_KEYS = ("prompt", "chosen", "rejected")


def _answer_turn(value: Any, key: str, where: str) -> dict[str, str]:
    """A chosen/rejected side as one assistant message: a string, or a list holding one assistant message."""
    if isinstance(value, str):
        message = {"role": "assistant", "content": value}
    elif isinstance(value, Sequence) and len(value) == 1 and isinstance(value[0], Mapping):
        message = value[0]
        if message.get("role") != "assistant":
            raise RecipeError(f"{where}: '{key}' must be the assistant's answer, not a {message.get('role')!r} turn")
    else:
        raise RecipeError(
            f"{where}: '{key}' must be a string or a list of one assistant message, got "
            + (f"a list of {len(value)} items" if isinstance(value, Sequence) else _json_type(value))
        )
    content = message.get("content")
    if not isinstance(content, str):
        raise RecipeError(f"{where}: '{key}' has no 'content' string (got {_json_type(content)})")
    if not content.strip():
        raise RecipeError(f"{where}: '{key}' is empty; a preference needs two real answers")
    return {"role": "assistant", "content": content}


def implicit_prompt(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    """TRL's implicit-prompt preference row (`chosen` and `rejected` are whole conversations sharing their first
    turns, the shape of most preference datasets on the Hub) with the shared turns taken out as its `prompt`, as
    TRL's `extract_prompt` finds it."""
    from trl.data_utils import extract_prompt

    pair = extract_prompt({"chosen": row["chosen"], "rejected": row["rejected"]})
    if not pair["prompt"]:
        raise RecipeError(f"{where}: 'chosen' and 'rejected' share no first turns, so there is no prompt to find")
    return {**row, **pair}


def to_preference_pair(row: Mapping[str, Any], where: str) -> dict[str, Messages]:
    """One row with prompt/chosen/rejected (plain text or conversational) -> conversational pair, validated.

    A plain-text prompt becomes one user message and a plain-text answer one assistant message (as SFT's
    prompt/completion rows do), so every pair goes through the model's own chat template.
    """
    if "prompt" not in row and isinstance(row.get("chosen"), list) and isinstance(row.get("rejected"), list):
        row = implicit_prompt(row, where)
    for key in PREFERENCE_KEYS:
        _required(row, key, "preference", where)
    prompt = _turns(row["prompt"], "user", "prompt", where)
    validate_conversation(prompt, where, require_answer=False)
    if prompt[-1]["role"] != "user":
        raise RecipeError(f"{where}: 'prompt' must end with a user message, not a {prompt[-1]['role']} one")
    chosen = _answer_turn(row["chosen"], "chosen", where)
    rejected = _answer_turn(row["rejected"], "rejected", where)
    if chosen["content"].strip() == rejected["content"].strip():
        raise RecipeError(f"{where}: 'chosen' and 'rejected' are the same answer; the pair teaches nothing")
    return {
        "prompt": [{"role": m["role"], "content": m["content"]} for m in prompt],
        "chosen": [chosen],
        "rejected": [rejected],
    }


def preference_pairs_from_rows(rows_with_locations: Iterable[Located], source: str = "the data") -> list[dict]:
    """Convert and validate every row (`to_preference_pair`); errors name the row's location."""
    pairs = [to_preference_pair(row, where) for where, row in rows_with_locations]
    if not pairs:
        raise RecipeError(f"{source}: no rows")
    return pairs
