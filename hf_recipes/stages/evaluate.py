"""Evaluate every stage of a preset on the same held-out data and write report.md, report.json and plots.

    python recipes/eval.py --config recipes/gpt2-tiny/evaluate.yaml [--key value ...]

A stage whose weights did not change since the last report is not measured again (unless --force true).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from transformers import set_seed

from hf_recipes import report, runtime
from hf_recipes.chat import tokenize_for_training
from hf_recipes.config import parse_stage
from hf_recipes.data.stdlib import function_name_conversations, validation_token_blocks
from hf_recipes.evaluation import chat_task_metrics, perplexity
from hf_recipes.modeling import load_model
from hf_recipes.run_folder import folder_size_bytes, read_run_config, training_time, weights_fingerprint
from hf_recipes.runtime import RecipeError, logger
from hf_recipes.tokenization import load_tokenizer


def quantized_from(folder: Path) -> str | None:
    """The stage a 4-bit export was made from (its recipe's model_name_or_path), by folder name."""
    source = read_run_config(folder).get("config", {}).get("QuantizeArguments", {}).get("model_name_or_path")
    return Path(source).name if source else None


def measure(stage: str, folder: Path, args) -> report.StageResult:
    """Perplexity, exact match, stop rate and size of one stage folder."""
    logger.info("Evaluating %s (%s)", stage, folder)
    tokenizer = load_tokenizer(str(folder))
    model = load_model(str(folder))
    blocks = validation_token_blocks(tokenizer, args.block_size, args.eval_blocks)
    conversations = function_name_conversations("validation", limit=args.max_eval_examples)
    _, held_out = tokenize_for_training(tokenizer, conversations, args.max_length, "held-out")
    scores = chat_task_metrics(model, tokenizer, held_out, args.max_new_tokens, batch_size=args.batch_size)
    return report.StageResult(
        stage=stage,
        folder=str(folder),
        perplexity=perplexity(model, blocks, args.batch_size)["perplexity"],
        exact_match=scores["exact_match"],
        stop_rate=scores["stop_rate"],
        eval_examples=scores["eval_examples"],
        size_bytes=folder_size_bytes(folder),
        **training_time(folder),
        fingerprint=weights_fingerprint(folder),
        exact_match_by_answer_tokens=scores["exact_match_by_answer_tokens"],
    )


def main(argv: list[str]) -> None:
    (args,) = parse_stage("evaluate", argv)
    runtime.setup_logging()
    set_seed(0)
    outputs_dir = Path(args.outputs_dir)
    unknown = [stage for stage in args.stages if stage not in report.STAGES]
    if unknown:
        raise RecipeError(f"unknown stage(s) {', '.join(unknown)}; stages are {', '.join(report.STAGES)}")
    stages = report.present_stages(outputs_dir, args.stages)
    if not stages:
        raise RecipeError(f"{outputs_dir} holds no stage folder ({', '.join(args.stages)}); run a stage first")

    settings = {
        key: getattr(args, key)
        for key in ("max_eval_examples", "max_length", "max_new_tokens", "block_size", "eval_blocks")
    }
    previous = {} if args.force else report.previous_results(outputs_dir / "report.json", settings)
    results = []
    for stage, folder in stages:
        cached = previous.get(stage)
        if cached and cached.fingerprint == weights_fingerprint(folder):
            logger.info("%s: unchanged since the last report, reusing its numbers", stage)
            results.append(dataclasses.replace(cached, **training_time(folder)))
        else:
            results.append(measure(stage, folder, args))
    report.add_ratios(
        results, {stage: quantized_from(folder) or "dpo" for stage, folder in stages if "quantized" in stage}
    )
    path = report.write_report(outputs_dir, results, settings)
    print(f"\n{report.markdown_table(results)}\n")
    by_length = report.answer_length_table(results)
    if by_length:
        print(f"Exact match by answer length in tokens:\n\n{by_length}\n")
    print(f"Report: {path} (plots in {outputs_dir / 'plots'})")
    final = stages[-1][1]
    print(f"Chat with the final model: make chat MODEL={final} (or hf-recipes generate --model_name_or_path {final})")
