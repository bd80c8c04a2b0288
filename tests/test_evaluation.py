"""Evaluation numbers mean what they say: perplexity, exact match, stop rate, batched left-padded generation."""

from __future__ import annotations

import math

import pytest
import torch

from hf_recipes.chat import attach_chat_template
from hf_recipes.data.stdlib import function_name_conversation
from hf_recipes.evaluation import (
    METRICS_DIR,
    chat_task_metrics,
    exact_match_by_answer_length,
    fitting_conversations,
    generate_answers,
    load_metric,
    perplexity,
    render_prompt,
    repeated_span_loss,
)
from hf_recipes.report import StageResult, answer_length_table, markdown_table
from hf_recipes.run_folder import folder_size_bytes
from hf_recipes.runtime import RecipeError
from tests.tiny import tiny_model, tiny_tokenizer

SNIPPETS = {
    "add": "def add(a, b):\n    return a + b",
    "split_words": "def split_words(text):\n    return text.split()",
    "first": "def first(items):\n    return items[0]",
    "is_empty": "def is_empty(s):\n    return not s",
    "join_lines": "def join_lines(lines):\n    return '\\n'.join(lines)",
    "square": "def square(x):\n    return x * x",
}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # Two shared cores: two torch threads fighting other jobs run these tiny models many times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def chat_tokenizer():
    """The tiny tokenizer with the project's Llama-2 chat template, as every stage folder has it."""
    return attach_chat_template(tiny_tokenizer(), "llama2")


def conversations() -> list[dict]:
    return [function_name_conversation(code, name) for name, code in SNIPPETS.items()]


def lively_model(tokenizer, seed: int = 0):
    """A random tiny GPT-2 with weights scaled up, so greedy answers depend on the prompt (not one repeated token)."""
    model = tiny_model(tokenizer, seed=seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.mul_(8)
    return model.eval()


def rigged_model(tokenizer, favoured: int | None = None, avoided: int | None = None):
    """A tiny GPT-2 whose next token never depends on the input: `favoured` always wins, `avoided` always loses.

    ln_f's weight is zeroed, so the final hidden state is its bias `d` for every position, and the logits are
    wte @ d (lm_head is tied to wte): a row set to +10 d (or -10 d) tops (or bottoms) every distribution.
    """
    model = tiny_model(tokenizer)
    with torch.no_grad():
        direction = torch.randn(model.config.n_embd, generator=torch.Generator().manual_seed(0))
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(direction)
        if favoured is not None:
            model.lm_head.weight[favoured] = 10 * direction
        if avoided is not None:
            model.lm_head.weight[avoided] = -10 * direction
    return model.eval()


@pytest.fixture(scope="module")
def tokenizer():
    return chat_tokenizer()


# ---------------------------------------------------------------------------------------------------------------
# exact match module
# ---------------------------------------------------------------------------------------------------------------


def test_exact_match_module_loads_by_path_and_strips_whitespace():
    metric = load_metric("exact_match")
    assert (METRICS_DIR / "exact_match.py").is_file()
    predictions = ["parse ", "walk", "\tsplit\n", "Run"]
    result = metric.compute(predictions=predictions, references=["parse", "run", "split", "run"])
    assert result == {"exact_match": 0.5}  # case matters; surrounding whitespace does not
    assert metric.compute(predictions=["a b"], references=["a  b"]) == {"exact_match": 0.0}  # inner spaces matter
    assert metric.compute(predictions=[], references=[]) == {"exact_match": 0.0}


def test_exact_match_refuses_unpaired_lists():
    with pytest.raises(ValueError):
        load_metric("exact_match").compute(predictions=["a", "b"], references=["a"])


# ---------------------------------------------------------------------------------------------------------------
# perplexity
# ---------------------------------------------------------------------------------------------------------------


def test_perplexity_is_exp_of_the_models_own_mean_token_loss(tokenizer):
    from datasets import Dataset

    model = lively_model(tokenizer)
    generator = torch.Generator().manual_seed(1)
    blocks = torch.randint(3, len(tokenizer), (5, 17), generator=generator).tolist()
    # Equal-length blocks: the mean over all tokens is the mean of the per-block means.
    with torch.no_grad():
        losses = [model(input_ids=torch.tensor([block]), labels=torch.tensor([block])).loss.item() for block in blocks]
    expected = sum(losses) / len(losses)
    for batch_size in (1, 2, 5):
        result = perplexity(model, blocks, batch_size=batch_size)
        assert result["loss"] == pytest.approx(expected, rel=1e-5)
        assert result["perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)
    from_dataset = perplexity(model, Dataset.from_dict({"input_ids": blocks}), batch_size=2)
    assert from_dataset["loss"] == pytest.approx(expected, rel=1e-5)


def test_perplexity_of_a_model_that_always_predicts_the_next_token_is_one(tokenizer):
    token = tokenizer.convert_tokens_to_ids("x")
    model = rigged_model(tokenizer, favoured=token)
    assert perplexity(model, [[token] * 9] * 2)["perplexity"] == pytest.approx(1.0, abs=1e-4)
    assert perplexity(model, [[token + 1] * 9] * 2)["perplexity"] > 1e6  # confidently wrong is punished


def test_perplexity_refuses_ragged_or_empty_blocks(tokenizer):
    model = tiny_model(tokenizer)
    with pytest.raises(RecipeError, match="equal-length"):
        perplexity(model, [[5, 6, 7], [5, 6]])
    with pytest.raises(RecipeError, match="at least one block"):
        perplexity(model, [])


# ---------------------------------------------------------------------------------------------------------------
# generation, exact match and stop rate
# ---------------------------------------------------------------------------------------------------------------


def test_left_padded_batches_give_the_same_greedy_answers_as_one_at_a_time(tokenizer):
    model = lively_model(tokenizer)
    examples = conversations()
    one_by_one = generate_answers(model, tokenizer, examples, max_new_tokens=6, batch_size=1, show_progress=False)
    batched = generate_answers(model, tokenizer, examples, max_new_tokens=6, batch_size=4, show_progress=False)
    assert batched == one_by_one
    assert len({answer.text for answer in one_by_one}) > 2  # answers depend on the prompt, so order is checked
    again = generate_answers(model, tokenizer, examples, max_new_tokens=6, batch_size=4, show_progress=False)
    assert again == batched  # greedy is deterministic


def test_generation_restores_training_mode(tokenizer):
    model = lively_model(tokenizer).train()
    generate_answers(model, tokenizer, conversations()[:2], max_new_tokens=2, batch_size=2, show_progress=False)
    assert model.training


def test_stop_rate_is_one_when_eos_always_wins(tokenizer):
    model = rigged_model(tokenizer, favoured=tokenizer.eos_token_id)
    metrics = chat_task_metrics(model, tokenizer, conversations(), max_new_tokens=5, batch_size=4, show_progress=False)
    assert metrics["stop_rate"] == 1.0
    assert metrics["eval_examples"] == len(SNIPPETS)
    answers = generate_answers(model, tokenizer, conversations(), max_new_tokens=5, show_progress=False)
    assert {answer.text for answer in answers} == {""}


def test_stop_rate_is_zero_and_exact_match_counts_when_eos_never_comes(tokenizer):
    token = tokenizer.convert_tokens_to_ids("x")
    model = rigged_model(tokenizer, favoured=token, avoided=tokenizer.eos_token_id)
    answer = tokenizer.decode([token] * 3)  # the only answer this model can give with 3 new tokens
    examples = conversations()[:4]
    for example, reference in zip(examples, [answer, "add", f"  {answer}\n", "xx"], strict=True):
        example["messages"][-1]["content"] = reference
    metrics = chat_task_metrics(model, tokenizer, examples, max_new_tokens=3, batch_size=3, show_progress=False)
    by_length = metrics.pop("exact_match_by_answer_tokens")
    assert metrics == {"exact_match": 0.5, "stop_rate": 0.0, "eval_examples": 4, "eval_skipped_too_long": 0}
    assert sum(bucket["examples"] for bucket in by_length.values()) == 4
    assert sum(bucket["exact_match"] * bucket["examples"] for bucket in by_length.values()) == 2  # the 2 matches


class WordTokenizer:
    """One token per space-separated word: answer lengths that a test can read off the text."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[str]]:
        return {"input_ids": text.split()}


def test_exact_match_by_answer_length_buckets_by_reference_tokens():
    references = ["a", "a b", "a b", "a b c d e f", "a b c d e", " a b c "]
    predictions = ["a", "a b", "a", "a b c d e f", "a b", "a b c"]
    assert exact_match_by_answer_length(WordTokenizer(), predictions, references) == {
        "1": {"exact_match": 1.0, "examples": 1},
        "2": {"exact_match": 0.5, "examples": 2},
        "3": {"exact_match": 1.0, "examples": 1},  # compared as exact match compares: stripped
        "5+": {"exact_match": 0.5, "examples": 2},  # 4 is absent, 5 and 6 together
    }


def test_report_tables_exact_match_by_answer_length_per_stage():
    def result(stage, by_length):
        return StageResult(stage, f"outputs/{stage}", 10.0, 0.5, 1.0, 3, 1, None, "", None, None, by_length)

    sft = {"1": {"exact_match": 1.0, "examples": 2}, "3": {"exact_match": 0.0, "examples": 1}}
    pretrain = {"1": {"exact_match": 0.0, "examples": 2}}  # a length a stage lacks is shown as "-"
    table = answer_length_table([result("pretrain", pretrain), result("sft", sft), result("old", None)])
    assert table.splitlines() == [
        "| answer length (tokens) | 1 | 3 |",
        "| --- | ---: | ---: |",
        "| held-out answers | 2 | 1 |",
        "| pretrain | 0.000 | - |",
        "| sft | 1.000 | 0.000 |",
    ]
    assert answer_length_table([result("old", None)]) == ""


def test_report_says_when_a_stage_was_timed_only_after_a_resume():
    def result(stage, seconds, resumed_from_step=None):
        return StageResult(
            stage, stage, 10.0, 0.5, 1.0, 3, 2_000_000, seconds, "", resumed_from_step=resumed_from_step
        )

    rows = markdown_table([result("pretrain", 1332.0, 4000), result("sft", 484.3), result("quantized-nf4", None)])
    times = [line.split(" | ")[5] for line in rows.splitlines()[2:]]
    assert times == ["22.2 min after step 4,000", "8.1 min", "-"]


def test_a_report_reuses_a_stages_numbers_only_when_measured_the_same_way(tmp_path):
    from hf_recipes.report import previous_results, write_report

    settings = {"max_eval_examples": 600, "max_length": 384, "max_new_tokens": 24, "block_size": 512}
    settings["eval_blocks"] = 128
    measured = StageResult("sft", "outputs/sft", 10.0, 0.5, 1.0, 3, 1, None, "model.safetensors:1:2")
    write_report(tmp_path, [measured], settings)
    assert previous_results(tmp_path / "report.json", settings) == {"sft": measured}
    # Same weights, other held-out data: the old numbers are not this report's.
    for key, value in (("max_eval_examples", 50), ("block_size", 256)):
        assert previous_results(tmp_path / "report.json", {**settings, key: value}) == {}


def test_an_eos_on_the_last_allowed_token_counts_as_a_stop(tokenizer):
    from hf_recipes.evaluation import _answer

    x = tokenizer.convert_tokens_to_ids("x")
    assert _answer([x, x, tokenizer.eos_token_id], tokenizer).stopped
    assert _answer([x, tokenizer.eos_token_id, tokenizer.pad_token_id], tokenizer).text == "x"
    assert not _answer([x, x, x], tokenizer).stopped


def test_prompts_too_long_for_the_context_are_left_out_and_counted(tokenizer):
    model = tiny_model(tokenizer, n_positions=128)  # the short prompts are about 90 tokens
    long_code = "def long_one(a):\n" + "    a = a + 1\n" * 40 + "    return a"
    examples = [*conversations()[:2], function_name_conversation(long_code, "long_one")]
    assert len(fitting_conversations(model, tokenizer, examples, max_new_tokens=4)) == 2
    metrics = chat_task_metrics(model, tokenizer, examples, max_new_tokens=4, batch_size=2, show_progress=False)
    assert metrics["eval_examples"] == 2 and metrics["eval_skipped_too_long"] == 1
    with pytest.raises(RecipeError, match="leave no room"):
        generate_answers(model, tokenizer, examples, max_new_tokens=4, show_progress=False)


def test_pad_equal_to_eos_is_refused(tokenizer):
    broken = chat_tokenizer()
    broken.pad_token = broken.eos_token
    with pytest.raises(RecipeError, match="pad token"):
        generate_answers(tiny_model(tokenizer), broken, conversations()[:1], show_progress=False)


@pytest.mark.parametrize(("template", "prompt_end"), [("chatml", "<|im_start|>assistant\n"), ("llama2", " [/INST]")])
def test_the_evaluation_prompt_ends_where_the_answer_starts(template, prompt_end):
    tokenizer = attach_chat_template(tiny_tokenizer(), template)
    conversation = function_name_conversation(SNIPPETS["add"], "add")
    prompt, reference = render_prompt(tokenizer, conversation)
    assert prompt.endswith(prompt_end) and reference == "add"
    # The prompt is the trained conversation up to its answer: what the model saw before each answer in SFT.
    trained = tokenizer.apply_chat_template(conversation["messages"], tokenize=False)
    assert trained.startswith(prompt) and trained[len(prompt) :].lstrip().startswith("add")


def test_a_conversation_without_an_answer_is_refused(tokenizer):
    with pytest.raises(RecipeError, match="must end with the assistant"):
        generate_answers(tiny_model(tokenizer), tokenizer, [{"messages": [{"role": "user", "content": "hi"}]}])


def test_folder_size_counts_every_weight_shard_and_nothing_else(tmp_path):
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"x" * 100)
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"x" * 50)
    (tmp_path / "tokenizer.json").write_bytes(b"x" * 1000)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"x" * 1000)
    assert folder_size_bytes(tmp_path) == 150


class SpanCopier(torch.nn.Module):
    """Predicts, at every position from `span` on, the token that followed `span` positions earlier: a perfect
    copier of a repeated span, and uniform before it."""

    def __init__(self, vocab_size: int, span: int):
        super().__init__()
        self.vocab_size, self.span, self.training = vocab_size, span, False
        self.device = torch.device("cpu")

    def forward(self, input_ids):
        logits = torch.zeros(*input_ids.shape, self.vocab_size)
        for t in range(self.span - 1, input_ids.shape[1] - 1):  # position t predicts token t + 1
            logits[torch.arange(len(input_ids)), t, input_ids[:, t + 1 - self.span]] = 50.0
        return type("Output", (), {"logits": logits})()


def test_repeated_span_loss_separates_a_copier_from_a_model_that_cannot_copy(tokenizer):
    blocks = torch.randint(3, len(tokenizer), (4, 40)).tolist()
    copier = repeated_span_loss(SpanCopier(len(tokenizer), span=16), blocks, span=16)
    assert copier["loss_first"] == pytest.approx(math.log(len(tokenizer)))  # uniform: log of the vocabulary
    assert copier["loss_repeat"] < 1e-6
    random_model = repeated_span_loss(tiny_model(tokenizer), blocks, span=16)
    assert random_model["loss_repeat"] == pytest.approx(random_model["loss_first"], rel=0.05)
    with pytest.raises(RecipeError, match="at least span"):
        repeated_span_loss(tiny_model(tokenizer), blocks, span=64)
