"""Every stage's arguments: one tuple of dataclasses per stage (STAGE_ARGUMENTS), where each field's help lives.

We reuse TRL's `ScriptArguments`, `ModelConfig`, `SFTConfig` and `DPOConfig` and the `transformers`
`TrainingArguments`, adding only the fields they lack. One name per idea: `model_name_or_path` is a model folder or
Hub id, `eval_blocks` the held-out text blocks, `max_eval_examples` the held-out conversations or pairs.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field

from transformers import TrainingArguments
from transformers.trainer_utils import IntervalStrategy
from trl import DPOConfig, ModelConfig, ScriptArguments, SFTConfig

from hf_recipes.precision import AutoPrecisionMixin

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
    # Defaults that differ from the Trainer's or TRL's: why is in each help.
    logging_nan_inf_filter: bool = field(
        default=False, metadata={"help": "Keep False: True logs a NaN loss as 0.0 and the run 'succeeds'."}
    )
    report_to: None | str | list[str] = field(  # noqa: RUF036 (TRL's parser needs None first here)
        default="tensorboard", metadata={"help": "Where to log: tensorboard (in <output_dir>/runs), none, ..."}
    )
    # TRL sets the deprecated gradient_checkpointing to True (~20% slower, and small models don't need it), which
    # also warns on every run; unset, activation_checkpointing decides and defaults to off.
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of activation_checkpointing (off unless a recipe says)."}
    )
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start over in an output folder that holds another run's checkpoints (default: resume)."},
    )

    def __post_init__(self):
        for name, why in REFUSED_TRAINING_FIELDS.items():
            if getattr(self, name, None):
                raise ValueError(f"'{name}' is not used by hf-recipes: {why}")
        super().__post_init__()


@dataclass
class MuonArguments:
    """The optimizer choice of the stages that train whole weight matrices (pretraining, SFT)."""

    muon_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Train the transformer blocks' 2-D weights with Muon at this rate (0.02 is Muon's usual), the "
            "rest with AdamW at learning_rate (hf_recipes/optimizers.py). None or 0: AdamW for every weight. "
            "Not with FSDP or DeepSpeed (they shard the matrices Muon orthogonalizes)."
        },
    )


@dataclass
class CircuitHoldArguments:
    """Holding the induction circuit `attention_init: induction` plants (hf_recipes/circuits.py), in the stages that
    train whole weight matrices (pretraining, SFT)."""

    hold_induction_circuit_steps: int = field(
        default=0,
        metadata={
            "help": "Write the planted circuit's weights (head 0's attention maps in layers 0 and 1 and the position "
            "code they read) back after each of the first N optimizer steps, -1 for every step, so the rest of the "
            "model learns around a circuit that copies; 0 leaves them free. Pretraining: a new model with "
            "attention_init induction. SFT: the values the model comes with (a pretraining that held them kept them)."
        },
    )
    hold_induction_copy_maps: bool = field(
        default=True,
        metadata={
            "help": "With hold_induction_circuit_steps: hold the induction head's value and output maps too. False "
            "holds only where it looks (its query and key, and the previous-token head), so what it writes trains "
            "with the token embeddings it copies (benchmarks/LEARNING.md, 'Why rare tokens are not copied')."
        },
    )


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
    eval_blocks: int | None = field(
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
    copy_block_share_fade_steps: int = field(
        default=0,
        metadata={
            "help": "Fade copy_block_share linearly to 0 by this optimizer step (copy-heavy first, natural text "
            "after). 0: the same share for the whole run."
        },
    )

    def __post_init__(self):  # ScriptArguments has none to call
        if self.copy_block_share_fade_steps < 0:
            raise ValueError(f"copy_block_share_fade_steps must be 0 or more, got {self.copy_block_share_fade_steps}")
        if not self.copy_block_share:
            return
        spans = self.copy_span_tokens
        if not 0 < self.copy_block_share <= 1 or len(spans) != 2 or not 2 <= spans[0] <= spans[1]:
            raise ValueError(
                "copy_block_share must be in (0, 1] and copy_span_tokens [shortest, longest] with 2 <= shortest "
                f"<= longest (got {self.copy_block_share}, {spans})"
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
    position_embedding_init: typing.Literal["normal", "sinusoidal"] = field(
        default="normal",
        metadata={
            "help": "How a model built from scratch starts its learned position embeddings: normal (GPT-2's "
            "N(0, 0.02)) or sinusoidal (the Transformer's sin/cos table at the same per-coordinate std; still "
            "learned, still GPT-2). Ignored when continuing from model_name_or_path."
        },
    )
    attention_init: typing.Literal["normal", "induction"] = field(
        default="normal",
        metadata={
            "help": "How a model built from scratch starts its attention: normal (GPT-2's init) or induction (head 0 "
            "of layers 0 and 1 set by hand to a previous-token head and an induction head, so the model copies from "
            "step 0; it lays out its own positions: hf_recipes/circuits.py). Ignored when continuing from "
            "model_name_or_path."
        },
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
class PretrainConfig(MuonArguments, CircuitHoldArguments, RecipeTrainingArguments, TrainingArguments):
    block_size: int = field(default=256, metadata={"help": "Tokens per training sequence (packed, no padding)."})
    block_size_warmup_steps: int = field(
        default=0,
        metadata={
            "help": "Sequence-length warm-up: train shorter sequences (each block cut into pieces, the same tokens "
            "per step) growing from block_size_warmup_start to block_size by this step. 0: off."
        },
    )
    block_size_warmup_start: int = field(
        default=64, metadata={"help": "The warm-up's first sequence length: block_size divided by a power of two."}
    )
    # Defaults that differ from TrainingArguments: why is in each help.
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

    def __post_init__(self):
        if self.block_size_warmup_steps < 0:
            raise ValueError(f"block_size_warmup_steps must be 0 or more, got {self.block_size_warmup_steps}")
        start, size = self.block_size_warmup_start, self.block_size
        if self.block_size_warmup_steps and not (
            0 < start <= size and size % start == 0 and (size // start).bit_count() == 1
        ):
            raise ValueError(
                f"block_size_warmup_start must be block_size divided by a power of two (got {start} for block_size "
                f"{size})"
            )
        super().__post_init__()


PRETRAIN_ARGUMENTS = (DataArguments, PretrainModelArguments, PretrainConfig)

# ---------------------------------------------------------------------------------------------------------------
# Supervised fine-tuning
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class HeldOutChatData(ScriptArguments):
    """The data fields SFT and DPO share: where the rows come from, what is held out, how answers are measured."""

    dataset_name: str | None = field(
        default="stdlib-function-name",
        metadata={
            "help": "'stdlib-function-name' (the built-in task), a local .jsonl/.json/.parquet file or folder, or a "
            "Hub dataset id. SFT: rows in messages, prompt/completion, alpaca or sharegpt shape. DPO: rows with "
            "prompt, chosen and rejected (strings or messages); built in: the right name over another from the code."
        },
    )
    dataset_mixture: list[str] | None = field(
        default=None,
        metadata={
            "help": "Several sources blended into one training set, in place of dataset_name: SOURCE[:AMOUNT] each "
            "(AMOUNT a fraction of the mixture, 0.25, or a number of rows, 2000), or in a recipe TRL's mapping "
            "{path, name, revision, split, test_split, fraction | rows}. See hf_recipes/data/mixture.py."
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
    max_train_examples: int | None = field(
        default=None, metadata={"help": "Train on at most this many conversations (SFT) or pairs (DPO)."}
    )
    max_eval_examples: int | None = field(
        default=600, metadata={"help": "Held-out conversations or pairs for eval loss, exact match and stop rate."}
    )
    eval_max_new_tokens: int = field(
        default=24, metadata={"help": "Generation budget per answer for exact match / stop rate."}
    )
    eval_before_training: bool = field(
        default=True, metadata={"help": "Also measure exact match and stop rate of the model before this stage."}
    )
    eval_metric: typing.Literal["auto", "exact_match", "loss"] = field(
        default="auto",
        metadata={
            "help": "Headline of held-out answers: exact_match (short answers; the built-in task's default) or loss "
            "(answer loss and perplexity, for open-ended chat data; auto's choice for other data). Stop rate always."
        },
    )

    def __post_init__(self):  # ScriptArguments has none to call
        if self.dataset_mixture:
            from hf_recipes.data.mixture import parse_mixture

            parse_mixture(self.dataset_mixture)  # a mistake in an entry is a one-line error before anything loads


@dataclass
class BuiltinTrainingFunctions:
    """How the built-in task shows its training functions (held-out functions stay whole, with their real names)."""

    renamed_function_share: float = field(
        default=0.0,
        metadata={
            "help": "Built-in task only: this share of the training functions get a made-up name (in the code and "
            "the answer), so the name must be copied from the code, not recalled from pretraining."
        },
    )
    renamed_function_pieces: typing.Literal["words", "vocabulary"] = field(
        default="words",
        metadata={
            "help": "Built-in task only: what made-up names are made of: words of the function names (snake case), "
            "or identifier-like pieces of the tokenizer's vocabulary in snake, concatenated and camel case, so SFT "
            "copies rare tokens too."
        },
    )
    renamed_function_kept_words_share: float = field(
        default=0.0,
        metadata={
            "help": "Built-in task, renamed_function_pieces: vocabulary: this share of the made-up names of functions "
            "named in several words keep the first words and get new last ones (`_get_versions` -> `_get_tension`), "
            "so SFT copies names whose first words the code also uses elsewhere, as many held-out names do."
        },
    )
    training_code_lines: int | None = field(
        default=None,
        metadata={
            "help": "Built-in task only: training functions cut to their first lines (the def line first), so a "
            "CPU-second trains more of them; held-out functions stay whole. None: whole functions."
        },
    )


@dataclass
class ChatDataArguments(HeldOutChatData, BuiltinTrainingFunctions):
    chat_template: str | None = field(
        default=None,
        metadata={"help": "Template name (llama2, chatml) or .jinja path. None: the model's own, else llama2."},
    )


@dataclass
class SFTRecipeConfig(MuonArguments, CircuitHoldArguments, RecipeTrainingArguments, SFTConfig):
    # Defaults that differ from TRL's: why is in each help.
    assistant_only_loss: bool = field(
        default=True, metadata={"help": "Train on assistant tokens (answers and their eos) only."}
    )


SFT_ARGUMENTS = (ChatDataArguments, ModelConfig, SFTRecipeConfig)


# ---------------------------------------------------------------------------------------------------------------
# Preference tuning (DPO)
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class BuiltinTrainingPairs:
    """How many pairs each built-in training function gives (held-out functions give one each)."""

    wrong_names_per_function: int = field(
        default=1,
        metadata={
            "help": "Built-in pairs only: each training function gives this many pairs, one per wrong name from its "
            "code (where it has that many), so the same minutes see more kinds of wrong answer. Held out: one each."
        },
    )


@dataclass
class PreferenceDataArguments(HeldOutChatData, BuiltinTrainingPairs):
    max_eval_examples: int | None = field(
        default=200, metadata={"help": "Held-out pairs for reward accuracy/margin, exact match and stop rate."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.wrong_names_per_function < 1:
            raise ValueError(f"wrong_names_per_function must be at least 1, got {self.wrong_names_per_function}")


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
    lora_top_layers: int | None = field(
        default=None,
        metadata={
            "help": "LoRA on the top N transformer layers only (peft's layers_to_transform); None: all. gpt2-tiny's "
            "DPO adapts its top 2 of 4 and leaves layers 0 and 1, where the planted induction circuit sits, as SFT "
            "left them."
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


DPO_ARGUMENTS = (PreferenceDataArguments, PreferenceModelArguments, DPORecipeConfig)
