"""The 4-bit export reloads anywhere (a fresh process too), and its verification catches a broken export."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_recipes.config import parse_stage
from hf_recipes.evaluation import generate_answers
from hf_recipes.modeling import load_model
from hf_recipes.quantization import (
    bnb_config,
    export_4bit,
    full_precision_folder,
    linear4bit_count,
    load_full_precision,
    require_bitsandbytes,
    verify_export,
)
from hf_recipes.run_folder import NOT_VERIFIED_FILE, folder_size_bytes, model_folder_kind
from hf_recipes.runtime import RecipeError, run_recipe
from tests.test_evaluation import chat_tokenizer, conversations, one_torch_thread  # noqa: F401 (autouse fixture)
from tests.tiny import sample_blocks, trained_tiny_folder

REPO_ROOT = Path(__file__).resolve().parent.parent
BLOCK = 64
CONV1D_LAYERS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
QUANTIZED_LAYERS = {f"transformer.h.{block}.{name}" for block in range(2) for name in CONV1D_LAYERS}


@pytest.fixture(scope="module")
def tokenizer():
    return chat_tokenizer()


@pytest.fixture(scope="module")
def blocks(tokenizer) -> tuple[list[list[int]], list[list[int]]]:
    return sample_blocks(tokenizer, BLOCK)


@pytest.fixture(scope="module")
def full_folder(tmp_path_factory, tokenizer, blocks) -> Path:
    return trained_tiny_folder(tmp_path_factory.mktemp("full"), tokenizer, blocks[0])


@pytest.fixture(scope="module")
def full_model(full_folder):
    return load_model(str(full_folder), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def export(tmp_path_factory, full_folder, tokenizer) -> Path:
    return export_4bit(full_folder, tmp_path_factory.mktemp("nf4"), tokenizer, bnb_config("nf4", double_quant=True))


def scramble_4bit_weights(folder: Path) -> None:
    """Shuffle the packed 4-bit codes of every quantized layer on disk: same values, wrong places."""
    path = folder / "model.safetensors"
    tensors = load_file(path)
    generator = torch.Generator().manual_seed(0)
    packed = [name for name, tensor in tensors.items() if name.endswith(".weight") and tensor.dtype == torch.uint8]
    assert len(packed) == len(QUANTIZED_LAYERS)
    for name in packed:
        flat = tensors[name].flatten()
        tensors[name] = flat[torch.randperm(flat.numel(), generator=generator)].reshape(tensors[name].shape)
    save_file(tensors, path, metadata={"format": "pt"})


FRESH_PROCESS = """
import json, sys
import bitsandbytes as bnb
from transformers.pytorch_utils import Conv1D
from hf_recipes.data.stdlib import function_name_conversation
from hf_recipes.evaluation import generate_answers
from hf_recipes.generation import load_for_generation

model, tokenizer = load_for_generation(sys.argv[1])
answers = generate_answers(model, tokenizer, [function_name_conversation(sys.argv[2], "add")], 6, show_progress=False)
print(json.dumps({
    "linear4bit": sorted(name for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)),
    "conv1d": sum(isinstance(module, Conv1D) for module in model.modules()),
    "quant_type": model.config.quantization_config.bnb_4bit_quant_type,
    "answer": answers[0].text,
    "has_template": bool(tokenizer.chat_template),
}))
"""


def test_export_reloads_in_a_fresh_process_with_linear4bit_layers_and_generates(export, tokenizer):
    code = "def add(a, b):\n    return a + b"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(export), code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    fresh = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(fresh["linear4bit"]) == QUANTIZED_LAYERS  # every GPT-2 Conv1D became a 4-bit linear layer
    assert fresh["conv1d"] == 0
    assert fresh["quant_type"] == "nf4" and fresh["has_template"]
    # The fresh process answers exactly as this one does with the same export.
    here = load_model(str(export)).eval()
    examples = [conversations()[0]]
    assert fresh["answer"] == generate_answers(here, tokenizer, examples, 6, show_progress=False)[0].text
    saved = json.loads((export / "generation_config.json").read_text())
    assert (saved["eos_token_id"], saved["pad_token_id"]) == (tokenizer.eos_token_id, tokenizer.pad_token_id)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (export / name).is_file(), name


def test_verification_writes_its_numbers_and_passes_a_sound_export(export, full_folder, full_model, tokenizer, blocks):
    metrics = verify_export(
        full_model,
        export,
        tokenizer,
        blocks[1],
        conversations(),
        max_new_tokens=6,
        batch_size=8,
        size_bytes_full=folder_size_bytes(full_folder),
        show_progress=False,
    )
    assert json.loads((export / "metrics.json").read_text()) == pytest.approx(metrics)
    assert metrics["verified"] is True and not (export / NOT_VERIFIED_FILE).exists()
    assert metrics["perplexity_full"] < 150  # the model learned something, so the comparison can see damage
    assert metrics["perplexity_4bit"] != metrics["perplexity_full"]  # really quantized
    assert metrics["perplexity_ratio"] == pytest.approx(metrics["perplexity_4bit"] / metrics["perplexity_full"])
    assert 0.95 < metrics["perplexity_ratio"] < 1.05
    assert metrics["size_bytes_4bit"] < metrics["size_bytes_full"]
    for key in ("exact_match_full", "exact_match_4bit", "stop_rate_4bit"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["eval_examples"] == len(conversations()) and metrics["linear4bit_layers"] == len(QUANTIZED_LAYERS)


def test_scrambled_weights_fail_verification_and_mark_the_folder(
    export, full_folder, full_model, tokenizer, blocks, tmp_path
):
    broken = shutil.copytree(export, tmp_path / "broken")
    scramble_4bit_weights(broken)
    with pytest.raises(RecipeError) as error:
        verify_export(full_model, broken, tokenizer, blocks[1], [], max_perplexity_ratio=1.10, show_progress=False)
    assert re.search(r"perplexity ratio \d+\.\d+ .* exceeds the limit max_perplexity_ratio=1.1", str(error.value))
    metrics = json.loads((broken / "metrics.json").read_text())
    assert metrics["verified"] is False and metrics["perplexity_ratio"] > 1.5
    assert "perplexity ratio" in (broken / NOT_VERIFIED_FILE).read_text()
    # Exporting again into the folder clears the old verdict, and the sound export verifies.
    export_4bit(full_folder, broken, tokenizer, bnb_config())
    assert not (broken / NOT_VERIFIED_FILE).exists() and not (broken / "metrics.json").exists()
    assert verify_export(full_model, broken, tokenizer, blocks[1], [], show_progress=False)["verified"] is True


def test_fp4_without_double_quant_also_exports(full_folder, tokenizer, tmp_path):
    folder = export_4bit(full_folder, tmp_path / "fp4", tokenizer, bnb_config("fp4", double_quant=False))
    config = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert (config["bnb_4bit_quant_type"], config["bnb_4bit_use_double_quant"]) == ("fp4", False)
    assert linear4bit_count(load_model(str(folder))) == len(QUANTIZED_LAYERS)


def test_an_adapter_folder_is_merged_into_its_base_first(full_folder, tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = load_model(str(full_folder), dtype=torch.float32)
    lora = LoraConfig(r=4, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True, task_type="CAUSAL_LM")
    peft_model = get_peft_model(base, lora)
    with torch.no_grad():  # lora_B starts at zero; give the adapter something to merge
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05, generator=torch.Generator().manual_seed(len(name)))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    assert model_folder_kind(adapter) == "adapter"
    ids = torch.tensor([tokenizer("def add(a, b):\n    return a + b")["input_ids"]])
    with torch.no_grad():
        expected = peft_model.eval()(input_ids=ids).logits
        merged = load_full_precision(adapter, dtype=torch.float32).eval()(input_ids=ids).logits
        untouched = load_model(str(full_folder), dtype=torch.float32).eval()(input_ids=ids).logits
    assert torch.allclose(merged, expected, atol=1e-4)
    assert not torch.allclose(merged, untouched, atol=1e-2)  # the adapter changed the model
    with full_precision_folder(adapter) as source:
        assert model_folder_kind(source) == "model"
        folder = export_4bit(source, tmp_path / "nf4", tokenizer, bnb_config())
    assert not source.exists()  # the temporary merge is gone once exported
    assert linear4bit_count(load_model(str(folder))) == len(QUANTIZED_LAYERS)


def test_folders_without_a_model_are_refused(tmp_path):
    with pytest.raises(RecipeError, match=re.escape(f"{tmp_path} holds no model (no config.json / *.safetensors)")):
        model_folder_kind(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RecipeError, match="holds no model"):
        model_folder_kind(tmp_path)  # a config without weights (a crashed save) is no model either
    with pytest.raises(RecipeError, match="model folder not found"):
        model_folder_kind(tmp_path / "nowhere")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(RecipeError, match="names no base_model_name_or_path"):
        load_full_precision(adapter)


def test_missing_bitsandbytes_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` raise ImportError
    with pytest.raises(RecipeError, match="pip install bitsandbytes"):
        require_bitsandbytes()


@pytest.mark.parametrize("preset", ["gpt2-tiny", "gpt2"])
def test_quantize_recipes_parse(preset):
    (args,) = parse_stage("quantize", ["--config", str(REPO_ROOT / "recipes" / preset / "quantize.yaml")])
    assert args.output_dir == f"outputs/{preset}/quantized-nf4" and args.max_perplexity_ratio == 1.10


def test_quantize_config_mistakes_name_the_key(tmp_path):
    recipe = tmp_path / "quantize.yaml"
    recipe.write_text("quant_type: int3\n")
    with pytest.raises(RecipeError, match="'quant_type' is 'int3'; choose one of nf4, fp4"):
        parse_stage("quantize", ["--config", str(recipe)])
    recipe.write_text("max_perplexity_ration: 1.2\n")
    with pytest.raises(RecipeError, match="did you mean 'max_perplexity_ratio'"):
        parse_stage("quantize", ["--config", str(recipe)])
    with pytest.raises(RecipeError, match="invalid choice: 'int3'"):
        parse_stage("quantize", ["--quant_type", "int3"])


def test_quantize_recipe_exports_verifies_and_fails_past_the_limit(
    monkeypatch, capsys, full_folder, tokenizer, blocks, tmp_path
):
    """The script end to end, with the held-out data functions swapped for tiny ones (seconds, not minutes)."""
    import hf_recipes.data.stdlib as stdlib

    def validation_token_blocks(tokenizer, block_size, max_blocks):
        assert block_size == BLOCK
        return blocks[1][:max_blocks]

    def function_name_conversations(split="validation", limit=None):
        assert split == "validation"
        return conversations()[:limit]

    monkeypatch.setattr(stdlib, "validation_token_blocks", validation_token_blocks, raising=False)
    monkeypatch.setattr(stdlib, "function_name_conversations", function_name_conversations)
    from hf_recipes.stages import quantize as script

    output = tmp_path / "quantized"
    argv = ["--config", str(REPO_ROOT / "recipes/gpt2-tiny/quantize.yaml"), "--model_name_or_path", str(full_folder),
            "--output_dir", str(output), "--block_size", str(BLOCK), "--eval_blocks", "8", "--max_eval_examples", "3",
            "--max_new_tokens", "4"]  # fmt: skip
    script.main(argv)
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["verified"] is True and metrics["eval_blocks"] == 8 and metrics["eval_examples"] == 3
    assert {"perplexity_full", "perplexity_4bit", "exact_match_full", "size_bytes_full"} <= metrics.keys()
    assert "QuantizeArguments" in (output / "run_config.yaml").read_text()
    assert (output / "chat_template.jinja").is_file()

    with pytest.raises(SystemExit) as exit_info:
        run_recipe(script.main, [*argv, "--max_perplexity_ratio", "0.5"])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "exceeds the limit max_perplexity_ratio=0.5" in errors[0]
    assert json.loads((output / "metrics.json").read_text())["verified"] is False
    assert (output / NOT_VERIFIED_FILE).is_file()
