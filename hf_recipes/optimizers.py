"""Muon for pretraining and full SFT: the 2-D weights of the transformer blocks step along their momentum
orthogonalized by a Newton-Schulz iteration (Jordan et al. 2024, "Muon: an optimizer for hidden layers");
embeddings, norms and biases keep AdamW. One optimizer holds both kinds of parameter group, so the Trainer's
learning-rate schedule, checkpoints and resume treat it like any other (each group's rate follows the schedule from
its own peak).
"""

from __future__ import annotations

import math

import torch
from transformers.pytorch_utils import Conv1D

# The quintic iteration's coefficients tuned for speed of convergence (Jordan et al.; torch.optim.Muon's default).
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def orthogonalized(matrix: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The nearest semi-orthogonal matrix to `matrix` (its singular values pushed to ~1), by Newton-Schulz in
    `dtype`: the iteration only needs singular values near 1, not exact ones, so bf16 is enough where it is fast."""
    a, b, c = NEWTON_SCHULZ
    x = matrix.float()
    tall = x.size(0) > x.size(1)  # iterate on the wide orientation: the Gram matrix is the smaller one
    if tall:
        x = x.T
    x = (x / (x.norm() + 1e-7)).to(dtype)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(matrix.dtype)


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon for the groups marked `use_muon` (2-D weights), AdamW for the others; Newton-Schulz runs in
    `newton_schulz_dtype`."""

    def __init__(self, groups: list[dict], newton_schulz_dtype: torch.dtype = torch.float32):
        defaults = {"lr": 1e-3, "weight_decay": 0.0, "momentum": 0.95, "betas": (0.9, 0.999), "eps": 1e-8}
        super().__init__(groups, defaults)
        self.newton_schulz_dtype = newton_schulz_dtype

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                if group["use_muon"]:
                    self._muon_step(parameter, group)
                else:
                    self._adamw_step(parameter, group)
        return loss

    def _muon_step(self, parameter: torch.Tensor, group: dict) -> None:
        state = self.state[parameter]
        if not state:
            state["momentum_buffer"] = torch.zeros_like(parameter)
        buffer = state["momentum_buffer"]
        buffer.lerp_(parameter.grad, 1 - group["momentum"])
        update = parameter.grad.lerp(buffer, group["momentum"])  # Nesterov
        # Scaled by fan-out over fan-in; GPT-2's Conv1D stores (in, out), nn.Linear (out, in).
        fan_out, fan_in = (update.size(1), update.size(0)) if group["conv1d"] else update.shape
        update = orthogonalized(update, dtype=self.newton_schulz_dtype) * math.sqrt(max(1.0, fan_out / fan_in))
        parameter.mul_(1 - group["lr"] * group["weight_decay"])
        parameter.add_(update, alpha=-group["lr"])

    def _adamw_step(self, parameter: torch.Tensor, group: dict) -> None:
        state = self.state[parameter]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(parameter)
            state["exp_avg_sq"] = torch.zeros_like(parameter)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        state["exp_avg"].lerp_(parameter.grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(parameter.grad, parameter.grad, value=1 - beta2)
        corrected_avg = state["exp_avg"] / (1 - beta1 ** state["step"])
        corrected_sq = state["exp_avg_sq"] / (1 - beta2 ** state["step"])
        parameter.mul_(1 - group["lr"] * group["weight_decay"])
        parameter.addcdiv_(corrected_avg, corrected_sq.sqrt().add_(group["eps"]), value=-group["lr"])


def muon_with_adamw(model: torch.nn.Module, muon_lr: float, args) -> MuonWithAdamW:
    """Muon at `muon_lr` for the blocks' projection weights; AdamW with the training arguments' rate, betas, epsilon
    and weight decay for the rest (no decay on biases and norms, as the Trainer's AdamW). Newton-Schulz runs in bf16
    when the run does (`args.bf16`: where the machine runs it natively, or asked for): on an AVX512-BF16 CPU 100
    steps of pretrain.yaml took 11% less training time, to the same loss (benchmarks/LEARNING.md)."""
    projections = {
        id(module.weight): isinstance(module, Conv1D)
        for name, module in model.named_modules()
        if isinstance(module, (Conv1D, torch.nn.Linear)) and module.weight.dim() == 2 and ".h." in f".{name}."
    }
    muon = {True: [], False: []}
    decayed, not_decayed = [], []
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        if id(parameter) in projections:
            muon[projections[id(parameter)]].append(parameter)
        elif parameter.dim() >= 2:
            decayed.append(parameter)
        else:
            not_decayed.append(parameter)
    adamw = {"use_muon": False, "lr": args.learning_rate, "betas": (args.adam_beta1, args.adam_beta2),
             "eps": args.adam_epsilon}  # fmt: skip
    groups = [
        {"params": params, "use_muon": True, "conv1d": conv1d, "lr": muon_lr, "weight_decay": args.weight_decay}
        for conv1d, params in muon.items()
        if params
    ]
    groups += [
        {**adamw, "params": decayed, "weight_decay": args.weight_decay},
        {**adamw, "params": not_decayed, "weight_decay": 0.0},
    ]
    newton_schulz_dtype = torch.bfloat16 if args.bf16 else torch.float32
    return MuonWithAdamW([group for group in groups if group["params"]], newton_schulz_dtype)
