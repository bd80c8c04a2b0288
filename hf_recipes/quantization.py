"""4-bit export with bitsandbytes, verified by reloading it and comparing it to full precision on held-out data."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import BitsAndBytesConfig, PreTrainedModel, PreTrainedTokenizerBase

from hf_recipes.evaluation import chat_task_metrics, perplexity
from hf_recipes.run_folder import clear_verdict, folder_size_bytes, model_folder_kind, record_verdict
from hf_recipes.runtime import RecipeError

logger = logging.getLogger("hf_recipes")

COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def require_bitsandbytes() -> None:
    """Refuse early, before any model loads, when the 4-bit backend is missing."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise RecipeError(f"4-bit export needs bitsandbytes ({error}): pip install bitsandbytes") from error


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def adapter_base(folder: Path | str) -> str:
    """The base model an adapter folder was trained on (adapter_config.json's base_model_name_or_path)."""
    config = json.loads((Path(folder) / "adapter_config.json").read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise RecipeError(f"{folder}/adapter_config.json names no base_model_name_or_path to merge the adapter into")
    return base


def load_full_precision(
    folder: Path | str, dtype: torch.dtype | str | None = None, device: str = "cpu"
) -> PreTrainedModel:
    """The model in `folder`; an adapter-only folder is loaded onto its base and merged with peft."""
    from hf_recipes.modeling import load_model

    if model_folder_kind(folder) == "model":
        return load_model(str(folder), dtype=dtype, device_map=device)
    from peft import PeftModel

    base = load_model(adapter_base(folder), dtype=dtype, device_map=device)
    logger.info("Merging the LoRA adapter in %s into its base %s", folder, adapter_base(folder))
    return PeftModel.from_pretrained(base, str(folder)).merge_and_unload()


def export_tokenizer(folder: Path | str) -> PreTrainedTokenizerBase:
    """The tokenizer of a model folder to export; for an adapter folder without one, its base model's."""
    from hf_recipes.tokenization import load_tokenizer

    # An adapter folder from a LoRA run usually carries the tokenizer (with its chat template).
    try:
        return load_tokenizer(folder)
    except RecipeError:
        if model_folder_kind(folder) != "adapter":
            raise
        return load_tokenizer(adapter_base(folder))


def held_out_checks(
    tokenizer: PreTrainedTokenizerBase, block_size: int, eval_blocks: int, max_examples: int
) -> tuple[list[list[int]], list[dict[str, Any]]]:
    """What an export is checked on, never seen in training (the stdlib split is by module path): validation text
    blocks for perplexity and validation function-name conversations for exact match."""
    from hf_recipes.data.stdlib import function_name_conversations, validation_token_blocks

    text_blocks = validation_token_blocks(tokenizer, block_size, eval_blocks)
    if not text_blocks:
        raise RecipeError(f"no validation block of {block_size} tokens for the perplexity check")
    return text_blocks, function_name_conversations(split="validation", limit=max_examples)


@contextlib.contextmanager
def full_precision_folder(folder: Path | str, device: str = "cpu") -> Iterator[Path]:
    """A folder with full weights: `folder` itself, or (for an adapter) a temporary folder holding the merge."""
    if model_folder_kind(folder) == "model":
        yield Path(folder)
        return
    with tempfile.TemporaryDirectory(prefix="merged-") as merged:
        load_full_precision(folder, device=device).save_pretrained(merged)
        yield Path(merged)


def compute_dtype(name: str, device: str) -> torch.dtype:
    """'auto' is float32 on CPU (bfloat16 matmuls there are slow) and bfloat16 on a GPU."""
    if name == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    if name not in COMPUTE_DTYPES:
        raise RecipeError(f"compute_dtype is {name!r}; choose one of auto, {', '.join(COMPUTE_DTYPES)}")
    return COMPUTE_DTYPES[name]


def bnb_config(quant_type: str = "nf4", double_quant: bool = True, dtype: torch.dtype = torch.float32):
    """4-bit weights for every Linear/Conv1D; the tied embedding and lm_head stay in full precision."""
    if quant_type not in ("nf4", "fp4"):
        raise RecipeError(f"quant_type is {quant_type!r}; choose nf4 or fp4")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=dtype,
    )


def export_4bit(
    source_folder: Path | str,
    output_dir: Path | str,
    tokenizer: PreTrainedTokenizerBase,
    quantization_config: BitsAndBytesConfig,
    device: str = "cpu",
) -> Path:
    """Quantize the full model in `source_folder` while loading it, and save it with tokenizer and eos/pad ids."""
    from hf_recipes.modeling import load_model

    require_bitsandbytes()
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    clear_verdict(output)
    model = load_model(str(source_folder), quantization_config=quantization_config, device_map=device)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    if not tokenizer.chat_template:
        logger.warning("The tokenizer has no chat template: %s cannot be used for chat", output)
    return output


def linear4bit_count(model: torch.nn.Module) -> int:
    import bitsandbytes as bnb

    return sum(isinstance(module, bnb.nn.Linear4bit) for module in model.modules())


def verify_export(
    full_model: PreTrainedModel,
    quantized_folder: Path | str,
    tokenizer: PreTrainedTokenizerBase,
    text_blocks: Sequence[Sequence[int]] | Any,
    conversations: Sequence[dict[str, Any]],
    max_new_tokens: int = 16,
    batch_size: int = 8,
    max_perplexity_ratio: float = 1.10,
    size_bytes_full: int | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Reload the export from disk and compare it to `full_model` on held-out data; write metrics.json.

    Perplexity on `text_blocks` (equal-length token id lists) and greedy exact match on `conversations`. When the
    4-bit perplexity exceeds `max_perplexity_ratio` times the full one, the folder gets NOT_VERIFIED.txt,
    metrics say verified=false, and a RecipeError names the ratio and the limit.
    """
    from hf_recipes.modeling import load_model

    folder = Path(quantized_folder)
    quantized = load_model(str(folder), device_map=str(full_model.device))
    metrics: dict[str, Any] = {"linear4bit_layers": linear4bit_count(quantized)}
    full = perplexity(full_model, text_blocks, batch_size)
    low = perplexity(quantized, text_blocks, batch_size)
    ratio = low["perplexity"] / full["perplexity"]
    metrics |= {"perplexity_full": full["perplexity"], "perplexity_4bit": low["perplexity"], "perplexity_ratio": ratio}
    metrics["eval_blocks"] = len(text_blocks)
    if conversations:
        generation = {"batch_size": batch_size, "show_progress": show_progress}
        full_task = chat_task_metrics(full_model, tokenizer, conversations, max_new_tokens, **generation)
        low_task = chat_task_metrics(quantized, tokenizer, conversations, max_new_tokens, **generation)
        metrics |= {
            "exact_match_full": full_task["exact_match"],
            "exact_match_4bit": low_task["exact_match"],
            "stop_rate_full": full_task["stop_rate"],
            "stop_rate_4bit": low_task["stop_rate"],
            "eval_examples": low_task["eval_examples"],
            "eval_skipped_too_long": low_task["eval_skipped_too_long"],
        }
    if size_bytes_full is not None:
        metrics["size_bytes_full"] = size_bytes_full
    metrics["size_bytes_4bit"] = folder_size_bytes(folder)

    problems = []
    if not metrics["linear4bit_layers"]:
        problems.append("the reloaded export has no 4-bit (Linear4bit) layers")
    if not (math.isfinite(ratio) and ratio <= max_perplexity_ratio):
        problems.append(
            f"perplexity ratio {ratio:.4f} (4-bit {low['perplexity']:.3f} / full {full['perplexity']:.3f}) "
            f"exceeds the limit max_perplexity_ratio={max_perplexity_ratio}"
        )
    record_verdict(folder, metrics, problems, export="4-bit export")
    return metrics | {"verified": True}
