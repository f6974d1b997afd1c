import random
from pathlib import Path

import pytest

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


@pytest.fixture
def text_file(tmp_path) -> Path:
    rng = random.Random(1)
    words = ["to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis"]
    text = "\n".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(300))
    p = tmp_path / "text.txt"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """Never touch the user's cache or the network from tests."""
    monkeypatch.setenv("DLF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")


def pytest_configure(config):
    # Tiny models run fastest, and deterministically, on one thread; several threads
    # fight over 2 cores when anything else is running.
    import torch

    torch.set_num_threads(1)
