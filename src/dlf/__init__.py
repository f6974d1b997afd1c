"""dlf: deep-learning-foundations. Language models from first principles.

The public Python API (what the notebooks use; `dlf.__all__` lists it):

    cfg = dlf.load_preset("names-mlp")        # a RunConfig; edit its fields freely
    data = dlf.load_data(cfg)                 # tokenizer and train/val/test datasets
    result = dlf.train(cfg, "runs/try")       # train (or fit) into a run directory
    run = dlf.load_run("runs/try")            # .model, .tokenizer, .config, .path
    dlf.generate(run, n=5)                    # samples: names, or text
    dlf.show(dlf.plots.plot_loss, dlf.read_metrics(run), title="loss")  # a figure inline
    dlf.import_gpt2("gpt2/", "runs/gpt2")     # a Hugging Face GPT-2 as a run (dlf.hub)

plus the building blocks as submodules: dlf.micro (scalar autograd on Python floats, no
torch), dlf.nn (layers), dlf.optim (optimizers), dlf.manual (the hand-written backward
pass), dlf.models, dlf.data, dlf.diagnostics, dlf.experiments and dlf.plots. Everything is
imported on first use, so `import dlf` (and `dlf --help`) stays fast.
"""

from __future__ import annotations

import importlib

from dlf.errors import DlfError

__version__ = "0.1.0"

# public name -> (module, attribute); resolved on first access by __getattr__ below
_FUNCTIONS = {
    "load_preset": ("dlf.presets", "load_preset"),
    "preset_names": ("dlf.presets", "preset_names"),
    "apply_overrides": ("dlf.config", "apply_overrides"),
    "RunConfig": ("dlf.config", "RunConfig"),
    "load_data": ("dlf.engine.rundata", "prepare_data"),
    "build_model": ("dlf.models", "build_model"),
    "train": ("dlf.engine.trainer", "train"),
    "Trainer": ("dlf.engine.trainer", "Trainer"),
    "load_run": ("dlf.engine.saved", "load_run"),
    "Run": ("dlf.engine.saved", "Run"),
    "read_metrics": ("dlf.api", "read_metrics"),
    "generate": ("dlf.api", "generate"),
    "quick": ("dlf.api", "quick"),
    "show": ("dlf.plots", "show"),
    "import_gpt2": ("dlf.hub", "import_gpt2"),
    "export_gpt2": ("dlf.hub", "export_gpt2"),
}
_SUBMODULES = ("nn", "optim", "manual", "models", "data", "diagnostics", "experiments", "plots",
               "config", "micro")

__all__ = [
    "DlfError", "Run", "RunConfig", "Trainer", "__version__", "apply_overrides", "build_model",
    "config", "data", "diagnostics", "experiments", "export_gpt2", "generate", "import_gpt2",
    "load_data", "load_preset",
    "load_run", "manual", "micro", "models", "nn", "optim", "plots", "preset_names", "quick",
    "read_metrics", "show", "train",
]  # the names of _FUNCTIONS and _SUBMODULES (a test checks)


def __getattr__(name: str):
    if name in _FUNCTIONS:
        module, attr = _FUNCTIONS[name]
        value = getattr(importlib.import_module(module), attr)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"dlf.{name}")
    else:
        raise AttributeError(f"module 'dlf' has no attribute {name!r}")
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
