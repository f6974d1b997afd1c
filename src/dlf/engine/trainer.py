"""One Trainer for every model: seeded batches, optimizer + schedule, clipping,
evaluation, best/last checkpoints, metrics, resume, progress bar.

Logging and saving go through `self.is_main`, so a data-parallel mode can make
them rank-0 only without touching the loop.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from dlf import config as C
from dlf import optim
from dlf.data.tokenizer import CharTokenizer
from dlf.engine.checkpoint import (
    atomic_write_text,
    load_tensors,
    save_tensors,
    section,
    write_json,
)
from dlf.engine.metrics import MetricsLog, plot_loss
from dlf.engine.run import (
    RUN_FILES,
    autocast,
    check_model_fits_data,
    evaluate,
    pick_device,
    prepare_data,
)
from dlf.errors import DlfError
from dlf.models import build_model

DEFAULT_THREADS = torch.get_num_threads()  # what torch chose for this machine (or the caller)


def make_optimizer(model, t: C.TrainConfig):
    if t.optimizer == "adamw":
        groups = optim.param_groups_for_decay(model.named_parameters(), t.weight_decay)
        return optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), weight_decay=t.weight_decay)
    return optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


def make_schedule(t: C.TrainConfig):
    return optim.make_schedule(t.schedule, t.lr, milestones=t.milestones, gamma=t.gamma,
                               warmup_steps=t.warmup_steps, total_steps=max(t.max_steps, 1),
                               min_lr=t.min_lr)


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale all gradients so their global L2 norm is at most max_norm; returns the norm."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    torch._foreach_mul_(grads, scale)
    return norm.item()


class Trainer:
    """Train `cfg` into `out_dir`.

    Nothing is written until the data, tokenizer and model have been built and
    checked, and an existing run directory is only reused with resume=True (or
    replaced with force=True).
    """

    def __init__(self, cfg: C.RunConfig, out_dir: str | Path, *, resume: bool = False,
                 force: bool = False, progress: bool | None = None, callback=None):
        self.out = Path(out_dir)
        self.is_main = True
        self.callback = callback  # called as callback(trainer, step) after every step
        self.progress = sys.stderr.isatty() if progress is None else progress
        self._stop_requested = False
        if resume:
            cfg = self._resume_config(cfg)
        C.validate(cfg)
        self.cfg = cfg
        self.resume = resume
        self.device = pick_device(cfg.train.device)
        # process-wide in torch: set it for every run, so one run's choice (e.g. threads = 1
        # for a tiny model) does not slow the next run in the same process (dlf report)
        torch.set_num_threads(cfg.train.threads or DEFAULT_THREADS)
        self.data = prepare_data(cfg, tokenizer=self._saved_tokenizer() if resume else None)
        cfg.model.vocab_size = self.data.tokenizer.vocab_size
        torch.manual_seed(cfg.train.seed)
        self.model = build_model(cfg.model)
        check_model_fits_data(self.model, self.data)
        self.model.to(self.device)
        # torch.compile traces any callable; our Module is one. Eval and sampling stay eager.
        self.forward = torch.compile(self.model) if cfg.train.compile else self.model
        self.fitted = hasattr(self.model, "fit")
        self.manual = hasattr(self.model, "manual_step")
        if not resume:
            self._claim_out_dir(force)

    # ----------------------------------------------------------------- run directory

    def _resume_config(self, requested: C.RunConfig) -> C.RunConfig:
        if not (self.out / "state.safetensors").exists():
            raise DlfError(f"cannot resume: {self.out}/state.safetensors not found")
        saved = C.load_toml(self.out / "config.toml")
        if saved.model.type != requested.model.type:
            raise DlfError(f"{self.out} holds a {saved.model.type} run, not {requested.model.type}")
        # Training settings may change on resume (e.g. more steps); the model may not.
        requested.model.vocab_size = saved.model.vocab_size
        if requested.model != saved.model or requested.data != saved.data:
            raise DlfError(f"cannot resume {self.out}: its model or data config differs from "
                           "the requested one (see its config.toml)")
        return requested

    def _saved_tokenizer(self):
        return CharTokenizer.load(self.out / "tokenizer.json")

    def _claim_out_dir(self, force: bool) -> None:
        existing = [f for f in RUN_FILES if (self.out / f).exists()]
        if existing and not force:
            raise DlfError(f"{self.out} already holds a run ({existing[0]}); "
                           "use --resume to continue it, --force to replace it, or another --out")
        if self.out.exists() and not self.out.is_dir():
            raise DlfError(f"--out {self.out} exists and is not a directory")
        if existing and force:
            for f in RUN_FILES:
                (self.out / f).unlink(missing_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)

    # ----------------------------------------------------------------- checkpoints

    def _meta(self):
        return {"model_type": self.cfg.model.type, "format": "dlf-1"}

    def _save_state(self, step: int) -> None:
        if not self.is_main:
            return
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.optimizer is not None:
            tensors.update({f"optim.{k}": v for k, v in self.optimizer.state_dict().items()})
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.data"] = self.gen.get_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        tensors["step"] = torch.tensor(step, dtype=torch.int64)
        tensors["best_val"] = torch.tensor(self.best_val, dtype=torch.float64)
        tensors["wall_seconds"] = torch.tensor(self.wall_before + self._elapsed(), dtype=torch.float64)
        tensors["train_seconds"] = torch.tensor(self.train_seconds, dtype=torch.float64)
        save_tensors(self.out / "state.safetensors", tensors, self._meta())

    def _load_state(self) -> int:
        tensors, meta = load_tensors(self.out / "state.safetensors")
        if meta.get("model_type") != self.cfg.model.type:
            raise DlfError(f"{self.out}/state.safetensors holds a {meta.get('model_type')} model, "
                           f"not {self.cfg.model.type}")
        try:
            self.model.load_state_dict(section(tensors, "model"))
            if self.optimizer is not None:
                self.optimizer.load_state_dict(section(tensors, "optim"))
            torch.set_rng_state(tensors["rng.torch"])
            self.gen.set_state(tensors["rng.data"])
            if "rng.cuda" in tensors and self.device.type == "cuda":
                torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
            step = int(tensors["step"])
            self.best_val = float(tensors["best_val"])
            self.wall_before = float(tensors["wall_seconds"])
            self.train_seconds = float(tensors["train_seconds"])
        except KeyError as e:
            raise DlfError(f"{self.out}/state.safetensors is incomplete (missing {e})") from None
        return step

    def _save_best(self) -> None:
        if self.is_main:
            save_tensors(self.out / "model.safetensors", self.model.state_dict(), self._meta())

    # ----------------------------------------------------------------- loop

    def _elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def request_stop(self) -> None:
        """Finish the current step, checkpoint, and return (what Ctrl-C does)."""
        self._stop_requested = True

    def _batch(self):
        t, ds = self.cfg.train, self.data.train
        if t.batch_size == 0:
            if not hasattr(ds, "X"):
                raise DlfError("train.batch_size = 0 (full batch) needs line data")
            return ds.X.to(self.device), ds.Y.to(self.device)
        x, y = ds.batch(t.batch_size, self.gen)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _eval_losses(self) -> dict:
        return {"train_loss": self._evaluate(self.data.train),
                "val_loss": self._evaluate(self.data.val)}

    def _evaluate(self, ds) -> float:
        t = self.cfg.train
        return evaluate(self.model, ds, device=self.device, dtype=t.dtype,
                        batch_size=t.batch_size or 32, iters=t.eval_iters, seed=t.seed + 2)

    def fit(self) -> dict:
        """Train to cfg.train.max_steps (or until a stop request); returns result.json's dict."""
        cfg, t = self.cfg, self.cfg.train
        out = self.out
        self.t0 = time.perf_counter()
        self.wall_before = 0.0
        self.best_val = math.inf
        self.best_losses = None  # train/val of model.safetensors, when measured this session
        self.train_seconds = 0.0  # inside optimizer steps only (no evaluation, no saving)
        self.gen = torch.Generator().manual_seed(t.seed + 1)
        self.optimizer = None if (self.fitted or self.manual) else make_optimizer(self.model, t)
        schedule = make_schedule(t)
        log = MetricsLog(out / "metrics.jsonl")
        step = 0
        if self.resume:
            step = self._load_state()
            log.truncate_after(step)
        else:
            atomic_write_text(out / "config.toml", C.to_toml(cfg))
            self.data.tokenizer.save(out / "tokenizer.json")

        if self.fitted:
            self.model.fit(self.data.train.X, self.data.train.Y)
            step = t.max_steps = 0
            losses = self._eval_losses()
            self.best_val = losses["val_loss"]
            log.append({"step": 0, **losses})
            self._save_best()
            self._save_state(0)
            return self._finish(step, interrupted=False)

        params = self.model.parameters()
        tokens_per_step = self._tokens_per_step()
        bar = tqdm(total=t.max_steps, initial=step, disable=not self.progress, unit="step",
                   dynamic_ncols=True, file=sys.stderr)
        old_handler = self._install_sigint()
        interrupted = False
        last_t, last_step = time.perf_counter(), step
        self.model.train()
        try:
            while step < t.max_steps:
                lr = schedule(self._schedule_position(step))
                t_step = time.perf_counter()
                loss = self._step(params, lr)
                self.train_seconds += time.perf_counter() - t_step
                step += 1
                out_of_time = 0 < t.max_seconds <= self.train_seconds
                last = step == t.max_steps or out_of_time
                if step % t.log_interval == 0 or last:
                    now = time.perf_counter()
                    tps = tokens_per_step * (step - last_step) / max(now - last_t, 1e-9)
                    last_t, last_step = now, step
                    loss_v = loss.item() if torch.is_tensor(loss) else float(loss)
                    if not math.isfinite(loss_v):
                        raise DlfError(f"loss became {loss_v} at step {step}; lower train.lr "
                                       "or set train.grad_clip")
                    if self.is_main:
                        log.append({"step": step, "loss": loss_v, "lr": lr,
                                    "tokens_per_second": round(tps, 1),
                                    "train_seconds": round(self.train_seconds, 3)})
                    bar.set_postfix(loss=f"{loss_v:.4f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}")
                bar.update(1)
                if step % t.eval_interval == 0 or last:
                    losses = self._eval_losses()
                    if self.is_main:
                        log.append({"step": step, **losses})
                    msg = (f"step {step}: train {losses['train_loss']:.4f}, "
                           f"val {losses['val_loss']:.4f}")
                    if self.progress:
                        bar.write(msg)
                    if losses["val_loss"] < self.best_val:
                        self.best_val = losses["val_loss"]
                        self.best_losses = losses
                        self._save_best()
                    self._save_state(step)
                    if not last:  # the last plot is drawn once, by _finish
                        plot_loss(log.read(), out / "loss.png", title=cfg.name)
                if self.callback is not None:
                    self.callback(self, step)
                if out_of_time:
                    break
                if self._stop_requested and step < t.max_steps:
                    interrupted = True
                    self._save_state(step)
                    break
        finally:
            bar.close()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        return self._finish(step, interrupted)

    def _install_sigint(self):
        """First Ctrl-C: stop cleanly after the current step. Second: abort."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            print("\nstopping after this step (Ctrl-C again to abort)...", file=sys.stderr)

        return signal.signal(signal.SIGINT, handler)

    def _schedule_position(self, step: int) -> int:
        """The step the lr schedule reads. With a time budget (train.max_seconds) the
        schedule runs on the share of the budget spent, so it ends with the budget."""
        t = self.cfg.train
        if t.max_seconds <= 0:
            return step
        return min(t.max_steps, max(step, int(t.max_steps * self.train_seconds / t.max_seconds)))

    def _tokens_per_step(self) -> int:
        t = self.cfg.train
        b = t.batch_size or len(self.data.train)
        return round(b * self.data.train.targets_per_row * t.grad_accum)

    def _step(self, params, lr: float):
        t = self.cfg.train
        if self.manual:
            x, y = self._batch()
            return self.model.manual_step(x, y, lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = 0.0
        for _ in range(t.grad_accum):
            x, y = self._batch()
            with autocast(self.device, t.dtype):
                _, loss = self.forward(x, y)
            (loss / t.grad_accum).backward()
            total = total + loss.detach()
        if t.grad_clip > 0:
            clip_grad_norm(params, t.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return total / t.grad_accum

    # ----------------------------------------------------------------- finish

    def _finish(self, step: int, interrupted: bool) -> dict:
        from dlf.sample import write_samples

        cfg, out = self.cfg, self.out
        wall = self.wall_before + self._elapsed()
        records = MetricsLog(out / "metrics.jsonl").read()
        if records:
            plot_loss(records, out / "loss.png", title=cfg.name)
        if interrupted:
            print(f"interrupted at step {step}/{cfg.train.max_steps}; continue with --resume",
                  file=sys.stderr)
            return {"interrupted": True, "steps": step}
        # Final figures describe model.safetensors, the best-validation weights.
        best, _ = load_tensors(out / "model.safetensors")
        self.model.load_state_dict(best)
        self.model.eval()
        result = {
            "name": cfg.name,
            "model_type": cfg.model.type,
            "dataset": cfg.data.dataset,
            **(self.best_losses or self._eval_losses()),
            "test_loss": self._evaluate(self.data.test) if self.data.test is not None else None,
            "steps": step,
            "wall_seconds": round(wall, 2),
            "train_seconds": round(self.train_seconds, 2),
            "steps_per_second": round(step / wall, 2) if wall > 0 and step else None,
            "tokens_per_second": round(step * self._tokens_per_step() / wall, 1)
            if wall > 0 and not self.fitted else None,
            "num_parameters": self.model.num_parameters(),
            "device": str(self.device),
            "dtype": cfg.train.dtype,
            "torch": torch.__version__,
        }
        result.update(write_samples(self.model, self.data, out / "samples.txt", cfg.train,
                                    device=self.device))
        if hasattr(self.model, "extra_results"):
            result.update(self.model.extra_results(self.data, out))
        if self.is_main:
            write_json(out / "result.json", result)
        return result


def train(cfg: C.RunConfig, out_dir, **kw) -> dict:
    return Trainer(cfg, out_dir, **kw).fit()
