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


def test_the_fused_lm_head_projects_only_labelled_positions_on_the_cpu_with_the_same_log_probs(monkeypatch):
    import torch
    import trl.trainer.utils as trl_trainer_utils
    from transformers import GPT2Config, GPT2LMHeadModel

    import hf_recipes.trainers  # noqa: F401  (installs the CPU rule)

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=2)).eval()
    input_ids = torch.randint(0, 64, (2, 12))
    labels = input_ids.clone()
    labels[:, :9] = -100  # the answer: the last 3 tokens of each row
    with torch.no_grad():
        log_softmax = model(input_ids).logits.log_softmax(-1)
    expected = log_softmax[:, :-1].gather(-1, input_ids[:, 1:, None])[..., 0].masked_fill(labels[:, 1:] == -100, 0)

    projected_rows = []
    kernel = trl_trainer_utils._ChunkedLogProbFunction

    class CountingKernel:
        @staticmethod
        def apply(hidden_states, *args):
            projected_rows.append(hidden_states.shape[0])
            return kernel.apply(hidden_states, *args)

    monkeypatch.setattr(trl_trainer_utils, "_ChunkedLogProbFunction", CountingKernel)
    trl_trainer_utils.add_fused_lm_head(model)
    with torch.no_grad():
        log_probs = model(input_ids, labels=labels, fused_lm_head=True).log_probs

    assert projected_rows == [2 * 3]  # not all 2 x 11 positions
    torch.testing.assert_close(log_probs, expected, rtol=1e-5, atol=1e-5)
