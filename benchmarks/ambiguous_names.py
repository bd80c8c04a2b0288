"""Held-out function names missed by how ambiguous copying them is.

A name is *ambiguous* when one of its tokens also occurs in the prompt followed by a different token than in the
name (`_get_versions` in code that also calls `_get_config`): an induction head then has more than one place to
copy the next token from. Prints the count and the greedy miss rate of ambiguous and other names, then the misses.

python benchmarks/ambiguous_names.py outputs/gpt2-tiny/sft [--max-eval 600] [--max-new-tokens 24]
"""

from __future__ import annotations

import argparse
from itertools import pairwise

from hf_recipes.data.sources import load_chat_splits
from hf_recipes.data.stdlib import BUILTIN_CHAT_TASK
from hf_recipes.evaluation import fitting_conversations, generate_answers, render_prompt
from hf_recipes.generation import load_for_generation


def is_ambiguous(prompt_ids: list[int], name_ids: list[int]) -> bool:
    """Some token of the name occurs in the prompt followed by another token than the name's next one."""
    follows = {}
    for token, after in pairwise(prompt_ids):
        follows.setdefault(token, set()).add(after)
    return any(follows.get(token, {after}) - {after} for token, after in pairwise(name_ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a chat model folder (an SFT, DPO or quantized stage)")
    parser.add_argument("--max-eval", type=int, default=600, help="held-out conversations taken (as sft.yaml)")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()

    model, tokenizer = load_for_generation(args.model)
    held_out = load_chat_splits(BUILTIN_CHAT_TASK, max_train=1, max_eval=args.max_eval)[1]
    held_out = fitting_conversations(model, tokenizer, held_out, args.max_new_tokens)
    answers = generate_answers(model, tokenizer, held_out, args.max_new_tokens, batch_size=32)
    counts = {True: [0, 0], False: [0, 0]}  # ambiguous -> [names, misses]
    misses = []
    for conversation, answer in zip(held_out, answers, strict=True):
        prompt, name = render_prompt(tokenizer, conversation)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        # The template writes a space after [/INST]: the answer's tokens are the name's with a leading space.
        ambiguous = is_ambiguous(prompt_ids, tokenizer(" " + name, add_special_tokens=False)["input_ids"])
        counts[ambiguous][0] += 1
        if answer.text != name:
            counts[ambiguous][1] += 1
            misses.append(f"{'ambiguous' if ambiguous else 'other':9}  {name!r} -> {answer.text!r}")
    print(f"{len(held_out)} held-out names that fit the context, {sum(c[1] for c in counts.values())} missed")
    for ambiguous, (names, missed) in counts.items():
        print(f"{'ambiguous' if ambiguous else 'other':9}  {names:4d} names, miss rate {missed / max(names, 1):.3f}")
    print("\n".join(misses))


if __name__ == "__main__":
    main()
