"""The arguments of the stages that train nothing: 4-bit export, the evaluation report, chat, push."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field


@dataclass
class ExportArguments:
    """An export (4-bit, GGUF): the model folder it starts from, and what the export is checked on after reloading
    it (held-out text and function-name answers)."""

    model_name_or_path: str = field(
        default="outputs/gpt2-tiny/dpo",
        metadata={"help": "Model folder to export: a full model, or a LoRA adapter folder (merged into its base)."},
    )
    block_size: int = field(default=256, metadata={"help": "Tokens per held-out perplexity block."})
    eval_blocks: int = field(default=32, metadata={"help": "Held-out validation text blocks for perplexity."})
    max_eval_examples: int = field(
        default=64, metadata={"help": "Held-out function-name conversations for exact match."}
    )
    max_new_tokens: int = field(default=16, metadata={"help": "Generation budget per held-out answer."})
    eval_batch_size: int = field(default=8, metadata={"help": "Blocks or prompts per forward pass when verifying."})
    seed: int = field(default=0, metadata={"help": "Random seed."})


@dataclass
class QuantizeArguments(ExportArguments):
    output_dir: str = field(default="outputs/gpt2-tiny/quantized-nf4", metadata={"help": "Where the export goes."})
    quant_type: typing.Literal["nf4", "fp4"] = field(
        default="nf4", metadata={"help": "4-bit data type: nf4 (suits normally distributed weights) or fp4."}
    )
    double_quant: bool = field(
        default=True, metadata={"help": "Quantize the per-block scales too (about 0.4 bits per weight saved)."}
    )
    compute_dtype: typing.Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto", metadata={"help": "dtype the 4-bit matmuls compute in; auto: float32 on CPU, bfloat16 on GPU."}
    )
    max_perplexity_ratio: float = field(
        default=1.10,
        metadata={"help": "Fail, marking the export NOT_VERIFIED, when 4-bit / full perplexity exceeds this."},
    )


@dataclass
class GGUFExportArguments(ExportArguments):
    """Writes GPT-2 architecture models only."""

    output_dir: str = field(default="outputs/gpt2-tiny/gguf", metadata={"help": "Where the GGUF files go."})
    gguf_types: list[str] = field(
        default_factory=lambda: ["f16", "q8_0"],
        metadata={"help": "One file per type: f16 (half precision) and/or q8_0 (8-bit blocks of 32)."},
    )
    max_perplexity_ratio: float = field(
        default=1.01, metadata={"help": "Fail when a reloaded file's perplexity exceeds the source's by this ratio."}
    )
    max_exact_match_drop: float = field(
        default=0.01, metadata={"help": "Fail when a reloaded file's exact match is lower than the source's by more."}
    )


@dataclass
class EvaluateArguments:
    outputs_dir: str = field(
        default="outputs/gpt2-tiny", metadata={"help": "The preset's outputs folder, holding one folder per stage."}
    )
    stages: list[str] = field(
        default_factory=lambda: ["pretrain", "sft", "dpo", "grpo", "quantized-nf4"],
        metadata={"help": "Stage folders to evaluate, in pipeline order; missing ones are skipped."},
    )
    max_eval_examples: int = field(default=600, metadata={"help": "Held-out function-name conversations."})
    max_length: int = field(
        default=384, metadata={"help": "Leave out conversations longer than this many tokens (as SFT does)."}
    )
    max_new_tokens: int = field(default=24, metadata={"help": "Generation budget per held-out answer."})
    block_size: int = field(default=256, metadata={"help": "Tokens per held-out perplexity block."})
    eval_blocks: int = field(default=256, metadata={"help": "Held-out text blocks for perplexity."})
    batch_size: int = field(default=32, metadata={"help": "Blocks or prompts per forward pass."})
    force: bool = field(default=False, metadata={"help": "Measure every stage again, even unchanged ones."})


@dataclass
class GenerateArguments:
    model_name_or_path: str = field(metadata={"help": "Model folder: any stage's output (full, merged or 4-bit)."})
    prompt: str | None = field(default=None, metadata={"help": "Answer this one message and exit (else: chat)."})
    system: str | None = field(default=None, metadata={"help": "System message placed before the conversation."})


@dataclass
class SamplingArguments:
    temperature: float = field(default=0.7, metadata={"help": "Softmax temperature; 0 means greedy decoding."})
    top_k: int = field(default=50, metadata={"help": "Sample among the k most likely tokens (0: no limit)."})
    top_p: float = field(default=0.9, metadata={"help": "Sample among the smallest set of tokens with this mass."})
    repetition_penalty: float = field(default=1.1, metadata={"help": "Divide logits of seen tokens by this (1: off)."})
    max_new_tokens: int = field(default=64, metadata={"help": "Most tokens generated per reply."})
    do_sample: bool = field(default=True, metadata={"help": "Sample (true) or decode greedily (false)."})
    seed: int | None = field(default=0, metadata={"help": "Seed set before each reply, so sampling repeats."})


@dataclass
class PushArguments:
    model_name_or_path: str = field(
        metadata={"help": "Model folder to publish: any stage's output (full, merged, adapter, 4-bit)."}
    )
    repo_id: str = field(metadata={"help": "Hub repository to create or update: user/name or org/name."})
    private: bool = field(default=False, metadata={"help": "Create the repository private (refuses a public one)."})
    include_checkpoints: bool = field(
        default=False, metadata={"help": "Also upload checkpoint-*/ (their safetensors and JSON; never pickles)."}
    )
    commit_message: str | None = field(default=None, metadata={"help": "Commit title (default names the stage)."})
    license: str = field(default="mit", metadata={"help": "License id written in the model card (Hub license ids)."})
    base_model: str | None = field(
        default=None,
        metadata={"help": "Hub id of the model this one came from, when the recipe started from a local folder."},
    )
    allow_not_verified: bool = field(
        default=False, metadata={"help": "Publish a 4-bit export that failed verification (the card says so)."}
    )
