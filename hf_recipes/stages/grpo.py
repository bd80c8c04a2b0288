"""Reinforcement learning with verifiable rewards: TRL's GRPOTrainer from a chat model (SFT or DPO output), full or
LoRA, on prompts with reference answers (the built-in function-name task by default).

accelerate launch recipes/grpo.py --config recipes/gpt2-tiny/grpo.yaml [--key value ...]
"""

from __future__ import annotations

import statistics

from hf_recipes import lifecycle, modeling
from hf_recipes.data.prompts import load_prompt_splits
from hf_recipes.data.sources import load_training_splits
from hf_recipes.evaluation import headline, prompt_lengths
from hf_recipes.plots import plot_rl
from hf_recipes.rewards import reward_functions, reward_model_reward
from hf_recipes.runtime import logger
from hf_recipes.stages.chat_inputs import chat_tokenizer_and_config
from hf_recipes.trainers import RecipeGRPOTrainer


def as_conversation(row: dict) -> dict:
    """A prompt row as the conversation evaluation scores: the prompt, then the reference as the answer."""
    return {"messages": [*row["prompt"], {"role": "assistant", "content": row["answer"]}]}


def logged(history: list[dict], key: str) -> list[float]:
    return [entry[key] for entry in history if key in entry]


def reinforce(run: lifecycle.StageRun) -> None:
    """Optimize the chat model against the rewards on the recipe's prompts; held-out scores before and after."""
    data_args, model_args, training_args = run.arguments

    # Checks that need no weights: data, tokenizer and its template, vocab, rewards, LoRA targets, 4-bit.
    tokenizer, config = chat_tokenizer_and_config(model_args, "GRPO")
    train_rows, eval_rows = load_training_splits(
        load_prompt_splits, data_args, training_args.seed, tokenizer=tokenizer
    )
    rewards = reward_functions(data_args.reward_functions, tokenizer.eos_token_id)
    if data_args.reward_model:
        modeling.check_vocab(modeling.load_config(data_args.reward_model), tokenizer)
        rewards.append(reward_model_reward(data_args.reward_model))
    lora = modeling.lora_config(model_args)
    quantization = modeling.quantization_config(model_args)

    # A training prompt needs room for max_completion_length new tokens in the context, and at most
    # max_prompt_length tokens; longer ones are left out (held-out prompts stay whole: the task as it is).
    positions = modeling.context_length(config)
    limits = [
        n for n in (positions and positions - training_args.max_completion_length, data_args.max_prompt_length) if n
    ]
    lengths = prompt_lengths(tokenizer, [as_conversation(row) for row in train_rows])
    train_rows = [row for row, length in zip(train_rows, lengths, strict=True) if not limits or length <= min(limits)]

    model = modeling.load_chat_model(model_args, quantization)
    eval_conversations = [as_conversation(row) for row in eval_rows]
    per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    logger.info(
        "Prompts: train %d, held-out %d; per optimizer step %d completions = %d prompts x %d generations of up to %d "
        "tokens at temperature %s; rewards: %s",
        *(len(train_rows), len(eval_conversations), per_step, per_step // training_args.num_generations),
        *(training_args.num_generations, training_args.max_completion_length, training_args.temperature),
        ", ".join([*data_args.reward_functions, *([data_args.reward_model] if data_args.reward_model else [])]),
    )
    trainer = run.chat_trainer(
        RecipeGRPOTrainer, model, tokenizer, eval_conversations, train_rows, reward_funcs=rewards, peft_config=lora
    )

    def results(_, scores):
        history = trainer.state.log_history
        reward, kl = logged(history, "reward"), logged(history, "kl")
        metrics = {
            "mean_reward": statistics.fmean(reward) if reward else None,
            "reward_first": reward[0] if reward else None,
            "reward_last": reward[-1] if reward else None,
            "initial_kl": trainer.initial_kl,
            "kl_last": kl[-1] if kl else None,
            "train_prompts": len(train_rows),
            "num_generations": training_args.num_generations,
            "lora": bool(model_args.use_peft),
        }
        trend = f"; reward {reward[0]:.3f} -> {reward[-1]:.3f}" if reward else ""  # none logged in a short run
        return metrics, f"Greedy {headline(scores)}{trend}"

    run.train_chat_model(trainer, tokenizer, model_args, results, plot_rl, evaluate=False)


def main(argv: list[str]) -> None:
    lifecycle.run_stage("grpo", argv, reinforce, starts_from="a chat model folder (e.g. outputs/gpt2-tiny/sft or dpo)")
