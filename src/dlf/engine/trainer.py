"""Training: `train(cfg, out_dir)` for every model type.

A model's regime (dlf.models.protocol) says how its parameters are set:
- "autograd": the Trainer's loop with `AutogradStep` (forward/backward, clip, update);
- "manual": the same loop with `ManualStep` (the model's hand-written backward);
- "fitted": `fit_counted`, one counting pass and no loop.
Both paths share `prepare` (config checks, data, model) and the run-directory writer.
"""

from __future__ import annotations

import copy
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from dlf import config as C
from dlf import optim
from dlf.data.datasets import IGNORE_INDEX, count_targets
from dlf.engine import distributed
from dlf.engine.checkpoint import section
from dlf.engine.data import RunData, check_model_fits_data, prepare_data
from dlf.engine.device import autocast
from dlf.engine.evaluate import evaluate_split
from dlf.engine.rundir import RunDir
from dlf.errors import DlfError
from dlf.models import build_model, model_class
from dlf.models.protocol import capabilities

DEFAULT_THREADS = torch.get_num_threads()  # what torch chose for this machine (or the caller)
# The training batches come from their own generator, seeded train.seed + 1, so that
# evaluation or sampling never shifts which batches training sees.
BATCH_SEED_OFFSET = 1
# A step whose loss exceeds this multiple of the run's first step's loss marks the run as
# diverging (a warning on the progress line and in result.json, not a stop).
DIVERGENCE_FACTOR = 10.0
# What stops a run cleanly (after the current step, with a checkpoint): Ctrl-C, and the
# SIGTERM that timeout, docker stop, batch schedulers and torchrun send.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Train settings that only the autograd regime reads; the others would silently ignore
# them, so a value other than the default is refused.
_OPTIMIZER_FIELDS = ("optimizer", "momentum", "beta1", "beta2", "weight_decay", "grad_accum",
                     "grad_clip", "dtype", "compile")
_IGNORED = {
    "autograd": (),
    "manual": _OPTIMIZER_FIELDS,  # plain SGD on hand-written gradients, in fp32
    "fitted": _OPTIMIZER_FIELDS + ("lr", "schedule", "milestones", "warmup_steps", "min_lr",
                                   "batch_size", "max_seconds"),
}


def check_regime(t: C.TrainConfig, model_type: str, regime: str) -> None:
    """Refuse train settings that `regime` would ignore."""
    default = C.TrainConfig()
    for name in _IGNORED[regime]:
        if getattr(t, name) != getattr(default, name):
            how = ("is fitted by counting, not trained" if regime == "fitted" else
                   "trains with plain SGD on its hand-written gradients, in fp32")
            raise DlfError(f"train.{name} = {getattr(t, name)!r} has no effect: a "
                           f"{model_type} model {how}; remove the setting")
    if regime == "fitted" and t.max_steps != 0:
        raise DlfError(f"a {model_type} model is fitted in one counting pass: "
                       f"set train.max_steps = 0 (got {t.max_steps})")


# --------------------------------------------------------------------- set-up (all regimes)


@dataclass
class Prepared:
    """Everything a run needs before its first step; nothing has been written yet."""

    cfg: C.RunConfig  # a private copy: the caller's config is never changed
    run_dir: RunDir
    data: RunData
    model: object
    device: torch.device
    resume: bool
    group: distributed.Group  # this process's rank in a data-parallel job (1 process: rank 0 of 1)


def prepare(cfg: C.RunConfig, out_dir: str | Path, *, resume: bool, force: bool,
            writer: bool = True) -> Prepared:
    """Check the config, read the data, build the model, claim the run directory.

    Under torchrun every rank prepares the same way; only rank 0 writes."""
    cfg = copy.deepcopy(cfg)
    C.validate(cfg)
    check_regime_world(cfg)
    group = distributed.setup(cfg.train.device)
    run_dir = RunDir(out_dir, writer=writer and group.is_main)
    device = group.device
    C.resolve_auto(cfg, device)  # "auto" settings -> this machine's choice, as config.toml says
    if resume:
        cfg = _resume_config(cfg, run_dir)
    # process-wide in torch: set it for every run, so one run's choice (e.g. threads = 1
    # for a tiny model) does not slow the next run in the same process (dlf report)
    threads = DEFAULT_THREADS if not group.active else distributed.default_threads(group)
    torch.set_num_threads(cfg.train.threads or threads)
    data = prepare_data(cfg, tokenizer=run_dir.saved_tokenizer() if resume else None)
    cfg.model.vocab_size = data.tokenizer.vocab_size
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    check_regime(cfg.train, cfg.model.type, capabilities(model).regime)
    check_model_fits_data(model, data)
    model.to(device)
    group.barrier()  # every rank checks the directory before rank 0 changes it
    run_dir.claim(force, resume=resume)  # rank 0 also takes the directory's lock
    group.barrier()
    return Prepared(cfg, run_dir, data, model, device, resume, group)


def check_regime_world(cfg: C.RunConfig) -> None:
    """Refuse, before joining a multi-process job, what it cannot train (fitted and
    manual models, a global batch that does not split evenly)."""
    regime = capabilities(model_class(cfg.model.type)).regime
    distributed.check_config(cfg, distributed.env_world_size(), regime)


def _resume_config(requested: C.RunConfig, run_dir: RunDir) -> C.RunConfig:
    if not (run_dir.path / "state.safetensors").exists():
        raise DlfError(f"cannot resume: {run_dir.path}/state.safetensors not found")
    saved = run_dir.saved_config()
    if saved.model.type != requested.model.type:
        raise DlfError(f"{run_dir.path} holds a {saved.model.type} run, "
                       f"not {requested.model.type}")
    # Training settings may change on resume (e.g. more steps); the model may not.
    requested.model.vocab_size = saved.model.vocab_size
    if requested.model != saved.model or requested.data != saved.data:
        raise DlfError(f"cannot resume {run_dir.path}: its model or data config differs from "
                       "the requested one (see its config.toml)")
    return requested


def base_result(p: Prepared, losses: dict, steps: int, wall: float, train_seconds: float,
                tokens_per_step: int | None) -> dict:
    """result.json's figures for the model in its final (best-validation) weights."""
    t = p.cfg.train
    test = evaluate_split(p.model, p.data.test, t, p.device) if p.data.test is not None else None
    return {
        "name": p.cfg.name,
        "model_type": p.cfg.model.type,
        "dataset": p.cfg.data.dataset,
        "train_loss": losses["train_loss"],
        "val_loss": losses["val_loss"],
        "test_loss": test,
        "steps": steps,
        "wall_seconds": round(wall, 2),
        "train_seconds": round(train_seconds, 2),
        "steps_per_second": round(steps / wall, 2) if wall > 0 and steps else None,
        "tokens_per_second": round(steps * tokens_per_step / wall, 1)
        if wall > 0 and tokens_per_step else None,
        "num_parameters": p.model.num_parameters(),
        "device": str(p.device),
        "dtype": t.dtype,
        "torch": torch.__version__,
    }


def eval_losses(p: Prepared) -> dict:
    t = p.cfg.train
    return {"train_loss": evaluate_split(p.model, p.data.train, t, p.device),
            "val_loss": evaluate_split(p.model, p.data.val, t, p.device)}


# --------------------------------------------------------------------- fitted models


def fit_counted(cfg: C.RunConfig, out_dir: str | Path, *, resume: bool = False,
                force: bool = False) -> dict:
    """Fit a counted model (the count bigram) on the train split and write its run.

    Counting is deterministic, so --resume simply counts again."""
    t0 = time.perf_counter()
    p = prepare(cfg, out_dir, resume=resume, force=force)
    try:
        return _fit_counted(p, t0)
    finally:
        p.run_dir.release()


def _fit_counted(p: Prepared, t0: float) -> dict:
    if capabilities(p.model).regime != "fitted":
        raise DlfError(f"a {p.cfg.model.type} model is trained, not fitted: use train()")
    p.run_dir.begin(p.cfg, p.data.tokenizer)
    p.model.fit(p.data.train.X, p.data.train.Y)
    p.model.eval()
    losses = eval_losses(p)
    p.run_dir.metrics.truncate_after(-1)  # a refit replaces the log
    p.run_dir.log({"step": 0, **losses})
    p.run_dir.save_weights(p.model, p.cfg.model.type)
    p.run_dir.save_state({f"model.{k}": v for k, v in p.model.state_dict().items()}
                         | {"step": torch.tensor(0)}, p.cfg.model.type)
    p.run_dir.plot_loss(p.cfg.name)
    result = base_result(p, losses, 0, time.perf_counter() - t0, 0.0, None)
    return p.run_dir.finish(p.model, p.data, p.cfg, result, p.device)


# --------------------------------------------------------------------- one optimizer step


def make_optimizer(model, t: C.TrainConfig):
    """AdamW (decoupled decay) or SGD (L2 penalty); either way only matrices are decayed,
    by the rule of optim.param_groups_for_decay."""
    groups = optim.param_groups_for_decay(model, t.weight_decay)
    if t.optimizer == "adamw":
        return optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), weight_decay=t.weight_decay)
    return optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


def make_schedule(t: C.TrainConfig):
    return optim.make_schedule(t.schedule, t.lr, milestones=t.milestones, gamma=t.gamma,
                               warmup_steps=t.warmup_steps, total_steps=max(t.max_steps, 1),
                               min_lr=t.min_lr)


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


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale all gradients so their global L2 norm is at most max_norm; returns the norm."""
    norm = grad_norm(params)
    scale_grads(params, norm, max_norm)
    return norm.item()


class AutogradStep:
    """grad_accum batches, each run in passes of train.micro_batch rows (the same
    gradient; only the memory differs), their mean loss backpropagated, the gradient
    clipped to train.grad_clip, then the dlf.optim update. State: the optimizer's.
    `grad_norm`: the last step's gradient norm before clipping (the trainer checks it)."""

    def __init__(self, model, t: C.TrainConfig, device: torch.device,
                 group: distributed.Group = distributed.SINGLE):
        self.t, self.device = t, device
        self.params = model.parameters()
        self.optimizer = make_optimizer(model, t)
        # data-parallel: gradients averaged over the ranks (nothing to do in one process)
        self.reducer = distributed.GradReducer(group, self.params)
        # torch.compile traces any callable; our Module is one. Eval and sampling stay eager.
        self.forward = torch.compile(model) if t.compile else model

    def __call__(self, next_batch, lr: float) -> torch.Tensor:
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
        self.grad_norm = grad_norm(self.params)
        if t.grad_clip > 0:
            scale_grads(self.params, self.grad_norm, t.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return total / t.grad_accum

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


class ManualStep:
    """The model's hand-written backward and SGD update (`manual_step`); no state."""

    grad_norm = None  # manual_step does not report one; its loss is checked

    def __init__(self, model, t: C.TrainConfig, device: torch.device,
                 group: distributed.Group = distributed.SINGLE):
        self.model = model  # one process only (distributed.check_config)

    def __call__(self, next_batch, lr: float) -> float:
        x, y, _ = next_batch()
        return self.model.manual_step(x, y, lr)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


STEPS = {"autograd": AutogradStep, "manual": ManualStep}


# --------------------------------------------------------------------- the loop


class Trainer:
    """Train `cfg` into `out_dir` (a gradient-trained model: autograd or manual regime).

    Nothing is written until the data, tokenizer and model have been built and
    checked, and an existing run directory is only reused with resume=True (or
    replaced with force=True). `callback(trainer, step)` runs after every step."""

    def __init__(self, cfg: C.RunConfig, out_dir: str | Path, *, resume: bool = False,
                 force: bool = False, progress: bool | None = None, callback=None):
        p = prepare(cfg, out_dir, resume=resume, force=force)
        regime = capabilities(p.model).regime
        if regime not in STEPS:
            p.run_dir.release()
            raise DlfError(f"a {p.cfg.model.type} model is {regime}, not trained: use train()")
        self.prepared, self.group = p, p.group
        self.cfg, self.data, self.model, self.device = p.cfg, p.data, p.model, p.device
        self.out, self.run_dir, self.resume = p.run_dir.path, p.run_dir, resume
        self.callback = callback
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.progress = self.progress and self.group.is_main
        self.step_fn = STEPS[regime](self.model, self.cfg.train, self.device, self.group)
        self.schedule = make_schedule(self.cfg.train)
        # the batch generator is shared: every rank draws the same global batch
        self.gen = torch.Generator().manual_seed(self.cfg.train.seed + BATCH_SEED_OFFSET)
        distributed.seed_rank_rng(self.group, self.cfg.train.seed, 0)  # dropout, per rank
        self._stop_requested = False
        self._full_batch = None  # train.batch_size = 0: the whole train split, built once
        self.initial_loss = None  # the run's first step's loss: what divergence is measured by
        self.diverged_at = None  # the first step whose loss exceeded DIVERGENCE_FACTOR x that

    def request_stop(self) -> None:
        """Finish the current step, checkpoint, and return (what SIGINT and SIGTERM do)."""
        self._stop_requested = True

    def fit(self) -> dict:
        """Train to train.max_steps (or a stop request); returns result.json's dict.
        The run directory is held (RunDir.lock) until this returns or raises."""
        try:
            return self._fit()
        finally:
            self.run_dir.release()

    def _fit(self) -> dict:
        t = self.cfg.train
        self.t0 = time.perf_counter()
        step = self._start()
        bar = tqdm(total=t.max_steps, initial=step, disable=not self.progress, unit="step",
                   dynamic_ncols=True, file=sys.stderr)
        interrupted = False
        self.model.train()
        with bar, self._stop_on_signals():
            while step < t.max_steps:
                lr = self.schedule(self._schedule_position(step))
                t_step = time.perf_counter()
                loss = self.step_fn(self._batch, lr)  # forward, backward, clip, update
                # data-parallel: the global batch's loss, and a stop request from any rank
                loss, self._stop_requested = self.group.sync_step(loss, self._stop_requested)
                self.train_seconds += time.perf_counter() - t_step
                step += 1
                loss = self._check_loss(step, loss)  # the one sync per step
                bar.update(1)
                out_of_time = 0 < t.max_seconds <= self.train_seconds
                last = step == t.max_steps or out_of_time
                if step % t.log_interval == 0 or last:
                    self._log(step, loss, lr, bar)
                if step % t.eval_interval == 0 or last:
                    self._evaluate_and_checkpoint(step, bar, last)
                if self.callback is not None:
                    self.callback(self, step)
                if out_of_time:
                    break
                if self._stop_requested and step < t.max_steps:
                    self._save_state(step)
                    self.group.barrier()  # no rank exits before the checkpoint is written
                    interrupted = True
                    break
        return self._finish(step, interrupted)

    # ----------------------------------------------------------------- inside the loop

    def _check_loss(self, step: int, loss) -> float:
        """The step's loss as a float. A loss or gradient norm that is not finite stops the
        run at this step (DlfError: exit 2), before anything of it is saved, so the last
        checkpoint stays good. A loss far above the first step's is flagged, not stopped."""
        norm = self.step_fn.grad_norm
        if norm is None:
            loss_v, norm_v = float(loss), 0.0
        else:
            loss_v, norm_v = torch.stack([loss.float(), norm.float()]).tolist()
        if not math.isfinite(loss_v) or not math.isfinite(norm_v):
            what = (f"loss became {loss_v}" if not math.isfinite(loss_v)
                    else f"gradient norm became {norm_v}")
            kept = (f"the last good checkpoint (step {self._saved_step}) is "
                    f"{self.out}/state.safetensors" if self._saved_step is not None
                    else "no checkpoint had been written")
            raise DlfError(f"{what} at step {step}; training stopped ({kept}); "
                           "lower train.lr or set train.grad_clip")
        if self.initial_loss is None:
            self.initial_loss = loss_v
        elif self.diverged_at is None and loss_v > DIVERGENCE_FACTOR * self.initial_loss:
            self.diverged_at = step
            tqdm.write(f"warning: {self._divergence_warning(loss_v, step)}", file=sys.stderr)
        return loss_v

    def _divergence_warning(self, loss: float, step: int) -> str:
        return (f"loss {loss:.4g} at step {step} is more than {DIVERGENCE_FACTOR:g}x the first "
                f"step's {self.initial_loss:.4g}: the run is diverging; lower train.lr")

    def _batch(self):
        """This rank's slice of the next global batch (all of it in one process), and the
        number of targets in the whole global batch (padding left out)."""
        t, ds = self.cfg.train, self.data.train
        if t.batch_size == 0:
            if self._full_batch is None:  # the same every step: moved and counted once
                if self.data.format != "lines":
                    raise DlfError("train.batch_size = 0 (full batch) needs line data")
                self._full_batch = (ds.X.to(self.device), ds.Y.to(self.device),
                                    count_targets(ds.Y))
            return self._full_batch
        x, y = ds.batch(t.batch_size, self.gen)
        n = count_targets(y)  # every rank draws the same global batch: no communication
        x, y = self.group.shard(x, y)
        return (x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True), n)

    def _log(self, step: int, loss, lr: float, bar) -> None:
        now = time.perf_counter()
        tps = self._tokens_per_step() * (step - self._last_step) / max(now - self._last_t, 1e-9)
        self._last_t, self._last_step = now, step
        loss_v = float(loss)
        self.run_dir.log({"step": step, "loss": loss_v, "lr": lr,
                          "tokens_per_second": round(tps, 1),
                          "train_seconds": round(self.train_seconds, 3)})
        warning = {"warning": "diverging"} if self.diverged_at is not None else {}
        bar.set_postfix(loss=f"{loss_v:.4f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}", **warning)

    def _evaluate_and_checkpoint(self, step: int, bar, last: bool) -> None:
        # debug check of the data-parallel step: every rank holds the same weights
        self.group.check_identical(list(self.model.state_dict().values()))
        losses = eval_losses(self.prepared)
        self.run_dir.log({"step": step, **losses})
        if self.progress:
            bar.write(f"step {step}: train {losses['train_loss']:.4f}, "
                      f"val {losses['val_loss']:.4f}")
        if losses["val_loss"] < self.best_val:
            self.best_val, self.best_losses = losses["val_loss"], losses
            self.run_dir.save_weights(self.model, self.cfg.model.type)
        self._save_state(step)
        if not last:  # the last plot is drawn once, by _finish
            self.run_dir.plot_loss(self.cfg.name)

    def _tokens_per_step(self) -> int:
        t = self.cfg.train
        b = t.batch_size or len(self.data.train)
        return round(b * self.data.train.targets_per_row * t.grad_accum)

    def _schedule_position(self, step: int) -> int:
        """The step the lr schedule reads. With a time budget (train.max_seconds) the
        schedule runs on the share of the budget spent, so it ends with the budget."""
        t = self.cfg.train
        if t.max_seconds <= 0:
            return step
        return min(t.max_steps, max(step, int(t.max_steps * self.train_seconds / t.max_seconds)))

    # ----------------------------------------------------------------- start, state, finish

    def _start(self) -> int:
        """Fresh run: write config and tokenizer. Resume: load the last state and drop
        the metrics records past it. Returns the step to continue from."""
        self.wall_before, self.train_seconds = 0.0, 0.0
        self.best_val, self.best_losses = math.inf, None  # best_losses: measured this session
        self._saved_step = None  # the step of the last state.safetensors written or loaded
        step = 0
        if self.resume:
            step = self._saved_step = self._load_state()
            if self.run_dir.writer:  # rank 0 alone rewrites the log
                self.run_dir.metrics.truncate_after(step)
        else:
            self.run_dir.begin(self.cfg, self.data.tokenizer)
        self._last_t, self._last_step = time.perf_counter(), step
        return step

    def _save_state(self, step: int) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"optim.{k}": v for k, v in self.step_fn.state_dict().items()})
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.data"] = self.gen.get_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        tensors["step"] = torch.tensor(step, dtype=torch.int64)
        tensors["best_val"] = torch.tensor(self.best_val, dtype=torch.float64)
        tensors["wall_seconds"] = torch.tensor(self.wall_before + self._elapsed(),
                                               dtype=torch.float64)
        tensors["train_seconds"] = torch.tensor(self.train_seconds, dtype=torch.float64)
        if self.initial_loss is not None:
            tensors["initial_loss"] = torch.tensor(self.initial_loss, dtype=torch.float64)
        self.run_dir.save_state(tensors, self.cfg.model.type)
        self._saved_step = step

    def _load_state(self) -> int:
        tensors = self.run_dir.load_state(self.cfg.model.type)
        try:
            self.model.load_state_dict(section(tensors, "model"))
            self.step_fn.load_state_dict(section(tensors, "optim"))
            torch.set_rng_state(tensors["rng.torch"])
            self.gen.set_state(tensors["rng.data"])
            if "rng.cuda" in tensors and self.device.type == "cuda":
                torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
            self.best_val = float(tensors["best_val"])
            self.wall_before = float(tensors["wall_seconds"])
            self.train_seconds = float(tensors["train_seconds"])
            if "initial_loss" in tensors:
                self.initial_loss = float(tensors["initial_loss"])
            step = int(tensors["step"])
            # rank 0 continues the saved stream; other ranks' dropout streams restart
            distributed.seed_rank_rng(self.group, self.cfg.train.seed, step)
            return step
        except KeyError as e:
            raise DlfError(f"{self.out}/state.safetensors is incomplete (missing {e})") from None

    def _elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def _finish(self, step: int, interrupted: bool) -> dict:
        self.run_dir.plot_loss(self.cfg.name)
        if interrupted:
            distributed.say(self.group, f"interrupted at step {step}/{self.cfg.train.max_steps};"
                            " continue with --resume")
            return {"interrupted": True, "steps": step}
        # Final figures describe model.safetensors, the best-validation weights.
        self.group.barrier()  # rank 0 has written them
        self.run_dir.load_weights(self.model)
        self.model.eval()
        losses = self.best_losses or eval_losses(self.prepared)
        result = base_result(self.prepared, losses, step, self.wall_before + self._elapsed(),
                             self.train_seconds, self._tokens_per_step())
        result["warnings"] = self._result_warnings(result["train_loss"], step)
        return self.run_dir.finish(self.model, self.data, self.cfg, result, self.device)

    def _result_warnings(self, train_loss: float, step: int) -> list[str]:
        """result.json's "warnings": divergence seen during training or in the final loss."""
        if self.diverged_at is not None:
            return [(f"diverging: the loss exceeded {DIVERGENCE_FACTOR:g}x the first step's "
                     f"({self.initial_loss:.4g}) from step {self.diverged_at}; lower train.lr")]
        if self.initial_loss is not None and train_loss > DIVERGENCE_FACTOR * self.initial_loss:
            return [self._divergence_warning(train_loss, step)]
        return []

    # ----------------------------------------------------------------- SIGINT, SIGTERM

    def _stop_on_signals(self):
        """First SIGINT (Ctrl-C) or SIGTERM (timeout, docker stop, batch schedulers, torchrun):
        stop cleanly after the current step and checkpoint. A second one: abort at once."""
        trainer = self

        class _Handler:
            def __enter__(self):
                self.old, self.first = {}, None
                if threading.current_thread() is threading.main_thread():
                    for sig in STOP_SIGNALS:
                        self.old[sig] = signal.signal(sig, self.handle)

            def handle(self, signum, frame):
                # torchrun passes the terminal's Ctrl-C (and its own SIGTERM) on to its
                # workers, which also received it: a second signal within a second of the
                # first is the same one, in a data-parallel job
                now = time.monotonic()
                if self.first is not None:
                    if not (trainer.group.active and now - self.first < 1.0):
                        raise KeyboardInterrupt
                    return
                self.first = now
                trainer.request_stop()
                name = signal.Signals(signum).name
                distributed.say(trainer.group, f"\n{name}: stopping after this step and "
                                "checkpointing (a second signal aborts)...")

            def __exit__(self, *exc):
                for sig, old in self.old.items():
                    signal.signal(sig, old)
                return False

        return _Handler()


def train(cfg: C.RunConfig, out_dir: str | Path, **kw) -> dict:
    """Train or fit `cfg` into `out_dir`, as its model's regime says; returns result.json's
    dict (or {"interrupted": True, "steps": N} after a stop request). Keywords: resume,
    force, progress, callback (the last two only for trained models)."""
    if capabilities(model_class(cfg.model.type)).regime == "fitted":
        kw.pop("callback", None)
        kw.pop("progress", None)
        return fit_counted(cfg, out_dir, **kw)
    return Trainer(cfg, out_dir, **kw).fit()
