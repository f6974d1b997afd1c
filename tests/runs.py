"""Helpers shared by the tests that train small runs: a tiny names MLP config, the same
as a TOML file for `python -m dlf train` subprocesses, and reading metrics.jsonl."""

import json
import sys

from dlf import config as C
from dlf import presets as P


def tiny_mlp(names_file, **train):
    """names-mlp shrunk to 2 x 16 hidden units on `names_file`; `train` overrides train.*."""
    cfg = P.load_preset("names-mlp")
    cfg.data.dataset = str(names_file)
    C.apply_overrides(cfg, ["model.block_size=3", "model.n_embd=4", "model.n_hidden=16",
                            "model.n_layer=2"])
    t = {"max_steps": 30, "batch_size": 16, "eval_interval": 10, "checkpoint_interval": 10,
         "log_interval": 1, "num_samples": 5, "schedule": "constant", "milestones": []}
    t.update(train)
    for k, v in t.items():
        setattr(cfg.train, k, v)
    return cfg


MLP_RUN_TOML = """
name = "{name}"
[data]
dataset = "{data}"
[model]
type = "mlp"
block_size = 3
n_embd = 4
n_hidden = 16
[train]
max_steps = {steps}
batch_size = 16
eval_interval = 50
log_interval = {log_interval}
num_samples = 3
seed = 3
threads = 1
"""


def write_mlp_config(path, data, steps: int, *, log_interval: int = 1, name: str = "tiny"):
    """A tiny MLP run as a TOML config file, for training in a subprocess."""
    path.write_text(MLP_RUN_TOML.format(name=name, data=data, steps=steps,
                                        log_interval=log_interval))
    return path


def train_cmd(cfg_path, out, *extra):
    return [sys.executable, "-m", "dlf", "train", str(cfg_path), "--out", str(out), "--quiet",
            *extra]


def records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def without_timings(recs):
    """The records without their timings (tokens/s and seconds differ from run to run)."""
    return [{k: v for k, v in r.items() if k not in ("tokens_per_second", "train_seconds")}
            for r in recs]
