"""Garbage in: every mistake a user can make is one line naming it, exit status 2, before any model loads.

Most cases run the real recipe `main` in-process through `run_recipe` (as `python recipes/<stage>.py` does) with every
way of loading or building a model booby-trapped; two run as real subprocesses. Two inputs are not errors and are
checked to work: examples longer than the model's context (left out and counted) and a tokenizer without a pad token
(one is added, distinct from eos).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerFast

from hf_recipes import modeling
from hf_recipes.chat import attach_chat_template
from hf_recipes.runtime import run_recipe
from hf_recipes.stages import dpo, pretrain, quantize, sft
from hf_recipes.tokenization import load_tokenizer
from tests.conftest import REPO_ROOT
from tests.tiny import save_tiny_model_folder, tiny_model, tiny_tokenizer

RECIPES = {"pretrain": pretrain, "sft": sft, "dpo": dpo, "quantize": quantize}
TINY = REPO_ROOT / "recipes" / "gpt2-tiny"
ANSWERED = {"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]}
PAIR = {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."}


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return str(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Model folders: a tiny base, the same with a chat template (an SFT output), and a vocab mismatch."""
    root = tmp_path_factory.mktemp("models")
    base = save_tiny_model_folder(root / "base")
    chat = save_tiny_model_folder(root / "chat")
    tokenizer = AutoTokenizer.from_pretrained(chat)
    attach_chat_template(tokenizer, "llama2")
    tokenizer.save_pretrained(chat)
    mismatch = root / "mismatch"
    tiny_model(tiny_tokenizer(vocab_size=512)).save_pretrained(mismatch)  # embeds 512 tokens
    larger = tiny_tokenizer(vocab_size=600)
    attach_chat_template(larger, "llama2")
    larger.save_pretrained(mismatch)  # has 600
    (root / "no_model").mkdir()
    (root / "no_model" / "README.md").write_text("notes, no weights\n")
    return {"base": base, "chat": chat, "mismatch": mismatch, "no_model": root / "no_model"}


@pytest.fixture
def no_model_may_load(monkeypatch):
    """Fail the test if anything loads or builds a model (building one on the meta device, for names only, is fine)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(modeling, "load_model", refuse)
    monkeypatch.setattr(modeling, "build_model", refuse)
    for recipe in RECIPES.values():
        for name in ("load_model", "build_model", "load_full_precision"):
            if hasattr(recipe, name):
                monkeypatch.setattr(recipe, name, refuse)


def one_line_error(stage: str, argv: list[str], capsys) -> str:
    """Run the recipe as its script would; return its one `error:` line after checking the exit status is 2."""
    with pytest.raises(SystemExit) as exited:
        run_recipe(RECIPES[stage].main, argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def case(stage, recipe, args, message, setup=None):
    return pytest.param(stage, recipe, args, message, setup, id=message[:48])


def text_file(name: str, data: bytes):
    def make(tmp: Path) -> str:
        (tmp / name).write_bytes(data)
        return str(tmp / name)

    return make


def jsonl_file(name: str, rows: list):
    return lambda tmp: write_jsonl(tmp / name, rows)


def yaml_file(text: str):
    def make(tmp: Path) -> str:
        (tmp / "recipe.yaml").write_text(text)
        return str(tmp / "recipe.yaml")

    return make


WRONG_ORDER = {"messages": [{"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Name a colour."}]}
EMPTY_ANSWER = {"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "  "}]}
FAST_PRETRAIN = ["--max_documents", "12", "--tokenizer_vocab_size", "512", "--block_size", "64"]

# (stage, recipe YAML or None, arguments, the error's text, optional maker of a file whose path replaces "{file}")
CASES = [
    case("pretrain", None, ["--config", "{file}"], "unknown key 'lerning_rate' (did you mean 'learning_rate'?)",
         yaml_file("lerning_rate: 0.001\n")),
    case("sft", "sft.yaml", ["--lerning_rate", "0.1"],
         "unknown option '--lerning_rate' (did you mean 'learning_rate'?)"),
    case("pretrain", None, ["--config", "{file}"], "'max_steps' is 'ten', which is not an integer",
         yaml_file("max_steps: ten\n")),
    case("dpo", "dpo.yaml", ["--beta", "strong"], "argument --beta: invalid float value: 'strong'"),
    case("pretrain", None, ["--config", "{file}"], "recipe.yaml: not valid YAML", yaml_file("max_steps: [1,\n")),
    case("pretrain", None, ["--config", "missing.yaml"], "recipe file not found: missing.yaml"),
    case("pretrain", "pretrain.yaml", ["--dataset_name", "./no/such/corpus.txt"],
         "data file not found: ./no/such/corpus.txt"),
    case("sft", "sft.yaml", ["--dataset_name", "./no/such/chats.jsonl"], "data file not found: ./no/such/chats.jsonl"),
    case("pretrain", "pretrain.yaml", ["--dataset_name", "{file}"], "empty.txt is empty", text_file("empty.txt", b"")),
    case("sft", "sft.yaml", ["--dataset_name", "{file}"], "empty.jsonl: no rows", text_file("empty.jsonl", b"\n\n")),
    case("pretrain", "pretrain.yaml", ["--dataset_name", "{file}"],
         "docs.jsonl has no column 'text'; its columns are content",
         jsonl_file("docs.jsonl", [{"content": "x = 1"}] * 4)),
    case("sft", "sft.yaml", ["--dataset_name", "{file}"],
         "chats.jsonl:1: no known conversation format fits the columns ['text']",
         jsonl_file("chats.jsonl", [{"text": "hello"}])),
    case("sft", "sft.yaml", ["--dataset_name", "{file}"], "chats.jsonl:3: not valid JSON: Expecting value (column 14)",
         jsonl_file("chats.jsonl", [ANSWERED, ANSWERED, '{"messages": ]}', ANSWERED])),
    case("pretrain", "pretrain.yaml", ["--dataset_name", "{file}"], "latin1.txt:2: not UTF-8 text (byte offset 9)",
         text_file("latin1.txt", "x = 1\ncafé = 2\n".encode("latin-1"))),
    case("sft", "sft.yaml", ["--dataset_name", "{file}"], "chats.jsonl: not UTF-8 text (byte offset 122, line 2)",
         text_file("chats.jsonl", json.dumps(ANSWERED).encode() + b'\n{"messages": "caf\xe9"}\n')),
    case("sft", "sft.yaml", ["--dataset_name", "{file}"],
         "chats.jsonl:2: messages[0] is 'assistant' where 'user' was expected",
         jsonl_file("chats.jsonl", [ANSWERED, WRONG_ORDER])),
    case("sft", "sft.yaml", ["--dataset_name", "{file}"], "chats.jsonl:2: messages[1] (assistant) is empty",
         jsonl_file("chats.jsonl", [ANSWERED, EMPTY_ANSWER])),
    case("dpo", "dpo.yaml", ["--dataset_name", "{file}"], "pairs.jsonl:2: 'chosen' and 'rejected' are the same answer",
         jsonl_file("pairs.jsonl", [PAIR, {**PAIR, "rejected": "Blue."}])),
    case("dpo", "dpo.yaml", ["--dataset_name", "{file}"], "pairs.jsonl:1: missing 'rejected'",
         jsonl_file("pairs.jsonl", [{"prompt": "Name a colour.", "chosen": "Blue."}])),
    case("sft", "sft.yaml", ["--use_peft", "true", "--lora_target_modules", "q_proj"],
         "LoRA target module 'q_proj' is not in the model (did you mean 'c_proj'?)"),
    case("dpo", "dpo.yaml", ["--lora_target_modules", "wte"], "LoRA target 'wte' is GPT-2's tied embedding/head"),
    case("sft", "sft.yaml", ["--load_in_4bit", "true"], "load_in_4bit/load_in_8bit trains through LoRA only"),
    case("sft", "sft.yaml", ["--chat_template", "lama2"], "unknown chat template 'lama2' (did you mean 'llama2'?)"),
    case("sft", "sft.yaml", ["--model_name_or_path", "someone/not-cached-model"],
         "'someone/not-cached-model' (revision main) is not a local folder and its tokenizer is not in the Hugging "
         "Face cache, and HF_HUB_OFFLINE=1 forbids downloading it"),
    case("pretrain", "pretrain.yaml", ["--model_name_or_path", "someone/not-cached-model"],
         "its config is not in the Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it"),
    case("pretrain", "pretrain.yaml", ["--dataset_name", "someone/not-cached-corpus"],
         "dataset 'someone/not-cached-corpus' is not a local path and is not in the datasets cache"),
    case("pretrain", "pretrain.yaml", ["--block_size", "1024"], "block_size (1024) is larger than n_positions (512)"),
    case("pretrain", "pretrain.yaml", ["--n_head", "3"], "n_embd (256) must be divisible by n_head (3)"),
    case("pretrain", "pretrain.yaml", ["--use_peft", "true"], "pretraining trains every weight in full precision"),
    case("quantize", "quantize.yaml", ["--model_name_or_path", "{no_model}"], "no_model holds no model"),
    case("quantize", "quantize.yaml", ["--model_name_or_path", "./no/such/folder"],
         "model folder not found: ./no/such/folder"),
]  # fmt: skip


@pytest.mark.parametrize(("stage", "recipe", "args", "message", "setup"), CASES)
def test_bad_input_is_one_line_exit_2_before_any_model_loads(
    stage, recipe, args, message, setup, folders, tmp_path, capsys, no_model_may_load
):
    argv = ["--config", str(TINY / recipe), "--output_dir", str(tmp_path / "out")] if recipe else []
    if stage in ("sft", "dpo"):  # a small valid model and data file, unless the case brings its own
        rows = [PAIR] * 8 if stage == "dpo" else [ANSWERED] * 8
        argv += ["--model_name_or_path", str(folders["chat" if stage == "dpo" else "base"])]
        argv += ["--dataset_name", write_jsonl(tmp_path / "ok.jsonl", rows)]
    if stage != "quantize":
        argv += ["--report_to", "none", *(FAST_PRETRAIN if stage == "pretrain" else [])]
    file = setup(tmp_path) if setup else None
    argv += [arg.replace("{file}", str(file)).replace("{no_model}", str(folders["no_model"])) for arg in args]
    error = one_line_error(stage, argv, capsys)
    assert message in error
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_a_tokenizer_that_does_not_match_the_model_vocab_is_refused(folders, tmp_path, capsys, no_model_may_load):
    argv = ["--config", str(TINY / "dpo.yaml"), "--model_name_or_path", str(folders["mismatch"])]
    argv += ["--dataset_name", write_jsonl(tmp_path / "pairs.jsonl", [PAIR] * 8), "--output_dir", str(tmp_path / "o")]
    error = one_line_error("dpo", argv, capsys)
    assert "the tokenizer has 600 tokens but the model embeds only 512" in error


@pytest.mark.parametrize("stage", ["sft", "quantize"])
def test_4bit_without_bitsandbytes_is_refused_before_loading(stage, folders, tmp_path, capsys, monkeypatch,
                                                             no_model_may_load):  # fmt: skip
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now raises ImportError
    if stage == "sft":
        argv = ["--config", str(TINY / "sft.yaml"), "--model_name_or_path", str(folders["base"]),
                "--dataset_name", write_jsonl(tmp_path / "ok.jsonl", [ANSWERED] * 8),
                "--use_peft", "true", "--load_in_4bit", "true", "--output_dir", str(tmp_path / "o")]  # fmt: skip
        expected = "load_in_4bit needs bitsandbytes: pip install 'bitsandbytes>=0.50'"
    else:
        argv = ["--config", str(TINY / "quantize.yaml"), "--model_name_or_path", str(folders["base"])]
        argv += ["--output_dir", str(tmp_path / "o")]
        expected = "4-bit export needs bitsandbytes"
    assert expected in one_line_error(stage, argv, capsys)


def test_bad_input_as_real_processes(folders, tmp_path):
    """`python recipes/<stage>.py ...`: the exit status and stderr a shell or a scheduler sees."""
    (tmp_path / "typo.yaml").write_text("learning_rate: 0.001\nmax_stepz: 10\n")
    chats = str(tmp_path / "chats.jsonl")
    write_jsonl(tmp_path / "chats.jsonl", [ANSWERED, WRONG_ORDER])
    runs = {
        "pretrain": (["--config", str(tmp_path / "typo.yaml")], "unknown key 'max_stepz' (did you mean 'max_steps'?)"),
        "sft": (["--config", str(TINY / "sft.yaml"), "--model_name_or_path", str(folders["base"]),
                 "--dataset_name", chats, "--output_dir", str(tmp_path / "sft")],
                f"{chats}:2: messages[0] is 'assistant' where 'user' was expected"),
    }  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = {
        stage: subprocess.Popen(
            [sys.executable, f"recipes/{stage}.py", *argv], cwd=REPO_ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for stage, (argv, _) in runs.items()
    }  # fmt: skip
    for stage, process in processes.items():  # started together: their imports overlap
        _, err = process.communicate(timeout=300)
        assert process.returncode == 2, err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and runs[stage][1] in errors[0], err
        assert "Traceback" not in err


# ----------------------------------------------------------------------------------------------------------------
# Not errors
# ----------------------------------------------------------------------------------------------------------------


def test_examples_longer_than_the_model_context_are_left_out_and_counted(folders, tmp_path, caplog):
    """The recipe's max_length (384) exceeds the tiny model's 256 positions: a 300-token conversation would index
    past the position embeddings; it is left out and counted instead."""
    tokenizer = AutoTokenizer.from_pretrained(folders["base"])
    long_text = " ".join(f"word{i}" for i in range(400))
    assert len(tokenizer(long_text)["input_ids"]) > 256
    long = {"messages": [{"role": "user", "content": long_text}, {"role": "assistant", "content": "Long."}]}
    data = write_jsonl(tmp_path / "chats.jsonl", [long] + [ANSWERED] * 19)
    output = tmp_path / "sft"
    RECIPES["sft"].main(
        ["--config", str(TINY / "sft.yaml"), "--model_name_or_path", str(folders["base"]), "--dataset_name", data,
         "--max_steps", "1", "--per_device_train_batch_size", "4", "--eval_steps", "1", "--save_steps", "1",
         "--eval_max_new_tokens", "2", "--eval_before_training", "false", "--report_to", "none",
         "--disable_tqdm", "true", "--output_dir", str(output)]
    )  # fmt: skip
    assert "max_length 384 is more than the model's 256 positions" in caplog.text
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["train_examples_too_long"] + metrics["eval_examples_too_long"] == 1
    assert metrics["train_examples"] + metrics["eval_examples"] == 19


def test_a_tokenizer_without_pad_gets_a_distinct_one_and_pretraining_grows_the_embeddings(tmp_path):
    """Like GPT-2's: bos = eos = <|endoftext|>, no pad, and exactly as many tokens as the model has rows."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from tests.tiny import _sample_texts

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(list(_sample_texts()), trainer=trainer)
    padless = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    assert padless.pad_token is None and len(padless) == 512
    config = modeling.gpt2_config("gpt2-tiny", 512, 0, 0, None, n_layer=2, n_head=2, n_embd=64, n_positions=256)
    modeling.build_model(config).save_pretrained(tmp_path / "hub_like")
    padless.save_pretrained(tmp_path / "hub_like")

    loaded = load_tokenizer(str(tmp_path / "hub_like"))
    assert (loaded.pad_token, loaded.pad_token_id, loaded.eos_token_id) == ("<pad>", 512, 0)

    output = tmp_path / "pretrain"
    RECIPES["pretrain"].main(
        ["--config", str(TINY / "pretrain.yaml"), "--model_name_or_path", str(tmp_path / "hub_like"), *FAST_PRETRAIN,
         "--max_steps", "1", "--per_device_train_batch_size", "2", "--eval_blocks", "2", "--eval_steps", "1",
         "--save_steps", "1", "--report_to", "none", "--disable_tqdm", "true", "--output_dir", str(output)]
    )  # fmt: skip
    saved = AutoTokenizer.from_pretrained(output)
    assert saved.pad_token == "<pad>" and saved.pad_token_id != saved.eos_token_id
    embeddings = load_file(output / "model.safetensors")["transformer.wte.weight"]
    assert embeddings.shape[0] == 576  # 513 tokens, padded to a multiple of 64
    assert torch.isfinite(embeddings).all()
