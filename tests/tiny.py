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


def sample_blocks(tokenizer: PreTrainedTokenizerFast, block: int) -> tuple[list[list[int]], list[list[int]]]:
    """(train, held-out) blocks of `block` tokens from a few standard-library modules; the last 16 are held out."""
    ids = tokenizer("\n".join(_sample_texts()))["input_ids"]
    blocks = [ids[start : start + block] for start in range(0, len(ids) - block, block)]
    return blocks[:-16], blocks[-16:]


def trained_tiny_folder(folder: Path, tokenizer: PreTrainedTokenizerFast, train: list[list[int]]) -> Path:
    """A tiny GPT-2 trained for 80 steps (~2 s) on `train`: held-out perplexity ~50 instead of a random model's ~512.

    A model that has learned something is what makes a broken export visible in perplexity.
    """
    import torch

    model = tiny_model(tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(80):
        batch = torch.tensor([train[i] for i in torch.randint(len(train), (16,), generator=generator)])
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
