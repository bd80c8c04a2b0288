"""Pretrain a GPT-2-architecture model from scratch or from the Hub with the `transformers` Trainer."""

from hf_recipes.configs import parse_stage
from hf_recipes.runtime import RecipeError, run_recipe


def main(argv: list[str]) -> None:
    parse_stage("pretrain", argv)
    raise RecipeError("pretraining is not built yet")


if __name__ == "__main__":
    run_recipe(main)
