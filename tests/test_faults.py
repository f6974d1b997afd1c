"""Faults from outside the code: a job killed or restarted (checkpoints on their own
schedule, --resume auto), running out of memory, a write that fails, an --out that cannot
be written, and bad input. Each ends in one line on stderr and exit status 2, leaving the
previous checkpoint whole; resuming from it gives the losses of an uninterrupted run.

The failures are real where that is cheap and safe: torch's allocator refusing a tensor
larger than any machine's memory (it fails before touching memory), and the kernel's
file size limit (RLIMIT_FSIZE, in a subprocess). A full disk is injected in the file layer
(os.fsync of the temporary file raising ENOSPC), which is where the kernel reports it."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import runs
from dlf import config as C
from dlf import presets as P
from dlf.cli import main
from dlf.engine import launch
from dlf.engine.checkpoint import Checkpointer
from dlf.engine.rundir import LOCK_FILE
from dlf.engine.tensor_io import load_tensors
from dlf.engine.trainer import Trainer, train
from dlf.errors import DlfError, is_out_of_memory
from dlf.fileio import atomic_write_text
from dlf.sample import sample
from runs import records, without_timings

# Far more bytes than any machine has: the allocator refuses at once, touching nothing.
HUGE = 2**62


def allocation_failure():
    """What torch raises when memory runs out (the CPU allocator's RuntimeError)."""
    torch.empty(HUGE, dtype=torch.uint8)


def tiny_mlp(names_file, **train):
    return runs.tiny_mlp(names_file, **{"num_samples": 3, "threads": 1, **train})


def saved_step(out) -> int:
    tensors, _ = load_tensors(out / "state.safetensors")
    return int(tensors["step"])


def cli(argv, capsys) -> tuple[int, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        code = e.code
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str) -> None:
    assert code == 2, err
    assert err.startswith("dlf: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def assert_same_records(a: Path, b: Path) -> None:
    assert without_timings(records(a)) == without_timings(records(b))
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (a, b))
    for key in ("train_loss", "val_loss", "test_loss", "steps"):
        assert ra[key] == rb[key], key


@pytest.fixture
def whole(tmp_path, names_file):
    """The uninterrupted run every resumed run is compared with (30 steps, checkpoints and
    evaluations every 10)."""
    out = tmp_path / "whole"
    Trainer(tiny_mlp(names_file), out, progress=False).fit()
    return out


# --------------------------------------------------------------------------- schedule


def test_checkpoints_follow_their_own_interval(tmp_path, names_file, monkeypatch):
    saved = []
    real_save = Checkpointer.save

    def save(self, state):
        saved.append(state.step)
        real_save(self, state)

    monkeypatch.setattr(Checkpointer, "save", save)
    cfg = tiny_mlp(names_file, max_steps=10, eval_interval=7, checkpoint_interval=4)
    Trainer(cfg, tmp_path / "run", progress=False).fit()
    assert saved == [4, 8, 10]  # every 4 steps and at the end, not at the evaluation (7)
    assert [r["step"] for r in records(tmp_path / "run") if "val_loss" in r] == [7, 10]

    saved.clear()

    def stop_at_6(step, state, model):
        return step == 6

    Trainer(cfg, tmp_path / "stopped", progress=False, callback=stop_at_6).fit()
    assert saved == [4, 6]  # and at a stop
    assert saved_step(tmp_path / "stopped") == 6


# --------------------------------------------------------------------------- --resume auto


def test_resume_auto_starts_an_empty_directory_and_continues_a_stopped_run(
        tmp_path, names_file, whole, capsys):
    cfg = tiny_mlp(names_file)
    (tmp_path / "run.toml").write_text(C.to_toml(cfg))
    auto = ["train", tmp_path / "run.toml", "--resume", "auto", "--quiet", "--out"]

    code, err = cli([*auto, tmp_path / "fresh"], capsys)  # nothing there yet: it starts
    assert code == 0, err
    assert "resuming" not in err
    assert_same_records(tmp_path / "fresh", whole)

    def stop_at_13(step, state, model):
        return step == 13

    stopped = tmp_path / "stopped"
    Trainer(cfg, stopped, progress=False, callback=stop_at_13).fit()
    code, err = cli([*auto, stopped], capsys)  # a checkpoint of this config: it continues
    assert code == 0, err
    assert f"dlf: resuming {stopped} from step 13\n" in err
    assert_same_records(stopped, whole)


def test_resume_auto_continues_with_other_training_settings(tmp_path, names_file, whole):
    out = tmp_path / "run"
    Trainer(tiny_mlp(names_file, max_steps=20), out, progress=False).fit()
    train(tiny_mlp(names_file), out, resume="auto", progress=False)  # 20 -> 30 steps
    assert_same_records(out, whole)


def test_resume_auto_refuses_another_run_with_or_without_a_checkpoint(tmp_path, names_file,
                                                                      capsys):
    other = tmp_path / "other"
    Trainer(tiny_mlp(names_file, max_steps=2), other, progress=False).fit()
    (tmp_path / "run.toml").write_text(C.to_toml(tiny_mlp(names_file)))
    argv = ["train", tmp_path / "run.toml", "--quiet", "--out"]

    wider = C.apply_overrides(tiny_mlp(names_file), ["model.n_hidden=20"])
    (tmp_path / "wider.toml").write_text(C.to_toml(wider))
    code, err = cli(["train", tmp_path / "wider.toml", "--quiet", "--resume", "auto", "--out",
                     other], capsys)
    assert_one_line(code, err)
    assert "model or data config differs" in err

    started = tmp_path / "started"  # another run's files, stopped before a checkpoint
    started.mkdir()
    (started / "config.toml").write_text(C.to_toml(wider))
    code, err = cli([*argv, started, "--resume", "auto"], capsys)
    assert_one_line(code, err)
    assert "model or data config differs" in err

    code, err = cli([*argv, other, "--resume", "auto", "--force"], capsys)
    assert_one_line(code, err)
    assert "give one" in err
    assert saved_step(other) == 2  # none of them touched the run


def test_resume_auto_starts_over_a_run_of_its_config_stopped_before_a_checkpoint(
        tmp_path, names_file, capsys):
    """A job killed before its first checkpoint leaves config.toml (and maybe metrics) but
    nothing to continue: --resume auto starts it over, so a restarted job still finishes,
    as the uninterrupted run does."""
    whole = tmp_path / "whole"
    Trainer(tiny_mlp(names_file), whole, progress=False).fit()
    out = tmp_path / "run"

    def crash_before_the_first_checkpoint(step, state, model):
        if step == 3:  # checkpoint_interval 10
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        Trainer(tiny_mlp(names_file), out, progress=False,
                callback=crash_before_the_first_checkpoint).fit()
    assert (out / "config.toml").exists() and not (out / "state.safetensors").exists()
    train(tiny_mlp(names_file), out, resume="auto", progress=False)
    assert "no checkpoint to continue, starting over" in capsys.readouterr().err
    assert_same_records(out, whole)


# --------------------------------------------------------------------------- memory


def test_allocation_failures_are_recognised():
    with pytest.raises(RuntimeError) as real:  # torch's own failure, not a made-up message
        allocation_failure()
    assert is_out_of_memory(real.value)
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    with pytest.raises(RuntimeError) as other:
        torch.ones(2) @ torch.ones(3)
    assert not is_out_of_memory(other.value)
    assert not is_out_of_memory(ValueError("out of memory"))


def test_out_of_memory_in_a_step_keeps_the_checkpoint_and_resumes(tmp_path, names_file, whole):
    out, armed = tmp_path / "run", []

    def arm_at_14(step, state, model):
        if step == 14:
            armed.append(step)

    tr = Trainer(tiny_mlp(names_file), out, progress=False, callback=arm_at_14)
    forward = tr.model.forward

    def forward_that_runs_out(*args, **kw):
        if armed:  # step 15's forward pass
            allocation_failure()
        return forward(*args, **kw)

    tr.model.forward = forward_that_runs_out
    with pytest.raises(DlfError) as e:
        tr.fit()
    assert str(e.value) == (
        "out of memory training train.batch_size = 16 rows in one pass (train.micro_batch = 0): "
        "lower train.micro_batch (smaller passes over the same batch) or train.batch_size; "
        "the last good "
        f"checkpoint (step 10) is {out}/state.safetensors")
    assert saved_step(out) == 10 and not (out / LOCK_FILE).exists()
    Trainer(tiny_mlp(names_file), out, progress=False, resume=True).fit()
    assert_same_records(out, whole)


def test_out_of_memory_before_the_first_checkpoint_says_none_was_written(tmp_path, names_file):
    tr = Trainer(tiny_mlp(names_file), tmp_path / "run", progress=False)
    tr.model.forward = lambda *args, **kw: allocation_failure()
    with pytest.raises(DlfError) as e:
        tr.fit()
    assert str(e.value) == (
        "out of memory training train.batch_size = 16 rows in one pass (train.micro_batch = 0): "
        "lower train.micro_batch (smaller passes over the same batch) or train.batch_size; "
        "no checkpoint had been written")


def test_a_batch_larger_than_memory_is_refused_by_the_plan(tmp_path, names_file, text_file,
                                                           capsys):
    """Token ids alone beyond the machine's memory: refused before --out is made."""
    from dlf.engine.plan import physical_memory

    for data, extra in ((names_file, []), (text_file, ["--set", "data.format=text"])):
        preset = "names-mlp" if data == names_file else "shakespeare-transformer-cpu-gpt2"
        code, err = cli(["train", preset, "--data", data, "--out", tmp_path / preset,
                         "--quiet", "--set", f"train.batch_size={2**45}", *extra], capsys)
        assert_one_line(code, err)
        gib = physical_memory() / 2**30
        assert "one batch's token ids alone need" in err and f"{gib:,.0f} GiB" in err, err
        assert not (tmp_path / preset).exists()


def test_out_of_memory_while_sampling_names_what_to_lower(tmp_path, names_file):
    cfg = tiny_mlp(names_file, max_steps=2)
    Trainer(cfg, tmp_path / "run", progress=False).fit()
    from dlf.engine.saved import load_run

    run = load_run(tmp_path / "run")
    run.model.forward = lambda *a, **k: allocation_failure()
    with pytest.raises(DlfError, match=r"^out of memory sampling: .*-n.*model\.block_size"):
        sample(run.model, run.tokenizer, n=4)


def test_out_of_memory_while_sampling_from_the_cli(tmp_path, names_file, capsys):
    Trainer(tiny_mlp(names_file, max_steps=2), tmp_path / "run", progress=False).fit()
    code, err = cli(["sample", tmp_path / "run", "-n", 2**50], capsys)
    assert_one_line(code, err)
    assert "out of memory sampling" in err


# --------------------------------------------------------------------------- disk


def test_a_failed_atomic_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    atomic_write_text(path, "old")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("dlf.fileio.os.fsync", full)
    with pytest.raises(OSError) as e:
        atomic_write_text(path, "new")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
    assert path.read_text() == "old" and sorted(tmp_path.iterdir()) == [path]


def disk_full_on(name: str, after: int, monkeypatch) -> None:
    """Every fsync of a temporary file of `name` after the first `after` ones fails with
    ENOSPC: the write went out, the disk could not hold it."""
    real_fsync, seen = os.fsync, []

    def fsync(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{name}."):
            seen.append(fd)
            if len(seen) > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr("dlf.fileio.os.fsync", fsync)


@pytest.mark.parametrize("name,after,kept", [("state.safetensors", 1, 10),
                                             ("result.json", 0, 30)])
def test_a_full_disk_is_one_line_and_the_run_resumes(tmp_path, names_file, whole, capsys,
                                                     monkeypatch, name, after, kept):
    out = tmp_path / "run"
    (tmp_path / "run.toml").write_text(C.to_toml(tiny_mlp(names_file)))
    argv = ["train", tmp_path / "run.toml", "--out", out, "--quiet"]
    with monkeypatch.context() as m:
        disk_full_on(name, after, m)
        code, err = cli(argv, capsys)
    assert_one_line(code, err)
    assert err == (f"dlf: error: cannot write {out}/{name}: No space left on device; the last "
                   f"good checkpoint (step {kept}) is {out}/state.safetensors; continue with "
                   "--resume once it can be written\n")
    assert saved_step(out) == kept
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")] and \
        not (out / LOCK_FILE).exists()
    code, err = cli([*argv, "--resume"], capsys)
    assert code == 0, err
    assert_same_records(out, whole)


def test_a_full_disk_while_fitting_a_counted_model_is_one_line(tmp_path, names_file, capsys,
                                                                monkeypatch):
    out = tmp_path / "bigram"
    with monkeypatch.context() as m:
        disk_full_on("state.safetensors", 0, m)
        code, err = cli(["train", "names-bigram", "--data", names_file, "--out", out,
                         "--quiet"], capsys)
    assert_one_line(code, err)
    assert err == (f"dlf: error: cannot write {out}/state.safetensors: No space left on "
                   "device; no checkpoint had been written; run it again with --resume auto "
                   "once it can be written\n")
    code, err = cli(["train", "names-bigram", "--data", names_file, "--out", out, "--quiet",
                     "--resume", "auto"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("batch_size, micro_batch, regime, rows", [
    (0, 0, "autograd", "0 (the whole train split) in one pass"),
    (64, 16, "autograd", "64 rows in passes of 16 rows"),
    (0, 0, "manual", "0 (the whole train split)")])
def test_the_out_of_memory_line_names_the_batch(batch_size, micro_batch, regime, rows):
    from dlf.engine.session import out_of_memory_in

    t = C.TrainConfig(batch_size=batch_size, micro_batch=micro_batch)
    line = out_of_memory_in(t, regime)
    assert line.startswith(f"out of memory training train.batch_size = {rows}")
    assert line.endswith("train.batch_size")


FILE_SIZE_LIMIT = """
import os, resource, sys
from dlf.cli import main
from dlf.engine.checkpoint import Checkpointer

save = Checkpointer.save

def save_then_limit(self, state):
    # after the first checkpoint, no file may grow to the checkpoint's size (EFBIG)
    save(self, state)
    limit = os.path.getsize(os.path.join(sys.argv[-1], "state.safetensors")) - 1
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

Checkpointer.save = save_then_limit
sys.exit(main(["train", *sys.argv[1:]]))
"""


@pytest.mark.slow
def test_a_file_size_limit_is_one_line_and_the_run_resumes(tmp_path, names_file, whole):
    # metrics.jsonl stays small, and no loss.png (drawn at evaluations) comes before the
    # checkpoint of step 20
    cfg = tiny_mlp(names_file, log_interval=100, eval_interval=30)
    (tmp_path / "run.toml").write_text(C.to_toml(cfg))
    (tmp_path / "limit.py").write_text(FILE_SIZE_LIMIT)
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, tmp_path / "limit.py", tmp_path / "run.toml", "--quiet",
                        "--out", out], check=False, capture_output=True, text=True,
                       timeout=240)
    assert_one_line(p.returncode, p.stderr)
    assert f"cannot write {out}/state.safetensors: File too large" in p.stderr
    assert saved_step(out) == 10  # the first checkpoint, whole
    Trainer(cfg, out, progress=False, resume=True).fit()

    def evaluations(run):
        return [r for r in records(run) if "val_loss" in r]

    assert evaluations(out) == [r for r in evaluations(whole) if r["step"] == 30]
    rw, ro = (json.loads((d / "result.json").read_text()) for d in (whole, out))
    for key in ("train_loss", "val_loss", "test_loss", "steps"):
        assert rw[key] == ro[key], key


@pytest.mark.parametrize("how", ["parent is a file", "read-only directory"])
def test_an_out_that_cannot_be_written_is_refused_before_training(tmp_path, names_file, capsys,
                                                                  monkeypatch, how):
    if how == "parent is a file":
        (tmp_path / "file").write_text("")
        out, reason = tmp_path / "file" / "run", "Not a directory"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only directory")
        (tmp_path / "ro").mkdir(mode=0o555)
        out, reason = tmp_path / "ro" / "run", "Permission denied"

    def no_training(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr("dlf.engine.trainer.train_loop", no_training)
    monkeypatch.setattr(launch.subprocess, "Popen", no_training)
    for nproc in ("1", "2"):
        code, err = cli(["train", "names-mlp", "--data", names_file, "--out", out, "--quiet",
                         "--nproc", nproc], capsys)
        assert_one_line(code, err)
        assert err == f"dlf: error: --out {out} cannot be written: {reason}\n"


# --------------------------------------------------------------------------- bad input

NON_FINITE = [("train.lr", "nan"), ("train.lr", "inf"), ("train.lr", "-inf"),
              ("train.max_seconds", "inf"), ("train.momentum", "nan"), ("train.beta1", "nan"),
              ("train.beta2", "inf"), ("train.weight_decay", "nan"), ("train.grad_clip", "inf"),
              ("train.gamma", "nan"), ("train.min_lr", "nan"), ("train.decay_fraction", "nan"),
              ("model.last_layer_scale", "nan")]


@pytest.mark.parametrize("key,value", NON_FINITE)
def test_nan_and_infinity_are_refused_as_not_finite(key, value):
    with pytest.raises(DlfError) as e:
        C.apply_overrides(P.load_preset("names-mlp"), [f"{key}={value}"])
    assert str(e.value) == f"{key} must be a finite number, got {value!r}"


def test_nan_in_a_toml_file_is_refused(tmp_path):
    text = C.to_toml(P.load_preset("names-mlp")).replace("lr = 0.1", "lr = nan")
    (tmp_path / "nan.toml").write_text(text)
    with pytest.raises(DlfError, match=r"^train.lr must be a finite number, got nan$"):
        P.load_toml(tmp_path / "nan.toml")


def bad_inputs(tmp, names, text):
    """(argv, what the line says): one per way an operator gets a setting wrong."""
    train = ["train", "names-mlp", "--data", names, "--out", tmp / "run", "--quiet"]
    transformer = ["train", "shakespeare-transformer-cpu-gpt2", "--data", text, "--out",
                   tmp / "t", "--quiet", "--set", "data.format=text"]
    cases = [([*train, "--set", f"{k}={v}"], "must be a finite number")
             for k, v in NON_FINITE]
    cases += [
        ([*transformer, "--set", "model.dropout=nan"], "must be a finite number"),
        ([*train, "--set", f"train.batch_size={2**45}"], "lower train.batch_size"),
        ([*transformer, "--set", f"train.batch_size={2**45}"], "lower train.batch_size"),
        ([*train, "--set", "model.n_hidden=10000000000"], "out of memory building"),
        ([*train, "--set", "model.block_size=1000000000"], "lower model.block_size"),
        ([*train, "--set", "train.batch_size=-1"], "train.batch_size must be >= 0"),
        ([*train, "--set", "train.lr=-1"], "train.lr must be >= 0"),
        ([*train, "--set", "train.lr=fast"], "must be a number"),
        ([*train, "--set", "train.max_steps=1.5"], "must be an integer"),
        ([*train, "--set", "train.checkpoint_interval=0"], "checkpoint_interval must be >= 1"),
        ([*train, "--set", "train.eval_interval=0"], "eval_interval must be >= 1"),
        ([*train, "--set", "train.micro_batch=-2"], "micro_batch must be >= 0"),
        ([*train, "--set", "train.nope=1"], "unknown config key"),
        ([*train, "--set", "train.optimizer=adam"], "must be sgd, adamw or muon"),
        ([*train, "--resume"], "state.safetensors not found"),
        ([*train, "--resume", "auto", "--force"], "give one"),
        ([*train, "--nproc", "0"], "--nproc must be >= 1"),
        ([*train, "--nproc", "3"], "divisible"),
        ([*train, "--nproc", "2", "--max-restarts", "1"], "--resume auto"),
        ([*train, "--max-restarts", "-1", "--resume", "auto"], "--max-restarts must be >= 0"),
        (["train", "no-such-preset", "--out", tmp / "x"], "no-such-preset"),
        (["train", "names-mlp", "--data", tmp / "missing.txt", "--out", tmp / "x"], "missing"),
        (["sample", tmp / "no-run"], "run directory not found"),
        (["eval", tmp / "no-run"], "run directory not found"),
    ]
    return cases


def test_bad_inputs_give_one_line_and_status_2(tmp_path, names_file, text_file, capsys,
                                               monkeypatch):
    monkeypatch.setattr(launch.subprocess, "Popen", lambda *a, **k: pytest.fail("launched"))
    for argv, says in bad_inputs(tmp_path, names_file, text_file):
        code, err = cli(argv, capsys)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
        assert err.startswith("dlf: error: ") and says in err, (argv, err)


@pytest.mark.slow
def test_bad_inputs_in_a_fresh_process(tmp_path, names_file):
    for extra in (["--set", f"train.batch_size={2**45}"], ["--set", "train.lr=nan"]):
        p = subprocess.run([sys.executable, "-m", "dlf", "train", "names-mlp", "--data",
                            str(names_file), "--out", str(tmp_path / "run"), "--quiet", *extra],
                           check=False, capture_output=True, text=True, timeout=120)
        assert_one_line(p.returncode, p.stderr)
