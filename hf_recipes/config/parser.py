"""The recipe parser: a YAML recipe (and the recipe it `extends`) plus `--key value` flags into a stage's
dataclasses, every mistake a one-line RecipeError naming the key and the closest valid one."""

from __future__ import annotations

import argparse
import os
import typing
from pathlib import Path
from typing import Any

import yaml
from trl import TrlParser

from hf_recipes.config.stages import STAGE_ARGUMENTS
from hf_recipes.runtime import RecipeError, did_you_mean

EXTENDS_KEY = "extends"  # a recipe's field naming the recipe it varies


class RecipeParser(TrlParser):
    """`TrlParser` whose mistakes are `RecipeError`s naming the key and the closest valid one.

    Abbreviated flags are refused (`--learning_rat` must not silently mean `--learning_rate`), YAML values are
    checked against the field's type and choices (argparse checks neither for defaults), and unknown keys in the
    YAML or on the command line are errors. A recipe may name another that it `extends` (see `load_recipe`).
    """

    def __init__(self, dataclass_types, **kwargs):
        super().__init__(dataclass_types, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        raise RecipeError(message)

    def option_names(self) -> list[str]:
        """All `--key` names without their dashes."""
        return [opt[2:] for action in self._actions for opt in action.option_strings if opt.startswith("--")]

    def parse(self, args: list[str]) -> tuple[Any, ...]:
        """Parse `--config file.yaml` (and the recipe it extends) then `--key value` overrides into the dataclasses."""
        args = list(args)
        config_path = None
        if "--config" in args:
            index = args.index("--config")
            if index + 1 >= len(args):
                raise RecipeError("--config needs a path to a recipe YAML file")
            config_path = args[index + 1]
            del args[index : index + 2]
            config = self.load_recipe(config_path)
            for key, value in config.pop("env", {}).items():
                os.environ[key] = str(value)
            self.set_defaults_with_config(**config)
        unknown_flags = [arg for arg in args if arg.startswith("--") and arg[2:].split("=")[0] not in self.valid_keys]
        for flag in unknown_flags:
            name = flag[2:].split("=")[0]
            raise RecipeError(f"unknown option '--{name}'{did_you_mean(name, self.option_names())}")
        try:
            return self.parse_args_into_dataclasses(args)
        except ValueError as error:  # raised by dataclass __post_init__ checks (e.g. TrainingArguments)
            raise RecipeError(f"{config_path or 'command line'}: {error}") from error

    @property
    def valid_keys(self) -> set[str]:
        return {*self.option_names(), "config"}

    def load_recipe(self, config_path: str, extended_by: tuple[str, ...] = ()) -> dict[str, Any]:
        """The recipe's checked fields, on top of those of the recipe it `extends` (a path relative to it), if any.

        `extends` keeps a variant (say `pretrain_long.yaml`: the same model and data, a longer schedule) in step with
        the recipe it varies instead of a copy that drifts from it.
        """
        path = Path(config_path)
        if not path.is_file():
            where = f" (extended by {extended_by[-1]})" if extended_by else ""
            raise RecipeError(f"recipe file not found: {config_path}{where}")
        if str(path.resolve()) in extended_by:
            loop = " -> ".join((*extended_by, str(path.resolve())))
            raise RecipeError(f"{config_path}: recipes extend each other in a loop: {loop}")
        try:
            config = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise RecipeError(f"{config_path}: not valid YAML: {error}".replace("\n", " ")) from error
        if not isinstance(config, dict):
            raise RecipeError(f"{config_path}: a recipe must be a YAML mapping of field: value")
        base = config.pop(EXTENDS_KEY, None)
        self._check_fields(config_path, config)
        if base is None:
            return config
        if not isinstance(base, str):
            raise RecipeError(f"{config_path}: '{EXTENDS_KEY}' must be the path of another recipe, not {base!r}")
        inherited = self.load_recipe(str(path.parent / base), (*extended_by, str(path.resolve())))
        env = {**inherited.pop("env", {}), **config.pop("env", {})}
        return {**inherited, **config, **({"env": env} if env else {})}

    def _check_fields(self, config_path: str, config: dict[str, Any]) -> None:
        actions = {action.dest: action for action in self._actions}
        hints = {name: hint for dtype in self.dataclass_types for name, hint in typing.get_type_hints(dtype).items()}
        for key, value in config.items():
            if key == "env":
                if not isinstance(value, dict):
                    raise RecipeError(f"{config_path}: 'env' must be a mapping of variable: value")
                continue
            if key not in actions:
                raise RecipeError(f"{config_path}: unknown key '{key}'{did_you_mean(key, [*actions, EXTENDS_KEY])}")
            check_value(actions[key], hints.get(key, Any), value, where=f"{config_path}: '{key}'")


def check_value(action: argparse.Action, hint: Any, value: Any, where: str) -> None:
    """Refuse a YAML value that argparse would accept blindly because it arrives as a default."""
    if value is None:
        return
    if action.choices is not None and str(value) not in map(str, action.choices):
        raise RecipeError(f"{where} is {value!r}; choose one of {', '.join(map(str, action.choices))}")
    allowed = {arg for arg in typing.get_args(hint) or (hint,) if arg is not type(None)}
    is_list = any(typing.get_origin(arg) is list for arg in allowed)
    if isinstance(value, list) and is_list:
        allowed = {arg for union in allowed for arg in typing.get_args(union) or (union,)}
        values = value
    else:
        values = [value]
    for item in values:
        if isinstance(item, str) and str not in allowed and action.type is not None:
            try:
                action.type(item)
            except (TypeError, ValueError, argparse.ArgumentTypeError) as error:
                raise RecipeError(f"{where} is {item!r}, which is not {_describe(allowed)}") from error
        elif not isinstance(item, str) and not _fits(item, allowed):
            raise RecipeError(f"{where} is {item!r}, which is not {_describe(allowed)}")


def _fits(value: Any, allowed: set[Any]) -> bool:
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int) and (int in allowed or float in allowed):
        return True
    if isinstance(value, float) and float in allowed:
        return True
    # Containers and types we do not model (dicts for *_kwargs, enums, ...) are left to the dataclass itself.
    return not allowed & {int, float, bool} or (allowed - {int, float, bool, str}) != set()


def _describe(allowed: set[Any]) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return " or ".join(sorted(names.get(arg, getattr(arg, "__name__", str(arg))) for arg in allowed))


def parse_stage(stage: str, args: list[str]) -> tuple[Any, ...]:
    """Parse a stage's `--config file.yaml --key value ...` into its dataclass tuple."""
    return RecipeParser(STAGE_ARGUMENTS[stage]).parse(args)


def stage_of_recipe(path: Path | str) -> str:
    """`recipes/gpt2-tiny/sft_lora.yaml` -> `sft`."""
    return Path(path).stem.split("_")[0]
