"""The training loop: batches, step, log, evaluate, checkpoint, stop.

Everything else a run needs is a small collaborator, built from the plan by
`dlf.engine.trainer` and called here by name, so the loop shows what happens when:

    step          one optimizer step (steps.py: AutogradStep or ManualStep)
    batches       the next batch of the train split (batches.py)
    clock         seconds in steps and in the run, the time budget, tokens/s (clock.py)
    divergence    stops on a loss that is not finite, flags one that blows up (divergence.py)
    sinks         where logged records go: metrics.jsonl, loss.png, TensorBoard
                  (metrics.py, lossplot.py, tensorboard.py)
    progress      the progress bar (progress.py)
    best          the best validation loss and its weights (checkpoint.py)
    checkpoints   state.safetensors, to resume from, every train.checkpoint_interval steps,
                  at the end and at a stop (checkpoint.py)
    signals       a stop requested by SIGINT or SIGTERM (signals.py)

What the run has done so far is one value, the TrainState (state.py), which the loop
owns and hands to the parts that read or change it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the parts' types, for the reader; the loop imports none of them
    from dlf.engine.batches import Batches
    from dlf.engine.checkpoint import Best, Checkpointer
    from dlf.engine.clock import Clock
    from dlf.engine.distributed import Group
    from dlf.engine.divergence import Divergence
    from dlf.engine.plan import Plan
    from dlf.engine.progress import Progress
    from dlf.engine.signals import StopSignals
    from dlf.engine.state import TrainState
    from dlf.engine.steps import AutogradStep, ManualStep

# A caller's hook after every step: (step, state, model) -> True to stop the run there
# (checkpointed, as SIGINT does), anything else to go on.
OnStep = Callable[[int, "TrainState", object], object]


@dataclass
class Parts:
    """What the loop calls; see the module docstring."""

    plan: Plan
    group: Group  # the ranks of a data-parallel job (one process: every call is the identity)
    model: object  # any model of dlf.models (the forward contract)
    step: AutogradStep | ManualStep
    batches: Batches
    evaluate: Callable[[], dict]  # -> {"train_loss", "val_loss"}
    clock: Clock
    divergence: Divergence
    sinks: list  # each with write(record) and close()
    progress: Progress
    best: Best
    checkpoints: Checkpointer
    signals: StopSignals
    on_step: OnStep | None = None


def train_loop(p: Parts, state: TrainState) -> bool:
    """Train from state.step (0, or a checkpoint's) to train.max_steps or the time budget,
    checkpointing every train.checkpoint_interval steps, at the end and at a stop.
    Returns whether a stop request ended the run before its end."""
    t = p.plan.cfg.train
    p.model.train()
    while state.step < t.max_steps:
        lr = p.plan.schedule(p.clock.schedule_position(state))
        with p.clock.step(state):
            loss, grad_norm = p.step(p.batches.next, lr)  # forward, backward, clip, update
            loss = p.group.mean(loss)  # data-parallel: the loss of the whole global batch
        state.step += 1
        step = state.step
        loss = p.divergence.check(state, loss, grad_norm)  # not finite: stops the run
        if p.divergence.warning:
            p.progress.say(f"warning: {p.divergence.warning}")
        last = step == t.max_steps or p.clock.out_of_time(state)

        record = None
        if step % t.log_interval == 0 or last:
            record = {"step": step, "loss": loss, "lr": lr,
                      "tokens_per_second": round(p.clock.tokens_per_second(step), 1),
                      "train_seconds": round(state.train_seconds, 3)}
            log(p.sinks, record)
        p.progress.update(record, diverging=p.divergence.diverged_at is not None)

        if step % t.eval_interval == 0 or last:
            if p.plan.debug:  # DLF_DEBUG=1: every rank holds the same weights
                p.group.check_identical(list(p.model.state_dict().values()))
            losses = p.evaluate()
            log(p.sinks, {"step": step, **losses})
            p.progress.evaluated(step, losses)
            p.best.update(state, losses, p.model)
        if step % t.checkpoint_interval == 0 or last:  # a kill loses the steps since
            p.checkpoints.save(p.clock.tick(state))

        asked = p.on_step is not None and p.on_step(step, state, p.model) is True
        stop = p.group.any(p.signals.requested or asked) and not last  # any rank's stop
        if stop:
            if state.saved_step != step:
                p.checkpoints.save(p.clock.tick(state))
            p.group.barrier()  # no rank exits before the checkpoint is written
        if last or stop:
            return stop
    return False


def log(sinks: list, record: dict) -> None:
    for sink in sinks:
        sink.write(record)
