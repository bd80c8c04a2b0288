"""The only module that talks to the Hugging Face Hub: the model card, secret checks, and pushing a stage's folder.

    push_folder("outputs/gpt2-tiny/sft", "me/tiny-chat", private=True)   # card + one commit of what users need

The token comes from the caller, `HF_TOKEN`, or `hf auth login` (huggingface_hub.get_token()); it is never printed,
logged or written, and every file is checked for it before anything is uploaded.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

from hf_recipes.runtime import RecipeError

logger = logging.getLogger("hf_recipes")

TEMPLATES_PACKAGE = "hf_recipes.templates"
CARD_TEMPLATE = "model_card.md"
NOT_VERIFIED_FILE = "NOT_VERIFIED.txt"  # written by hf_recipes.quantization when a 4-bit export fails its check

# What a user needs to load, trust and reproduce a model; everything else (optimizer state, TensorBoard runs,
# pickles) stays home. Patterns match a file's path relative to the folder it is in.
MODEL_FILES = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "adapter_config.json",
)
RECORD_FILES = ("README.md", "metrics.json", "run_config.yaml", NOT_VERIFIED_FILE, "plots/*.png")
CHECKPOINT_FILES = (*MODEL_FILES, "trainer_state.json")
ADAPTER_FOLDER = "adapter"  # SFT/DPO with LoRA keep the adapter alone here, next to the merged model
# Pickles run code when loaded (and training_args.bin holds the Hub token): never uploaded, whatever matches above.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

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
DATA_FILE_SUFFIXES = {".json", ".jsonl", ".txt", ".csv", ".parquet"}  # a name ending so is a local file
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


# ----------------------------------------------------------------------------------------------------------------
# Token and secrets
# ----------------------------------------------------------------------------------------------------------------


def resolve_token(token: str | None = None) -> str:
    """The token to push with: `token`, else HF_TOKEN, else the one `hf auth login` saved."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise RecipeError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access)")
    return token


def files_containing(paths: list[Path], secret: str, chunk_size: int = 1 << 20) -> list[Path]:
    """The files among `paths` whose bytes contain `secret` (read in chunks, so large weights are fine)."""
    needle = secret.encode()
    found = []
    for path in paths:
        with open(path, "rb") as handle:
            tail = b""
            while chunk := handle.read(chunk_size):
                window = tail + chunk
                if needle in window:
                    found.append(path)
                    break
                # Keep the last len-1 bytes: a match may straddle chunks (even several, when chunks are short).
                tail = window[-(len(needle) - 1) :] if len(needle) > 1 else b""
    return found


def assert_no_secret(folder: Path | str, secret: str | None) -> None:
    """Raise RecipeError naming the files under `folder` that contain `secret` (never the secret itself)."""
    if not secret:
        return
    paths = sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink())
    leaked = files_containing(paths, secret)
    if leaked:
        names = ", ".join(str(p.relative_to(folder)) for p in leaked)
        raise RecipeError(f"the Hub token is written in {names} under {folder}: delete it before sharing the folder")


# ----------------------------------------------------------------------------------------------------------------
# What gets uploaded
# ----------------------------------------------------------------------------------------------------------------


def _matches(relative: str, patterns: tuple[str, ...]) -> bool:
    # fnmatch's * crosses '/', so a pattern without a folder must match a file at the top of that folder only.
    return any(fnmatch.fnmatch(relative, p) and relative.count("/") == p.count("/") for p in patterns)


def files_to_upload(folder: Path | str, include_checkpoints: bool = False) -> list[str]:
    """Paths (relative, POSIX) of the files a user needs: weights, config, tokenizer, card, metrics, plots, recipe."""
    folder = Path(folder)
    chosen = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.endswith(PICKLE_SUFFIXES):
            continue
        relative = path.relative_to(folder).as_posix()
        top, _, rest = relative.partition("/")
        wanted = (
            _matches(relative, MODEL_FILES + RECORD_FILES)
            or (top == ADAPTER_FOLDER and _matches(rest, MODEL_FILES))
            or (include_checkpoints and top.startswith("checkpoint-") and _matches(rest, CHECKPOINT_FILES))
        )
        if wanted:
            chosen.append(relative)
    return sorted(chosen)


def model_folder_kind(folder: Path | str) -> str:
    """'model' (config.json + safetensors) or 'adapter' (LoRA adapter only); anything else is a RecipeError."""
    path = Path(folder)
    if not path.is_dir():
        raise RecipeError(f"model folder not found: {folder}")
    if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return "model"
    if (path / "adapter_config.json").is_file() and (path / "adapter_model.safetensors").is_file():
        return "adapter"
    raise RecipeError(f"{folder} holds no model to publish (no config.json + *.safetensors, no LoRA adapter)")


# ----------------------------------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def read_run_config(folder: Path | str) -> dict[str, Any]:
    """The folder's run_config.yaml (resolved recipe, versions, commit), or {} when there is none."""
    import yaml

    path = Path(folder) / "run_config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def stage_of(run_config: dict[str, Any], model_config: dict[str, Any]) -> str:
    """pretrain, sft, dpo, quantize... as recorded; a 4-bit folder without a record is 'quantize'."""
    if run_config.get("stage"):
        return str(run_config["stage"])
    if "QuantizeArguments" in run_config.get("config", {}) or "quantization_config" in model_config:
        return "quantize"
    return "unknown"


def _config_value(run_config: dict[str, Any], key: str) -> Any:
    """The first argument group's value for `key` in run_config.yaml (groups are keyed by dataclass name)."""
    for group in run_config.get("config", {}).values():
        if isinstance(group, dict) and group.get(key) is not None:
            return group[key]
    return None


def is_hub_id(name: str | None) -> bool:
    """True for something that names a Hub repository rather than a local path or a built-in source."""
    if not name or name in BUILT_IN_DATASETS or os.path.exists(name) or name.startswith((".", "/", "~")):
        return False
    return bool(HUB_ID.match(name)) and Path(name).suffix.lower() not in DATA_FILE_SUFFIXES


def own_metrics(metrics: dict[str, Any], stage: str) -> dict[str, float]:
    """This model's headline numbers: a 4-bit export's are the `*_4bit` ones (`*_full` measured its source)."""
    suffix = "_4bit" if stage == "quantize" else ""
    own = {}
    for name in HEADLINE_METRICS:
        value = metrics.get(name + suffix)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            own[name] = value
    return own


def _dataset_for(metric: str, run_config: dict[str, Any], stage: str) -> tuple[str, str]:
    """(dataset id, split) a metric was measured on, from the recipe; the 4-bit check uses the built-in data."""
    if stage == "quantize":
        return ("stdlib" if metric == "perplexity" else "stdlib-function-name"), "validation"
    name = _config_value(run_config, "dataset_name") or "unknown"
    return str(name), str(_config_value(run_config, "dataset_test_split") or "validation")


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
    model_config = _read_json(folder / "config.json")
    stage = stage_of(run_config, model_config)
    metrics = _read_json(folder / "metrics.json")
    kind = model_folder_kind(folder)

    source = base_model or _config_value(run_config, "model_name_or_path")
    if kind == "adapter":
        source = base_model or _read_json(folder / "adapter_config.json").get("base_model_name_or_path")
    relation = {"quantize": "quantized"}.get(stage, "adapter" if kind == "adapter" else "finetune")

    tags = ["hf-recipes", model_config.get("model_type", "gpt2")]
    tags += {"sft": ["sft", "trl"], "dpo": ["dpo", "trl"], "pretrain": ["pretraining"]}.get(stage, [])
    quantization = model_config.get("quantization_config") or {}
    if stage == "quantize" or quantization.get("load_in_4bit"):
        tags += ["4-bit", "bitsandbytes", quantization.get("bnb_4bit_quant_type", "nf4")]
    if kind == "adapter" or (folder / ADAPTER_FOLDER).is_dir() or _config_value(run_config, "use_peft"):
        tags += ["lora", "peft"]
    if (folder / NOT_VERIFIED_FILE).is_file():
        tags.append("not-verified")

    dataset = _config_value(run_config, "dataset_name")
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
        datasets=[dataset] if is_hub_id(dataset) else None,
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
    model_config = _read_json(folder / "config.json")
    metrics = _read_json(folder / "metrics.json")
    stage = stage_of(run_config, model_config)
    kind = model_folder_kind(folder)
    own = own_metrics(metrics, stage)
    source = base_model or _config_value(run_config, "model_name_or_path")
    tokenizer_config = _read_json(folder / "tokenizer_config.json")
    # A pretrained model carries the template for the stages after it, but has not learned to chat yet.
    has_template = (folder / "chat_template.jinja").is_file() or "chat_template" in tokenizer_config
    chat = has_template and stage != "pretrain"
    not_verified = folder / NOT_VERIFIED_FILE
    task = "stdlib-function-name" if stage == "quantize" else _config_value(run_config, "dataset_name")

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


# ----------------------------------------------------------------------------------------------------------------
# Push
# ----------------------------------------------------------------------------------------------------------------


def check_can_push(repo_id: str | None, token: str | None = None) -> str:
    """Refuse a push that cannot work (no repo id, offline, no token) early, e.g. before training; return the token."""
    from huggingface_hub import constants

    if not repo_id:
        raise RecipeError("pushing needs a repository id: --repo_id user/name (or hub_model_id in the recipe)")
    if constants.is_offline_mode():
        raise RecipeError("HF_HUB_OFFLINE=1 forbids pushing to the Hub: unset it to push")
    return resolve_token(token)


def check_can_write(repo_id: str | None, token: str | None = None) -> str:
    """`check_can_push`, then ask the Hub whose token it is: refuse a read-only token or another's namespace.

    A training run calls it before any weights load, so a push that cannot work fails in seconds, not after training.
    """
    import httpx2
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    token = check_can_push(repo_id, token)
    try:
        identity = HfApi(token=token).whoami()
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", "?")
        raise RecipeError(f"the Hub refused the token ({status}): set HF_TOKEN to a valid write token") from None
    except (OSError, httpx2.HTTPError) as error:
        raise RecipeError(f"could not reach {constants.ENDPOINT} to check the token: {type(error).__name__}") from None
    role = identity.get("auth", {}).get("accessToken", {}).get("role")
    if role == "read":
        raise RecipeError(f"the Hub token is read-only: pushing to {repo_id} needs a token with write access")
    namespaces = {identity.get("name"), *(org.get("name") for org in identity.get("orgs", []))}
    namespace = repo_id.split("/")[0] if "/" in repo_id else identity.get("name")
    if namespace not in namespaces:
        raise RecipeError(
            f"cannot push to {repo_id}: the token belongs to {identity.get('name')}, who may write to "
            f"{', '.join(sorted(n for n in namespaces if n))} only"
        )
    return token


def push_folder(
    folder: Path | str,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    include_checkpoints: bool = False,
    commit_message: str | None = None,
    license: str = "mit",
    base_model: str | None = None,
    allow_not_verified: bool = False,
):
    """Write the card, create the repository (exist_ok) and upload what a user needs as ONE commit.

    Returns huggingface_hub's CommitInfo. A private push refuses a repository that already exists and is public.
    """
    import httpx2  # huggingface_hub 2.x's HTTP client (its connection errors are not OSErrors)
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    model_folder_kind(folder)
    if (folder / NOT_VERIFIED_FILE).is_file() and not allow_not_verified:
        raise RecipeError(
            f"{folder} is a 4-bit export that failed verification ({NOT_VERIFIED_FILE}); "
            "pass --allow_not_verified true to publish it anyway (its card will say so)"
        )
    token = check_can_push(repo_id, token)

    write_model_card(folder, repo_id, license, base_model)
    files = files_to_upload(folder, include_checkpoints)
    leaked = files_containing([folder / f for f in files], token)
    if leaked:
        names = ", ".join(str(p.relative_to(folder)) for p in leaked)
        raise RecipeError(f"refusing to push: the Hub token is written in {names}")
    stage = stage_of(read_run_config(folder), _read_json(folder / "config.json"))
    message = commit_message or f"Upload {stage} model from hf-recipes"

    api = HfApi(token=token)
    try:
        # private=None (not False) when not asked: an organization whose default is private keeps it.
        url = api.create_repo(repo_id, private=True if private else None, exist_ok=True)
        if private and api.repo_info(url.repo_id).private is False:
            raise RecipeError(f"{url.repo_id} already exists and is public; refusing a push asked to be private")
        operations = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / f)) for f in files]
        info = api.create_commit(url.repo_id, operations=operations, commit_message=message)
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        hint = "; check HF_TOKEN or `hf auth login` (the token needs write access)" if status in (401, 403) else ""
        raise RecipeError(f"the Hub refused the push to {repo_id}: {str(error).splitlines()[0]}{hint}") from error
    except httpx2.TransportError as error:  # connection refused, timeouts, DNS: huggingface_hub's HTTP client
        raise RecipeError(f"could not reach {api.endpoint} to push {repo_id}: {error}") from error
    except ValueError as error:  # create_commit's own checks, e.g. README.md metadata the Hub calls invalid
        raise RecipeError(f"could not push to {repo_id}: {' '.join(str(error).split())}") from error
    size = sum((folder / f).stat().st_size for f in files)
    logger.info("Pushed %d files (%.2f MB) to %s in commit %s", len(files), size / 1e6, url, info.oid)
    return info
