"""The built-in corpus split, packing, local sources and their errors, and tokenizer special tokens."""

import json
import os
import random
import re

import pytest

from hf_recipes.data import stdlib
from hf_recipes.data.curriculum import BlockCurriculum, copy_rich_positions
from hf_recipes.data.packing import pack_dataset, pack_ids
from hf_recipes.data.sources import BUILTIN_CHAT_TASK, load_chat_source, load_chat_splits, load_text_source
from hf_recipes.runtime import RecipeError
from hf_recipes.tokenization import check_special_tokens, ensure_special_tokens
from tests.conftest import REPO_ROOT
from tests.tiny import tiny_tokenizer


def test_stdlib_split_is_deterministic_disjoint_and_complete():
    train = stdlib.split_modules("train")
    validation = stdlib.split_modules("validation")
    assert train == stdlib.split_modules("train")  # same answer every time (a hash, not a random draw)
    assert set(train).isdisjoint(validation)
    assert sorted(train + validation) == stdlib.stdlib_modules()
    assert 0.02 < len(validation) / len(train + validation) < 0.09  # ~5% held out
    assert not any("/test/" in m or "site-packages" in m or m.split("/")[-1].startswith("test_") for m in train)


def test_the_split_is_the_same_in_processes_with_different_hash_seeds():
    """Python salts str hashes per process: a split built on hash() would differ between two runs."""
    import subprocess
    import sys

    code = "from hf_recipes.data import stdlib; print(','.join(stdlib.split_modules('validation')))"

    def split_in_a_process(seed: str) -> str:
        env = {**os.environ, "PYTHONHASHSEED": seed}
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout

    splits = {split_in_a_process(seed) for seed in ("1", "2", "random")}
    assert len(splits) == 1 and splits.pop().count(",") > 5


def test_split_depends_only_on_the_path():
    assert stdlib.split_of("json/decoder.py") == stdlib.split_of("json/decoder.py")
    buckets = {stdlib.split_of(f"pkg/module_{i}.py", validation_percent=50) for i in range(50)}
    assert buckets == {"train", "validation"}


def test_function_name_task_keeps_the_module_split():
    validation = stdlib.function_name_conversations("validation", limit=200)
    train_names = {c["messages"][1]["content"] for c in stdlib.function_name_conversations("train", limit=3000)}
    assert len(validation) == 200
    first = validation[0]["messages"]
    assert [m["role"] for m in first] == ["system", "user", "assistant"]
    assert first[0]["content"] == "You are a helpful assistant in programming."
    assert first[1]["content"].startswith("Extract the function name from the code.\n\n")
    for conversation in validation:
        code, name = conversation["messages"][1]["content"], conversation["messages"][2]["content"]
        assert f"def {name}(" in code
    # Same prompt text can only repeat across splits if two modules hold identical functions; codes must differ
    # module by module, so at least nearly all validation prompts are unseen in training.
    unseen = sum(c["messages"][1]["content"] not in train_names for c in validation)
    assert unseen / len(validation) > 0.9


def test_renamed_function_replaces_every_whole_word_use_and_keeps_private_underscores():
    code = "def _parse(text):\n    return _parse_more(text) or _parse(text[1:])"
    words = stdlib.MadeUpNames(("alpha", "beta", "gamma"))
    name, renamed = stdlib.renamed_function("_parse", code, words, random.Random(0))
    assert name.startswith("_") and name != "_parse" and set(name.lstrip("_").split("_")) <= {"alpha", "beta", "gamma"}
    assert renamed == code.replace("_parse(", f"{name}(")  # _parse_more is another name and stays
    pieces = stdlib.MadeUpNames(("alpha",))
    assert stdlib.renamed_function("__init__", "def __init__(self): pass", pieces, random.Random(0))[0] == "__init__"
    taken = "def f1(alpha):\n    return alpha"
    assert stdlib.renamed_function("f1x", taken.replace("f1", "f1x"), pieces, random.Random(0))[0] == "f1x"


def test_vocabulary_names_are_the_tokenizers_identifier_pieces_in_three_styles():
    tokenizer = tiny_tokenizer()
    names = stdlib.vocabulary_names(tokenizer)
    texts = {tokenizer.convert_tokens_to_string([token]) for token in tokenizer.get_vocab()}
    # Every piece is a vocabulary entry, less its leading space or underscores, and reads as an identifier.
    assert names.pieces and all(re.fullmatch(r"[A-Za-z][A-Za-z0-9]+", piece) for piece in names.pieces)
    assert all(any(text.strip().lstrip("_") == piece for text in texts) for piece in names.pieces)
    assert not any(piece.isdigit() or piece.startswith("_") for piece in names.pieces)
    made_up = [
        stdlib.renamed_function("parse_header", "def parse_header(line):\n    pass", names, random.Random(seed))[0]
        for seed in range(60)
    ]
    # Snake, concatenated and camel case all come up; no name keeps the old one.
    assert any("_" in name for name in made_up)
    assert any(name[:1].isupper() and "_" not in name for name in made_up)
    assert any(name[:1].islower() and "_" not in name for name in made_up)
    assert "parse_header" not in made_up
    with pytest.raises(ValueError, match="unknown name style"):
        names.join(["a", "b"], "kebab")


@pytest.mark.parametrize(
    ("name", "words", "style"),
    [
        ("_get_default_args", ["get", "default", "args"], "snake"),
        ("GetKeySet", ["Get", "Key", "Set"], "camel"),
        ("getHTTPServer", ["get", "HTTP", "Server"], "camel"),
        ("mksalt", ["mksalt"], "concatenated"),
        ("parse150", ["parse150"], "concatenated"),
    ],
)
def test_name_words_cut_a_name_into_its_words_and_style(name, words, style):
    assert stdlib.name_words(name) == (words, style)


def test_kept_words_share_keeps_first_words_in_the_names_own_style_and_only_when_asked():
    pieces = ("alpha", "beta", "gamma")
    code = "def {}(x):\n    return x"
    kept = stdlib.MadeUpNames(pieces, ("snake", "camel"), kept_words_share=1.0)
    snake = {stdlib.renamed_function("_get_raw_value", code.format("_get_raw_value"), kept, random.Random(seed))[0]
             for seed in range(40)}  # fmt: skip
    for name in snake:
        words = name[1:].split("_")
        assert name.startswith("_get_") and 2 <= len(words) <= 4 and set(words[-1:]) <= set(pieces)
    assert any(name.startswith("_get_raw_") for name in snake) and any(name.count("_") == 2 for name in snake)
    camel = {stdlib.renamed_function("getKeySet", code.format("getKeySet"), kept, random.Random(seed))[0]
             for seed in range(40)}  # fmt: skip
    assert all(re.fullmatch(r"get(Key)?(Alpha|Beta|Gamma){1,2}", name) for name in camel)
    # One word: nothing to keep, a whole new name. No share: the same names as before the option existed.
    assert stdlib.renamed_function("mksalt", code.format("mksalt"), kept, random.Random(0))[0].lower() != "mksalt"
    plain = stdlib.MadeUpNames(pieces, ("snake", "camel"))
    for seed in range(20):
        rng, same = random.Random(seed), random.Random(seed)
        expected = plain.join(same.sample(pieces, same.randint(1, 3)), same.choice(plain.styles))
        assert stdlib.renamed_function("get_raw", code.format("get_raw"), plain, rng)[0] == expected


def test_kept_words_share_needs_vocabulary_pieces_and_a_share():
    from dataclasses import replace

    from hf_recipes.config import parse_stage
    from hf_recipes.data.sources import load_training_splits

    data = parse_stage("sft", ["--renamed_function_share", "0.5", "--renamed_function_kept_words_share", "0.5"])[0]
    data = replace(data, max_train_examples=50, max_eval_examples=10)
    with pytest.raises(RecipeError, match="needs renamed_function_pieces: vocabulary"):
        load_training_splits(load_chat_splits, data, seed=0, tokenizer=tiny_tokenizer())
    data = replace(data, renamed_function_pieces="vocabulary", renamed_function_kept_words_share=1.5)
    with pytest.raises(RecipeError, match=r"within \[0, 1\], not 1.5"):
        load_training_splits(load_chat_splits, data, seed=0, tokenizer=tiny_tokenizer())


def test_vocabulary_names_reach_the_training_split_only_and_need_a_tokenizer():
    from dataclasses import replace

    from hf_recipes.config import parse_stage
    from hf_recipes.data.sources import load_training_splits

    data = parse_stage("sft", ["--renamed_function_share", "1.0", "--renamed_function_pieces", "vocabulary"])[0]
    data = replace(data, max_train_examples=200, max_eval_examples=50)
    with pytest.raises(RecipeError, match="needs the model's tokenizer"):
        load_training_splits(load_chat_splits, data, seed=0)

    class NumbersOnly:  # a vocabulary with nothing to make a name of
        def get_vocab(self):
            return {"12": 0, "+": 1, "Ġ0x1f": 2}

        def convert_tokens_to_string(self, tokens):
            return "".join(tokens).replace("Ġ", " ")

    with pytest.raises(RecipeError, match="no identifier-like tokens"):
        load_training_splits(load_chat_splits, data, seed=0, tokenizer=NumbersOnly())
    tokenizer = tiny_tokenizer()
    train, held_out = load_training_splits(load_chat_splits, data, seed=0, tokenizer=tokenizer)
    pieces = {piece.lower() for piece in stdlib.vocabulary_names(tokenizer).pieces}

    def made_of_pieces(name: str) -> bool:  # the name, less underscores, cut into pieces (case aside): a DP
        text = name.replace("_", "").lower()
        ends = {0}
        for end in range(1, len(text) + 1):
            if any(text[start:end] in pieces for start in ends if start < end):
                ends.add(end)
        return len(text) in ends

    real = load_training_splits(load_chat_splits, replace(data, renamed_function_share=0.0), seed=0)[0]
    renamed = [c["messages"][-1]["content"] for c, r in zip(train, real, strict=True) if c != r]
    assert len(renamed) > 100  # of 200: dunders and short names keep theirs
    assert all(made_of_pieces(name) for name in renamed)
    for conversation in train:
        code, name = conversation["messages"][1]["content"], conversation["messages"][2]["content"]
        assert re.search(rf"\bdef {re.escape(name)} ?\(", code)
    assert held_out == load_training_splits(load_chat_splits, replace(data, renamed_function_share=0.0), seed=0)[1]
    assert not made_of_pieces("_exhaustive_zz_qq_xx")  # the check can fail


def test_renamed_share_renames_training_functions_only_and_consistently():
    real = stdlib.function_name_conversations("train", limit=600)
    mixed = stdlib.function_name_conversations("train", limit=600, renamed_share=0.5)
    assert stdlib.function_name_conversations("train", limit=600, renamed_share=0.5) == mixed  # stable choice
    renamed = [m for r, m in zip(real, mixed, strict=True) if r != m]
    assert 0.25 < len(renamed) / len(real) < 0.5  # dunders and short names keep theirs
    for conversation in renamed:
        code, name = conversation["messages"][1]["content"], conversation["messages"][2]["content"]
        assert re.search(rf"\bdef {re.escape(name)} ?\(", code)  # _pydecimal writes `def scaleb (self`
    train, held_out = load_chat_splits(
        BUILTIN_CHAT_TASK,
        renamed_share=1.0,
        max_train=50,
        max_eval=50,
    )
    assert held_out == stdlib.function_name_conversations("validation", limit=50)
    assert train != stdlib.function_name_conversations("train", limit=50)


def code_chars(conversations: list[dict]) -> int:
    return sum(len(conversation["messages"][1]["content"]) for conversation in conversations)


def test_code_lines_cut_training_functions_to_their_first_lines_only():
    whole = stdlib.function_name_conversations("train", limit=300)
    cut = stdlib.function_name_conversations("train", limit=300, code_lines=3)
    for long, short in zip(whole, cut, strict=True):
        code, name = short["messages"][1]["content"], short["messages"][2]["content"]
        assert name == long["messages"][2]["content"] and long["messages"][1]["content"].startswith(code)
        assert len(code.splitlines()) <= 2 + 3  # the instruction, a blank line, three lines of code
        assert re.search(rf"\bdef {re.escape(name)} ?\(", code)  # the def line is always kept
    assert code_chars(cut) < 0.7 * code_chars(whole)
    train, held_out = load_chat_splits(BUILTIN_CHAT_TASK, code_lines=3, max_train=50, max_eval=50)
    assert held_out == stdlib.function_name_conversations("validation", limit=50)  # held-out functions stay whole
    assert train == stdlib.function_name_conversations("train", limit=50, code_lines=3)


def test_renamed_share_and_code_lines_leave_other_data_as_it_is(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"prompt": "def f(): pass\n    return 1", "completion": "f"}) + "\n")
    as_is = load_chat_source(str(path), "train")
    assert load_chat_source(str(path), "train", renamed_share=0.5, code_lines=1) == as_is


def test_pack_ids_joins_with_eos_and_keeps_only_full_blocks():
    blocks, left_over = pack_ids([[5, 6, 7], [8, 9], [10]], block_size=4, eos_token_id=2)
    assert blocks == [[5, 6, 7, 2], [8, 9, 2, 10]]
    assert left_over == 1


def test_packed_dataset_has_full_blocks_whose_labels_are_the_inputs(tmp_path):
    tokenizer = tiny_tokenizer()
    corpus = load_text_source("stdlib")
    packed = pack_dataset(corpus["validation"].select(range(5)), tokenizer, block_size=64)
    assert packed.column_names == ["input_ids", "labels"]
    assert len(packed) > 10
    assert all(len(row["input_ids"]) == 64 and row["labels"] == row["input_ids"] for row in packed)
    assert any(tokenizer.eos_token_id in row["input_ids"] for row in packed)  # documents joined by eos
    assert not any(tokenizer.pad_token_id in row["input_ids"] for row in packed)  # no padding at all


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_twice_spans(block) -> list[int]:
    """The span lengths of a block made of spans each read twice in a row (a a b b ...), the last one maybe cut."""
    lengths, start = [], 0
    while start < len(block):
        for length in range(1, len(block) - start + 1):
            first, second = block[start : start + length], block[start + length : start + 2 * length]
            if len(second) < length:  # the cut end: its second reading is a prefix of the first
                if list(second) == list(first[: len(second)]) and start + length + len(second) == len(block):
                    return [*lengths, length]
            elif list(first) == list(second):
                lengths.append(length)
                start += 2 * length
                break
        else:
            raise AssertionError(f"no repeated span at {start}")
    return lengths


def test_a_copy_rich_block_is_its_own_text_in_spans_each_read_twice():
    import numpy as np

    block = np.arange(1000, 1512)  # distinct tokens: a repeat can only come from the rewrite
    rewritten = block[copy_rich_positions(512, np.random.default_rng(0), 16, 64)]
    assert len(rewritten) == 512
    lengths = read_twice_spans(rewritten)
    assert all(16 <= length <= 64 for length in lengths[:-1])
    firsts = np.concatenate([rewritten[sum(2 * n for n in lengths[:i]) :][:n] for i, n in enumerate(lengths)])
    assert list(firsts) == list(block[: len(firsts)])  # the block's own text, in order, about half of it


def distinct_blocks(rows: int, block_size: int) -> dict:
    import torch

    ids = torch.arange(rows * block_size).reshape(rows, block_size)
    return {"input_ids": ids, "labels": ids.clone()}


def test_copy_rich_share_fades_by_step_and_rewrites_inputs_and_labels_alike():
    curriculum = BlockCurriculum(block_size=128, copy_share=0.8, copy_span=(8, 16), copy_fade_steps=100, seed=42)
    assert [curriculum.copy_share_at(step) for step in (0, 50, 100, 500)] == pytest.approx([0.8, 0.4, 0.0, 0.0])
    batch = distinct_blocks(200, 128)
    drawn = batch["input_ids"].clone()

    def rewritten_rows(step):
        out = curriculum(batch, step)
        assert (out["labels"] == out["input_ids"]).all()
        return [row for row in range(200) if not (out["input_ids"][row] == batch["input_ids"][row]).all()]

    at_start, halfway = rewritten_rows(0), rewritten_rows(50)
    assert 140 <= len(at_start) <= 180 and 60 <= len(halfway) <= 100  # ~80% and ~40% of 200
    assert all(read_twice_spans(curriculum(batch, 0)["input_ids"][row].tolist()) for row in at_start[:5])
    assert rewritten_rows(100) == []
    assert curriculum(batch, 0)["input_ids"].equal(curriculum(batch, 0)["input_ids"])  # the same step, the same
    assert not curriculum(batch, 0)["input_ids"].equal(curriculum(batch, 0, stream=1)["input_ids"])
    assert batch["input_ids"].equal(drawn) and batch["labels"].equal(drawn)  # the drawn batch is left as it was


def test_short_blocks_grow_by_powers_of_two_and_keep_every_token_in_order():
    curriculum = BlockCurriculum(block_size=512, short_block_start=64, short_block_steps=300)
    lengths = {step: curriculum.sequence_length_at(step) for step in (0, 42, 43, 128, 129, 299, 300, 10_000)}
    assert lengths == {0: 64, 42: 64, 43: 128, 128: 128, 129: 256, 299: 256, 300: 512, 10_000: 512}
    batch = distinct_blocks(4, 512)
    short = curriculum(batch, 0)
    assert short["input_ids"].shape == (32, 64)
    assert short["input_ids"].flatten().equal(batch["input_ids"].flatten())  # cut, not shuffled or dropped
    assert curriculum(batch, 300)["input_ids"].shape == (4, 512)


def test_no_curriculum_unless_the_recipe_asks():
    from hf_recipes.config import parse_stage

    recipe = ["--config", str(REPO_ROOT / "recipes/gpt2-tiny/pretrain.yaml")]
    data_args, _, training_args = parse_stage("pretrain", recipe)
    assert BlockCurriculum.from_arguments(data_args, training_args) is None
    data_args, _, training_args = parse_stage(
        "pretrain", [*recipe, "--copy_block_share", "1", "--copy_block_share_fade_steps", "300",
                     "--block_size_warmup_steps", "300"]
    )  # fmt: skip
    curriculum = BlockCurriculum.from_arguments(data_args, training_args)
    assert (curriculum.copy_share, curriculum.copy_fade_steps, curriculum.short_block_start) == (1.0, 300, 64)
    assert curriculum.describe() == (
        "100% of the blocks copy-rich (16-64-token spans read twice, fading to 0 by step 300); sequences of 64 "
        "tokens growing to 512 by step 300 (the same tokens per step)"
    )


def test_local_jsonl_folder_and_txt_load(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": f"document {i}"} for i in range(40)])
    data = load_text_source(str(tmp_path / "a.jsonl"), validation_percent=10)
    assert (len(data["train"]), len(data["validation"])) == (36, 4)
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "one.txt").write_text("line one\nline two\n")
    (tmp_path / "txt" / "two.txt").write_text("line three\n")
    data = load_text_source(str(tmp_path / "txt"), validation_percent=34)
    assert len(data["train"]) + len(data["validation"]) == 3


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: d / "nope.jsonl", "data file not found"),
        (lambda d: write_jsonl(d / "c.jsonl", [{"content": "x"}]), "has no column 'text'; its columns are content"),
        (lambda d: write_jsonl(d / "e.jsonl", []), "is empty"),
        (lambda d: (d / "b.txt").write_bytes(b"ok\n\xff\xfe bad\n") and d / "b.txt", "b.txt:2: not UTF-8 text"),
        (lambda d: (d / "sub").mkdir() or d / "sub", "no data files"),
        (lambda d: (d / "x.xml").write_text("<a/>") and d / "x.xml", "unsupported file type"),
    ],
)
def test_source_errors_name_the_problem(tmp_path, setup, message):
    with pytest.raises(RecipeError, match=None) as error:
        load_text_source(str(setup(tmp_path)))
    assert message in str(error.value)


def test_uncached_hub_dataset_while_offline_says_so():
    with pytest.raises(RecipeError, match=r"not in the datasets cache.*offline"):
        load_text_source("someone/not-a-cached-dataset")


def test_trained_tokenizer_has_distinct_bos_eos_pad():
    tokenizer = tiny_tokenizer()
    ids = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    assert len(ids) == 3 and None not in ids
    assert tokenizer.decode(tokenizer("def f(x):\n    return x").input_ids) == "def f(x):\n    return x"


def test_pad_equal_to_eos_is_replaced_or_refused():
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    with pytest.raises(RecipeError, match="never learn to stop"):
        check_special_tokens(tokenizer)
    fixed = ensure_special_tokens(tokenizer)
    assert fixed.pad_token_id != fixed.eos_token_id
