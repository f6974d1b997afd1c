"""Optimizers (SGD, AdamW, Muon) and learning-rate schedules, written without PyTorch's
optimizers.

SGD and AdamW follow torch.optim's update rules exactly, so trajectories agree with torch
to float rounding; Muon follows Keller Jordan's published algorithm. ``param_groups`` is a list of dicts; a schedule sets
``group["lr"]`` before each ``step()``. ``state_dict()`` holds tensors only (it is saved
with safetensors); hyperparameters are not part of it, they come from the run config.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Sequence
from typing import ClassVar, Literal, get_args

import torch

from dlf.errors import DlfError
from dlf.nn import Embedding

__all__ = [
    "NS_COEFFICIENTS",
    "SGD",
    "WSDLR",
    "AdamW",
    "ConstantLR",
    "CosineLR",
    "Muon",
    "Optimizer",
    "StepDecayLR",
    "make_schedule",
    "newton_schulz",
    "param_groups_for_decay",
    "param_groups_for_muon",
]

_STATE_KEY = re.compile(r"^state\.(\d+)\.([A-Za-z_]+)$")


class Optimizer:
    """Shared bookkeeping: parameter groups, per-parameter state, state_dict.

    ``state[i]`` is the state of parameter ``i``, counting parameters across all groups in
    order. ``step_count`` counts calls to ``step()``."""

    #: per-parameter state entries, name -> True for tensors shaped like the parameter,
    #: False for integer counters (stored as 0-d int64 tensors)
    _state_entries: ClassVar[dict[str, bool]] = {}

    def __init__(self, params, defaults: dict) -> None:
        if isinstance(params, torch.Tensor):
            raise DlfError("optimizer params must be a list of tensors or of group dicts")
        params = list(params)
        if not params:
            raise DlfError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        seen: set[int] = set()
        for group in groups:
            if not isinstance(group, dict) or "params" not in group:
                raise DlfError("each parameter group must be a dict with a 'params' list")
            g = {**self.defaults, **group}
            ps = g["params"]
            g["params"] = [ps] if isinstance(ps, torch.Tensor) else list(ps)
            for p in g["params"]:
                if not isinstance(p, torch.Tensor):
                    raise DlfError(f"optimizer params must be tensors, got {type(p).__name__}")
                if not p.is_leaf:
                    raise DlfError("optimizer can only update leaf tensors (model parameters)")
                if id(p) in seen:
                    raise DlfError("a parameter appears more than once in the optimizer")
                seen.add(id(p))
            self._check_hyperparameters(g)
            self.param_groups.append(g)
        if not seen:
            raise DlfError("optimizer got an empty parameter list")
        self.state: dict[int, dict] = {}
        self.step_count = 0

    def _check_hyperparameters(self, group: dict) -> None:
        if not group["lr"] >= 0:
            raise DlfError(f"learning rate must be >= 0, got {group['lr']!r}")
        if not group["weight_decay"] >= 0:
            raise DlfError(f"weight_decay must be >= 0, got {group['weight_decay']!r}")

    def _all_params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def _entries(self, i: int) -> dict[str, bool]:
        """The state entries of parameter i (the same for every parameter, unless a
        subclass keeps different state per group)."""
        return self._state_entries

    def zero_grad(self) -> None:
        """Drop every gradient (``grad = None``)."""
        for p in self._all_params():
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """Update every parameter that has a gradient; parameters with ``grad None`` are
        skipped (their state does not advance)."""
        self.step_count += 1
        offset = 0
        for group in self.param_groups:
            idx, params, grads = [], [], []
            for j, p in enumerate(group["params"]):
                if p.grad is not None:
                    idx.append(offset + j)
                    params.append(p)
                    grads.append(p.grad)
            offset += len(group["params"])
            if params:
                self._update(group, idx, params, grads)

    def _update(self, group: dict, idx: list[int], params: list, grads: list) -> None:
        raise NotImplementedError

    # -- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``"step"`` (0-d int64) and ``"state.{i}.{name}"`` for each parameter i with state.

        Tensors are the live state (no copy): save them before the next ``step()``."""
        out = {"step": torch.tensor(self.step_count, dtype=torch.int64)}
        for i in sorted(self.state):
            for name, value in self.state[i].items():
                if isinstance(value, torch.Tensor):
                    out[f"state.{i}.{name}"] = value
                else:
                    out[f"state.{i}.{name}"] = torch.tensor(value, dtype=torch.int64)
        return out

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Restore what ``state_dict()`` returned, for the same parameters in the same order.

        Raises one DlfError listing every problem (unknown keys, wrong shapes, incomplete
        state) before changing anything."""
        if not isinstance(state_dict, dict):
            raise DlfError(f"optimizer state must be a dict, got {type(state_dict).__name__}")
        params = self._all_params()
        name = type(self).__name__
        problems: list[str] = []
        new_state: dict[int, dict] = {}
        step = state_dict.get("step")
        if not isinstance(step, torch.Tensor) or step.numel() != 1:
            problems.append("missing 0-d tensor 'step'")
        for key, value in state_dict.items():
            if key == "step":
                continue
            m = _STATE_KEY.match(key)
            i = int(m.group(1)) if m else -1
            if m is not None and i >= len(params):
                problems.append(f"{key}: optimizer has only {len(params)} parameters")
                continue
            if m is None or m.group(2) not in self._entries(i):
                problems.append(f"unexpected key {key}")
                continue
            entry = m.group(2)
            if not isinstance(value, torch.Tensor):
                problems.append(f"{key}: not a tensor")
                continue
            p = params[i]
            if self._entries(i)[entry]:
                if value.shape != p.shape:
                    problems.append(
                        f"{key}: shape {tuple(value.shape)} vs parameter {tuple(p.shape)}"
                    )
                    continue
                new_state.setdefault(i, {})[entry] = value.to(
                    device=p.device, dtype=p.dtype, copy=True
                )
            else:
                if value.numel() != 1:
                    problems.append(f"{key}: expected a single integer")
                    continue
                new_state.setdefault(i, {})[entry] = int(value.item())
        for i, entries in sorted(new_state.items()):
            absent = [e for e in self._entries(i) if e not in entries]
            if absent:
                problems.append(f"state.{i} lacks {', '.join(absent)}")
        if problems:
            raise DlfError(f"cannot load {name} state: " + "; ".join(problems))
        self.state = {i: {e: s[e] for e in self._entries(i)} for i, s in new_state.items()}
        self.step_count = int(step.item())

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}("]
        for k, g in enumerate(self.param_groups):
            hp = ", ".join(f"{key}={v}" for key, v in g.items() if key != "params")
            lines.append(f"  group {k}: {len(g['params'])} tensors, {hp}")
        return "\n".join(lines) + "\n)"


class SGD(Optimizer):
    """Stochastic gradient descent, the same update as PyTorch's SGD with dampening 0.

    With g = grad + weight_decay * p:  buf = momentum * buf + g (buf = g at the first
    step); update direction d = g + momentum * buf (nesterov) or buf (else), or g when
    momentum is 0; then p -= lr * d."""

    _state_entries: ClassVar[dict[str, bool]] = {"momentum_buffer": True}

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(
            params,
            {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "nesterov": nesterov},
        )

    def _check_hyperparameters(self, group: dict) -> None:
        super()._check_hyperparameters(group)
        if not group["momentum"] >= 0:
            raise DlfError(f"momentum must be >= 0, got {group['momentum']!r}")
        if group["nesterov"] and group["momentum"] <= 0:
            raise DlfError("nesterov momentum needs momentum > 0")

    def _update(self, group: dict, idx: list[int], params: list, grads: list) -> None:
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        if wd != 0:
            grads = torch._foreach_add(grads, params, alpha=wd)
        if mu != 0:
            bufs, old_bufs, old_grads = [], [], []
            for i, g in zip(idx, grads):
                state = self.state.setdefault(i, {})
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = torch.clone(g).detach()
                else:
                    old_bufs.append(buf)
                    old_grads.append(g)
                bufs.append(buf)
            if old_bufs:
                torch._foreach_mul_(old_bufs, mu)
                torch._foreach_add_(old_bufs, old_grads)
            if group["nesterov"]:
                grads = torch._foreach_add(grads, bufs, alpha=mu)
            else:
                grads = bufs
        torch._foreach_add_(params, grads, alpha=-lr)


class AdamW(Optimizer):
    """Adam with decoupled weight decay, the same update as PyTorch's AdamW (amsgrad off).

    Per parameter, at its step t:  p *= 1 - lr * weight_decay;
    m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g**2;
    p -= lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps).

    ``fused=True`` (the default) runs that update as torch's fused kernel
    (``torch._fused_adamw_``: one pass over each parameter and its two moments instead of
    one per line above); ``fused=False`` runs the written-out lines (multi-tensor
    ``_foreach`` ops). Both are tested against PyTorch's own AdamW."""

    _state_entries: ClassVar[dict[str, bool]] = {"step": False, "exp_avg": True, "exp_avg_sq": True}

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        fused: bool = True,
    ) -> None:
        super().__init__(
            params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        )
        self.fused = fused

    def _check_hyperparameters(self, group: dict) -> None:
        super()._check_hyperparameters(group)
        _check_adamw_hyperparameters(group)

    def _update(self, group: dict, idx: list[int], params: list, grads: list) -> None:
        _adamw_update(self.state, group, group["lr"], idx, params, grads, self.fused)


def _check_adamw_hyperparameters(group: dict) -> None:
    betas = group["betas"]
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise DlfError(f"betas must be two numbers in [0, 1), got {betas!r}")
    if not group["eps"] >= 0:
        raise DlfError(f"eps must be >= 0, got {group['eps']!r}")


def _adamw_update(state_of: dict[int, dict], group: dict, lr: float, idx: list[int],
                  params: list, grads: list, fused: bool) -> None:
    """AdamW's update (see AdamW) of params[k], whose state is state_of[idx[k]], at step
    size lr with the group's betas, eps and weight_decay."""
    eps, wd = group["eps"], group["weight_decay"]
    beta1, beta2 = group["betas"]
    states = []
    for i, p in zip(idx, params):
        state = state_of.get(i)
        if state is None:
            state = state_of[i] = {
                "step": 0,
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
        state["step"] += 1
        states.append(state)
    exp_avgs = [s["exp_avg"] for s in states]
    exp_avg_sqs = [s["exp_avg_sq"] for s in states]

    if fused and all(p.dtype == g.dtype and p.device == params[0].device
                     for p, g in zip(params, grads)):
        steps = [torch.tensor(float(s["step"]), device=params[0].device) for s in states]
        torch._fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=lr,
                            beta1=beta1, beta2=beta2, weight_decay=wd, eps=eps,
                            amsgrad=False, maximize=False)
        return
    if wd != 0:
        torch._foreach_mul_(params, 1.0 - lr * wd)
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)

    neg_step_sizes = [-lr / (1.0 - beta1 ** s["step"]) for s in states]
    bias_correction2_sqrt = [math.sqrt(1.0 - beta2 ** s["step"]) for s in states]
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bias_correction2_sqrt)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, neg_step_sizes)


#: the quintic's coefficients (a, b, c) of Keller Jordan's Muon: f(s) = a s + b s**3 + c s**5
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(G: torch.Tensor, steps: int = 5,
                  dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """An approximately orthogonal matrix with G's singular vectors. G (m, n) -> (m, n) in
    ``dtype``; a batch G (k, m, n) -> (k, m, n), each matrix on its own, in one batched
    product per step.

    With G = U S V^T, X = G / ||G||_F has singular values s in [0, 1], and each step
    X <- a X + b (X X^T) X + c (X X^T)^2 X = U f(S) V^T applies the odd quintic
    f(s) = a s + b s**3 + c s**5 to every singular value at once (NS_COEFFICIENTS). Five
    steps map every s >= 1.1e-3 into [0.51, 1.21] and every s >= 1.6e-3 into [0.68, 1.21]
    (not exactly 1: the coefficients buy a steep slope at 0 instead); smaller singular values
    grow by at most a**5 ~ 485. The iteration runs on the wide orientation (m <= n), whose
    Gram matrix X X^T is the smaller."""
    if G.ndim not in (2, 3):
        raise DlfError(f"newton_schulz orthogonalises a matrix, got shape {tuple(G.shape)}")
    a, b, c = NS_COEFFICIENTS
    tall = G.size(-2) > G.size(-1)
    X = G.to(dtype)
    if tall:
        X = X.mT  # (..., n, m)
    X = X / (torch.linalg.matrix_norm(X, keepdim=True) + 1e-7)  # ||X||_2 <= ||X||_F = 1
    for _ in range(steps):
        A = X @ X.mT  # (..., rows, rows)
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.mT if tall else X


class Muon(Optimizer):
    """Muon (Keller Jordan, 2024: MomentUm Orthogonalized by Newton-Schulz) for the hidden
    matrices and AdamW for every other parameter, in one ``step()``.

    Each group's step size is ``lr * lr_scale``: a schedule sets one ``group["lr"]`` for
    every group, and the Muon group's ``lr_scale`` keeps its own ratio to AdamW (for
    example 0.02 against 3e-3). Below, lr stands for that product.

    A group with ``"muon": True`` (the default) holds matrices (fan_in, fan_out), as dlf's
    ``Linear.weight``. With g = grad (SGD momentum, dampening 0):

        buf = momentum * buf + g                                  (buf = g at the first step)
        d   = g + momentum * buf (nesterov, the default), else buf
        p  *= 1 - lr * weight_decay                               (decoupled; 0 by default)
        p  -= lr * sqrt(max(1, fan_out / fan_in)) * newton_schulz(d, ns_steps, ns_dtype)

    The matrices of one shape are orthogonalised together, as one batch (``newton_schulz``
    on a stack: the same products, fewer and larger kernels).

    The reference writes the momentum as an average (buf = momentum * buf + (1 - momentum)
    * g), which is this buf times (1 - momentum); the orthogonalisation divides by the norm,
    so the step is the same (but for the 1e-7 that guards the division). Its shape factor sqrt(max(1, rows / cols)) is taken on
    torch.nn.Linear's (fan_out, fan_in) weight: the same factor for the same layer.

    A group with ``"muon": False`` takes AdamW's update (see AdamW), with the group's
    betas, eps and weight_decay. Keep embedding tables, the output head, gains and biases
    there (``param_groups_for_muon``).

    The state of a Muon parameter is its ``momentum_buffer``, of an AdamW parameter
    ``step``, ``exp_avg`` and ``exp_avg_sq``: tensors only, as the other optimizers. The
    defaults (momentum 0.95 with Nesterov, 5 steps in bf16, AdamW betas (0.9, 0.95) and
    eps 1e-10, no weight decay) are the reference's."""

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        ns_dtype: torch.dtype = torch.bfloat16,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-10,
        weight_decay: float = 0.0,
        lr_scale: float = 1.0,
        muon: bool = True,
        fused: bool = True,
    ) -> None:
        super().__init__(params, {
            "lr": lr, "lr_scale": lr_scale, "muon": muon, "momentum": momentum,
            "nesterov": nesterov, "ns_steps": ns_steps, "ns_dtype": ns_dtype,
            "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
        })
        self.fused = fused  # the AdamW groups' kernel, as AdamW(fused=...)
        self._muon_of = [g["muon"] for g in self.param_groups for _ in g["params"]]

    def _check_hyperparameters(self, group: dict) -> None:
        super()._check_hyperparameters(group)
        _check_adamw_hyperparameters(group)
        if not (group["lr_scale"] >= 0 and math.isfinite(group["lr_scale"])):
            raise DlfError(f"lr_scale must be a finite number >= 0, got {group['lr_scale']!r}")
        if not 0 <= group["momentum"] < 1:
            raise DlfError(f"momentum must be in [0, 1), got {group['momentum']!r}")
        steps = group["ns_steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise DlfError(f"ns_steps must be an integer >= 0, got {steps!r}")
        if group["muon"]:
            for p in group["params"]:
                if p.ndim != 2:
                    raise DlfError(
                        f"Muon orthogonalises matrices; a tensor of shape {tuple(p.shape)} "
                        "belongs in a group with muon=False (AdamW)")

    def _entries(self, i: int) -> dict[str, bool]:
        if 0 <= i < len(self._muon_of) and self._muon_of[i]:
            return {"momentum_buffer": True}
        return AdamW._state_entries

    def _update(self, group: dict, idx: list[int], params: list, grads: list) -> None:
        lr = group["lr"] * group["lr_scale"]
        if not group["muon"]:
            _adamw_update(self.state, group, lr, idx, params, grads, self.fused)
            return
        mu, wd = group["momentum"], group["weight_decay"]
        bufs = []
        for i, p in zip(idx, params):
            state = self.state.setdefault(i, {})
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            bufs.append(state["momentum_buffer"])
        torch._foreach_mul_(bufs, mu)
        torch._foreach_add_(bufs, grads)
        ds = torch._foreach_add(grads, bufs, alpha=mu) if group["nesterov"] else bufs
        of_shape: dict[tuple, list[int]] = {}  # shape -> positions in params
        for k, p in enumerate(params):
            of_shape.setdefault(tuple(p.shape), []).append(k)
        for (fan_in, fan_out), ks in of_shape.items():
            updates = newton_schulz(torch.stack([ds[k] for k in ks]), group["ns_steps"],
                                    group["ns_dtype"])  # (len(ks), fan_in, fan_out)
            for k, update in zip(ks, updates):
                p = params[k]
                if wd != 0:
                    p.mul_(1.0 - lr * wd)
                p.add_(update.to(p.dtype), alpha=-lr * max(1.0, fan_out / fan_in) ** 0.5)


def param_groups_for_muon(model, weight_decay: float = 0.0, lr_scale: float = 1.0,
                          adamw_params=()) -> list[dict]:
    """Split a model's parameters for ``Muon``: ``[muon, adamw_decay, adamw_no_decay]``.

    Muon takes every 2-D parameter that is not an ``Embedding`` table and not listed in
    ``adamw_params`` (pass the output head's weight there: a lookup and the head are not
    hidden layers), with step size ``lr * lr_scale`` and decoupled ``weight_decay``. The
    listed matrices go to AdamW with ``weight_decay``; tables, gains and biases to AdamW
    without. Parameters with ``requires_grad=False`` are left out, and so is an empty group
    (a tied head leaves no matrix for AdamW)."""
    decay, no_decay = param_groups_for_decay(model, weight_decay)
    kept = {id(p) for p in adamw_params}
    hidden = [p for p in decay["params"] if p.ndim == 2 and id(p) not in kept]
    hidden_ids = {id(p) for p in hidden}
    groups = [
        {"params": hidden, "muon": True, "lr_scale": float(lr_scale),
         "weight_decay": float(weight_decay)},
        {"params": [p for p in decay["params"] if id(p) not in hidden_ids], "muon": False,
         "lr_scale": 1.0, "weight_decay": float(weight_decay)},
        {"params": no_decay["params"], "muon": False, "lr_scale": 1.0, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def param_groups_for_decay(model, weight_decay: float) -> list[dict]:
    """Split a model's parameters into two groups: ``[decay, no_decay]``.

    The rule is by module kind and tensor rank, never by name: a parameter is decayed
    when it has 2 or more dimensions (a matrix that multiplies activations) and is not
    the table of an ``Embedding`` (a lookup, whose rows move only when their token is
    seen). Biases and norm gains (1-D) are not decayed. Parameters with
    ``requires_grad=False`` are left out. The groups are
    ``{"params": [...], "weight_decay": weight_decay}`` and ``{"params": [...],
    "weight_decay": 0.0}``."""
    if not weight_decay >= 0:
        raise DlfError(f"weight_decay must be >= 0, got {weight_decay!r}")
    tables = {id(m.weight) for m in model.modules() if isinstance(m, Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and id(p) not in tables else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": float(weight_decay)},
        {"params": no_decay, "weight_decay": 0.0},
    ]


# -- learning-rate schedules: step (0-based optimizer step) -> learning rate ---------------


def _check_lr(lr: float, what: str = "learning rate") -> float:
    if not (isinstance(lr, (int, float)) and lr >= 0 and math.isfinite(lr)):
        raise DlfError(f"{what} must be a finite number >= 0, got {lr!r}")
    return float(lr)


def _check_step(step: int) -> int:
    if step < 0:
        raise DlfError(f"schedule step must be >= 0, got {step}")
    return step


class ConstantLR:
    """``lr`` at every step."""

    def __init__(self, lr: float) -> None:
        self.lr = _check_lr(lr)

    def __call__(self, step: int) -> float:
        _check_step(step)
        return self.lr

    def __repr__(self) -> str:
        return f"ConstantLR(lr={self.lr})"


class StepDecayLR:
    """``lr * gamma ** k`` where k = number of milestones <= step.

    The lectures' "0.1, then 0.01 from step 100000" is
    ``StepDecayLR(0.1, milestones=[100000], gamma=0.1)``."""

    def __init__(self, lr: float, milestones: Sequence[int], gamma: float = 0.1) -> None:
        self.lr = _check_lr(lr)
        ms = list(milestones)
        if any(not isinstance(m, int) or m < 0 for m in ms):
            raise DlfError(f"milestones must be integers >= 0, got {ms!r}")
        if ms != sorted(ms):
            raise DlfError(f"milestones must be increasing, got {ms!r}")
        self.milestones = ms
        self.gamma = _check_lr(gamma, "gamma")

    def __call__(self, step: int) -> float:
        k = bisect_right(self.milestones, _check_step(step))
        return self.lr * self.gamma**k

    def __repr__(self) -> str:
        return f"StepDecayLR(lr={self.lr}, milestones={self.milestones}, gamma={self.gamma})"


class CosineLR:
    """Linear warmup then cosine decay to ``min_lr`` (nanoGPT's schedule).

    step < warmup_steps:       lr * (step + 1) / (warmup_steps + 1)
    step >= total_steps:       min_lr
    otherwise, with r = (step - warmup_steps) / (total_steps - warmup_steps):
                               min_lr + 0.5 * (1 + cos(pi * r)) * (lr - min_lr)"""

    def __init__(self, lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0):
        self.lr = _check_lr(lr)
        self.min_lr = _check_lr(min_lr, "min_lr")
        if self.min_lr > self.lr:
            raise DlfError(f"min_lr ({min_lr}) must not exceed lr ({lr})")
        if warmup_steps < 0 or total_steps < 1 or warmup_steps > total_steps:
            raise DlfError(
                f"need 0 <= warmup_steps <= total_steps and total_steps >= 1, "
                f"got warmup_steps={warmup_steps}, total_steps={total_steps}"
            )
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)

    def __call__(self, step: int) -> float:
        _check_step(step)
        if step < self.warmup_steps:
            return self.lr * (step + 1) / (self.warmup_steps + 1)
        if step >= self.total_steps:
            return self.min_lr
        ratio = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
        return self.min_lr + coeff * (self.lr - self.min_lr)

    def __repr__(self) -> str:
        return (
            f"CosineLR(lr={self.lr}, warmup_steps={self.warmup_steps}, "
            f"total_steps={self.total_steps}, min_lr={self.min_lr})"
        )


class WSDLR:
    """Warmup, stable, decay: linear warmup, ``lr`` held, then a linear decay to ``min_lr``
    over the last ``decay_fraction`` of ``total_steps`` (the "cooldown" of Hu et al., 2024,
    MiniCPM, and of the modded-nanogpt speedruns).

    With D = round(decay_fraction * total_steps) decay steps starting at S = total_steps - D:
    step < warmup_steps:       lr * (step + 1) / (warmup_steps + 1)   (as CosineLR)
    step < S:                  lr
    step >= total_steps:       min_lr
    otherwise:                 lr + (min_lr - lr) * (step - S) / D

    As with CosineLR, min_lr is reached at step total_steps, one past the last step."""

    def __init__(self, lr: float, warmup_steps: int, total_steps: int,
                 decay_fraction: float = 0.2, min_lr: float = 0.0):
        self.lr = _check_lr(lr)
        self.min_lr = _check_lr(min_lr, "min_lr")
        if self.min_lr > self.lr:
            raise DlfError(f"min_lr ({min_lr}) must not exceed lr ({lr})")
        if not 0.0 <= decay_fraction <= 1.0:
            raise DlfError(f"decay_fraction must be in [0, 1], got {decay_fraction!r}")
        if total_steps < 1:
            raise DlfError(f"total_steps must be >= 1, got {total_steps}")
        self.decay_fraction = float(decay_fraction)
        self.total_steps = int(total_steps)
        self.decay_steps = round(self.decay_fraction * self.total_steps)
        self.decay_start = self.total_steps - self.decay_steps
        if not 0 <= warmup_steps <= self.decay_start:
            raise DlfError(
                f"need 0 <= warmup_steps <= {self.decay_start} (the decay starts at step "
                f"{self.decay_start} of {self.total_steps}), got warmup_steps={warmup_steps}"
            )
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: int) -> float:
        _check_step(step)
        if step < self.warmup_steps:
            return self.lr * (step + 1) / (self.warmup_steps + 1)
        if step < self.decay_start:
            return self.lr
        if step >= self.total_steps:
            return self.min_lr
        ratio = (step - self.decay_start) / self.decay_steps
        return self.lr + (self.min_lr - self.lr) * ratio

    def __repr__(self) -> str:
        return (
            f"WSDLR(lr={self.lr}, warmup_steps={self.warmup_steps}, "
            f"total_steps={self.total_steps}, decay_fraction={self.decay_fraction}, "
            f"min_lr={self.min_lr})"
        )


# The learning-rate schedules (train.schedule) and optimizers (train.optimizer) by name
Schedule = Literal["constant", "step", "cosine", "wsd"]
SCHEDULES = get_args(Schedule)
OptimizerName = Literal["sgd", "adamw", "muon"]


def make_schedule(
    name: str,
    lr: float,
    *,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    warmup_steps: int = 0,
    total_steps: int | None = None,
    min_lr: float = 0.0,
    decay_fraction: float = 0.2,
) -> ConstantLR | StepDecayLR | CosineLR | WSDLR:
    """Build a schedule by name: "constant", "step" (milestones, gamma), "cosine"
    (warmup_steps, total_steps, min_lr) or "wsd" (the same and decay_fraction)."""
    if name == "constant":
        return ConstantLR(lr)
    if name == "step":
        return StepDecayLR(lr, milestones, gamma)
    if name == "cosine":
        if total_steps is None:
            raise DlfError("the cosine schedule needs total_steps")
        return CosineLR(lr, warmup_steps, total_steps, min_lr)
    if name == "wsd":
        if total_steps is None:
            raise DlfError("the wsd schedule needs total_steps")
        return WSDLR(lr, warmup_steps, total_steps, decay_fraction, min_lr)
    raise DlfError(f"unknown learning-rate schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
