"""Tiny SFT runs through the real recipe: full and LoRA change weights, the merged LoRA model equals base + adapter."""

import json
import warnings

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from hf_recipes.runtime import RecipeError
from hf_recipes.stages import sft
from tests.conftest import REPO_ROOT, tiny_chat_run
from tests.tiny import save_tiny_model_folder

TINY_SFT = tiny_chat_run(train_examples=24, steps=3)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_model_folder(tmp_path_factory.mktemp("base"))


def run(base, output_dir, recipe="sft.yaml", *extra):
    recipe_path = str(REPO_ROOT / "recipes/gpt2-tiny" / recipe)
    sft.main(
        [
            "--config",
            recipe_path,
            *TINY_SFT,
            "--model_name_or_path",
            str(base),
            "--output_dir",
            str(output_dir),
            *extra,
        ]
    )


def changed_tensors(before_folder, after_folder):
    before = load_file(before_folder / "model.safetensors")
    after = load_file(after_folder / "model.safetensors")
    return [name for name in before if not torch.equal(before[name], after[name])]


def test_full_sft_changes_weights_and_reports_task_metrics(base, tmp_path):
    run(base, tmp_path / "full")
    changed = changed_tensors(base, tmp_path / "full")
    assert "transformer.h.1.mlp.c_fc.weight" in changed and "transformer.wte.weight" in changed
    metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    for key in ("exact_match", "stop_rate", "eval_examples", "exact_match_before", "stop_rate_before", "eval_loss"):
        assert key in metrics, key
    assert metrics["eval_examples"] > 0 and 0 <= metrics["exact_match"] <= 1
    # Two computations agree: the overall exact match is the answer-length buckets' weighted mean.
    buckets = metrics["exact_match_by_answer_tokens"].values()
    assert sum(b["examples"] for b in buckets) == metrics["eval_examples"]
    assert sum(b["exact_match"] * b["examples"] for b in buckets) == pytest.approx(
        metrics["exact_match"] * metrics["eval_examples"]
    )
    # The start model is scored on the same answers, bucket by bucket, so a gain can be placed.
    before = metrics["exact_match_by_answer_tokens_before"]
    assert {k: b["examples"] for k, b in before.items()} == {
        k: b["examples"] for k, b in metrics["exact_match_by_answer_tokens"].items()
    }
    assert (tmp_path / "full" / "chat_template.jinja").read_text().count("[INST]") >= 1
    assert not list((tmp_path / "full").glob("**/training_args.bin"))


def test_lora_sft_writes_adapter_and_a_merged_model_equal_to_base_plus_adapter(base, tmp_path):
    output = tmp_path / "lora"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(base, output, "sft_lora.yaml", "--learning_rate", "0.05")
    # GPT-2's Conv1D layers get fan_in_fan_out from our LoRA config, not from peft with a warning at every run.
    assert not [w for w in caught if "fan_in_fan_out" in str(w.message)]
    assert json.loads((output / "adapter" / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    assert (output / "adapter" / "adapter_model.safetensors").is_file()
    changed = changed_tensors(base, output)
    # LoRA on the attention and MLP projections only; the tied embedding never changes.
    assert changed and all(name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) for name in changed)
    merged = AutoModelForCausalLM.from_pretrained(output)
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), output / "adapter")
    input_ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 2]])
    with torch.no_grad():
        merged_logits = merged(input_ids).logits
        adapter_logits = with_adapter(input_ids).logits
    assert torch.allclose(merged_logits, adapter_logits, atol=1e-4)
    base_logits = AutoModelForCausalLM.from_pretrained(base)(input_ids).logits.detach()
    assert not torch.allclose(merged_logits, base_logits, atol=1e-3)  # the adapter did learn something


def test_qlora_sft_trains_an_adapter_on_the_4bit_base_and_merges_into_full_precision(base, tmp_path, monkeypatch):
    """QLoRA: the base loads in 4-bit (bitsandbytes NF4, on the CPU too), only the adapter trains, and the folder's
    merged model is the full-precision base plus that adapter (merge_lora reloads the base unquantized)."""
    import bitsandbytes as bnb

    from hf_recipes import modeling

    trained = []
    load_chat_model = modeling.load_chat_model
    monkeypatch.setattr(
        modeling, "load_chat_model", lambda *a, **k: trained.append(load_chat_model(*a, **k)) or trained[-1]
    )
    output = tmp_path / "qlora"
    run(base, output, "sft_lora.yaml", "--load_in_4bit", "true", "--learning_rate", "0.05")
    assert sum(isinstance(module, bnb.nn.Linear4bit) for module in trained[0].modules()) == 8  # 2 blocks x 4
    adapter = load_file(output / "adapter" / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in adapter.items() if "lora_B" in name]
    assert lora_b and all(tensor.abs().sum() > 0 for tensor in lora_b)  # B starts at zero: it moved
    run_config = (output / "run_config.yaml").read_text()
    assert "load_in_4bit: true" in run_config
    merged = AutoModelForCausalLM.from_pretrained(output)
    assert not hasattr(merged.config, "quantization_config")  # a plain full-precision folder
    changed = changed_tensors(base, output)
    assert changed and all(name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) for name in changed)
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), output / "adapter")
    input_ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 2]])
    with torch.no_grad():
        assert torch.allclose(merged(input_ids).logits, with_adapter(input_ids).logits, atol=1e-4)


def test_a_4bit_model_loaded_to_train_still_trains_after_it_was_scored(base):
    """The held-out scoring before QLoRA runs the 4-bit model in eval mode without gradients; on a CPU with
    AVX512-BF16 bitsandbytes then repacks its weights into an inference-only layout, and the training forward that
    follows failed. (On a CPU without AVX512-BF16 the repacking never happens and this passes either way.)"""
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model
    from trl import ModelConfig

    from hf_recipes import modeling

    model_args = ModelConfig(model_name_or_path=str(base), use_peft=True, load_in_4bit=True, dtype="float32")
    model = modeling.load_chat_model(model_args, modeling.quantization_config(model_args))
    four_bit = [module for module in model.modules() if isinstance(module, bnb.nn.Linear4bit)]
    assert four_bit and not any(module.support_avx512bf16_for_cpu for module in four_bit)
    input_ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 2]])
    model.eval()
    with torch.no_grad():
        model(input_ids)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["c_attn", "c_proj", "c_fc"]))
    model.train()
    model(input_ids, labels=input_ids).loss.backward()
    assert all(parameter.grad is not None for name, parameter in model.named_parameters() if "lora_A" in name)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--use_peft", "true", "--lora_target_modules", "wte"], "tied embedding"),
        (
            ["--use_peft", "true", "--lora_target_modules", "c_atn"],
            "'c_atn' is not in the model (did you mean 'c_attn'?)",
        ),
        (["--load_in_4bit", "true"], "set use_peft: true"),
        (["--chat_template", "lama2"], "did you mean 'llama2'"),
    ],
)
def test_mistakes_stop_before_training(base, tmp_path, extra, message):
    with pytest.raises(RecipeError) as error:
        run(base, tmp_path / "bad", "sft.yaml", *extra)
    assert message in str(error.value)
    assert not (tmp_path / "bad" / "model.safetensors").exists()


def test_tokenizer_larger_than_the_model_vocab_is_refused(tmp_path):
    from tests.tiny import tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer(vocab_size=600)  # 600 tokens
    model = tiny_model(tiny_tokenizer(vocab_size=512))  # embeds 512
    model.save_pretrained(tmp_path / "mismatch")
    tokenizer.save_pretrained(tmp_path / "mismatch")
    with pytest.raises(RecipeError, match="600 tokens but the model embeds only 512"):
        run(tmp_path / "mismatch", tmp_path / "out")


def test_a_local_file_holds_out_rows_that_are_never_trained_on(tmp_path):
    from hf_recipes.data.sources import load_chat_splits

    rows = [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(20)]
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    train, held_out = load_chat_splits(str(path), test_split="validation", validation_percent=10, seed=3)
    assert (len(train), len(held_out)) == (18, 2)
    prompts = lambda conversations: {c["messages"][0]["content"] for c in conversations}  # noqa: E731
    assert prompts(train).isdisjoint(prompts(held_out))
    assert load_chat_splits(str(path), test_split="validation", validation_percent=10, seed=3) == (train, held_out)


def test_a_rerun_after_the_input_model_was_trained_again_trains_again(tmp_path):
    """Retrain the input, rerun the same SFT: its old checkpoints are stale, not a run to resume at its last step."""
    base = save_tiny_model_folder(tmp_path / "base", seed=0)
    run(base, tmp_path / "sft", "sft.yaml", "--eval_before_training", "false")
    first = load_file(tmp_path / "sft" / "model.safetensors")
    save_tiny_model_folder(base, seed=1)  # `make pretrain` again: other weights in the same folder
    run(base, tmp_path / "sft", "sft.yaml", "--eval_before_training", "false")
    metrics = json.loads((tmp_path / "sft" / "metrics.json").read_text())
    assert "resumed_from_step" not in metrics  # 3 steps trained from the new input, not 0 from the old checkpoint
    second = load_file(tmp_path / "sft" / "model.safetensors")
    assert not torch.equal(first["transformer.h.0.attn.c_attn.weight"], second["transformer.h.0.attn.c_attn.weight"])


def test_a_template_that_leaves_eos_out_of_the_loss_is_refused(base, tmp_path):
    """ChatML-like, but the eos after each answer sits outside the generation block: nothing would teach stopping."""
    template = tmp_path / "no_trained_eos.jinja"
    template.write_text(
        "{%- for m in messages -%}{%- if m['role'] == 'assistant' -%}{{- '<|im_start|>assistant\\n' -}}"
        "{%- generation -%}{{- m['content'] -}}{%- endgeneration -%}{{- eos_token + '\\n' -}}"
        "{%- else -%}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + eos_token + '\\n' -}}{%- endif -%}"
        "{%- endfor -%}"
    )
    with pytest.raises(RecipeError, match=r"does not train eos \(</s>\) after the assistant's answer"):
        run(base, tmp_path / "out", "sft.yaml", "--chat_template", str(template))
    assert not (tmp_path / "out" / "model.safetensors").exists()
    # The shipped templates train it.
    run(base, tmp_path / "chatml", "sft.yaml", "--chat_template", "chatml", "--max_steps", "1", "--eval_steps", "1",
        "--save_steps", "1", "--eval_before_training", "false")  # fmt: skip
    assert (tmp_path / "chatml" / "model.safetensors").is_file()


def test_open_ended_data_is_measured_by_answer_loss_not_a_meaningless_exact_match(tmp_path):
    rows = [
        {"instruction": f"Describe the number {i}.", "input": "", "output": f"{i} is a number with {i % 3} friends."}
        for i in range(30)
    ]  # alpaca rows: long, open-ended answers
    data = tmp_path / "alpaca.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    base = save_tiny_model_folder(tmp_path / "base")
    run(base, tmp_path / "open", "sft.yaml", "--dataset_name", str(data), "--validation_percent", "20")
    metrics = json.loads((tmp_path / "open" / "metrics.json").read_text())
    assert not [key for key in metrics if key.startswith("exact_match")]
    assert metrics["answer_perplexity"] == pytest.approx(torch.tensor(metrics["eval_loss"]).exp().item(), rel=1e-6)
    assert "stop_rate" in metrics and "stop_rate_before" in metrics
    # The recipe can still ask for exact match (short answers of its own).
    run(base, tmp_path / "asked", "sft.yaml", "--dataset_name", str(data), "--validation_percent", "20",
        "--eval_metric", "exact_match")  # fmt: skip
    assert "exact_match" in json.loads((tmp_path / "asked" / "metrics.json").read_text())


def test_sft_with_muon_steps_the_blocks_with_muon_and_refuses_lora(base, tmp_path):
    run(base, tmp_path / "muon", "sft.yaml", "--muon_learning_rate", "0.02")
    state = torch.load(tmp_path / "muon" / "checkpoint-3" / "optimizer.pt", weights_only=True)["state"]
    assert sum("momentum_buffer" in entry for entry in state.values()) == 8  # 2 blocks x 4 projections
    assert "transformer.h.0.attn.c_attn.weight" in changed_tensors(base, tmp_path / "muon")
    with pytest.raises(RecipeError, match="with use_peft \\(LoRA\\) leave it unset"):
        run(base, tmp_path / "lora", "sft_lora.yaml", "--muon_learning_rate", "0.02")


def test_sft_holding_the_circuit_keeps_head_0_of_the_first_two_layers_and_the_position_code(base, tmp_path):
    run(base, tmp_path / "held", "sft.yaml", "--hold_induction_circuit_steps", "-1")
    before, after = load_file(base / "model.safetensors"), load_file(tmp_path / "held" / "model.safetensors")
    width = before["transformer.wpe.weight"].shape[1]
    head_dim = width // AutoModelForCausalLM.from_pretrained(base).config.n_head
    for layer in (0, 1):
        attention, output = f"transformer.h.{layer}.attn.c_attn.weight", f"transformer.h.{layer}.attn.c_proj.weight"
        for block in range(3):  # query, key, value
            head_0 = slice(block * width, block * width + head_dim)
            assert torch.equal(after[attention][:, head_0], before[attention][:, head_0]), (layer, block)
        assert not torch.equal(after[attention][:, head_dim:width], before[attention][:, head_dim:width])
        assert torch.equal(after[output][:head_dim], before[output][:head_dim])
        assert not torch.equal(after[output][head_dim:], before[output][head_dim:])
    assert torch.equal(after["transformer.wpe.weight"][:, :head_dim], before["transformer.wpe.weight"][:, :head_dim])
