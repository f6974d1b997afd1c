"""Property-based input tests (hypothesis): whatever a user passes, `dlf` either runs or
exits 2 with one line on stderr; never a traceback.

Few examples, tiny runs, derandomized and without an example database, so the suite stays
fast and every run tries the same inputs."""

import contextlib
import dataclasses
import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_names
from dlf import config as C
from dlf import presets as P
from dlf.cli import main

SETTINGS = settings(max_examples=25, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def run_cli(argv) -> tuple[int, str]:
    """main(argv) with stdout and stderr captured; an exception other than SystemExit
    (argparse's own errors) fails the test with its traceback."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: usage + one error line, status 2
            code = e.code
    return code, err.getvalue()


def assert_ran_or_one_line(code: int, err: str, argv) -> None:
    assert "Traceback" not in err, (argv, err)
    assert code in (0, 2), (argv, code, err)
    if code == 2 and not err.startswith("usage:"):
        assert err.startswith("dlf: error: ") and err.count("\n") == 1, (argv, err)


# Unicode a data file or prompt might hold, weighted towards the awkward: NUL and other
# controls, combining marks (Mn), lone surrogates (Cs), private use, line and paragraph
# separators, and plain letters so that some inputs are valid.
AWKWARD = st.characters(categories=["Cc", "Mn", "Cs", "Co", "Zl", "Zp", "Ll", "Lu", "Zs"])
TEXT = st.text(AWKWARD, max_size=200)


def encode(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogatepass")  # lone surrogates: invalid UTF-8


@pytest.mark.parametrize("fmt", ["lines", "text"])
@SETTINGS
@given(data=st.one_of(st.binary(max_size=300), TEXT.map(encode)))
def test_any_bytes_as_a_data_file(fmt, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.txt"
        path.write_bytes(data)
        argv = ["train", "names-bigram", "--data", str(path), "--out", f"{tmp}/run", "--quiet",
                "--set", f"data.format={fmt}", "--set", "train.num_samples=2"]
        assert_ran_or_one_line(*run_cli(argv), argv)


@SETTINGS
@given(prompt=TEXT)
def test_any_unicode_as_a_prompt(bigram_run, prompt):  # bigram_run: conftest's
    argv = ["sample", str(bigram_run), "-n", "2", "--max-new-tokens", "3", "--prompt", prompt]
    assert_ran_or_one_line(*run_cli(argv), argv)


# ----------------------------------------------------------------- --set for every config key


def keys_of(preset: str) -> list[str]:
    cfg = P.load_preset(preset)
    return [f"{section}.{f.name}" for section in ("data", "model", "train")
            for f in dataclasses.fields(getattr(cfg, section))]


# Every key of every model type (a preset per type with line data).
PRESETS = ["names-bigram", "names-bigram-neural", "names-mlp", "names-mlp-manual",
           "names-wavenet", "names-transformer"]
KEYS = sorted({(p, k) for p in PRESETS for k in keys_of(p)})

# What a value on the command line can look like. Integers stay small: a model of any size
# the type allows is "valid", and a test must not allocate gigabytes to prove it.
VALUE = st.one_of(
    st.integers(-3, 40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "true", "false", "nan", "-inf", "1e400", "0x10", "1_0", "[]",
                     "[1, 2]", "[-1]", "[a]", "adamw", "cosine", "text", "lines", "bf16",
                     "cuda:x", "names", "a=b", "\x00", "é\u0301", "\ud800"]),
    st.text(AWKWARD, max_size=8),
)
# A tiny run around the value under test (which comes last, so it wins).
TINY = ["train.max_steps=2", "train.batch_size=8", "train.eval_interval=1", "train.eval_iters=2",
        "train.num_samples=1", "train.sample_tokens=5", "train.threads=1"]
TINY_MODEL = {"names-mlp": ["model.n_hidden=8", "model.n_embd=2"],
              "names-mlp-manual": ["model.n_hidden=8", "model.n_embd=2"],
              "names-wavenet": ["model.n_hidden=8", "model.n_embd=2"],
              "names-transformer": ["model.n_embd=8", "model.n_head=2", "model.n_layer=1",
                                    "train.warmup_steps=0"]}


@pytest.fixture(scope="module")
def names_data(tmp_path_factory):
    p = tmp_path_factory.mktemp("names") / "names.txt"
    p.write_text("\n".join(make_names(60)) + "\n", encoding="utf-8")
    return p


@settings(SETTINGS, max_examples=40)
@given(key=st.sampled_from(KEYS), value=VALUE)
def test_any_set_value_for_any_key_runs_or_is_refused(names_data, key, value):
    preset, name = key
    base = [s for s in TINY if s.split("=")[0] != name]
    base = [*base, *TINY_MODEL.get(preset, [])]
    if P.load_preset(preset).model.type == "count-bigram":
        base = ["train.num_samples=1", "train.threads=1"]
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["train", preset, "--data", str(names_data), "--out", f"{tmp}/run", "--quiet"]
        for item in [*base, f"{name}={value}"]:
            argv += ["--set", item]
        code, err = run_cli(argv)
        assert_ran_or_one_line(code, err, argv)
        if code == 0:  # accepted: the resolved config is valid and says what was asked
            saved = P.load_toml(Path(tmp) / "run" / "config.toml")
            C.validate(saved)
