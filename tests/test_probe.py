"""The probe that measures a CPU run's automatic settings (dlf.engine.probe): it picks
one of its candidates, keeps what it measured per machine and shape, skips a step too
slow to be worth it, and the plan records what it chose."""

import json

import pytest
import torch

from dlf import config as C
from dlf import presets as P
from dlf.engine import probe as probe_module
from dlf.engine.auto import resolve_auto
from dlf.engine.plan import plan_run
from dlf.engine.probe import KERNELS, PROBE_FILE, candidates, probe


def tiny(text_file, **train) -> C.RunConfig:
    cfg = P.load_preset("shakespeare-transformer-cpu-gpt2")
    cfg.data.dataset = str(text_file)
    C.apply_overrides(cfg, ["model.block_size=16", "model.n_layer=1", "model.n_embd=16",
                            "model.n_head=2", "train.batch_size=8", "data.format=text",
                            *(f"train.{k}={v}" for k, v in train.items())])
    return cfg


def test_candidates_are_the_batch_and_its_halves():
    assert candidates(64) == [64, 32, 16, 8]
    assert candidates(12) == [12, 6, 3]
    assert candidates(3) == [3]


def test_the_probe_picks_a_candidate_and_keeps_it_per_machine_and_shape(text_file, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("DLF_CACHE_DIR", str(tmp_path / "cache"))
    plan, _ = plan_run(tiny(text_file, probe="false"))  # every other setting resolved
    cfg = plan.cfg
    cfg.train.micro_batch, cfg.model.attention = "auto", "auto"
    micro, kernel, spent = probe(cfg, torch.device("cpu"), 1, "manual")
    assert micro in [0, *candidates(8)[1:]] and kernel in KERNELS and spent > 0
    cached = json.loads((tmp_path / "cache" / PROBE_FILE).read_text())
    assert [(v["micro_batch"], v["attention"]) for v in cached.values()] == [(micro, kernel)]
    # measured once: the same shape on the same machine reads the cache
    assert probe(cfg, torch.device("cpu"), 1, "manual") == (micro, kernel, 0.0)
    # another thread count is another measurement
    assert probe(cfg, torch.device("cpu"), 2, "manual")[2] > 0
    assert len(json.loads((tmp_path / "cache" / PROBE_FILE).read_text())) == 2


def test_a_step_too_slow_to_probe_keeps_the_rule(text_file, tmp_path, monkeypatch):
    monkeypatch.setenv("DLF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(probe_module, "MAX_STEP_SECONDS", 0.0)
    plan, _ = plan_run(tiny(text_file, probe="false"))
    cfg = plan.cfg
    cfg.train.micro_batch, cfg.model.attention = "auto", "auto"
    assert probe(cfg, torch.device("cpu"), 1, "sdpa")[:2] == (0, "sdpa")


def test_the_plan_probes_records_its_choice_and_says_so_once(text_file, tmp_path,
                                                             monkeypatch):
    monkeypatch.setenv("DLF_CACHE_DIR", str(tmp_path / "cache"))
    plan, _ = plan_run(tiny(text_file))
    t = plan.cfg.train
    assert t.micro_batch in [0, 4, 2] and plan.cfg.model.attention in KERNELS
    assert any("measured train.micro_batch" in n for n in plan.notes)
    again, _ = plan_run(tiny(text_file))
    assert again.cfg.train.micro_batch == t.micro_batch
    assert again.cfg.model.attention == plan.cfg.model.attention
    assert not any("measured" in n for n in again.notes)  # from the cache
    # an explicit value, probe = false, or several processes: no probe
    for cfg in (tiny(text_file, micro_batch=4), tiny(text_file, probe="false")):
        p, _ = plan_run(cfg)
        assert not any("measured" in n for n in p.notes)


def test_settings_the_probe_cannot_measure_keep_the_rules(text_file):
    cfg = tiny(text_file, compile="true")
    plan, _ = plan_run(cfg)  # torch.compile: probing would compile every candidate
    assert plan.cfg.train.micro_batch == 0 and not plan.notes
    names = P.load_preset("names-mlp")
    assert resolve_auto(names, torch.device("cpu"), 2) == [] and names.train.micro_batch == 0


@pytest.mark.parametrize("threads", [1])
def test_the_probed_run_trains_as_an_explicit_one(text_file, tmp_path, monkeypatch, threads):
    """Micro-batching changes the speed only: the probed run's losses are those of the
    whole batch in one pass, to rounding."""
    from dlf.engine.trainer import Trainer
    from runs import records

    monkeypatch.setenv("DLF_CACHE_DIR", str(tmp_path / "cache"))
    kw = {"max_steps": 4, "eval_interval": 4, "log_interval": 1, "threads": threads}
    Trainer(tiny(text_file, **kw), tmp_path / "auto", progress=False).fit()
    Trainer(tiny(text_file, micro_batch=0, **kw), tmp_path / "whole", progress=False).fit()
    a = [r["loss"] for r in records(tmp_path / "auto") if "loss" in r]
    b = [r["loss"] for r in records(tmp_path / "whole") if "loss" in r]
    assert a == pytest.approx(b, rel=1e-4)
