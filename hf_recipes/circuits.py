"""A GPT-2 that starts with an induction circuit: hand-set weights in two attention heads that copy from the start.

The built-in chat task is copying (the function's name is in the prompt) and a model from scratch learns to copy
late: no induction heads before ~30M pretraining tokens in our runs, and exact match followed that onset rather than
perplexity (benchmarks/LEARNING.md). An induction head (Olsson et al. 2022) needs two heads working together:

- layer 0, a *previous-token head*: position p attends to p - 1 and writes that token's identity into a subspace
  of the residual stream of its own;
- layer 1, the *induction head*: its query is the current token, its keys are the previous tokens written above,
  so position p attends to the position right after the last occurrence of its token, and its output raises that
  next token's logit (tied embeddings: the output direction is the token's embedding).

`plant_induction_circuit` sets those weights in head 0 of layers 0 and 1 of a freshly initialised model; every other
weight keeps GPT-2's init. It is still GPT-2: only the starting values change. Left free, training undoes the
induction head within 50 steps; `PlantedCircuit` and `HoldCircuitCallback` write its weights back after every step
(`hold_induction_circuit_steps`), and the rest of the model learns to use it (benchmarks/LEARNING.md).

The residual stream of width D is cut into three subspaces, so the signals do not collide at the start: positions
(the first head_dim coordinates), tokens (the middle), previous tokens (the last head_dim).
"""

from __future__ import annotations

import math

import torch
from transformers import GPT2LMHeadModel, TrainerCallback

from hf_recipes.runtime import RecipeError, logger

# Attention logits the circuit aims at, in nats. The previous-token head's target stands ~25 nats above every other
# position (> 0.99 of its weight on p - 1). The induction head's match is set lower, so that where the current token
# has no earlier occurrence its weights spread over many positions instead of locking onto a random near-match.
PREVIOUS_TOKEN_LOGIT = 40.0
INDUCTION_LOGIT = 16.0
# The previous token's norm as the previous-token head writes it, relative to a token embedding's norm: well above
# what else lands in its subspace (measured at init: the induction head's weight on its target 0.49 at 1x, 0.93 at 4x).
PREVIOUS_TOKEN_GAIN = 4.0
# How strongly the induction head's output pushes the copied token, relative to a token embedding's norm.
COPY_GAIN = 5.0


def position_frequencies(pairs: int, seed: int = 0) -> torch.Tensor:
    """Random angular frequencies in (0.05, 0.95 pi) per position step. Unlike the Transformer's geometric ladder, a
    spread of high frequencies makes sum_i cos(w_i * d) peak sharply at d = 0 and stay low at every other offset, so
    a head can tell p - 1 from p - 2 (random rather than evenly spaced so the peak does not recur periodically)."""
    generator = torch.Generator().manual_seed(seed)
    return 0.05 + 0.9 * math.pi * torch.rand(pairs, generator=generator)


def shift_rotation(frequencies: torch.Tensor) -> torch.Tensor:
    """The block-diagonal map taking (sin wp, cos wp) pairs at position p to position p + 1."""
    cos, sin = torch.cos(frequencies), torch.sin(frequencies)
    rotation = torch.zeros(2 * len(frequencies), 2 * len(frequencies))
    for i in range(len(frequencies)):
        # sin(x + w) = sin x cos w + cos x sin w; cos(x + w) = cos x cos w - sin x sin w
        rotation[2 * i, 2 * i], rotation[2 * i, 2 * i + 1] = cos[i], sin[i]
        rotation[2 * i + 1, 2 * i], rotation[2 * i + 1, 2 * i + 1] = -sin[i], cos[i]
    return rotation


def orthonormal_columns(rows: int, columns: int, generator: torch.Generator) -> torch.Tensor:
    """A random rows x columns matrix with orthonormal columns: a projection that keeps the norms it reads."""
    return torch.linalg.qr(torch.randn(rows, columns, generator=generator))[0]


def head_slices(width: int, head_dim: int, head: int) -> tuple[slice, slice, slice, slice]:
    """Where one head lives in GPT-2's fused Conv1D weights: its query, key and value columns of c_attn (width x
    3 width, queries then keys then values) and its output rows of c_proj (width x width, rows by head)."""
    start = head * head_dim
    query, key, value = (slice(index * width + start, index * width + start + head_dim) for index in range(3))
    return query, key, value, slice(start, start + head_dim)


def _set_head(attention, head: int, query, key, value, output) -> None:
    """Write one head's query/key/value maps (width x head_dim) and output map (head_dim x width)."""
    *columns, rows = head_slices(*query.shape, head)
    for block_columns, block in zip(columns, (query, key, value), strict=True):
        attention.c_attn.weight[:, block_columns] = block
    attention.c_proj.weight[rows, :] = output


@torch.no_grad()
def plant_induction_circuit(model: GPT2LMHeadModel, seed: int = 0) -> GPT2LMHeadModel:
    """Set head 0 of layers 0 and 1 to a previous-token head and an induction head (module docstring), with the
    token and position embeddings laid out for them. The scales follow GPT-2's initializer_range, so a token's
    embedding keeps its norm."""
    config = model.config
    width, heads, std = config.n_embd, config.n_head, config.initializer_range
    head_dim = width // heads
    if config.n_layer < 2 or heads < 3:
        raise RecipeError(
            f"attention_init induction needs at least 2 layers and 3 heads (positions, tokens and previous tokens "
            f"each take a head's width of the residual stream); this model has {config.n_layer} and {heads}"
        )
    positions, tokens, previous = slice(0, head_dim), slice(head_dim, width - head_dim), slice(width - head_dim, width)
    token_width = width - 2 * head_dim
    generator = torch.Generator().manual_seed(seed)
    transformer = model.transformer

    # Embeddings: tokens in their subspace at GPT-2's norm (std * sqrt(width)), positions as sin/cos pairs in theirs
    # at the same norm, nothing yet in the previous-token subspace.
    token_norm = std * math.sqrt(width)
    embedding = transformer.wte.weight
    embedding[:, tokens] *= math.sqrt(width / token_width)
    embedding[:, positions] = 0
    embedding[:, previous] = 0
    frequencies = position_frequencies(head_dim // 2, seed)
    angle = torch.arange(config.n_positions, dtype=torch.float32)[:, None] * frequencies
    table = torch.zeros_like(transformer.wpe.weight)
    amplitude = token_norm / math.sqrt(head_dim / 2)
    table[:, positions.start : positions.stop : 2] = amplitude * torch.sin(angle)
    table[:, positions.start + 1 : positions.stop : 2] = amplitude * torch.cos(angle)
    transformer.wpe.weight.copy_(table)

    # After ln_1 the residual has norm sqrt(width); with tokens and positions at equal norms each has sqrt(width/2),
    # i.e. width/head_dim per sin/cos pair, so q.k / sqrt(head_dim) peaks at scale^2 * width / (2 sqrt(head_dim)).
    def zeros(rows: int, columns: int) -> torch.Tensor:
        return torch.zeros(rows, columns)

    scale = math.sqrt(PREVIOUS_TOKEN_LOGIT * 2 * math.sqrt(head_dim) / width)
    query, key = zeros(width, head_dim), zeros(width, head_dim)
    query[positions] = scale * torch.eye(head_dim)
    key[positions] = scale * shift_rotation(frequencies).T  # key of position j looks like the query of j + 1
    read_token = orthonormal_columns(token_width, head_dim, generator)
    value = zeros(width, head_dim)
    value[tokens] = read_token
    # The value reads a token at norm ~sqrt(width/2 * head_dim/token_width); write it back at a token's raw norm.
    written_norm = math.sqrt(width / 2 * head_dim / token_width)
    output = zeros(head_dim, width)
    output[:, previous] = PREVIOUS_TOKEN_GAIN * token_norm / written_norm * torch.eye(head_dim)
    _set_head(transformer.h[0].attn, 0, query, key, value, output)

    # Layer 1: positions and tokens at a token's raw norm, previous tokens PREVIOUS_TOKEN_GAIN times that, so after
    # ln_1 (norm sqrt(width)) tokens have sqrt(width / (2 + gain^2)) and previous tokens gain times that. The query
    # reads the current token through the same projection the previous-token head wrote with: on a match q and k align.
    tokens_after_norm = math.sqrt(width / (2 + PREVIOUS_TOKEN_GAIN**2))
    read_norm = tokens_after_norm * math.sqrt(head_dim / token_width)
    scale = math.sqrt(INDUCTION_LOGIT * math.sqrt(head_dim) / (read_norm * PREVIOUS_TOKEN_GAIN * tokens_after_norm))
    query, key = zeros(width, head_dim), zeros(width, head_dim)
    query[tokens] = scale * read_token
    key[previous] = scale * torch.eye(head_dim)
    copy_token = orthonormal_columns(token_width, head_dim, generator)
    value = zeros(width, head_dim)
    value[tokens] = copy_token
    output = zeros(head_dim, width)
    output[:, tokens] = COPY_GAIN * token_norm / read_norm * copy_token.T
    _set_head(transformer.h[1].attn, 0, query, key, value, output)
    return model


def check_circuit_layout(config) -> None:
    """Refuse a model that has no head 0 in two GPT-2 layers to hold."""
    if getattr(config, "model_type", None) != "gpt2" or config.n_layer < 2:
        raise RecipeError(
            f"hold_induction_circuit_steps holds head 0 of the first two layers of a GPT-2; this model is "
            f"{config.model_type} with {getattr(config, 'n_layer', getattr(config, 'num_hidden_layers', '?'))} layers "
            "(set hold_induction_circuit_steps: 0)"
        )


class PlantedCircuit:
    """The weights `plant_induction_circuit` set, kept aside so they can be written back after an optimizer step:
    head 0's query/key/value columns (and biases) and output rows in layers 0 and 1, and the position code in the
    first head_dim coordinates of the position table. Every other weight, including the rest of each fused matrix,
    trains as usual, and learns to feed and use the held heads (pretraining perplexity 70.0 against 94.1 free, SFT
    exact match 0.890 against 0.823 for gpt2-tiny with an 8,192 vocabulary; benchmarks/LEARNING.md).

    `copy_maps=False` holds only the induction head's query and key (where it looks), so its value and output maps
    (what it writes) train with the embedding they copy: pretraining moves the embedding away from the planted maps,
    rare tokens most (benchmarks/embedding_geometry.py)."""

    def __init__(self, model: GPT2LMHeadModel, copy_maps: bool = True):
        config = model.config
        check_circuit_layout(config)
        head_dim = config.n_embd // config.n_head
        query, key, value, output_rows = head_slices(config.n_embd, head_dim, head=0)
        transformer = model.transformer
        self.parts: list[tuple[torch.Tensor, tuple]] = []
        for layer in transformer.h[:2]:
            attention = layer.attn
            # The induction head's value columns and output rows are what it writes; copy_maps=False leaves them free.
            holds_writes = copy_maps or layer is not transformer.h[1]
            held = (query, key, value) if holds_writes else (query, key)
            columns = torch.cat([torch.arange(block.start, block.stop) for block in held])
            self.parts += [(attention.c_attn.weight, (slice(None), columns)), (attention.c_attn.bias, (columns,))]
            if holds_writes:
                self.parts.append((attention.c_proj.weight, (output_rows, slice(None))))
        self.parts.append((transformer.wpe.weight, (slice(None), slice(0, head_dim))))
        self.values = [parameter.detach()[index].clone() for parameter, index in self.parts]

    @torch.no_grad()
    def restore(self) -> None:
        for (parameter, index), value in zip(self.parts, self.values, strict=True):
            parameter[index] = value.to(parameter.device, parameter.dtype)


class HoldCircuitCallback(TrainerCallback):
    """Write the planted circuit back after each of the first `steps` optimizer steps (all of them when negative)."""

    def __init__(self, circuit: PlantedCircuit, steps: int):
        self.circuit = circuit
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if self.steps < 0 or state.global_step <= self.steps:
            self.circuit.restore()


def hold_circuit(model: GPT2LMHeadModel, steps: int, copy_maps: bool = True) -> HoldCircuitCallback:
    """The callback that holds the circuit `model` carries now, for `steps` steps (every step when negative), said in
    the log."""
    logger.info(
        "Holding the planted induction circuit for %s%s",
        "every step" if steps < 0 else f"{steps} steps",
        "" if copy_maps else " (the induction head's value and output maps train)",
    )
    return HoldCircuitCallback(PlantedCircuit(model, copy_maps), steps)
