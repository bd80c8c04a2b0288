"""Recipes parse (so they cannot rot) and config mistakes are one-line errors that name the key."""

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from hf_recipes.config import STAGE_ARGUMENTS, RecipeParser, parse_stage, stage_of_recipe
from hf_recipes.runtime import RecipeError

REPO_ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted(p for p in (REPO_ROOT / "recipes").rglob("*.yaml") if p.parent.name != "accelerate")


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(REPO_ROOT / "recipes")))
def test_every_recipe_parses_with_its_stage_parser(recipe):
    stage = stage_of_recipe(recipe)
    assert stage in STAGE_ARGUMENTS, f"{recipe.name}: no parser for stage '{stage}'"
    # GPU recipes (bf16, tf32) are checked here on CPU: TrainingArguments refuses bf16/tf32 without a GPU, so
    # those two are overridden; every other key and value is parsed and validated as written.
    gpu_only = ["--use_cpu", "true", "--tf32", "false"] if "bf16: true" in recipe.read_text() else []
    parsed = RecipeParser(STAGE_ARGUMENTS[stage]).parse(["--config", str(recipe), *gpu_only])
    assert len(parsed) == len(STAGE_ARGUMENTS[stage])


def test_recipes_exist_for_the_default_preset():
    assert (REPO_ROOT / "recipes/gpt2-tiny/pretrain.yaml").is_file()


def test_cli_flag_overrides_yaml(tmp_path):
    recipe = tmp_path / "pretrain.yaml"
    recipe.write_text("n_layer: 2\nlearning_rate: 1e-3\noutput_dir: out\n")
    _data, model, training = parse_stage("pretrain", ["--config", str(recipe), "--n_layer", "3"])
    assert model.n_layer == 3
    assert training.learning_rate == pytest.approx(1e-3)  # YAML's '1e-3' is a string; it still becomes a float


def test_a_recipe_extends_another_and_overrides_its_fields(tmp_path, monkeypatch):
    (tmp_path / "base").mkdir()
    (tmp_path / "base/pretrain.yaml").write_text(
        "n_layer: 2\nmax_steps: 600\nlearning_rate: 2e-3\noutput_dir: short\nenv: {A_VAR: base, B_VAR: base}\n"
    )
    (tmp_path / "pretrain_long.yaml").write_text(
        "extends: base/pretrain.yaml\nmax_steps: 8000\noutput_dir: long\nenv: {B_VAR: long}\n"
    )
    monkeypatch.delenv("A_VAR", raising=False)
    monkeypatch.delenv("B_VAR", raising=False)
    _data, model, training = parse_stage("pretrain", ["--config", str(tmp_path / "pretrain_long.yaml")])
    assert (model.n_layer, training.learning_rate) == (2, pytest.approx(2e-3))  # inherited
    assert (training.max_steps, training.output_dir) == (8000, "long")  # overridden
    assert (os.environ["A_VAR"], os.environ["B_VAR"]) == ("base", "long")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"a.yaml": "extends: missing.yaml\n"},
            "recipe file not found: {tmp}/missing.yaml (extended by {tmp}/a.yaml)",
        ),
        ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"}, "recipes extend each other in a loop"),
        ({"a.yaml": "extends: b.yaml\n", "b.yaml": "n_layerz: 2\n"}, "b.yaml: unknown key 'n_layerz'"),
        ({"a.yaml": "extends: [b.yaml]\n"}, "a.yaml: 'extends' must be the path of another recipe"),
        ({"a.yaml": "extend: b.yaml\n"}, "unknown key 'extend' (did you mean 'extends'?)"),
    ],
)
def test_extends_mistakes_name_the_file(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(RecipeError) as error:
        parse_stage("pretrain", ["--config", str(tmp_path / "a.yaml")])
    assert message.format(tmp=tmp_path) in str(error.value)


def write_recipe(tmp_path, content: dict) -> str:
    path = tmp_path / "pretrain.yaml"
    path.write_text(yaml.safe_dump(content))
    return str(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"learnig_rate": 1e-3}, "unknown key 'learnig_rate' (did you mean 'learning_rate'?)"),
        ({"n_layers": 2}, "unknown key 'n_layers' (did you mean 'n_layer'?)"),
        ({"n_layer": "two"}, "'n_layer' is 'two', which is not an integer"),
        ({"n_layer": [2]}, "'n_layer' is [2], which is not an integer"),
        ({"learning_rate": "fast"}, "'learning_rate' is 'fast', which is not a number"),
        ({"use_peft": "maybe"}, "'use_peft' is 'maybe', which is not true or false"),
        ({"eval_strategy": "sometimes"}, "'eval_strategy' is 'sometimes'; choose one of no, steps, epoch"),
    ],
)
def test_recipe_mistakes_name_the_key(tmp_path, content, message):
    with pytest.raises(RecipeError) as error:
        parse_stage("pretrain", ["--config", write_recipe(tmp_path, content)])
    assert message in str(error.value)
    assert "pretrain.yaml" in str(error.value)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--learning_rat", "1e-3"], "unknown option '--learning_rat' (did you mean 'learning_rate'?)"),
        (["--max_step=3"], "unknown option '--max_step' (did you mean 'max_steps'?)"),
        (["--n_layer", "x"], "invalid int value: 'x'"),
        (["--config", "missing.yaml"], "recipe file not found: missing.yaml"),
    ],
)
def test_command_line_mistakes(argv, message):
    with pytest.raises(RecipeError, match=None) as error:
        parse_stage("pretrain", argv)
    assert message in str(error.value)


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "pretrain.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(RecipeError, match="must be a YAML mapping"):
        parse_stage("pretrain", ["--config", str(path)])


@pytest.mark.parametrize("stage", ["pretrain"])
def test_script_exits_2_with_one_line_naming_the_key(tmp_path, stage):
    bad = tmp_path / f"{stage}.yaml"
    bad.write_text("output_dir: out\nlearnig_rate: 0.001\n")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "recipes" / f"{stage}.py"), "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error_lines == [f"error: {bad}: unknown key 'learnig_rate' (did you mean 'learning_rate'?)"]
    assert "Traceback" not in result.stderr


def test_debug_flag_shows_the_traceback(tmp_path):
    bad = tmp_path / "pretrain.yaml"
    bad.write_text("learnig_rate: 0.001\n")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "recipes/pretrain.py"), "--config", str(bad), "--debug"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "RecipeError" in result.stderr


PIPELINE_VARIANTS = sorted(
    (p.parent.name, p.stem.split("_", 1)[1]) for p in (REPO_ROOT / "recipes").glob("*/pretrain_*.yaml")
)


@pytest.mark.parametrize(("preset", "variant"), PIPELINE_VARIANTS)
def test_make_all_with_a_variant_chains_its_own_stage_folders(preset, variant):
    """`make all VARIANT=x` reads every stage's x recipe, and each stage reads the folder the one before it wrote
    (a variant that fell back on the default pipeline's folders would mix two pipelines' models)."""
    dry_run = subprocess.run(
        ["make", "-n", "--no-print-directory", "all", f"PRESET={preset}", f"VARIANT={variant}"],
        capture_output=True, text=True, cwd=REPO_ROOT, check=True,
    )  # fmt: skip
    configs = [line.split("--config ")[1].split()[0] for line in dry_run.stdout.splitlines() if "--config " in line]
    expected_stages = ["pretrain", "sft", "dpo", "quantize", "evaluate"]
    assert [Path(config).stem for config in configs] == [f"{stage}_{variant}" for stage in expected_stages]
    parsed = {
        stage: {
            k: v for group in parse_stage(stage, ["--config", str(REPO_ROOT / config)]) for k, v in vars(group).items()
        }
        for stage, config in zip(expected_stages, configs, strict=True)
    }
    assert parsed["sft"]["model_name_or_path"] == parsed["pretrain"]["output_dir"]
    assert parsed["dpo"]["model_name_or_path"] == parsed["sft"]["output_dir"]
    assert parsed["quantize"]["model_name_or_path"] == parsed["dpo"]["output_dir"]
    outputs_dir = parsed["evaluate"]["outputs_dir"]
    evaluated = [str(Path(outputs_dir) / stage) for stage in parsed["evaluate"]["stages"] if stage != "grpo"]
    assert evaluated == [parsed[stage]["output_dir"] for stage in ("pretrain", "sft", "dpo", "quantize")]
    default_outputs = parse_stage("evaluate", ["--config", str(REPO_ROOT / f"recipes/{preset}/evaluate.yaml")])[0]
    assert outputs_dir != default_outputs.outputs_dir


@pytest.mark.parametrize("stage", ["pretrain", "sft", "dpo"])
def test_a_recipe_parses_without_a_warning_the_user_cannot_act_on(stage):
    """TRL's gradient_checkpointing=True default warned (deprecated name) on every run, and slowed it ~20%."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        *_, training_args = parse_stage(stage, ["--config", str(REPO_ROOT / f"recipes/gpt2-tiny/{stage}.yaml")])
    assert training_args.activation_checkpointing is False and training_args.gradient_checkpointing is False
    asked = parse_stage(stage, ["--config", str(REPO_ROOT / f"recipes/gpt2-tiny/{stage}.yaml"),
                                "--activation_checkpointing", "true"])[-1]  # fmt: skip
    assert asked.gradient_checkpointing is True  # what TRL and the Trainer read


@pytest.mark.parametrize("stage", ["pretrain", "sft", "dpo"])
@pytest.mark.parametrize(
    ("flag", "value", "why"),
    [
        ("resume_from_checkpoint", "outputs/x/checkpoint-10", "resumes from the last complete checkpoint"),
        ("enable_jit_checkpoint", "true", "SIGTERM already saves a checkpoint"),
    ],
)
def test_fields_the_stages_would_ignore_are_refused(stage, flag, value, why):
    recipe = str(REPO_ROOT / f"recipes/gpt2-tiny/{stage}.yaml")
    with pytest.raises(RecipeError, match=f"{recipe}: '{flag}' is not used by hf-recipes: .*{why}"):
        parse_stage(stage, ["--config", recipe, f"--{flag}", value])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--copy_block_share", "1.5"], "copy_block_share must be in (0, 1]"),
        (["--copy_block_share", "0.5", "--copy_span_tokens", "64", "16"], "(got 0.5, [64, 16])"),
        (["--copy_block_share_fade_steps", "-1"], "copy_block_share_fade_steps must be 0 or more, got -1"),
        (["--block_size_warmup_steps", "-5"], "block_size_warmup_steps must be 0 or more, got -5"),
        (
            ["--block_size_warmup_steps", "300", "--block_size_warmup_start", "96"],
            "block_size_warmup_start must be block_size divided by a power of two (got 96 for block_size 512)",
        ),
    ],
)
def test_curriculum_settings_are_checked_with_the_recipe(extra, message):
    with pytest.raises(RecipeError, match=re.escape(message)):
        parse_stage("pretrain", ["--config", str(REPO_ROOT / "recipes/gpt2-tiny/pretrain.yaml"), *extra])


@pytest.mark.parametrize("stage", ["dpo", "reward"])
def test_wrong_names_per_function_is_checked_with_the_recipe(stage):
    recipe = str(REPO_ROOT / f"recipes/gpt2-tiny/{stage}.yaml")
    with pytest.raises(RecipeError, match=re.escape("wrong_names_per_function must be at least 1, got 0")):
        parse_stage(stage, ["--config", recipe, "--wrong_names_per_function", "0"])
    data_args, _, _ = parse_stage(stage, ["--config", recipe, "--wrong_names_per_function", "3"])
    assert data_args.wrong_names_per_function == 3
