"""The command line: help, presets, train/sample/eval, and one-line errors with status 2."""

import hashlib
import json
import subprocess
import sys

import pytest

from dlf.cli import main
from dlf.engine.tensor_io import load_tensors, save_tensors
from tolerances import fp32_tol

TINY = ["--set", "model.block_size=3", "--set", "model.n_embd=4", "--set", "model.n_hidden=16",
        "--set", "train.eval_interval=10", "--set", "train.batch_size=16",
        "--set", "train.schedule=constant", "--set", "train.num_samples=4", "--quiet"]


def run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


@pytest.fixture
def trained(tmp_path, names_file, capsys):
    out = tmp_path / "run"
    code, stdout, err = run(["train", "names-mlp", "--data", str(names_file), "--out", str(out),
                             "--max-steps", "20", *TINY], capsys)
    assert code == 0, err
    assert "val" in stdout
    return out


@pytest.mark.parametrize("cmd", [[], ["train"], ["sample"], ["eval"]])
def test_help(cmd, capsys):
    code, out, _ = run([*cmd, "--help"], capsys)
    assert code == 0
    assert "usage: dlf" in out and len(out.splitlines()) > 8


def test_presets_prints_one_row_per_preset_with_its_size_and_measured_figures(capsys):
    from dlf import presets
    from dlf.engine.plan import plan_run
    from dlf.models import build_model

    code, out, _ = run(["presets"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["preset", "model", "params", "data", "steps", "val", "train",
                                "time"]
    rows = {line.split()[0]: line for line in lines[1:len(presets.preset_names()) + 1]}
    assert sorted(rows) == presets.preset_names()
    measured = presets.measured()["runs"]
    for name in ("names-mlp", "shakespeare-transformer-cpu", "shakespeare-transformer-cpu-bpe"):
        plan, _ = plan_run(presets.load_preset(name))  # the real model, vocabulary and all
        params = build_model(plan.cfg.model).num_parameters()
        assert f" {params:,} " in rows[name]
        if name in measured:
            assert f" {measured[name]['val_loss']:.3f} " in rows[name]
    assert "shakespeare-transformer-cpu-1h" in lines[-1]  # the old names, still accepted


def test_old_preset_names_load_what_they_became_and_say_so(capsys):
    from dlf import config as C
    from dlf import presets

    cfg = presets.load_preset("shakespeare-transformer-cpu-1h")
    err = capsys.readouterr().err
    assert err == "dlf: preset shakespeare-transformer-cpu-1h is now shakespeare-transformer-6x256\n"
    assert cfg == presets.load_preset("shakespeare-transformer-6x256")
    short = presets.load_preset("shakespeare-transformer-cpu-15min")  # the 1900-step schedule
    assert "--set train.max_steps=1900" in capsys.readouterr().err
    want = presets.load_preset("shakespeare-transformer-6x256")
    C.apply_overrides(want, ["train.max_steps=1900", "train.warmup_steps=100",
                             "train.eval_interval=475"])
    assert (short.model, short.data, short.train) == (want.model, want.data, want.train)
    assert short.name == "shakespeare-transformer-6x256-1900-steps"  # a run directory of its own
    code, _, err = run(["train", "shakespeare-transformer-cpu-5min", "--set", "lr=-1"], capsys)
    assert code == 2 and err.startswith("dlf: preset shakespeare-transformer-cpu-5min is now "
                                        "shakespeare-transformer-4x192\n")


def test_sample_is_reproducible(trained, capsys):
    a = run(["sample", str(trained), "-n", "8", "--seed", "3"], capsys)
    b = run(["sample", str(trained), "-n", "8", "--seed", "3"], capsys)
    c = run(["sample", str(trained), "-n", "8", "--seed", "4"], capsys)
    assert a[0] == 0 and a[1] == b[1] and a[1] != c[1]
    assert len(a[1].splitlines()) == 8
    code, out, _ = run(["sample", str(trained), "-n", "3", "--prompt", "ka", "--top-k", "3",
                        "--temperature", "0.5", "--max-new-tokens", "4"], capsys)
    assert code == 0
    assert all(s.startswith("ka") and len(s) <= 6 for s in out.splitlines())


def test_eval_json(trained, names_file, capsys):
    code, out, _ = run(["eval", str(trained), "--split", "test", "--json"], capsys)
    assert code == 0
    d = json.loads(out)
    assert d["split"] == "test"
    result = json.loads((trained / "result.json").read_text())
    # both are fp32 means of -log p > 0 over the test split (fewer examples than characters)
    n_examples = len(names_file.read_text())
    assert d["loss"] == pytest.approx(result["test_loss"], rel=fp32_tol(n_examples))


def error_case(argv, capsys, match):
    code, out, err = run(argv, capsys)
    assert code == 2, (out, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 or lines[-1].startswith("dlf: error") or "usage:" in err, err
    assert match in err, err
    return err


def test_bad_data_files(tmp_path, capsys):
    cases = {
        "missing.txt": (None, "no such file"),
        "empty.txt": (b"", "empty"),
        "binary.txt": (b"abc\x00\x01\x02" * 10, "binary"),
        "latin1.txt": ("café\n".encode("latin-1") * 20, "UTF-8"),
        "one.txt": (b"emma\n", "1 line"),
    }
    for name, (content, match) in cases.items():
        p = tmp_path / name
        if content is not None:
            p.write_bytes(content)
        error_case(["train", "names-mlp", "--data", str(p), "--out", str(tmp_path / "o"),
                    "--quiet"], capsys, match)
    assert not (tmp_path / "o").exists()


def test_block_size_longer_than_text(tmp_path, capsys):
    p = tmp_path / "short.txt"
    p.write_text("hello world, a short text\n" * 3)
    cfg = tmp_path / "t.toml"
    cfg.write_text(f'[data]\ndataset = "{p}"\nformat = "text"\n[model]\ntype = "transformer"\n'
                   'block_size = 64\n')
    pytest.importorskip("dlf.models.transformer")
    error_case(["train", str(cfg), "--out", str(tmp_path / "o")], capsys, "longer than")


def test_unknown_preset_and_keys(tmp_path, capsys, names_file):
    error_case(["train", "no-such-preset"], capsys, "unknown preset")
    error_case(["train", "names-mlp", "--set", "model.widht=3"], capsys, "valid keys")
    error_case(["train", "names-mlp", "--set", "train.lr=fast"], capsys, "must be a number")
    error_case(["train", "names-mlp", "--data", str(names_file), "--set", "train.lr=-1"],
               capsys, "lr")


def test_bad_run_directories(trained, tmp_path, capsys, names_file):
    before = snapshot(trained)
    # training into an existing run without --resume
    error_case(["train", "names-mlp", "--data", str(names_file), "--out", str(trained),
                *TINY], capsys, "already holds a run")
    # resume with another model type
    error_case(["train", "names-wavenet", "--data", str(names_file), "--out", str(trained),
                "--resume"], capsys, "holds a mlp run")
    assert snapshot(trained) == before
    error_case(["sample", str(tmp_path / "nowhere")], capsys, "not found")
    error_case(["sample", str(trained), "--prompt", "k@"], capsys, "'@'")
    error_case(["sample", str(trained), "--temperature", "-1"], capsys, "temperature")

    # corrupt, truncated, and another model type's weights
    model = trained / "model.safetensors"
    good = model.read_bytes()
    model.write_bytes(good[: len(good) // 3])
    error_case(["sample", str(trained)], capsys, "corrupt or truncated")
    model.write_bytes(b"not a checkpoint at all")
    error_case(["eval", str(trained)], capsys, "corrupt or truncated")
    model.write_bytes(good)
    tensors, _ = load_tensors(model)  # the same weights, labelled as another model's
    save_tensors(model, tensors, {"model_type": "wavenet"})
    error_case(["sample", str(trained)], capsys, "holds a wavenet model")


def test_python_dash_m_and_traceback_free_exit():
    r = subprocess.run([sys.executable, "-m", "dlf", "train", "no-such-preset"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 2
    assert r.stderr.startswith("dlf: error: unknown preset") and "Traceback" not in r.stderr


def test_a_run_shorter_than_its_warmup_is_adapted_with_a_note(tmp_path, text_file, capsys):
    """--max-steps below the preset's warm-up (50 steps) shortens the warm-up to a tenth
    of the run, says so in one line, and records it in config.toml."""
    out = tmp_path / "run"
    tiny = ["data.format=text", "model.block_size=8", "model.n_embd=8", "model.n_head=2",
            "model.n_layer=1", "train.eval_iters=1", "train.batch_size=4", "train.micro_batch=0",
            "train.num_samples=0", "train.dtype=fp32"]
    code, _, err = run(["train", "shakespeare-transformer-cpu-gpt2", "--data", str(text_file),
                        "--out", str(out), "--max-steps", "20", "--quiet",
                        *[a for kv in tiny for a in ("--set", kv)]], capsys)
    assert code == 0, err
    note = "dlf: train.warmup_steps 50 -> 2: the run is 20 steps, shorter than its warm-up"
    assert err.splitlines() == [note]
    assert "warmup_steps = 2\n" in (out / "config.toml").read_text()
