"""Loss and reward curves of a run, as PNGs in its plots/ folder."""

from __future__ import annotations

import math
import os
from pathlib import Path


def plot_losses(log_history: list[dict], path: Path | str, title: str) -> Path | None:
    """Training and validation loss against step, as a PNG (None when there is nothing to plot)."""
    train = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry and "step" in entry]
    evals = [(entry["step"], entry["eval_loss"]) for entry in log_history if "eval_loss" in entry]
    if not train and not evals:
        return None
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    if train:
        axis.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        axis.plot(*zip(*evals, strict=True), marker="o", label="validation loss")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("cross-entropy (nats/token)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_dpo(log_history: list[dict], path, loss_name: str) -> None:
    """Loss and reward accuracy (train windows, held-out) against step, as a PNG."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    def series(key):
        return [(entry["step"], entry[key]) for entry in log_history if key in entry] or [(0, math.nan)]

    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(*zip(*series("loss"), strict=True), label=f"train loss ({loss_name})")
    axis.plot(*zip(*series("eval_loss"), strict=True), "o", label="held-out loss")
    axis.set(xlabel="optimizer step", ylabel="loss (nats)", title="preference tuning (DPO)")
    right = axis.twinx()
    right.plot(
        *zip(*series("rewards/accuracies"), strict=True), "--", color="tab:green", label="train reward accuracy"
    )
    right.plot(
        *zip(*series("eval_rewards/accuracies"), strict=True), "s", color="tab:green", label="held-out reward accuracy"
    )
    right.set(ylabel="reward accuracy (chosen above rejected)", ylim=(0, 1.02))
    figure.legend(loc="lower center", ncols=2, fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_rl(log_history: list[dict], path) -> None:
    """Mean reward (per reward function too) and KL to the reference against step, as a PNG."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    def series(key):
        return [(entry["step"], entry[key]) for entry in log_history if key in entry] or [(0, math.nan)]

    rewards = sorted(
        {key for entry in log_history for key in entry if key.startswith("rewards/") and key.endswith("/mean")}
    )
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(*zip(*series("reward"), strict=True), label="mean reward (sum)")
    for key in rewards:
        axis.plot(*zip(*series(key), strict=True), "--", label=key.removeprefix("rewards/").removesuffix("/mean"))
    axis.set(xlabel="optimizer step", ylabel="reward", title="reinforcement learning (GRPO)")
    right = axis.twinx()
    right.plot(*zip(*series("kl"), strict=True), ":", color="tab:red", label="KL to the reference")
    right.set(ylabel="KL (nats/token)")
    figure.legend(loc="lower center", ncols=3, fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)
