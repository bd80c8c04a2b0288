"""Chat templates: llama2 renders exactly as Meta's reference, assistant masks train exactly the answers and eos."""

from __future__ import annotations

import json
import re

import pytest
from transformers import AutoTokenizer
from trl.chat_template_utils import is_chat_template_stop_token_trained

from hf_recipes.chat import (
    assistant_mask,
    attach_chat_template,
    available_templates,
    load_chat_template,
    render,
    render_trained_tokens,
    tokenize_with_assistant_mask,
)
from hf_recipes.runtime import RecipeError
from tests.tiny import tiny_tokenizer

# The "chat_template" value of meta-llama/Llama-2-7b-chat-hf's tokenizer_config.json, pasted as the JSON string.
LLAMA2_REFERENCE = json.loads(
    r'''"{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"'''  # noqa: E501
)


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


def system(content: str) -> dict[str, str]:
    return {"role": "system", "content": content}


CONVERSATIONS = {
    "one user": [user("Hi")],
    "one turn": [user("Hi"), assistant("Hello!")],
    "system, one turn": [system("Be brief."), user("Hi"), assistant("Hello!")],
    "system, prompt only": [system("Be brief."), user("Hi")],
    "several turns": [user("2 + 2?"), assistant("4"), user("3 + 3?"), assistant("6"), user("and 4 + 4?")],
    "system, several turns": [system("Math."), user("2 + 2?"), assistant("4"), user("3 + 3?"), assistant("6")],
    "whitespace everywhere": [
        system("  Sys with spaces \n"),
        user("\n  padded user\t "),
        assistant("  padded answer \n\n"),
        user(" second\n"),
        assistant("\tsecond answer "),
    ],
    "empty system": [system(""), user("Hi"), assistant("Hello")],
    "whitespace-only system": [system("   "), user("  Hi"), assistant("Hello")],
    "multi-line content": [user("line 1\nline 2\n\nline 4"), assistant("a\n  b\nc")],
    "template-like text in content": [user("[INST] <<SYS>> {{ x }} [/INST]"), assistant("</s> <s> ok")],
    "unicode": [system("Réponds en français."), user("Ça va ? 👋"), assistant("Très bien — merci !")],
    "system only": [system("Nobody speaks.")],
}


@pytest.fixture(scope="module")
def llama2():
    return attach_chat_template(tiny_tokenizer(), "llama2")


@pytest.fixture(scope="module")
def chatml():
    return attach_chat_template(tiny_tokenizer(), "chatml")


def masked_runs(tokenizer, messages) -> list[str]:
    """Decode each run of consecutive trained tokens separately."""
    encoded = tokenize_with_assistant_mask(tokenizer, messages)
    runs, current = [], []
    for token_id, mask in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True):
        if mask:
            current.append(token_id)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run, skip_special_tokens=False) for run in runs]


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_llama2_renders_exactly_as_meta_reference(llama2, name):
    messages = CONVERSATIONS[name]
    reference = llama2.apply_chat_template(messages, chat_template=LLAMA2_REFERENCE, tokenize=False)
    assert render(llama2, messages) == reference
    # Token ids too: the generation markers must not change how the text is cut.
    assert (
        llama2.apply_chat_template(messages)["input_ids"]
        == llama2.apply_chat_template(messages, chat_template=LLAMA2_REFERENCE)["input_ids"]
    )


def test_llama2_exact_strings(llama2):
    assert render(llama2, [user(" Hi ")]) == "<s>[INST] Hi [/INST]"
    assert (
        render(llama2, [system("Be brief."), user("Hi"), assistant(" Hello! "), user("Bye")])
        == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Bye [/INST]"
    )
    # The system message is inserted as given; only the ends of the combined first user turn are stripped.
    assert render(llama2, [system(" S "), user("Hi ")]) == "<s>[INST] <<SYS>>\n S \n<</SYS>>\n\nHi [/INST]"
    assert render(llama2, [system(""), user(" Hi")]) == "<s>[INST] <<SYS>>\n\n<</SYS>>\n\n Hi [/INST]"


def test_llama2_generation_prompt_adds_nothing(llama2):
    messages = [system("S"), user("Hi")]
    assert render(llama2, messages, add_generation_prompt=True) == render(llama2, messages)
    assert render(llama2, messages).endswith(" [/INST]")


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([assistant("Hello")], "alternate user/assistant"),
        ([system("S"), assistant("Hello")], "alternate user/assistant"),
        ([user("a"), user("b")], "alternate user/assistant"),
        ([user("a"), assistant("b"), assistant("c")], "alternate user/assistant"),
        ([user("a"), {"role": "tool", "content": "x"}], "unknown role 'tool'"),
        ([{"role": "human", "content": "x"}], "unknown role 'human'"),
        ([user("a"), system("S")], "the system message must be the first message"),
        ([user("a"), assistant("b"), system("S"), user("c")], "the system message must be the first message"),
    ],
)
def test_llama2_rejects_malformed_conversations(llama2, messages, expected):
    with pytest.raises(RecipeError, match=expected):
        render(llama2, messages)


def test_llama2_assistant_mask_is_exactly_answers_and_eos(llama2):
    messages = [system("Math."), user("2 + 2?"), assistant("four"), user("3 + 3?"), assistant(" six, of course ")]
    assert masked_runs(llama2, messages) == [" four </s>", " six, of course </s>"]
    mask = assistant_mask(llama2, messages)
    ids = llama2.apply_chat_template(messages)["input_ids"]
    assert len(mask) == len(ids)
    # Everything unmasked is the prompt side: decoding it gives back the rendered text without the answers.
    prompt_ids = [token_id for token_id, masked in zip(ids, mask, strict=True) if not masked]
    assert llama2.decode(prompt_ids) == "<s>[INST] <<SYS>>\nMath.\n<</SYS>>\n\n2 + 2? [/INST]<s>[INST] 3 + 3? [/INST]"


def test_llama2_prompt_without_answer_has_nothing_trained(llama2):
    assert set(assistant_mask(llama2, [system("S"), user("Hi")])) == {0}


def test_render_trained_tokens_marks_answers_and_eos(llama2):
    messages = [system("Math."), user("2 + 2?"), assistant("4"), user("3 + 3?"), assistant("6")]
    assert render_trained_tokens(llama2, messages) == (
        "<s>[INST] <<SYS>>\nMath.\n<</SYS>>\n\n2 + 2? [/INST]« 4 </s>»<s>[INST] 3 + 3? [/INST]« 6 </s>»"
    )


def test_chatml_renders_and_prompts(chatml):
    messages = [system("S"), user("Hi"), assistant(" Hello ")]
    assert render(chatml, messages) == (
        "<|im_start|>system\nS</s>\n<|im_start|>user\nHi</s>\n<|im_start|>assistant\n Hello </s>\n"
    )
    assert render(chatml, messages[:2], add_generation_prompt=True) == (
        "<|im_start|>system\nS</s>\n<|im_start|>user\nHi</s>\n<|im_start|>assistant\n"
    )


def test_chatml_assistant_mask_is_exactly_answers_and_eos(chatml):
    messages = [user("2 + 2?"), assistant("four"), user("3 + 3?"), assistant("six")]
    assert masked_runs(chatml, messages) == ["four</s>", "six</s>"]
    assert render_trained_tokens(chatml, messages) == (
        "<|im_start|>user\n2 + 2?</s>\n<|im_start|>assistant\n«four</s>»\n"
        "<|im_start|>user\n3 + 3?</s>\n<|im_start|>assistant\n«six</s>»\n"
    )


@pytest.mark.parametrize("name", ["llama2", "chatml"])
def test_trl_finds_the_stop_token_trained(name):
    # TRL warns at SFT start when assistant-only loss would not train the end-of-turn token.
    assert is_chat_template_stop_token_trained(attach_chat_template(tiny_tokenizer(), name))


def test_assistant_mask_refuses_template_without_generation_block():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = LLAMA2_REFERENCE
    with pytest.raises(RecipeError, match="no \\{% generation %\\} block"):
        assistant_mask(tokenizer, [user("Hi"), assistant("Hello")])


def test_render_without_template_or_messages_is_a_recipe_error(llama2):
    with pytest.raises(RecipeError, match="no chat template"):
        render(tiny_tokenizer(), [user("Hi")])
    with pytest.raises(RecipeError, match="empty conversation"):
        render(llama2, [])


def test_available_templates():
    assert {"llama2", "chatml"} <= set(available_templates())


def test_unknown_name_suggests_and_lists():
    with pytest.raises(RecipeError, match=r"unknown chat template 'lama2' \(did you mean 'llama2'\?\).*chatml"):
        load_chat_template("lama2")


def test_missing_path_is_named(tmp_path):
    missing = tmp_path / "mine.jinja"
    with pytest.raises(RecipeError, match=f"chat template file not found: {re.escape(str(missing))}"):
        load_chat_template(str(missing))


def test_template_from_path_and_syntax_errors(tmp_path):
    good = tmp_path / "plain.jinja"
    good.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    assert render(attach_chat_template(tiny_tokenizer(), str(good)), [user("Hi")]) == "user: Hi\n"
    bad = tmp_path / "bad.jinja"
    bad.write_text("line one\n{% for m in messages %}{{ m }")
    with pytest.raises(RecipeError, match=f"chat template {re.escape(str(bad))}: invalid Jinja at line 2"):
        load_chat_template(str(bad))


def test_save_pretrained_writes_chat_template_jinja(tmp_path, llama2):
    llama2.save_pretrained(tmp_path)
    assert (tmp_path / "chat_template.jinja").read_text() == load_chat_template("llama2")
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    messages = CONVERSATIONS["system, several turns"]
    assert render(reloaded, messages) == render(llama2, messages)
    assert assistant_mask(reloaded, messages) == assistant_mask(llama2, messages)
