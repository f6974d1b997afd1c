"""The training loop: batches, step, log, evaluate, checkpoint, stop.

Everything else a run needs is a small collaborator, built from the plan by
`dlf.engine.trainer` and called here by name, so the loop shows what happens when:

    step          one optimizer step (steps.py: AutogradStep or ManualStep)
    batches       the next batch of the train split (batches.py)
    clock         seconds in steps, the time budget, tokens/s (clock.py)
    divergence    stops on a loss that is not finite, flags one that blows up (divergence.py)
    sinks         where logged records go: metrics.jsonl, loss.png (metrics.py, lossplot.py)
    progress      the progress bar (progress.py)
    best          the best validation loss and its weights (resume.py)
    checkpoints   state.safetensors, to resume from, every train.checkpoint_interval steps,
                  at the end and at a stop (resume.py)
    signals       a stop requested by SIGINT or SIGTERM (signals.py)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Parts:
    """What the loop calls; see the module docstring."""

    plan: object
    group: object  # dlf.engine.distributed.Group: the ranks of a data-parallel job
    model: object
    step: Callable
    batches: object
    evaluate: Callable[[], dict]  # -> {"train_loss", "val_loss"}
    clock: object
    divergence: object
    sinks: list
    progress: object
    best: object
    checkpoints: object
    signals: object
    on_step: Callable[[int], None] | None = None  # the caller's hook, after every step


def train_loop(p: Parts, step: int) -> tuple[int, bool]:
    """Train from `step` (0, or a checkpoint's) to train.max_steps or the time budget,
    checkpointing every train.checkpoint_interval steps, at the end and at a stop.
    Returns the last step and whether a stop request ended the run before its end."""
    t = p.plan.cfg.train
    p.model.train()
    while step < t.max_steps:
        lr = p.plan.schedule(p.clock.schedule_position(step))
        with p.clock.step():
            loss = p.step(p.batches.next, lr)  # forward, backward, clip, update
            loss = p.group.mean(loss)  # data-parallel: the loss of the whole global batch
        step += 1
        loss = p.divergence.check(step, loss, p.step.grad_norm)  # not finite: stops the run
        if p.divergence.warning:
            p.progress.say(f"warning: {p.divergence.warning}")
        last = step == t.max_steps or p.clock.out_of_time()

        record = None
        if step % t.log_interval == 0 or last:
            record = {"step": step, "loss": loss, "lr": lr,
                      "tokens_per_second": round(p.clock.tokens_per_second(step), 1),
                      "train_seconds": round(p.clock.train_seconds, 3)}
            log(p.sinks, record)
        p.progress.update(record, diverging=p.divergence.diverged_at is not None)

        if step % t.eval_interval == 0 or last:
            if p.plan.debug:  # DLF_DEBUG=1: every rank holds the same weights
                p.group.check_identical(list(p.model.state_dict().values()))
            losses = p.evaluate()
            log(p.sinks, {"step": step, **losses})
            p.progress.evaluated(step, losses)
            p.best.update(losses, p.model)
        if step % t.checkpoint_interval == 0 or last:  # a kill loses the steps since
            p.checkpoints.save(step)

        if p.on_step is not None:
            p.on_step(step)
        stop = p.group.any(p.signals.requested) and not last  # any rank's Ctrl-C or SIGTERM
        if stop:
            if p.checkpoints.saved_step != step:
                p.checkpoints.save(step)
            p.group.barrier()  # no rank exits before the checkpoint is written
        if last or stop:
            return step, stop
    return step, False


def log(sinks: list, record: dict) -> None:
    for sink in sinks:
        sink.write(record)
