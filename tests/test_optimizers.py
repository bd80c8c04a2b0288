"""Muon for pretraining: the Newton-Schulz step orthogonalizes, the parameter groups split as documented, and a run
with it trains the blocks and resumes from its checkpoint to the same losses (its state is in the checkpoint)."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from hf_recipes.optimizers import MuonWithAdamW, muon_with_adamw, orthogonalized
from hf_recipes.stages import pretrain
from tests.conftest import TINY_PRETRAIN_RUN
from tests.test_pretrain import logged_losses
from tests.tiny import tiny_model, tiny_tokenizer


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(64, 192), (256, 64)])
def test_newton_schulz_pushes_every_singular_value_near_one(shape, dtype):
    matrix = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * torch.logspace(-1, 0, shape[1])
    before = torch.linalg.svdvals(matrix)
    assert before.max() / before.min() > 6
    update = orthogonalized(matrix, dtype=dtype)
    assert update.dtype == torch.float32  # the parameter's own dtype back, whatever the iteration ran in
    singular = torch.linalg.svdvals(update)
    # Five quintic steps leave them in a band around 1 (Jordan et al.: about 0.7-1.2), whatever their spread before.
    assert singular.min() > 0.6 and singular.max() < 1.2


def adamw_arguments(bf16: bool) -> SimpleNamespace:
    return SimpleNamespace(
        learning_rate=1e-3, adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8, weight_decay=0.1, bf16=bf16
    )


def test_muon_takes_the_blocks_projections_and_adamw_the_rest():
    model = tiny_model(tiny_tokenizer())
    optimizer = muon_with_adamw(model, 0.02, adamw_arguments(bf16=False))
    assert isinstance(optimizer, MuonWithAdamW)
    assert optimizer.newton_schulz_dtype == torch.float32
    names = {id(p): n for n, p in model.named_parameters()}
    by_kind = {}
    for group in optimizer.param_groups:
        by_kind.setdefault((group["use_muon"], group["lr"], group["weight_decay"]), set()).update(
            names[id(p)] for p in group["params"]
        )
    muon = by_kind[(True, 0.02, 0.1)]
    assert muon == {f"transformer.h.{b}.{m}.weight" for b in range(2) for m in
                    ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}  # fmt: skip
    assert "transformer.wte.weight" in by_kind[(False, 1e-3, 0.1)]
    assert "transformer.ln_f.weight" in by_kind[(False, 1e-3, 0.0)]
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(list(model.parameters()))


def test_newton_schulz_runs_in_bf16_only_when_the_run_does():
    # An fp32 run is the one on a CPU that emulates bf16 (~350x slower matmuls there).
    model = tiny_model(tiny_tokenizer())
    assert muon_with_adamw(model, 0.02, adamw_arguments(bf16=True)).newton_schulz_dtype == torch.bfloat16
    assert muon_with_adamw(model, 0.02, adamw_arguments(bf16=False)).newton_schulz_dtype == torch.float32


def test_a_muon_run_resumes_from_its_checkpoint_to_the_same_losses(tmp_path):
    run = [*TINY_PRETRAIN_RUN, "--muon_learning_rate", "0.02"]
    whole = tmp_path / "whole"
    pretrain.main([*run, "--output_dir", str(whole)])
    interrupted = tmp_path / "interrupted"
    shutil.copytree(whole, interrupted)
    shutil.rmtree(interrupted / "checkpoint-4")  # as if the run died between step 2 and step 4
    for written_at_the_end in ("metrics.json", "model.safetensors"):
        (interrupted / written_at_the_end).unlink()
    pretrain.main([*run, "--output_dir", str(interrupted)])
    # Muon's momentum travels in the checkpoint: the resumed steps are the uninterrupted ones.
    assert logged_losses(interrupted / "checkpoint-4") == logged_losses(whole / "checkpoint-4")
    assert json.loads((interrupted / "metrics.json").read_text())["resumed_from_step"] == 2
    state = torch.load(whole / "checkpoint-4" / "optimizer.pt", weights_only=True)["state"]
    assert sum("momentum_buffer" in entry for entry in state.values()) == 8  # 2 blocks x 4 projections
    metrics = json.loads((whole / "metrics.json").read_text())
    assert metrics["perplexity"] < metrics["initial_perplexity"]


def test_muon_refuses_sharded_training(tmp_path):
    from hf_recipes.config.schema import PretrainConfig
    from hf_recipes.runtime import RecipeError
    from hf_recipes.trainers import PretrainTrainer

    args = PretrainConfig(
        output_dir=str(tmp_path), muon_learning_rate=0.02, eval_strategy="no", save_strategy="no", report_to="none"
    )
    trainer = PretrainTrainer(model=tiny_model(tiny_tokenizer()), args=args)
    trainer.is_fsdp_enabled = True  # as under recipes/accelerate/fsdp.yaml: each process holds a shard of a matrix
    with pytest.raises(RecipeError, match="FSDP/DeepSpeed shard them; use --muon_learning_rate 0"):
        trainer.create_optimizer()
    trainer.is_fsdp_enabled = False
    assert isinstance(trainer.create_optimizer(), MuonWithAdamW)
