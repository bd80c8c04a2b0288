"""Chat templates: the registry over templates/*.jinja, attaching one to a tokenizer, rendering, trained-token views.

Typical SFT use:

    attach_chat_template(tokenizer, "llama2")        # a name from available_templates() or a path to a .jinja
    logger.info(render_trained_tokens(tokenizer, example["messages"]))   # «...» marks what the loss trains
    tokenizer.save_pretrained(output_dir)            # writes chat_template.jinja next to tokenizer.json
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from hf_recipes.runtime import RecipeError, did_you_mean

TEMPLATES_PACKAGE = "hf_recipes.templates"
DEFAULT_TEMPLATE = "llama2"
# Plain characters, not ANSI colours: the view must survive log files and CI output.
TRAINED_OPEN, TRAINED_CLOSE = "«", "»"
# The same test TRL applies before it trusts a template for assistant_only_loss.
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")

Messages = list[dict[str, Any]]


def available_templates() -> list[str]:
    """Names of the chat templates shipped in templates/ (the file names without `.jinja`), sorted."""
    folder = resources.files(TEMPLATES_PACKAGE)
    return sorted(entry.name.removesuffix(".jinja") for entry in folder.iterdir() if entry.name.endswith(".jinja"))


def load_chat_template(name_or_path: str) -> str:
    """The Jinja source of a shipped template (`llama2`, `chatml`) or of a `.jinja` file; checked to compile."""
    names = available_templates()
    if name_or_path in names:
        source = resources.files(TEMPLATES_PACKAGE).joinpath(f"{name_or_path}.jinja").read_text(encoding="utf-8")
        where = f"chat template '{name_or_path}'"
    elif _looks_like_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise RecipeError(f"chat template file not found: {path}")
        try:
            source = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise RecipeError(f"chat template {path}: not UTF-8 text (byte offset {error.start})") from error
        where = f"chat template {path}"
    else:
        raise RecipeError(
            f"unknown chat template '{name_or_path}'{did_you_mean(name_or_path, names)}; "
            f"available: {', '.join(names)} (or a path to a .jinja file)"
        )
    if not source.strip():
        raise RecipeError(f"{where} is empty")
    _check_compiles(source, where)
    return source


def _looks_like_path(name_or_path: str) -> bool:
    return (
        name_or_path.endswith(".jinja") or "/" in name_or_path or "\\" in name_or_path or Path(name_or_path).exists()
    )


def _check_compiles(source: str, where: str) -> None:
    """Compile with transformers' own Jinja environment so a syntax error surfaces now, with its line."""
    from jinja2 import TemplateSyntaxError
    from transformers.utils.chat_template_utils import _compile_jinja_template

    try:
        _compile_jinja_template(source)
    except TemplateSyntaxError as error:
        raise RecipeError(f"{where}: invalid Jinja at line {error.lineno}: {error.message}") from error


def has_generation_markers(chat_template: str | None) -> bool:
    """Whether the template marks assistant turns with `{% generation %}` (needed for assistant-only loss)."""
    return chat_template is not None and GENERATION_MARKER.search(chat_template) is not None


def attach_chat_template(
    tokenizer: PreTrainedTokenizerBase, name_or_path: str = DEFAULT_TEMPLATE
) -> PreTrainedTokenizerBase:
    """Set `tokenizer.chat_template`; `save_pretrained` then writes it as `chat_template.jinja`."""
    source = load_chat_template(name_or_path)
    for token in ("bos_token", "eos_token"):
        if token in source and getattr(tokenizer, token) is None:
            raise RecipeError(
                f"chat template '{name_or_path}' uses {token} but the tokenizer has none; "
                "load it with hf_recipes.tokenization.load_tokenizer (which adds one)"
            )
    tokenizer.chat_template = source
    return tokenizer


def _require_template(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> str:
    """The tokenizer's (default) chat template, after checking there is one and something to render."""
    template = tokenizer.chat_template
    if isinstance(template, dict):  # a tokenizer may ship named templates; apply_chat_template uses "default"
        template = template.get("default")
    if not template:
        raise RecipeError(
            f"the tokenizer has no chat template; attach one with attach_chat_template "
            f"(available: {', '.join(available_templates())})"
        )
    if not messages:
        raise RecipeError("cannot render an empty conversation")
    return template


def render(tokenizer: PreTrainedTokenizerBase, messages: Messages, add_generation_prompt: bool = False) -> str:
    """The conversation as text, through the tokenizer's chat template."""
    from jinja2 import TemplateError

    _require_template(tokenizer, messages)
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except TemplateError as error:
        raise RecipeError(f"cannot render the conversation: {error}") from error


def tokenize_with_assistant_mask(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> dict[str, list]:
    """`input_ids`, `assistant_masks` (1 = trained with assistant-only loss) and `offset_mapping`, as TRL tokenizes."""
    from jinja2 import TemplateError

    template = _require_template(tokenizer, messages)
    if not has_generation_markers(template):
        raise RecipeError(
            "the chat template has no {% generation %} block, so no token counts as the assistant's; "
            "use a template from templates/ or wrap each assistant turn in {% generation %}...{% endgeneration %}"
        )
    if not tokenizer.is_fast:
        raise RecipeError("assistant masks need a fast (Rust) tokenizer: character offsets map the answers to tokens")
    try:
        encoded = tokenizer.apply_chat_template(
            messages,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
            tokenizer_kwargs={"return_offsets_mapping": True},
        )
    except TemplateError as error:
        raise RecipeError(f"cannot render the conversation: {error}") from error
    return {key: list(encoded[key]) for key in ("input_ids", "assistant_masks", "offset_mapping")}


def assistant_mask(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> list[int]:
    """One 0/1 per token of the rendered conversation: 1 where assistant-only loss trains (answers and their eos)."""
    return tokenize_with_assistant_mask(tokenizer, messages)["assistant_masks"]


def render_trained_tokens(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> str:
    """The rendered conversation with every run of trained tokens wrapped in «...».

    Cut at token boundaries (from the tokenizer's character offsets), so what is inside the marks is exactly the
    text of the tokens the loss trains, e.g. `<s>[INST] hi [/INST]« hello </s>»`.
    """
    text = render(tokenizer, messages)
    encoded = tokenize_with_assistant_mask(tokenizer, messages)
    pieces, cursor, trained = [], 0, False
    for (start, _end), mask in zip(encoded["offset_mapping"], encoded["assistant_masks"], strict=True):
        if bool(mask) != trained:
            pieces.append(text[cursor:start])
            pieces.append(TRAINED_OPEN if mask else TRAINED_CLOSE)
            cursor, trained = start, bool(mask)
    pieces.append(text[cursor:])
    if trained:
        pieces.append(TRAINED_CLOSE)
    return "".join(pieces)


def check_stop_is_trained(tokenizer: PreTrainedTokenizerBase, input_ids: list[int], mask: list[int]) -> None:
    """Refuse a template whose assistant turns leave eos out of the loss: the model would never learn to stop.

    TRL warns about this when it runs its own assistant-only pass; ours replaces that pass, so it checks here.
    """
    if tokenizer.eos_token_id not in [token for token, trained in zip(input_ids, mask, strict=True) if trained]:
        raise RecipeError(
            f"the chat template does not train eos ({tokenizer.eos_token}) after the assistant's answer, so the model "
            "would never learn to stop: put the eos inside {% generation %}...{% endgeneration %} "
            "(as templates/llama2.jinja does), or choose another template"
        )


def tokenize_for_training(
    tokenizer: PreTrainedTokenizerBase,
    conversations: list[dict],
    max_length: int,
    where: str,
    assistant_only: bool = True,
) -> tuple[list[dict[str, list[int]]], list[dict]]:
    """Tokenize conversations once into `input_ids` and `labels` for a TRL trainer (which then skips its own pass).

    With `assistant_only`, labels are -100 outside the template's generation blocks, so the loss trains the answers
    and their eos only. Conversations longer than `max_length` tokens are left out, never truncated (a cut answer
    would teach the model to stop mid-word, or not at all); one with no trained token is an error naming its row.
    Returns (rows, the conversations kept, in the same order).
    """
    from tqdm.auto import tqdm

    rows, kept = [], []
    for index, conversation in enumerate(tqdm(conversations, desc=f"Tokenizing {where}", leave=False)):
        encoded = tokenize_with_assistant_mask(tokenizer, conversation["messages"])
        input_ids, mask = encoded["input_ids"], encoded["assistant_masks"]
        if len(input_ids) > max_length:
            continue
        if assistant_only and not any(mask):
            raise RecipeError(f"{where} row {index}: no assistant token to train on (is the last turn an answer?)")
        if assistant_only and not kept:
            check_stop_is_trained(tokenizer, input_ids, mask)
        labels = [token if trained else -100 for token, trained in zip(input_ids, mask, strict=True)]
        rows.append({"input_ids": input_ids, "labels": labels if assistant_only else list(input_ids)})
        kept.append(conversation)
    return rows, kept


def log_training_rows(tokenizer: PreTrainedTokenizerBase, rows: list[dict], kept: list[dict], total: int) -> None:
    """What SFT trains: tokens in all and trained, and the first example with its trained tokens marked «»."""
    from hf_recipes.runtime import logger

    trained = sum(sum(label != -100 for label in row["labels"]) for row in rows)
    logger.info(
        "Train tokens: %s in total, %s of them trained (assistant answers and their eos); %d of %d conversations",
        *(f"{sum(len(row['input_ids']) for row in rows):,}", f"{trained:,}", len(kept), total),
    )
    logger.info(
        "First training example, trained tokens in «»:\n%s", render_trained_tokens(tokenizer, kept[0]["messages"])
    )


def pairs_within(tokenizer, pairs: list[dict], max_length: int) -> list[dict]:
    """The pairs whose prompt + longer answer fits `max_length` tokens (never truncated: a cut answer compares
    nothing), each with that `length` in tokens."""
    texts = [render(tokenizer, pair["prompt"] + pair[side]) for pair in pairs for side in ("chosen", "rejected")]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    rows = [{**pair, "length": max(lengths[2 * i], lengths[2 * i + 1])} for i, pair in enumerate(pairs)]
    return [row for row in rows if row["length"] <= max_length]


def describe_pair(tokenizer, pair: dict) -> str:
    prompt = render(tokenizer, pair["prompt"], add_generation_prompt=True)
    answers = {
        side: render(tokenizer, pair["prompt"] + pair[side]).removeprefix(prompt) for side in ("chosen", "rejected")
    }
    return f"{prompt}\n  chosen:   {answers['chosen']!r}\n  rejected: {answers['rejected']!r}"
