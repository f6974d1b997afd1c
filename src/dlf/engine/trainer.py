"""Training: `train(cfg, out_dir)` for every model type.

    session = open_session(cfg, out_dir)  planned, refused or claimed, once (session.py)
    ...the collaborators, built from the plan
    stopped = train_loop(parts, state)    the loop (loop.py)
    write_results(...)                    result.json, samples.txt (results.py)

A model's regime (dlf.models.protocol) says how its parameters are set: "autograd" and
"manual" models go through the loop with their step function (steps.py); a "fitted" model
(the count bigram) is counted in one pass by `fit_counted`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dlf import config as C
from dlf.engine import distributed
from dlf.engine.batches import Batches
from dlf.engine.checkpoint import (
    Best,
    Checkpointer,
    read_weights,
    restore,
    save_fitted,
    save_weights,
)
from dlf.engine.clock import Clock
from dlf.engine.device import threads
from dlf.engine.divergence import Divergence
from dlf.engine.evaluate import evaluate_losses
from dlf.engine.loop import OnStep, Parts, log, train_loop
from dlf.engine.lossplot import LossPlot
from dlf.engine.metrics import MetricsFile
from dlf.engine.plan import Plan, regime_of
from dlf.engine.progress import Progress
from dlf.engine.results import base_result, write_results
from dlf.engine.rundir import TENSORBOARD_DIR
from dlf.engine.session import Check, Session, open_session
from dlf.engine.signals import StopSignals
from dlf.engine.state import TrainState
from dlf.engine.steps import STEPS
from dlf.engine.tensorboard import TensorBoardSink
from dlf.errors import DlfError


class Trainer:
    """A run made ready to train: its session open (planned, every refusal made, the
    directory claimed; see dlf.engine.session). `fit()` trains, then gives the directory
    back. `callback(step, state, model)` runs after every step; returning True stops the
    run there, checkpointed, as Ctrl-C does. `checks` are the caller's own refusals,
    made before the directory is claimed. `init_from`: a run whose best weights and
    tokenizer this run starts from, with a fresh optimizer (fine-tuning)."""

    def __init__(self, cfg: C.RunConfig, out_dir: str | Path, *, resume: bool | str = False,
                 force: bool = False, init_from: str | Path | None = None,
                 progress: bool | None = None, callback: OnStep | None = None,
                 checks: tuple[Check, ...] = ()):
        self.session = open_session(cfg, out_dir, resume=resume, force=force,
                                    init_from=init_from, checks=(trained_only, *checks))
        self.callback, self.auto = callback, resume == "auto"
        self.show_progress = ((progress if progress is not None else sys.stderr.isatty())
                              and self.session.group.is_main)

    @property
    def plan(self) -> Plan:
        return self.session.plan

    @property
    def cfg(self) -> C.RunConfig:
        return self.session.plan.cfg

    @property
    def data(self):
        return self.session.data

    @property
    def model(self):
        return self.session.model

    @property
    def out(self) -> Path:
        return self.session.out

    @property
    def resume(self) -> bool:
        """Whether this run continues from a checkpoint."""
        return self.session.checkpoint is not None

    def fit(self) -> dict:
        """Train to train.max_steps (or the time budget, or a stop request); returns
        result.json's dict, or {"interrupted": True, "steps": N} after a stop request. The
        thread count is the plan's while it trains; the run directory is held until this
        returns or raises."""
        with self.session, threads(self.plan.threads):
            return self._fit(self.session)

    def _fit(self, s: Session) -> dict:
        plan, group, model, state = s.plan, s.group, s.model, s.state
        t = plan.cfg.train
        run = s.out if group.is_main else None  # only the writing rank writes
        step_fn = STEPS[plan.regime](model, t, plan.device, group)
        batches = Batches(s.data.train, t.batch_size, t.seed, plan.device, group)
        if s.checkpoint is not None:
            restore(s.checkpoint, model, step_fn, batches, plan.device)
            if self.auto:  # say what --resume auto found
                s.say(f"dlf: resuming {s.out} from step {state.step}")
        elif run is not None:
            s.run_dir.begin(plan.cfg, s.data.tokenizer)
        distributed.seed_rank_rng(group, t.seed, state.step)  # dropout: a stream per rank
        tokens_per_step = batches.tokens_per_batch() * t.grad_accum
        clock = Clock(t.max_steps, t.max_seconds, tokens_per_step, state)
        sinks = []
        if run is not None:  # the metrics sinks: one line each
            metrics = MetricsFile(run / "metrics.jsonl",
                                  state.step if s.checkpoint is not None else None)
            sinks = [metrics, LossPlot(run / "loss.png", plan.cfg.name, metrics.kept)]
            if t.tensorboard:
                sinks.append(TensorBoardSink(run / TENSORBOARD_DIR, metrics.resume_step))
        progress = Progress(t.max_steps, state.step, show=self.show_progress)
        signals = StopSignals(s.say, grace=group.active)
        divergence = Divergence()
        best = Best(run)
        parts = Parts(plan, group, model, step_fn, batches,
                      lambda: evaluate_losses(model, s.data, t, plan.device, group), clock,
                      divergence, sinks, progress, best,
                      Checkpointer(run, model, step_fn, batches, plan.device), signals,
                      self.callback)
        with progress, signals:
            stopped = train_loop(parts, state)
        for sink in sinks:
            sink.close()
        if stopped:
            s.say(f"interrupted at step {state.step}/{t.max_steps}; continue with --resume")
            return {"interrupted": True, "steps": state.step}
        # the final figures describe model.safetensors, the best-validation weights
        group.barrier()  # rank 0 has written them
        model.load_state_dict(read_weights(s.out, plan.cfg.model.type))
        model.eval()
        losses = best.losses or evaluate_losses(model, s.data, t, plan.device, group)
        result = base_result(plan, model, s.data, losses, clock.tick(state), tokens_per_step,
                             group)
        result["warnings"] = divergence.warnings(state, result["train_loss"])
        return write_results(s.out, plan, model, s.data, result) if run is not None else result


def trained_only(plan: Plan, model) -> None:
    if plan.regime not in STEPS:
        raise DlfError(f"a {plan.cfg.model.type} model is {plan.regime}, not trained: "
                       "use train()")


def fitted_only(plan: Plan, model) -> None:
    if plan.regime != "fitted":
        raise DlfError(f"a {plan.cfg.model.type} model is trained, not fitted: use train()")


def fit_counted(cfg: C.RunConfig, out_dir: str | Path, *, resume: bool | str = False,
                force: bool = False, init_from: str | Path | None = None,
                checks: tuple[Check, ...] = ()) -> dict:
    """Fit a counted model (the count bigram) on the train split and write its run.
    Counting is deterministic, so --resume simply counts again."""
    state = TrainState()
    clock = Clock(0, 0.0, 0, state)  # the whole fit is wall time; no optimizer steps
    with open_session(cfg, out_dir, resume=resume, force=force, init_from=init_from,
                      checks=(fitted_only, *checks)) as s:
        plan, data, model, run = s.plan, s.data, s.model, s.out
        s.run_dir.begin(plan.cfg, data.tokenizer)
        model.fit(data.train.X, data.train.Y)
        model.eval()
        losses = evaluate_losses(model, data, plan.cfg.train, plan.device)
        # a refit replaces the log
        metrics = MetricsFile(run / "metrics.jsonl", resume_step=-1)
        plot = LossPlot(run / "loss.png", plan.cfg.name)
        log([metrics, plot], {"step": 0, **losses})
        plot.close()
        save_weights(run, model.state_dict(), plan.cfg.model.type)
        save_fitted(run, model)
        result = base_result(plan, model, data, losses, clock.tick(state), None,
                             distributed.SINGLE)
        return write_results(run, plan, model, data, result)


def train(cfg: C.RunConfig, out_dir: str | Path, *, resume: bool | str = False,
          force: bool = False, init_from: str | Path | None = None,
          progress: bool | None = None, callback: OnStep | None = None,
          checks: tuple[Check, ...] = ()) -> dict:
    """Train or fit `cfg` into `out_dir`, as its model's regime says; returns result.json's
    dict (or {"interrupted": True, "steps": N} after a stop request). `init_from`,
    `progress` and `callback` are for trained models (a fitted one is counted)."""
    if regime_of(cfg.model.type) == "fitted":
        return fit_counted(cfg, out_dir, resume=resume, force=force, init_from=init_from,
                           checks=checks)
    return Trainer(cfg, out_dir, resume=resume, force=force, init_from=init_from,
                   progress=progress, callback=callback, checks=checks).fit()
