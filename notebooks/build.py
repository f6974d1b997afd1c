"""Build the lesson notebooks from their sources, and optionally execute them.

The source of each notebook is `lessons/NN-name.py` in the "percent" format (cells start
with `# %%`, markdown cells with `# %% [markdown]` and `# `-prefixed lines), so the
lessons diff and review as code. This script writes `NN-name.ipynb` beside this file;
with --execute it then runs each one in place through nbclient (the budget comes from
DLF_QUICK: unset or 0 is the lesson's budget, which the committed notebooks must use).

    python notebooks/build.py              # write the .ipynb files (no outputs)
    python notebooks/build.py --execute    # write and execute them (make notebooks)
    python notebooks/build.py --execute 04-transformer   # only this one
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
LESSONS = HERE / "lessons"
TIMEOUT = 900  # seconds per cell; the default budgets stay far below it
KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}


def parse(source: str) -> list:
    """Percent-format text -> notebook cells."""
    cells, kind, lines = [], None, []

    def flush():
        text = "\n".join(lines).strip("\n")
        if kind == "markdown":
            cells.append(nbformat.v4.new_markdown_cell(text))
        elif kind == "code" and text.strip():
            cells.append(nbformat.v4.new_code_cell(text))

    for line in source.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind == "markdown":
            lines.append(line[2:] if line.startswith("# ") else line.lstrip("#"))
        elif kind == "code":
            lines.append(line)
    flush()
    return cells


def build(lesson: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = KERNEL
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = parse(lesson.read_text(encoding="utf-8"))
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{lesson.stem[:2]}-{i:02d}"  # stable ids: rebuilding changes no line
    out = HERE / f"{lesson.stem}.ipynb"
    nbformat.write(nb, out)
    return out


def execute(path: Path, cwd: Path | None = None, timeout: int = TIMEOUT) -> None:
    """Run a notebook in place; an error in any cell raises (nbclient.CellExecutionError)."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd or path.parent)}}).execute()
    nbformat.write(nb, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("only", nargs="*", help="lesson names (default: all)")
    ap.add_argument("--execute", action="store_true", help="run each notebook in place")
    args = ap.parse_args()
    lessons = sorted(LESSONS.glob("*.py"))
    if args.only:
        lessons = [p for p in lessons if p.stem in args.only]
    for lesson in lessons:
        out = build(lesson)
        if args.execute:
            t0 = time.perf_counter()
            execute(out)
            print(f"{out.name}: executed in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        else:
            print(f"{out.name}: written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
