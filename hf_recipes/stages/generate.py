"""Talk to a model folder (full, merged, LoRA adapter or 4-bit) through its own chat template.

    python recipes/generate.py --model_name_or_path outputs/gpt2-tiny/quantized-nf4 --prompt "Extract the ..."
    python recipes/generate.py --model_name_or_path outputs/gpt2-tiny/sft   # interactive: 'exit' or Ctrl-D to leave

Sampling: --temperature 0.7 --top_k 50 --top_p 0.9 --repetition_penalty 1.1 --max_new_tokens 64 --seed 0
(--temperature 0 or --do_sample false decodes greedily).
"""

from __future__ import annotations

import sys

from hf_recipes.config import parse_stage
from hf_recipes.generation import chat_loop, check_sampling, load_for_generation, stream_reply
from hf_recipes.run_folder import model_folder_kind


def main(argv: list[str]) -> None:
    args, sampling = parse_stage("generate", argv)
    # A missing or empty folder and impossible sampling settings fail here, before anything loads.
    kind = model_folder_kind(args.model_name_or_path)
    check_sampling(sampling)
    model, tokenizer = load_for_generation(args.model_name_or_path)

    messages = [{"role": "system", "content": args.system}] if args.system else []
    if args.prompt is not None:
        stream_reply(model, tokenizer, [*messages, {"role": "user", "content": args.prompt}], sampling)
        return

    quantized = "4-bit" if getattr(model, "is_loaded_in_4bit", False) else kind
    print(f"Chatting with {args.model_name_or_path} ({quantized}) - 'exit' or Ctrl-D to leave.", file=sys.stderr)
    chat_loop(model, tokenizer, sampling, system=args.system, read=_read_line)


def _read_line(prompt: str) -> str:
    """input() when a person types; a plain read when stdin is piped, so replies are not mixed with '> '."""
    if sys.stdin.isatty():
        return input(prompt)
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")
