"""GGUF export (the file format of llama.cpp and the tools built on it) of a GPT-2 model, written with the `gguf`
package the way llama.cpp's own converter writes GPT-2, and read back with transformers (`gguf_file=`) to verify it.

Tensor layout follows llama.cpp's `convert_hf_to_gguf.py` (GPT2Model): `Conv1D` weights stored (out, in), the tied
embedding written twice (`token_embd` and `output`), norms and biases in f32. The tokenizer travels as llama.cpp's
"gpt2" byte-level BPE: vocabulary, merges, special tokens and the chat template.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from hf_recipes.runtime import RecipeError

logger = logging.getLogger("hf_recipes")

# The output types this exporter writes; 2-D weights take the type, 1-D tensors (norms, biases) stay f32.
GGUF_TYPES = ("f16", "q8_0")
# GPT-2 block modules -> llama.cpp tensor names (gguf-py's MODEL_TENSOR names for the gpt2 architecture).
BLOCK_TENSORS = {
    "ln_1": "attn_norm",
    "attn.c_attn": "attn_qkv",
    "attn.c_proj": "attn_output",
    "ln_2": "ffn_norm",
    "mlp.c_fc": "ffn_up",
    "mlp.c_proj": "ffn_down",
}
# llama.cpp splits text before BPE with a fixed rule named by `tokenizer.ggml.pre`; "gpt-2" is GPT-2's own regex.
PRE_TOKENIZER = "gpt-2"


def require_gguf():
    """The `gguf` package, or a one-line error naming the extra that installs it."""
    try:
        import gguf
    except ImportError as error:
        raise RecipeError(f"GGUF export needs the gguf package ({error}): pip install 'hf-recipes[gguf]'") from None
    return gguf


def gguf_tensors(model: PreTrainedModel) -> Iterator[tuple[str, np.ndarray]]:
    """The model's weights under llama.cpp's names, as float32 arrays in llama.cpp's layout."""
    for name, tensor in model.state_dict().items():
        array = tensor.detach().to(torch.float32).cpu().numpy()
        name = name.removeprefix("transformer.")
        if name == "lm_head.weight":
            continue  # tied to wte: written below as llama.cpp's `output`
        if name == "wte.weight":
            yield "token_embd.weight", array
            yield "output.weight", array
        elif name == "wpe.weight":
            yield "position_embd.weight", array
        elif name.startswith("ln_f."):
            yield f"output_norm.{name.removeprefix('ln_f.')}", array
        else:
            _, block, rest = name.split(".", 2)  # h.<block>.<module>.<weight|bias>
            module, kind = rest.rsplit(".", 1)
            # Conv1D keeps (in, out); GGUF (like nn.Linear) holds (out, in).
            yield f"blk.{block}.{BLOCK_TENSORS[module]}.{kind}", array.T if array.ndim == 2 else array


def add_tokenizer(writer: Any, tokenizer: PreTrainedTokenizerBase) -> None:
    """Vocabulary, merges, special ids and chat template as llama.cpp's "gpt2" (byte-level BPE) tokenizer."""
    import gguf

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    model = state["model"]
    if model.get("type") != "BPE":
        raise RecipeError(f"GGUF export writes byte-level BPE tokenizers; this one is {model.get('type')!r}")
    vocab = dict(model["vocab"])
    for added in state["added_tokens"]:
        vocab.setdefault(added["content"], added["id"])
    tokens = [""] * (max(vocab.values()) + 1)
    for token, index in vocab.items():
        tokens[index] = token
    special = {added["id"] for added in state["added_tokens"] if added["special"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(PRE_TOKENIZER)
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if index in special else gguf.TokenType.NORMAL for index in range(len(tokens))]
    )
    writer.add_token_merges([merge if isinstance(merge, str) else " ".join(merge) for merge in model["merges"]])
    for token_id, add in (
        (tokenizer.bos_token_id, writer.add_bos_token_id),
        (tokenizer.eos_token_id, writer.add_eos_token_id),
        (tokenizer.pad_token_id, writer.add_pad_token_id),
    ):
        if token_id is not None:
            add(token_id)
    # Our chat templates write every special token themselves.
    writer.add_add_bos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def write_gguf(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path | str, gguf_type: str, name: str
) -> Path:
    """One GGUF file of `model` with `tokenizer`, 2-D weights in `gguf_type` (f16 or q8_0)."""
    gguf = require_gguf()
    if model.config.model_type != "gpt2":
        raise RecipeError(f"GGUF export supports GPT-2 models; this one is {model.config.model_type!r}")
    if gguf_type not in GGUF_TYPES:
        raise RecipeError(f"GGUF type {gguf_type!r} is not written here; choose from {', '.join(GGUF_TYPES)}")
    config = model.config
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_name(name)
    writer.add_context_length(config.n_positions)
    writer.add_embedding_length(config.n_embd)
    writer.add_feed_forward_length(config.n_inner or 4 * config.n_embd)
    writer.add_block_count(config.n_layer)
    writer.add_head_count(config.n_head)
    writer.add_layer_norm_eps(config.layer_norm_epsilon)
    file_types = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    writer.add_file_type(file_types[gguf_type])
    add_tokenizer(writer, tokenizer)
    q8_0 = gguf.GGMLQuantizationType.Q8_0
    for tensor_name, array in gguf_tensors(model):
        if array.ndim == 1:
            writer.add_tensor(tensor_name, array.astype(np.float32))
        elif gguf_type == "q8_0" and array.shape[-1] % gguf.GGML_QUANT_SIZES[q8_0][0] == 0:
            writer.add_tensor(tensor_name, gguf.quants.quantize(array, q8_0), raw_dtype=q8_0)
        else:
            writer.add_tensor(tensor_name, array.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def gguf_metadata(path: Path | str, key: str) -> Any:
    """One scalar or string field of a GGUF file's header."""
    gguf = require_gguf()
    field = gguf.GGUFReader(str(path)).get_field(key)
    if field is None:
        raise RecipeError(f"{path}: no {key} in the GGUF header")
    return field.contents()


def load_gguf_model(path: Path | str, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """The model in a GGUF file, dequantized by transformers."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    # transformers maps gpt2.context_length to `n_ctx`, which GPT2Config no longer reads: the position table would
    # come out at the default 1,024 rows and refuse the file's. The file's own value is passed as `n_positions`.
    context = int(gguf_metadata(path, "gpt2.context_length"))
    folder, name = str(path.parent), path.name
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype, n_positions=context)


def load_gguf_tokenizer(path: Path | str) -> PreTrainedTokenizerBase:
    """The tokenizer transformers (and, with the same split rule, llama.cpp) builds from a GGUF file."""
    from transformers import AutoTokenizer

    path = Path(path)
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def same_tokens_share(
    source: PreTrainedTokenizerBase, exported: PreTrainedTokenizerBase, texts: Sequence[str]
) -> float:
    """The share of `texts` the exported tokenizer splits into the same ids as the source tokenizer.

    Below 1.0 when the source splits text before BPE with a rule llama.cpp does not know (the gpt2-tiny tokenizer
    keeps `_` inside identifiers; GPT-2's rule cuts there): such a model reads other ids in llama.cpp than it
    trained on.
    """
    if not texts:
        return float("nan")
    same = sum(source(text).input_ids == exported(text).input_ids for text in texts)
    return same / len(texts)
