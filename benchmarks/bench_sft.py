"""Useful (non-pad) tokens per second of our SFT batches against randomly drawn batches padded to their longest row.

Ours is what recipes/sft.py trains on: rows from tokenize_for_training (Llama-2 template, assistant-only labels), TRL's
SFTTrainer dataloader with `train_sampling_strategy: group_by_length` and TRL's collator. The reference is the same
trainer with the stock random sampler. Both sides run the same training step (forward, backward, AdamW) on the same
model over one epoch of the same conversations, so both process the same useful tokens; only the padding differs.
No packing is used, so every example's loss is its own: checked against the example run alone (rtol 1e-3).

python benchmarks/bench_sft.py
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile

from common import Stopwatch, comparison, interleaved, report, stdlib_texts

GOAL = 1.3


def epoch_batches(rows, tokenizer, training_args, strategy: str) -> list[dict]:
    """One epoch of training batches exactly as the SFT trainer's dataloader yields them."""
    from datasets import Dataset
    from trl import SFTTrainer

    from hf_recipes.modeling import build_model, gpt2_config

    placeholder = build_model(gpt2_config("gpt2-tiny", len(tokenizer), 1, 2, 0, n_layer=1, n_embd=64, n_head=1))
    trainer = SFTTrainer(
        model=placeholder,
        args=dataclasses.replace(training_args, assistant_only_loss=False, train_sampling_strategy=strategy),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    return [{key: value for key, value in batch.items()} for batch in trainer.get_train_dataloader()]


def per_example_losses_match(model, batch, rtol: float = 1e-3) -> bool:
    """Each row's loss inside the padded batch equals its loss computed alone (padding changes nothing)."""
    import torch

    def token_losses(input_ids, attention_mask, labels):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
        targets = labels[:, 1:]
        losses = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), targets, ignore_index=-100, reduction="none"
        )
        return (losses.sum(1) / (targets != -100).sum(1)).tolist()

    with torch.no_grad():
        together = token_losses(batch["input_ids"], batch["attention_mask"], batch["labels"])
        for row, loss in enumerate(together):
            length = int(batch["attention_mask"][row].sum())
            alone = token_losses(
                batch["input_ids"][row : row + 1, :length],
                batch["attention_mask"][row : row + 1, :length],
                batch["labels"][row : row + 1, :length],
            )[0]
            if abs(alone - loss) > rtol * abs(alone):
                return False
    return True


def run(recipe: str = "recipes/gpt2-tiny/sft.yaml", examples: int = 480, repeats: int = 3, warmup: int = 2) -> dict:
    import torch

    from hf_recipes.chat import attach_chat_template, tokenize_for_training
    from hf_recipes.config import parse_stage
    from hf_recipes.data.sources import load_chat_source
    from hf_recipes.modeling import build_model, gpt2_config
    from hf_recipes.tokenization import train_bpe_tokenizer

    _, _, training_args = parse_stage(
        "sft",
        [
            "--config",
            recipe,
            "--output_dir",
            tempfile.mkdtemp(prefix="bench_sft_"),
            "--report_to",
            "none",
            "--eval_strategy",
            "no",
        ],
    )
    tokenizer = train_bpe_tokenizer(stdlib_texts("train", 200), 8192, show_progress=False)
    attach_chat_template(tokenizer, "llama2")
    conversations = load_chat_source("stdlib-function-name", "train", limit=examples)
    rows, _ = tokenize_for_training(
        tokenizer, conversations, training_args.max_length, "train", training_args.assistant_only_loss
    )
    grouped = epoch_batches(rows, tokenizer, training_args, "group_by_length")
    padded = epoch_batches(rows, tokenizer, training_args, "random")

    torch.manual_seed(training_args.seed)
    config = gpt2_config("gpt2-tiny", len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id,
                         tokenizer.pad_token_id, dropout=0.0)  # fmt: skip
    model = build_model(config)
    watch = Stopwatch("cpu")

    def useful(batches) -> int:
        return sum(int(batch["attention_mask"].sum()) for batch in batches)

    def positions(batches) -> int:
        return sum(batch["input_ids"].numel() for batch in batches)

    def side(batches):
        tokens = useful(batches)

        def step(batch, optimizer):
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def measure() -> float:
            model.train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=training_args.learning_rate)
            for batch in batches[:warmup]:  # first steps allocate the optimizer state: not counted
                step(batch, optimizer)
            started = watch()
            for batch in batches:
                step(batch, optimizer)
            return tokens / (watch() - started)

        return measure

    assert useful(grouped) == useful(padded)  # the same conversations, once each
    results = interleaved({"ours": side(grouped), "reference": side(padded)}, repeats)
    model.eval()
    losses_equal = per_example_losses_match(model, grouped[len(grouped) // 2]) and per_example_losses_match(
        model, padded[len(padded) // 2]
    )
    return {
        **comparison(
            "SFT useful tokens/s, length-grouped batches / random batches padded to their longest",
            GOAL,
            results,
            "reference",
            unit="useful_tokens_per_second",
        ),
        "pad_share_ours": 1 - useful(grouped) / positions(grouped),
        "pad_share_reference": 1 - useful(padded) / positions(padded),
        "per_example_losses_equal_alone": losses_equal,
        "settings": {
            "recipe": recipe,
            "data": f"{len(rows)} stdlib-function-name conversations (Llama-2 template), {useful(grouped):,} tokens",
            "batches per epoch": len(grouped),
            "batch size": training_args.per_device_train_batch_size,
            "model": "gpt2-tiny preset (4 x 256, vocab 8,192), fp32",
            "packing": "none (each row padded on its own): per-example losses are unchanged",
            "warm-up steps left out / repeats": f"{warmup} / {repeats}",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/gpt2-tiny/sft.yaml")
    parser.add_argument("--examples", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON to PATH")
    args = parser.parse_args()
    report(run(args.recipe, args.examples, args.repeats), args.json)


if __name__ == "__main__":
    main()
