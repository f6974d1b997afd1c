"""Training: `train(cfg, out_dir)` for every model type.

    plan, data = plan_run(cfg, world)    decided and checked once (plan.py)
    model = build_model(plan.cfg.model)
    ...the collaborators, built from the plan
    step, stopped = train_loop(parts, step)   the loop (loop.py)
    write_results(...)                   result.json, samples.txt (results.py)

A model's regime (dlf.models.protocol) says how its parameters are set: "autograd" and
"manual" models go through the loop with their step function (steps.py); a "fitted" model
(the count bigram) is counted in one pass by `fit_counted`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from dlf import config as C
from dlf.engine import distributed
from dlf.engine.batches import Batches
from dlf.engine.clock import Clock
from dlf.engine.divergence import Divergence
from dlf.engine.evaluate import evaluate_losses
from dlf.engine.loop import Parts, log, train_loop
from dlf.engine.lossplot import LossPlot
from dlf.engine.metrics import MetricsFile
from dlf.engine.plan import plan_run, regime_of
from dlf.engine.progress import Progress
from dlf.engine.results import base_result, write_results
from dlf.engine.resume import Best, Checkpointer, Counters, restore
from dlf.engine.rundir import RunDir
from dlf.engine.signals import StopSignals
from dlf.engine.steps import STEPS
from dlf.errors import DlfError, is_out_of_memory, out_of_memory_means
from dlf.models import build_model


class Trainer:
    """A run made ready from its plan: data read, model built, run directory claimed.
    Nothing is written until all of that has succeeded; an existing run directory is only
    continued with resume=True or replaced with force=True; resume="auto" continues the
    run there if there is one and starts one otherwise. `fit()` trains;
    `callback(trainer, step)` runs after every step (it may call `request_stop`)."""

    def __init__(self, cfg: C.RunConfig, out_dir: str | Path, *, resume: bool | str = False,
                 force: bool = False, progress: bool | None = None, callback=None):
        self.run_dir = RunDir(out_dir)
        self.out, self.callback = self.run_dir.path, callback
        self.checkpoints = None  # fit's Checkpointer: what a failure message says is kept
        saved = self.run_dir.resumable(auto=resume == "auto") if resume else None
        self.resume, self.auto = saved is not None and saved.checkpoint, resume == "auto"
        restart = saved is not None and not saved.checkpoint  # no checkpoint yet: start over
        self.plan, self.data = plan_run(cfg, distributed.World.from_env(), resume=saved)
        self.cfg = self.plan.cfg
        if self.plan.regime not in STEPS:
            raise DlfError(f"a {self.cfg.model.type} model is {self.plan.regime}, not trained: "
                           "use train()")
        self.group = distributed.join(self.plan.world, self.plan.device)
        self.say = _sayer(self.group)
        for note in self.plan.notes:
            self.say(f"dlf: {note}")
        self.show_progress = (progress if progress is not None else _tty()) and self.group.is_main
        self.signals = StopSignals(self.say, grace=self.group.active)
        torch.manual_seed(self.cfg.train.seed)
        with out_of_memory_means(f"building the {self.cfg.model.type} model: make it smaller "
                                 "(its model.* sizes)"):
            self.model = build_model(self.cfg.model).to(self.plan.device)
        self.group.barrier()  # every rank checks the directory before rank 0 changes it
        self.run_dir.claim(force or restart, resume=self.resume, lock=self.group.is_main,
                           why="--resume auto: no checkpoint to continue, starting over"
                           if restart else "--force")
        self.group.barrier()

    def request_stop(self) -> None:
        """Finish the current step, checkpoint, and return (what SIGINT and SIGTERM do)."""
        self.signals.requested = True

    def fit(self) -> dict:
        """Train to train.max_steps (or the time budget, or a stop request); returns
        result.json's dict, or {"interrupted": True, "steps": N} after a stop request. The
        thread count is the plan's while it trains; the run directory is held until this
        returns or raises."""
        threads = torch.get_num_threads()
        torch.set_num_threads(self.plan.threads)
        try:
            return self._fit()
        except (OSError, MemoryError, RuntimeError) as e:
            fault = _fault(e, self.cfg.train, self.plan.regime, self.out, self.checkpoints)
            if fault is None:
                raise
            raise fault from None
        finally:
            torch.set_num_threads(threads)
            self.run_dir.release()

    def _fit(self) -> dict:
        plan, t, group, model = self.plan, self.cfg.train, self.group, self.model
        kind, writer = self.cfg.model.type, group.is_main
        files = self.run_dir if writer else None  # only the writing rank gets the files
        step_fn = STEPS[plan.regime](model, t, plan.device, group)
        batches = Batches(self.data.train, t.batch_size, t.seed, plan.device, group)
        distributed.seed_rank_rng(group, t.seed, 0)  # dropout: a stream per rank
        if self.resume:
            c = restore(self.run_dir, kind, model, step_fn, batches, group, t.seed, plan.device)
            if self.auto:  # say what --resume auto found
                self.say(f"dlf: resuming {self.out} from step {c.step}")
        else:
            c = Counters()
            if writer:
                self.run_dir.begin(self.cfg, self.data.tokenizer)
        tokens_per_step = batches.tokens_per_batch() * t.grad_accum
        self.clock = Clock(t.max_steps, t.max_seconds, tokens_per_step, c.train_seconds,
                           c.wall_seconds, c.step)
        best = Best(files, kind, c.best_val)
        divergence = Divergence(lambda: checkpoints.kept(), c.initial_loss)
        self.checkpoints = checkpoints = Checkpointer(
            files, self.out, kind, model, step_fn, batches, self.clock, divergence, best,
            plan.device, saved_step=c.step if self.resume else None)
        sinks = []
        if writer:  # the metrics sinks: one line each
            metrics = MetricsFile(self.out / "metrics.jsonl", c.step if self.resume else None)
            sinks = [metrics, LossPlot(self.out / "loss.png", self.cfg.name, metrics.kept)]
        progress = Progress(t.max_steps, c.step, show=self.show_progress)
        parts = Parts(plan, group, model, step_fn, batches,
                      lambda: evaluate_losses(model, self.data, t, plan.device, group),
                      self.clock, divergence, sinks, progress, best, checkpoints, self.signals,
                      on_step=None if self.callback is None else lambda s: self.callback(self, s))
        with progress, self.signals:
            step, stopped = train_loop(parts, c.step)
        for sink in sinks:
            sink.close()
        if stopped:
            self.say(f"interrupted at step {step}/{t.max_steps}; continue with --resume")
            return {"interrupted": True, "steps": step}
        # the final figures describe model.safetensors, the best-validation weights
        group.barrier()  # rank 0 has written them
        self.run_dir.load_weights(model)
        model.eval()
        losses = best.losses or evaluate_losses(model, self.data, t, plan.device, group)
        result = base_result(plan, model, self.data, losses, step, self.clock.wall(),
                             self.clock.train_seconds, tokens_per_step, group)
        result["warnings"] = divergence.warnings(result["train_loss"], step)
        return write_results(self.out, plan, model, self.data, result) if writer else result


def fit_counted(cfg: C.RunConfig, out_dir: str | Path, *, resume: bool | str = False,
                force: bool = False) -> dict:
    """Fit a counted model (the count bigram) on the train split and write its run.
    Counting is deterministic, so --resume simply counts again."""
    t0 = time.perf_counter()
    run_dir = RunDir(out_dir)
    saved = run_dir.resumable(auto=resume == "auto") if resume else None
    plan, data = plan_run(cfg, distributed.World.from_env(), resume=saved)
    if plan.regime != "fitted":
        raise DlfError(f"a {plan.cfg.model.type} model is trained, not fitted: use train()")
    model = build_model(plan.cfg.model).to(plan.device)
    run_dir.claim(force, resume=saved is not None)
    try:
        run_dir.begin(plan.cfg, data.tokenizer)
        model.fit(data.train.X, data.train.Y)
        model.eval()
        losses = evaluate_losses(model, data, plan.cfg.train, plan.device)
        # a refit replaces the log
        metrics = MetricsFile(run_dir.path / "metrics.jsonl", resume_step=-1)
        plot = LossPlot(run_dir.path / "loss.png", plan.cfg.name)
        log([metrics, plot], {"step": 0, **losses})
        plot.close()
        kind = plan.cfg.model.type
        run_dir.save_weights(model, kind)
        run_dir.save_state({f"model.{k}": v for k, v in model.state_dict().items()}
                           | {"step": torch.tensor(0)}, kind)
        result = base_result(plan, model, data, losses, 0, time.perf_counter() - t0, 0.0, None,
                             distributed.SINGLE)
        return write_results(run_dir.path, plan, model, data, result)
    except OSError as e:
        fault = _fault(e, plan.cfg.train, plan.regime, run_dir.path, None)
        if fault is None:
            raise
        raise fault from None
    finally:
        run_dir.release()


def train(cfg: C.RunConfig, out_dir: str | Path, **kw) -> dict:
    """Train or fit `cfg` into `out_dir`, as its model's regime says; returns result.json's
    dict (or {"interrupted": True, "steps": N} after a stop request). Keywords: resume,
    force, progress, callback (the last two only for trained models)."""
    if regime_of(cfg.model.type) == "fitted":
        kw.pop("callback", None)
        kw.pop("progress", None)
        return fit_counted(cfg, out_dir, **kw)
    return Trainer(cfg, out_dir, **kw).fit()


def _fault(e: BaseException, t: C.TrainConfig, regime: str, out: Path,
           checkpoints) -> DlfError | None:
    """The line for what stopped a run from outside the code: memory, or a file that could
    not be written (a full disk, a file size limit); None for anything else."""
    kept = checkpoints.kept() if checkpoints is not None else "no checkpoint had been written"
    again = ("continue with --resume" if checkpoints is not None and checkpoints.saved_step
             is not None else "run it again with --resume auto")  # which starts it over
    if isinstance(e, OSError) and e.errno is not None and not isinstance(e, BrokenPipeError):
        return DlfError(f"cannot write {e.filename or out}: {e.strerror}; {kept}; {again} "
                        "once it can be written")
    if not is_out_of_memory(e):
        return None
    rows = f"{t.batch_size} rows" if t.batch_size else "0 (the whole train split)"
    if regime == "manual":  # one pass over the whole batch, always
        return DlfError(f"out of memory training train.batch_size = {rows}: lower "
                        f"train.batch_size; {kept}")
    passes = f"in passes of {t.micro_batch} rows" if t.micro_batch else "in one pass"
    return DlfError(f"out of memory training train.batch_size = {rows} {passes} "
                    f"(train.micro_batch = {t.micro_batch}): lower train.micro_batch (smaller "
                    f"passes over the same batch) or train.batch_size; {kept}")


def _sayer(group: distributed.Group):
    """print to stderr on the writing rank only."""
    return (lambda line: distributed.say(group, line)) if group.is_main else (lambda line: None)


def _tty() -> bool:
    return sys.stderr.isatty()
