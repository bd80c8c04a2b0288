"""Every private transformers/TRL API our trainers build on still exists as we call it (hf_recipes.trainers)."""

import importlib
import inspect

import pytest

from hf_recipes.trainers import PRIVATE_API, PRIVATE_ATTRIBUTES


def resolve(dotted: str):
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize(
    ("owner", "name", "parameters"),
    [(owner, name, parameters) for owner, names in PRIVATE_API.items() for name, parameters in names.items()],
)
def test_each_private_method_we_override_exists_with_the_signature_we_call(owner, name, parameters):
    method = getattr(resolve(owner), name, None)
    assert method is not None, f"{owner}.{name} is gone: hf_recipes/trainers.py overrides it"
    found = "(" + ", ".join(inspect.signature(method).parameters) + ")"
    assert found == parameters, f"{owner}.{name}{found}: hf_recipes/trainers.py calls it as {parameters}"


@pytest.mark.parametrize(
    ("owner", "attribute"), [(owner, name) for owner, names in PRIVATE_ATTRIBUTES.items() for name in names]
)
def test_each_private_attribute_we_read_is_still_set_by_its_class(owner, attribute):
    source = "".join(inspect.getsource(cls) for cls in inspect.getmro(resolve(owner)) if cls.__module__ != "builtins")
    assert f"self.{attribute}" in source, f"{owner} no longer sets {attribute}: hf_recipes/trainers.py reads it"


def test_no_other_private_override_hides_in_our_trainers():
    import hf_recipes.trainers as trainers

    declared = {name for names in PRIVATE_API.values() for name in names}
    overridden = {
        name
        for _, cls in inspect.getmembers(trainers, inspect.isclass)
        if cls.__module__ == trainers.__name__
        for name in vars(cls)
        if name.startswith("_") and not name.startswith("__")
    }
    assert overridden <= declared, f"undeclared private overrides: {sorted(overridden - declared)}"
