"""Tokenize-and-pack throughput of hf_recipes.data.packing against the fast tokenizer's own batch encoding.

Both sides turn the same built-in corpus (the standard library's train split) into token ids with the same fast
tokenizer and the same tokenizer threads; ours also joins documents with eos, cuts full blocks, writes input_ids and
labels into an Arrow dataset (what recipes/pretrain.py trains on). Tokens per second counts the documents' tokens on
both sides, so the ratio is reference time / our time.

python benchmarks/bench_data.py
"""

from __future__ import annotations

import argparse
import os
import time

from common import comparison, interleaved, report, stdlib_texts

GOAL = 0.80


def run(repeats: int = 5, block_size: int = 256, vocab_size: int = 8192, max_documents: int | None = None) -> dict:
    from datasets import Dataset

    from hf_recipes.data.packing import pack_dataset
    from hf_recipes.tokenization import train_bpe_tokenizer

    texts = stdlib_texts("train", max_documents)
    tokenizer = train_bpe_tokenizer(texts[:200], vocab_size, show_progress=False)
    corpus = Dataset.from_dict({"text": texts})  # what load_text_source hands the recipe
    tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])

    def ours() -> float:
        started = time.perf_counter()
        packed = pack_dataset(corpus, tokenizer, block_size)
        seconds = time.perf_counter() - started
        assert len(packed) == (tokens + len(texts)) // block_size or len(packed) > 0.99 * tokens / block_size
        return tokens / seconds

    def reference() -> float:
        started = time.perf_counter()
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        seconds = time.perf_counter() - started
        assert len(encoded) == len(texts)
        return tokens / seconds

    ours(), reference()  # warm-up: first calls build caches in the tokenizer and in datasets
    results = interleaved({"ours": ours, "reference": reference}, repeats)
    return {
        **comparison(
            "tokenize + pack tokens/s, hf_recipes.data.packing / tokenizer batch encoding", GOAL, results, "reference"
        ),
        "settings": {
            "corpus": f"stdlib train split: {len(texts)} documents, {sum(map(len, texts)) / 1e6:.1f}M characters, "
            f"{tokens:,} tokens",
            "tokenizer": f"byte-level BPE, {len(tokenizer)} tokens (fast)",
            "block_size": block_size,
            "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "unset (library default: on)"),
            "repeats (after one warm-up each)": repeats,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--block_size", type=int, default=256)
    parser.add_argument("--max_documents", type=int, default=None)
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON to PATH")
    args = parser.parse_args()
    result = run(args.repeats, args.block_size, max_documents=args.max_documents)
    report(result, args.json)


if __name__ == "__main__":
    main()
