"""Publish a stage's model folder on the Hugging Face Hub, with a model card that reports only what was measured.

    python recipes/push.py --model outputs/gpt2-tiny/quantized-nf4 --repo_id me/gpt2-tiny-chat [--private true]
    make push MODEL=outputs/gpt2-tiny/sft REPO=me/gpt2-tiny-sft

The token comes from HF_TOKEN or `hf auth login`; it is never printed or written. One commit uploads the weights
(safetensors), config, tokenizer and chat template, README.md (the card), metrics.json, plots and run_config.yaml;
pickles, TensorBoard runs/ and checkpoint-*/ (unless --include_checkpoints true) stay home.
"""

from hf_recipes.configs import parse_stage
from hf_recipes.hub import files_to_upload, model_folder_kind, push_folder
from hf_recipes.runtime import run_recipe, setup_logging


def main(argv: list[str]) -> None:
    (args,) = parse_stage("push", argv)
    setup_logging()
    kind = model_folder_kind(args.model)  # a wrong path fails here, before any network call
    info = push_folder(
        args.model,
        args.repo_id,
        private=args.private,
        include_checkpoints=args.include_checkpoints,
        commit_message=args.commit_message,
        license=args.license,
        base_model=args.base_model,
        allow_not_verified=args.allow_not_verified,
    )
    files = files_to_upload(args.model, args.include_checkpoints)
    print(f"Pushed {kind} folder {args.model} ({len(files)} files) to {info.repo_url} in commit {info.oid}")
    for name in files:
        print(f"  {name}")


if __name__ == "__main__":
    run_recipe(main)
