"""GPT-2 presets, building a model from scratch or loading one from the Hub or a folder, and its FLOPs per token."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, PreTrainedModel

from hf_recipes.runtime import RecipeError

logger = logging.getLogger("hf_recipes")

# GPT-2 shapes by name. gpt2-tiny is sized so the whole CPU pipeline fits in minutes on two cores:
# 4 x 12 x 256^2 x 4 layers = 3.1M non-embedding parameters, + 4,096 x 256 = 1.0M tied embedding for the recipes'
# vocabulary.
PRESETS: dict[str, dict[str, int]] = {
    "gpt2-tiny": {"n_layer": 4, "n_head": 4, "n_embd": 256, "n_positions": 512},
    "gpt2": {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024},
    "gpt2-medium": {"n_layer": 24, "n_head": 16, "n_embd": 1024, "n_positions": 1024},
    "gpt2-large": {"n_layer": 36, "n_head": 20, "n_embd": 1280, "n_positions": 1024},
    "gpt2-xl": {"n_layer": 48, "n_head": 25, "n_embd": 1600, "n_positions": 1024},
}
VOCAB_MULTIPLE = 64  # matmuls on padded vocabularies run faster (50,257 -> 50,304 for GPT-2)


def pad_vocab_size(vocab_size: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """Round up to a multiple of 64."""
    return -(-vocab_size // multiple) * multiple


def gpt2_config(
    preset: str,
    vocab_size: int,
    bos_token_id: int,
    eos_token_id: int,
    pad_token_id: int,
    dropout: float | None = None,
    **overrides: int | None,
) -> GPT2Config:
    """A GPT-2 config from a preset, with explicit non-None fields overriding it."""
    if preset not in PRESETS:
        from hf_recipes.runtime import did_you_mean

        raise RecipeError(
            f"unknown preset '{preset}'{did_you_mean(preset, PRESETS)}; choose from {', '.join(PRESETS)}"
        )
    shape = PRESETS[preset] | {key: value for key, value in overrides.items() if value is not None}
    if shape["n_embd"] % shape["n_head"]:
        raise RecipeError(f"n_embd ({shape['n_embd']}) must be divisible by n_head ({shape['n_head']})")
    drop = {} if dropout is None else {"resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout}
    return GPT2Config(
        # GPT-2's own GELU (tanh approximation) as one fused PyTorch op instead of "gelu_new"'s chain of elementwise
        # ops: the same function, gpt2-tiny pretraining 4-6% faster on the CPU (benchmarks/bench_activation.py).
        activation_function="gelu_pytorch_tanh",
        vocab_size=pad_vocab_size(vocab_size),
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        **shape,
        **drop,
    )


def build_model(config: GPT2Config, position_init: str = "normal", attention_init: str = "normal") -> GPT2LMHeadModel:
    """A freshly initialised GPT-2 using PyTorch's SDPA attention; `position_init` "sinusoidal" starts its learned
    position embeddings from `sinusoidal_positions` instead of GPT-2's N(0, initializer_range), and `attention_init`
    "induction" plants a copying circuit (hf_recipes/circuits.py)."""
    model = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")
    if attention_init == "induction":
        if position_init != "normal":
            raise RecipeError(
                f"attention_init induction lays out its own position table; drop position_embedding_init "
                f"{position_init} (or use attention_init normal)"
            )
        from hf_recipes.circuits import plant_induction_circuit

        return plant_induction_circuit(model)
    if attention_init != "normal":
        raise RecipeError(f"attention_init is {attention_init!r}; choose normal or induction")
    if position_init == "sinusoidal":
        # sin and cos have an RMS of 1/sqrt(2): this amplitude gives every coordinate GPT-2's init std, so positions
        # weigh in the residual stream as much as they would have, against token embeddings of the same std.
        amplitude = config.initializer_range * math.sqrt(2)
        with torch.no_grad():
            model.transformer.wpe.weight.copy_(amplitude * sinusoidal_positions(config.n_positions, config.n_embd))
    elif position_init != "normal":
        raise RecipeError(f"position_embedding_init is {position_init!r}; choose normal or sinusoidal")
    return model


def sinusoidal_positions(positions: int, width: int) -> torch.Tensor:
    """The Transformer's position table (Vaswani et al. 2017): sin and cos of the position at geometric frequencies.

    Position p+k is a fixed rotation of position p in every (sin, cos) pair, so an attention head can look k tokens
    back with one linear map from the start, where random embeddings have to learn that structure first (GPT-2
    learns its position table from noise)."""
    position = torch.arange(positions, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10_000.0) / width))
    table = torch.zeros(positions, width)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: width // 2])
    return table


def explain_load_error(name_or_path: str, revision: str | None, what: str, error: Exception) -> RecipeError:
    """Turn a from_pretrained failure into a RecipeError that says what to do."""
    if os.path.isdir(name_or_path):
        return RecipeError(f"{name_or_path} is a folder but holds no loadable {what}: {error}".splitlines()[0])
    if os.path.exists(name_or_path):
        return RecipeError(f"{name_or_path} is a file; {what}s load from a folder or a Hub id")
    where = f"'{name_or_path}'" + (f" (revision {revision})" if revision else "")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return RecipeError(
            f"{where} is not a local folder and its {what} is not in the Hugging Face cache, and HF_HUB_OFFLINE=1 "
            "forbids downloading it: run once online (or `hf download " + name_or_path + "`), or pass a local folder"
        )
    return RecipeError(f"could not load the {what} for {where}: {str(error).splitlines()[0]}")


def load_model(
    name_or_path: str,
    revision: str | None = None,
    trust_remote_code: bool = False,
    dtype: str | torch.dtype | None = None,
    **kwargs,
) -> PreTrainedModel:
    """Load a causal LM from a Hub id or a folder (safetensors only, no remote code unless asked)."""
    try:
        return AutoModelForCausalLM.from_pretrained(
            name_or_path,
            revision=revision,
            trust_remote_code=trust_remote_code,
            dtype=dtype,
            use_safetensors=True,
            attn_implementation=kwargs.pop("attn_implementation", "sdpa"),
            **kwargs,
        )
    except (OSError, ValueError) as error:
        raise explain_load_error(name_or_path, revision, "model", error) from error


@dataclass(frozen=True)
class ModelSize:
    total: int
    non_embedding: int
    flops_per_token: int

    def describe(self) -> str:
        return (
            f"{self.total / 1e6:.2f}M parameters ({self.non_embedding / 1e6:.2f}M non-embedding), "
            f"{self.flops_per_token / 1e6:.1f} MFLOPs per training token"
        )


def model_size(model: PreTrainedModel, sequence_length: int) -> ModelSize:
    """Parameter counts and PaLM's FLOPs per token, 6N + 12 * n_layer * n_embd * sequence_length.

    N counts every weight used in a matmul: the tied token embedding is the output projection, so it stays in N;
    position embeddings are a lookup, so they are left out (as nanoGPT does).
    """
    total = sum(p.numel() for p in model.parameters())
    token_embeddings = model.get_input_embeddings().weight.numel()
    positions = getattr(getattr(model, "transformer", None), "wpe", None)
    position_embeddings = positions.weight.numel() if positions is not None else 0
    config = model.config
    attention = 12 * config.n_layer * config.n_embd * sequence_length
    return ModelSize(
        total=total,
        non_embedding=total - token_embeddings - position_embeddings,
        flops_per_token=6 * (total - position_embeddings) + attention,
    )


# ----------------------------------------------------------------------------------------------------------------
# LoRA and 4-bit loading (SFT, DPO)
# ----------------------------------------------------------------------------------------------------------------

# GPT-2's attention and MLP projections: LoRA on them merges exactly. Never the tied token embedding (`wte`, which
# is also the output head): an adapter there merges wrong, silently.
GPT2_LORA_TARGETS = ["c_attn", "c_proj", "c_fc"]
FORBIDDEN_LORA_TARGETS = {"wte", "lm_head", "wpe"}


def load_config(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False):
    """A model's config alone (cheap: checks can run on it before any weights load)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise explain_load_error(name_or_path, revision, "config", error) from error


def module_names(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False) -> list[str]:
    """Names of a model's modules that hold weights, from its config alone (built on the meta device: no weights)."""
    config = load_config(name_or_path, revision, trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return [name for name, module in model.named_modules() if name and hasattr(module, "weight")]


def resolve_lora_targets(model_args) -> list[str]:
    """Check `lora_target_modules` against the model before it loads; default to GPT-2's projections."""
    from hf_recipes.runtime import did_you_mean

    names = module_names(model_args.model_name_or_path, model_args.model_revision)
    leaves = {name.rsplit(".", 1)[-1] for name in names}
    targets = model_args.lora_target_modules
    if isinstance(targets, str):  # TRL's ModelConfig turns a one-item list into its string ("all-linear")
        targets = [targets]
    targets = targets or [t for t in GPT2_LORA_TARGETS if t in leaves] or ["all-linear"]
    for target in targets:
        if target in FORBIDDEN_LORA_TARGETS:
            raise RecipeError(
                f"LoRA target '{target}' is GPT-2's tied embedding/head: its adapter merges wrong; "
                f"use {', '.join(GPT2_LORA_TARGETS)}"
            )
        if target != "all-linear" and target not in leaves and target not in names:
            raise RecipeError(
                f"LoRA target module '{target}' is not in the model{did_you_mean(target, leaves)}; "
                f"its modules include {', '.join(sorted(leaves)[:12])}"
            )
    return targets


def lora_config(model_args):
    """The LoRA config of a recipe (`use_peft`), its targets checked against the model first; None without LoRA."""
    if not model_args.use_peft:
        return None
    import dataclasses

    from trl import get_peft_config

    config = get_peft_config(dataclasses.replace(model_args, lora_target_modules=resolve_lora_targets(model_args)))
    # GPT-2 keeps its projections in Conv1D, whose weight is (in, out): peft needs fan_in_fan_out for them and would
    # set it itself, with a warning per run that the user can do nothing about.
    model_config = load_config(model_args.model_name_or_path, model_args.model_revision)
    if model_config.model_type == "gpt2":
        config.fan_in_fan_out = True
    top = getattr(model_args, "lora_top_layers", None)  # DPO's option (PreferenceModelArguments)
    if top is not None:
        if top < 1:
            raise RecipeError(f"lora_top_layers must be at least 1 (or unset for every layer), got {top}")
        count = model_config.num_hidden_layers
        config.layers_to_transform = list(range(max(0, count - top), count))
    return config


def quantization_config(model_args):
    """The BitsAndBytesConfig for QLoRA (`load_in_4bit`), after checking it can work; None when not asked."""
    if not (model_args.load_in_4bit or model_args.load_in_8bit):
        return None
    if not model_args.use_peft:
        raise RecipeError("load_in_4bit/load_in_8bit trains through LoRA only: set use_peft: true (QLoRA)")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise RecipeError("load_in_4bit needs bitsandbytes: pip install 'bitsandbytes>=0.50'") from error
    from trl import get_quantization_config

    return get_quantization_config(model_args)


def check_vocab(config, tokenizer) -> None:
    """Refuse a tokenizer with ids the model has no embedding for (they would index out of range)."""
    rows = config.vocab_size
    if len(tokenizer) > rows:
        raise RecipeError(
            f"the tokenizer has {len(tokenizer):,} tokens but the model embeds only {rows:,}: "
            "they do not belong together (use the tokenizer saved with the model)"
        )


def merge_lora(base_name_or_path: str, adapter_dir: str, revision: str | None = None) -> PreTrainedModel:
    """Load the base in full precision, apply the adapter and merge it: a plain model that loads without peft."""
    from peft import PeftModel

    base = load_model(base_name_or_path, revision=revision, dtype=torch.float32)
    return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()


def context_length(config) -> int | None:
    """Positions a model config can attend to (GPT-2's n_positions), or None when it does not say."""
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def max_length_within_positions(max_length: int, config) -> int:
    """`max_length` capped at the model's context: a longer example would index past its position embeddings."""
    positions = context_length(config)
    if not positions or max_length <= positions:
        return max_length
    logger.warning(
        "max_length %d is more than the model's %d positions: examples longer than %d tokens are left out",
        *(max_length, positions, positions),
    )
    return positions


def pretraining_context_length(model_args) -> int:
    """The context length the model will have, known before any weights load."""
    if model_args.model_name_or_path is None:
        return model_args.n_positions or PRESETS.get(model_args.preset, {}).get("n_positions", 0)
    try:
        config = AutoConfig.from_pretrained(
            model_args.model_name_or_path,
            revision=model_args.model_revision,
            trust_remote_code=model_args.trust_remote_code,
        )
    except (OSError, ValueError) as error:
        raise explain_load_error(model_args.model_name_or_path, model_args.model_revision, "config", error) from error
    return context_length(config)


def pretraining_model(model_args, tokenizer):
    """A fresh GPT-2 of the preset (and overrides) sized to the tokenizer, or the named model to continue from."""
    if model_args.model_name_or_path is None:
        config = gpt2_config(
            model_args.preset,
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            dropout=model_args.dropout,
            n_layer=model_args.n_layer,
            n_head=model_args.n_head,
            n_embd=model_args.n_embd,
            n_positions=model_args.n_positions,
        )
        return build_model(config, model_args.position_embedding_init, model_args.attention_init)
    model = load_model(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=model_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation or "sdpa",
    )
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:  # e.g. the pad token we added to GPT-2's
        model.resize_token_embeddings(pad_vocab_size(len(tokenizer)))
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def tokens_per_step(training_args) -> int:
    """per-device batch x devices x accumulation x block_size, e.g. 4 x 1 x 1 x 512 = 2,048 tokens/step."""
    args = training_args
    return args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps * args.block_size


def log_pretraining_plan(size: ModelSize, training_args, train_blocks: int | None, eval_blocks: int | None) -> None:
    """What a user needs to trust a pretraining run at its start: model, data, tokens per step and in all, FLOPs."""
    step_tokens = tokens_per_step(training_args)
    if training_args.max_steps > 0:
        total_tokens = training_args.max_steps * step_tokens
    else:
        total_tokens = round(training_args.num_train_epochs * (train_blocks or 0) * training_args.block_size)
    logger.info("Model: %s", size.describe())
    if train_blocks is not None:
        logger.info(
            "Data: %s train blocks, %s validation blocks of %d tokens",
            *(f"{train_blocks:,}", f"{eval_blocks:,}", training_args.block_size),
        )
    logger.info(
        "Tokens per optimizer step: %s; total training tokens: %s; compute: %.2f PFLOPs",
        *(f"{step_tokens:,}", f"{total_tokens:,}", total_tokens * size.flops_per_token / 1e15),
    )


def load_chat_model(
    model_args, quantization_config=None, name_or_path: str | None = None, revision: str | None = None
):
    """The model a chat stage (SFT, DPO, GRPO) trains or scores against, as its ModelConfig asks (dtype, attention)."""
    model = load_model(
        name_or_path or model_args.model_name_or_path,
        revision=revision if name_or_path else model_args.model_revision,
        dtype=model_args.dtype,
        quantization_config=quantization_config,
        attn_implementation=model_args.attn_implementation or "sdpa",
    )
    if quantization_config is not None:
        keep_4bit_weights_trainable(model)
    return model


def keep_4bit_weights_trainable(model) -> None:
    """QLoRA on a CPU with AVX512-BF16: bitsandbytes (0.50) repacks a 4-bit weight into an inference-only layout the
    first time it runs in eval mode without gradients (the held-out scoring before training), and every training
    forward after that fails ("a view of a leaf Variable that requires grad is being used in an in-place operation").
    A 4-bit model loaded to train keeps the layout training reads."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):  # bitsandbytes' Linear4bit
            module.support_avx512bf16_for_cpu = False
