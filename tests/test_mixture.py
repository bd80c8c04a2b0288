"""Dataset mixtures: entries parse in both styles, sizes follow TRL's fraction rule, held-out rows stay out of the
blend, and SFT's parser takes a mixture from a recipe and from the command line."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

from hf_recipes.config import parse_stage
from hf_recipes.data.mixture import MixtureSource, load_mixture, mixture_sizes, parse_mixture, parse_source
from hf_recipes.data.sources import load_chat_splits
from hf_recipes.evaluation import measures_exact_match
from hf_recipes.runtime import RecipeError


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("data/mine.jsonl:0.25", MixtureSource("data/mine.jsonl", fraction=0.25)),
        ("data/mine.jsonl:2000", MixtureSource("data/mine.jsonl", rows=2000)),
        ("user/dataset", MixtureSource("user/dataset")),
        ("C:\\data\\mine.jsonl", MixtureSource("C:\\data\\mine.jsonl")),
        ({"path": "user/dataset", "name": "en", "split": "train_sft", "fraction": 0.5},
         MixtureSource("user/dataset", name="en", split="train_sft", fraction=0.5)),
    ],
)  # fmt: skip
def test_an_entry_is_a_source_with_an_optional_amount_or_trl_s_mapping(entry, expected):
    assert parse_source(entry) == expected


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"path": "a.jsonl", "fractoin": 0.5}], "unknown key(s) fractoin"),
        ([{"split": "train"}], "no 'path'"),
        ([{"path": "a.jsonl", "fraction": 0.5, "rows": 10}], "give fraction or rows, not both"),
        (["a.jsonl:1.5"], "fraction 1.5 is not in (0, 1]"),
        (["a.jsonl:0.5", "b.jsonl"], "gives a fraction for a.jsonl only: give one to every source or to none"),
    ],
)
def test_a_wrong_mixture_is_refused_naming_the_entry(entries, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_mixture(entries)


def test_fractions_make_the_largest_mixture_that_repeats_no_row():
    sources = parse_mixture(["big:0.75", "small:0.25"])
    # 100 rows at a quarter of the mixture allow 400 rows in all: 300 + 100.
    assert mixture_sizes(sources, [1000, 100], max_total=None) == [300, 100]
    assert mixture_sizes(sources, [1000, 100], max_total=200) == [150, 50]
    # Fractions are normalized, as TRL does: 3:1 is 0.75:0.25.
    assert mixture_sizes(parse_mixture(["big:0.6", "small:0.2"]), [1000, 100], max_total=None) == [300, 100]


def test_rows_take_that_many_and_a_source_without_an_amount_gives_all(caplog):
    sources = parse_mixture(["a:50", "b", "c:500"])
    with caplog.at_level(logging.WARNING, logger="hf_recipes"):
        assert mixture_sizes(sources, [100, 30, 70], max_total=None) == [50, 30, 70]
    assert "c asks for 500 rows, has 70: all used" in caplog.text
    assert mixture_sizes(sources, [100, 30, 70], max_total=75) == [25, 15, 35]


def test_the_built_in_task_and_a_user_file_blend_with_each_source_s_held_out_rows_kept_out(tmp_path, caplog):
    mine = tmp_path / "mine.jsonl"
    rows = [{"prompt": f"What is {i} + 1?", "completion": str(i + 1)} for i in range(100)]
    mine.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with caplog.at_level(logging.INFO, logger="hf_recipes"):
        train, held_out = load_mixture(
            [{"path": "stdlib-function-name", "fraction": 0.8}, {"path": str(mine), "fraction": 0.2}],
            load_chat_splits,
            max_train=None,
            max_eval=20,
            validation_percent=10,
            seed=0,
        )
    prompts = [conversation["messages"][-2]["content"] for conversation in train]
    from_file = [prompt for prompt in prompts if prompt.startswith("What is")]
    assert len(from_file) == 90  # 100 rows, 10% held out: all 90 in, as 20% of 450
    assert len(train) == 450
    # Shuffled together, not one source after the other.
    assert any(prompt.startswith("What is") for prompt in prompts[:45])
    held_out_prompts = {conversation["messages"][-2]["content"] for conversation in held_out}
    assert len(held_out) == 20 and not held_out_prompts & set(prompts)
    assert f"{mine} (split train): 90 of 90 rows = 20.0% of the mixture; 10 held out" in caplog.text
    assert "stdlib-function-name (split train): 360 of" in caplog.text


def test_sft_takes_a_mixture_from_a_recipe_and_from_the_command_line(tmp_path):
    recipe = tmp_path / "sft.yaml"
    recipe.write_text("dataset_mixture:\n  - path: stdlib-function-name\n    rows: 500\n  - path: mine.jsonl\n")
    data_args, _, _ = parse_stage("sft", ["--config", str(recipe), "--output_dir", str(tmp_path / "out")])
    assert parse_mixture(data_args.dataset_mixture) == [
        MixtureSource("stdlib-function-name", rows=500),
        MixtureSource("mine.jsonl"),
    ]
    flags = ["--output_dir", str(tmp_path / "out"), "--dataset_mixture", "stdlib-function-name:0.7", "mine.jsonl:0.3"]
    data_args, _, _ = parse_stage("sft", flags)
    assert data_args.dataset_mixture == ["stdlib-function-name:0.7", "mine.jsonl:0.3"]
    with pytest.raises(RecipeError, match="gives a fraction for stdlib-function-name only"):
        parse_stage("sft", [*flags[:3], "stdlib-function-name:0.7", "mine.jsonl"])


def test_exact_match_is_the_headline_only_when_every_source_is_the_built_in_task():
    def data(mixture):
        return SimpleNamespace(eval_metric="auto", dataset_name="stdlib-function-name", dataset_mixture=mixture)

    assert measures_exact_match(data(None))
    assert measures_exact_match(data(["stdlib-function-name:100"]))
    assert not measures_exact_match(data(["stdlib-function-name:0.5", "mine.jsonl:0.5"]))
