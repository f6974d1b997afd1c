"""The later design choices as a run's settings: the Transformer's switches and
train.optimizer = "muon" through the plan, the trainer, checkpoints and bf16; the
gpt-recipe experiment's arithmetic and files."""

import json
import math
import re

import pytest
import torch

from dlf import config as C
from dlf import optim
from dlf import presets as P
from dlf.engine import tensor_io
from dlf.engine.auto import resolve_auto
from dlf.engine.plan import plan_run
from dlf.engine.steps import make_optimizer
from dlf.engine.trainer import Trainer
from dlf.errors import DlfError
from dlf.experiments import RECIPE_CHANGES, RECIPE_PRESET, crossing, recipe_variants
from dlf.models import build_model

SWITCHES = ["model.position=rope", "model.norm=rms", "model.qk_norm=true",
            "model.mlp_activation=relu2", "model.zero_proj=true", "model.logit_softcap=30",
            "model.value_residual=true"]
MUON = {"optimizer": "muon", "momentum": 0.95, "muon_lr": 0.02, "lr": 3e-3,
        "weight_decay": 0.1, "schedule": "wsd", "warmup_steps": 1}


def tiny_transformer(text_file, model=(), **train):
    """shakespeare-transformer-cpu shrunk to 1 layer x 16 on `text_file`, every switch on
    (plus `model` overrides), trained with Muon unless `train` says otherwise."""
    cfg = P.load_preset("shakespeare-transformer-cpu")
    cfg.data.dataset = str(text_file)
    C.apply_overrides(cfg, ["model.block_size=16", "model.n_layer=2", "model.n_embd=16",
                            "model.n_head=2", "train.dtype=fp32", "train.num_samples=0",
                            "data.format=text", *SWITCHES, *model])
    t = {**MUON, "max_steps": 4, "eval_interval": 4, "log_interval": 1, "eval_iters": 2}
    t.update(train)
    for k, v in t.items():
        setattr(cfg.train, k, v)
    return cfg


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_timings(recs):
    return [{k: v for k, v in r.items() if k not in ("tokens_per_second", "train_seconds")}
            for r in recs]


# ----------------------------------------------------------------------------- the plan


def test_the_plan_resolves_the_newton_schulz_dtype_by_device(text_file):
    cfg = tiny_transformer(text_file)
    assert cfg.train.muon_ns_dtype == "auto"
    plan, _ = plan_run(cfg)
    assert plan.cfg.train.muon_ns_dtype == "fp32"  # this run is on the CPU
    resolve_auto(cfg, torch.device("cuda"), 1)
    assert cfg.train.muon_ns_dtype == "bf16"
    kept = tiny_transformer(text_file, muon_ns_dtype="bf16")
    assert plan_run(kept)[0].cfg.train.muon_ns_dtype == "bf16"  # an explicit choice stays
    adamw = tiny_transformer(text_file, optimizer="adamw", momentum=0.0)
    assert plan_run(adamw)[0].cfg.train.muon_ns_dtype == "auto"  # not Muon: not resolved


@pytest.mark.parametrize(("change", "message"), [
    ({"optimizer": "adamw", "momentum": 0.0, "muon_lr": 0.05},
     ("train.muon_lr = 0.05 has no effect: train.optimizer is adamw, not muon; remove the "
      "setting")),
    ({"optimizer": "sgd", "momentum": 0.0, "muon_ns_dtype": "bf16"},
     ("train.muon_ns_dtype = 'bf16' has no effect: train.optimizer is sgd, not muon; remove "
      "the setting")),
    ({"lr": 0.0}, ("train.optimizer = muon scales train.muon_lr by the schedule's share of "
                   "train.lr: train.lr must be > 0, got 0.0")),
    ({"muon_ns_dtype": "fp16"}, "train.muon_ns_dtype must be auto, fp32 or bf16, got 'fp16'"),
    ({"optimizer": "lion"}, "train.optimizer must be sgd, adamw or muon, got 'lion'"),
])
def test_the_plan_refuses_muon_settings_that_cannot_apply(tmp_path, text_file, change,
                                                          message):
    with pytest.raises(DlfError, match="^" + re.escape(message) + "$"):
        Trainer(tiny_transformer(text_file, **change), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_muon_needs_a_model_that_names_its_output_layer(tmp_path, names_file):
    cfg = P.load_preset("names-mlp")
    cfg.data.dataset = str(names_file)
    C.apply_overrides(cfg, ["train.optimizer=muon", "train.milestones=[]"])
    with pytest.raises(DlfError, match="a mlp model does not name its output layer"):
        Trainer(cfg, tmp_path / "run", progress=False)
    manual = P.load_preset("names-mlp-manual")
    manual.data.dataset = str(names_file)
    C.apply_overrides(manual, ["train.muon_lr=0.05"])
    with pytest.raises(DlfError, match=r"^train.muon_lr = 0.05 has no effect: a manual-mlp"):
        Trainer(manual, tmp_path / "run", progress=False)


# ----------------------------------------------------------------------------- the optimizer


@pytest.mark.parametrize("tie", [False, True])
def test_muon_takes_the_hidden_matrices_and_adamw_the_rest(text_file, tie):
    """The split by role: Muon gets each block's four projection matrices at
    lr * muon_lr / lr; AdamW the untied head (decayed), the embeddings, gains and biases
    (not decayed), with the run's betas and AdamW's eps."""
    cfg = tiny_transformer(text_file, [f"model.tie_weights={str(tie).lower()}",
                                       "model.position=learned", "model.norm=layer"])
    plan, _ = plan_run(cfg)
    model = build_model(plan.cfg.model)
    opt = make_optimizer(model, plan.cfg.train)
    assert isinstance(opt, optim.Muon)
    name_of = {id(p): n for n, p in model.named_parameters()}
    groups = [(g["muon"], g["lr_scale"], g["weight_decay"], sorted(name_of[id(p)]
                                                                    for p in g["params"]))
              for g in opt.param_groups]
    hidden = sorted(f"blocks.{i}.{m}.weight" for i in range(2)
                    for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"))
    rest = sorted(n for n in name_of.values() if n not in hidden and n != "lm_head.weight")
    expected = [(True, 0.02 / 3e-3, 0.1, hidden)]
    if not tie:
        expected.append((False, 1.0, 0.1, ["lm_head.weight"]))
    expected.append((False, 1.0, 0.0, rest))
    assert groups == [(m, pytest.approx(s), wd, names) for m, s, wd, names in expected]
    assert all(g["ns_dtype"] == torch.float32 and g["momentum"] == 0.95 and g["nesterov"]
               and g["betas"] == (0.9, 0.99) and g["eps"] == 1e-8 for g in opt.param_groups)


# ----------------------------------------------------------------------------- whole runs


def test_every_switch_with_muon_resumes_equal_to_uninterrupted(tmp_path, text_file):
    """Every Transformer switch and Muon, in bf16 with dropout: a run stopped at
    step 5 and resumed logs what the uninterrupted run logs, bit for bit (the same kernels
    on the same restored state in one process). The checkpoint holds Muon's momentum for
    the hidden matrices and AdamW's moments for the rest, tensors only."""
    kw = {"max_steps": 10, "eval_interval": 5, "dtype": "bf16"}
    model = ["model.dropout=0.1"]
    Trainer(tiny_transformer(text_file, model, **kw), tmp_path / "a", progress=False).fit()

    def stop(step, state, model):
        return step == 5

    b = tmp_path / "b"
    r = Trainer(tiny_transformer(text_file, model, **kw), b, progress=False, callback=stop).fit()
    assert r == {"interrupted": True, "steps": 5}
    tensors, _ = tensor_io.load_tensors(b / "state.safetensors")
    saved = P.load_toml(b / "config.toml")
    net = build_model(saved.model)
    name_of = {id(p): n for n, p in net.named_parameters()}
    # the optimizer's state is numbered in the order of its groups' parameters
    order = [p for g in make_optimizer(net, saved.train).param_groups for p in g["params"]]
    for i, name in enumerate(name_of[id(p)] for p in order):
        hidden = name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
        entries = {k.split(".")[-1] for k in tensors if k.startswith(f"optim.state.{i}.")}
        assert entries == ({"momentum_buffer"} if hidden else
                           {"step", "exp_avg", "exp_avg_sq"}), name
    Trainer(tiny_transformer(text_file, model, **kw), b, progress=False, resume=True).fit()
    assert without_timings(records(tmp_path / "a")) == without_timings(records(b))


def test_every_switch_with_muon_trains_in_bf16(tmp_path, text_file):
    """All switches, a tied head and Muon under bf16 autocast: the loss falls well below a
    uniform guess over the vocabulary."""
    cfg = tiny_transformer(text_file, ["model.tie_weights=true"], dtype="bf16", max_steps=40,
                           eval_interval=40, lr=1e-2, muon_lr=0.05)
    result = Trainer(cfg, tmp_path / "run", progress=False).fit()
    losses = [r["loss"] for r in records(tmp_path / "run") if "loss" in r]
    uniform = math.log(len(set(text_file.read_text())))
    assert losses[0] == pytest.approx(uniform, abs=0.5)
    assert result["val_loss"] < 0.6 * uniform and all(map(math.isfinite, losses))


# ----------------------------------------------------------------------------- gpt-recipe


def test_crossing_interpolates_between_the_evaluations_around_the_target():
    curve = [(20, 1.0, 2.5), (40, 2.0, 2.0), (60, 3.5, 1.8), (80, 5.0, 1.7)]
    step, sec = crossing(curve, 1.88)
    f = (2.0 - 1.88) / (2.0 - 1.8)  # 0.6 of the way from step 40 to step 60
    assert step == pytest.approx(40 + f * 20) and sec == pytest.approx(2.0 + f * 1.5)
    assert crossing(curve, 2.5) == (20.0, 1.0)  # reached at the first evaluation
    assert crossing(curve, 1.5) is None


def test_recipe_variants_are_the_baseline_each_change_and_all(text_file):
    variants = recipe_variants()
    assert list(variants) == ["baseline", *RECIPE_CHANGES, "all", "default"]
    assert variants["baseline"][1] == [] and variants["default"][1] == []
    # every change is a valid override of the preset, and all of them together plan
    cfg = P.load_preset(RECIPE_PRESET)
    cfg.data.dataset, cfg.data.format = str(text_file), "text"
    C.apply_overrides(cfg, variants["all"][1])
    plan, _ = plan_run(cfg)
    m, t = plan.cfg.model, plan.cfg.train
    assert (m.position, m.norm, m.qk_norm, m.mlp_activation, m.tie_weights) == \
        ("rope", "rms", True, "relu2", True)
    assert (t.optimizer, t.schedule) == ("muon", "wsd")


def test_a_recipe_run_evaluates_as_documented(text_file):
    """Every RECIPE_EVAL_EVERY steps on RECIPE_EVAL_ITERS batches, for the budget in seconds,
    the warm-up keeping its share of the preset's schedule."""
    from dlf.experiments import RECIPE_EVAL_EVERY, RECIPE_EVAL_ITERS, _recipe_cfg

    preset = P.load_preset(RECIPE_PRESET).train
    cfg = _recipe_cfg("rope", ["model.position=rope"], str(text_file), 7, 60.0, 100_000, False)
    t = cfg.train
    assert (t.eval_interval, t.eval_iters) == (RECIPE_EVAL_EVERY, RECIPE_EVAL_ITERS)
    assert (t.eval_iters, t.eval_interval) != (preset.eval_iters, preset.eval_interval)
    assert (t.max_seconds, t.max_steps, t.seed) == (60.0, 100_000, 7)
    assert t.warmup_steps == preset.warmup_steps * 100_000 // preset.max_steps
    assert cfg.model.position == "rope" and cfg.name == "gpt-recipe/rope"
