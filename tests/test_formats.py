"""SFT row shapes become checked messages, and every data problem names its file:line or dataset row."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset

from hf_recipes.data.formats import (
    conversations_from_rows,
    dataset_rows,
    detect_format,
    jsonl_rows,
    read_jsonl,
    validate_conversation,
)
from hf_recipes.runtime import RecipeError

SYSTEM = {"role": "system", "content": "Be brief."}


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


def convert(*rows: dict) -> list[list[dict[str, str]]]:
    located = [(f"rows.jsonl:{index}", row) for index, row in enumerate(rows, start=1)]
    return [conversation["messages"] for conversation in conversations_from_rows(located)]


def error_of(function, *args, **kwargs) -> str:
    """The message of the RecipeError that `function(*args, **kwargs)` raises."""
    with pytest.raises(RecipeError) as info:
        function(*args, **kwargs)
    return str(info.value)


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["messages"], "messages"),
        (["messages", "prompt", "completion", "id"], "messages"),
        (["prompt", "completion"], "prompt_completion"),
        (["instruction", "input", "output"], "alpaca"),
        (["instruction", "output", "text"], "alpaca"),
        (["conversations", "id"], "sharegpt"),
    ],
)
def test_detect_format(columns, expected):
    assert detect_format(columns) == expected


def test_detect_format_names_the_columns_found():
    message = error_of(detect_format, ["b", "a"], "data.jsonl:1")
    assert message.startswith("data.jsonl:1: no known conversation format fits the columns ['a', 'b']; expected")


def test_messages_rows_keep_role_and_content_only():
    row = {"messages": [{**SYSTEM, "name": "x"}, user("Hi"), assistant("Hello")], "id": 7}
    assert convert(row) == [[SYSTEM, user("Hi"), assistant("Hello")]]


def test_prompt_completion_strings_and_message_lists():
    assert convert({"prompt": "2 + 2?", "completion": "4"}) == [[user("2 + 2?"), assistant("4")]]
    row = {"prompt": [SYSTEM, user("a"), assistant("b"), user("c")], "completion": [assistant("d")]}
    assert convert(row) == [[SYSTEM, user("a"), assistant("b"), user("c"), assistant("d")]]


@pytest.mark.parametrize("empty_input", [None, "", "  \n"])
def test_alpaca_without_input(empty_input):
    row = {"instruction": "Name a colour.", "input": empty_input, "output": "Blue."}
    assert convert(row) == [[user("Name a colour."), assistant("Blue.")]]
    assert convert({"instruction": "Name a colour.", "output": "Blue."}) == [
        [user("Name a colour."), assistant("Blue.")]
    ]


def test_alpaca_input_joined_with_blank_line():
    row = {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"}
    assert convert(row) == [[user("Translate to French.\n\nGood morning"), assistant("Bonjour")]]


def test_sharegpt_roles_are_mapped():
    row = {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "a"},
            {"from": "gpt", "value": "b"},
            {"from": "user", "value": "c"},
            {"from": "bot", "value": "d"},
            {"from": "user", "value": "e"},
            {"from": "assistant", "value": "f"},
        ]
    }
    expected = [SYSTEM, user("a"), assistant("b"), user("c"), assistant("d"), user("e"), assistant("f")]
    assert convert(row) == [expected]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            {"conversations": [{"from": "humna", "value": "a"}]},
            "rows.jsonl:1: conversations[0] is from 'humna' (did you mean 'human'?); expected one of human, user,",
        ),
        (
            {"conversations": [{"from": "human"}]},
            "rows.jsonl:1: conversations[0] must be an object with 'from' and 'value'",
        ),
        ({"conversations": "hi"}, "rows.jsonl:1: 'conversations' must be a list of turns, got a string"),
        ({"instruction": "a", "output": None}, "rows.jsonl:1: missing 'output' (the alpaca format needs it)"),
        ({"instruction": "a", "input": 3, "output": "b"}, "rows.jsonl:1: 'input' must be a string, got a number"),
        ({"prompt": "a", "completion": {"x": 1}}, "rows.jsonl:1: 'completion' must be a string or a list of messages"),
        ({"messages": "hi"}, "rows.jsonl:1: 'messages' must be a list of messages, got a string"),
        ({"messages": [user("a"), {"role": "gpt", "content": "b"}]}, "rows.jsonl:1: messages[1] has unknown role"),
    ],
)
def test_conversion_errors_name_the_row(row, expected):
    assert error_of(convert, row).startswith(expected)


def test_format_is_detected_from_the_first_row_and_required_of_every_row():
    message = error_of(convert, {"prompt": "a", "completion": "b"}, {"prompt": "a", "answer": "b"})
    assert message == "rows.jsonl:2: missing 'completion' (the prompt_completion format needs it)"


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([], "messages must be a non-empty list of {role, content} objects"),
        ("hello", "messages must be a non-empty list of {role, content} objects"),
        (["hello"], "messages[0] must be an object with 'role' and 'content', got a string"),
        ([{"content": "a"}], "messages[0] has no 'role' string"),
        (
            [{"role": "usr", "content": "a"}],
            "messages[0] has unknown role 'usr' (did you mean 'user'?); expected system, user, assistant",
        ),
        ([{"role": "user"}, assistant("b")], "messages[0] (user) has no 'content' string (got null)"),
        (
            [user("a"), {"role": "assistant", "content": ["b"]}],
            "messages[1] (assistant) has no 'content' string (got a list)",
        ),
        ([assistant("b")], "messages[0] is 'assistant' where 'user' was expected; after an optional system message"),
        ([SYSTEM, assistant("b")], "messages[1] is 'assistant' where 'user' was expected"),
        ([user("a"), user("b"), assistant("c")], "messages[1] is 'user' where 'assistant' was expected"),
        ([user("a"), SYSTEM, assistant("c")], "messages[1] is a system message; only the first message may be one"),
        ([user("a"), assistant(" \n")], "messages[1] (assistant) is empty; there is nothing to learn from it"),
        ([SYSTEM], "the conversation has a system message but no user message"),
        ([user("a")], "the conversation ends with a user message; it must end with the assistant's answer"),
        ([user("a"), assistant("b"), user("c")], "the conversation ends with a user message"),
    ],
)
def test_validate_conversation_errors(messages, expected):
    assert error_of(validate_conversation, messages, "dataset 'x' row 17").startswith(
        f"dataset 'x' row 17: {expected}"
    )


def test_validate_conversation_accepts_well_formed_rows():
    validate_conversation([SYSTEM, user(""), assistant("b"), user("c"), assistant("d")], "here")
    validate_conversation([user("a"), assistant("b"), user("c")], "here", require_answer=False)


def test_read_jsonl_numbers_lines_and_skips_blank_ones(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n  \r\n{"a": "\xc3\xa9\xe2\x80\xa8"}\r\n{"a": 3}')
    assert list(read_jsonl(path)) == [(1, {"a": 1}), (4, {"a": "é\u2028"}), (5, {"a": 3})]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"a": 1}\n{"a": 2,}\n', ":2: not valid JSON: Expecting property name enclosed in double quotes (column 9)"),
        (b'{"a": 1}\n\n[1, 2]\n', ":3: a row must be a JSON object, got a list"),
        (b'"text"\n', ":1: a row must be a JSON object, got a string"),
        # 9 bytes of line 1 + 10 bytes of '{"a": "caf' = offset 19 for the Latin-1 \xe9.
        (b'{"a": 1}\n{"a": "caf\xe9"}\n', ": not UTF-8 text (byte offset 19, line 2)"),
    ],
)
def test_read_jsonl_errors_carry_path_and_line(tmp_path, content, expected):
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    assert error_of(list, read_jsonl(path)) == f"{path}{expected}"


def test_read_jsonl_missing_file(tmp_path):
    assert error_of(list, read_jsonl(tmp_path / "nope.jsonl")).startswith(f"{tmp_path / 'nope.jsonl'}: cannot read")


def test_jsonl_row_missing_messages_names_its_line(tmp_path):
    good = {"messages": [user("a"), assistant("b")]}
    path = write_jsonl(tmp_path / "train.jsonl", [good, good, {"message": [user("a"), assistant("b")]}])
    assert error_of(conversations_from_rows, jsonl_rows(path)).startswith(f"{path}:3: missing 'messages'")
    path = write_jsonl(tmp_path / "ok.jsonl", [good, {"prompt": "x", "messages": [user("c"), assistant("d")]}])
    assert conversations_from_rows(jsonl_rows(path)) == [good, {"messages": [user("c"), assistant("d")]}]


def test_dataset_rows_locations_and_null_filled_columns():
    # datasets fills a column a row lacks with None: alpaca rows without `input` must still convert.
    dataset = Dataset.from_list(
        [
            {"instruction": "a", "input": "b", "output": "c"},
            {"instruction": "d", "output": "e"},
            {"instruction": "f", "input": "g", "output": ""},
        ]
    )
    message = error_of(conversations_from_rows, dataset_rows(dataset, "x"))
    assert message.startswith("dataset 'x' row 2: messages[1] (assistant) is empty")
    assert conversations_from_rows(dataset_rows(dataset.select(range(2)), "x")) == [
        {"messages": [user("a\n\nb"), assistant("c")]},
        {"messages": [user("d"), assistant("e")]},
    ]


def test_no_rows_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    path = tmp_path / "empty.jsonl"
    assert error_of(conversations_from_rows, jsonl_rows(path), source=str(path)) == f"{path}: no rows"


# ---------------------------------------------------------------------------------------------------------------
# Compressed local files, and TRL's implicit-prompt preference rows
# ---------------------------------------------------------------------------------------------------------------

CHAT_ROWS = [
    {
        "messages": [
            {"role": "user", "content": f"Name {i}: def f{i}(): pass"},
            {"role": "assistant", "content": f"f{i}"},
        ]
    }
    for i in range(4)
]


def compressed(path, data: bytes, compression: str):
    import bz2
    import gzip
    import lzma

    opener = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}[compression]
    with opener(path, "wb") as handle:
        handle.write(data)
    return path


@pytest.mark.parametrize("compression", ["gz", "bz2", "xz"])
def test_compressed_local_files_load_as_the_plain_ones_do(tmp_path, compression):
    from hf_recipes.data.sources import load_chat_source, load_text_source

    lines = "".join(json.dumps(row) + "\n" for row in CHAT_ROWS).encode()
    (tmp_path / "rows.jsonl").write_bytes(lines)
    packed = compressed(tmp_path / f"rows.jsonl.{compression}", lines, compression)
    assert load_chat_source(str(packed), "train") == load_chat_source(str(tmp_path / "rows.jsonl"), "train")
    # A bad row is still named by its file and line.
    bad = compressed(tmp_path / f"bad.jsonl.{compression}", lines + b'{"messages": "oops"}\n', compression)
    with pytest.raises(RecipeError, match=rf"bad\.jsonl\.{compression}:5: "):
        load_chat_source(str(bad), "train")
    # Text for pretraining, through the `datasets` builder.
    text = compressed(
        tmp_path / f"corpus.txt.{compression}", b"".join(b"line %d\n" % i for i in range(40)), compression
    )
    corpus = load_text_source(str(text), validation_percent=10.0)
    assert len(corpus["train"]) + len(corpus["validation"]) == 40


def test_an_unsupported_compressed_file_says_what_is_supported(tmp_path):
    from hf_recipes.data.sources import load_chat_source

    (tmp_path / "rows.pdf.gz").write_bytes(b"")
    with pytest.raises(RecipeError, match=r"rows\.pdf\.gz: unsupported file type; use one of .* \(or compressed: .gz"):
        load_chat_source(str(tmp_path / "rows.pdf.gz"), "train")


def test_implicit_prompt_preference_rows_become_the_explicit_pair(tmp_path):
    from hf_recipes.data.sources import load_preference_source

    shared = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name: def area(w, h): ..."}]
    implicit = {"chosen": [*shared, {"role": "assistant", "content": "area"}],
                "rejected": [*shared, {"role": "assistant", "content": "w"}]}  # fmt: skip
    explicit = {"prompt": shared, "chosen": "area", "rejected": "w"}
    (tmp_path / "implicit.jsonl").write_text(json.dumps(implicit) + "\n")
    (tmp_path / "explicit.jsonl").write_text(json.dumps(explicit) + "\n")
    pairs = load_preference_source(str(tmp_path / "implicit.jsonl"), "train")
    assert pairs == load_preference_source(str(tmp_path / "explicit.jsonl"), "train")
    assert pairs[0]["prompt"] == shared and pairs[0]["chosen"] == [{"role": "assistant", "content": "area"}]

    def turns(user, assistant):
        return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]

    nothing_shared = {"chosen": turns("a", "b"), "rejected": turns("c", "d")}
    (tmp_path / "unshared.jsonl").write_text(json.dumps(nothing_shared) + "\n")
    with pytest.raises(RecipeError, match=r"unshared\.jsonl:1: 'chosen' and 'rejected' share no first turns"):
        load_preference_source(str(tmp_path / "unshared.jsonl"), "train")
