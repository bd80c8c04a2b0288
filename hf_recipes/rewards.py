"""Verifiable rewards for GRPO, in TRL's reward-function shape: `f(prompts, completions, completion_ids, **columns)`
returns one float per completion (columns of the dataset, such as `answer`, arrive as keyword lists).

Built in: `exact_match` (1.0 when the completion, stripped, is the reference answer), `prefix_match` (the share of
the answer right from its start: partial credit) and `stop` (1.0 when the completion ends with eos within
max_completion_length). A user's own: `module:function`, checked when loaded. A reward model folder:
`reward_model_reward`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hf_recipes.runtime import RecipeError

RewardFunction = Callable[..., list[float]]


def completion_text(completion: Any) -> str:
    """A completion's text: conversational completions are `[{"role": "assistant", "content": ...}]`."""
    if isinstance(completion, list):
        return "".join(message.get("content", "") for message in completion)
    return str(completion)


def exact_match(completions: list[Any], answer: list[str], **kwargs) -> list[float]:
    """1.0 where the completion is the reference answer (surrounding whitespace ignored), else 0.0."""
    return [float(completion_text(c).strip() == a.strip()) for c, a in zip(completions, answer, strict=True)]


def prefix_match(completions: list[Any], answer: list[str], **kwargs) -> list[float]:
    """Partial credit: the share of the answer the completion gets right from its first character (1.0 only when
    exact; an overlong completion is divided by its own length). Denser than exact match where most samples miss."""
    scores = []
    for completion, reference in zip(completions, answer, strict=True):
        text, reference = completion_text(completion).strip(), reference.strip()
        pairs = enumerate(zip(text, reference, strict=False))  # as far as the shorter goes
        common = next((i for i, (a, b) in pairs if a != b), min(len(text), len(reference)))
        scores.append(common / max(len(text), len(reference), 1))
    return scores


def stop_reward(eos_token_id: int) -> RewardFunction:
    """1.0 where the completion ended with eos (the model stopped by itself), 0.0 where the budget cut it."""

    def stop(completion_ids: list[list[int]], **kwargs) -> list[float]:
        return [float(bool(ids) and ids[-1] == eos_token_id) for ids in completion_ids]

    return stop


# Where make reward's models read their score: at the answer's last token, not at the eos the chat template puts
# after it. A causal model at the eos has to rebuild from scratch whether the answer before it was right; at the
# answer's last token the SFT body already holds it (a linear score on the frozen SFT model ranks the held-out pairs
# at 0.71 there against 0.55 at the eos: benchmarks/reward_readout.py). Rendering a conversation with
# continue_final_message ends it right after the last message's content, whatever the template puts next.
ANSWER_END = "answer_end"
ANSWER_END_TEMPLATE_KWARGS = {"continue_final_message": True}


def reads_at_answer_end(config) -> bool:
    """Whether a reward model (its config) was trained to read its score at the answer's last token."""
    return getattr(config, "reward_read_at", None) == ANSWER_END


def reward_model_reward(folder: str) -> RewardFunction:
    """A sequence-classification reward model folder as a reward: its score of each prompt with the completion as
    the assistant's answer, through the folder's own tokenizer and chat template, read where the model was trained to
    read it (`reward_read_at: answer_end` in make reward's config.json; any other folder at the end of the whole
    templated conversation, as TRL reads one). The reward's name in the logs is the folder's name."""
    import torch
    from accelerate import PartialState
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).to(PartialState().device).eval()
    if model.config.pad_token_id is None:  # the score is read at the last token before the padding
        model.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    template_kwargs = ANSWER_END_TEMPLATE_KWARGS if reads_at_answer_end(model.config) else {}

    def score(prompts: list[Any], completions: list[Any], **kwargs) -> list[float]:
        ids = []
        for prompt, completion in zip(prompts, completions, strict=True):
            if not isinstance(prompt, list):
                raise RecipeError(f"reward model {folder}: scores conversational prompts (messages), got plain text")
            answer = {"role": "assistant", "content": completion_text(completion)}
            rendered = tokenizer.apply_chat_template([*prompt, answer], return_dict=False, **template_kwargs)
            ids.append(rendered["input_ids"] if isinstance(rendered, dict) else rendered)
        batch = tokenizer.pad({"input_ids": ids}, padding_side="right", return_tensors="pt").to(model.device)
        with torch.inference_mode():
            return model(**batch).logits[:, 0].float().tolist()

    score.__name__ = Path(folder).name
    return score


def load_user_reward(spec: str) -> RewardFunction:
    """`package.module:function`, importable from here; refused unless it can take TRL's reward keywords."""
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise RecipeError(f"reward function '{spec}': write it as module:function (e.g. my_rewards:length_penalty)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise RecipeError(f"reward function '{spec}': cannot import module '{module_name}' ({error})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise RecipeError(f"reward function '{spec}': module '{module_name}' has no function '{function_name}'")
    parameters = inspect.signature(function).parameters.values()
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        names = ", ".join(p.name for p in parameters)
        raise RecipeError(
            f"reward function '{spec}' takes ({names}): it must accept **kwargs (TRL passes prompts, completions, "
            "completion_ids and every dataset column by keyword)"
        )
    return function


def reward_functions(names: list[str], eos_token_id: int) -> list[RewardFunction]:
    """The recipe's rewards by name; a user's own as module:function."""
    built_in = {
        "exact_match": lambda: exact_match,
        "prefix_match": lambda: prefix_match,
        "stop": lambda: stop_reward(eos_token_id),
    }
    functions = []
    for name in names:
        if name in built_in:
            functions.append(built_in[name]())
        elif ":" in name:
            functions.append(load_user_reward(name))
        else:
            raise RecipeError(f"unknown reward '{name}': use {', '.join(built_in)} or module:function")
    if not functions:
        raise RecipeError("reward_functions is empty: GRPO needs at least one reward")
    return functions
