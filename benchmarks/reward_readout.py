"""Where a chat model knows which of two answers is right: its own log-probabilities against a linear score read at
one position of its last hidden layer (what a reward model's score head starts from).

On the built-in preference pairs (right function name over a wrong one from the same code): the share of held-out
pairs that the summed answer log-probability ranks right, then, for each position, a logistic regression trained on
the difference of the chosen and rejected hidden states of the training pairs, scored on the held-out pairs.

python benchmarks/reward_readout.py outputs/gpt2-tiny/sft [--train-pairs 1500] [--eval-pairs 200]
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_recipes.data.stdlib import function_name_pairs

MAX_LENGTH = 384  # as reward.yaml: longer pairs are left out
# Positions read, counted from the end of "[/INST] name </s>" (the Llama-2 template puts a space before the eos);
# the mean over the answer's positions is read too.
POSITIONS = {"eos (where the reward model reads)": -1, "the space before eos": -2, "the name's last token": -3}


def encode(tokenizer, messages: list[dict], generation_prompt: bool = False) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, return_dict=False)
    return ids["input_ids"] if isinstance(ids, dict) else ids


@torch.no_grad()
def answer_features(model, tokenizer, pair: dict, key: str) -> dict | None:
    ids = encode(tokenizer, pair["prompt"] + pair[key])
    if len(ids) > MAX_LENGTH:
        return None
    answer_start = len(encode(tokenizer, pair["prompt"], generation_prompt=True))
    tokens = torch.tensor([ids])
    output = model(tokens, output_hidden_states=True)
    log_probs = torch.log_softmax(output.logits[0, :-1], -1).gather(1, tokens[0, 1:, None])[:, 0]
    hidden = output.hidden_states[-1][0]
    features = {name: hidden[index] for name, index in POSITIONS.items()}
    features["the mean over the answer"] = hidden[answer_start:].mean(0)
    return {"log_prob": log_probs[answer_start - 1 :].sum().item(), **features}


def pair_features(model, tokenizer, pairs: list[dict]) -> list[tuple[dict, dict]]:
    both = [
        (answer_features(model, tokenizer, p, "chosen"), answer_features(model, tokenizer, p, "rejected"))
        for p in pairs
    ]
    return [(chosen, rejected) for chosen, rejected in both if chosen and rejected]


def linear_probe_accuracy(train: list[tuple[dict, dict]], held_out: list[tuple[dict, dict]], name: str) -> float:
    """Bradley-Terry on one position's hidden state (a linear score head on a frozen body), held-out accuracy."""
    x = torch.stack([chosen[name] - rejected[name] for chosen, rejected in train])
    x_held_out = torch.stack([chosen[name] - rejected[name] for chosen, rejected in held_out])
    weights = torch.zeros(x.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.softplus(-(x @ weights)).mean() + 1e-3 * weights.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return ((x_held_out @ weights) > 0).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a chat model folder (make sft's output)")
    parser.add_argument("--train-pairs", type=int, default=1500)
    parser.add_argument("--eval-pairs", type=int, default=200)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    train = pair_features(model, tokenizer, function_name_pairs("train", limit=args.train_pairs))
    held_out = pair_features(model, tokenizer, function_name_pairs("validation", limit=args.eval_pairs))
    ranked = sum(chosen["log_prob"] > rejected["log_prob"] for chosen, rejected in held_out) / len(held_out)
    print(f"{len(held_out)} held-out pairs ({len(train)} training pairs for the probes)")
    print(f"the model's answer log-probability ranks the right name higher: {ranked:.3f}")
    for name in [*POSITIONS, "the mean over the answer"]:
        print(f"linear score on the hidden state at {name}: {linear_probe_accuracy(train, held_out, name):.3f}")


if __name__ == "__main__":
    main()
