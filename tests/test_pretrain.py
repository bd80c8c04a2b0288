"""Tiny pretraining runs through the real recipe: output folder, metrics, resume, and continued pretraining."""

import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_recipes.runtime import RecipeError
from hf_recipes.stages import pretrain
from tests.conftest import TINY_PRETRAIN_RUN
from tests.tiny import save_tiny_model_folder


def run(output_dir, *extra):
    pretrain.main([*TINY_PRETRAIN_RUN, "--output_dir", str(output_dir), *extra])


def logged_losses(folder):
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("pretrain")
    run(output_dir)
    return output_dir


def test_output_is_a_complete_model_folder(finished_run):
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "chat_template.jinja",
                 "metrics.json", "run_config.yaml", "plots/loss.png"):  # fmt: skip
        assert (finished_run / name).is_file(), name
    assert not list(finished_run.glob("**/training_args.bin"))  # a pickle that can carry the Hub token
    model = AutoModelForCausalLM.from_pretrained(finished_run)
    tokenizer = AutoTokenizer.from_pretrained(finished_run)
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.config.vocab_size % 64 == 0 and model.config.vocab_size >= len(tokenizer)


def test_metrics_record_perplexity_and_tokens(finished_run):
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert metrics["train_tokens"] == 4 * 4 * 64  # steps x batch x block
    assert metrics["perplexity"] == pytest.approx(torch.tensor(metrics["eval_loss"]).exp().item(), rel=1e-6)
    assert metrics["perplexity"] < metrics["initial_perplexity"]  # four steps at lr 2e-3 already help
    assert metrics["train_tokens_per_second"] > 0
    # Four steps teach no copying: the repeat of a held-out span is predicted no better than its first reading.
    assert metrics["copy_probe_loss_repeat"] == pytest.approx(metrics["copy_probe_loss_first"], rel=0.05)


def test_rerun_resumes_from_the_last_complete_checkpoint_with_identical_losses(finished_run, tmp_path):
    reference = logged_losses(finished_run / "checkpoint-4")
    interrupted = tmp_path / "interrupted"
    shutil.copytree(finished_run, interrupted)
    shutil.rmtree(interrupted / "checkpoint-4")  # as if the run died between step 2 and step 4,
    for written_at_the_end in ("metrics.json", "model.safetensors"):
        (interrupted / written_at_the_end).unlink()
    (interrupted / "checkpoint-3").mkdir()  # and a later save was killed half-way: it must be skipped
    (interrupted / "checkpoint-3" / "model.safetensors").write_bytes(b"\0" * 10)
    run(interrupted)
    assert logged_losses(interrupted / "checkpoint-4") == reference
    # A restart from step 0 with the same seed would log the same losses: the record says where it resumed.
    assert json.loads((interrupted / "metrics.json").read_text())["resumed_from_step"] == 2


def test_rerun_of_a_finished_run_skips_it(finished_run, tmp_path, caplog):
    copy = tmp_path / "again"
    shutil.copytree(finished_run, copy)
    before = (copy / "model.safetensors").stat().st_mtime_ns
    run(copy)
    assert (copy / "model.safetensors").stat().st_mtime_ns == before
    assert "already holds this finished run" in caplog.text


def test_continued_pretraining_from_a_local_folder_changes_the_weights(tmp_path):
    base = save_tiny_model_folder(tmp_path / "base")
    run(tmp_path / "continued", "--model_name_or_path", str(base), "--max_steps", "2")
    before = load_file(base / "model.safetensors")
    after = load_file(tmp_path / "continued" / "model.safetensors")
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert "transformer.h.0.attn.c_attn.weight" in changed
    assert len(changed) > len(before) // 2


def test_block_size_beyond_positions_is_refused_before_training(tmp_path):
    with pytest.raises(RecipeError, match=r"block_size \(1024\) is larger than n_positions \(512\)"):
        run(tmp_path, "--block_size", "1024")


def test_another_runs_folder_is_refused(finished_run, tmp_path):
    shutil.copytree(finished_run, tmp_path / "old")
    with pytest.raises(RecipeError, match=r"different config \(learning_rate changed\)"):
        run(tmp_path / "old", "--learning_rate", "0.01")


def test_a_finished_run_is_reused_only_for_the_same_recipe_and_inputs(finished_run):
    from hf_recipes import folder_reuse
    from hf_recipes.config import parse_stage

    same = parse_stage("pretrain", [*TINY_PRETRAIN_RUN, "--output_dir", str(finished_run)])
    assert folder_reuse.finished_earlier(finished_run, *same, inputs={})
    other_recipe = parse_stage("pretrain", [*TINY_PRETRAIN_RUN, "--output_dir", str(finished_run), "--max_steps", "5"])
    assert not folder_reuse.finished_earlier(finished_run, *other_recipe, inputs={})
    assert not folder_reuse.finished_earlier(finished_run, *same, inputs={"outputs/x": "model.safetensors:1:2"})
    assert not folder_reuse.finished_earlier(finished_run, *same, inputs={}, overwrite=True)


def test_sinusoidal_positions_let_one_linear_map_look_one_token_back():
    from hf_recipes.modeling import sinusoidal_positions

    table = sinusoidal_positions(256, 64)
    # Position p+1 is position p turned by the same angle in every (sin, cos) pair, for every p: one fixed linear map,
    # which is what a previous-token head has to find. GPT-2's random start has no such map (far from a fit).
    angles = table[1, 0::2].asin()  # sin(1 * frequency)
    cos, sin = angles.cos(), angles.sin()
    shift = torch.zeros(64, 64)
    # sin((p+1)w) = sin(pw) cos w + cos(pw) sin w and cos((p+1)w) = cos(pw) cos w - sin(pw) sin w
    shift[0::2, 0::2], shift[1::2, 0::2] = torch.diag(cos), torch.diag(sin)
    shift[0::2, 1::2], shift[1::2, 1::2] = torch.diag(-sin), torch.diag(cos)
    assert torch.allclose(table[:-1] @ shift, table[1:], atol=1e-4)
    noise = torch.randn(256, 64, generator=torch.Generator().manual_seed(0))
    fitted = noise[:-1] @ torch.linalg.lstsq(noise[:-1], noise[1:]).solution
    assert (fitted - noise[1:]).norm() > 0.5 * noise[1:].norm()


def test_a_new_model_starts_its_positions_from_the_sinusoidal_table_at_gpt2s_scale(tmp_path):
    from hf_recipes.modeling import sinusoidal_positions

    one_step = ["--max_steps", "1", "--eval_steps", "1", "--save_steps", "1"]
    run(tmp_path, "--position_embedding_init", "sinusoidal", *one_step)
    config = json.loads((tmp_path / "config.json").read_text())
    start = load_file(tmp_path / "checkpoint-1" / "model.safetensors")["transformer.wpe.weight"]
    table = sinusoidal_positions(config["n_positions"], config["n_embd"]) * 0.02 * 2**0.5
    assert torch.allclose(start, table, atol=2.2e-3)  # one AdamW step moves a weight by at most the rate, 2e-3
    assert start.pow(2).mean().sqrt().item() == pytest.approx(0.02, rel=0.05)  # GPT-2's init std, per coordinate
    with pytest.raises(RecipeError, match=r"invalid choice: 'rope' \(choose from 'normal', 'sinusoidal'\)"):
        run(tmp_path / "bad", "--position_embedding_init", "rope")


def test_attention_init_induction_reaches_a_new_model(tmp_path):
    # The circuit needs 3 heads; its layout starts token embeddings at 0 in the position subspace (the first head's
    # width), where GPT-2's random start has N(0, 0.02): one AdamW step later they are still within its rate, 2e-3.
    one_step = ["--n_head", "4", "--max_steps", "1", "--eval_steps", "1", "--save_steps", "1"]
    run(tmp_path, "--attention_init", "induction", *one_step)
    embedding = load_file(tmp_path / "checkpoint-1" / "model.safetensors")["transformer.wte.weight"]
    assert embedding[:, :16].abs().max() <= 2.2e-3
    assert embedding[:, 16:48].std() == pytest.approx(0.02 * 2**0.5, rel=0.1)  # the token subspace keeps the norm
    with pytest.raises(RecipeError, match=r"at least 2 layers and 3 heads"):
        run(tmp_path / "small", "--attention_init", "induction", *one_step[2:])  # tiny runs have 2 heads


def test_a_held_circuit_keeps_its_planted_weights_for_the_steps_asked_and_trains_after(tmp_path):
    from hf_recipes.circuits import PlantedCircuit
    from hf_recipes.modeling import build_model

    steps = ["--n_head", "4", "--max_steps", "2", "--eval_steps", "1", "--save_steps", "1"]
    run(tmp_path, "--attention_init", "induction", "--hold_induction_circuit_steps", "1", *steps)
    config = AutoModelForCausalLM.from_pretrained(tmp_path).config
    planted = PlantedCircuit(build_model(config, attention_init="induction"))  # the same values: planting is seeded
    after = {step: AutoModelForCausalLM.from_pretrained(tmp_path / f"checkpoint-{step}") for step in (1, 2)}
    held, released = PlantedCircuit(after[1]), PlantedCircuit(after[2])
    for index, (start, first, second) in enumerate(zip(planted.values, held.values, released.values, strict=True)):
        assert torch.equal(first, start), index  # written back after step 1
        assert not torch.equal(second, start), index  # free again at step 2
    around = [model.transformer.h[0].attn.c_attn.weight[:, 64:128] for model in after.values()]  # head 1's query
    assert not torch.equal(*around)  # the rest of the same fused matrix trains while the circuit is held
    # Like attention_init, the hold is for a planted circuit: from GPT-2's init (the tiny runs' 2 heads) head 0 trains.
    run(tmp_path / "normal", "--hold_induction_circuit_steps", "-1")
    early, late = (load_file(tmp_path / "normal" / f"checkpoint-{step}" / "model.safetensors") for step in (2, 4))
    for name in ("transformer.h.0.attn.c_attn.weight", "transformer.wpe.weight"):
        assert not torch.equal(early[name][:, :32], late[name][:, :32]), name


def test_freed_copy_maps_train_while_the_induction_head_keeps_where_it_looks(tmp_path):
    from hf_recipes.circuits import PlantedCircuit, head_slices
    from hf_recipes.modeling import build_model

    one_step = ["--n_head", "4", "--max_steps", "1", "--eval_steps", "1", "--save_steps", "1"]
    run(tmp_path, "--attention_init", "induction", "--hold_induction_circuit_steps", "-1", *one_step)
    run(tmp_path / "free", "--attention_init", "induction", "--hold_induction_circuit_steps", "-1", *one_step,
        "--hold_induction_copy_maps", "false")  # fmt: skip
    planted = build_model(AutoModelForCausalLM.from_pretrained(tmp_path).config, attention_init="induction")
    held, free = (AutoModelForCausalLM.from_pretrained(path) for path in (tmp_path, tmp_path / "free"))
    held_parts = (PlantedCircuit(model, copy_maps=False).values for model in (planted, free))
    for start, value in zip(*held_parts, strict=True):
        assert torch.equal(value, start)  # layer 0's head, the position code, layer 1's query and key: written back
    _, _, value, output = head_slices(planted.config.n_embd, planted.config.n_embd // 4, head=0)
    for model, trained in ((held, False), (free, True)):
        attention, start = model.transformer.h[1].attn, planted.transformer.h[1].attn
        assert torch.equal(attention.c_attn.weight[:, value], start.c_attn.weight[:, value]) is not trained
        assert torch.equal(attention.c_proj.weight[output], start.c_proj.weight[output]) is not trained


def test_the_curriculum_reshapes_training_batches_only_and_the_loss_counts_their_tokens(tmp_path, monkeypatch):
    from transformers import GPT2LMHeadModel

    seen = []
    forward = GPT2LMHeadModel.forward

    def recording_forward(self, input_ids=None, labels=None, **kwargs):
        output = forward(self, input_ids=input_ids, labels=labels, **kwargs)
        if self.training:
            # The loss the trainer gets must be the mean over exactly the tokens these sequences predict.
            mean = torch.nn.functional.cross_entropy(output.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())
            seen.append(("train", tuple(input_ids.shape), output.loss.item(), mean.item()))
        else:
            seen.append(("eval", tuple(input_ids.shape)))
        return output

    monkeypatch.setattr(GPT2LMHeadModel, "forward", recording_forward)
    run(tmp_path, "--block_size_warmup_steps", "4", "--block_size_warmup_start", "16")
    training = [entry for entry in seen if entry[0] == "train"]
    # Steps 0-3 want 16, 28, 40, 52 tokens: 64-token blocks cut into 16, 16, 32, 32 (4 blocks a step).
    assert [shape for _, shape, _, _ in training] == [(16, 16), (16, 16), (8, 32), (8, 32)]
    for _, _, loss, mean in training:
        assert loss == pytest.approx(mean, rel=1e-4)
    evaluated = {entry[1][1] for entry in seen if entry[0] == "eval"}
    assert evaluated == {64}  # validation blocks and the copying probe (32-token spans read twice) stay whole


def test_the_run_records_the_commit_it_started_with_not_one_made_while_it_trained(tmp_path, monkeypatch):
    from hf_recipes import run_folder

    heads = iter(f"commit-{n}" for n in range(100))  # each look at the checkout finds a newer HEAD
    monkeypatch.setattr(run_folder, "git_commit", lambda path: next(heads))
    run_folder.code_commit.cache_clear()
    try:
        run(tmp_path, "--max_steps", "1", "--eval_steps", "1", "--save_steps", "1")
    finally:
        run_folder.code_commit.cache_clear()
    record = yaml.safe_load((tmp_path / "run_config.yaml").read_text())
    assert record["complete"] and record["git_commit"] == "commit-0"
