"""Test-wide setup: nothing downloads, nothing fights over the two CPU cores."""

import os

# Before any Hugging Face import: tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Pin the machine's bf16 answer to "emulated", so recipes that leave bf16 unset train in fp32 on every CPU and the
# suite's numbers mean the same on an AVX2 laptop and an AVX512-BF16 server (tests of the detection override it).
os.environ["HF_RECIPES_CPU_BF16"] = "emulated"

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

QUIET = ["--report_to", "none", "--disable_tqdm", "true"]  # no trackers, no progress bars

# A pretraining run of a few seconds: 2 x 64 model, 512-token BPE, 12 documents, a checkpoint every 2 steps; GPT-2's
# attention init, as 2 heads are too few for the recipe's induction circuit.
TINY_PRETRAIN_RUN = [
    "--config", str(REPO_ROOT / "recipes/gpt2-tiny/pretrain.yaml"),
    "--n_layer", "2", "--n_head", "2", "--n_embd", "64", "--tokenizer_vocab_size", "512",
    "--attention_init", "normal",
    "--block_size", "64", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8",
    "--max_documents", "12", "--eval_blocks", "16",
    "--max_steps", "4", "--warmup_steps", "0", "--logging_steps", "1",
    "--eval_steps", "2", "--save_steps", "2", "--save_total_limit", "3", *QUIET,
]  # fmt: skip


def tiny_chat_run(train_examples: int, steps: int) -> list[str]:
    """A chat stage's run of a few seconds (SFT, DPO): `steps` steps of 4 rows, evaluated and saved at the last,
    held-out scores on 6 rows."""
    return [
        "--max_train_examples", str(train_examples), "--max_eval_examples", "6", "--eval_max_new_tokens", "4",
        "--max_length", "200", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8",
        "--max_steps", str(steps), "--warmup_steps", "0", "--logging_steps", "1",
        "--eval_steps", str(steps), "--save_steps", str(steps), *QUIET,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
