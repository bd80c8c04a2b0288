"""`hf-recipes <stage>`: the installed entry point runs the same stage code, and finds the recipes shipped with it."""

import subprocess
import sys
from pathlib import Path

import pytest

from hf_recipes import cli
from tests.conftest import REPO_ROOT


def test_help_lists_the_stages_and_the_shipped_recipes(capsys):
    with pytest.raises(SystemExit) as exit_code:
        cli.main(["--help"])
    assert exit_code.value.code == 0
    out = capsys.readouterr().out
    assert "pretrain,sft,dpo,reward,grpo,quantize,gguf,evaluate,generate,push" in out
    assert "gpt2-tiny/pretrain.yaml" in out and "gpt2/sft_lora.yaml" in out and "accelerate" not in out


def test_an_unknown_stage_is_one_line_with_a_suggestion(capsys):
    with pytest.raises(SystemExit) as exit_code:
        cli.main(["pretrian"])
    assert exit_code.value.code == 2
    assert capsys.readouterr().err.startswith("error: unknown stage 'pretrian' (did you mean 'pretrain'?)")


def test_a_shipped_recipe_is_found_by_its_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no recipes/ here
    argv = cli.with_shipped_config(["--config", "gpt2-tiny/sft.yaml", "--max_steps", "3"])
    assert Path(argv[1]).read_text() == (REPO_ROOT / "recipes/gpt2-tiny/sft.yaml").read_text()
    assert argv[2:] == ["--max_steps", "3"]
    (tmp_path / "mine.yaml").write_text("max_steps: 1\n")
    assert cli.with_shipped_config(["--config", "mine.yaml"]) == ["--config", "mine.yaml"]  # a file here wins


def test_the_entry_point_runs_the_stage_and_its_one_line_errors(tmp_path):
    command = [sys.executable, "-m", "hf_recipes.cli", "pretrain", "--config", "gpt2-tiny/pretrain.yaml",
               "--learnig_rate", "1e-3"]  # fmt: skip
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: unknown option '--learnig_rate' (did you mean 'learning_rate'?)"
    )
    script = Path(sys.executable).parent / "hf-recipes"
    assert script.is_file(), "pyproject.toml's [project.scripts] installs hf-recipes"
