# hf-recipes: the user interface. Every target that needs Python depends on `setup`,
# so a fresh clone needs nothing but `make all` or `make test`.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The pinned torch is installed first and by itself: with it in place, the package's own range
# (torch>=2.13,<3) is already satisfied and pip pulls no CUDA wheels on a CPU machine.
TORCH_SPEC ?= torch==2.13.0
PRESET ?= gpt2-tiny
ACCELERATE_CONFIG ?= recipes/accelerate/cpu.yaml
ARGS ?=
# A recipe variant: each stage reads recipes/$(PRESET)/<stage>_$(VARIANT).yaml instead of <stage>.yaml
# (make sft VARIANT=lora; make all VARIANT=long).
VARIANT ?=
# The model `make chat` talks to: the folder this PRESET and VARIANT's quantize recipe writes (make chat VARIANT=long),
# the default pipeline's for a variant without its own quantize recipe (VARIANT=lora).
QUANTIZE_RECIPE = $(firstword $(wildcard recipes/$(PRESET)/quantize$(if $(VARIANT),_$(VARIANT)).yaml) recipes/$(PRESET)/quantize.yaml)
MODEL ?= $(shell sed -n 's/^output_dir: *//p' $(QUANTIZE_RECIPE))
REPO ?=
PROMPT ?=
# The built-in task's system message: its chat models never trained without it and answer badly when it is
# missing. `make chat SYSTEM=` for none.
SYSTEM ?= You are a helpful assistant in programming.
# Through the environment, so a prompt of several lines (code) reaches the script whole.
export SYSTEM PROMPT
# --quiet: a recipe error stays one line (exit 1 from accelerate) instead of a launcher traceback.
LAUNCH = $(VENV)/bin/accelerate launch --quiet --config_file $(ACCELERATE_CONFIG)

.PHONY: setup test lint format all pretrain sft dpo reward grpo quantize gguf eval chat push bench clean

setup: $(VENV)/.installed

# constraints.txt: the exact versions the suite was run with (the package itself keeps ranges).
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

test: setup
	$(PY) -m pytest $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The whole pipeline on the built-in data; each stage reads the previous stage's folder.
all: setup
	$(MAKE) --no-print-directory pretrain
	$(MAKE) --no-print-directory sft
	$(MAKE) --no-print-directory dpo
	$(MAKE) --no-print-directory quantize
	$(MAKE) --no-print-directory eval

STAGE_RECIPE = recipes/$(PRESET)/$(1)$(if $(VARIANT),_$(VARIANT)).yaml

pretrain sft dpo reward grpo: setup
	$(LAUNCH) recipes/$@.py --config $(call STAGE_RECIPE,$@) $(ARGS)

quantize: setup
	$(PY) recipes/quantize.py --config $(call STAGE_RECIPE,quantize) $(ARGS)

gguf: setup
	$(PY) recipes/export_gguf.py --config $(call STAGE_RECIPE,gguf) $(ARGS)

eval: setup
	$(PY) recipes/eval.py --config $(call STAGE_RECIPE,evaluate) $(ARGS)

chat: setup
	$(PY) recipes/generate.py --model_name_or_path $(MODEL) $(if $(SYSTEM),--system "$$SYSTEM") $(if $(PROMPT),--prompt "$$PROMPT") $(ARGS)

push: setup
	@test -n "$(REPO)" || { echo "usage: make push MODEL=<folder> REPO=<user/name>"; exit 2; }
	$(PY) recipes/push.py --model_name_or_path $(MODEL) --repo_id $(REPO) $(ARGS)

bench: setup
	$(PY) benchmarks/run_all.py $(ARGS)

clean:
	rm -rf outputs .pytest_cache .ruff_cache build dist *.egg-info
