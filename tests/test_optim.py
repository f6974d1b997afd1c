"""dlf.optim against torch.optim trajectories and closed-form schedules."""

from __future__ import annotations

import functools
import itertools
import math

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch.testing import assert_close

from dlf.errors import DlfError
from dlf.optim import (
    NS_COEFFICIENTS,
    SGD,
    WSDLR,
    AdamW,
    ConstantLR,
    CosineLR,
    Muon,
    StepDecayLR,
    make_schedule,
    newton_schulz,
    param_groups_for_decay,
    param_groups_for_muon,
)
from tolerances import assert_close_to_scale, fp64_tol

# -- a small fixed problem: 2-layer tanh MLP regression ------------------------------------

_G = torch.Generator().manual_seed(0)
X = torch.randn(32, 6, generator=_G)
Y = torch.randn(32, 2, generator=_G)
INIT = {
    "w1": torch.randn(6, 8, generator=_G) / 6**0.5,
    "b1": torch.randn(8, generator=_G) * 0.1,
    "w2": torch.randn(8, 2, generator=_G) / 8**0.5,
    "b2": torch.zeros(2),
    "unused": torch.randn(3, generator=_G),  # never receives a gradient
}


def make_params() -> dict[str, torch.Tensor]:
    return {k: v.clone().requires_grad_() for k, v in INIT.items()}


def loss_fn(p: dict[str, torch.Tensor]) -> torch.Tensor:
    h = torch.tanh(X @ p["w1"] + p["b1"])
    return ((h @ p["w2"] + p["b2"] - Y) ** 2).mean()


def run(opt, params, steps: int, lrs=None) -> list[torch.Tensor]:
    """Train; returns the loss at each step. ``lrs(step)`` sets every group's lr first."""
    losses = []
    for step in range(steps):
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs(step)
        opt.zero_grad()
        loss = loss_fn(params)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return losses


def groups(params: dict[str, torch.Tensor], split: bool, **second):
    if not split:
        return list(params.values())
    return [
        {"params": [params["w1"], params["w2"]]},
        {"params": [params["b1"], params["b2"], params["unused"]], **second},
    ]


def assert_same_trajectory(ours_cls, ref_cls, kwargs, split=False, second=None, steps=50, lrs=None):
    p_ours, p_ref = make_params(), make_params()
    opt = ours_cls(groups(p_ours, split, **(second or {})), **kwargs)
    ref = ref_cls(groups(p_ref, split, **(second or {})), **kwargs)
    losses = run(opt, p_ours, steps, lrs)
    losses_ref = run(ref, p_ref, steps, lrs)
    assert_close(torch.stack(losses), torch.stack(losses_ref))
    for k in p_ours:
        assert_close(p_ours[k], p_ref[k], msg=k)
    assert torch.equal(p_ours["unused"], INIT["unused"])
    assert losses[-1] < losses[0]  # the problem is actually being optimised


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 0.1},
        {"lr": 0.05, "momentum": 0.9},
        {"lr": 0.1, "weight_decay": 0.01},
        {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
        {"lr": 0.05, "momentum": 0.9, "nesterov": True},
        {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.05, "nesterov": True},
    ],
    ids=["plain", "momentum", "wd", "momentum-wd", "nesterov", "nesterov-wd"],
)
def test_sgd_matches_torch(kwargs):
    assert_same_trajectory(SGD, torch.optim.SGD, kwargs)


def test_sgd_param_groups_and_lr_changes_match_torch():
    assert_same_trajectory(
        SGD,
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.02},
        split=True,
        second={"weight_decay": 0.0, "momentum": 0.5},
    )
    assert_same_trajectory(SGD, torch.optim.SGD, {"lr": 0.1}, lrs=lambda s: 0.1 if s < 25 else 0.01)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 1e-2, "weight_decay": 0.0},
        {"lr": 1e-2},  # default weight_decay 0.01
        {"lr": 3e-3, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.1},
    ],
    ids=["no-wd", "default-wd", "custom"],
)
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "written-out"])
def test_adamw_matches_torch(kwargs, fused):
    assert_same_trajectory(functools.partial(AdamW, fused=fused), torch.optim.AdamW, kwargs)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "written-out"])
def test_adamw_two_groups_one_without_decay_matches_torch(fused):
    assert_same_trajectory(
        functools.partial(AdamW, fused=fused),
        torch.optim.AdamW,
        {"lr": 1e-2, "weight_decay": 0.1},
        split=True,
        second={"weight_decay": 0.0},
    )


def test_adamw_with_schedule_matches_torch():
    sched = CosineLR(1e-2, warmup_steps=5, total_steps=40, min_lr=1e-3)
    assert_same_trajectory(AdamW, torch.optim.AdamW, {"lr": 1e-2}, lrs=sched)
    written_out = functools.partial(AdamW, fused=False)
    assert_same_trajectory(written_out, torch.optim.AdamW, {"lr": 1e-2}, lrs=sched)


def test_adamw_defaults_match_torch():
    opt = AdamW([torch.zeros(1, requires_grad=True)])
    ref = torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
    for key in ("lr", "betas", "eps", "weight_decay"):
        assert opt.param_groups[0][key] == ref.param_groups[0][key], key


# -- state_dict ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [(SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}), (AdamW, {"lr": 1e-2})],
    ids=["sgd", "adamw"],
)
def test_state_dict_resume_equals_uninterrupted(cls, kwargs):
    p_full = make_params()
    run(cls(groups(p_full, True, weight_decay=0.0), **kwargs), p_full, 20)

    p_a = make_params()
    opt_a = cls(groups(p_a, True, weight_decay=0.0), **kwargs)
    run(opt_a, p_a, 10)
    blob = st_save(opt_a.state_dict())  # tensors only: safetensors accepts it
    sd = st_load(blob)
    assert sd["step"].dtype == torch.int64 and sd["step"].ndim == 0 and int(sd["step"]) == 10

    p_b = {k: v.detach().clone().requires_grad_() for k, v in p_a.items()}
    opt_b = cls(groups(p_b, True, weight_decay=0.0), **kwargs)
    opt_b.load_state_dict(sd)
    assert opt_b.step_count == 10
    run(opt_b, p_b, 10)
    for k in p_full:
        assert torch.equal(p_b[k], p_full[k]), k


def test_state_dict_keys_index_parameters_across_groups():
    params = make_params()
    opt = AdamW(groups(params, True, weight_decay=0.0), lr=1e-2)
    run(opt, params, 1)
    keys = set(opt.state_dict())
    # parameters 0..3 got gradients; 4 ("unused") never did, so it has no state
    expected = {"step"} | {
        f"state.{i}.{name}" for i in range(4) for name in ("step", "exp_avg", "exp_avg_sq")
    }
    assert keys == expected
    # w1 is index 0 (first group), b1 index 2 (second group)
    assert opt.state_dict()["state.0.exp_avg"].shape == params["w1"].shape
    assert opt.state_dict()["state.2.exp_avg"].shape == params["b1"].shape


def test_load_state_dict_rejects_mismatches():
    params = make_params()
    sgd = SGD(list(params.values()), lr=0.1, momentum=0.9)
    adamw = AdamW(list(params.values()))
    run(sgd, params, 1)
    run(adamw, params, 1)

    with pytest.raises(DlfError, match="unexpected key state.0.momentum_buffer"):
        adamw.load_state_dict(sgd.state_dict())
    bad = dict(adamw.state_dict())
    bad["state.0.exp_avg"] = torch.zeros(2, 2)
    with pytest.raises(DlfError, match=r"state.0.exp_avg: shape \(2, 2\) vs parameter \(6, 8\)"):
        adamw.load_state_dict(bad)
    bad = dict(adamw.state_dict())
    del bad["state.1.exp_avg_sq"]
    with pytest.raises(DlfError, match="state.1 lacks exp_avg_sq"):
        adamw.load_state_dict(bad)
    bad = dict(adamw.state_dict())
    del bad["step"]
    with pytest.raises(DlfError, match="'step'"):
        adamw.load_state_dict(bad)
    bad = dict(sgd.state_dict())
    bad["state.9.momentum_buffer"] = torch.zeros(1)
    with pytest.raises(DlfError, match="only 5 parameters"):
        sgd.load_state_dict(bad)
    # a failed load leaves the optimizer untouched
    assert adamw.step_count == 1 and len(adamw.state) == 4


# -- construction and hyperparameters ------------------------------------------------------


def test_zero_grad_sets_none_and_step_skips_missing_grads():
    params = make_params()
    opt = SGD(list(params.values()), lr=0.1)
    loss_fn(params).backward()
    opt.zero_grad()
    assert all(p.grad is None for p in params.values())
    before = {k: v.detach().clone() for k, v in params.items()}
    opt.step()  # no gradients anywhere: nothing moves
    assert all(torch.equal(params[k], before[k]) for k in params)


@pytest.mark.parametrize(
    "build",
    [
        lambda p: SGD(p, lr=-0.1),
        lambda p: SGD(p, lr=0.1, momentum=-0.5),
        lambda p: SGD(p, lr=0.1, nesterov=True),
        lambda p: SGD(p, lr=0.1, weight_decay=-1.0),
        lambda p: AdamW(p, lr=-1e-3),
        lambda p: AdamW(p, betas=(0.9, 1.0)),
        lambda p: AdamW(p, eps=-1.0),
        lambda p: AdamW([{"params": p, "lr": float("nan")}]),
        lambda p: AdamW([]),
        lambda p: AdamW(p + p),
        lambda p: AdamW([p[0] * 2]),
        lambda p: AdamW([{"lr": 0.1}]),
    ],
)
def test_impossible_hyperparameters_raise_dlf_error(build):
    params = list(make_params().values())
    with pytest.raises(DlfError):
        build(params)


def test_param_groups_are_dicts_a_schedule_can_edit():
    params = make_params()
    opt = AdamW(
        [{"params": [params["w1"]], "weight_decay": 0.0, "lr": 5e-3}, {"params": [params["b1"]]}],
        lr=1e-3,
        weight_decay=0.1,
    )
    assert opt.param_groups[0]["lr"] == 5e-3 and opt.param_groups[0]["weight_decay"] == 0.0
    assert opt.param_groups[1]["lr"] == 1e-3 and opt.param_groups[1]["weight_decay"] == 0.1
    assert opt.param_groups[1]["betas"] == (0.9, 0.999)


def _names(model, params):
    by_id = {id(p): n for n, p in model.named_parameters()}
    return sorted(by_id[id(p)] for p in params)


@pytest.mark.parametrize("model_cfg", [
    "transformer", "transformer-tied", "wavenet", "mlp", "neural-bigram",
])
def test_param_groups_for_decay_on_the_real_models(model_cfg):
    """Decayed: every >= 2-D parameter that is not an Embedding table; nothing else."""
    from dlf.models import build_model
    from dlf.models.bigram import NeuralBigramConfig
    from dlf.models.mlp import MLPConfig
    from dlf.models.transformer import TransformerConfig
    from dlf.models.wavenet import WaveNetConfig
    from dlf.nn import Embedding

    cfg = {
        "transformer": TransformerConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2,
                                         n_embd=8),
        "transformer-tied": TransformerConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2,
                                              n_embd=8, tie_weights=True),
        "wavenet": WaveNetConfig(vocab_size=11, block_size=8, n_embd=4, n_hidden=8),
        "mlp": MLPConfig(vocab_size=11, block_size=3, n_embd=4, n_hidden=8),
        "neural-bigram": NeuralBigramConfig(vocab_size=11),
    }[model_cfg]
    model = build_model(cfg)
    decay, no_decay = param_groups_for_decay(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    tables = {n + ".weight" for n, m in model.named_modules() if isinstance(m, Embedding)}
    names = dict(model.named_parameters())
    expected = sorted(n for n, p in names.items() if p.ndim >= 2 and n not in tables)
    assert _names(model, decay["params"]) == expected
    assert sorted(_names(model, decay["params"]) + _names(model, no_decay["params"])) == \
        sorted(names)
    AdamW([decay, no_decay])  # usable directly


def test_wavenet_embedding_table_is_not_decayed():
    """The bug this rule fixed: WaveNet's table is `net.0.weight`, no "emb" in its name."""
    from dlf.models import build_model
    from dlf.models.wavenet import WaveNetConfig

    model = build_model(WaveNetConfig(vocab_size=11, block_size=8, n_embd=4, n_hidden=8))
    decay, _ = param_groups_for_decay(model, 0.1)
    assert id(dict(model.named_parameters())["net.0.weight"]) not in {id(p) for p in
                                                                      decay["params"]}


def test_param_groups_for_decay_rejects_negative():
    from dlf.models import build_model
    from dlf.models.bigram import NeuralBigramConfig

    model = build_model(NeuralBigramConfig(vocab_size=5))
    with pytest.raises(DlfError):
        param_groups_for_decay(model, -0.1)


# -- schedules -----------------------------------------------------------------------------


def test_constant_schedule():
    s = ConstantLR(3e-4)
    assert [s(i) for i in (0, 1, 10**6)] == [3e-4] * 3


def test_step_decay_lecture_schedule():
    s = StepDecayLR(0.1, milestones=[100_000], gamma=0.1)
    assert s(0) == 0.1 and s(99_999) == 0.1
    assert math.isclose(s(100_000), 0.01) and math.isclose(s(200_000), 0.01)
    s2 = StepDecayLR(1.0, milestones=[10, 20], gamma=0.5)
    assert [s2(i) for i in (0, 9, 10, 19, 20, 100)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    with pytest.raises(DlfError):
        StepDecayLR(0.1, milestones=[20, 10])


def test_cosine_schedule_closed_form():
    lr, lo, warm, total = 6e-4, 6e-5, 10, 110
    s = CosineLR(lr, warmup_steps=warm, total_steps=total, min_lr=lo)
    assert math.isclose(s(0), lr / 11)
    assert math.isclose(s(9), lr * 10 / 11)
    assert math.isclose(s(warm), lr)  # decay starts from the peak
    assert math.isclose(s(60), (lr + lo) / 2)  # halfway through the decay
    assert math.isclose(s(35), lo + (lr - lo) * (1 + math.cos(math.pi / 4)) / 2)
    assert s(total) == lo and s(10 * total) == lo
    values = [s(i) for i in range(warm, total + 1)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    no_warm = CosineLR(1.0, warmup_steps=0, total_steps=4)
    assert [round(no_warm(i), 12) for i in range(5)] == [
        1.0,
        round((1 + math.cos(math.pi / 4)) / 2, 12),
        0.5,
        round((1 + math.cos(3 * math.pi / 4)) / 2, 12),
        0.0,
    ]
    for bad in (
        lambda: CosineLR(1e-3, warmup_steps=20, total_steps=10),
        lambda: CosineLR(1e-3, warmup_steps=0, total_steps=10, min_lr=1e-2),
        lambda: s(-1),
    ):
        with pytest.raises(DlfError):
            bad()


def test_make_schedule_factory():
    assert isinstance(make_schedule("constant", 0.1), ConstantLR)
    step = make_schedule("step", 0.1, milestones=[5], gamma=0.1)
    assert isinstance(step, StepDecayLR) and math.isclose(step(5), 0.01)
    cos = make_schedule("cosine", 1.0, warmup_steps=2, total_steps=10, min_lr=0.1)
    assert isinstance(cos, CosineLR) and cos(10) == 0.1
    with pytest.raises(DlfError, match="unknown learning-rate schedule 'linear'"):
        make_schedule("linear", 0.1)
    with pytest.raises(DlfError, match="total_steps"):
        make_schedule("cosine", 0.1)


# -- pinned by mutation testing (docs/testing.md): messages, copies, dtypes, boundaries ----


def _two_params():
    return [torch.zeros(2, 3, requires_grad=True), torch.zeros(4, requires_grad=True)]


def test_load_state_dict_lists_every_problem_in_one_message():
    opt = AdamW(_two_params())
    bad = {
        "state.0.exp_avg": torch.zeros(3, 2),  # wrong shape
        "state.0.bogus": torch.zeros(1),  # unknown entry
        "state.2.exp_avg": torch.zeros(4),  # index == number of parameters
        "state.1.exp_avg": "x",  # not a tensor
        "state.1.step": torch.tensor([1, 2]),  # not one integer
        "state.0.exp_avg_sq": torch.zeros(3),  # checked after the problems above
    }
    with pytest.raises(DlfError) as e:
        opt.load_state_dict(bad)
    assert str(e.value) == (
        "cannot load AdamW state: missing 0-d tensor 'step'; "
        "state.0.exp_avg: shape (3, 2) vs parameter (2, 3); unexpected key state.0.bogus; "
        "state.2.exp_avg: optimizer has only 2 parameters; state.1.exp_avg: not a tensor; "
        "state.1.step: expected a single integer; "
        "state.0.exp_avg_sq: shape (3,) vs parameter (2, 3)")
    with pytest.raises(DlfError) as e:
        opt.load_state_dict({"step": torch.tensor(3), "state.0.step": torch.tensor(2),
                             "state.1.exp_avg": torch.zeros(4)})
    assert str(e.value) == ("cannot load AdamW state: state.0 lacks exp_avg, exp_avg_sq; "
                            "state.1 lacks step, exp_avg_sq")
    with pytest.raises(DlfError) as e:
        SGD(_two_params(), lr=0.1).load_state_dict([1])
    assert str(e.value) == "optimizer state must be a dict, got list"
    assert opt.state == {} and opt.step_count == 0  # nothing changed


def test_load_state_dict_copies_and_converts_to_the_parameters_dtype():
    params = _two_params()
    opt = AdamW(params)
    state = {"step": torch.tensor(5), "state.1.step": torch.tensor(5),
             "state.1.exp_avg": torch.ones(4, dtype=torch.float64),
             "state.1.exp_avg_sq": torch.ones(4)}
    opt.load_state_dict(state)
    assert opt.step_count == 5 and opt.state[1]["step"] == 5
    assert opt.state[1]["exp_avg"].dtype == torch.float32  # the parameter's dtype
    state["state.1.exp_avg_sq"].fill_(7.0)  # the caller's tensors are not aliased
    assert torch.equal(opt.state[1]["exp_avg_sq"], torch.ones(4))


def test_learning_rate_zero_is_allowed_and_negative_is_named():
    SGD(_two_params(), lr=0.0)
    AdamW(_two_params(), lr=0.0)
    with pytest.raises(DlfError) as e:
        SGD(_two_params(), lr=-1.0)
    assert str(e.value) == "learning rate must be >= 0, got -1.0"


def test_repr_names_each_group():
    p = _two_params()
    opt = SGD([{"params": [p[0]]}, {"params": [p[1]], "lr": 0.5}], lr=0.1, momentum=0.9)
    assert repr(opt) == (
        "SGD(\n"
        "  group 0: 1 tensors, lr=0.1, momentum=0.9, weight_decay=0.0, nesterov=False\n"
        "  group 1: 1 tensors, lr=0.5, momentum=0.9, weight_decay=0.0, nesterov=False\n"
        ")")


WARMUP = "need 0 <= warmup_steps <= total_steps and total_steps >= 1, got warmup_steps="


def _leaf():
    return torch.zeros(2, requires_grad=True)


@pytest.mark.parametrize("build,message", [
    (lambda: SGD(_leaf(), lr=0.1), "optimizer params must be a list of tensors or of group dicts"),
    (lambda: SGD([], lr=0.1), "optimizer got an empty parameter list"),
    (lambda: SGD([{"params": []}], lr=0.1), "optimizer got an empty parameter list"),
    (lambda: SGD([{"lr": 0.1}], lr=0.1),
     "each parameter group must be a dict with a 'params' list"),
    (lambda: SGD([{"params": [1.0]}], lr=0.1), "optimizer params must be tensors, got float"),
    (lambda: SGD([_leaf() * 2], lr=0.1),
     "optimizer can only update leaf tensors (model parameters)"),
    (lambda: SGD([p := _leaf(), p], lr=0.1),
     "a parameter appears more than once in the optimizer"),
    (lambda: SGD([_leaf()], lr=0.1, weight_decay=-1.0), "weight_decay must be >= 0, got -1.0"),
    (lambda: SGD([_leaf()], lr=0.1, momentum=-0.5), "momentum must be >= 0, got -0.5"),
    (lambda: SGD([_leaf()], lr=0.1, nesterov=True), "nesterov momentum needs momentum > 0"),
    (lambda: AdamW([_leaf()], betas=(0.9, 1.0)),
     "betas must be two numbers in [0, 1), got (0.9, 1.0)"),
    (lambda: AdamW([_leaf()], eps=-1.0), "eps must be >= 0, got -1.0"),
    (lambda: ConstantLR(float("inf")), "learning rate must be a finite number >= 0, got inf"),
    (lambda: ConstantLR(0.1)(-1), "schedule step must be >= 0, got -1"),
    (lambda: StepDecayLR(0.1, [1.5]), "milestones must be integers >= 0, got [1.5]"),
    (lambda: StepDecayLR(0.1, [-1]), "milestones must be integers >= 0, got [-1]"),
    (lambda: StepDecayLR(0.1, [5, 2]), "milestones must be increasing, got [5, 2]"),
    (lambda: StepDecayLR(0.1, [1], gamma=-1.0), "gamma must be a finite number >= 0, got -1.0"),
    (lambda: CosineLR(0.1, 0, 10, min_lr=0.2), "min_lr (0.2) must not exceed lr (0.1)"),
    (lambda: CosineLR(0.1, 11, 10), WARMUP + "11, total_steps=10"),
    (lambda: CosineLR(0.1, -1, 10), WARMUP + "-1, total_steps=10"),
    (lambda: CosineLR(0.1, 0, 0), WARMUP + "0, total_steps=0"),
    (lambda: CosineLR(0.1, 0, 10, min_lr=-1.0), "min_lr must be a finite number >= 0, got -1.0"),
    (lambda: make_schedule("cosine", 0.1), "the cosine schedule needs total_steps"),
    (lambda: param_groups_for_decay(_TinyModel(), -0.1), "weight_decay must be >= 0, got -0.1"),
    (lambda: make_schedule("linear", 0.1),
     "unknown learning-rate schedule 'linear'; choose one of constant, step, cosine, wsd"),
])
def test_each_refusal_has_its_own_message(build, message):
    with pytest.raises(DlfError) as e:
        build()
    assert str(e.value) == message


def test_boundary_values_are_accepted():
    AdamW([_leaf()], betas=(0.0, 0.0), eps=0.0)
    SGD([_leaf()], lr=0.1, momentum=1.0)
    param_groups_for_decay(_TinyModel(), 0.0)
    assert StepDecayLR(1.0, [0])(0) == pytest.approx(0.1)  # milestone 0, default gamma 0.1
    assert CosineLR(1.0, 10, 10)(9) == pytest.approx(10 / 11)  # warmup == total is valid
    assert CosineLR(1.0, 0, 10, min_lr=1.0)(5) == 1.0
    assert CosineLR(1.0, 0, 1)(0) == 1.0  # one step is a valid total


def test_make_schedule_defaults():
    assert make_schedule("step", 1.0, milestones=[1])(1) == pytest.approx(0.1)  # gamma 0.1
    cosine = make_schedule("cosine", 1.0, total_steps=10)
    assert cosine(0) == 1.0  # no warmup by default
    assert cosine(10) == 0.0  # min_lr 0 by default


class _TinyModel:
    def __init__(self):
        self.w = torch.zeros(2, 2, requires_grad=True)

    def modules(self):
        return [self]

    def parameters(self):
        return [self.w]


@pytest.mark.parametrize("cls,kwargs", [(SGD, {"lr": 0.1, "weight_decay": 1.0}),
                                        (SGD, {"lr": 0.1, "momentum": 1.0}),
                                        (AdamW, {"lr": 0.1, "weight_decay": 1.0})])
def test_unit_weight_decay_and_momentum_match_torch(cls, kwargs):
    ref = getattr(torch.optim, cls.__name__)
    ours_p = torch.tensor([1.0, -2.0], requires_grad=True)
    ref_p = ours_p.detach().clone().requires_grad_()
    ours, theirs = cls([ours_p], **kwargs), ref([ref_p], **kwargs)
    for _ in range(3):
        for p, opt in ((ours_p, ours), (ref_p, theirs)):
            opt.zero_grad()
            (p**2).sum().backward()
            opt.step()
    assert_close(ours_p, ref_p)


def test_a_group_may_hold_one_tensor_instead_of_a_list():
    p = torch.zeros(3, 2, requires_grad=True)
    opt = SGD([{"params": p}], lr=0.1)
    assert len(opt.param_groups[0]["params"]) == 1 and opt.param_groups[0]["params"][0] is p


# -- Newton-Schulz and Muon ----------------------------------------------------------------

A, B, C_ = NS_COEFFICIENTS


def quintic5(s: torch.Tensor) -> torch.Tensor:
    """Five steps of f(s) = a s + b s**3 + c s**5 on each singular value."""
    for _ in range(5):
        s = A * s + B * s**3 + C_ * s**5
    return s


def _matrix(m: int, n: int, cond: float, seed: int) -> torch.Tensor:
    """A float64 (m, n) matrix with singular values log-spaced from 1 down to 1 / cond."""
    g = torch.Generator().manual_seed(seed)
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64))
    s = torch.logspace(0, -math.log10(cond), k, dtype=torch.float64)
    return U @ torch.diag(s) @ V.T


# Newton-Schulz in float64 against a closed form: each step is 3 products of at most n terms,
# and an error in X grows by at most max |f'| ~ 3.9 on [0, 1.21] per step, so after 5 steps
# two orders of the same arithmetic differ by less than 4**5 * fp64_tol(3 n) relative to
# the singular values (at most 1.21).
def ns_tol(n: int) -> float:
    return 4**5 * fp64_tol(3 * n)


@pytest.mark.parametrize("shape", [(12, 20), (20, 12), (16, 16)], ids=["wide", "tall", "square"])
@pytest.mark.parametrize("cond", [3.0, 1e5], ids=["well-conditioned", "ill-conditioned"])
def test_newton_schulz_applies_the_quintic_to_each_singular_value(shape, cond):
    """X = U S V^T -> U f5(S / ||X||_F) V^T, with f5 five steps of the quintic: computed from
    torch's SVD. Singular values far below the largest are amplified, not lifted to 1."""
    G = _matrix(*shape, cond=cond, seed=len(shape) + int(cond))
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    expected = U @ torch.diag(quintic5(S / (S.norm() + 1e-7))) @ Vh
    O = newton_schulz(G, steps=5, dtype=torch.float64)
    assert O.dtype == torch.float64 and O.shape == G.shape
    assert_close_to_scale(O, expected, ns_tol(max(shape)), scale=1.21)
    if cond > 1e3:  # the smallest ones stay small: 5 steps multiply by at most a**5 < 500
        assert torch.linalg.svdvals(O).min() < 0.1


def test_five_quintic_steps_lift_singular_values_above_1e_3_near_1():
    """The ranges newton_schulz's docstring states, on the scalar map itself (a fine grid)."""
    for lowest, low, high in ((1.1e-3, 0.51, 1.21), (1.6e-3, 0.68, 1.21)):
        out = quintic5(torch.logspace(math.log10(lowest), 0, 200_001, dtype=torch.float64))
        assert low <= out.min().item() and out.max().item() <= high, lowest
    assert quintic5(torch.tensor(1e-3, dtype=torch.float64)) < 0.5  # below it: not lifted
    assert math.isclose(quintic5(torch.tensor(1e-9, dtype=torch.float64)).item() / 1e-9,
                        A**5, rel_tol=1e-6)  # near 0 the map is a**5 * s


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("cond", [1.0, 3.0, 100.0], ids=["orthogonal", "random", "cond-100"])
@pytest.mark.parametrize("shape", [(32, 64), (64, 32)], ids=["wide", "tall"])
def test_newton_schulz_singular_values_lie_in_0_5_to_1_5(shape, cond, dtype):
    """Every singular value after 5 steps lies in [0.5, 1.5] when the input's normalised
    singular values are all >= 1.6e-3 (here >= 0.01 / ||s|| > 2e-3): the exact map gives
    [0.68, 1.21], and bf16's rounding (8 bits) leaves that inside [0.5, 1.5]. A Gaussian matrix
    (cond 3: its singular values spread by about (sqrt(64) + sqrt(32)) / (sqrt(64) -
    sqrt(32)) ~ 5.8) is checked too."""
    if cond == 3.0:
        G = torch.randn(*shape, generator=torch.Generator().manual_seed(7))
    else:
        G = _matrix(*shape, cond=cond, seed=3).float()
    O = newton_schulz(G, dtype=dtype)
    assert O.dtype == dtype
    s = torch.linalg.svdvals(O.double())
    assert 0.5 <= s.min().item() and s.max().item() <= 1.5, (s.min(), s.max())


def test_newton_schulz_refuses_a_non_matrix():
    with pytest.raises(DlfError, match=r"newton_schulz orthogonalises a matrix, got shape \(3,\)"):
        newton_schulz(torch.ones(3))
    with pytest.raises(DlfError, match=r"got shape \(2, 2, 2, 2\)"):
        newton_schulz(torch.ones(2, 2, 2, 2))


def published_newton_schulz(G: torch.Tensor, steps: int) -> torch.Tensor:
    """Keller Jordan's zeropower_via_newtonschulz5 (github.com/KellerJordan/Muon), written
    out in G's dtype, for torch.nn.Linear's (fan_out, fan_in) layout."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.clone()
    if G.size(-2) > G.size(-1):
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A_ = X @ X.mT
        B_ = b * A_ + c * A_ @ A_
        X = a * X + B_ @ X
    if G.size(-2) > G.size(-1):
        X = X.mT
    return X


@pytest.mark.parametrize("shape", [(3, 12, 20), (3, 20, 12)], ids=["wide", "tall"])
def test_newton_schulz_of_a_stack_is_each_matrix_alone(shape):
    """A batch (k, m, n) in one call: each matrix as the published iteration computes it on
    its own (float64)."""
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    O = newton_schulz(G, steps=5, dtype=torch.float64)
    assert O.shape == G.shape
    for k in range(shape[0]):
        assert_close_to_scale(O[k], published_newton_schulz(G[k], 5), ns_tol(20), scale=1.21)


def published_muon_step(W, grad, buf, lr, momentum, nesterov, weight_decay):
    """One step of the published Muon on a torch-layout weight W (fan_out, fan_in):
    SGD momentum, Nesterov look-ahead, orthogonalise, scale by sqrt(max(1, rows / cols))."""
    buf.mul_(momentum).add_(grad)
    g = grad.add(buf, alpha=momentum) if nesterov else buf
    update = published_newton_schulz(g, 5) * max(1, W.size(-2) / W.size(-1)) ** 0.5
    W.mul_(1 - lr * weight_decay)
    W.add_(update, alpha=-lr)


@pytest.mark.parametrize("nesterov", [True, False], ids=["nesterov", "plain"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1], ids=["no-wd", "wd"])
def test_muon_update_matches_the_published_algorithm(nesterov, weight_decay):
    """Three steps on matrices of three shapes, two of them twice (orthogonalised together,
    as one batch), float64, fixed gradients, against the published step on each matrix
    alone. The reference runs on the transposed (torch.nn.Linear) layout, so the shape factor
    is checked too: our (fan_in, fan_out) = (4, 8) has fan_out / fan_in = 2 and gets
    sqrt(2), (8, 4) gets 1."""
    g = torch.Generator().manual_seed(11)
    f64 = torch.float64
    shapes = [(4, 8), (8, 4), (6, 6), (4, 8), (6, 6)]
    ours = [torch.randn(s, generator=g, dtype=f64).requires_grad_() for s in shapes]
    initial = [p.detach().clone() for p in ours]
    ref = [p.detach().T.clone() for p in ours]  # (fan_out, fan_in)
    bufs = [torch.zeros_like(w) for w in ref]
    opt = Muon(ours, lr=0.5, lr_scale=0.1, momentum=0.9, nesterov=nesterov,
               weight_decay=weight_decay, ns_dtype=f64)
    for _ in range(3):
        grads = [torch.randn(s, generator=g, dtype=f64) for s in shapes]
        for p, gr in zip(ours, grads):
            p.grad = gr.clone()
        opt.step()
        for w, gr, buf in zip(ref, grads, bufs):
            published_muon_step(w, gr.T, buf, 0.05, 0.9, nesterov, weight_decay)
    for p, w, p0 in zip(ours, ref, initial):
        assert_close_to_scale(p.detach().T, w, ns_tol(8), str(tuple(p.shape)))
        assert (p.detach() - p0).abs().max() > 0.01  # three steps of lr 0.05 moved it


def _muon_and_reference(lr_scale_adamw: float = 1.0):
    """Our Muon on the MLP problem (w1, w2 orthogonalised, biases and the unused vector on
    AdamW), and the same parameters for a reference: the published Muon step for the
    matrices and torch.optim.AdamW for the rest. float64 throughout."""
    def params64():
        return {k: v.double().requires_grad_() for k, v in INIT.items()}

    ours, theirs = params64(), params64()
    adamw_kwargs = {"betas": (0.8, 0.95), "eps": 1e-8, "weight_decay": 0.1}
    opt = Muon([{"params": [ours["w1"], ours["w2"]], "lr_scale": 4.0},
                {"params": [ours["b1"], ours["b2"], ours["unused"]], "muon": False,
                 "lr_scale": lr_scale_adamw, **adamw_kwargs}],
               lr=1e-2, momentum=0.9, ns_dtype=torch.float64)
    adamw = torch.optim.AdamW([theirs["b1"], theirs["b2"], theirs["unused"]], lr=1e-2,
                              **adamw_kwargs)
    return ours, opt, theirs, adamw


def _loss64(p):
    h = torch.tanh(X.double() @ p["w1"] + p["b1"])
    return ((h @ p["w2"] + p["b2"] - Y.double()) ** 2).mean()


@pytest.mark.parametrize("lr_scale_adamw", [1.0, 0.5])
def test_muon_with_adamw_groups_is_one_step_over_both(lr_scale_adamw):
    """20 steps on one loss under a schedule that sets every group["lr"]: the matrices follow
    the published Muon at lr * lr_scale, the rest torch.optim.AdamW at lr * lr_scale."""
    ours, opt, theirs, adamw = _muon_and_reference(lr_scale_adamw)
    bufs = {k: torch.zeros_like(theirs[k]).T for k in ("w1", "w2")}
    sched = CosineLR(1e-2, warmup_steps=3, total_steps=20, min_lr=1e-3)
    losses = []
    for step in range(20):
        for group in opt.param_groups:
            group["lr"] = sched(step)
        for group in adamw.param_groups:
            group["lr"] = sched(step) * lr_scale_adamw
        opt.zero_grad()
        adamw.zero_grad()
        loss = _loss64(ours)
        loss.backward()
        opt.step()
        _loss64(theirs).backward()
        adamw.step()
        with torch.no_grad():
            for k in ("w1", "w2"):
                w = theirs[k].T  # a view: the step updates theirs[k]
                published_muon_step(w, theirs[k].grad.T, bufs[k], sched(step) * 4.0, 0.9,
                                    True, 0.0)
                theirs[k].grad = None
        losses.append(loss.item())
    for k in ours:
        assert_close_to_scale(ours[k], theirs[k], ns_tol(8) * 20, k, scale=1.0)
    assert torch.equal(ours["unused"], INIT["unused"].double())
    assert losses[-1] < 0.7 * losses[0]  # the problem is being optimised


def test_muon_adamw_groups_equal_dlf_adamw():
    """With only AdamW groups, Muon's step is dlf's AdamW step, bit for bit (one update)."""
    for fused in (True, False):
        p_a, p_b = make_params(), make_params()
        muon = Muon([{"params": list(p_a.values()), "muon": False}], lr=1e-2,
                    betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, fused=fused)
        adamw = AdamW(list(p_b.values()), lr=1e-2, fused=fused)
        run(muon, p_a, 10)
        run(adamw, p_b, 10)
        for k in p_a:
            assert torch.equal(p_a[k], p_b[k]), k


def test_muon_state_dict_resume_equals_uninterrupted():
    """bf16 Newton-Schulz (the default) and AdamW groups: 10 steps, or 5 + safetensors + 5."""
    def build(p):
        return Muon([{"params": [p["w1"], p["w2"]]},
                     {"params": [p["b1"], p["b2"], p["unused"]], "muon": False}], lr=1e-2)

    p_full = make_params()
    run(build(p_full), p_full, 10)
    p_a = make_params()
    opt_a = build(p_a)
    run(opt_a, p_a, 5)
    sd = st_load(st_save(opt_a.state_dict()))
    assert set(sd) == {"step", "state.0.momentum_buffer", "state.1.momentum_buffer"} | {
        f"state.{i}.{e}" for i in (2, 3) for e in ("step", "exp_avg", "exp_avg_sq")}
    p_b = {k: v.detach().clone().requires_grad_() for k, v in p_a.items()}
    opt_b = build(p_b)
    opt_b.load_state_dict(sd)
    run(opt_b, p_b, 5)
    for k in p_full:
        assert torch.equal(p_b[k], p_full[k]), k
    bad = dict(sd)
    bad["state.0.exp_avg"] = bad.pop("state.0.momentum_buffer")
    with pytest.raises(DlfError) as e:
        opt_b.load_state_dict(bad)
    assert str(e.value) == "cannot load Muon state: unexpected key state.0.exp_avg"


@pytest.mark.parametrize("build,message", [
    (lambda p: Muon([p[1]], lr=0.02),
     ("Muon orthogonalises matrices; a tensor of shape (4,) belongs in a group with "
      "muon=False (AdamW)")),
    (lambda p: Muon([p[0]], lr=0.02, momentum=1.0), "momentum must be in [0, 1), got 1.0"),
    (lambda p: Muon([p[0]], lr=0.02, ns_steps=-1), "ns_steps must be an integer >= 0, got -1"),
    (lambda p: Muon([p[0]], lr=0.02, ns_steps=2.5), "ns_steps must be an integer >= 0, got 2.5"),
    (lambda p: Muon([p[0]], lr=0.02, lr_scale=float("nan")),
     "lr_scale must be a finite number >= 0, got nan"),
    (lambda p: Muon([p[0]], lr=-1.0), "learning rate must be >= 0, got -1.0"),
    (lambda p: Muon([{"params": [p[1]], "muon": False}], lr=0.02, betas=(0.9, 1.0)),
     "betas must be two numbers in [0, 1), got (0.9, 1.0)"),
])
def test_muon_refusals(build, message):
    with pytest.raises(DlfError) as e:
        build(_two_params())
    assert str(e.value) == message


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_param_groups_for_muon_on_the_transformer(tied):
    """Muon: the attention and MLP matrices; AdamW with decay: the head; AdamW without:
    embedding tables, norm gains, biases."""
    from dlf.models import build_model
    from dlf.models.transformer import TransformerConfig

    model = build_model(TransformerConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2,
                                          n_embd=8, tie_weights=tied))
    head = [] if tied else [model.lm_head.weight]
    groups = param_groups_for_muon(model, weight_decay=0.1, lr_scale=6.0, adamw_params=head)
    names = dict(model.named_parameters())
    hidden = sorted(n for n in names if n.startswith("blocks.") and names[n].ndim == 2)
    assert len(hidden) == 2 * 4
    assert _names(model, groups[0]["params"]) == hidden
    assert groups[0]["muon"] and groups[0]["lr_scale"] == 6.0
    assert groups[0]["weight_decay"] == 0.1
    rest = groups[1:]
    if not tied:
        assert _names(model, rest[0]["params"]) == ["lm_head.weight"]
        assert rest[0]["weight_decay"] == 0.1
    assert rest[-1]["weight_decay"] == 0.0 and not rest[-1]["muon"]
    assert sorted(n for g in groups for n in _names(model, g["params"])) == sorted(names)
    assert all(g["lr_scale"] == 1.0 and not g["muon"] for g in rest)
    Muon(groups, lr=3e-3)  # usable directly
    with pytest.raises(DlfError, match="weight_decay must be >= 0"):
        param_groups_for_muon(model, weight_decay=-1.0)


# -- warmup-stable-decay ---------------------------------------------------------------------


def test_wsd_schedule_closed_form_at_the_boundaries():
    lr, lo = 1.0, 0.1
    s = WSDLR(lr, warmup_steps=10, total_steps=100, decay_fraction=0.2, min_lr=lo)
    assert (s.decay_steps, s.decay_start) == (20, 80)
    assert math.isclose(s(0), 1 / 11) and math.isclose(s(9), 10 / 11)
    assert s(10) == lr and s(79) == lr
    assert s(80) == lr  # the decay starts from the peak
    assert math.isclose(s(81), lr - (lr - lo) / 20)
    assert math.isclose(s(90), (lr + lo) / 2)
    assert math.isclose(s(99), lo + (lr - lo) / 20)
    assert s(100) == lo and s(10**6) == lo
    values = [s(i) for i in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    no_decay = WSDLR(1.0, 0, 10, decay_fraction=0.0)
    assert [no_decay(i) for i in (0, 9, 10)] == [1.0, 1.0, 0.0]
    all_decay = WSDLR(1.0, 0, 4, decay_fraction=1.0)
    assert [all_decay(i) for i in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    rounded = WSDLR(1.0, 0, 7, decay_fraction=0.29)  # 2.03 decay steps: 2
    assert (rounded.decay_steps, rounded.decay_start) == (2, 5)
    assert [rounded(i) for i in (4, 5, 6, 7)] == [1.0, 1.0, 0.5, 0.0]
    assert WSDLR(1.0, 8, 10)(7) == pytest.approx(8 / 9)  # warmup up to the decay is valid


WSD_WARMUP = "need 0 <= warmup_steps <= 8 (the decay starts at step 8 of 10), got warmup_steps="


@pytest.mark.parametrize("build,message", [
    (lambda: WSDLR(1.0, 9, 10), WSD_WARMUP + "9"),
    (lambda: WSDLR(1.0, -1, 10), WSD_WARMUP + "-1"),
    (lambda: WSDLR(1.0, 0, 10, decay_fraction=1.5), "decay_fraction must be in [0, 1], got 1.5"),
    (lambda: WSDLR(1.0, 0, 0), "total_steps must be >= 1, got 0"),
    (lambda: WSDLR(0.1, 0, 10, min_lr=0.2), "min_lr (0.2) must not exceed lr (0.1)"),
    (lambda: make_schedule("wsd", 0.1), "the wsd schedule needs total_steps"),
])
def test_wsd_refusals(build, message):
    with pytest.raises(DlfError) as e:
        build()
    assert str(e.value) == message


def test_make_schedule_builds_wsd_and_the_config_accepts_it():
    from dlf import config as C
    from dlf import presets as P

    s = make_schedule("wsd", 1.0, warmup_steps=1, total_steps=10, min_lr=0.1, decay_fraction=0.5)
    assert isinstance(s, WSDLR) and s.decay_start == 5 and math.isclose(s(6), 1.0 - 0.9 / 5)
    assert make_schedule("wsd", 1.0, total_steps=10).decay_steps == 2  # default fraction 0.2
    cfg = P.load_preset("names-transformer")
    cfg.train.schedule = "wsd"
    C.validate(cfg)
    assert C.TrainConfig().decay_fraction == 0.2
    cfg.train.schedule = "linear"
    with pytest.raises(DlfError, match="constant, step, cosine or wsd, got 'linear'"):
        C.validate(cfg)
