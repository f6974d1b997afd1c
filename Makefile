# Two commands do all set-up on a fresh machine (they create .venv when needed):
#   make demo   train the default model (names-mlp) and print samples
#   make test   run the test suite (it also runs every notebook with DLF_QUICK=1;
#               make test-fast skips the tests marked slow)
#   make notebooks   rebuild and execute the lesson notebooks with their full budget
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
DLF    := $(VENV)/bin/dlf
# Use the shared copies of the data sets when they sit beside the checkout.
export DLF_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)

.PHONY: demo test test-fast lint notebooks notebooks-env mutation pack-data results clean gpu-check gpu-check-dry

# Each target installs what it needs into $(VENV): dlf alone, with the [test] extra (make
# test, make notebooks), or with everything ([dev]: the benchmarks' references, ruff,
# mutmut). A stamp file marks each install.
INSTALL = test -x $(PY) || $(PYTHON) -m venv $(VENV); $(PY) -m pip install --quiet -c constraints.txt -e

$(VENV)/.installed: pyproject.toml constraints.txt
	$(INSTALL) .
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt
	$(INSTALL) '.[test]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt
	$(INSTALL) '.[dev]'
	touch $@

runs/names-mlp/result.json: $(VENV)/.installed
	$(DLF) train names-mlp --out runs/names-mlp $(if $(wildcard runs/names-mlp/state.safetensors),--resume,)

demo: runs/names-mlp/result.json
	$(DLF) sample runs/names-mlp -n 10 --seed 0

# Tests run on every core (pytest-xdist); each test is independent of the others. The
# suite starts many Python processes (dlf commands, torchrun jobs, notebook kernels):
# bytecode caches, written even where the environment sets PYTHONDONTWRITEBYTECODE, let
# them and later runs reuse what the first one compiled.
TEST_WORKERS ?= auto
PYTEST = PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal
test: $(VENV)/.installed-test
	$(PYTEST) --durations=15

test-fast: $(VENV)/.installed-test
	$(PYTEST) -m "not slow"

# The [test] extra includes the [notebooks] one (nbclient, nbformat, ipykernel).
notebooks-env: $(VENV)/.installed-test

# Rebuild notebooks/*.ipynb from notebooks/lessons/*.py and execute them in place.
notebooks: $(VENV)/.installed-test
	env -u DLF_QUICK $(PY) notebooks/build.py --execute

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests tools benchmarks

# Mutation testing (mutmut) of the core modules, each against its own tests; hours on 2
# cores, so not part of `make test`. GROUPS=optim limits it; scores: docs/testing.md.
mutation: $(VENV)/.installed-dev
	$(PY) tools/mutation.py $(GROUPS)

# Rewrite src/dlf/data/*.txt.xz from the plain files in $(DLF_DATA_DIR) (sha256-checked).
pack-data: $(VENV)/.installed
	$(PY) tools/pack_data.py $(or $(DLF_DATA_DIR),$(error set DLF_DATA_DIR to the plain files' folder))

# The seed configuration on this machine's GPUs (torchrun, NCCL, bf16, torch.compile):
# val loss, tokens/s and MFU into $(OUT)/gpu-check.json (default runs/gpu-check). Runs
# from a plain copy of the repository with the machine's own torch (GPU_PYTHON, default
# python3, must import torch, safetensors, tqdm and matplotlib); no venv, no network.
# regex, a runtime dependency of dlf, is not needed there: only the BPE tokenizer
# (dlf.data.bpe) imports it, and the check trains on characters.
GPU_PYTHON ?= python3
gpu-check:
	PYTHONPATH=src $(GPU_PYTHON) tools/gpu_check.py $(GPU_CHECK_ARGS)

# The same pipeline on the CPU: tiny model, 2 processes (gloo), a few steps.
gpu-check-dry:
	PYTHONPATH=src $(GPU_PYTHON) tools/gpu_check.py --dry-run $(GPU_CHECK_ARGS)

# A full `dlf report` (about an hour and a half on 2 cores), published into docs/results.md,
# the package's measured figures (dlf presets) and README.md's results table.
results: $(VENV)/.installed
	$(DLF) report --out report
	$(PY) tools/publish_results.py report

clean:
	rm -rf $(VENV) runs
