"""`make bench`'s driver end to end on smoke-test settings: every benchmark runs and RESULTS.md gets its lines."""

import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_run_all_quick_writes_one_ratio_line_per_benchmark_and_keeps_the_gpu_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    gpu = "## GPU (H200): measured twice\n\nmeasured by hand: MFU 0.31\n"
    results.write_text(f"# old results\n\n{gpu}")
    subprocess.run(
        [sys.executable, "benchmarks/run_all.py", "--quick", "--output", str(results)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    text = results.read_text()
    lines = re.findall(r"^(bench_\w+): (\d+\.\d\d) \(goal ([\d.]+)\)$", text, flags=re.MULTILINE)
    assert [name for name, _, _ in lines] == [
        "bench_pretrain",
        "bench_data",
        "bench_sft",
        "bench_activation",
        "bench_allocator",
    ]
    assert all(float(ratio) > 0 for _, ratio, _ in lines)
    goals = {name: float(goal) for name, _, goal in lines}
    assert goals == {
        "bench_pretrain": 0.95,
        "bench_data": 0.8,
        "bench_sft": 1.3,
        "bench_activation": 1.05,
        "bench_allocator": 1.1,
    }
    assert text.endswith(gpu)  # a GPU measurement is never thrown away by a CPU run


def test_a_learning_row_goes_into_the_runs_table_whatever_follows_it(tmp_path):
    from benchmarks.learning import RUNS_SECTION, add_row

    learning = tmp_path / "LEARNING.md"
    learning.write_text(
        f"# x\n\n{RUNS_SECTION}\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n\nA note.\n\n## GRPO\n\n| 9 |\n"
    )
    add_row(learning, "| 3 | 4 |")
    assert learning.read_text() == (
        f"# x\n\n{RUNS_SECTION}\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n| 3 | 4 |\n\nA note.\n\n## GRPO\n\n| 9 |\n"
    )


def test_a_learning_row_names_the_recipes_it_ran_and_the_steps_its_minutes_timed():
    # A row's command reproduces the run only if it names a non-default recipe; a resumed stage's train_seconds timed
    # only the steps after its checkpoint, so its minutes say from where.
    from benchmarks.learning import command_options, parse_args, training_minutes

    long_recipe = "recipes/gpt2-tiny/pretrain_long.yaml"
    given = ["--name", "long", "--change", "words", "--pretrain-recipe", long_recipe, "--pretrain-only"]
    args = parse_args([*given, "--", "--max_steps", "4800"])
    assert command_options(args) == [
        "--name", "long", "--pretrain-only", "--pretrain-recipe", long_recipe,
        "--", "--max_steps", "4800",
    ]  # fmt: skip
    assert command_options(parse_args(["--name", "base"])) == ["--name", "base", "--"]
    assert training_minutes({"train_seconds": 600.0}, {"train_seconds": 300.0}) == "15.0"
    resumed = {"train_seconds": 2520.0, "resumed_from_step": 3498}
    assert training_minutes(resumed, {}) == "42.0 (pretraining after step 3,498)"


def test_the_bare_pretraining_loop_steps_with_the_optimizer_the_recipe_trains_with(monkeypatch, tmp_path):
    # bench_pretrain's ratio compares our Trainer path with a bare loop: with Muon on one side and AdamW on the other
    # it would charge Newton-Schulz to the Trainer.
    import torch

    from hf_recipes.config import parse_stage
    from hf_recipes.modeling import build_model, gpt2_config
    from hf_recipes.optimizers import MuonWithAdamW

    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    from bench_pretrain import recipe_optimizer

    model = build_model(gpt2_config("gpt2-tiny", vocab_size=512, bos_token_id=1, eos_token_id=2, pad_token_id=0))
    recipe = ["--config", str(REPO_ROOT / "recipes/gpt2-tiny/pretrain.yaml"), "--output_dir", str(tmp_path)]
    _, _, muon_args = parse_stage("pretrain", recipe)
    _, _, adamw_args = parse_stage("pretrain", [*recipe, "--muon_learning_rate", "0"])

    muon = recipe_optimizer(model, muon_args)
    assert isinstance(muon, MuonWithAdamW)
    assert {group["lr"] for group in muon.param_groups if group["use_muon"]} == {muon_args.muon_learning_rate}
    adamw = recipe_optimizer(model, adamw_args)
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["lr"] == adamw_args.learning_rate


def test_a_name_is_ambiguous_when_its_tokens_occur_in_the_prompt_before_other_tokens(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    from ambiguous_names import is_ambiguous

    # `_get` `_versions` as the name; the prompt also has `_get` `_config` (another call): two places to copy from.
    get, versions, config, other = 7, 8, 9, 3
    assert is_ambiguous([other, get, versions, other, get, config], [get, versions])
    assert not is_ambiguous([other, get, versions, other, get, versions], [get, versions])  # the name used twice
    assert not is_ambiguous([other, config], [get, versions])  # nowhere else in the prompt
    assert not is_ambiguous([get, config], [versions])  # a one-token name has no next token to confuse
