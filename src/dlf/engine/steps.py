"""One optimizer step, the only implementations of it: `AutogradStep` (forward, backward,
clip, the dlf.optim update) and `ManualStep` (a model's hand-written backward). The
training loop and `dlf bench train` both call them.

A step is called with `next_batch() -> (x, y, n_targets)`, this rank's slice of the next
global batch and the number of (non-padding) targets in the whole global batch, and the
learning rate; it returns the step's loss and the gradient norm before clipping (None
where the step does not compute one), both unread tensors: the loop reads them together,
one device sync per step.
"""

from __future__ import annotations

import torch

from dlf import config as C
from dlf import optim
from dlf.data.datasets import IGNORE_INDEX
from dlf.engine import distributed
from dlf.engine.device import TORCH_DTYPES, autocast
from dlf.engine.gradients import GradReducer


def make_optimizer(model, t: C.TrainConfig):
    """AdamW (decoupled decay), SGD (L2 penalty) or Muon; only matrices are decayed, by the
    rule of optim.param_groups_for_decay. Muon (optim.param_groups_for_muon) orthogonalises
    the hidden matrices at train.muon_lr and leaves the embeddings, the model's
    output_weights(), gains and biases to AdamW at train.lr; the plan has checked the model
    and resolved train.muon_ns_dtype."""
    if t.optimizer == "muon":
        groups = optim.param_groups_for_muon(model, t.weight_decay, lr_scale=t.muon_lr / t.lr,
                                             adamw_params=model.output_weights())
        # AdamW's own eps (not the Muon reference's 1e-10): switching from adamw to muon
        # changes the hidden matrices' update only
        return optim.Muon(groups, lr=t.lr, momentum=t.momentum,
                          ns_dtype=TORCH_DTYPES[t.muon_ns_dtype], betas=(t.beta1, t.beta2),
                          eps=1e-8, weight_decay=t.weight_decay)
    groups = optim.param_groups_for_decay(model, t.weight_decay)
    if t.optimizer == "adamw":
        return optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), weight_decay=t.weight_decay)
    return optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


def grad_norm(params) -> torch.Tensor:
    """The global L2 norm of all gradients, a 0-d tensor (read without a device sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    # one fused kernel for every tensor's norm: this runs every step, and a per-tensor
    # loop of tiny kernels costs more than a small model's whole update
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def scale_grads(params, norm: torch.Tensor, max_norm: float) -> None:
    """Scale all gradients so that their global L2 norm `norm` becomes at most max_norm."""
    grads = [p.grad for p in params if p.grad is not None]
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    torch._foreach_mul_(grads, scale)


class AutogradStep:
    """grad_accum batches, each run in passes of train.micro_batch rows (the same
    gradient; only the memory differs), their mean loss backpropagated, the gradient
    clipped to train.grad_clip, then the dlf.optim update. State: the optimizer's."""

    def __init__(self, model, t: C.TrainConfig, device: torch.device,
                 group: distributed.Group = distributed.SINGLE):
        self.t, self.device = t, device
        self.params = model.parameters()
        self.optimizer = make_optimizer(model, t)
        # data-parallel: gradients averaged over the ranks (nothing to do in one process)
        self.reducer = GradReducer(group, self.params)
        # torch.compile traces any callable; our Module is one. Eval and sampling stay eager.
        self.forward = torch.compile(model) if t.compile else model

    def __call__(self, next_batch, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.t
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = 0.0
        world = self.reducer.group.world_size
        for i in range(t.grad_accum):
            # this rank's slice of the global batch, and the global batch's target count
            x, y, n_batch = next_batch()
            m = t.micro_batch or len(x)  # passes of m rows: the same gradient, kept in cache
            passes = list(zip(x.split(m), y.split(m), strict=True))
            padded = n_batch < y.numel() * world  # some positions are padding (sequences)
            for j, (xs, ys) in enumerate(passes):
                # the weight of this pass's mean loss: its share of the global batch's
                # targets, times the number of ranks (the reducer averages their gradients)
                n = (ys != IGNORE_INDEX).sum() if padded else ys.numel()
                share = n * world / n_batch
                # only the very last backward of the step all-reduces
                self.reducer.communicate = i == t.grad_accum - 1 and j == len(passes) - 1
                with autocast(self.device, t.dtype):
                    _, loss = self.forward(xs, ys)
                (loss * (share / t.grad_accum)).backward()
                total = total + loss.detach() * share
        self.reducer.finish()  # the mean gradient over the ranks; clipped after
        norm = grad_norm(self.params)
        if t.grad_clip > 0:
            scale_grads(self.params, norm, t.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return total / t.grad_accum, norm

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


class ManualStep:
    """The model's hand-written backward and SGD update (`manual_step`); no state, and no
    gradient norm (its loss is checked)."""

    def __init__(self, model, t: C.TrainConfig, device: torch.device,
                 group: distributed.Group = distributed.SINGLE):
        self.model = model  # one process only (the plan's check_world)

    def __call__(self, next_batch, lr: float) -> tuple[float, None]:
        x, y, _ = next_batch()
        return self.model.manual_step(x, y, lr), None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


STEPS = {"autograd": AutogradStep, "manual": ManualStep}
