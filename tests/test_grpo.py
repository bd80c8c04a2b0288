"""GRPO: prompt rows and their errors, the verifiable rewards, a user's reward, the KL-at-start check, tiny runs."""

import json
import sys
from dataclasses import replace

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file

from hf_recipes.config import parse_stage
from hf_recipes.data.prompts import load_prompt_source, load_prompt_splits
from hf_recipes.data.sources import load_training_splits
from hf_recipes.rewards import exact_match, load_user_reward, prefix_match, reward_functions, stop_reward
from hf_recipes.runtime import RecipeError
from hf_recipes.stages import grpo
from tests.conftest import QUIET, REPO_ROOT
from tests.tiny import sft_like_folder, tiny_model, tiny_tokenizer

TINY_GRPO = [
    "--max_train_examples", "16", "--max_eval_examples", "4", "--eval_max_new_tokens", "4",
    "--num_generations", "4", "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "1",
    "--max_completion_length", "4", "--max_steps", "2", "--logging_steps", "1", "--save_steps", "2",
    *QUIET,
]  # fmt: skip


def run(base, output_dir, *extra):
    grpo.main(["--config", str(REPO_ROOT / "recipes/gpt2-tiny/grpo.yaml"), *TINY_GRPO,
               "--model_name_or_path", str(base), "--output_dir", str(output_dir), *extra])  # fmt: skip


@pytest.fixture(scope="module")
def chat_folder(tmp_path_factory):
    return sft_like_folder(tmp_path_factory.mktemp("chat"))


# ----------------------------------------------------------------------------------------------------------------
# Rewards
# ----------------------------------------------------------------------------------------------------------------


def test_exact_match_rewards_the_reference_name_only():
    completions = [[{"role": "assistant", "content": " add "}], [{"role": "assistant", "content": "add_one"}],
                   [{"role": "assistant", "content": ""}], "add"]  # fmt: skip
    assert exact_match(completions, answer=["add"] * 4) == [1.0, 0.0, 0.0, 1.0]


def test_prefix_match_gives_the_share_of_the_name_right_from_its_start():
    completions = [" get_name", "get_nam", "get_name_x", "xyz", "", [{"role": "assistant", "content": "get"}]]
    scores = prefix_match(completions, ["get_name"] * 6)
    assert scores == pytest.approx([1.0, 7 / 8, 8 / 10, 0.0, 0.0, 3 / 8])


def test_stop_rewards_a_completion_that_ends_with_eos():
    stop = stop_reward(eos_token_id=2)
    assert stop(completion_ids=[[5, 6, 2], [5, 6, 7], []]) == [1.0, 0.0, 0.0]
    assert [f.__name__ for f in reward_functions(["exact_match", "stop"], 2)] == ["exact_match", "stop"]


def test_a_users_reward_is_loaded_by_module_and_function(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def short(completions, **kwargs):\n    return [1.0 / (1 + len(str(c))) for c in completions]\n"
        "def no_kwargs(completions):\n    return [0.0]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_user_reward("my_rewards:short")(completions=["ab"]) == [pytest.approx(1 / 3)]
    for spec, message in [
        ("missing_module_xyz:f", "cannot import module 'missing_module_xyz'"),
        ("my_rewards:nope", "module 'my_rewards' has no function 'nope'"),
        ("my_rewards:no_kwargs", "takes (completions): it must accept **kwargs"),
        ("my_rewards:", "write it as module:function"),
        ("exact", "unknown reward 'exact'"),
    ]:
        with pytest.raises(RecipeError, match=spec.split(":")[0]) as error:
            reward_functions([spec], 2)
        assert message in str(error.value) and "\n" not in str(error.value)
    sys.modules.pop("my_rewards", None)


# ----------------------------------------------------------------------------------------------------------------
# Prompt rows
# ----------------------------------------------------------------------------------------------------------------


def test_built_in_prompts_are_the_sft_conversations_without_their_answer():
    rows = load_prompt_source("stdlib-function-name", "validation", limit=5)
    assert [m["role"] for m in rows[0]["prompt"]] == ["system", "user"]
    assert rows[0]["answer"] in rows[0]["prompt"][-1]["content"]


def test_renamed_share_gives_training_prompts_made_up_names_that_must_be_copied():
    real = load_prompt_source("stdlib-function-name", "train", limit=200)
    renamed = load_prompt_source("stdlib-function-name", "train", limit=200, renamed_share=1.0)
    changed = [new for old, new in zip(real, renamed, strict=True) if new["answer"] != old["answer"]]
    assert len(changed) > 100  # dunders and a few others keep their names
    for row in changed:  # the made-up name is in the code, and the real one is gone
        assert row["answer"] in row["prompt"][-1]["content"]
    assert load_prompt_source("stdlib-function-name", "validation", limit=50, renamed_share=1.0) == (
        load_prompt_source("stdlib-function-name", "validation", limit=50)
    )  # held-out names stay real
    # The recipe's field reaches the loader.
    recipe = ["--config", str(REPO_ROOT / "recipes/gpt2-tiny/grpo.yaml"), "--max_train_examples", "40"]
    data = parse_stage("grpo", [*recipe, "--renamed_function_share", "1.0"])[0]
    train, held_out = load_training_splits(load_prompt_splits, data, seed=0)
    real_train, real_held_out = load_training_splits(
        load_prompt_splits, replace(data, renamed_function_share=0), seed=0
    )
    assert held_out == real_held_out
    assert sum(a["answer"] != b["answer"] for a, b in zip(train, real_train, strict=True)) > 15


def test_a_users_prompts_with_answers_load_and_bad_rows_are_named(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(
        '{"prompt": "Name it: def f(): pass", "answer": "f"}\n'
        '{"messages": [{"role": "user", "content": "def g(): pass"}, {"role": "assistant", "content": "g"}]}\n'
        '{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "def h(): pass"}], '
        '"answer": "h"}\n'
    )
    rows = load_prompt_source(str(good), "train")
    assert [row["answer"] for row in rows] == ["f", "g", "h"]
    assert rows[1]["prompt"] == [{"role": "user", "content": "def g(): pass"}]
    train, held_out = load_prompt_splits(str(good), validation_percent=34, seed=0)
    assert len(train) == 2 and len(held_out) == 1 and held_out[0] not in train
    for line, message in [
        ('{"prompt": "def f(): pass"}', "good2.jsonl:1: missing 'answer'"),
        ('{"question": "x", "answer": "y"}', "good2.jsonl:1: needs a 'prompt'"),
        ('{"prompt": [{"role": "assistant", "content": "x"}], "answer": "y"}', "good2.jsonl:1:"),
    ]:
        (tmp_path / "good2.jsonl").write_text(line + "\n")
        with pytest.raises(RecipeError, match=message):
            load_prompt_source(str(tmp_path / "good2.jsonl"), "train")


# ----------------------------------------------------------------------------------------------------------------
# Scoring completions where they were sampled
# ----------------------------------------------------------------------------------------------------------------


def completion_logps(model, rows: list[list[int]], completion: int) -> torch.Tensor:
    """Log-probabilities of each row's last `completion` tokens, the rows left-padded into one batch (as TRL's GRPO
    scores them: input ids and attention mask, no position ids)."""
    width = max(map(len, rows))
    input_ids = torch.tensor([[0] * (width - len(row)) + row for row in rows])
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1]
    logps = torch.log_softmax(logits.float(), -1).gather(-1, input_ids[:, 1:, None])[..., 0]
    return logps[:, -completion:]


def test_grpo_scores_a_left_padded_completion_as_generate_sampled_it():
    from trl import GRPOConfig

    from hf_recipes.trainers import RecipeGRPOTrainer

    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer).eval()
    short, long = [5, 6, 7, 8, 9, 10], list(range(20, 60))
    alone = completion_logps(model, [short], 3)
    padded = completion_logps(model, [short, long], 3)[:1]
    assert not torch.allclose(padded, alone, atol=1e-3)  # GPT-2's learned positions: the padding shifts every one
    args = GRPOConfig(output_dir="unused", num_generations=2, per_device_train_batch_size=2, max_completion_length=4,
                      report_to="none", use_cpu=True, beta=0.0)  # fmt: skip
    rows = Dataset.from_list([{"prompt": "def f(): pass"}, {"prompt": "def g(): pass"}])
    trainer = RecipeGRPOTrainer(model=model, reward_funcs=lambda completions, **_: [0.0] * len(completions),
                                args=args, train_dataset=rows, processing_class=tokenizer)  # fmt: skip
    assert torch.allclose(completion_logps(trainer.model, [short, long], 3)[:1], alone, atol=1e-5)
    assert torch.allclose(completion_logps(trainer.model, [short], 3), alone, atol=1e-5)  # no padding: unchanged


# ----------------------------------------------------------------------------------------------------------------
# Tiny runs through the real stage
# ----------------------------------------------------------------------------------------------------------------


def test_lora_grpo_starts_at_zero_kl_changes_only_the_projections_and_records_rewards(
    chat_folder, tmp_path, monkeypatch
):
    # A random tiny model never says the name, so exact match is 0 for every completion and no advantage moves it:
    # a user's reward that varies between completions (fewer characters score higher) gives GRPO a signal.
    (tmp_path / "shorter.py").write_text(
        "from hf_recipes.rewards import completion_text\n"
        "def shorter(completions, **kwargs):\n    return [-len(completion_text(c)) / 10 for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    run(chat_folder, tmp_path / "grpo", "--reward_functions", "exact_match", "stop", "shorter:shorter")
    metrics = json.loads((tmp_path / "grpo" / "metrics.json").read_text())
    assert metrics["initial_kl"] == pytest.approx(0.0, abs=1e-6)  # the reference is the starting policy
    for key in ("exact_match", "exact_match_before", "stop_rate", "mean_reward", "kl_last", "train_prompts"):
        assert key in metrics, key
    assert metrics["train_steps"] == 2 and metrics["mean_reward"] < 0  # the user's reward was summed in
    before, after = load_file(chat_folder / "model.safetensors"), load_file(tmp_path / "grpo" / "model.safetensors")
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) for name in changed)
    assert (tmp_path / "grpo" / "adapter" / "adapter_config.json").is_file()
    assert not list((tmp_path / "grpo").glob("**/training_args.bin"))


def test_a_reference_that_is_not_the_start_policy_stops_at_the_first_step(tmp_path):
    # Dropout on in both (the tiny model has 0.1): the policy's and the reference's log-probabilities disagree.
    base = sft_like_folder(tmp_path / "base")
    with pytest.raises(RecipeError, match=r"the first step's KL to the reference is .*, not 0"):
        run(base, tmp_path / "grpo", "--disable_dropout", "false", "--use_peft", "false")
    assert not (tmp_path / "grpo" / "model.safetensors").exists()


# ----------------------------------------------------------------------------------------------------------------
# The reward model, and GRPO against it
# ----------------------------------------------------------------------------------------------------------------


def test_a_reward_model_trains_on_pairs_and_grpo_runs_against_it(chat_folder, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from hf_recipes.stages import reward

    reward.main(["--config", str(REPO_ROOT / "recipes/gpt2-tiny/reward.yaml"), "--model_name_or_path",
                 str(chat_folder), "--output_dir", str(tmp_path / "reward"), "--max_train_examples", "16",
                 "--max_eval_examples", "6", "--max_length", "200", "--per_device_train_batch_size", "4",
                 "--max_steps", "2", "--eval_steps", "2", "--save_steps", "2", "--logging_steps", "1",
                 "--report_to", "none", "--disable_tqdm", "true"])  # fmt: skip
    metrics = json.loads((tmp_path / "reward" / "metrics.json").read_text())
    assert 0.0 <= metrics["pair_accuracy"] <= 1.0 and metrics["eval_pairs"] > 0 and metrics["train_steps"] == 2
    scorer = AutoModelForSequenceClassification.from_pretrained(tmp_path / "reward")
    assert scorer.config.num_labels == 1 and scorer.config.pad_token_id is not None

    run(chat_folder, tmp_path / "grpo", "--reward_model", str(tmp_path / "reward"))
    history = json.loads((tmp_path / "grpo" / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    # TRL names a reward model's column after its folder: rewards/reward/mean next to exact_match's and stop's.
    assert any("rewards/reward/mean" in entry for entry in history), "the reward model was not one of the rewards"
    assert scorer.config.reward_read_at == "answer_end"


def reward_trainer(model, tokenizer, pairs: list[dict], output_dir, *extra):
    """reward.yaml's trainer over `pairs` (train and held out alike), rendered as make reward renders them."""
    from hf_recipes.stages import reward
    from hf_recipes.trainers import RecipeRewardTrainer

    recipe = ["--config", str(REPO_ROOT / "recipes/gpt2-tiny/reward.yaml"), "--model_name_or_path", model.name_or_path]
    args = parse_stage("reward", [*recipe, "--output_dir", str(output_dir), *QUIET, *extra])[2]
    rows = Dataset.from_list(reward.scored_at_answer_end(pairs))
    return RecipeRewardTrainer(
        model=model, args=args, processing_class=tokenizer, train_dataset=rows, eval_dataset=rows
    )


def test_reward_modeling_reads_the_score_at_the_answers_last_token(chat_folder, tmp_path):
    """TRL renders each pair with the row's chat_template_kwargs: what it trains on ends with the answer, no eos."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(chat_folder)
    model = AutoModelForSequenceClassification.from_pretrained(chat_folder, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    prompt = [{"role": "user", "content": "def add(a, b): return a + b"}]
    chosen, rejected = [{"role": "assistant", "content": "add"}], [{"role": "assistant", "content": "sum_two"}]
    trainer = reward_trainer(model, tokenizer, [{"prompt": prompt, "chosen": chosen, "rejected": rejected}], tmp_path)
    trained = trainer.train_dataset[0]
    for key, answer in (("chosen_ids", chosen), ("rejected_ids", rejected)):
        whole = tokenizer.apply_chat_template(prompt + answer, return_dict=False)
        assert whole[-1] == tokenizer.eos_token_id and trained[key][-1] != tokenizer.eos_token_id
        assert (
            tokenizer.decode(trained[key]).endswith(answer[0]["content"])
            and whole[: len(trained[key])] == trained[key]
        )


def test_held_out_pair_accuracy_counts_every_pair_once(chat_folder, tmp_path):
    """5 pairs in batches of 2: TRL's batch mean would weigh the last pair like two; the count weighs it as one."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(chat_folder)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(chat_folder, num_labels=1).eval()
    model.config.pad_token_id = tokenizer.pad_token_id
    names = [("add", "total"), ("split_path", "join"), ("read", "open_file"), ("parse", "tokens"), ("run", "go")]
    pairs = [
        {"prompt": [{"role": "user", "content": f"def {name}(x): return x"}],
         "chosen": [{"role": "assistant", "content": name}], "rejected": [{"role": "assistant", "content": wrong}]}
        for name, wrong in names
    ]  # fmt: skip
    trainer = reward_trainer(model, tokenizer, pairs, tmp_path, "--per_device_eval_batch_size", "2", "--bf16", "false")

    def score(ids: list[int]) -> float:
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0, 0].item()

    wins = [score(row["chosen_ids"]) > score(row["rejected_ids"]) for row in trainer.eval_dataset]
    assert trainer.held_out_pair_accuracy() == pytest.approx(sum(wins) / len(wins))


def test_a_reward_model_as_grpo_reward_is_read_where_it_was_trained(chat_folder, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hf_recipes.rewards import reward_model_reward

    tokenizer = AutoTokenizer.from_pretrained(chat_folder)
    model = AutoModelForSequenceClassification.from_pretrained(chat_folder, num_labels=1).eval()
    model.config.pad_token_id = tokenizer.pad_token_id
    prompt = [{"role": "user", "content": "def add(a, b): return a + b"}]
    completions = [[{"role": "assistant", "content": "add"}], [{"role": "assistant", "content": "add_numbers"}]]

    def score_at(position_from_end: int, completion) -> float:
        ids = tokenizer.apply_chat_template(prompt + completion, return_dict=False)
        with torch.no_grad():
            hidden = model.transformer(torch.tensor([ids])).last_hidden_state
            return model.score(hidden)[0, len(ids) - 1 - position_from_end, 0].item()

    answer_end_tokens = 2  # the Llama-2 template's " </s>" after the answer
    for read_at, skipped in (("answer_end", answer_end_tokens), (None, 0)):
        model.config.reward_read_at = read_at
        model.save_pretrained(tmp_path / "scorer")
        tokenizer.save_pretrained(tmp_path / "scorer")
        reward = reward_model_reward(str(tmp_path / "scorer"))
        expected = [score_at(skipped, completion) for completion in completions]
        assert reward(prompts=[prompt, prompt], completions=completions) == pytest.approx(expected, abs=1e-5)
    assert reward.__name__ == "scorer"
