"""The argument dataclasses we own, and the parser that turns a recipe YAML plus `--key value` flags into them.

Each stage parses one tuple of dataclasses. We reuse TRL's `ScriptArguments`, `ModelConfig`, `SFTConfig` and
`DPOConfig` and the `transformers` `TrainingArguments`, adding only the fields they lack.
"""

from __future__ import annotations

import argparse
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainingArguments
from transformers.trainer_utils import IntervalStrategy
from trl import DPOConfig, ModelConfig, ScriptArguments, SFTConfig, TrlParser

from hf_recipes.precision import AutoPrecisionMixin
from hf_recipes.runtime import RecipeError, did_you_mean

BF16_HELP = (
    "bf16 autocast. Unset: on where the device runs bf16 natively (a GPU, a CPU with AVX512-BF16 or AMX), fp32 "
    "elsewhere (bf16 emulated on an AVX2 CPU runs ~350x slower). true/false: as said, whatever the machine."
)


# TrainingArguments fields the Trainer leaves to the script, which our stages do their own way: refused, not ignored.
REFUSED_TRAINING_FIELDS = {
    "resume_from_checkpoint": "a run resumes from the last complete checkpoint in its output_dir by itself "
    "(copy a checkpoint there to resume from it)",
    "enable_jit_checkpoint": "SIGTERM already saves a checkpoint and exits 143 in every stage",
}


@dataclass
class RecipeTrainingArguments(AutoPrecisionMixin):
    """What every stage's training arguments add: `bf16` left unset is decided by the machine (hf_recipes.precision)
    before TrainingArguments checks it, and fields our stages would silently ignore are refused."""

    bf16: bool | None = field(default=None, metadata={"help": BF16_HELP})

    def __post_init__(self):
        for name, why in REFUSED_TRAINING_FIELDS.items():
            if getattr(self, name, None):
                raise ValueError(f"'{name}' is not used by hf-recipes: {why}")
        super().__post_init__()


# ---------------------------------------------------------------------------------------------------------------
# Pretraining
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class DataArguments(ScriptArguments):
    dataset_name: str | None = field(
        default="stdlib",
        metadata={
            "help": "'stdlib' (the running Python's standard library source), a local file or folder "
            "(.txt/.jsonl/.json/.csv/.parquet), or a Hub dataset id."
        },
    )
    dataset_revision: str | None = field(default=None, metadata={"help": "Hub dataset revision (branch, tag, sha)."})
    dataset_test_split: str | None = field(
        default=None,
        metadata={"help": "Split to validate on. None: hold out `validation_percent` of documents by a path hash."},
    )
    text_column: str = field(default="text", metadata={"help": "Column that holds the raw text."})
    validation_percent: float = field(
        default=5.0, metadata={"help": "Percent of documents held out for validation when there is no test split."}
    )
    max_documents: int | None = field(
        default=None, metadata={"help": "Use at most this many training documents (for quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on at most this many validation blocks (evaluation is not free)."}
    )
    copy_block_share: float = field(
        default=0.0,
        metadata={
            "help": "Share of training blocks rewritten as short spans of their own text, each read twice "
            "(a a b b ...): the repeats can only be predicted by copying, which the chat task needs. 0: off."
        },
    )
    copy_span_tokens: list[int] = field(
        default_factory=lambda: [16, 64], metadata={"help": "Shortest and longest repeated span, in tokens."}
    )


@dataclass
class PretrainModelArguments(ModelConfig):
    preset: str = field(
        default="gpt2-tiny",
        metadata={"help": "GPT-2 shape preset: gpt2-tiny, gpt2, gpt2-medium, gpt2-large, gpt2-xl."},
    )
    n_layer: int | None = field(default=None, metadata={"help": "Transformer blocks (overrides the preset)."})
    n_head: int | None = field(default=None, metadata={"help": "Attention heads (overrides the preset)."})
    n_embd: int | None = field(default=None, metadata={"help": "Hidden size (overrides the preset)."})
    n_positions: int | None = field(default=None, metadata={"help": "Context length (overrides the preset)."})
    dropout: float | None = field(
        default=None, metadata={"help": "Residual, embedding and attention dropout (overrides the preset)."}
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Tokenizer to reuse (Hub id or folder). None: the model's own, or a new byte-level BPE "
            "trained on the training split when the model is built from scratch."
        },
    )
    tokenizer_vocab_size: int = field(
        default=8192, metadata={"help": "Vocabulary size of a newly trained tokenizer (before padding to 64)."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run code from the model's repository. Off unless a recipe turns it on."}
    )
    chat_template: str = field(
        default="llama2",
        metadata={"help": "Chat template saved with the tokenizer: a name in templates/ (llama2, chatml) or a path."},
    )


@dataclass
class PretrainConfig(RecipeTrainingArguments, TrainingArguments):
    block_size: int = field(default=256, metadata={"help": "Tokens per training sequence (packed, no padding)."})
    # Defaults that differ from TrainingArguments: why is in each help.
    logging_nan_inf_filter: bool = field(
        default=False, metadata={"help": "Keep False: True logs a NaN loss as 0.0 and the run 'succeeds'."}
    )
    report_to: None | str | list[str] = field(  # noqa: RUF036 (TRL's parser needs None first here)
        default="tensorboard", metadata={"help": "Where to log: tensorboard (in <output_dir>/runs), none, ..."}
    )
    eval_strategy: IntervalStrategy | str = field(
        default="steps", metadata={"help": "When to evaluate: steps, epoch or no."}
    )
    save_total_limit: int | None = field(
        default=2, metadata={"help": "Checkpoints kept (the best by eval loss is always one of them)."}
    )
    load_best_model_at_end: bool = field(
        default=True, metadata={"help": "Save the checkpoint with the lowest eval loss as the final model."}
    )
    metric_for_best_model: str | None = field(default="eval_loss", metadata={"help": "Metric that picks the best."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start over in an output folder that holds another run's checkpoints (default: resume)."},
    )


PRETRAIN_ARGUMENTS = (DataArguments, PretrainModelArguments, PretrainConfig)

# ---------------------------------------------------------------------------------------------------------------
# Supervised fine-tuning
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ChatDataArguments(ScriptArguments):
    dataset_name: str | None = field(
        default="stdlib-function-name",
        metadata={
            "help": "'stdlib-function-name' (built-in task), a local .jsonl/.json/.parquet file or folder, or a Hub "
            "dataset id; rows in messages, prompt/completion, alpaca or sharegpt shape."
        },
    )
    dataset_revision: str | None = field(default=None, metadata={"help": "Hub dataset revision (branch, tag, sha)."})
    dataset_test_split: str | None = field(
        default="validation",
        metadata={"help": "Held-out split (built-in and Hub data). Local files hold out `validation_percent`."},
    )
    validation_percent: float = field(
        default=5.0, metadata={"help": "Percent held out: stdlib modules, or rows of a local file without a split."}
    )
    max_train_examples: int | None = field(default=None, metadata={"help": "Train on at most this many examples."})
    renamed_function_share: float = field(
        default=0.0,
        metadata={
            "help": "Built-in task only: this share of the training functions get a made-up name (in the code and "
            "the answer), so the name must be copied from the code, not recalled from pretraining."
        },
    )
    max_eval_examples: int | None = field(
        default=600, metadata={"help": "Held-out conversations for eval loss, exact match and stop rate."}
    )
    chat_template: str | None = field(
        default=None,
        metadata={"help": "Template name (llama2, chatml) or .jinja path. None: the model's own, else llama2."},
    )
    eval_max_new_tokens: int = field(
        default=24, metadata={"help": "Generation budget per answer for exact match / stop rate."}
    )
    eval_before_training: bool = field(
        default=True, metadata={"help": "Also measure exact match and stop rate of the model before this stage."}
    )


@dataclass
class SFTRecipeConfig(RecipeTrainingArguments, SFTConfig):
    # Defaults that differ from TRL's: why is in each help.
    assistant_only_loss: bool = field(
        default=True, metadata={"help": "Train on assistant tokens (answers and their eos) only."}
    )
    # TRL sets the deprecated gradient_checkpointing to True (~20% slower, and small models don't need it), which
    # also warns on every run; unset, activation_checkpointing decides and defaults to off.
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of activation_checkpointing (off unless a recipe says)."}
    )
    logging_nan_inf_filter: bool = field(
        default=False, metadata={"help": "Keep False: True logs a NaN loss as 0.0 and the run 'succeeds'."}
    )
    report_to: None | str | list[str] = field(  # noqa: RUF036 (TRL's parser needs None first here)
        default="tensorboard", metadata={"help": "Where to log: tensorboard (in <output_dir>/runs), none, ..."}
    )
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start over in an output folder that holds another run's checkpoints (default: resume)."},
    )


SFT_ARGUMENTS = (ChatDataArguments, ModelConfig, SFTRecipeConfig)


# ---------------------------------------------------------------------------------------------------------------
# Evaluation report
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class EvaluateArguments:
    outputs_dir: str = field(
        default="outputs/gpt2-tiny", metadata={"help": "The preset's outputs folder, holding one folder per stage."}
    )
    stages: list[str] = field(
        default_factory=lambda: ["pretrain", "sft", "dpo", "quantized-nf4"],
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


# Which dataclass tuple parses each stage's recipes (a recipe file is named <stage>[_variant].yaml).
STAGE_ARGUMENTS: dict[str, tuple[type, ...]] = {"pretrain": PRETRAIN_ARGUMENTS, "sft": SFT_ARGUMENTS}


# ---------------------------------------------------------------------------------------------------------------
# Preference tuning (DPO)
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class PreferenceDataArguments(ScriptArguments):
    dataset_name: str | None = field(
        default="stdlib-function-name",
        metadata={
            "help": "'stdlib-function-name' (built-in pairs: the right function name over another name from the "
            "same code), a local .jsonl/.json/.parquet file or folder, or a Hub dataset id; rows have prompt, "
            "chosen and rejected (strings or messages)."
        },
    )
    dataset_revision: str | None = field(default=None, metadata={"help": "Hub dataset revision (branch, tag, sha)."})
    dataset_test_split: str | None = field(
        default="validation",
        metadata={"help": "Held-out split (built-in and Hub data). Local files hold out `validation_percent`."},
    )
    validation_percent: float = field(
        default=5.0, metadata={"help": "Percent held out: stdlib modules, or rows of a local file."}
    )
    max_train_examples: int | None = field(default=None, metadata={"help": "Train on at most this many pairs."})
    max_eval_examples: int | None = field(
        default=200, metadata={"help": "Held-out pairs for reward accuracy/margin, exact match and stop rate."}
    )
    eval_max_new_tokens: int = field(
        default=24, metadata={"help": "Generation budget per answer for exact match / stop rate."}
    )
    eval_before_training: bool = field(
        default=True, metadata={"help": "Also measure exact match and stop rate of the SFT model before DPO."}
    )


@dataclass
class PreferenceModelArguments(ModelConfig):
    use_peft: bool = field(
        default=True,
        metadata={"help": "LoRA (the adapter-disabled model is the reference, no second copy); false: full model."},
    )
    ref_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Reference model folder or Hub id. None: the starting model itself (LoRA: adapter disabled; "
            "full: a second copy loaded from model_name_or_path)."
        },
    )


@dataclass
class DPORecipeConfig(RecipeTrainingArguments, DPOConfig):
    # Defaults that differ from TRL's: why is in each help.
    check_reference: bool = field(
        default=True,
        metadata={
            "help": "Stop unless the first batch's loss is ln 2 (sigmoid loss), i.e. the reference is the starting "
            "policy. Turn off only for a deliberately different reference."
        },
    )
    # TRL sets the deprecated gradient_checkpointing to True (~20% slower, and small models don't need it), which
    # also warns on every run; unset, activation_checkpointing decides and defaults to off.
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of activation_checkpointing (off unless a recipe says)."}
    )
    logging_nan_inf_filter: bool = field(
        default=False, metadata={"help": "Keep False: True logs a NaN loss as 0.0 and the run 'succeeds'."}
    )
    report_to: None | str | list[str] = field(  # noqa: RUF036 (TRL's parser needs None first here)
        default="tensorboard", metadata={"help": "Where to log: tensorboard (in <output_dir>/runs), none, ..."}
    )
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start over in an output folder that holds another run's checkpoints (default: resume)."},
    )


DPO_ARGUMENTS = (PreferenceDataArguments, PreferenceModelArguments, DPORecipeConfig)
STAGE_ARGUMENTS["dpo"] = DPO_ARGUMENTS


# ---------------------------------------------------------------------------------------------------------------
# Quantize (4-bit export, verified) and generate (sampling from any stage's folder)
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class QuantizeArguments:
    model_name_or_path: str = field(
        default="outputs/gpt2-tiny/dpo",
        metadata={"help": "Model folder to export: a full model, or a LoRA adapter folder (merged into its base)."},
    )
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
    block_size: int = field(default=256, metadata={"help": "Tokens per held-out perplexity block."})
    eval_blocks: int = field(default=32, metadata={"help": "Held-out validation text blocks for perplexity."})
    eval_examples: int = field(default=64, metadata={"help": "Held-out function-name conversations for exact match."})
    max_new_tokens: int = field(default=16, metadata={"help": "Generation budget per held-out answer."})
    eval_batch_size: int = field(default=8, metadata={"help": "Blocks or prompts per forward pass when verifying."})
    seed: int = field(default=0, metadata={"help": "Random seed."})


@dataclass
class GenerateArguments:
    model: str = field(metadata={"help": "Model folder: any stage's output (full, merged or 4-bit)."})
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


STAGE_ARGUMENTS["quantize"] = (QuantizeArguments,)
STAGE_ARGUMENTS["generate"] = (GenerateArguments, SamplingArguments)
STAGE_ARGUMENTS["evaluate"] = (EvaluateArguments,)


# ---------------------------------------------------------------------------------------------------------------
# Push (a stage's folder to the Hub, with its model card)
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class PushArguments:
    model: str = field(
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


STAGE_ARGUMENTS["push"] = (PushArguments,)


# ---------------------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------------------


EXTENDS_KEY = "extends"  # a recipe's field naming the recipe it varies


class RecipeParser(TrlParser):
    """`TrlParser` whose mistakes are `RecipeError`s naming the key and the closest valid one.

    Abbreviated flags are refused (`--learning_rat` must not silently mean `--learning_rate`), YAML values are
    checked against the field's type and choices (argparse checks neither for defaults), and unknown keys in the
    YAML or on the command line are errors. A recipe may name another that it `extends` (see `load_recipe`).
    """

    def __init__(self, dataclass_types, **kwargs):
        super().__init__(dataclass_types, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        raise RecipeError(message)

    def option_names(self) -> list[str]:
        """All `--key` names without their dashes."""
        return [opt[2:] for action in self._actions for opt in action.option_strings if opt.startswith("--")]

    def parse(self, args: list[str]) -> tuple[Any, ...]:
        """Parse `--config file.yaml` (and the recipe it extends) then `--key value` overrides into the dataclasses."""
        args = list(args)
        config_path = None
        if "--config" in args:
            index = args.index("--config")
            if index + 1 >= len(args):
                raise RecipeError("--config needs a path to a recipe YAML file")
            config_path = args[index + 1]
            del args[index : index + 2]
            config = self.load_recipe(config_path)
            for key, value in config.pop("env", {}).items():
                os.environ[key] = str(value)
            self.set_defaults_with_config(**config)
        unknown_flags = [arg for arg in args if arg.startswith("--") and arg[2:].split("=")[0] not in self.valid_keys]
        for flag in unknown_flags:
            name = flag[2:].split("=")[0]
            raise RecipeError(f"unknown option '--{name}'{did_you_mean(name, self.option_names())}")
        try:
            return self.parse_args_into_dataclasses(args)
        except ValueError as error:  # raised by dataclass __post_init__ checks (e.g. TrainingArguments)
            raise RecipeError(f"{config_path or 'command line'}: {error}") from error

    @property
    def valid_keys(self) -> set[str]:
        return {*self.option_names(), "config"}

    def load_recipe(self, config_path: str, extended_by: tuple[str, ...] = ()) -> dict[str, Any]:
        """The recipe's checked fields, on top of those of the recipe it `extends` (a path relative to it), if any.

        `extends` keeps a variant (say `pretrain_long.yaml`: the same model and data, a longer schedule) in step with
        the recipe it varies instead of a copy that drifts from it.
        """
        path = Path(config_path)
        if not path.is_file():
            where = f" (extended by {extended_by[-1]})" if extended_by else ""
            raise RecipeError(f"recipe file not found: {config_path}{where}")
        if str(path.resolve()) in extended_by:
            loop = " -> ".join((*extended_by, str(path.resolve())))
            raise RecipeError(f"{config_path}: recipes extend each other in a loop: {loop}")
        try:
            config = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise RecipeError(f"{config_path}: not valid YAML: {error}".replace("\n", " ")) from error
        if not isinstance(config, dict):
            raise RecipeError(f"{config_path}: a recipe must be a YAML mapping of field: value")
        base = config.pop(EXTENDS_KEY, None)
        self._check_fields(config_path, config)
        if base is None:
            return config
        if not isinstance(base, str):
            raise RecipeError(f"{config_path}: '{EXTENDS_KEY}' must be the path of another recipe, not {base!r}")
        inherited = self.load_recipe(str(path.parent / base), (*extended_by, str(path.resolve())))
        env = {**inherited.pop("env", {}), **config.pop("env", {})}
        return {**inherited, **config, **({"env": env} if env else {})}

    def _check_fields(self, config_path: str, config: dict[str, Any]) -> None:
        actions = {action.dest: action for action in self._actions}
        hints = {name: hint for dtype in self.dataclass_types for name, hint in typing.get_type_hints(dtype).items()}
        for key, value in config.items():
            if key == "env":
                if not isinstance(value, dict):
                    raise RecipeError(f"{config_path}: 'env' must be a mapping of variable: value")
                continue
            if key not in actions:
                raise RecipeError(f"{config_path}: unknown key '{key}'{did_you_mean(key, [*actions, EXTENDS_KEY])}")
            check_value(actions[key], hints.get(key, Any), value, where=f"{config_path}: '{key}'")


def check_value(action: argparse.Action, hint: Any, value: Any, where: str) -> None:
    """Refuse a YAML value that argparse would accept blindly because it arrives as a default."""
    if value is None:
        return
    if action.choices is not None and str(value) not in map(str, action.choices):
        raise RecipeError(f"{where} is {value!r}; choose one of {', '.join(map(str, action.choices))}")
    allowed = {arg for arg in typing.get_args(hint) or (hint,) if arg is not type(None)}
    is_list = any(typing.get_origin(arg) is list for arg in allowed)
    if isinstance(value, list) and is_list:
        allowed = {arg for union in allowed for arg in typing.get_args(union) or (union,)}
        values = value
    else:
        values = [value]
    for item in values:
        if isinstance(item, str) and str not in allowed and action.type is not None:
            try:
                action.type(item)
            except (TypeError, ValueError, argparse.ArgumentTypeError) as error:
                raise RecipeError(f"{where} is {item!r}, which is not {_describe(allowed)}") from error
        elif not isinstance(item, str) and not _fits(item, allowed):
            raise RecipeError(f"{where} is {item!r}, which is not {_describe(allowed)}")


def _fits(value: Any, allowed: set[Any]) -> bool:
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int) and (int in allowed or float in allowed):
        return True
    if isinstance(value, float) and float in allowed:
        return True
    # Containers and types we do not model (dicts for *_kwargs, enums, ...) are left to the dataclass itself.
    return not allowed & {int, float, bool} or (allowed - {int, float, bool, str}) != set()


def _describe(allowed: set[Any]) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return " or ".join(sorted(names.get(arg, getattr(arg, "__name__", str(arg))) for arg in allowed))


def parse_stage(stage: str, args: list[str]) -> tuple[Any, ...]:
    """Parse a stage's `--config file.yaml --key value ...` into its dataclass tuple."""
    return RecipeParser(STAGE_ARGUMENTS[stage]).parse(args)


def stage_of_recipe(path: Path | str) -> str:
    """`recipes/gpt2-tiny/sft_lora.yaml` -> `sft`."""
    return Path(path).stem.split("_")[0]


__all__ = [
    "PRETRAIN_ARGUMENTS",
    "STAGE_ARGUMENTS",
    "DataArguments",
    "PretrainConfig",
    "PretrainModelArguments",
    "RecipeParser",
    "parse_stage",
    "stage_of_recipe",
]
