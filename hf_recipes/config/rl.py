"""The arguments of the RL stages: a reward model on preference pairs, and GRPO on prompts with verifiable answers."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig, ModelConfig, RewardConfig

from hf_recipes.config.schema import (
    BuiltinTrainingFunctions,
    HeldOutChatData,
    PreferenceDataArguments,
    RecipeTrainingArguments,
)


@dataclass
class PromptDataArguments(HeldOutChatData, BuiltinTrainingFunctions):
    dataset_name: str | None = field(
        default="stdlib-function-name",
        metadata={
            "help": "'stdlib-function-name' (the built-in task: the prompt of each SFT conversation, its name as the "
            "answer), a local .jsonl/.json/.parquet file or folder, or a Hub dataset id; rows have `prompt` (a string "
            "or messages) or `messages`, and an `answer` column."
        },
    )
    max_eval_examples: int | None = field(
        default=600, metadata={"help": "Held-out prompts for greedy exact match and stop rate before and after."}
    )
    reward_functions: list[str] = field(
        default_factory=lambda: ["exact_match", "stop"],
        metadata={
            "help": "Rewards, summed: exact_match (1 when the answer is the reference), stop (1 when eos ends it "
            "within max_completion_length), or your own as module:function (TRL's reward-function signature)."
        },
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Train on prompts of at most this many tokens (None: all that fit the context). Each step "
            "reads every prompt num_generations times, 3 passes each: long prompts cost far more than their answers."
        },
    )
    reward_model: str | None = field(
        default=None,
        metadata={
            "help": (
                "A reward model folder (make reward's output) scored as one more reward, read at the answer's "
                "last token when it was trained there (reward_read_at in its config.json)."
            )
        },
    )


@dataclass
class GRPORecipeConfig(RecipeTrainingArguments, GRPOConfig):
    # Defaults that differ from TRL's: why is in each help.
    check_initial_kl: bool = field(
        default=True,
        metadata={
            "help": "Stop unless the first optimizer step's KL to the reference is ~0, i.e. the reference is the "
            "starting policy (needs beta > 0, which computes the KL at all)."
        },
    )
    disable_dropout: bool = field(
        default=True,
        metadata={"help": "No dropout in policy and reference: with it the log-probabilities (and the KL) are noise."},
    )
    eval_strategy: str = field(
        default="no",
        metadata={"help": "Held-out greedy exact match is measured before and after; TRL's sampled eval is off."},
    )


GRPO_ARGUMENTS = (PromptDataArguments, ModelConfig, GRPORecipeConfig)


@dataclass
class RewardRecipeConfig(RecipeTrainingArguments, RewardConfig):
    # Defaults that differ from TRL's: why is in each help.
    eval_strategy: str = field(default="steps", metadata={"help": "Held-out pair accuracy during training too."})


REWARD_ARGUMENTS = (PreferenceDataArguments, ModelConfig, RewardRecipeConfig)
