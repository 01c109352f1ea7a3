# Fresh machine: `make demo` and `make test` set everything up themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build from this machine's disk; users with GPUs install their own CUDA torch first.
TORCH  ?= torch==2.13.0
# extras of pyproject.toml; GPU machines: EXTRAS=dev,gpu (Liger's Triton kernels for training);
# GGUF export: EXTRAS=dev,gguf (builds llama.cpp from source, docs/install.md)
EXTRAS ?= dev
# llama.cpp built for a generic CPU rather than for this one's instructions only: pip caches the wheel it builds,
# and a wheel built for one CPU's instructions crashes on another
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test lint docs demo constraints clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

# The documentation site (docs/, mkdocs.yml) into site/; strict: a broken link or anchor fails.
# Preview while editing: $(BIN)/mkdocs serve
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

demo: setup
	$(BIN)/cotharness demo

# Re-pin every transitive dependency after changing pyproject.toml.
constraints: setup
	$(BIN)/python -m pip freeze --exclude-editable | grep -viE '^(torch|nvidia-|triton)' > constraints.txt

clean:
	rm -rf $(VENV) .tox .pytest_cache .hypothesis studies/demo site
