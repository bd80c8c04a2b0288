"""The Hub boundary: what is uploaded (one commit, no pickles), a card that tells the truth, the token kept secret,
and Hub ids loading offline from a cache laid out like the Hub's."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard, ModelCardData, constants, scan_cache_dir
from huggingface_hub.repocard_data import model_index_to_eval_results

from hf_recipes import hub, model_card, run_folder
from hf_recipes.runtime import RecipeError
from tests.fake_hub import FakeHubServer
from tests.hub_cache import make_hub_cache

REPO_ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_fakeTOKENdoNotLeak0123456789abcdef"
GPT2_CONFIG = {"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 256, "vocab_size": 512}
NEEDED = [
    "README.md",
    "adapter/adapter_config.json",
    "adapter/adapter_model.safetensors",
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "metrics.json",
    "model.safetensors",
    "plots/loss.png",
    "run_config.yaml",
    "tokenizer.json",
    "tokenizer_config.json",
]


def stage_folder(folder: Path, run_config: dict | None = None, metrics: dict | None = None, **config) -> Path:
    """A stage's output folder as the recipes leave it, junk included (weights are placeholder bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(GPT2_CONFIG | config))
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        (folder / name).write_text("{}")
    (folder / "chat_template.jinja").write_text("{{ messages }}")
    if run_config is not None:
        (folder / "run_config.yaml").write_text(yaml.safe_dump(run_config))
    if metrics is not None:
        run_folder.write_metrics(folder, metrics)
    junk = {
        "training_args.bin": b"\x80\x04 hub_token " + TOKEN.encode(),  # what the Trainer pickles: token included
        "optimizer.pt": b"\x80\x04",
        "rng_state.pth": b"\x80\x04",
        "runs/Jan01_00-00/events.out.tfevents.1": b"tb",
        "checkpoint-10/model.safetensors": b"{}",
        "checkpoint-10/config.json": b"{}",
        "checkpoint-10/optimizer.pt": b"\x80\x04",
        "checkpoint-10/trainer_state.json": b"{}",
        "checkpoint-10/training_args.bin": b"\x80\x04",
        "adapter/adapter_config.json": b"{}",
        "adapter/adapter_model.safetensors": b"{}",
        "adapter/README.md": b"peft's placeholder card",
        "plots/loss.png": b"\x89PNG",
        "notes.txt": b"scratch",
    }
    for name, content in junk.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


def sft_run_config(base: str = "openai-community/gpt2") -> dict:
    return {
        "config": {
            "ChatDataArguments": {"dataset_name": "stdlib-function-name", "dataset_test_split": "validation"},
            "ModelConfig": {"model_name_or_path": base, "use_peft": True, "lora_r": 16},
            "SFTRecipeConfig": {"learning_rate": 2e-4, "max_steps": 100, "output_dir": "outputs/gpt2-tiny/sft"},
        },
        "versions": {"python": "3.11.7", "transformers": "5.23.0", "trl": "1.16.0"},
        "git_commit": "abc123",
        "stage": "sft",
    }


def section(card_text: str, heading: str) -> str:
    """The text under `## heading` up to the next `## `."""
    return card_text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def headline(card_text: str) -> dict[str, str]:
    """The 'this model' results table as {label: value}."""
    rows = re.findall(r"^\| (.+?) \| (.+?) \|$", section(card_text, "Results"), flags=re.MULTILINE)
    return dict(rows[2 : 2 + len(model_card.HEADLINE_METRICS)])


# ----------------------------------------------------------------------------------------------------------------
# What is uploaded
# ----------------------------------------------------------------------------------------------------------------


def test_upload_keeps_what_users_need_and_never_pickles_runs_or_checkpoints(tmp_path):
    folder = stage_folder(tmp_path / "sft", sft_run_config(), {"exact_match": 0.5})
    (folder / "README.md").write_text("card")
    assert hub.files_to_upload(folder) == NEEDED


def test_checkpoints_only_on_request_and_still_without_pickles(tmp_path):
    folder = stage_folder(tmp_path / "sft", sft_run_config())
    with_checkpoints = hub.files_to_upload(folder, include_checkpoints=True)
    assert sorted(set(with_checkpoints) - set(hub.files_to_upload(folder))) == [
        "checkpoint-10/config.json",
        "checkpoint-10/model.safetensors",
        "checkpoint-10/trainer_state.json",
    ]
    assert not [name for name in with_checkpoints if name.endswith(hub.PICKLE_SUFFIXES)]


def test_assert_no_secret_names_the_file_never_the_secret(tmp_path):
    folder = stage_folder(tmp_path / "pretrain")
    with pytest.raises(RecipeError) as error:
        hub.assert_no_secret(folder, TOKEN)
    assert "training_args.bin" in str(error.value) and TOKEN not in str(error.value)
    (folder / "training_args.bin").unlink()
    hub.assert_no_secret(folder, TOKEN)  # clean now


def test_secret_straddling_two_chunks_is_found(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 13 + TOKEN.encode() + b"y" * 7)
    assert hub.files_containing([path], TOKEN, chunk_size=16) == [path]
    assert hub.files_containing([path], TOKEN[:-1] + "X", chunk_size=16) == []


# ----------------------------------------------------------------------------------------------------------------
# The model card
# ----------------------------------------------------------------------------------------------------------------


def test_card_of_a_lora_sft_run_has_hub_metadata_and_only_measured_numbers(tmp_path):
    metrics = {"exact_match": 0.8125, "exact_match_before": 0.0625, "stop_rate": 1.0, "eval_loss": 0.73456789}
    folder = stage_folder(tmp_path / "sft", sft_run_config(), metrics)
    card = ModelCard.load(model_card.write_model_card(folder, "me/tiny-chat"))

    data = card.data.to_dict()
    assert data["pipeline_tag"] == "text-generation" and data["license"] == "mit"
    assert data["base_model"] == "openai-community/gpt2" and data["base_model_relation"] == "finetune"
    assert {"hf-recipes", "gpt2", "sft", "lora"} <= set(data["tags"]) and "4-bit" not in data["tags"]
    assert "datasets" not in data  # the built-in task is no Hub dataset
    # The metadata survives a round trip through ModelCardData, and its model-index parses like the Hub reads it.
    assert ModelCardData(**data).to_dict() == data
    name, results = model_index_to_eval_results(data["model-index"])
    assert name == "tiny-chat"
    measured = {r.metric_type: r.metric_value for r in results}
    assert measured == {"exact_match": 0.8125, "stop_rate": 1.0, "eval_loss": pytest.approx(0.734568)}
    assert {r.task_type for r in results} == {"text-generation"}
    assert {r.dataset_type for r in results} == {"stdlib-function-name"}

    text = card.text
    assert headline(text) == {
        "Exact match": "0.8125",
        "Stop rate": "1.0",
        "Perplexity": "not measured",
        "Eval loss": "0.734568",
    }
    assert "| exact_match_before | 0.0625 |" in text  # the starting point is reported, not passed off as ours
    recipe = yaml.safe_load(section(text, "Recipe").split("```yaml\n")[1].split("```")[0])
    assert recipe == sft_run_config()["config"]
    assert "| transformers | 5.23.0 |" in section(text, "Package versions")
    usage = section(text, "Use it")
    assert 'AutoModelForCausalLM.from_pretrained("me/tiny-chat")' in usage and "apply_chat_template" in usage
    assert "NOT VERIFIED" not in text


def test_card_of_an_unverified_4bit_export_says_so_first_and_reports_the_4bit_numbers(tmp_path):
    run_config = {
        "config": {"QuantizeArguments": {"model_name_or_path": "outputs/gpt2-tiny/dpo", "quant_type": "nf4"}},
        "versions": {"bitsandbytes": "0.50.2"},
    }
    metrics = {
        "perplexity_full": 20.0,
        "perplexity_4bit": 31.5,
        "perplexity_ratio": 1.575,
        "exact_match_full": 0.5,
        "exact_match_4bit": 0.25,
        "verified": False,
    }
    quantization = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    folder = stage_folder(tmp_path / "quantized-nf4", run_config, metrics, quantization_config=quantization)
    not_verified = "This 4-bit export failed verification: perplexity ratio 1.575.\n"
    (folder / run_folder.NOT_VERIFIED_FILE).write_text(not_verified)
    card = ModelCard.load(model_card.write_model_card(folder, "me/tiny-4bit"))

    data = card.data.to_dict()
    assert {"4-bit", "bitsandbytes", "nf4", "not-verified"} <= set(data["tags"])
    assert "base_model" not in data  # a local folder is no Hub id: the body names it instead
    _, results = model_index_to_eval_results(data["model-index"])
    assert {r.metric_type: r.metric_value for r in results} == {"perplexity": 31.5, "exact_match": 0.25}
    before_usage = card.text.split("## Use it")[0]
    assert "NOT VERIFIED" in before_usage and "perplexity ratio 1.575" in before_usage
    assert "starting from the local folder `outputs/gpt2-tiny/dpo` (not on the Hub)" in before_usage
    assert headline(card.text)["Perplexity"] == "31.5" and headline(card.text)["Stop rate"] == "not measured"
    assert "bitsandbytes" in section(card.text, "Use it")


def test_card_of_a_pretrained_base_model_shows_text_completion_not_chat(tmp_path):
    run_config = {
        "config": {
            "DataArguments": {"dataset_name": "stdlib"},
            "PretrainModelArguments": {"model_name_or_path": None},
        },
        "stage": "pretrain",
    }
    folder = stage_folder(tmp_path / "pretrain", run_config, {"perplexity": 12.5, "initial_perplexity": 8000.0})
    card = ModelCard.load(model_card.write_model_card(folder, "me/base"))
    assert "pretraining" in card.data.tags and "base_model" not in card.data.to_dict()
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert [(r.metric_type, r.metric_value, r.dataset_type) for r in results] == [("perplexity", 12.5, "stdlib")]
    assert "trained from scratch" in card.text
    usage = section(card.text, "Use it")
    assert "apply_chat_template" not in usage and 'tokenizer("def fibonacci(n):"' in usage


def test_card_of_an_adapter_only_folder_loads_it_with_peft_onto_its_base(tmp_path):
    folder = tmp_path / "adapter-only"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "openai-community/gpt2"}))
    (folder / "adapter_model.safetensors").write_text("{}")
    card = ModelCard.load(model_card.write_model_card(folder, "me/lora"))
    data = card.data.to_dict()
    assert data["library_name"] == "peft" and data["base_model"] == "openai-community/gpt2"
    assert data["base_model_relation"] == "adapter" and "lora" in data["tags"]
    assert 'AutoPeftModelForCausalLM.from_pretrained("me/lora")' in section(card.text, "Use it")


def test_card_without_metrics_or_recipe_claims_nothing(tmp_path):
    folder = stage_folder(tmp_path / "bare")
    card = ModelCard.load(model_card.write_model_card(folder))
    assert "model-index" not in card.data.to_dict() and "base_model" not in card.data.to_dict()
    assert set(headline(card.text).values()) == {"not measured"}
    assert "nothing about this model was measured" in card.text
    assert "the recipe that produced this model is not recorded" in card.text


# ----------------------------------------------------------------------------------------------------------------
# Pushing, against a local fake Hub
# ----------------------------------------------------------------------------------------------------------------


def push_env(tmp_path: Path, endpoint: str, token: str | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING"))}
    # HF_HOME in tmp: no saved login of this machine is found; Xet off in case a server asked for LFS.
    env |= {"HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_DISABLE_XET": "1"}
    env |= {"HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}
    if token:
        env["HF_TOKEN"] = token
    return env


def run_push(tmp_path: Path, endpoint: str, token: str | None, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "recipes/push.py"), *args],
        env=push_env(tmp_path, endpoint, token),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_push_cli_uploads_one_private_commit_with_a_valid_card_and_no_token(tmp_path):
    folder = stage_folder(tmp_path / "sft", sft_run_config(), {"exact_match": 0.75, "stop_rate": 0.9})
    (folder / "training_args.bin").unlink()  # the recipes delete it; a leftover one is refused (test below)
    with FakeHubServer(TOKEN) as fake:
        flags = ["--model_name_or_path", str(folder), "--repo_id", "me/tiny-chat", "--private", "true"]
        result = run_push(tmp_path, fake.url, TOKEN, *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    repo = fake.repos["me/tiny-chat"]
    assert repo.private and repo.create_payload["visibility"] == "private"
    assert len(repo.commits) == 1
    assert sorted(repo.files) == NEEDED
    card = ModelCard(repo.files["README.md"].decode())
    assert card.data.pipeline_tag == "text-generation" and card.data.base_model == "openai-community/gpt2"
    assert fake.validated == [repo.files["README.md"].decode()]  # create_commit had the card validated first
    assert "me/tiny-chat" in result.stdout and repo.sha in result.stdout
    # The token went to the server in headers only: not in any file, card, upload or output.
    assert TOKEN not in result.stdout + result.stderr
    hub.assert_no_secret(folder, TOKEN)
    assert not [name for name, content in repo.files.items() if TOKEN.encode() in content]


def test_push_cli_wrong_token_is_one_line_error_without_the_token(tmp_path):
    folder = stage_folder(tmp_path / "sft", sft_run_config())
    (folder / "training_args.bin").unlink()
    with FakeHubServer(TOKEN) as fake:
        wrong = run_push(tmp_path, fake.url, TOKEN + "x", "--model_name_or_path", str(folder), "--repo_id", "me/m")
    assert wrong.returncode == 2
    last = wrong.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the Hub refused the push to me/m: ") and "401" in last and "HF_TOKEN" in last
    assert "Traceback" not in wrong.stderr and TOKEN not in wrong.stdout + wrong.stderr
    assert fake.repos == {}


@pytest.fixture
def online_fake_hub(monkeypatch):
    """A fake Hub that in-process huggingface_hub calls reach (the test session is otherwise offline)."""
    with FakeHubServer(TOKEN) as fake:
        monkeypatch.setattr(constants, "ENDPOINT", fake.url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield fake


def test_push_refuses_a_folder_holding_the_token_before_anything_is_sent(tmp_path, online_fake_hub):
    folder = stage_folder(tmp_path / "sft", sft_run_config())
    (folder / "tokenizer_config.json").write_text(json.dumps({"hub_token": TOKEN}))
    with pytest.raises(RecipeError, match=re.escape("token is written in tokenizer_config.json")) as error:
        hub.push_folder(folder, "me/leaky", token=TOKEN)
    assert TOKEN not in str(error.value)
    assert online_fake_hub.requests == []


def test_private_push_refuses_an_existing_public_repo(tmp_path, online_fake_hub):
    folder = stage_folder(tmp_path / "sft", sft_run_config())
    (folder / "training_args.bin").unlink()
    hub.push_folder(folder, "me/public", token=TOKEN)
    assert online_fake_hub.repos["me/public"].private is False
    with pytest.raises(RecipeError, match="already exists and is public"):
        hub.push_folder(folder, "me/public", private=True, token=TOKEN)
    assert len(online_fake_hub.repos["me/public"].commits) == 1


def test_unverified_export_is_pushed_only_when_allowed(tmp_path, online_fake_hub):
    folder = stage_folder(tmp_path / "q", {"config": {"QuantizeArguments": {}}})
    (folder / "training_args.bin").unlink()
    (folder / run_folder.NOT_VERIFIED_FILE).write_text("failed")
    with pytest.raises(RecipeError, match="failed verification"):
        hub.push_folder(folder, "me/q", token=TOKEN)
    assert online_fake_hub.requests == []
    hub.push_folder(folder, "me/q", token=TOKEN, allow_not_verified=True)
    files = online_fake_hub.repos["me/q"].files
    assert run_folder.NOT_VERIFIED_FILE in files and b"NOT VERIFIED" in files["README.md"]


def test_push_without_a_token_says_how_to_get_one(tmp_path, monkeypatch, online_fake_hub):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    with pytest.raises(RecipeError, match="no Hugging Face token: set HF_TOKEN or run `hf auth login`"):
        hub.push_folder(stage_folder(tmp_path / "m"), "me/m")
    assert online_fake_hub.requests == []


def test_push_to_an_unreachable_endpoint_is_a_recipe_error(tmp_path, monkeypatch):
    with FakeHubServer(TOKEN) as gone:
        url = gone.url  # a port that was just served and is closed now
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    folder = stage_folder(tmp_path / "m")
    (folder / "training_args.bin").unlink()
    with pytest.raises(RecipeError, match=re.escape(f"could not reach {url} to push me/m")):
        hub.push_folder(folder, "me/m", token=TOKEN)


def test_push_offline_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RecipeError, match="HF_HUB_OFFLINE=1 forbids pushing"):
        hub.push_folder(stage_folder(tmp_path / "m"), "me/m", token=TOKEN)


# ----------------------------------------------------------------------------------------------------------------
# Loading a Hub id offline from the cache
# ----------------------------------------------------------------------------------------------------------------


def test_hub_cache_layout_is_what_huggingface_hub_scans(tmp_path):
    folder = stage_folder(tmp_path / "m")
    snapshot = make_hub_cache(tmp_path / "cache", "org/tiny", folder)
    info = scan_cache_dir(tmp_path / "cache")
    assert info.warnings == []
    (repo,) = info.repos
    assert repo.repo_id == "org/tiny" and set(repo.refs) == {"main"}
    (revision,) = repo.revisions
    assert revision.commit_hash == snapshot.name == (tmp_path / "cache/models--org--tiny/refs/main").read_text()
    assert {f.file_name for f in revision.files} == {p.name for p in folder.rglob("*") if p.is_file()}
    assert (snapshot / "config.json").is_symlink() and (snapshot / "config.json").read_text() == (
        folder / "config.json"
    ).read_text()


def test_card_snippet_loads_and_chats_with_a_hub_id_from_the_offline_cache(tmp_path):
    from hf_recipes.chat import attach_chat_template
    from tests.tiny import tiny_model, tiny_tokenizer

    folder = tmp_path / "sft"
    tokenizer = attach_chat_template(tiny_tokenizer(), "llama2")
    tiny_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "run_config.yaml").write_text(yaml.safe_dump(sft_run_config()))
    card = ModelCard.load(model_card.write_model_card(folder, "org/tiny-chat"))
    snippet = section(card.text, "Use it").split("```python\n")[1].split("```")[0]
    make_hub_cache(tmp_path / "cache", "org/tiny-chat", folder)

    # A fresh interpreter: huggingface_hub reads HF_HUB_OFFLINE / HF_HUB_CACHE when it is imported.
    check = (
        snippet
        + "\nimport torch\nfrom safetensors.torch import load_file\n"
        + f"saved = load_file({str(folder / 'model.safetensors')!r})\n"
        + "assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items()), 'weights differ'\n"
        + "assert 'SYS' in tokenizer.apply_chat_template(messages, tokenize=False)\n"
        + "print('LOADED', len(saved))\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    env |= {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOADED" in result.stdout


def test_load_model_of_an_uncached_hub_id_offline_says_so(tmp_path, monkeypatch):
    from hf_recipes.modeling import load_model

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RecipeError) as error:
        load_model("org/not-cached")
    message = str(error.value)
    assert "'org/not-cached'" in message and "not in the Hugging Face cache" in message
    assert "HF_HUB_OFFLINE=1" in message and "\n" not in message


# ----------------------------------------------------------------------------------------------------------------
# A training stage with push_to_hub: checked before anything loads, pushed once by us, never by the Trainer
# ----------------------------------------------------------------------------------------------------------------


def pretrain_main():
    from hf_recipes.stages import pretrain

    return pretrain.main


def test_a_training_run_pushes_once_at_the_end_and_the_trainer_never_pushes(tmp_path, monkeypatch, online_fake_hub):
    from tests.conftest import TINY_PRETRAIN_RUN

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    output_dir = tmp_path / "pretrain"
    pretrain_main()([*TINY_PRETRAIN_RUN, "--output_dir", str(output_dir), "--push_to_hub", "true",
                     "--hub_model_id", "me/tiny-base", "--hub_private_repo", "true"])  # fmt: skip
    repo = online_fake_hub.repos["me/tiny-base"]
    # The Trainer would have created the repository when built and uploaded each checkpoint with runs/ and
    # training_args.bin: one commit of the filtered folder means only our push ran.
    assert len(repo.commits) == 1 and repo.private
    assert not [name for name in repo.files if name.startswith(("checkpoint-", "runs/")) or name.endswith(".bin")]
    assert {"model.safetensors", "config.json", "README.md", "metrics.json"} <= set(repo.files)
    assert not [name for name, content in repo.files.items() if TOKEN.encode() in content]
    assert not list(output_dir.glob("**/training_args.bin"))


@pytest.mark.parametrize(
    ("repo_id", "token", "message"),
    [
        ("me/x", None, "no Hugging Face token: set HF_TOKEN"),
        ("me/x", TOKEN + "x", "the Hub refused the token (401)"),
        ("someone-else/x", TOKEN, "cannot push to someone-else/x: the token belongs to me"),
    ],
)
def test_a_push_that_cannot_work_fails_before_anything_loads(
    tmp_path, monkeypatch, online_fake_hub, repo_id, token, message
):
    from tests.conftest import TINY_PRETRAIN_RUN

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    output_dir = tmp_path / "pretrain"
    with pytest.raises(RecipeError, match=re.escape(message)) as error:
        pretrain_main()([*TINY_PRETRAIN_RUN, "--output_dir", str(output_dir), "--push_to_hub", "true",
                         "--hub_model_id", repo_id])  # fmt: skip
    assert TOKEN not in str(error.value)
    assert not output_dir.exists()  # no tokenizer trained, no corpus packed, no weights built
    assert online_fake_hub.repos == {}
