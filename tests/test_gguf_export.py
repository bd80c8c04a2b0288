"""GGUF export: the file transformers reads back is the model we wrote (weights, tokenizer, chat template), the stage
verifies it on held-out data, and a broken export (a Conv1D weight left untransposed) fails verification."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch

from hf_recipes.gguf_export import (
    gguf_metadata,
    gguf_tensors,
    load_gguf_model,
    load_gguf_tokenizer,
    require_gguf,
    same_tokens_share,
    write_gguf,
)
from hf_recipes.modeling import load_model
from hf_recipes.run_folder import NOT_VERIFIED_FILE, read_run_config
from hf_recipes.runtime import RecipeError, run_recipe
from hf_recipes.stages.gguf import main as export_gguf
from hf_recipes.tokenization import GPT2_PRETOKENIZE_PATTERN, train_bpe_tokenizer
from tests.test_evaluation import chat_tokenizer, one_torch_thread  # noqa: F401 (autouse fixture)
from tests.tiny import _sample_texts, sample_blocks, tiny_model, trained_tiny_folder

CODE = "def set_result(self, value_2):\n    return self._cache[value_2]  # café\n"


@pytest.fixture(scope="module")
def tokenizer():
    return chat_tokenizer()


@pytest.fixture(scope="module")
def full_folder(tmp_path_factory, tokenizer) -> Path:
    return trained_tiny_folder(tmp_path_factory.mktemp("full"), tokenizer, sample_blocks(tokenizer, 64)[0])


def logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


@pytest.mark.parametrize(("gguf_type", "tolerance"), [("f16", 2e-2), ("q8_0", 6e-2)])
def test_the_file_transformers_reads_back_computes_what_the_source_computes(
    tmp_path, full_folder, tokenizer, gguf_type, tolerance
):
    source = load_model(str(full_folder), dtype=torch.float32).eval()
    path = write_gguf(source, tokenizer, tmp_path / f"tiny-{gguf_type}.gguf", gguf_type, name="tiny")
    reloaded = load_gguf_model(path).eval()
    assert reloaded.config.n_positions == source.config.n_positions == gguf_metadata(path, "gpt2.context_length")
    ids = tokenizer(CODE * 3).input_ids
    expected, got = logits(source, ids), logits(reloaded, ids)
    assert (got - expected).abs().max() < tolerance
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.97  # near-ties may flip in 8 bits


def test_a_tokenizer_with_gpt2_s_split_rule_comes_back_token_for_token_with_its_chat_template(tmp_path):
    from hf_recipes.chat import attach_chat_template

    gpt2_split = train_bpe_tokenizer(_sample_texts(), 512, show_progress=False, split_pattern=GPT2_PRETOKENIZE_PATTERN)
    source = attach_chat_template(gpt2_split, "llama2")
    path = write_gguf(tiny_model(source), source, tmp_path / "tiny-f16.gguf", "f16", name="tiny")
    exported = load_gguf_tokenizer(path)
    texts = [CODE, "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nName it. [/INST] set_result</s>", *_sample_texts()[:2]]
    assert same_tokens_share(source, exported, texts) == 1.0
    assert (exported.bos_token, exported.eos_token, exported.pad_token) == ("<s>", "</s>", "<pad>")
    assert exported.convert_tokens_to_ids("</s>") == source.eos_token_id
    assert exported.chat_template == source.chat_template
    messages = [{"role": "user", "content": "Name it."}]
    assert exported.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        source.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    )


def test_the_code_split_rule_is_measured_as_not_carried(tmp_path, tokenizer):
    """Our tokenizers keep `_` inside identifiers; llama.cpp's gpt-2 rule cuts there, so the ids differ."""
    path = write_gguf(tiny_model(tokenizer), tokenizer, tmp_path / "tiny-f16.gguf", "f16", name="tiny")
    exported = load_gguf_tokenizer(path)
    # A token the code rule learned across `_` (such as `_p`) is one our tokenizer uses and the gpt-2 rule cannot.
    joined = next(token for token in tokenizer.get_vocab() if re.fullmatch(r"Ġ?_[a-z]+", token))
    identifier = f"x = self.{joined.lstrip('Ġ')}\n"
    assert same_tokens_share(tokenizer, exported, ["plain words only", identifier]) == 0.5


def test_tensors_are_named_and_laid_out_as_llama_cpp_s_gpt2(tokenizer):
    model = tiny_model(tokenizer)
    tensors = dict(gguf_tensors(model))
    layers = model.config.n_layer
    assert len(tensors) == 3 + 2 + layers * 12  # embedding twice + positions, final norm (2), 12 per block
    width = model.config.n_embd
    assert tensors["blk.0.attn_qkv.weight"].shape == (3 * width, width)  # (out, in), Conv1D transposed
    assert tensors["blk.1.ffn_down.weight"].shape == (width, 4 * width)
    assert (tensors["output.weight"] == tensors["token_embd.weight"]).all()
    assert tensors["output_norm.bias"].shape == (width,)


def test_a_model_that_is_not_gpt2_and_an_unknown_type_are_refused_in_one_line(tmp_path, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    )
    with pytest.raises(RecipeError, match="GGUF export supports GPT-2 models; this one is 'llama'"):
        write_gguf(llama, tokenizer, tmp_path / "llama.gguf", "f16", name="llama")
    with pytest.raises(RecipeError, match="GGUF type 'q4_k' is not written here; choose from f16, q8_0"):
        write_gguf(tiny_model(tokenizer), tokenizer, tmp_path / "x.gguf", "q4_k", name="x")


def test_a_missing_gguf_package_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(RecipeError, match=r"pip install 'hf-recipes\[gguf\]'"):
        require_gguf()


def stage_args(folder: Path, output: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", str(folder),
        "--output_dir", str(output),
        "--block_size", "64",
        "--eval_blocks", "8",
        "--max_eval_examples", "8",
        "--max_new_tokens", "4",
        *extra,
    ]  # fmt: skip


def test_the_stage_writes_both_files_verifies_them_and_skips_a_finished_run(tmp_path, full_folder, caplog):
    output = tmp_path / "gguf"
    run_recipe(export_gguf, stage_args(full_folder, output))
    names = sorted(path.name for path in output.glob("*.gguf"))
    assert names == [f"{full_folder.name}-f16.gguf", f"{full_folder.name}-q8_0.gguf"]
    assert (output / names[1]).stat().st_size < 0.7 * (output / names[0]).stat().st_size
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["verified"] is True and not (output / NOT_VERIFIED_FILE).exists()
    for gguf_type in ("f16", "q8_0"):
        assert abs(metrics[f"perplexity_ratio_{gguf_type}"] - 1) < 0.01
        assert abs(metrics[f"exact_match_{gguf_type}"] - metrics["exact_match_source"]) <= 0.01
    assert 0 <= metrics["same_tokens_share"] < 1  # the tiny tokenizer keeps `_` in identifiers
    assert read_run_config(output)["complete"] is True
    caplog.clear()
    run_recipe(export_gguf, stage_args(full_folder, output))
    assert "already holds this finished run" in caplog.text


def test_a_broken_export_fails_verification_and_is_marked(tmp_path, full_folder, monkeypatch):
    import hf_recipes.gguf_export as gguf_export

    def untransposed(model):  # the classic converter bug: Conv1D's (in, out) weight written as it is
        for name, array in gguf_tensors(model):
            yield name, (array.T if name.endswith("attn_output.weight") else array)

    monkeypatch.setattr(gguf_export, "gguf_tensors", untransposed)
    output = tmp_path / "gguf"
    with pytest.raises(SystemExit) as exit_info:
        run_recipe(export_gguf, stage_args(full_folder, output, "--gguf_types", "f16"))
    assert exit_info.value.code == 2
    assert "perplexity ratio" in (output / NOT_VERIFIED_FILE).read_text()
    assert json.loads((output / "metrics.json").read_text())["verified"] is False
    assert read_run_config(output).get("complete") is not True
