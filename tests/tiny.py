"""Tiny tokenizers and models for tests: built from configs in seconds, nothing downloaded."""

from __future__ import annotations

import functools
import sysconfig
from pathlib import Path

from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

from hf_recipes.modeling import build_model, gpt2_config
from hf_recipes.tokenization import train_bpe_tokenizer

TINY_SHAPE = {"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 256}


@functools.cache
def _sample_texts() -> tuple[str, ...]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return tuple((stdlib / name).read_text() for name in ("textwrap.py", "string.py", "shlex.py", "glob.py"))


def tiny_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE with <pad>/<s>/</s> trained on a few standard-library files (about a second)."""
    return train_bpe_tokenizer(_sample_texts(), vocab_size=vocab_size, show_progress=False)


def tiny_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0, **shape: int) -> GPT2LMHeadModel:
    """A 2-layer, 64-wide GPT-2 matching `tokenizer` (vocab padded to a multiple of 64)."""
    import torch

    torch.manual_seed(seed)
    config = gpt2_config(
        "gpt2-tiny",
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **(TINY_SHAPE | shape),
    )
    return build_model(config)


def save_tiny_model_folder(folder: Path, seed: int = 0) -> Path:
    """A complete model folder (config, safetensors, tokenizer) like a stage's output or a Hub snapshot."""
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer, seed=seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def sft_like_folder(folder: Path, seed: int = 0) -> Path:
    """A tiny model folder whose tokenizer carries the llama2 template, as the SFT stage leaves it."""
    from transformers import AutoTokenizer

    from hf_recipes.chat import attach_chat_template

    save_tiny_model_folder(folder, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    attach_chat_template(tokenizer, "llama2")
    tokenizer.save_pretrained(folder)
    return folder
