"""Export a stage's model in 4-bit (bitsandbytes NF4/FP4) and verify the export by reloading it from disk.

    python recipes/quantize.py --config recipes/gpt2-tiny/quantize.yaml [--key value ...]

The export is compared to the full-precision model on held-out data (validation text blocks for perplexity,
validation function-name conversations for exact match). A perplexity ratio above `max_perplexity_ratio` fails
the command and leaves NOT_VERIFIED.txt in the folder.
"""

from __future__ import annotations

import logging

from hf_recipes.lifecycle import run_export
from hf_recipes.quantization import (
    bnb_config,
    compute_dtype,
    default_device,
    export_4bit,
    export_tokenizer,
    full_precision_folder,
    held_out_checks,
    load_full_precision,
    require_bitsandbytes,
    verify_export,
)
from hf_recipes.run_folder import folder_size_bytes, model_folder_kind, write_run_config

logger = logging.getLogger("hf_recipes")


def export_quantized(args, inputs: dict[str, str]) -> None:
    """Export the source model in 4-bit, reload it and fail past the limits."""

    # Everything a user can get wrong is checked before a model loads.
    require_bitsandbytes()
    kind = model_folder_kind(args.model_name_or_path)
    device = default_device()
    dtype = compute_dtype(args.compute_dtype, device)
    config = bnb_config(args.quant_type, args.double_quant, dtype)
    if args.max_perplexity_ratio < 1.0:
        logger.warning("max_perplexity_ratio=%s asks 4-bit to beat full precision", args.max_perplexity_ratio)

    tokenizer = export_tokenizer(args.model_name_or_path)
    text_blocks, conversations = held_out_checks(tokenizer, args.block_size, args.eval_blocks, args.max_eval_examples)
    logger.info(
        "Held out: %d blocks of %d tokens, %d conversations; %s, double_quant=%s, compute %s on %s",
        len(text_blocks),
        args.block_size,
        len(conversations),
        args.quant_type,
        args.double_quant,
        dtype,
        device,
    )

    # CPU matmuls in float32; on a GPU the model keeps the dtype it was saved in.
    full_dtype = "float32" if device == "cpu" else "auto"
    with full_precision_folder(args.model_name_or_path, device=device) as source:
        full_model = load_full_precision(source, dtype=full_dtype, device=device)
        size_full = folder_size_bytes(source)
        export_4bit(source, args.output_dir, tokenizer, config, device=device)
    write_run_config(args.output_dir, args, source_kind=kind, device=device)

    logger.info("Reloading %s from disk and comparing it to full precision", args.output_dir)
    metrics = verify_export(
        full_model,
        args.output_dir,
        tokenizer,
        text_blocks,
        conversations,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.eval_batch_size,
        max_perplexity_ratio=args.max_perplexity_ratio,
        size_bytes_full=size_full,
    )

    logger.info(
        "Verified %s: perplexity %.3f -> %.3f (ratio %.4f <= %s), exact match %.3f -> %.3f, stop rate %.3f, "
        "weights %.2f MB -> %.2f MB",
        args.output_dir,
        metrics["perplexity_full"],
        metrics["perplexity_4bit"],
        metrics["perplexity_ratio"],
        args.max_perplexity_ratio,
        metrics.get("exact_match_full", float("nan")),
        metrics.get("exact_match_4bit", float("nan")),
        metrics.get("stop_rate_4bit", float("nan")),
        metrics["size_bytes_full"] / 1e6,
        metrics["size_bytes_4bit"] / 1e6,
    )
    write_run_config(args.output_dir, args, source_kind=kind, device=device, complete=True, inputs=inputs)


def main(argv: list[str]) -> None:
    run_export("quantize", argv, export_quantized)
