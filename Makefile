# Two commands do all set-up on a fresh machine (they create .venv when needed):
#   make demo   train the default model (names-mlp) and print samples
#   make test   run the test suite
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
DLF    := $(VENV)/bin/dlf
# Use the shared copies of the data sets when they sit beside the checkout.
export DLF_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)

.PHONY: demo test lint mutation pack-data clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

runs/names-mlp/result.json: $(VENV)/.installed
	$(DLF) train names-mlp --out runs/names-mlp $(if $(wildcard runs/names-mlp/state.safetensors),--resume,)

demo: runs/names-mlp/result.json
	$(DLF) sample runs/names-mlp -n 10 --seed 0

test: $(VENV)/.installed
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests

# Mutation testing (mutmut) of the core modules, each against its own tests; hours on 2
# cores, so not part of `make test`. GROUPS=optim limits it; scores: docs/testing.md.
mutation: $(VENV)/.installed
	$(PY) tools/mutation.py $(GROUPS)

# Rewrite src/dlf/data/*.txt.xz from the plain files in $(DLF_DATA_DIR) (sha256-checked).
pack-data: $(VENV)/.installed
	$(PY) tools/pack_data.py $(or $(DLF_DATA_DIR),$(error set DLF_DATA_DIR to the plain files' folder))

clean:
	rm -rf $(VENV) runs
