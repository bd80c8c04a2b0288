"""Held-out numbers for a trained model: perplexity on text blocks, exact match and stop rate on chat tasks."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from hf_recipes.data.stdlib import BUILTIN_CHAT_TASK
from hf_recipes.modeling import context_length
from hf_recipes.runtime import RecipeError
from hf_recipes.tokenization import check_special_tokens

logger = logging.getLogger("hf_recipes")

METRICS_DIR = Path(__file__).resolve().parent / "metrics"
Conversation = dict[str, list[dict[str, str]]]


def load_metric(name: str):
    """An `evaluate` module from hf_recipes/metrics/<name>.py, loaded by path so nothing is downloaded."""
    import evaluate

    return evaluate.load(str(METRICS_DIR / f"{name}.py"))


@contextmanager
def eval_mode(model: PreTrainedModel) -> Iterator[None]:
    """The model in eval mode (no dropout) for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _as_blocks(blocks: Any) -> list[list[int]]:
    if hasattr(blocks, "column_names"):  # a datasets.Dataset of packed blocks
        blocks = blocks["input_ids"]
    return [list(block) for block in blocks]


@torch.inference_mode()
def perplexity(model: PreTrainedModel, blocks: Any, batch_size: int = 8) -> dict[str, float]:
    """Mean token cross-entropy over equal-length `input_ids` blocks (no padding) and its exp.

    Every block predicts its tokens 2..n from the ones before, so n - 1 tokens count per block.
    """
    blocks = _as_blocks(blocks)
    if not blocks:
        raise RecipeError("perplexity needs at least one block of token ids")
    lengths = {len(block) for block in blocks}
    if len(lengths) != 1 or min(lengths) < 2:
        raise RecipeError(f"perplexity needs equal-length blocks of 2+ tokens, got lengths {sorted(lengths)[:5]}")
    total_loss, total_tokens = 0.0, 0
    with eval_mode(model):
        for start in range(0, len(blocks), batch_size):
            input_ids = torch.tensor(blocks[start : start + batch_size], device=model.device)
            logits = model(input_ids=input_ids).logits[:, :-1].float()
            targets = input_ids[:, 1:]
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
            total_loss += loss.item()
            total_tokens += targets.numel()
    mean = total_loss / total_tokens
    return {"loss": mean, "perplexity": math.exp(mean)}


@torch.inference_mode()
def repeated_span_loss(model: PreTrainedModel, blocks: Any, span: int = 128) -> dict[str, float]:
    """Mean next-token loss on the first `span` tokens of each block, read once and then again right after.

    A model that can copy (it has induction heads: attend to what followed the last occurrence of the current
    token) predicts the repeat almost perfectly; one that cannot scores both readings the same. Copying is what the
    function-name task needs for every name longer than a token or two. The first token of the repeat is left out
    of both means: nothing before it says that a repeat begins.
    """
    blocks = _as_blocks(blocks)
    if not blocks or min(len(block) for block in blocks) < span or span < 2:
        raise RecipeError(f"repeated_span_loss needs blocks of at least span={span} (>= 2) tokens")
    input_ids = torch.tensor([block[:span] * 2 for block in blocks], device=model.device)
    with eval_mode(model):
        logits = model(input_ids=input_ids).logits[:, :-1].float()  # position t predicts token t + 1
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")
    return {"loss_first": losses[:, : span - 1].mean().item(), "loss_repeat": losses[:, span:].mean().item()}


def render_prompt(tokenizer: PreTrainedTokenizerBase, conversation: Conversation) -> tuple[str, str]:
    """(prompt, reference): every message but the last through the chat template, and the last one's content."""
    messages = conversation["messages"]
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        raise RecipeError("an evaluation conversation must end with the assistant's answer after a prompt")
    # The assistant header (chatml and most Hub templates) belongs to the prompt: without it the model is asked to
    # continue the user turn, and exact match and stop rate measure that instead of its answers.
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    return prompt, messages[-1]["content"]


@dataclass(frozen=True)
class Answer:
    text: str
    stopped: bool  # emitted eos within max_new_tokens (False: cut off by the budget)


@torch.inference_mode()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    max_new_tokens: int = 32,
    batch_size: int = 8,
    show_progress: bool = True,
) -> list[Answer]:
    """Greedy answers to each conversation's prompt, batched with left padding, in the input order."""
    from tqdm.auto import tqdm

    check_special_tokens(tokenizer)  # pad == eos would make padded rows look like finished answers
    prompts = [render_prompt(tokenizer, conversation)[0] for conversation in conversations]
    # The template writes bos itself; add_special_tokens=False keeps tokenizers that add one from doubling it.
    token_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    limit = context_length(model.config)
    too_long = [len(ids) for ids in token_ids if limit and len(ids) + max_new_tokens > limit]
    if too_long:
        raise RecipeError(
            f"{len(too_long)} prompt(s) of up to {max(too_long)} tokens leave no room for {max_new_tokens} new tokens "
            f"in the model's {limit}-token context (chat_task_metrics leaves such prompts out)"
        )
    config = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    # Batching prompts of similar length wastes less compute on padding; answers go back to input order.
    order = sorted(range(len(token_ids)), key=lambda index: len(token_ids[index]))
    answers: list[Answer | None] = [None] * len(token_ids)
    with (
        eval_mode(model),
        tqdm(total=len(order), desc="generating", unit="example", disable=not show_progress) as progress,
    ):
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            longest = max(len(token_ids[index]) for index in batch)
            input_ids = torch.full((len(batch), longest), tokenizer.pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros_like(input_ids)
            for row, index in enumerate(batch):  # left padding: every prompt ends where generation starts
                ids = token_ids[index]
                input_ids[row, longest - len(ids) :] = torch.tensor(ids)
                attention_mask[row, longest - len(ids) :] = 1
            output = model.generate(
                input_ids=input_ids.to(model.device),
                attention_mask=attention_mask.to(model.device),
                generation_config=config,
            )
            for row, index in enumerate(batch):
                answers[index] = _answer(output[row, longest:].tolist(), tokenizer)
            progress.update(len(batch))
    return answers  # type: ignore[return-value]


def _answer(new_tokens: list[int], tokenizer: PreTrainedTokenizerBase) -> Answer:
    stopped = tokenizer.eos_token_id in new_tokens
    if stopped:
        new_tokens = new_tokens[: new_tokens.index(tokenizer.eos_token_id)]
    return Answer(tokenizer.decode(new_tokens, skip_special_tokens=True).strip(), stopped)


def fitting_conversations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    max_new_tokens: int,
) -> list[Conversation]:
    """The conversations whose prompt plus `max_new_tokens` fits the model's context."""
    limit = context_length(model.config)
    if limit is None:
        return list(conversations)
    lengths = prompt_lengths(tokenizer, conversations)
    return [conv for conv, length in zip(conversations, lengths, strict=True) if length + max_new_tokens <= limit]


def prompt_lengths(tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Conversation]) -> list[int]:
    """Tokens of each conversation's prompt (all but the answer, through the chat template)."""
    prompts = [render_prompt(tokenizer, conversation)[0] for conversation in conversations]
    return [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]


def chat_task_metrics(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    max_new_tokens: int = 32,
    **generate_options,
) -> dict[str, float | int]:
    """Exact match of greedy answers against the references, and the share of answers that ended with eos;
    `generate_options` (batch_size, show_progress) go to `generate_answers`.

    Prompts too long for the model's context (with room for `max_new_tokens`) are left out and counted in
    `eval_skipped_too_long`; `eval_examples` is how many were scored.
    """
    kept = fitting_conversations(model, tokenizer, conversations, max_new_tokens)
    skipped = len(conversations) - len(kept)
    if skipped:
        logger.info("Left out %d of %d conversations too long for the model's context", skipped, len(conversations))
    if not kept:
        raise RecipeError(f"none of the {len(conversations)} evaluation conversations fits the model's context")
    answers = generate_answers(model, tokenizer, kept, max_new_tokens, **generate_options)
    predictions = [answer.text for answer in answers]
    references = [render_prompt(tokenizer, conversation)[1] for conversation in kept]
    metric = load_metric("exact_match")
    return {
        "exact_match": metric.compute(predictions=predictions, references=references)["exact_match"],
        "stop_rate": sum(answer.stopped for answer in answers) / len(answers),
        "eval_examples": len(kept),
        "eval_skipped_too_long": skipped,
        "exact_match_by_answer_tokens": exact_match_by_answer_length(tokenizer, predictions, references, metric),
    }


LONGEST_ANSWER_BUCKET = 5  # answers of 5 tokens and more are counted together, as "5+"


def answer_length_bucket(tokenizer: PreTrainedTokenizerBase, reference: str) -> str:
    """The reference's length in tokens, tokenized alone (no special tokens), as "1" .. "4" or "5+"."""
    length = len(tokenizer(reference.strip(), add_special_tokens=False)["input_ids"])
    return f"{LONGEST_ANSWER_BUCKET}+" if length >= LONGEST_ANSWER_BUCKET else str(length)


def answer_length_order(bucket: str) -> int:
    """Sort key of a bucket from answer_length_bucket: "1" < "2" < .. < "5+"."""
    return int(bucket.rstrip("+"))


def exact_match_by_answer_length(
    tokenizer: PreTrainedTokenizerBase, predictions: Sequence[str], references: Sequence[str], metric=None
) -> dict[str, dict[str, float | int]]:
    """Exact match and example count per reference length in tokens, shortest first (empty lengths left out).

    On a task that copies its answer from the prompt, such as the function name, this shows how far the model
    copies: one that gets the first token or two right but cannot continue a copy fails every long answer.
    """
    metric = metric or load_metric("exact_match")
    by_bucket: dict[str, tuple[list[str], list[str]]] = {}
    for prediction, reference in zip(predictions, references, strict=True):
        bucket = by_bucket.setdefault(answer_length_bucket(tokenizer, reference), ([], []))
        bucket[0].append(prediction)
        bucket[1].append(reference)
    return {
        bucket: {
            "exact_match": metric.compute(predictions=chosen, references=expected)["exact_match"],
            "examples": len(chosen),
        }
        for bucket, (chosen, expected) in sorted(by_bucket.items(), key=lambda item: answer_length_order(item[0]))
    }


def copying_probe(model, validation, block_size: int) -> dict[str, float]:
    """Can the model copy? Loss on a repeated held-out span vs its first reading (logged; see repeated_span_loss)."""
    span = min(128, block_size // 2)
    blocks = [row["input_ids"] for row in itertools.islice(validation, 16)]  # works on streamed data too
    copying = repeated_span_loss(model, blocks, span)
    logger.info(
        "Copying probe: loss %.2f on %d-token held-out spans, %.2f on the same spans repeated right after "
        "(a model that can copy predicts a repeat almost perfectly)",
        copying["loss_first"],
        span,
        copying["loss_repeat"],
    )
    return copying


def measures_exact_match(data_args) -> bool:
    """Exact match means something for short answers only: the built-in task, or data the recipe says is like it
    (`eval_metric: exact_match`). Open-ended answers (chat, instructions) are measured by held-out answer loss."""
    if data_args.eval_metric == "auto":
        if data_args.dataset_mixture:
            from hf_recipes.data.mixture import parse_mixture

            return all(source.path == BUILTIN_CHAT_TASK for source in parse_mixture(data_args.dataset_mixture))
        return data_args.dataset_name == BUILTIN_CHAT_TASK
    return data_args.eval_metric == "exact_match"


def scores_of_stage(model, tokenizer, conversations, data_args, batch_size: int, when: str) -> dict[str, Any]:
    """Exact match (where it fits the data: `measures_exact_match`) and stop rate of a chat stage's model on its
    held-out conversations, logged; `when` is 'before' (the headline numbers and exact match by answer length, suffixed
    _before) or 'after'."""
    exact = measures_exact_match(data_args)
    what = "Exact match and stop rate" if exact else "Stop rate (open-ended answers: no exact match)"
    logger.info("%s %s training, on %d held-out conversations", what, when, len(conversations))
    scores = chat_task_metrics(model, tokenizer, conversations, data_args.eval_max_new_tokens, batch_size=batch_size)
    if not exact:
        scores = {key: value for key, value in scores.items() if not key.startswith("exact_match")}
    if when == "after":
        return scores
    # By answer length too: where a stage gained (short names or long, copied ones) shows only against the start.
    kept = ("exact_match", "stop_rate", "exact_match_by_answer_tokens")
    before = {f"{key}_before": scores[key] for key in kept if key in scores}
    logger.info("Before training: %s", {key: value for key, value in before.items() if not isinstance(value, dict)})
    return before


def headline(scores: dict[str, Any]) -> str:
    """The summary line's numbers: exact match where it was measured, and the stop rate, each after (`name`) and
    before training (`name_before`)."""

    def earlier(name: str) -> str:
        value = scores.get(f"{name}_before")
        return "not measured" if value is None else f"{value:.3f}"

    stop = f"stop rate {scores['stop_rate']:.3f} (before {earlier('stop_rate')})"
    if "exact_match" not in scores:
        return stop
    return f"exact match {scores['exact_match']:.3f} (before {earlier('exact_match')}), {stop}"
