#!/usr/bin/env bash
# Issue 23's GPU check on a CUDA machine without internet: install the wheels carried in .whl/ (if any), make the
# checkout importable without installing it, check every import, then run benchmarks/gpu_check.py.
#   bash benchmarks/gpu_check.sh "$OUT"                 # on the device; benchmarks/README.md says what to carry
#   GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh OUT   # the CPU rehearsal of the same commands
set -uo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [gpu_check.py options]}
shift
cd "$(dirname "$0")/.." || exit 2
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 2
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# Without an install, hf_recipes imports from the checkout: for gpu_check.py and every stage it starts.
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# pyproject maps hf_recipes.templates to the top-level templates/; without an install a link does the same.
"$python" -c "import hf_recipes.templates" 2>/dev/null || ln -sfn ../templates hf_recipes/templates
"$python" - <<'EOF' || exit 2
import importlib.metadata as metadata

import accelerate, bitsandbytes, datasets, evaluate, matplotlib, peft, tensorboard, torch, transformers, trl  # noqa

import hf_recipes.templates  # noqa

names = "torch transformers trl peft accelerate datasets evaluate bitsandbytes tokenizers huggingface_hub pyarrow"
print("imports ok:", ", ".join(f"{name} {metadata.version(name)}" for name in names.split()))
print("cuda:", torch.cuda.is_available() and torch.cuda.get_device_name(0))
EOF
exec "$python" benchmarks/gpu_check.py "$out" "$@"
