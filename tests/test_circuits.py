"""The induction circuit planted at init (hf_recipes/circuits.py): it copies before training; nothing else moved."""

from pathlib import Path

import pytest
import torch

from hf_recipes.circuits import PlantedCircuit, plant_induction_circuit, position_frequencies, shift_rotation
from hf_recipes.evaluation import repeated_span_loss
from hf_recipes.modeling import build_model, gpt2_config
from hf_recipes.runtime import RecipeError

SPAN = 96


def fresh_model(attention_init: str = "normal", **shape):
    torch.manual_seed(0)
    config = gpt2_config("gpt2-tiny", 8192, 0, 1, 2, dropout=0.0, **shape)
    model = build_model(config, attention_init=attention_init)
    model.config._attn_implementation = "eager"  # to read attention weights
    return model.eval()


@pytest.fixture(scope="module")
def spans():
    return torch.randint(3, 8192, (4, SPAN), generator=torch.Generator().manual_seed(1))


def test_a_planted_circuit_copies_a_repeated_span_before_any_training(spans, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from attention_heads import head_scores  # what benchmarks/LEARNING.md's circuit rows were read with

    planted, plain = fresh_model("induction"), fresh_model()
    scores, plain_scores = head_scores(planted, spans), head_scores(plain, spans)
    assert scores["previous_token"][0, 0] > 0.99  # layer 0 head 0 looks one token back
    assert scores["induction"][1, 0] > 0.6  # layer 1 head 0 looks at what followed the current token's last time
    others = torch.ones_like(scores["induction"], dtype=torch.bool)
    others[0, 0] = others[1, 0] = False
    for table in (scores["previous_token"][others], scores["induction"][others], *plain_scores.values()):
        assert table.max() < 0.05  # every other head is GPT-2's, and GPT-2's start has neither

    copied = repeated_span_loss(planted, spans.tolist(), SPAN)
    uncopied = repeated_span_loss(plain, spans.tolist(), SPAN)
    assert copied["loss_repeat"] < copied["loss_first"] - 1.0
    assert uncopied["loss_repeat"] == pytest.approx(uncopied["loss_first"], abs=0.02)


def test_the_circuit_keeps_embedding_norms_and_every_weight_outside_its_two_heads():
    planted, plain = fresh_model("induction"), fresh_model()
    planted_weights, plain_weights = planted.state_dict(), plain.state_dict()
    token_norm = planted_weights["transformer.wte.weight"].norm(dim=1).mean().item()
    assert token_norm == pytest.approx(plain_weights["transformer.wte.weight"].norm(dim=1).mean().item(), rel=0.02)
    assert planted_weights["transformer.wpe.weight"].norm(dim=1).mean().item() == pytest.approx(token_norm, rel=0.02)
    width, head_dim = 256, 64
    for name, weight in planted_weights.items():
        if name.startswith(("transformer.wte", "transformer.wpe", "lm_head")):
            continue
        planted_block = name.startswith(("transformer.h.0.", "transformer.h.1."))
        if planted_block and name.endswith(("attn.c_attn.weight", "attn.c_proj.weight")):
            head_0 = torch.zeros_like(weight, dtype=torch.bool)
            if name.endswith("c_attn.weight"):
                for start in (0, width, 2 * width):
                    head_0[:, start : start + head_dim] = True
            else:
                head_0[:head_dim] = True
            assert torch.equal(weight[~head_0], plain_weights[name][~head_0]), name
            assert not torch.equal(weight[head_0], plain_weights[name][head_0]), name
        else:
            assert torch.equal(weight, plain_weights[name]), name


def test_one_fixed_rotation_moves_every_position_one_step_on_and_only_the_last_position_matches():
    frequencies = position_frequencies(32)  # gpt2-tiny: a 64-wide head, 512 positions
    angle = torch.arange(512.0)[:, None] * frequencies
    table = torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1)  # (sin, cos) pairs, as the circuit lays out
    keys = table @ shift_rotation(frequencies).T
    assert torch.allclose(keys[:-1], table[1:], atol=1e-3)
    # The previous-token head's logits from position 511: 32 at 510 (every cosine is 1), at most half that elsewhere,
    # so the head picks p - 1 out of every older position.
    logits = keys[:511] @ table[511]
    assert logits[510] == pytest.approx(32, abs=1e-2)
    assert logits[:510].max() < 16


def test_a_model_too_small_for_the_circuit_or_with_its_own_positions_is_refused():
    with pytest.raises(RecipeError, match=r"at least 2 layers and 3 heads.*has 4 and 2"):
        fresh_model("induction", n_head=2)
    config = gpt2_config("gpt2-tiny", 8192, 0, 1, 2)
    with pytest.raises(RecipeError, match="lays out its own position table; drop position_embedding_init sinusoidal"):
        build_model(config, position_init="sinusoidal", attention_init="induction")
    with pytest.raises(RecipeError, match="attention_init is 'mimetic'; choose normal or induction"):
        build_model(config, attention_init="mimetic")


def test_planting_is_reproducible():
    first, second = plant_induction_circuit(fresh_model()), plant_induction_circuit(fresh_model())
    for (name, weight), other in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(weight, other), name


def test_restoring_a_planted_circuit_writes_back_its_weights_and_nothing_else():
    model = fresh_model("induction")
    circuit = PlantedCircuit(model)
    start = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    circuit.restore()
    attention = model.transformer.h[0].attn.c_attn.weight
    head_dim, width = 64, 256
    for block in range(3):  # head 0's query, key and value columns are back; head 1's are not
        head_0 = slice(block * width, block * width + head_dim)
        assert torch.equal(attention[:, head_0], start["transformer.h.0.attn.c_attn.weight"][:, head_0])
        head_1 = slice(block * width + head_dim, block * width + 2 * head_dim)
        assert torch.equal(attention[:, head_1], start["transformer.h.0.attn.c_attn.weight"][:, head_1] + 1)
    for layer in (0, 1):
        output = f"transformer.h.{layer}.attn.c_proj.weight"
        assert torch.equal(dict(model.named_parameters())[output][:head_dim], start[output][:head_dim])
        assert torch.equal(dict(model.named_parameters())[output][head_dim:], start[output][head_dim:] + 1)
    positions = model.transformer.wpe.weight
    assert torch.equal(positions[:, :head_dim], start["transformer.wpe.weight"][:, :head_dim])
    assert torch.equal(positions[:, head_dim:], start["transformer.wpe.weight"][:, head_dim:] + 1)
    untouched = ["transformer.wte.weight", "transformer.h.2.attn.c_attn.weight", "transformer.h.0.ln_1.weight"]
    for name in untouched:
        assert torch.equal(dict(model.named_parameters())[name], start[name] + 1), name


def test_the_planted_induction_head_writes_every_token_back_as_itself_and_gpt2s_start_does_not(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from embedding_geometry import direct_copy_ranks  # the readout behind LEARNING.md's rare-token rows

    planted, plain = direct_copy_ranks(fresh_model("induction")), direct_copy_ranks(fresh_model())
    assert torch.equal(planted, torch.zeros_like(planted))  # all 8,192 tokens copy themselves
    assert (plain == 0).float().mean() < 0.01
