# Two commands do all set-up on a fresh machine (they create .venv when needed):
#   make demo   train the default model (names-mlp) and print samples
#   make test   run the test suite (make test-fast: without the tests marked slow)
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
DLF    := $(VENV)/bin/dlf
# Use the shared copies of the data sets when they sit beside the checkout.
export DLF_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)

.PHONY: demo test test-fast lint pack-data clean

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

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests

# Rewrite src/dlf/data/*.txt.xz from the plain files in $(DLF_DATA_DIR) (sha256-checked).
pack-data: $(VENV)/.installed
	$(PY) tools/pack_data.py $(or $(DLF_DATA_DIR),$(error set DLF_DATA_DIR to the plain files' folder))

clean:
	rm -rf $(VENV) runs
