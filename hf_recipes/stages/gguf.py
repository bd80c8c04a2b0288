"""Export a GPT-2 stage folder as GGUF (llama.cpp's format): one file per type (f16, q8_0), each read back with
transformers (`gguf_file=`) and compared to the source on held-out data.

    python recipes/export_gguf.py --config recipes/gpt2-tiny/gguf.yaml [--key value ...]

A file whose perplexity exceeds `max_perplexity_ratio` times the source's, or whose exact match falls more than
`max_exact_match_drop` below it, fails the command and leaves NOT_VERIFIED.txt in the folder. The source tokenizer
scores both sides, so the check is of the weights; how many held-out prompts the file's own tokenizer (the one
llama.cpp builds) splits the same way is measured and printed beside it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from hf_recipes import gguf_export
from hf_recipes.evaluation import chat_task_metrics, perplexity, render_prompt
from hf_recipes.lifecycle import run_export
from hf_recipes.quantization import export_tokenizer, full_precision_folder, held_out_checks, load_full_precision
from hf_recipes.run_folder import clear_verdict, model_folder_kind, record_verdict, write_run_config
from hf_recipes.runtime import RecipeError

logger = logging.getLogger("hf_recipes")


def export_gguf(args, inputs: dict[str, str]) -> None:
    """Write each GGUF type of the source model, read it back and fail past the limits."""

    # Everything a user can get wrong is checked before a model loads.
    gguf_export.require_gguf()
    known = gguf_export.GGUF_TYPES
    if not args.gguf_types or any(gguf_type not in known for gguf_type in args.gguf_types):
        raise RecipeError(f"gguf_types is {args.gguf_types}: choose one or more of {', '.join(known)}")
    kind = model_folder_kind(args.model_name_or_path)
    tokenizer = export_tokenizer(args.model_name_or_path)
    text_blocks, conversations = held_out_checks(tokenizer, args.block_size, args.eval_blocks, args.max_eval_examples)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    clear_verdict(output)

    with full_precision_folder(args.model_name_or_path) as source:
        model = load_full_precision(source, dtype=torch.float32)
    name = Path(args.model_name_or_path).resolve().name
    generation = {"batch_size": args.eval_batch_size}

    def scores(scored_model) -> dict[str, float]:
        task = chat_task_metrics(scored_model, tokenizer, conversations, args.max_new_tokens, **generation)
        return {
            "perplexity": perplexity(scored_model, text_blocks, args.eval_batch_size)["perplexity"],
            "exact_match": task["exact_match"],
            "stop_rate": task["stop_rate"],
        }

    logger.info(
        "Held out: %d blocks of %d tokens, %d conversations; scoring the source %s",
        len(text_blocks),
        args.block_size,
        len(conversations),
        args.model_name_or_path,
    )
    source_scores = scores(model)
    metrics: dict[str, float | int | str | bool] = {f"{key}_source": value for key, value in source_scores.items()}
    problems = []
    for gguf_type in args.gguf_types:
        path = gguf_export.write_gguf(model, tokenizer, output / f"{name}-{gguf_type}.gguf", gguf_type, name=name)
        logger.info("Wrote %s (%.2f MB); reading it back with transformers", path, path.stat().st_size / 1e6)
        reloaded = gguf_export.load_gguf_model(path)
        file_scores = scores(reloaded)
        ratio = file_scores["perplexity"] / source_scores["perplexity"]
        drop = source_scores["exact_match"] - file_scores["exact_match"]
        metrics |= {f"{key}_{gguf_type}": value for key, value in file_scores.items()}
        metrics |= {f"perplexity_ratio_{gguf_type}": ratio, f"size_bytes_{gguf_type}": path.stat().st_size}
        logger.info(
            "%s: perplexity %.3f -> %.3f (ratio %.4f), exact match %.3f -> %.3f, stop rate %.3f",
            path.name,
            source_scores["perplexity"],
            file_scores["perplexity"],
            ratio,
            source_scores["exact_match"],
            file_scores["exact_match"],
            file_scores["stop_rate"],
        )
        if not (math.isfinite(ratio) and ratio <= args.max_perplexity_ratio):
            problems.append(f"{path.name}: perplexity ratio {ratio:.4f} exceeds {args.max_perplexity_ratio}")
        if drop > args.max_exact_match_drop:
            problems.append(f"{path.name}: exact match fell {drop:.3f} (more than {args.max_exact_match_drop})")

    # What llama.cpp will read: the last file with its own tokenizer, rebuilt from its vocabulary, merges and split
    # rule, on the same prompts.
    own_tokenizer = gguf_export.load_gguf_tokenizer(path)
    prompts = [render_prompt(tokenizer, conversation)[0] for conversation in conversations]
    own = chat_task_metrics(reloaded, own_tokenizer, conversations, args.max_new_tokens, **generation)
    metrics["same_tokens_share"] = gguf_export.same_tokens_share(tokenizer, own_tokenizer, prompts)
    metrics["exact_match_own_tokenizer"] = own["exact_match"]
    if metrics["same_tokens_share"] < 1.0:
        logger.warning(
            "%s's own tokenizer (llama.cpp's %r split rule) splits %.1f%% of the held-out prompts like the source "
            "tokenizer, whose own split rule GGUF cannot carry; with it, exact match is %.3f",
            path.name,
            gguf_export.PRE_TOKENIZER,
            100 * metrics["same_tokens_share"],
            own["exact_match"],
        )

    write_run_config(output, args, source_kind=kind)
    record_verdict(output, metrics, problems, export="GGUF export")
    write_run_config(output, args, source_kind=kind, complete=True, inputs=inputs)
    logger.info("Verified %s: %s", output, ", ".join(f"{name}-{t}.gguf" for t in args.gguf_types))


def main(argv: list[str]) -> None:
    run_export("gguf", argv, export_gguf)
