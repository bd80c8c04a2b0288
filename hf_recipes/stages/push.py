"""Publish a stage's model folder on the Hugging Face Hub, with a model card that reports only what was measured.

    python recipes/push.py --model_name_or_path outputs/gpt2-tiny/quantized-nf4 --repo_id me/tiny-chat --private true
    make push MODEL=outputs/gpt2-tiny/sft REPO=me/gpt2-tiny-sft

The token comes from HF_TOKEN or `hf auth login`; it is never printed or written. One commit uploads the weights
(safetensors), config, tokenizer and chat template, README.md (the card), metrics.json, plots and run_config.yaml;
pickles, TensorBoard runs/ and checkpoint-*/ (unless --include_checkpoints true) stay home.
"""

from __future__ import annotations

import dataclasses

from hf_recipes.config import parse_stage
from hf_recipes.hub import files_to_upload, push_folder
from hf_recipes.run_folder import model_folder_kind
from hf_recipes.runtime import setup_logging


def main(argv: list[str]) -> None:
    (args,) = parse_stage("push", argv)
    setup_logging()
    settings = dataclasses.asdict(args)  # PushArguments' fields are push_folder's parameters
    folder = settings.pop("model_name_or_path")
    kind = model_folder_kind(folder)  # a wrong path fails here, before any network call
    info = push_folder(folder, **settings)
    files = files_to_upload(folder, args.include_checkpoints)
    print(f"Pushed {kind} folder {folder} ({len(files)} files) to {info.repo_url} in commit {info.oid}")
    for name in files:
        print(f"  {name}")
