"""Sampling settings, streamed replies and the chat loop: greedy is deterministic, seeds repeat, eos stops."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from dataclasses import replace

import pytest

from hf_recipes.config import parse_stage
from hf_recipes.config.tools import SamplingArguments
from hf_recipes.data.stdlib import SYSTEM_PROMPT
from hf_recipes.evaluation import generate_answers
from hf_recipes.generation import chat_loop, fit_history, generation_config, prompt_ids, stream_reply
from hf_recipes.runtime import RecipeError
from tests.test_evaluation import (
    chat_tokenizer,
    conversations,
    lively_model,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    rigged_model,
)
from tests.tiny import tiny_model

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GREEDY = SamplingArguments(temperature=0.0, repetition_penalty=1.0, max_new_tokens=8)
SAMPLING = SamplingArguments(temperature=1.5, top_k=0, top_p=1.0, repetition_penalty=1.0, max_new_tokens=8, seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    return chat_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return lively_model(tokenizer)


def question(index: int = 0, system: bool = True) -> list[dict[str, str]]:
    messages = conversations()[index]["messages"][:-1]
    return messages if system else messages[1:]


def reply(model, tokenizer, messages, settings) -> tuple[str, str]:
    stream = io.StringIO()
    text = stream_reply(model, tokenizer, messages, settings, stream=stream)
    return text, stream.getvalue()


def test_generation_config_is_greedy_at_temperature_zero_or_without_sampling(tokenizer):
    for settings in (GREEDY, replace(SAMPLING, do_sample=False)):
        config = generation_config(settings, tokenizer)
        assert config.do_sample is False
        assert (config.eos_token_id, config.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)
    settings = SamplingArguments(temperature=0.7, top_k=40, top_p=0.8, repetition_penalty=1.2)
    config = generation_config(settings, tokenizer)
    assert config.do_sample is True
    assert (config.temperature, config.top_k, config.top_p, config.repetition_penalty) == (0.7, 40, 0.8, 1.2)
    assert config.max_new_tokens == 64


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"top_p": 0.0}, "0 < top_p <= 1"),
        ({"temperature": -1.0}, "temperature >= 0"),
        ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be positive"),
    ],
)
def test_impossible_sampling_settings_are_refused(tokenizer, change, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(")):
        generation_config(replace(SAMPLING, **change), tokenizer)


def test_greedy_replies_are_deterministic_and_match_batched_evaluation(model, tokenizer):
    first, streamed = reply(model, tokenizer, question(), GREEDY)
    assert reply(model, tokenizer, question(), GREEDY)[0] == first
    assert first  # the lively model says something, so the comparisons below compare text
    evaluated = generate_answers(model, tokenizer, conversations()[:1], max_new_tokens=8, show_progress=False)
    assert evaluated[0].text == first
    assert streamed.strip() == first  # what reached the terminal is the reply: no prompt, no special tokens
    assert "[INST]" not in streamed and "<s>" not in streamed


def test_sampling_with_a_seed_repeats_and_other_seeds_differ(model, tokenizer):
    first = reply(model, tokenizer, question(), SAMPLING)[0]
    assert reply(model, tokenizer, question(), SAMPLING)[0] == first
    others = {reply(model, tokenizer, question(), replace(SAMPLING, seed=seed))[0] for seed in (1, 2, 3)}
    assert others - {first}  # sampling really samples (temperature 1.5 over the whole vocabulary)


def test_top_k_one_is_greedy(model, tokenizer):
    penalised = replace(GREEDY, repetition_penalty=1.3)
    for index in range(3):
        greedy = reply(model, tokenizer, question(index), penalised)[0]
        top_1 = reply(model, tokenizer, question(index), replace(SAMPLING, top_k=1, repetition_penalty=1.3))[0]
        assert top_1 == greedy


def test_a_reply_stops_at_eos_and_runs_to_the_budget_without_it(tokenizer):
    stops = rigged_model(tokenizer, favoured=tokenizer.eos_token_id)
    assert reply(stops, tokenizer, question(), GREEDY) == ("", "\n")
    x = tokenizer.convert_tokens_to_ids("x")
    never = rigged_model(tokenizer, favoured=x, avoided=tokenizer.eos_token_id)
    assert reply(never, tokenizer, question(), replace(GREEDY, max_new_tokens=5))[0] == "xxxxx"


def test_chat_loop_keeps_the_history_and_renders_it_through_the_template(model, tokenizer):
    lines = iter(["hello", "  ", "what is add?", "exit", "never read"])
    stream = io.StringIO()
    messages = chat_loop(model, tokenizer, GREEDY, system="Be brief.", read=lambda _: next(lines), stream=stream)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[3]["content"] == "what is add?"
    # The second reply saw the first exchange: it equals a one-shot reply to the whole history.
    assert messages[4]["content"] == reply(model, tokenizer, messages[:4], GREEDY)[0]
    assert messages[4]["content"] != reply(model, tokenizer, [messages[0], messages[3]], GREEDY)[0]


def test_chat_loop_ends_at_end_of_input(model, tokenizer):
    def read(_prompt):
        raise EOFError

    assert chat_loop(model, tokenizer, GREEDY, read=read, stream=io.StringIO()) == []


def test_history_drops_the_oldest_turns_but_keeps_the_system_message(tokenizer):
    history = [{"role": "system", "content": "S"}]
    for turn in range(6):
        history += [{"role": "user", "content": f"question {turn} " * 5}, {"role": "assistant", "content": "ok"}]
    history.append({"role": "user", "content": "last"})
    limit = len(prompt_ids(tokenizer, [history[0], *history[-3:]])) + 8
    kept = fit_history(tokenizer, history, limit, max_new_tokens=8)
    assert kept == [history[0], *history[-3:]]
    assert fit_history(tokenizer, history, None, 8) == history


def test_a_message_too_long_for_the_context_is_reported_and_the_chat_goes_on(tokenizer):
    small = tiny_model(tokenizer, n_positions=128).eval()
    lines = iter(["word " * 200, "hi", "exit"])
    stream = io.StringIO()
    messages = chat_loop(small, tokenizer, GREEDY, read=lambda _: next(lines), stream=stream)
    assert "128-token context" in stream.getvalue()
    assert [m["content"] for m in messages if m["role"] == "user"] == ["hi"]


def test_generate_stage_gives_did_you_mean_errors():
    with pytest.raises(RecipeError, match="did you mean 'temperature'"):
        parse_stage("generate", ["--model_name_or_path", "m", "--temprature", "0.5"])
    flags = ["--model_name_or_path", "m", "--prompt", "hi", "--top_k", "1", "--seed", "3"]
    args, sampling = parse_stage("generate", flags)
    assert (args.model_name_or_path, args.prompt, sampling.top_k, sampling.seed) == ("m", "hi", 1, 3)


def load_script():
    from hf_recipes.stages import generate

    return generate


def test_generate_script_refuses_a_folder_without_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("no model here")
    with pytest.raises(RecipeError, match=re.escape(f"{tmp_path} holds no model (no config.json / *.safetensors)")):
        load_script().main(["--model_name_or_path", str(tmp_path)])
    with pytest.raises(RecipeError, match=r"model folder not found: .*missing"):
        load_script().main(["--model_name_or_path", str(tmp_path / "missing")])


def test_generate_script_answers_once_and_chats_from_stdin(tmp_path, tokenizer, capsys):
    folder = tmp_path / "model"
    lively_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    user = question(0, system=False)
    flags = ["--model_name_or_path", str(folder), "--temperature", "0", "--repetition_penalty", "1"]
    flags += ["--max_new_tokens", "8"]
    load_script().main([*flags, "--prompt", user[0]["content"]])
    assert capsys.readouterr().out.strip() == reply(lively_model(tokenizer), tokenizer, user, GREEDY)[0]

    # Interactive, as a user runs it: stdin until 'exit', the reply streamed to stdout, the banner to stderr.
    chat = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "recipes", "generate.py"), *flags],
        input="hello\nexit\nnot read\n",
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert chat.returncode == 0, chat.stderr
    assert "Chatting with" in chat.stderr
    hello = reply(lively_model(tokenizer), tokenizer, [{"role": "user", "content": "hello"}], GREEDY)[0]
    assert chat.stdout.strip() == hello


def test_make_chat_passes_the_tasks_system_message_and_a_prompt_of_several_lines_whole():
    """The tiny chat models only trained with the built-in task's system message; a prompt is usually code."""

    def chat_arguments(*variables):
        print_argv = f"{sys.executable} -c 'import json, sys; print(json.dumps(sys.argv[1:]))'"
        command = ["make", "--no-print-directory", "-s", "chat", f"PY={print_argv}", *variables]
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, check=True)
        return json.loads(result.stdout.splitlines()[-1])

    prompt = "Extract the function name from the code.\n\ndef add(a, b):\n    return a + b"
    argv = chat_arguments(f"PROMPT={prompt}")
    assert argv[argv.index("--system") + 1] == SYSTEM_PROMPT
    assert argv[argv.index("--prompt") + 1] == prompt
    assert "--system" not in chat_arguments("SYSTEM=")


@pytest.mark.parametrize(
    ("variables", "model"),
    [
        ((), "outputs/gpt2-tiny/quantized-nf4"),
        (("VARIANT=long",), "outputs/gpt2-tiny-long/quantized-nf4"),  # not the short pipeline's model
        (("VARIANT=lora",), "outputs/gpt2-tiny/quantized-nf4"),  # no quantize_lora.yaml: the default pipeline's
        (("MODEL=elsewhere",), "elsewhere"),
    ],
)
def test_make_chat_talks_to_the_model_of_the_variant_it_is_given(variables, model):
    print_argv = f"{sys.executable} -c 'import json, sys; print(json.dumps(sys.argv[1:]))'"
    command = ["make", "--no-print-directory", "-s", "chat", f"PY={print_argv}", *variables]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    argv = json.loads(result.stdout.splitlines()[-1])
    assert argv[argv.index("--model_name_or_path") + 1] == model
