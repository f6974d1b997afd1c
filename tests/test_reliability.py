"""What a user relies on: evaluation mode, each metrics step once after a resume, SIGTERM/SIGINT, file modes, the run-directory lock,
divergence."""

import json
import math
import os
import signal
import stat
import subprocess
import time

import pytest
import torch
import torch.nn.functional as F

import runs
from dlf import config as C
from dlf import presets as P
from dlf.cli import EXIT_INTERRUPTED, main
from dlf.engine.divergence import DIVERGENCE_FACTOR
from dlf.engine.evaluate import evaluate
from dlf.engine.rundata import prepare_data
from dlf.engine.rundir import LOCK_FILE, RunDir
from dlf.engine.tensor_io import load_tensors
from dlf.engine.trainer import Trainer
from dlf.errors import DlfError
from dlf.models import build_model
from runs import records, train_cmd, without_timings, write_mlp_config


def tiny_mlp(names_file, **train):
    return runs.tiny_mlp(names_file, **{"num_samples": 3, "threads": 1, **train})


def saved_step(out) -> int:
    tensors, _ = load_tensors(out / "state.safetensors")
    return int(tensors["step"])


# --------------------------------------------------------------------------- evaluation


def test_evaluation_leaves_batchnorm_statistics_unchanged(names_file):
    cfg = tiny_mlp(names_file)
    data = prepare_data(cfg)
    cfg.model.vocab_size = data.tokenizer.vocab_size
    torch.manual_seed(0)
    model = build_model(cfg.model)
    # give the running statistics values that a batch would not reproduce
    for name, buf in model.named_buffers():
        buf.copy_(torch.rand(buf.shape) + (1.0 if "var" in name else -0.5))
    before = {k: v.clone() for k, v in model.named_buffers()}
    assert before, "the model under test has BatchNorm buffers"
    model.train()
    loss = evaluate(model, data.val, device=torch.device("cpu"))
    for k, v in model.named_buffers():
        assert torch.equal(v, before[k]), f"evaluation changed {k}"
    assert model.training, "evaluation must restore the caller's mode"
    # the reference: the same forward in eval mode (running statistics), by hand
    model.eval()
    with torch.no_grad():
        logits, _ = model(data.val.X)
    assert loss == pytest.approx(F.cross_entropy(logits, data.val.Y).item(), rel=1e-6)
    # ... which differs from a batch-statistics forward: the check above has teeth
    model.train()
    with torch.no_grad():
        logits, _ = model(data.val.X)
    assert abs(F.cross_entropy(logits, data.val.Y).item() - loss) > 1e-3


def test_evaluation_is_deterministic_with_dropout(text_file):
    cfg = P.load_preset("shakespeare-transformer-cpu-gpt2")
    cfg.data.dataset, cfg.data.format = str(text_file), "text"
    C.apply_overrides(cfg, ["model.block_size=8", "model.n_embd=16", "model.n_head=2",
                            "model.n_layer=1", "model.dropout=0.5"])
    data = prepare_data(cfg)
    cfg.model.vocab_size = data.tokenizer.vocab_size
    torch.manual_seed(0)
    model = build_model(cfg.model)
    model.train()
    cpu = torch.device("cpu")
    losses = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # dropout masks would come from this generator
        losses.append(evaluate(model, data.val, device=cpu, batch_size=8, iters=3, seed=5))
    assert losses[0] == losses[1]
    assert model.training
    # the reference: the same batches without dropout
    g = torch.Generator().manual_seed(5)
    model.eval()
    with torch.no_grad():
        ref = [model(*data.val.batch(8, g))[1].item() for _ in range(3)]
        # with dropout active the same batches give another loss: dropout is real here
        model.train()
        g = torch.Generator().manual_seed(5)
        noisy = [model(*data.val.batch(8, g))[1].item() for _ in range(3)]
    assert losses[0] == pytest.approx(sum(ref) / 3, rel=1e-6)
    assert abs(sum(noisy) / 3 - losses[0]) > 1e-4


# --------------------------------------------------------------------------- metrics once


def test_a_resumed_run_logs_each_step_once(tmp_path, names_file):
    whole = tmp_path / "whole"
    Trainer(tiny_mlp(names_file), whole, progress=False).fit()

    crashed = tmp_path / "crashed"

    def crash_at_17(step, state, model):  # steps 11..17 are logged past the checkpoint at 10
        if step == 17:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated"):
        Trainer(tiny_mlp(names_file), crashed, progress=False, callback=crash_at_17).fit()
    assert max(r["step"] for r in records(crashed)) == 17 and saved_step(crashed) == 10
    Trainer(tiny_mlp(names_file), crashed, progress=False, resume=True).fit()

    recs = records(crashed)
    assert [r["step"] for r in recs if "loss" in r] == list(range(1, 31))
    assert [r["step"] for r in recs if "val_loss" in r] == [10, 20, 30]
    assert without_timings(recs) == without_timings(records(whole))


# --------------------------------------------------------------------------- signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_after_the_step_with_a_checkpoint(tmp_path, names_file, sig, capsys):
    def signal_at_13(step, state, model):
        if step == 13:
            os.kill(os.getpid(), sig)

    out = tmp_path / "run"
    # the caller's handlers: Python's own, or SIG_IGN for SIGINT in a background job
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    r = Trainer(tiny_mlp(names_file), out, progress=False, callback=signal_at_13).fit()
    assert r == {"interrupted": True, "steps": 13}
    assert saved_step(out) == 13 and not (out / "result.json").exists()
    err = capsys.readouterr().err
    assert (f"\n{signal.Signals(sig).name}: stopping after this step and checkpointing (a second "
            "signal aborts)...\n") in err
    assert "interrupted at step 13/30; continue with --resume\n" in err
    # the handlers are the caller's again
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    # and the run resumes to its end
    assert Trainer(tiny_mlp(names_file), out, progress=False, resume=True).fit()["steps"] == 30


def test_a_second_signal_aborts_at_once(tmp_path, names_file):
    def two_signals_at_5(step, state, model):
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_mlp(names_file), out, progress=False, callback=two_signals_at_5).fit()
    assert not (out / "state.safetensors").exists()  # aborted before checkpointing step 5
    assert not (out / LOCK_FILE).exists()  # ... and the directory is free again


@pytest.mark.slow
def test_sigterm_to_a_training_process_then_resume_equals_an_uninterrupted_run(
        tmp_path, names_file):
    steps = 300  # the first checkpoint at step 50: the signal comes with 250 steps to go
    cfg = tmp_path / "term.toml"
    write_mlp_config(cfg, names_file, steps, log_interval=7, name="term-test")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    whole = tmp_path / "whole"  # the reference, uninterrupted: the same command in-process
    assert main(["train", str(cfg), "--out", str(whole), "--quiet"]) == 0

    stopped = tmp_path / "stopped"
    proc = subprocess.Popen(train_cmd(cfg, stopped), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    state = stopped / "state.safetensors"
    deadline = time.monotonic() + 120
    while not state.exists() and time.monotonic() < deadline:  # past the first checkpoint
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED == 75, err
    assert "SIGTERM" in err and "--resume" in err and "Traceback" not in err
    assert not (stopped / "result.json").exists(), "the run finished before the signal"
    assert 50 <= saved_step(stopped) < steps
    assert not (stopped / LOCK_FILE).exists()
    subprocess.run(train_cmd(cfg, stopped, "--resume"), check=True, env=env,
                   capture_output=True)

    assert without_timings(records(whole)) == without_timings(records(stopped))
    ra = json.loads((whole / "result.json").read_text())
    rb = json.loads((stopped / "result.json").read_text())
    for key in ("train_loss", "val_loss", "test_loss", "steps", "warnings"):
        assert ra[key] == rb[key], key
    assert (whole / "samples.txt").read_text() == (stopped / "samples.txt").read_text()


# --------------------------------------------------------------------------- file modes


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_run_files_follow_the_umask(tmp_path, names_file, umask, mode):
    old = os.umask(umask)
    try:
        out = tmp_path / "run"
        Trainer(tiny_mlp(names_file, max_steps=10), out, progress=False).fit()
    finally:
        os.umask(old)
    files = sorted(out.iterdir())
    assert {f.name for f in files} >= {"config.toml", "tokenizer.json", "model.safetensors",
                                        "state.safetensors", "metrics.jsonl", "result.json",
                                        "loss.png", "samples.txt"}
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == mode, f.name


# --------------------------------------------------------------------------- the lock


def test_a_held_directory_is_refused_until_released(tmp_path):
    a, b = RunDir(tmp_path / "run"), RunDir(tmp_path / "run")
    a.claim(force=False)
    lock = tmp_path / "run" / LOCK_FILE
    assert f"pid {os.getpid()}" in lock.read_text()
    for claim in (lambda: b.claim(force=False), lambda: b.claim(force=True),
                  lambda: b.claim(force=False, resume=True)):
        with pytest.raises(DlfError, match=f"in use by another dlf run \\(pid {os.getpid()}"):
            claim()
    a.release()
    assert not lock.exists()
    b.claim(force=False)
    b.release()


def test_a_dead_processs_lock_file_does_not_block(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text("pid 999999 on a-host-that-died\n")  # no flock behind it
    rd = RunDir(run)
    rd.claim(force=False)
    assert f"pid {os.getpid()}" in (run / LOCK_FILE).read_text()
    rd.release()


def test_a_lock_whose_file_was_replaced_is_taken_again(tmp_path, monkeypatch):
    """A holder that releases unlinks the lock file; a claimant that opened the old file
    just before must not keep a lock on the unlinked file."""
    run = tmp_path / "run"
    run.mkdir()
    rd = RunDir(run)
    real_flock, calls = __import__("fcntl").flock, []

    def flock_after_replacement(fd, op):
        if not calls:  # first try: the file is replaced between open and flock
            (run / LOCK_FILE).unlink()
            (run / LOCK_FILE).write_text("")
        calls.append(fd)
        return real_flock(fd, op)

    monkeypatch.setattr("dlf.engine.rundir.fcntl.flock", flock_after_replacement)
    rd.claim(force=False)
    assert len(calls) == 2
    assert os.fstat(rd._lock.fileno()).st_ino == os.stat(run / LOCK_FILE).st_ino
    rd.release()


def test_force_names_what_it_replaces(tmp_path, names_file, capsys):
    out = tmp_path / "run"
    argv = ["train", "names-bigram", "--data", str(names_file), "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert main(argv) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "--force" in x)
    for f in ("config.toml", "tokenizer.json", "model.safetensors", "result.json"):
        assert f in line


@pytest.mark.slow
def test_two_trainings_started_at_once_give_one_run_and_one_refusal(tmp_path, names_file):
    cfg = tmp_path / "race.toml"
    write_mlp_config(cfg, names_file, 200, log_interval=7, name="term-test")
    out = tmp_path / "shared"
    procs = [subprocess.Popen(train_cmd(cfg, out), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    _, _, refusal = next(r for r in results if r[0] == 2)
    assert refusal.startswith("dlf: error: ") and refusal.count("\n") == 1, refusal
    assert "in use by another dlf run" in refusal or "already holds a run" in refusal
    assert json.loads((out / "result.json").read_text())["steps"] == 200
    steps = [r["step"] for r in records(out) if "loss" in r]
    assert steps == sorted(set(steps))  # one writer: no step twice
    assert not (out / LOCK_FILE).exists()


# --------------------------------------------------------------------------- divergence


def test_a_non_finite_loss_stops_at_that_step_and_keeps_the_last_checkpoint(
        tmp_path, names_file):
    out = tmp_path / "run"

    def poison_after_16(step, state, model):  # step 17's forward gives NaN; 17 is not logged
        if step == 16:
            with torch.no_grad():
                model.parameters()[0].fill_(float("nan"))

    cfg = tiny_mlp(names_file, log_interval=10)
    with pytest.raises(DlfError, match=r"loss became nan at step 17; .*\(step 10\)"):
        Trainer(cfg, out, progress=False, callback=poison_after_16).fit()
    tensors, _ = load_tensors(out / "state.safetensors")
    assert int(tensors["step"]) == 10
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("model."))
    assert not (out / "result.json").exists() and not (out / LOCK_FILE).exists()
    assert max(r["step"] for r in records(out)) == 10  # nothing of step 17 was written


def test_a_non_finite_gradient_norm_stops_the_run(tmp_path, names_file):
    out = tmp_path / "run"
    backward_calls = []
    tr = Trainer(tiny_mlp(names_file, log_interval=10), out, progress=False)

    def inf_on_the_17th(grad):
        backward_calls.append(1)
        return grad * math.inf if len(backward_calls) == 17 else grad

    tr.model.parameters()[0].register_hook(inf_on_the_17th)
    with pytest.raises(DlfError, match="gradient norm became (inf|nan) at step 17"):
        tr.fit()
    assert saved_step(out) == 10


def test_a_non_finite_loss_is_one_line_and_status_2_from_the_cli(tmp_path, names_file, capsys):
    code = main(["train", "names-mlp", "--data", str(names_file), "--out", str(tmp_path / "r"),
                 "--quiet", "--max-steps", "20", "--set", "train.lr=1e30",
                 "--set", "train.log_interval=100", "--set", "train.eval_interval=100"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "at step" in err and "no checkpoint had been written" in err


def test_a_diverging_run_is_flagged_in_the_result(tmp_path, names_file, capsys):
    out = tmp_path / "run"
    cfg = tiny_mlp(names_file, lr=1e6, max_steps=20, grad_clip=0.0)
    result = Trainer(cfg, out, progress=False).fit()
    assert result["train_loss"] > DIVERGENCE_FACTOR * math.log(cfg.model.vocab_size or 27) / 2
    assert len(result["warnings"]) == 1 and "diverging" in result["warnings"][0]
    assert json.loads((out / "result.json").read_text())["warnings"] == result["warnings"]
    assert "diverging" in capsys.readouterr().err  # once, whether or not a bar is shown


def test_a_healthy_run_has_no_warnings(tmp_path, names_file):
    result = Trainer(tiny_mlp(names_file), tmp_path / "run", progress=False).fit()
    assert result["warnings"] == []
