"""DPO: built-in pairs keep the module split, bad preference rows are named, tiny runs through the real recipe."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_recipes.data import stdlib
from hf_recipes.data.sources import load_preference_source, load_preference_splits
from hf_recipes.runtime import RecipeError
from hf_recipes.stages import dpo
from tests.conftest import REPO_ROOT, tiny_chat_run
from tests.tiny import save_tiny_model_folder, sft_like_folder

TINY_DPO = tiny_chat_run(train_examples=16, steps=2)


# ----------------------------------------------------------------------------------------------------------------
# Built-in pairs
# ----------------------------------------------------------------------------------------------------------------


def write_modules(root, count=12):
    """A fake standard library: module `mN.py` defines functions whose names all carry their module's tag."""
    for index in range(count):
        (root / f"m{index}.py").write_text(
            f"def first_m{index}(alpha_m{index}, beta):\n    return helper_m{index}(alpha_m{index}) + beta\n\n\n"
            f"def second_m{index}(self):\n    return self\n"
        )
    return root


def test_pairs_keep_the_module_split_and_never_prefer_an_answer_over_itself(tmp_path):
    root = write_modules(tmp_path)
    validation_modules = {m.removesuffix(".py") for m in stdlib.split_modules("validation", 50.0, root)}
    assert validation_modules and len(validation_modules) < 12  # both splits are populated at 50%
    for split in ("train", "validation"):
        pairs = stdlib.function_name_pairs(split, validation_percent=50.0, root=root)
        assert len(pairs) == 2 * (12 - len(validation_modules) if split == "train" else len(validation_modules))
        for pair in pairs:
            code = pair["prompt"][-1]["content"]
            module = code.split("def ", 1)[1].split("(")[0].split("_")[1]
            assert (module in validation_modules) == (split == "validation"), code
            chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
            assert chosen != rejected
            assert rejected != "self"  # `second_mN(self)` can only be answered wrong with its sibling
            assert rejected in code or rejected.startswith(("first_", "second_"))
            assert [m["role"] for m in pair["prompt"]] == ["system", "user"]
    # Deterministic: the same pairs every time.
    assert stdlib.function_name_pairs("train", validation_percent=50.0, root=root) == stdlib.function_name_pairs(
        "train", validation_percent=50.0, root=root
    )


def test_stdlib_pairs_are_the_sft_conversations_with_a_wrong_answer():
    pairs = stdlib.function_name_pairs("validation", limit=40)
    conversations = stdlib.function_name_conversations("validation", limit=41)
    assert len(pairs) == 40
    for pair in pairs:
        assert {"messages": pair["prompt"] + pair["chosen"]} in conversations
        assert pair["rejected"][0]["content"] != pair["chosen"][0]["content"]
    # The three kinds of wrong answer all occur: a called function, a parameter, another definition.
    kinds = [stdlib.wrong_name_candidates("", p["prompt"][-1]["content"].split("\n\n", 1)[1], []) for p in pairs]
    rejected = [p["rejected"][0]["content"] for p in pairs]
    assert any(r in calls for r, (calls, _, _) in zip(rejected, kinds, strict=True))
    assert any(r in params for r, (_, params, _) in zip(rejected, kinds, strict=True))
    assert any(r not in calls + params for r, (calls, params, _) in zip(rejected, kinds, strict=True))


def test_training_functions_can_give_several_wrong_names_held_out_functions_one(tmp_path):
    root = write_modules(tmp_path)
    one = stdlib.function_name_pairs("train", validation_percent=50.0, root=root)
    three = stdlib.function_name_pairs("train", validation_percent=50.0, root=root, wrong_names=3)
    rejected_by_prompt = {}
    for pair in three:
        rejected_by_prompt.setdefault(pair["prompt"][-1]["content"], []).append(pair["rejected"][0]["content"])
    for pair in one:  # the first wrong name is the one a single pair would have had, the others differ from it
        code, name = pair["prompt"][-1]["content"], pair["chosen"][0]["content"]
        rejected = rejected_by_prompt[code]
        assert rejected[0] == pair["rejected"][0]["content"]
        assert len(set(rejected)) == len(rejected) and name not in rejected
        # first_mN(alpha_mN, beta) calls helper_mN and has a sibling: 4 wrong names, 3 taken; second_mN has 1.
        assert len(rejected) == (3 if name.startswith("first_") else 1), (name, rejected)
    assert len(three) == 4 * len(one) // 2

    train, held_out = load_preference_splits("stdlib-function-name", max_train=30, max_eval=30, wrong_names=3)
    assert len({pair["prompt"][-1]["content"] for pair in train}) < len(train)  # several pairs per function
    assert held_out == stdlib.function_name_pairs("validation", limit=30)  # held out: one pair each, as before


# ----------------------------------------------------------------------------------------------------------------
# Preference files
# ----------------------------------------------------------------------------------------------------------------

GOOD = {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."}
CONVERSATIONAL = {
    "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
    "chosen": [{"role": "assistant", "content": "Blue."}],
    "rejected": [{"role": "assistant", "content": "Seven."}],
}


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return str(path)


def test_plain_and_conversational_rows_become_the_same_conversational_pairs(tmp_path):
    pairs = load_preference_source(write_jsonl(tmp_path / "p.jsonl", [GOOD, CONVERSATIONAL]), "train")
    assert pairs[0]["prompt"] == [{"role": "user", "content": "Name a colour."}]
    assert pairs[1]["prompt"] == CONVERSATIONAL["prompt"]
    for pair in pairs:
        assert pair["chosen"] == [{"role": "assistant", "content": "Blue."}]
        assert pair["rejected"] == [{"role": "assistant", "content": "Seven."}]
    json_file = tmp_path / "p.json"
    json_file.write_text(json.dumps([CONVERSATIONAL, CONVERSATIONAL]))
    assert load_preference_source(str(json_file), "train") == [pairs[1], pairs[1]]


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ({"prompt": "Name a colour.", "chosen": "Blue."}, ":3: missing 'rejected'"),
        ({**GOOD, "chosen": "  "}, ":3: 'chosen' is empty"),
        ({**GOOD, "rejected": [{"role": "assistant", "content": ""}]}, ":3: 'rejected' is empty"),
        ({**GOOD, "rejected": " Blue. "}, ":3: 'chosen' and 'rejected' are the same answer"),
        ({**GOOD, "chosen": [{"role": "user", "content": "Blue."}]}, ":3: 'chosen' must be the assistant's answer"),
        ('{"prompt": "Name a colour.", "chosen": "Blue.",', ":3: not valid JSON"),
    ],
)
def test_bad_preference_rows_are_named_with_file_and_line(tmp_path, bad_row, message):
    path = write_jsonl(tmp_path / "prefs.jsonl", [GOOD, CONVERSATIONAL, bad_row])
    with pytest.raises(RecipeError) as error:
        load_preference_source(path, "train")
    assert str(error.value).startswith(f"{path}{message}"), str(error.value)
    assert "\n" not in str(error.value)


def test_a_local_file_holds_out_rows_that_training_never_sees(tmp_path):
    rows = [{"prompt": f"Question {i}?", "chosen": f"Answer {i}.", "rejected": "No."} for i in range(40)]
    path = write_jsonl(tmp_path / "prefs.jsonl", rows)
    train, held_out = load_preference_splits(path, validation_percent=10.0, seed=3)
    assert len(train) == 36 and len(held_out) == 4
    prompts = [pair["prompt"][0]["content"] for pair in train + held_out]
    assert sorted(prompts) == sorted(row["prompt"] for row in rows)  # each row in exactly one of the two
    assert load_preference_splits(path, validation_percent=10.0, seed=3) == (train, held_out)


def test_bad_rows_of_a_parquet_file_are_named_by_row(tmp_path):
    from datasets import Dataset

    path = str(tmp_path / "prefs.parquet")
    Dataset.from_list([GOOD, {**GOOD, "rejected": "Blue."}]).to_parquet(path)
    with pytest.raises(RecipeError, match=r"prefs.parquet' row 1: 'chosen' and 'rejected' are the same answer"):
        load_preference_source(path, "train")


# ----------------------------------------------------------------------------------------------------------------
# Tiny runs through the recipe
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sft_folder(tmp_path_factory):
    return sft_like_folder(tmp_path_factory.mktemp("sft"))


@pytest.fixture
def trainers(monkeypatch):
    """The recipe's trainers, kept for inspection after the run."""
    made = []

    class Recorded(dpo.RecipeDPOTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(dpo, "RecipeDPOTrainer", Recorded)
    return made


def run(model, output_dir, *extra):
    dpo.main(
        [
            "--config",
            str(REPO_ROOT / "recipes/gpt2-tiny/dpo.yaml"),
            *TINY_DPO,
            "--model_name_or_path",
            str(model),
            "--output_dir",
            str(output_dir),
            *extra,
        ]
    )


def test_lora_dpo_starts_at_ln2_changes_only_the_projections_and_leaves_a_plain_model(sft_folder, tmp_path, trainers):
    output = tmp_path / "dpo"
    run(sft_folder, output, "--learning_rate", "0.05")  # the recipe's loss: sigmoid DPO + SFT term
    # No second model in memory: TRL scores the reference with the adapter disabled.
    assert trainers[0].ref_model is None and hasattr(trainers[0].model, "disable_adapter")
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["first_batch_dpo_loss"] == pytest.approx(math.log(2), abs=1e-6)
    for key in ("reward_accuracy", "reward_margin", "exact_match", "stop_rate", "exact_match_before", "eval_examples"):
        assert key in metrics, key
    assert 0 <= metrics["reward_accuracy"] <= 1 and metrics["eval_pairs"] > 0
    assert (output / "adapter" / "adapter_model.safetensors").is_file()
    before, after = load_file(sft_folder / "model.safetensors"), load_file(output / "model.safetensors")
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert changed and all(name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) for name in changed)
    # The template is the SFT model's own, unchanged.
    assert (output / "chat_template.jinja").read_text() == (sft_folder / "chat_template.jinja").read_text()
    assert not list(output.glob("**/training_args.bin"))

    model = AutoModelForCausalLM.from_pretrained(output)  # no peft involved
    assert not hasattr(model, "peft_config")
    tokenizer = AutoTokenizer.from_pretrained(output)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "def f(): pass"}], tokenize=False)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    generated = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert generated.shape[1] > ids["input_ids"].shape[1]


def test_lora_top_layers_leaves_the_layers_below_as_they_were(sft_folder, tmp_path):
    output = tmp_path / "top"
    run(sft_folder, output, "--lora_top_layers", "1", "--learning_rate", "0.05")  # the tiny model has 2 layers
    before, after = load_file(sft_folder / "model.safetensors"), load_file(output / "model.safetensors")
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert changed and all(name.startswith("transformer.h.1.") for name in changed)


def test_full_model_dpo_with_its_own_reference_starts_at_ln2(sft_folder, tmp_path, trainers):
    pure_dpo = ["--loss_type", "sigmoid", "--loss_weights", "1.0"]
    run(sft_folder, tmp_path / "full", "--use_peft", "false", "--learning_rate", "1e-3", *pure_dpo)
    # An explicit reference, loaded from the SFT folder; it stays as it was while the policy trains.
    reference, policy = trainers[0].ref_model, trainers[0].model
    assert reference is not None and reference is not policy
    sft_weights = load_file(sft_folder / "model.safetensors")
    assert torch.equal(reference.transformer.h[0].mlp.c_fc.weight, sft_weights["transformer.h.0.mlp.c_fc.weight"])
    assert not torch.equal(policy.transformer.h[0].mlp.c_fc.weight, sft_weights["transformer.h.0.mlp.c_fc.weight"])
    metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert metrics["first_batch_dpo_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert not (tmp_path / "full" / "adapter").exists()


@pytest.mark.parametrize("losses", [["--loss_type", "sigmoid", "--loss_weights", "1.0"], []])  # pure DPO; the recipe's
def test_a_reference_that_is_not_the_starting_policy_stops_at_the_first_batch(sft_folder, tmp_path, losses):
    other = sft_like_folder(tmp_path / "other", seed=1)  # same tokenizer, different weights
    wrong = ["--use_peft", "false", "--ref_model_name_or_path", str(other), *losses]
    with pytest.raises(RecipeError, match=r"first batch's DPO loss is [0-9.]+, not ln 2 = 0.693147"):
        run(sft_folder, tmp_path / "wrong", *wrong)
    assert not (tmp_path / "wrong" / "model.safetensors").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lora_target_modules", "wte"], "tied embedding"),
        (["--lora_top_layers", "0"], "lora_top_layers must be at least 1"),
        (["--dataset_name", "missing.jsonl"], "data file not found: missing.jsonl"),
    ],
)
def test_mistakes_stop_before_training(sft_folder, tmp_path, extra, message):
    with pytest.raises(RecipeError, match=message):
        run(sft_folder, tmp_path / "bad", *extra)
    assert not (tmp_path / "bad" / "model.safetensors").exists()


def test_a_model_without_a_chat_template_is_refused(tmp_path):
    base = save_tiny_model_folder(tmp_path / "base")  # a pretrain-like folder: no template
    with pytest.raises(RecipeError, match="has no chat template: start DPO from an SFT folder"):
        run(base, tmp_path / "out")
