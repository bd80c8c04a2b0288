"""Which dataclass tuple parses each stage's recipes (a recipe file is named <stage>[_variant].yaml)."""

from hf_recipes.config.rl import GRPO_ARGUMENTS, REWARD_ARGUMENTS
from hf_recipes.config.schema import DPO_ARGUMENTS, PRETRAIN_ARGUMENTS, SFT_ARGUMENTS
from hf_recipes.config.tools import (
    EvaluateArguments,
    GenerateArguments,
    GGUFExportArguments,
    PushArguments,
    QuantizeArguments,
    SamplingArguments,
)

STAGE_ARGUMENTS: dict[str, tuple[type, ...]] = {
    "pretrain": PRETRAIN_ARGUMENTS,
    "sft": SFT_ARGUMENTS,
    "dpo": DPO_ARGUMENTS,
    "reward": REWARD_ARGUMENTS,
    "grpo": GRPO_ARGUMENTS,
    "quantize": (QuantizeArguments,),
    "gguf": (GGUFExportArguments,),
    "evaluate": (EvaluateArguments,),
    "generate": (GenerateArguments, SamplingArguments),
    "push": (PushArguments,),
}
