"""Manual backprop: the makemore part 4 ("becoming a backprop ninja") MLP, as a library.

The model is a character-level MLP language model::

    emb     = C[idx]                              (B, block_size, n_embd)
    hprebn  = emb.view(B, -1) @ W1 (+ b1)         (B, n_hidden)
    hpreact = BatchNorm(hprebn; bngain, bnbias)   (B, n_hidden)
    h       = tanh(hpreact)
    logits  = h @ W2 + b2                         (B, vocab_size)
    loss    = cross_entropy(logits, targets)

Every gradient in the product path is written by hand: nothing here calls
``loss.backward()`` except :func:`gradcheck`, which uses autograd only as the reference the
hand-written gradients are compared against.  There is no PyTorch Module class and no
``torch.optim``; parameters are plain tensors and the update is ``p -= lr * grad``.

BatchNorm convention (as in the lecture): the *batch* variance used to normalise in training
mode is Bessel-corrected, ``bnvar = 1/(n-1) * sum((x - mean)**2)``, and the same unbiased
variance feeds the running estimate.  It is undefined for a batch of one, so training-mode
forwards (and :meth:`ManualMLP.forward_cache`, which always uses batch statistics) raise
:class:`~dlf.errors.DlfError` when ``B < 2``.  Eval mode normalises with the running buffers
and accepts any batch size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F

from dlf.errors import DlfError
from dlf.rules import Above, AtLeast, Within, check_fields

__all__ = [
    "GRADCHECK_LIMIT",
    "GRAD_NAMES",
    "PARAM_NAMES",
    "ManualMLP",
    "ManualMLPConfig",
    "format_gradcheck_table",
    "gradcheck",
    "train_manual",
]

# Parameter names in their fixed order (b1 is skipped when config.bias1 is False).
PARAM_NAMES = ("C", "W1", "b1", "W2", "b2", "bngain", "bnbias")
BUFFER_NAMES = ("bnmean_running", "bnvar_running")

# Keys of ManualMLP.forward_cache, in forward order.
CACHE_NAMES = (
    "emb", "embcat", "hprebn", "bnmeani", "bndiff", "bndiff2", "bnvar", "bnvar_inv", "bnraw",
    "hpreact", "h", "logits", "logit_maxes", "norm_logits", "counts", "counts_sum",
    "counts_sum_inv", "probs", "logprobs", "loss",
)  # fmt: skip

# Keys of ManualMLP.backward, in the order they are computed (db1 only when bias1).
GRAD_NAMES = (
    "dlogprobs", "dprobs", "dcounts_sum_inv", "dcounts_sum", "dcounts", "dnorm_logits",
    "dlogit_maxes", "dlogits", "dh", "dW2", "db2", "dhpreact", "dbngain", "dbnbias", "dbnraw",
    "dbnvar_inv", "dbnvar", "dbndiff2", "dbndiff", "dbnmeani", "dhprebn", "dembcat", "dW1",
    "db1", "demb", "dC",
)  # fmt: skip


@dataclass
class ManualMLPConfig:
    """Shape and BatchNorm settings of :class:`ManualMLP`.

    ``bias1`` keeps the first layer's bias, which is redundant before BatchNorm (its gradient
    is zero up to rounding) but is kept by default so the lecture's ``db1`` is checked too.
    ``momentum`` is the running-statistics rate: ``running = (1 - momentum) * running +
    momentum * batch_stat`` (the lecture's 0.999 / 0.001).
    """

    type: ClassVar[str] = "manual-mlp"  # model-registry name (not a dataclass field)

    vocab_size: Annotated[int, AtLeast(1)] = 27
    block_size: Annotated[int, AtLeast(1)] = 3
    n_embd: Annotated[int, AtLeast(1)] = 10
    n_hidden: Annotated[int, AtLeast(1)] = 200
    bias1: bool = True
    eps: Annotated[float, Above(0)] = 1e-5
    momentum: Annotated[float, Within(0, 1, closed=True)] = 0.001
    bessel: bool = True  # lecture: normalise with 1/(n-1); False: 1/n, as torch.nn.BatchNorm1d
    # "check": the lecture's deliberately non-standard init (random biases, gains != 1) so no
    # gradient is trivially zero in gradcheck; "standard": BN gain 1, bias 0, small output
    # layer, for training
    init: Literal["check", "standard"] = "check"

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """This config's rules (dlf.rules): checked when it is made, and by a run's plan."""
        check_fields(self, "ManualMLPConfig")


class ManualMLP:
    """The lecture's MLP with plain-tensor parameters and hand-written backward passes.

    Parameters (fixed order): ``C`` (V, n_embd), ``W1`` (block_size*n_embd, n_hidden),
    ``b1`` (n_hidden,) when ``config.bias1``, ``W2`` (n_hidden, V), ``b2`` (V,),
    ``bngain`` (1, n_hidden), ``bnbias`` (1, n_hidden).  Buffers: ``bnmean_running``
    (1, n_hidden) zeros and ``bnvar_running`` (1, n_hidden) ones.

    Initialisation is the lecture's deliberately "non-standard" one (small random biases,
    gain near but not at 1) so that no gradient is trivially zero and a bug cannot hide.
    """

    def __init__(
        self,
        config: ManualMLPConfig | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        config = ManualMLPConfig() if config is None else config
        if not isinstance(config, ManualMLPConfig):
            raise DlfError(f"config must be a ManualMLPConfig, got {type(config).__name__}")
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise DlfError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        self.config = config
        self.block_size = config.block_size
        self.dtype = dtype
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.training = True

        V, E, H = config.vocab_size, config.n_embd, config.n_hidden
        fan_in = config.block_size * E
        gen_device = generator.device if generator is not None else torch.device("cpu")

        def randn(*shape: int) -> torch.Tensor:
            t = torch.randn(shape, generator=generator, dtype=dtype, device=gen_device)
            return t.to(self.device)

        self.C = randn(V, E)
        self.W1 = randn(fan_in, H) * (5 / 3) / fan_in**0.5
        self.b1 = randn(H) * 0.1 if config.bias1 else None
        self.W2 = randn(H, V) * 0.1
        self.b2 = randn(V) * 0.1
        self.bngain = randn(1, H) * 0.1 + 1.0
        self.bnbias = randn(1, H) * 0.1
        if config.init == "standard":  # the training init: a near-uniform first prediction
            self.W2 = self.W2 * 0.1  # N(0, 0.01)
            self.b2 = torch.zeros_like(self.b2)
            self.bngain = torch.ones_like(self.bngain)
            self.bnbias = torch.zeros_like(self.bnbias)
        self.bnmean_running = torch.zeros((1, H), dtype=dtype, device=self.device)
        self.bnvar_running = torch.ones((1, H), dtype=dtype, device=self.device)

    # ------------------------------------------------------------------ model contract
    def _param_names(self) -> list[str]:
        return [n for n in PARAM_NAMES if n != "b1" or self.config.bias1]

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        """``[(name, tensor), ...]`` in the fixed order C, W1, [b1], W2, b2, bngain, bnbias."""
        return [(n, getattr(self, n)) for n in self._param_names()]

    def parameters(self) -> list[torch.Tensor]:
        """The parameter tensors, in the order of :meth:`named_parameters`."""
        return [t for _, t in self.named_parameters()]

    def num_parameters(self) -> int:
        """Number of trainable scalars (running buffers excluded)."""
        return sum(p.numel() for p in self.parameters())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Parameters and running buffers, name -> tensor (detached views sharing storage)."""
        names = self._param_names() + list(BUFFER_NAMES)
        return {n: getattr(self, n).detach() for n in names}

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Copy values in place; all problems are reported together in one DlfError."""
        if not isinstance(state_dict, dict):
            raise DlfError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        expected = self._param_names() + list(BUFFER_NAMES)
        missing = [n for n in expected if n not in state_dict]
        unexpected = sorted(str(k) for k in state_dict if k not in expected)
        problems = []
        if missing:
            problems.append("missing keys: " + ", ".join(missing))
        if unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        for n in expected:
            if n not in state_dict:
                continue
            value, own = state_dict[n], getattr(self, n)
            if not isinstance(value, torch.Tensor):
                problems.append(f"{n}: expected a tensor, got {type(value).__name__}")
            elif tuple(value.shape) != tuple(own.shape):
                problems.append(
                    f"{n}: shape {tuple(value.shape)} does not match model {tuple(own.shape)}"
                )
        if problems:
            raise DlfError("cannot load state_dict into ManualMLP: " + "; ".join(problems))
        with torch.no_grad():
            for n in expected:
                getattr(self, n).copy_(state_dict[n])

    def to(
        self,
        device: torch.device | str | torch.dtype | None = None,
        dtype: torch.dtype | None = None,
    ) -> ManualMLP:
        """Move parameters and buffers in place (``to(device)``, ``to(dtype)`` or both)."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise DlfError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        new_device = self.device if device is None else torch.device(device)
        new_dtype = self.dtype if dtype is None else dtype
        for name in self._param_names() + list(BUFFER_NAMES):
            setattr(self, name, getattr(self, name).to(device=new_device, dtype=new_dtype))
        self.device, self.dtype = new_device, new_dtype
        return self

    def train(self, mode: bool = True) -> ManualMLP:
        self.training = bool(mode)
        return self

    def eval(self) -> ManualMLP:
        return self.train(False)

    # ------------------------------------------------------------------ input checks
    def _check_idx(self, idx: torch.Tensor) -> torch.Tensor:
        if not isinstance(idx, torch.Tensor):
            raise DlfError(f"idx must be a tensor, got {type(idx).__name__}")
        if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
            raise DlfError(f"idx must hold integer token ids, got dtype {idx.dtype}")
        if idx.dim() != 2 or idx.shape[1] != self.block_size:
            raise DlfError(f"idx must have shape (B, {self.block_size}), got {tuple(idx.shape)}")
        if idx.shape[0] == 0:
            raise DlfError("idx is an empty batch")
        V = self.config.vocab_size
        if bool((idx < 0).any()) or bool((idx >= V).any()):
            raise DlfError(f"idx holds token ids outside [0, {V})")
        return idx.to(device=self.device, dtype=torch.long)

    def _check_targets(self, targets: torch.Tensor, batch: int) -> torch.Tensor:
        if not isinstance(targets, torch.Tensor):
            raise DlfError(f"targets must be a tensor, got {type(targets).__name__}")
        if targets.dtype.is_floating_point or targets.dtype.is_complex:
            raise DlfError(f"targets must hold integer token ids, got dtype {targets.dtype}")
        if targets.dtype == torch.bool:
            raise DlfError("targets must hold integer token ids, got dtype torch.bool")
        if tuple(targets.shape) != (batch,):
            raise DlfError(f"targets must have shape ({batch},), got {tuple(targets.shape)}")
        V = self.config.vocab_size
        if bool((targets < 0).any()) or bool((targets >= V).any()):
            raise DlfError(f"targets hold token ids outside [0, {V})")
        return targets.to(device=self.device, dtype=torch.long)

    @staticmethod
    def _check_batch_stats(batch: int) -> None:
        if batch < 2:
            raise DlfError(
                f"BatchNorm on batch statistics needs a batch of at least 2 "
                f"in training mode, got {batch} (use eval() for single examples)"
            )

    # ------------------------------------------------------------------ forward passes
    def _var_div(self, n: int) -> int:
        """Divisor of the batch variance: n - 1 (Bessel, the lecture) or n (torch)."""
        return n - 1 if self.config.bessel else n

    def _update_running(self, bnmeani: torch.Tensor, bnvar: torch.Tensor) -> None:
        m = self.config.momentum
        with torch.no_grad():
            self.bnmean_running.mul_(1.0 - m).add_(bnmeani.detach(), alpha=m)
            self.bnvar_running.mul_(1.0 - m).add_(bnvar.detach(), alpha=m)

    def __call__(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Compact forward: ``(logits (B, V), loss or None)``.

        Training mode normalises with the batch statistics (and updates the running buffers);
        eval mode uses the running buffers and is deterministic.
        """
        idx = self._check_idx(idx)
        if targets is not None:
            targets = self._check_targets(targets, idx.shape[0])
        B = idx.shape[0]
        eps = self.config.eps
        embcat = self.C[idx].view(B, -1)
        hprebn = embcat @ self.W1
        if self.b1 is not None:
            hprebn = hprebn + self.b1
        if self.training:
            self._check_batch_stats(B)
            mean = hprebn.mean(0, keepdim=True)
            var = hprebn.var(0, keepdim=True, unbiased=self.config.bessel)
            self._update_running(mean, hprebn.var(0, keepdim=True, unbiased=True))
        else:
            mean, var = self.bnmean_running, self.bnvar_running
        hpreact = self.bngain * (hprebn - mean) * (var + eps) ** -0.5 + self.bnbias
        logits = torch.tanh(hpreact) @ self.W2 + self.b2
        loss = None if targets is None else F.cross_entropy(logits, targets)
        return logits, loss

    def forward_cache(
        self, idx: torch.Tensor, targets: torch.Tensor, update_running: bool = True
    ) -> dict[str, torch.Tensor]:
        """The lecture's fully expanded forward, keeping every intermediate.

        Always normalises with Bessel-corrected *batch* statistics (this is the graph that
        :meth:`backward` differentiates), so ``B >= 2`` is required.  The running buffers are
        updated only when the model is in training mode and ``update_running`` is true.
        Returns a dict with the keys of ``CACHE_NAMES``.
        """
        idx = self._check_idx(idx)
        n = idx.shape[0]
        targets = self._check_targets(targets, n)
        self._check_batch_stats(n)
        eps = self.config.eps

        emb = self.C[idx]
        embcat = emb.view(n, -1)
        hprebn = embcat @ self.W1
        if self.b1 is not None:
            hprebn = hprebn + self.b1
        bnmeani = 1 / n * hprebn.sum(0, keepdim=True)
        bndiff = hprebn - bnmeani
        bndiff2 = bndiff**2
        bnvar = 1 / self._var_div(n) * bndiff2.sum(0, keepdim=True)  # n-1 (Bessel) or n (torch)
        bnvar_inv = (bnvar + eps) ** -0.5
        bnraw = bndiff * bnvar_inv
        hpreact = self.bngain * bnraw + self.bnbias
        h = torch.tanh(hpreact)
        logits = h @ self.W2 + self.b2
        logit_maxes = logits.max(1, keepdim=True).values
        norm_logits = logits - logit_maxes  # subtract max for numerical stability
        counts = norm_logits.exp()
        counts_sum = counts.sum(1, keepdim=True)
        counts_sum_inv = counts_sum**-1
        probs = counts * counts_sum_inv
        logprobs = probs.log()
        loss = -logprobs[torch.arange(n, device=self.device), targets].mean()

        if self.training and update_running:
            # the running estimate is always the unbiased variance (as torch does)
            self._update_running(bnmeani, bnvar * self._var_div(n) / (n - 1))
        local = locals()
        return {k: local[k] for k in CACHE_NAMES}

    # ------------------------------------------------------------------ backward passes
    @torch.no_grad()
    def backward(
        self, cache: dict[str, torch.Tensor], idx: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Hand-written backward through every intermediate of :meth:`forward_cache`.

        Returns ``{"dlogprobs": ..., ..., "dC": ...}`` (keys of ``GRAD_NAMES``; ``db1`` only
        when the model has ``b1``); each gradient has the shape of the tensor it belongs to.
        """
        idx = self._check_idx(idx)
        n = idx.shape[0]
        targets = self._check_targets(targets, n)
        c = {k: v.detach() for k, v in cache.items()}
        rows = torch.arange(n, device=self.device)
        eps = self.config.eps
        g: dict[str, torch.Tensor] = {}

        # cross-entropy, step by step
        dlogprobs = torch.zeros_like(c["logprobs"])
        dlogprobs[rows, targets] = -1.0 / n
        g["dlogprobs"] = dlogprobs
        dprobs = (1.0 / c["probs"]) * dlogprobs
        g["dprobs"] = dprobs
        dcounts_sum_inv = (c["counts"] * dprobs).sum(1, keepdim=True)
        g["dcounts_sum_inv"] = dcounts_sum_inv
        dcounts_sum = (-(c["counts_sum"] ** -2)) * dcounts_sum_inv
        g["dcounts_sum"] = dcounts_sum
        dcounts = c["counts_sum_inv"] * dprobs + torch.ones_like(c["counts"]) * dcounts_sum
        g["dcounts"] = dcounts
        dnorm_logits = c["counts"] * dcounts
        g["dnorm_logits"] = dnorm_logits
        dlogit_maxes = (-dnorm_logits).sum(1, keepdim=True)
        g["dlogit_maxes"] = dlogit_maxes
        logits = c["logits"]
        onehot_max = F.one_hot(logits.max(1).indices, num_classes=logits.shape[1])
        dlogits = dnorm_logits + onehot_max.to(logits.dtype) * dlogit_maxes
        g["dlogits"] = dlogits

        # second linear layer
        g["dh"] = dh = dlogits @ self.W2.T
        g["dW2"] = c["h"].T @ dlogits
        g["db2"] = dlogits.sum(0)

        # tanh
        g["dhpreact"] = dhpreact = (1.0 - c["h"] ** 2) * dh

        # BatchNorm, step by step
        bnraw, bndiff, bnvar_inv = c["bnraw"], c["bndiff"], c["bnvar_inv"]
        g["dbngain"] = (bnraw * dhpreact).sum(0, keepdim=True)
        g["dbnbias"] = dhpreact.sum(0, keepdim=True)
        g["dbnraw"] = dbnraw = self.bngain * dhpreact
        g["dbnvar_inv"] = dbnvar_inv = (bndiff * dbnraw).sum(0, keepdim=True)
        g["dbnvar"] = dbnvar = (-0.5 * (c["bnvar"] + eps) ** -1.5) * dbnvar_inv
        div = self._var_div(n)
        g["dbndiff2"] = dbndiff2 = (1.0 / div) * torch.ones_like(c["bndiff2"]) * dbnvar
        g["dbndiff"] = dbndiff = bnvar_inv * dbnraw + (2 * bndiff) * dbndiff2
        g["dbnmeani"] = dbnmeani = (-dbndiff).sum(0, keepdim=True)
        g["dhprebn"] = dhprebn = dbndiff + 1.0 / n * (torch.ones_like(c["hprebn"]) * dbnmeani)

        # first linear layer and embedding
        g["dembcat"] = dembcat = dhprebn @ self.W1.T
        g["dW1"] = c["embcat"].T @ dhprebn
        if self.b1 is not None:
            g["db1"] = dhprebn.sum(0)
        g["demb"] = demb = dembcat.view(c["emb"].shape)
        g["dC"] = self._embedding_grad(idx, demb)
        return g

    def _embedding_grad(self, idx: torch.Tensor, demb: torch.Tensor) -> torch.Tensor:
        dC = torch.zeros_like(self.C)
        dC.index_add_(0, idx.reshape(-1), demb.reshape(-1, self.config.n_embd))
        return dC

    @torch.no_grad()
    def _backward_fast(
        self, cache: dict[str, torch.Tensor], idx: torch.Tensor, targets: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        idx = self._check_idx(idx)
        n = idx.shape[0]
        targets = self._check_targets(targets, n)
        logits, h = cache["logits"].detach(), cache["h"].detach()
        bnraw, bnvar_inv = cache["bnraw"].detach(), cache["bnvar_inv"].detach()

        # cross-entropy in one step: (softmax - onehot) / n
        dlogits = F.softmax(logits, 1)
        dlogits[torch.arange(n, device=self.device), targets] -= 1
        dlogits /= n
        g = {"dW2": h.T @ dlogits, "db2": dlogits.sum(0)}
        dhpreact = (1.0 - h**2) * (dlogits @ self.W2.T)
        g["dbngain"] = (bnraw * dhpreact).sum(0, keepdim=True)
        g["dbnbias"] = dhpreact.sum(0, keepdim=True)
        # BatchNorm input gradient in one step; n / var_div is n/(n-1) with Bessel's
        # correction and 1 with torch's 1/n variance
        dhprebn = (
            self.bngain
            * bnvar_inv
            / n
            * (
                n * dhpreact
                - dhpreact.sum(0, keepdim=True)
                - n / self._var_div(n) * bnraw * (dhpreact * bnraw).sum(0, keepdim=True)
            )
        )
        g["dW1"] = cache["embcat"].detach().T @ dhprebn
        if self.b1 is not None:
            g["db1"] = dhprebn.sum(0)
        demb = (dhprebn @ self.W1.T).view(n, self.block_size, self.config.n_embd)
        g["dC"] = self._embedding_grad(idx, demb)
        grads = {"d" + name: g["d" + name] for name in self._param_names()}
        return grads, {"dlogits": dlogits, "dhprebn": dhprebn}

    def backward_fast(
        self, cache: dict[str, torch.Tensor], idx: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Parameter gradients via the compact forms (fused cross-entropy and BatchNorm).

        Returns ``{"dC", "dW1", ["db1"], "dW2", "db2", "dbngain", "dbnbias"}``.
        """
        return self._backward_fast(cache, idx, targets)[0]

    # ------------------------------------------------------------------ training
    @torch.no_grad()
    def sgd_update(self, grads: dict[str, torch.Tensor], lr: float) -> None:
        """``p -= lr * grad`` for every parameter; ``grads`` keyed ``"d" + name``."""
        for name, p in self.named_parameters():
            key = "d" + name
            if key not in grads:
                raise DlfError(f"missing gradient {key!r} for parameter {name!r}")
            p.sub_(grads[key], alpha=float(lr))

    def step(self, idx: torch.Tensor, targets: torch.Tensor, lr: float) -> float:
        """One training step: forward_cache + backward_fast + SGD. Returns the batch loss.

        Puts the model in training mode (the step needs batch statistics) and updates the
        running BatchNorm buffers.
        """
        if not (isinstance(lr, (int, float)) and math.isfinite(lr)):
            raise DlfError(f"learning rate must be a finite number, got {lr!r}")
        self.train()
        with torch.no_grad():
            cache = self.forward_cache(idx, targets)
        grads = self.backward_fast(cache, idx, targets)
        self.sgd_update(grads, lr)
        return float(cache["loss"])

    def manual_step(self, idx: torch.Tensor, targets: torch.Tensor, lr: float) -> float:
        """Alias of :meth:`step`: the hook a generic trainer looks for instead of an optimizer."""
        return self.step(idx, targets, lr)

    @torch.no_grad()
    def calibrate_running_stats(self, X: torch.Tensor) -> None:
        """Set the running buffers to the statistics of ``X`` in one pass (lecture's
        "calibrate batch norm at the end of training"), using the Bessel-corrected variance."""
        idx = self._check_idx(X)
        self._check_batch_stats(idx.shape[0])
        hprebn = self.C[idx].view(idx.shape[0], -1) @ self.W1
        if self.b1 is not None:
            hprebn = hprebn + self.b1
        self.bnmean_running.copy_(hprebn.mean(0, keepdim=True))
        self.bnvar_running.copy_(hprebn.var(0, keepdim=True, unbiased=True))


def train_manual(
    model: ManualMLP,
    X: torch.Tensor,
    Y: torch.Tensor,
    steps: int,
    batch_size: int,
    lr_schedule: Callable[[int], float],
    generator: torch.Generator | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Minibatch SGD with hand-written gradients only; returns the loss of every step.

    Each step samples ``batch_size`` rows of ``(X, Y)`` with replacement using ``generator``,
    calls ``model.step(xb, yb, lr_schedule(step))`` and then ``callback(step, loss)``.
    """
    if not isinstance(model, ManualMLP):
        raise DlfError(f"train_manual needs a ManualMLP, got {type(model).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise DlfError(f"steps must be a non-negative integer, got {steps!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise DlfError(f"batch_size must be an integer >= 2, got {batch_size!r}")
    if not callable(lr_schedule):
        raise DlfError("lr_schedule must be callable: step -> learning rate")
    if not isinstance(X, torch.Tensor) or not isinstance(Y, torch.Tensor):
        raise DlfError("X and Y must be tensors")
    if X.dim() != 2 or Y.dim() != 1 or X.shape[0] != Y.shape[0] or X.shape[0] == 0:
        raise DlfError(
            f"X must be (N, block_size) and Y (N,) with N > 0, got {tuple(X.shape)} "
            f"and {tuple(Y.shape)}"
        )
    gen_device = generator.device if generator is not None else torch.device("cpu")
    losses: list[float] = []
    for i in range(steps):
        ix = torch.randint(0, X.shape[0], (batch_size,), generator=generator, device=gen_device)
        ix = ix.to(X.device)
        loss = model.step(X[ix], Y[ix], lr_schedule(i))
        losses.append(loss)
        if callback is not None:
            callback(i, loss)
    return losses


# ---------------------------------------------------------------------- gradient check
# Largest |hand-written - autograd| accepted in float64: rounding of the longest chain of
# operations stays near 1e-16 relative, so 1e-10 leaves a wide margin and still catches
# any wrong formula (those differ by the size of a gradient itself).
GRADCHECK_LIMIT = 1e-10


def _compare(name: str, mine: torch.Tensor, ref: torch.Tensor | None) -> dict:
    if ref is None:
        ref = torch.zeros_like(mine)  # autograd leaves .grad None when nothing flows back
    if mine.shape != ref.shape:
        return {"name": name, "exact": False, "approx": False, "max_abs_diff": math.inf}
    return {
        "name": name,
        "exact": bool(torch.all(mine == ref)),
        "approx": bool(torch.allclose(mine, ref)),
        "max_abs_diff": float((mine - ref).abs().max()) if mine.numel() else 0.0,
    }


def gradcheck(
    batch_size: int = 32, seed: int = 0, config: ManualMLPConfig | None = None
) -> list[dict]:
    """Compare every hand-written gradient with autograd's, in float64.

    Builds a model from ``config`` (default shapes) with a generator seeded by ``seed``, draws
    random ``idx``/``targets`` from it, runs :meth:`ManualMLP.forward_cache` with gradients
    retained on every intermediate and parameter and calls autograd ``loss.backward()`` as
    the reference.  Returns one row per gradient of :meth:`ManualMLP.backward`, then
    ``"fast:d<param>"`` rows for :meth:`ManualMLP.backward_fast` and ``"dlogits (fused)"`` /
    ``"dhprebn (fused)"`` for the compact intermediate forms.  Each row is
    ``{"name", "exact", "approx", "max_abs_diff"}``.
    """
    config = ManualMLPConfig() if config is None else config
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise DlfError(f"batch_size must be an integer, got {batch_size!r}")
    ManualMLP._check_batch_stats(batch_size)
    g = torch.Generator().manual_seed(seed)
    model = ManualMLP(config, generator=g, dtype=torch.float64)
    idx = torch.randint(0, config.vocab_size, (batch_size, config.block_size), generator=g)
    targets = torch.randint(0, config.vocab_size, (batch_size,), generator=g)

    params = dict(model.named_parameters())
    for p in params.values():
        p.requires_grad_(True)
    with torch.enable_grad():
        cache = model.forward_cache(idx, targets, update_running=False)
        for t in cache.values():
            t.retain_grad()
        cache["loss"].backward()  # the reference, and the only autograd call in dlf.manual
    ref = {"d" + k: v.grad for k, v in cache.items() if k != "loss"}
    ref.update({"d" + k: p.grad for k, p in params.items()})

    grads = model.backward(cache, idx, targets)
    rows = [_compare(name, grads[name], ref[name]) for name in GRAD_NAMES if name in grads]
    fast, fused = model._backward_fast(cache, idx, targets)
    rows += [_compare("fast:" + name, t, ref[name]) for name, t in fast.items()]
    rows += [_compare(f"{name} (fused)", t, ref[name]) for name, t in fused.items()]

    for p in params.values():
        p.requires_grad_(False)
        p.grad = None
    return rows


def format_gradcheck_table(rows: list[dict]) -> str:
    """Aligned text table with columns ``name | exact | approx | maxdiff``."""
    header = ("name", "exact", "approx", "maxdiff")
    body = [
        (
            str(r["name"]),
            str(bool(r["exact"])),
            str(bool(r["approx"])),
            f"{float(r['max_abs_diff']):.3e}",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(4)]

    def fmt(line: tuple[str, ...]) -> str:
        return " | ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )

    sep = "-+-".join("-" * w for w in widths)
    return "\n".join([fmt(header), sep, *(fmt(line) for line in body)])
