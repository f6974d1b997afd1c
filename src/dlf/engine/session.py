"""Opening a run: the one way a command takes hold of a run directory.

    with open_session(cfg, out, resume=..., force=...) as session:
        ...train or fit session.model into session.run_dir, from session.state

`open_session` does, once and in this order, for every kind of run (trained, counted by
the count bigram, launched in N processes):

    1. find the run to continue (--resume, --resume auto)     RunDir.resumable
       or to start from (--init-from)                         RunDir.source
    2. plan it: every decision, and the plan's refusals        plan.plan_run
    3. join the processes of a data-parallel job              distributed.join
    4. build the model (running out of memory is one line), with --init-from the
       other run's best weights (weights that do not fit: refused)
    5. the caller's own refusals (`checks`: what --diagnostics needs, ...)
    6. read the checkpoint it continues (corrupt, incomplete or of another model: refused)
    7. claim the directory: lock it, refuse another run (without --resume or --force) and
       files dlf did not write, then remove the files of a run it replaces

Nothing in the directory is created, changed or deleted before step 7, and step 7
changes it only once its own checks have passed: a refused command leaves every file as
it was. `check_only=True` (the launcher, before it starts the job's processes) makes
every refusal and changes nothing.

While the session is open, a fault from outside the code ends in one DlfError line that
says what to change and where the last good checkpoint is: memory, a file that cannot be
written (a full disk, a file size limit) and a loss that is not finite. Closing the
session gives the directory back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import torch

from dlf import config as C
from dlf.engine import distributed
from dlf.engine.checkpoint import Checkpoint, kept, read_checkpoint, read_weights
from dlf.engine.divergence import Diverged
from dlf.engine.plan import Plan, plan_run
from dlf.engine.rundata import RunData
from dlf.engine.rundir import RunDir
from dlf.engine.state import TrainState
from dlf.errors import DlfError, is_out_of_memory, out_of_memory_means
from dlf.models import build_model

# A caller's refusal, made with the rest before the directory is claimed:
# (plan, model) -> None, or raise DlfError.
Check = Callable[[Plan, object], None]


@dataclass
class Session:
    """A run directory held by this process, and what the run needs: the plan, the data
    it read, the process group, the model, and the TrainState (fresh, or the
    checkpoint's, whose tensors `checkpoint` holds for dlf.engine.checkpoint.restore)."""

    plan: Plan
    data: RunData
    run_dir: RunDir
    group: distributed.Group
    model: object
    state: TrainState
    checkpoint: Checkpoint | None = None

    @property
    def out(self) -> Path:
        return self.run_dir.path

    def say(self, line: str) -> None:
        """A line on stderr, from the writing rank only."""
        distributed.say(self.group, line)

    def close(self) -> None:
        self.run_dir.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        self.close()
        fault = None if error is None else self.fault(error)
        if fault is None:
            return False
        raise fault from None

    def fault(self, e: BaseException) -> DlfError | None:
        """The line for what stopped the run from outside the code: a loss that is not
        finite, memory, or a file that could not be written; None for anything else."""
        where = kept(self.out, self.state)
        if isinstance(e, Diverged):
            return DlfError(e.line(where))
        again = ("continue with --resume" if self.state.saved_step is not None
                 else "run it again with --resume auto")  # which starts it over
        if isinstance(e, OSError) and e.errno is not None and not isinstance(e, BrokenPipeError):
            return DlfError(f"cannot write {e.filename or self.out}: {e.strerror}; {where}; "
                            f"{again} once it can be written")
        if not is_out_of_memory(e) or self.plan.regime == "fitted":
            return None
        return DlfError(f"{out_of_memory_in(self.plan.cfg.train, self.plan.regime)}; {where}")


def out_of_memory_in(t: C.TrainConfig, regime: str) -> str:
    """What ran out of memory in a training step, and which setting to lower."""
    rows = f"{t.batch_size} rows" if t.batch_size else "0 (the whole train split)"
    if regime == "manual":  # one pass over the whole batch, always
        return f"out of memory training train.batch_size = {rows}: lower train.batch_size"
    passes = f"in passes of {t.micro_batch} rows" if t.micro_batch else "in one pass"
    return (f"out of memory training train.batch_size = {rows} {passes} "
            f"(train.micro_batch = {t.micro_batch}): lower train.micro_batch (smaller "
            "passes over the same batch) or train.batch_size")


def open_session(cfg: C.RunConfig, out_dir: str | Path, *, resume: bool | str = False,
                 force: bool = False, init_from: str | Path | None = None,
                 world: distributed.World | None = None, checks: Iterable[Check] = (),
                 check_only: bool = False) -> Session:
    """Take hold of `out_dir` for a run of `cfg` (see the module docstring): every refusal
    first, then the claim. `resume`: True continues the run there from its checkpoint,
    "auto" continues it if there is one and starts one otherwise; `force` replaces a run;
    `init_from`: a run directory whose best weights and tokenizer a new run starts from
    (a run continued from its checkpoint has its own). Use the result as a context
    manager, or close() it."""
    if force and resume:
        raise DlfError("--force replaces the run in --out and --resume continues it: give one")
    run_dir = RunDir(out_dir)
    saved = run_dir.resumable(auto=resume == "auto") if resume else None
    continues = saved is not None and saved.checkpoint  # the run there goes on
    source = RunDir(init_from).source() if init_from is not None and not continues else None
    world = world or distributed.World.from_env()
    plan, data = plan_run(cfg, world, resume=saved, init_from=source)
    cfg = plan.cfg
    if source is not None and plan.regime == "fitted":
        raise DlfError(f"a {cfg.model.type} model is counted from the data: --init-from has "
                       "nothing to start it from")
    group = distributed.Group(device=plan.device) if check_only else \
        distributed.join(plan.world, plan.device)
    torch.manual_seed(cfg.train.seed)
    with out_of_memory_means(f"building the {cfg.model.type} model: make it smaller (its "
                             "model.* sizes)"):
        model = build_model(cfg.model).to(plan.device)
        if source is not None:  # a refusal names the weights that do not fit
            model.load_state_dict(read_weights(source.path, source.config.model.type))
    distributed.share_batch_statistics(model, group)
    for check in checks:
        check(plan, model)
    # a fitted model is counted again; a trained one continues from its checkpoint
    trained = continues and plan.regime != "fitted"
    checkpoint = read_checkpoint(run_dir.path, cfg.model.type) if trained else None
    restart = saved is not None and not saved.checkpoint  # no checkpoint yet: start over
    group.barrier()  # every rank checks the directory before rank 0 changes it
    run_dir.claim(force or restart, resume=continues, lock=group.is_main and not check_only,
                  why="--resume auto: no checkpoint to continue, starting over"
                  if restart else "--force")
    if check_only:
        run_dir.lock()  # --out can be written, and no other run holds it
        run_dir.release()
    group.barrier()
    for note in plan.notes:
        distributed.say(group, f"dlf: {note}")
    state = checkpoint.state if checkpoint is not None else TrainState()
    return Session(plan, data, run_dir, group, model, state, checkpoint)
