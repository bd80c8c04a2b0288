"""Train a byte-level BPE tokenizer or reuse one; make sure bos, eos and pad exist and are three different tokens."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from hf_recipes.runtime import RecipeError

logger = logging.getLogger("hf_recipes")

BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
SPECIAL_TOKENS = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN]  # ids 0, 1, 2 in a tokenizer we train
# GPT-2's pre-tokenizer pattern (the text is cut there before BPE merges), which llama.cpp knows as "gpt-2".
GPT2_PRETOKENIZE_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# GPT-2's, except that `_` joins letters and digits: code identifiers such as `set_result` stay one pre-token, so
# BPE can learn them as one or two tokens instead of always `set` `_` `result`.
CODE_PRETOKENIZE_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?[\p{L}\p{N}_]+| ?[^\s\p{L}\p{N}_]+|\s+(?!\S)|\s+"""


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int, show_progress: bool = True, split_pattern: str = CODE_PRETOKENIZE_PATTERN
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`, with distinct pad/bos/eos; text is cut at `split_pattern` before BPE."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split_pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tokenizer.train_from_iterator(_batched(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=1_000_000,  # the model's n_positions is the real limit; block_size cuts before it
        clean_up_tokenization_spaces=False,
    )


def _batched(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def load_tokenizer(
    name_or_path: str, revision: str | None = None, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """Load a Hub or local tokenizer and give it a pad token distinct from eos when it has none."""
    from hf_recipes.modeling import explain_load_error

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise explain_load_error(name_or_path, revision, "tokenizer", error) from error
    return ensure_special_tokens(tokenizer)


def ensure_special_tokens(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Add whatever of eos/bos/pad is missing; pad must differ from eos or the collator masks every eos label."""
    added = {}
    if tokenizer.eos_token is None:
        added["eos_token"] = EOS_TOKEN
    if tokenizer.bos_token is None:
        added["bos_token"] = tokenizer.eos_token or BOS_TOKEN
    if tokenizer.pad_token is None or tokenizer.pad_token == (tokenizer.eos_token or added.get("eos_token")):
        added["pad_token"] = PAD_TOKEN
    if added:
        tokenizer.add_special_tokens(added)
        logger.info("Added special tokens %s (the model's embeddings are resized to match)", added)
    check_special_tokens(tokenizer)
    return tokenizer


def check_special_tokens(tokenizer: PreTrainedTokenizerBase) -> None:
    """Refuse a tokenizer whose pad is missing or equal to eos (the model would never learn to stop)."""
    if tokenizer.pad_token_id is None:
        raise RecipeError("the tokenizer has no pad token; add one distinct from eos (e.g. '<pad>')")
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise RecipeError(
            f"the tokenizer's pad token {tokenizer.pad_token!r} is its eos token: the collator would mask every eos "
            "label and the model would never learn to stop; use a distinct pad token"
        )


def pretraining_tokenizer(model_args, train_texts, resume_dir):
    """Reuse the run's own tokenizer on resume; else the named one, the model's, or a new BPE on the train split."""
    if resume_dir is not None:
        return load_tokenizer(str(resume_dir.parent))
    source = model_args.tokenizer_name_or_path or model_args.model_name_or_path
    if source:
        return load_tokenizer(
            source, revision=model_args.model_revision, trust_remote_code=model_args.trust_remote_code
        )
    logger.info(
        "Training a byte-level BPE tokenizer (vocab %d) on the training split", model_args.tokenizer_vocab_size
    )
    return train_bpe_tokenizer(train_texts, vocab_size=model_args.tokenizer_vocab_size)
