"""Sampling settings, loading any stage's folder for generation, streaming replies, and the interactive chat loop."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase, TextStreamer, set_seed

from hf_recipes.modeling import context_length
from hf_recipes.runtime import RecipeError

logger = logging.getLogger("hf_recipes")

Messages = list[dict[str, str]]
EXIT_WORDS = frozenset({"exit", "quit"})


def is_greedy(settings: Any) -> bool:
    return not getattr(settings, "do_sample", True) or settings.temperature == 0


def check_sampling(settings: Any) -> None:
    """Refuse settings `generate` would reject mid-chat (or silently ignore)."""
    if settings.max_new_tokens < 1:
        raise RecipeError(f"max_new_tokens must be at least 1, not {settings.max_new_tokens}")
    if settings.repetition_penalty <= 0:
        raise RecipeError(f"repetition_penalty must be positive (1 is off), not {settings.repetition_penalty}")
    if is_greedy(settings):
        return
    if settings.temperature < 0 or not 0 < settings.top_p <= 1 or settings.top_k < 0:
        raise RecipeError(
            f"sampling needs temperature >= 0, 0 < top_p <= 1 and top_k >= 0 "
            f"(got temperature={settings.temperature}, top_p={settings.top_p}, top_k={settings.top_k})"
        )


def generation_config(settings: Any, tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
    """A GenerationConfig from sampling settings (a SamplingArguments or anything with its fields).

    Greedy when `do_sample` is false or `temperature` is 0; eos ends a reply and pad (distinct from eos) fills
    finished rows.
    """
    special = {
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }
    common = {"max_new_tokens": settings.max_new_tokens, "repetition_penalty": settings.repetition_penalty}
    check_sampling(settings)
    if is_greedy(settings):
        return GenerationConfig(do_sample=False, **common, **special)
    return GenerationConfig(
        do_sample=True,
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        **common,
        **special,
    )


def load_for_generation(folder: Path | str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer from a stage folder: full, merged, 4-bit (its config.json says so) or a LoRA adapter."""
    from hf_recipes.modeling import load_model
    from hf_recipes.quantization import adapter_base, load_full_precision, model_folder_kind
    from hf_recipes.tokenization import load_tokenizer

    kind = model_folder_kind(folder)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        tokenizer = load_tokenizer(str(folder))
    except RecipeError:
        if kind != "adapter":
            raise
        tokenizer = load_tokenizer(adapter_base(folder))  # an adapter saved without its tokenizer
    if not tokenizer.chat_template:
        raise RecipeError(f"{folder}: the tokenizer has no chat template (chat_template.jinja); chat needs one")
    if kind == "adapter":
        model = load_full_precision(folder, device=device)
    else:
        model = load_model(str(folder), device_map=device)
    model.eval()
    return model, tokenizer


def prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> list[int]:
    """The conversation rendered through the model's own chat template, as token ids ready for the reply."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # The template writes bos itself; add_special_tokens=False keeps tokenizers that add one from doubling it.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class _Streamer(TextStreamer):
    """TextStreamer that writes to any text stream (TextStreamer itself prints to stdout)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stream: TextIO):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.stream = stream

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.stream.write(text + ("\n" if stream_end else ""))
        self.stream.flush()


@torch.inference_mode()
def stream_reply(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    messages: Messages,
    settings: Any,
    stream: TextIO | None = None,
) -> str:
    """Generate the assistant's reply to `messages`, printing tokens as they come; return the reply text.

    Generation ends at eos or after `settings.max_new_tokens`; the prompt and special tokens are not printed.
    """
    ids = prompt_ids(tokenizer, messages)
    limit = context_length(model.config)
    if limit and len(ids) + settings.max_new_tokens > limit:
        raise RecipeError(
            f"the conversation is {len(ids)} tokens; with {settings.max_new_tokens} new tokens it passes the "
            f"model's {limit}-token context"
        )
    if settings.seed is not None:
        set_seed(settings.seed)
    input_ids = torch.tensor([ids], device=model.device)
    output = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        generation_config=generation_config(settings, tokenizer),
        streamer=_Streamer(tokenizer, stream or sys.stdout),
    )
    new_tokens = output[0, len(ids) :].tolist()
    if tokenizer.eos_token_id in new_tokens:
        new_tokens = new_tokens[: new_tokens.index(tokenizer.eos_token_id)]
    return tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


def fit_history(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, limit: int | None, max_new_tokens: int
) -> Messages:
    """Drop the oldest user/assistant turns (never the system message) until the prompt leaves room to reply."""
    if not limit:
        return messages
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    turns = messages[len(system) :]
    while len(turns) > 1 and len(prompt_ids(tokenizer, system + turns)) + max_new_tokens > limit:
        turns = turns[2:]  # one user message and the assistant's reply
    return system + turns


def chat_loop(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    settings: Any,
    system: str | None = None,
    read: Callable[[str], str] = input,
    stream: TextIO | None = None,
) -> Messages:
    """Chat until end of input or 'exit': each reply sees the whole conversation (oldest turns dropped to fit).

    Returns the conversation, so a caller (or a test) can see what the model was shown.
    """
    stream = stream or sys.stdout
    limit = context_length(model.config)
    messages: Messages = [{"role": "system", "content": system}] if system else []
    while True:
        try:
            line = read("> ")
        except EOFError:
            break
        if line.strip().lower() in EXIT_WORDS:
            break
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        messages = fit_history(tokenizer, messages, limit, settings.max_new_tokens)
        try:
            reply = stream_reply(model, tokenizer, messages, settings, stream)
        except RecipeError as error:  # one message too long for the context: say so and keep chatting
            stream.write(f"[{error}]\n")
            messages = messages[:-1]
            continue
        messages.append({"role": "assistant", "content": reply})
    return messages
