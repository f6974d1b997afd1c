import os
import random
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning. The suite runs a pytest-xdist worker per
# core, and dlf processes the tests start run beside them: a thread spinning after its
# parallel loop takes the core the other worker needs (with DLF_TEST_THREADS=2, spinning
# made the suite a third slower). Set before torch loads OpenMP, for this process and
# every process the tests start.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_names(n: int = 300, seed: int = 0) -> list[str]:
    """Pronounceable fake names: enough structure for a model to learn something."""
    rng = random.Random(seed)
    cons, vows = "bcdfghjklmnprstvz", "aeiouy"
    out = []
    for _ in range(n):
        syl = rng.randint(1, 3)
        out.append("".join(rng.choice(cons) + rng.choice(vows) for _ in range(syl)))
    return out


@pytest.fixture
def names_file(tmp_path) -> Path:
    p = tmp_path / "names.txt"
    p.write_text("\n".join(make_names()) + "\n", encoding="utf-8")
    return p


@pytest.fixture(scope="session")
def bigram_run(tmp_path_factory) -> Path:
    """A count-bigram run on make_names(), trained once per test process (`dlf train
    names-bigram`), for tests that only read a run: they must not write into it."""
    from dlf.cli import main

    tmp = tmp_path_factory.mktemp("bigram")
    (tmp / "names.txt").write_text("\n".join(make_names()) + "\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:  # as _isolated_env, which starts later
        mp.setenv("DLF_CACHE_DIR", str(tmp / "cache"))
        assert main(["train", "names-bigram", "--data", str(tmp / "names.txt"), "--out",
                     str(tmp / "run"), "--quiet"]) == 0
    return tmp / "run"


@pytest.fixture
def text_file(tmp_path) -> Path:
    rng = random.Random(1)
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis"]
    text = "\n".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(300))
    p = tmp_path / "text.txt"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.fixture
def two_threads():
    """torch on 2 threads for one test (the suite runs on DLF_TEST_THREADS, default 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """Never touch the user's cache or the network from tests."""
    monkeypatch.setenv("DLF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # transformers (test_gpt2) never downloads


def pytest_configure(config):
    # Tiny models run fastest, and deterministically, on one thread; several threads
    # fight over 2 cores when anything else is running. DLF_TEST_THREADS=2 runs the suite
    # on two threads: another split of every parallel reduction, which stands in for another
    # CPU's kernels (the tolerances in tolerances.py must hold for both).
    import torch

    raw = os.environ.get("DLF_TEST_THREADS", "1")
    if not raw.isdigit() or int(raw) < 1:
        raise pytest.UsageError(f"DLF_TEST_THREADS must be a positive integer, got {raw!r}")
    torch.set_num_threads(int(raw))
    os.environ.setdefault("OMP_NUM_THREADS", raw)  # the processes the tests start, too


def pytest_collection_modifyitems(config, items):
    """The slow tests first, each group in its usual order: pytest-xdist's workers then
    share out the quick ones at the end, instead of one worker finishing a long test alone
    while the other waits."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_report_header(config):
    import torch

    return f"torch {torch.__version__}, {torch.get_num_threads()} thread(s) (DLF_TEST_THREADS)"
