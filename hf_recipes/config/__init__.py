"""Recipes into arguments: the schema (every stage's dataclasses) and the parser (YAML + flags, checked)."""

from hf_recipes.config.parser import RecipeParser, parse_stage, stage_of_recipe
from hf_recipes.config.stages import STAGE_ARGUMENTS

__all__ = ["STAGE_ARGUMENTS", "RecipeParser", "parse_stage", "stage_of_recipe"]
