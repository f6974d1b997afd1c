"""Opening a run (dlf.engine.session): every refusal comes before anything in --out is
created, changed or deleted; --force removes dlf's files only; a directory of other files
is not a run; one function opens every run; the checkpoint's parts stay small; the
TensorBoard sink writes what metrics.jsonl holds."""

import ast
import inspect
import shutil
from pathlib import Path

import pytest

import runs
from dlf.cli import main
from dlf.engine import checkpoint
from dlf.engine.rundir import RunDir
from dlf.engine.tensor_io import load_tensors, save_tensors
from dlf.engine.trainer import Trainer, train
from dlf.errors import DlfError
from test_faults import cli

SRC = Path(__file__).resolve().parents[1] / "src" / "dlf"


def snapshot(run: Path) -> dict[str, bytes]:
    """Every entry of a directory (hidden ones too) and its bytes."""
    return {str(p.relative_to(run)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(run.rglob("*"))}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A finished tiny run (with its diagnostics-free files), its names data and config."""
    from conftest import make_names

    tmp = tmp_path_factory.mktemp("finished")
    names = tmp / "names.txt"
    names.write_text("\n".join(make_names()) + "\n", encoding="utf-8")
    cfg = runs.write_mlp_config(tmp / "tiny.toml", names, steps=4)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DLF_CACHE_DIR", str(tmp / "cache"))
        assert main(["train", str(cfg), "--out", str(tmp / "run"), "--quiet"]) == 0
    return tmp / "run", names, cfg


def refusals(tmp: Path, names: Path, cfg: Path, text: Path) -> list[tuple[list, str]]:
    """(argv after `dlf train`, what the line says): every kind of refusal `dlf train` makes,
    each given --force (and --out) by the test."""
    bad_utf8 = tmp / "latin1.txt"
    bad_utf8.write_bytes("caf\xe9\n".encode("latin-1") * 20)
    empty = tmp / "empty.txt"
    empty.write_text("")
    config = [cfg]
    transformer = ["shakespeare-transformer-cpu-gpt2", "--data", text, "--set", "data.format=text"]
    return [
        # the config's values (dlf.rules) and keys
        ([*config, "--set", "train.lr=nan"], "train.lr must be a finite number"),
        ([*config, "--set", "train.batch_size=-1"], "train.batch_size must be >= 0"),
        ([*config, "--set", "train.optimizer=adam"], "must be sgd, adamw or muon"),
        ([*config, "--set", "train.dtype=fp16"], "train.dtype must be fp32 or bf16"),
        ([*config, "--set", "data.layout=rows"], "data.layout must be windows or sequences"),
        ([*config, "--set", "model.n_hidden=0"], "model.n_hidden must be >= 1"),
        ([*config, "--set", "train.nope=1"], "unknown config key"),
        ([*config, "--set", "train.max_steps=1.5"], "must be an integer"),
        ([*config, "--device", "gpu"], "train.device must be"),
        ([*transformer, "--set", "model.n_head=5"], "not divisible by n_head"),
        # the regime and the optimizer
        (["names-bigram", "--data", names, "--set", "train.lr=0.5"], "has no effect"),
        ([*config, "--set", "train.muon_lr=0.1"], "has no effect"),
        ([*config, "--set", "train.optimizer=muon"], "does not name its output layer"),
        # the tokenizer and the data
        ([*config, "--set", "data.vocab_size=300"], "is for data.tokenizer = bpe"),
        ([*config, "--set", "data.tokenizer=bpe", "--set", "data.vocab_size=300"],
         "is for text data"),
        ([*config, "--data", tmp / "missing.txt"], "missing.txt"),
        ([*config, "--data", empty], "empty"),
        ([*config, "--data", bad_utf8], "UTF-8"),
        ([*config, "--data", text, "--set", "data.format=text"], "for a text stream"),
        ([*transformer, "--set", "model.block_size=100000"], "longer than the train split"),
        (["no-such-preset"], "no-such-preset"),
        # memory known before anything runs
        ([*config, "--set", f"train.batch_size={2**45}"], "lower train.batch_size"),
        ([*config, "--set", "model.n_hidden=10000000000"], "out of memory building"),
        # the world: several processes
        ([*config, "--nproc", "0"], "--nproc must be >= 1"),
        ([*config, "--nproc", "3"], "divisible"),
        ([*config, "--nproc", "2", "--max-restarts", "1"], "--resume auto"),
        (["names-mlp-manual", "--data", names, "--nproc", "2"], "hand-written backward"),
        # what --diagnostics needs
        (["names-transformer", "--data", names, "--diagnostics"], "tanh layers"),
        ([*config, "--diagnostics", "--nproc", "2"], "one process"),
        # resuming
        ([*config, "--resume"], "give one"),
    ]


def test_every_refusal_leaves_a_finished_run_as_it_was(finished, tmp_path, text_file, capsys,
                                                       monkeypatch):
    """dlf train --force against a finished run: each refusal exits 2 with one line, and
    every file of the run is byte for byte what it was (no lock or temporary left)."""
    from dlf.engine import launch

    monkeypatch.setattr(launch.subprocess, "Popen", lambda *a, **k: pytest.fail("launched"))
    run, names, cfg = finished
    before = snapshot(run)
    cases = refusals(tmp_path, names, cfg, text_file)
    for argv, says in cases:
        code, err = cli(["train", *argv, "--out", run, "--force", "--quiet"], capsys)
        assert code == 2 and err.count("\n") == 1, (argv, err)
        assert err.startswith("dlf: error: ") and says in err, (argv, err)
        assert snapshot(run) == before, argv


def test_a_run_held_by_another_process_is_refused_unchanged(finished, tmp_path, capsys):
    run, _, cfg = finished
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = snapshot(copy)
    other = RunDir(copy)
    other.lock()  # another dlf run holds it (flock: per open file, so this process too)
    try:
        code, err = cli(["train", cfg, "--out", copy, "--force", "--quiet"], capsys)
        assert code == 2 and "in use by another dlf run" in err, err
    finally:
        other.release()
    assert snapshot(copy) == before


def test_the_tensorboard_setting_without_its_package_is_refused(finished, capsys, monkeypatch):
    from dlf.engine import tensorboard

    run, _, cfg = finished
    before = snapshot(run)
    monkeypatch.setattr(tensorboard.importlib.util, "find_spec", lambda name: None)
    code, err = cli(["train", cfg, "--tensorboard", "--out", run, "--force", "--quiet"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "pip install 'dlf[tensorboard]'" in err
    assert snapshot(run) == before


# --------------------------------------------------------------------------- other files


def test_a_directory_of_other_files_is_not_trained_into(tmp_path, names_file, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "data").mkdir()
    before = snapshot(out)
    cfg = runs.write_mlp_config(tmp_path / "tiny.toml", names_file, steps=2)
    for extra in ([], ["--force"], ["--resume", "auto"]):
        code, err = cli(["train", cfg, "--out", out, "--quiet", *extra], capsys)
        assert code == 2 and err.count("\n") == 1, (extra, err)
        assert "holds files that are not a dlf run (data, ...)" in err, err
        assert snapshot(out) == before


def test_force_replaces_dlfs_files_and_keeps_the_users(tmp_path, names_file, capsys):
    cfg = runs.write_mlp_config(tmp_path / "tiny.toml", names_file, steps=2)
    out = tmp_path / "run"
    assert cli(["train", cfg, "--out", out, "--quiet"], capsys)[0] == 0
    (out / "notes.txt").write_text("mine")
    (out / "attention.png").write_bytes(b"an old figure")  # dlf's, from dlf attention
    (out / ".model.safetensors.abc.tmp").write_bytes(b"left by a killed write")
    code, err = cli(["train", cfg, "--out", out, "--quiet", "--force"], capsys)
    assert code == 0, err
    assert "replacing the run in" in err and "attention.png" in err
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "attention.png").exists()
    assert not (out / ".model.safetensors.abc.tmp").exists()
    assert (out / "result.json").exists()


def test_diagnostics_with_force_on_a_transformer_keeps_the_old_run(tmp_path, names_file,
                                                                  capsys):
    """The refusal of --diagnostics for a model without tanh layers comes before --force
    removes anything."""
    out = tmp_path / "run"
    argv = ["train", "names-transformer", "--data", names_file, "--out", out, "--quiet",
            "--max-steps", "2", "--set", "train.eval_interval=2", "--set", "model.n_layer=1",
            "--set", "model.n_embd=16", "--set", "model.n_head=2"]
    assert cli(argv, capsys)[0] == 0
    before = snapshot(out)
    code, err = cli([*argv, "--diagnostics", "--force"], capsys)
    assert code == 2 and err == ("dlf: error: diagnostics need a model with tanh layers; a "
                                 "transformer model has none\n")
    assert snapshot(out) == before


# --------------------------------------------------------------------------- checkpoints


def test_a_checkpoint_of_another_model_type_is_refused(tmp_path, names_file):
    """state.safetensors names its model type; resuming checks it against config.toml
    before anything is loaded or written."""
    out = tmp_path / "run"
    cfg = runs.tiny_mlp(names_file, max_steps=4, eval_interval=4, checkpoint_interval=2)
    Trainer(cfg, out, progress=False, callback=lambda step, state, model: step == 2).fit()
    tensors, meta = load_tensors(out / "state.safetensors")
    save_tensors(out / "state.safetensors", tensors, {**meta, "model_type": "wavenet"})
    before = snapshot(out)
    with pytest.raises(DlfError, match=r"state.safetensors holds a wavenet model, not mlp"):
        train(cfg, out, resume=True, progress=False)
    assert snapshot(out) == before


def test_a_checkpoint_without_a_needed_entry_is_refused(tmp_path, names_file):
    out = tmp_path / "run"
    cfg = runs.tiny_mlp(names_file, max_steps=4, eval_interval=4, checkpoint_interval=2)
    Trainer(cfg, out, progress=False, callback=lambda step, state, model: step == 2).fit()
    tensors, meta = load_tensors(out / "state.safetensors")
    del tensors["rng.data"]
    save_tensors(out / "state.safetensors", tensors, meta)
    with pytest.raises(DlfError, match=r"state.safetensors is incomplete \(missing 'rng.data'\)"):
        train(cfg, out, resume=True, progress=False)


def test_a_checkpoint_holds_the_training_state(tmp_path, names_file):
    """read_checkpoint gives back the TrainState the run saved at its stop."""
    out = tmp_path / "run"
    cfg = runs.tiny_mlp(names_file, max_steps=6, eval_interval=2, checkpoint_interval=10)
    states = {}

    def keep(step, state, model):
        states[step] = (state.step, state.best_val, state.initial_loss, state.train_seconds)
        return step == 4

    Trainer(cfg, out, progress=False, callback=keep).fit()
    saved = checkpoint.read_checkpoint(out, "mlp").state
    assert (saved.step, saved.best_val, saved.initial_loss) == states[4][:3]
    assert saved.saved_step == 4 and saved.train_seconds >= states[4][3]
    assert saved.wall_seconds >= saved.train_seconds


def test_checkpoint_parts_take_at_most_five_parameters():
    for fn in (checkpoint.Checkpointer.__init__, checkpoint.restore):
        params = [p for p in inspect.signature(fn).parameters if p != "self"]
        assert len(params) <= 5, (fn.__qualname__, params)


# --------------------------------------------------------------------------- one opener


def test_one_function_opens_a_run():
    """Among the modules that train, fit, launch, diagnose or experiment, only the session
    plans a run (bench and report plan without opening one)."""
    openers = ("engine/trainer.py", "engine/launch.py", "diagnostics.py", "experiments.py",
               "hub.py", "engine/session.py", "api.py", "cli.py")
    callers = set()
    for name in openers:
        tree = ast.parse((SRC / name).read_text())
        if any(isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None))
               == "plan_run" for n in ast.walk(tree)):
            callers.add(name)
    assert callers == {"engine/session.py"}, callers


# --------------------------------------------------------------------------- TensorBoard


def test_tensorboard_scalars_equal_metrics_jsonl(tmp_path, names_file):
    """Every number of every record, step by step, as TensorBoard's own reader reads the
    event file; a resumed run drops what was logged past its checkpoint, as metrics.jsonl
    does, so the two still agree."""
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    out = tmp_path / "run"
    cfg = runs.tiny_mlp(names_file, max_steps=12, eval_interval=4, checkpoint_interval=4,
                        log_interval=1, tensorboard=True)

    def crash(step, state, model):
        if step == 7:  # logged 5..7 past the checkpoint at 4... then killed
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        Trainer(cfg, out, progress=False, callback=crash).fit()
    train(cfg, out, resume=True, progress=False)
    records = runs.records(out)
    want: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        for key, value in r.items():
            if key != "step":
                want.setdefault(key, []).append((r["step"], value))
    acc = ea.EventAccumulator(str(out / "tensorboard"), size_guidance={ea.SCALARS: 0})
    acc.Reload()
    got = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    assert got.keys() == want.keys() == {"loss", "lr", "tokens_per_second", "train_seconds",
                                         "train_loss", "val_loss"}
    for key, points in want.items():  # event files store float32
        assert [s for s, _ in got[key]] == [s for s, _ in points], key
        assert [v for _, v in got[key]] == pytest.approx([v for _, v in points], rel=1e-6), key


def test_tensorboard_is_written_by_the_writing_rank_only():
    """The sink is one line, built where the writing rank's sinks are."""
    source = (SRC / "engine" / "trainer.py").read_text()
    block = source[source.index("if run is not None:  # the metrics sinks"):]
    block = block[: block.index("progress = Progress")]
    assert "TensorBoardSink(" in block and block.count("\n") <= 6, block


def test_the_tensorboard_extra_is_declared_and_tested():
    text = (SRC.parents[1] / "pyproject.toml").read_text()
    assert 'tensorboard = ["tensorboard' in text and "dlf[notebooks,bench,tensorboard]" in text
