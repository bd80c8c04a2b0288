"""The evaluation report: every stage of a preset measured on the same held-out data, as Markdown, JSON and plots."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hf_recipes.evaluation import answer_length_order

logger = logging.getLogger("hf_recipes")

# The stages in pipeline order, by output folder name.
STAGES = ("pretrain", "sft", "dpo", "grpo", "quantized-nf4")


@dataclass
class StageResult:
    stage: str
    folder: str
    perplexity: float
    exact_match: float
    stop_rate: float
    eval_examples: int
    size_bytes: int
    train_seconds: float | None
    fingerprint: str  # identifies the weights measured, so an unchanged stage is not measured twice
    perplexity_ratio: float | None = None  # 4-bit only: against the full-precision model it came from
    exact_match_delta: float | None = None
    # {"1": {"exact_match": .., "examples": ..}, .., "5+": ..}: see evaluation.exact_match_by_answer_length
    exact_match_by_answer_tokens: dict[str, dict[str, float]] | None = None
    resumed_from_step: int | None = None  # train_seconds then timed only the steps after it


def present_stages(outputs_dir: Path, stages: list[str]) -> list[tuple[str, Path]]:
    """The stages whose folder holds a model, in pipeline order."""
    return [(stage, outputs_dir / stage) for stage in stages if (outputs_dir / stage / "config.json").is_file()]


def previous_results(report_json: Path, settings: dict[str, Any]) -> dict[str, StageResult]:
    """Results of the last report, by stage, when it measured with these same settings (else none).

    A stage's numbers are reused when its weights did not change; numbers measured on other data (another
    max_eval_examples, block_size, ...) are not this report's.
    """
    if not report_json.is_file():
        return {}
    try:
        previous = json.loads(report_json.read_text())
        if previous.get("settings") != settings:
            return {}
        return {row["stage"]: StageResult(**row) for row in previous["stages"]}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


def add_ratios(results: list[StageResult], source_of: dict[str, str]) -> None:
    """For each 4-bit stage, its perplexity ratio and exact-match change against the stage it was quantized from."""
    by_stage = {result.stage: result for result in results}
    for result in results:
        source = by_stage.get(source_of.get(result.stage, ""))
        if source is not None:
            result.perplexity_ratio = result.perplexity / source.perplexity
            result.exact_match_delta = result.exact_match - source.exact_match


def _time_taken(result: StageResult) -> str:
    if result.train_seconds is None:
        return "-"
    minutes = f"{result.train_seconds / 60:.1f} min"
    return f"{minutes} after step {result.resumed_from_step:,}" if result.resumed_from_step else minutes


def markdown_table(results: list[StageResult]) -> str:
    """The table printed at the end of `make all` and written to report.md."""
    lines = [
        "| stage | perplexity | exact match | stop rate | size on disk | time taken | 4-bit vs full precision |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        ratio = (
            f"perplexity x{r.perplexity_ratio:.3f}, exact match {r.exact_match_delta:+.3f}"
            if r.perplexity_ratio is not None
            else ""
        )
        lines.append(
            f"| {r.stage} | {r.perplexity:.2f} | {r.exact_match:.3f} | {r.stop_rate:.3f} | "
            f"{r.size_bytes / 1e6:.1f} MB | {_time_taken(r)} | {ratio} |"
        )
    return "\n".join(lines)


def answer_length_table(results: list[StageResult]) -> str:
    """Exact match of each stage by the answer's length in tokens, with how many held-out answers have each length.

    Empty when no stage has the breakdown (a report.json written before it existed).
    """
    measured = [r for r in results if r.exact_match_by_answer_tokens]
    if not measured:
        return ""
    # Every stage answers the same held-out set, so a length's count is the same wherever it appears.
    examples = {b: int(v["examples"]) for r in reversed(measured) for b, v in r.exact_match_by_answer_tokens.items()}
    buckets = sorted(examples, key=answer_length_order)
    counts = [str(examples[b]) for b in buckets]
    lines = [
        f"| answer length (tokens) | {' | '.join(buckets)} |",
        f"| --- |{' ---: |' * len(buckets)}",
        f"| held-out answers | {' | '.join(counts)} |",
    ]
    for r in measured:
        by_length = r.exact_match_by_answer_tokens
        cells = [f"{by_length[b]['exact_match']:.3f}" if b in by_length else "-" for b in buckets]
        lines.append(f"| {r.stage} | {' | '.join(cells)} |")
    return "\n".join(lines)


def by_length_section(results: list[StageResult]) -> list[str]:
    table = answer_length_table(results)
    if not table:
        return []
    return ["Exact match by the length of the right answer in tokens (the name, copied from the code):", "", table, ""]


def write_report(outputs_dir: Path, results: list[StageResult], settings: dict[str, Any]) -> Path:
    """report.md, report.json and plots/ in the preset's outputs folder."""
    (outputs_dir / "report.json").write_text(
        json.dumps({"settings": settings, "stages": [asdict(r) for r in results]}, indent=2) + "\n"
    )
    plots = plot_report(outputs_dir, results)
    held_out = results[0].eval_examples if results else 0
    text = [
        f"# Evaluation report: {outputs_dir.name}",
        "",
        f"Every stage measured on the same held-out data: perplexity on {settings['eval_blocks']} blocks of "
        f"{settings['block_size']} tokens from standard-library modules never trained on, and exact match / stop "
        f"rate of greedy answers on {held_out} held-out function-name conversations "
        f"(at most {settings['max_new_tokens']} new tokens).",
        "",
        markdown_table(results),
        "",
        "- perplexity: exp of the mean next-token loss on held-out source code (lower is better).",
        "- exact match: share of answers equal to the function's name; stop rate: share that ended with eos.",
        "- time taken: the stage's own training time from its metrics.json (evaluation excluded); for a run resumed "
        "from a checkpoint, the time after that step.",
        "",
        *by_length_section(results),
        *[f"![{p.stem}](plots/{p.name})" for p in plots],
        "",
    ]
    path = outputs_dir / "report.md"
    path.write_text("\n".join(text))
    return path


def plot_report(outputs_dir: Path, results: list[StageResult]) -> list[Path]:
    """plots/exact_match.png (a bar per stage) and plots/loss_curves.png (every stage's training loss)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    folder = outputs_dir / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.bar([r.stage for r in results], [r.exact_match for r in results], color="tab:blue")
    axis.set_ylim(0, 1)
    axis.set_ylabel("exact match (held-out)")
    for index, r in enumerate(results):
        axis.text(index, r.exact_match + 0.02, f"{r.exact_match:.2f}", ha="center")
    figure.tight_layout()
    figure.savefig(folder / "exact_match.png", dpi=120)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(7, 4))
    plotted = False
    for r in results:
        history = _log_history(Path(r.folder))
        points = [(e["step"], e["loss"]) for e in history if "loss" in e and "step" in e]
        if points:
            axis.plot(*zip(*points, strict=True), label=f"{r.stage} train loss")
            plotted = True
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss")
    if plotted:
        axis.legend()
    figure.tight_layout()
    figure.savefig(folder / "loss_curves.png", dpi=120)
    plt.close(figure)
    return [folder / "exact_match.png", folder / "loss_curves.png"]


def _log_history(folder: Path) -> list[dict]:
    """The newest checkpoint's trainer log (the final folder keeps no trainer_state.json of its own)."""
    states = sorted(folder.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    return json.loads(states[-1].read_text()).get("log_history", []) if states else []
