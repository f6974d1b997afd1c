"""The docs stay true: every relative link resolves, every `dlf` command shown parses with
the CLI as it is, and the README's results table is the one docs/results.md was made with."""

import importlib.util
import json
import re
import shlex
from pathlib import Path

import pytest

from dlf.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "notebooks" / "README.md",
         *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _publish():
    path = ROOT / "tools" / "publish_results.py"
    spec = importlib.util.spec_from_file_location("publish_results", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _prose(text: str) -> str:
    return FENCE.sub("", text)  # links inside code blocks are code, not links


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # a web address, or an anchor on the same page
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.name}: {target}"


def commands(text: str) -> list[list[str]]:
    """The dlf command lines of a page's code blocks: `dlf ...`, `$ dlf ...`,
    `VAR=x dlf ...` and `torchrun ... -m dlf ...`, up to a comment or a pipe."""
    found = []
    for block in FENCE.findall(text):
        for line in block.splitlines():
            line = line.split("  #")[0].split(" | ")[0].strip().removeprefix("$ ")
            try:
                words = shlex.split(line)
            except ValueError:
                continue
            while words and "=" in words[0] and not words[0].startswith("-"):
                words = words[1:]  # environment assignments
            if words[:1] == ["dlf"]:
                found.append(words[1:])
            elif "-m" in words and words[words.index("-m") + 1:][:1] == ["dlf"]:
                found.append(words[words.index("-m") + 2:])
    return found


def test_the_command_finder_sees_every_form():
    page = "```sh\ndlf train x  # a\n$ dlf sample runs/x | head\nDLF_QUICK=1 dlf report\n" \
           "torchrun --standalone -m dlf train y --resume auto\nmake test\n```\n"
    assert commands(page) == [["train", "x"], ["sample", "runs/x"], ["report"],
                              ["train", "y", "--resume", "auto"]]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_dlf_command_shown_parses(page):
    parser = build_parser()
    for argv in commands(page.read_text(encoding="utf-8")):
        try:
            parser.parse_args(argv)
        except SystemExit as e:
            if e.code != 0:  # --help and --version exit 0
                raise AssertionError(f"{page.name}: dlf {' '.join(argv)}") from None


def test_the_readme_results_table_is_the_published_one():
    pub = _publish()
    measured = json.loads((ROOT / "src" / "dlf" / "presets" / "measured.json").read_text())
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split(pub.BEGIN)[1].split(pub.END)[0].strip()
    assert block == pub.readme_table(measured)
    results = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    assert measured["machine"] in results and not measured["quick"]
    for preset, r in measured["runs"].items():  # the same figures as the report's table
        assert f"(`{preset}`)" in results and f"| {r['val_loss']:.4f} |" in results, preset
