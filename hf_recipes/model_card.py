"""The model card: what a stage folder is, how to load it, and only the numbers it measured (nothing it did not).

write_model_card("outputs/gpt2-tiny/sft", "me/tiny-chat")   # README.md with Hub metadata, before a push
"""

from __future__ import annotations

import json
import math
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

from hf_recipes.chat import TEMPLATES_PACKAGE
from hf_recipes.data.files import looks_like_a_data_file
from hf_recipes.run_folder import ADAPTER_FOLDER, NOT_VERIFIED_FILE, config_value, model_folder_kind, read_run_config

CARD_TEMPLATE = "model_card.md"


HEADLINE_METRICS = {
    "exact_match": "Exact match",
    "stop_rate": "Stop rate",
    "perplexity": "Perplexity",
    "eval_loss": "Eval loss",
}


BUILT_IN_DATASETS = {
    "stdlib": "Python standard library source (held-out modules)",
    "stdlib-function-name": "Function-name task on the Python standard library (held-out modules)",
}


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def stage_of(run_config: dict[str, Any], model_config: dict[str, Any]) -> str:
    """pretrain, sft, dpo, quantize... as recorded; a 4-bit folder without a record is 'quantize'."""
    if run_config.get("stage"):
        return str(run_config["stage"])
    if "QuantizeArguments" in run_config.get("config", {}) or "quantization_config" in model_config:
        return "quantize"
    return "unknown"


def is_hub_id(name: str | None) -> bool:
    """True for something that names a Hub repository rather than a local path or a built-in source."""
    if not name or name in BUILT_IN_DATASETS or os.path.exists(name) or name.startswith((".", "/", "~")):
        return False
    return bool(HUB_ID.match(name)) and not looks_like_a_data_file(name.lower())


def own_metrics(metrics: dict[str, Any], stage: str) -> dict[str, float]:
    """This model's headline numbers: a 4-bit export's are the `*_4bit` ones (`*_full` measured its source)."""
    suffix = "_4bit" if stage == "quantize" else ""
    own = {}
    for name in HEADLINE_METRICS:
        value = metrics.get(name + suffix)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            own[name] = value
    return own


def recipe_datasets(run_config: dict[str, Any]) -> list[str]:
    """The data a stage trained on: its dataset_mixture's sources, else its dataset_name."""
    mixture = config_value(run_config, "dataset_mixture")
    if mixture:
        from hf_recipes.data.mixture import parse_mixture

        return [source.path for source in parse_mixture(mixture)]
    name = config_value(run_config, "dataset_name")
    return [str(name)] if name else []


def _dataset_for(metric: str, run_config: dict[str, Any], stage: str) -> tuple[str, str]:
    """(dataset id, split) a metric was measured on, from the recipe; the 4-bit check uses the built-in data."""
    if stage == "quantize":
        return ("stdlib" if metric == "perplexity" else "stdlib-function-name"), "validation"
    name = " + ".join(recipe_datasets(run_config)) or "unknown"
    return name, str(config_value(run_config, "dataset_test_split") or "validation")


def _rounded(value: Any) -> Any:
    return float(f"{value:.6g}") if isinstance(value, float) else value


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        text = f"{value:.6g}"
        return text if any(c in text for c in ".en") else text + ".0"  # 1.0 stays a float, not "1"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def card_data(folder: Path | str, repo_id: str | None = None, license: str = "mit", base_model: str | None = None):
    """The card's YAML metadata (huggingface_hub.ModelCardData), built only from what the folder records."""
    from huggingface_hub import EvalResult, ModelCardData

    folder = Path(folder)
    run_config = read_run_config(folder)
    model_config = read_json(folder / "config.json")
    stage = stage_of(run_config, model_config)
    metrics = read_json(folder / "metrics.json")
    kind = model_folder_kind(folder)

    source = base_model or config_value(run_config, "model_name_or_path")
    if kind == "adapter":
        source = base_model or read_json(folder / "adapter_config.json").get("base_model_name_or_path")
    relation = {"quantize": "quantized"}.get(stage, "adapter" if kind == "adapter" else "finetune")

    tags = ["hf-recipes", model_config.get("model_type", "gpt2")]
    tags += {"sft": ["sft", "trl"], "dpo": ["dpo", "trl"], "pretrain": ["pretraining"]}.get(stage, [])
    quantization = model_config.get("quantization_config") or {}
    if stage == "quantize" or quantization.get("load_in_4bit"):
        tags += ["4-bit", "bitsandbytes", quantization.get("bnb_4bit_quant_type", "nf4")]
    if kind == "adapter" or (folder / ADAPTER_FOLDER).is_dir() or config_value(run_config, "use_peft"):
        tags += ["lora", "peft"]
    if (folder / NOT_VERIFIED_FILE).is_file():
        tags.append("not-verified")

    hub_datasets = [name for name in recipe_datasets(run_config) if is_hub_id(name)]
    eval_results = []
    for metric, value in own_metrics(metrics, stage).items():
        dataset_id, split = _dataset_for(metric, run_config, stage)
        eval_results.append(
            EvalResult(
                task_type="text-generation",
                task_name="Text Generation",
                dataset_type=dataset_id,
                dataset_name=BUILT_IN_DATASETS.get(dataset_id, dataset_id),
                dataset_split=split,
                metric_type=metric,
                metric_name=HEADLINE_METRICS[metric],
                metric_value=_rounded(value),
            )
        )
    hub_base = source if is_hub_id(source) else None
    return ModelCardData(
        license=license,
        library_name="peft" if kind == "adapter" else "transformers",
        pipeline_tag="text-generation",
        tags=tags,
        base_model=hub_base,
        base_model_relation=relation if hub_base else None,
        datasets=hub_datasets or None,
        # model-index names the model its results belong to; without results there is no model-index.
        model_name=(repo_id or folder.name).split("/")[-1] if eval_results else None,
        eval_results=eval_results or None,
    )


def example_messages(task: str | None) -> list[dict[str, str]]:
    """A conversation to try the model with: one shaped like the built-in task when that is what it learned."""
    if task != "stdlib-function-name":
        return [{"role": "user", "content": "Write a Python function that adds two numbers."}]
    from hf_recipes.data.stdlib import INSTRUCTION, SYSTEM_PROMPT

    code = "def area(width, height):\n    return width * height"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": f"{INSTRUCTION}\n\n{code}"}]


def _usage_snippet(name: str, kind: str, chat: bool, quantized: bool, messages: list[dict[str, str]]) -> str:
    if kind == "adapter":
        lines = ["from peft import AutoPeftModelForCausalLM", "from transformers import AutoTokenizer", ""]
        lines.append(f'model = AutoPeftModelForCausalLM.from_pretrained("{name}")')
    else:
        lines = ["from transformers import AutoModelForCausalLM, AutoTokenizer", ""]
        lines.append(f'model = AutoModelForCausalLM.from_pretrained("{name}")')
    lines.append(f'tokenizer = AutoTokenizer.from_pretrained("{name}")')
    if chat:
        lines.append("messages = [")
        lines += [f'    {{"role": "{m["role"]}", "content": {json.dumps(m["content"])}}},' for m in messages]
        lines += [
            "]",
            "# The chat template saved with the tokenizer builds the prompt the model was trained on.",
            'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")',
        ]
    else:
        lines += [
            "# A base (pretrained) model continues text: give it the start of some Python.",
            'inputs = tokenizer("def fibonacci(n):", return_tensors="pt")',
        ]
    lines += [
        "inputs = inputs.to(model.device)",
        "# Greedy decoding (exact match below is measured that way); generation stops at the eos token.",
        "output = model.generate(**inputs, max_new_tokens=64, do_sample=False)",
        'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))',
    ]
    if quantized:
        lines.insert(0, "# 4-bit weights: needs `pip install bitsandbytes` (CPU or CUDA).")
    return "\n".join(lines)


def _describe_source(source: str | None) -> str:
    if not source:
        return "nothing (trained from scratch)"
    return f"the Hub model `{source}`" if is_hub_id(source) else f"the local folder `{source}` (not on the Hub)"


def _table(rows: list[tuple[str, str]], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "| --- | --- |"]
    return "\n".join(lines + [f"| {a} | {b} |" for a, b in rows])


def render_model_card(
    folder: Path | str, repo_id: str | None = None, license: str = "mit", base_model: str | None = None
) -> str:
    """The model card text for `folder`: metadata, recipe, usage, measured results, versions."""
    import yaml
    from huggingface_hub import ModelCard

    folder = Path(folder)
    data = card_data(folder, repo_id, license, base_model)
    run_config = read_run_config(folder)
    model_config = read_json(folder / "config.json")
    metrics = read_json(folder / "metrics.json")
    stage = stage_of(run_config, model_config)
    kind = model_folder_kind(folder)
    own = own_metrics(metrics, stage)
    source = base_model or config_value(run_config, "model_name_or_path")
    tokenizer_config = read_json(folder / "tokenizer_config.json")
    # A pretrained model carries the template for the stages after it, but has not learned to chat yet.
    has_template = (folder / "chat_template.jinja").is_file() or "chat_template" in tokenizer_config
    chat = has_template and stage != "pretrain"
    not_verified = folder / NOT_VERIFIED_FILE
    task = "stdlib-function-name" if stage == "quantize" else next(iter(recipe_datasets(run_config)), None)

    headline = [
        (label, _show(own[name]) if name in own else "not measured") for name, label in HEADLINE_METRICS.items()
    ]
    shape_keys = ("model_type", "n_layer", "n_head", "n_embd", "n_positions", "vocab_size")
    architecture = [(key, _show(model_config[key])) for key in shape_keys if key in model_config]
    quantization = model_config.get("quantization_config")
    recipe = run_config.get("config")
    template = resources.files(TEMPLATES_PACKAGE).joinpath(CARD_TEMPLATE).read_text(encoding="utf-8")
    card = ModelCard.from_template(
        data,
        template_str=template,
        title=repo_id or folder.name,
        stage=stage,
        source=_describe_source(source),
        not_verified=not_verified.read_text().strip() if not_verified.is_file() else None,
        usage=_usage_snippet(repo_id or str(folder), kind, chat, stage == "quantize", example_messages(task)),
        has_adapter_folder=(folder / ADAPTER_FOLDER / "adapter_config.json").is_file(),
        headline_table=_table(headline, ("metric", "this model")),
        tracking=run_config.get("tracking"),
        metrics_table=_table([(k, _show(v)) for k, v in sorted(metrics.items())], ("metrics.json key", "value"))
        if metrics
        else None,
        architecture_table=_table(architecture, ("config.json", "value")) if architecture else None,
        quantization=yaml.safe_dump(quantization, sort_keys=True).strip() if quantization else None,
        recipe=yaml.safe_dump(recipe, sort_keys=False).strip() if recipe else None,
        git_commit=run_config.get("git_commit"),
        versions_table=_table([(k, str(v)) for k, v in run_config["versions"].items()], ("package", "version"))
        if run_config.get("versions")
        else None,
    )
    return str(card)


def write_model_card(
    folder: Path | str, repo_id: str | None = None, license: str = "mit", base_model: str | None = None
) -> Path:
    """Write README.md (the model card) into `folder` and return its path."""
    path = Path(folder) / "README.md"
    path.write_text(render_model_card(folder, repo_id, license, base_model) + "\n", encoding="utf-8")
    return path
