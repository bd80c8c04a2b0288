"""bf16 only where the machine runs it natively: the detection's answers, explicit requests, and the record."""

import logging
import os
import subprocess
import sys

import pytest
import torch
import yaml

from hf_recipes import precision
from hf_recipes.config import parse_stage
from hf_recipes.run_folder import write_run_config

PRETRAIN = "recipes/gpt2-tiny/pretrain.yaml"
SFT = "recipes/gpt2-tiny/sft.yaml"
DPO = "recipes/gpt2-tiny/dpo.yaml"


@pytest.fixture
def cpu(monkeypatch):
    """Make this machine look like a CPU with or without native bf16, below the env override."""
    monkeypatch.delenv(precision.FORCE_CPU_BF16_ENV, raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")

    def pretend(capability: str, avx512_bf16: bool, amx: bool = False):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)

    return pretend


@pytest.mark.parametrize("recipe", [PRETRAIN, SFT, DPO])
def test_an_avx2_cpu_trains_the_tiny_recipes_in_fp32(cpu, recipe, repo_root):
    cpu("AVX2", avx512_bf16=False)
    stage = recipe.split("/")[-1].removesuffix(".yaml")
    *_, training_args = parse_stage(stage, ["--config", str(repo_root / recipe)])
    assert training_args.bf16 is False
    assert training_args.precision.describe() == "bf16: off, this CPU has no native bf16 (AVX2); training in fp32"


@pytest.mark.parametrize("recipe", [PRETRAIN, SFT, DPO])
def test_a_cpu_with_avx512_bf16_trains_the_tiny_recipes_in_bf16(cpu, recipe, repo_root):
    cpu("AVX512", avx512_bf16=True)
    stage = recipe.split("/")[-1].removesuffix(".yaml")
    *_, training_args = parse_stage(stage, ["--config", str(repo_root / recipe)])
    assert training_args.bf16 is True
    assert training_args.precision.describe() == (
        "bf16: on, this CPU runs bf16 natively (AVX512-BF16); training in bf16 autocast"
    )


def test_amx_counts_as_native_and_a_lowered_isa_does_not(cpu, monkeypatch):
    cpu("AVX512", avx512_bf16=False, amx=True)
    assert precision.cpu_bf16_support() == (True, "this CPU runs bf16 natively (AMX)")
    # The hardware has it, but torch was told to stay at AVX2 (how an AVX2 laptop is approximated here).
    cpu("AVX2", avx512_bf16=True)
    assert precision.cpu_bf16_support()[0] is False
    cpu("AVX512", avx512_bf16=True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert precision.cpu_bf16_support() == (False, "native bf16 turned off (AVX512, ONEDNN_MAX_CPU_ISA=AVX2)")


def test_an_explicit_bf16_wins_over_the_machine(cpu, repo_root, caplog):
    cpu("AVX512", avx512_bf16=True)
    *_, off = parse_stage("pretrain", ["--config", str(repo_root / PRETRAIN), "--bf16", "false"])
    assert off.bf16 is False
    assert off.precision.requested is False
    cpu("AVX2", avx512_bf16=False)
    with caplog.at_level(logging.WARNING, logger="hf_recipes"):
        *_, on = parse_stage("sft", ["--config", str(repo_root / SFT), "--bf16", "true"])
    assert on.bf16 is True
    assert "emulated" in caplog.text and "--bf16 false" in caplog.text


def test_no_warning_when_the_machine_decides(cpu, repo_root, caplog):
    cpu("AVX2", avx512_bf16=False)
    with caplog.at_level(logging.WARNING, logger="hf_recipes"):
        parse_stage("pretrain", ["--config", str(repo_root / PRETRAIN)])
    assert "bf16" not in caplog.text


def test_the_decision_is_written_to_run_config(cpu, repo_root, tmp_path):
    cpu("AVX2", avx512_bf16=False)
    groups = parse_stage("pretrain", ["--config", str(repo_root / PRETRAIN), "--output_dir", str(tmp_path)])
    record = yaml.safe_load(write_run_config(tmp_path, *groups).read_text())
    assert record["precision"] == {
        "bf16": False,
        "why": "bf16: off, this CPU has no native bf16 (AVX2); training in fp32",
    }
    assert record["config"]["PretrainConfig"]["bf16"] is False


def test_aten_cpu_capability_avx2_is_seen_as_no_native_bf16(repo_root):
    """The real detection, in a process told to run at AVX2 (as on an AVX2-only laptop), on any x86 CPU."""
    if precision.platform.machine().lower() not in precision.X86_MACHINES:
        pytest.skip("ATEN_CPU_CAPABILITY=avx2 is an x86 setting")
    env = {k: v for k, v in os.environ.items() if k != precision.FORCE_CPU_BF16_ENV}
    env["ATEN_CPU_CAPABILITY"] = "avx2"
    code = "from hf_recipes.precision import cpu_bf16_support; print(cpu_bf16_support()[0])"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
