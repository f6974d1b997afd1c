"""Publish a full `dlf report` into the repository (`make results`).

    python tools/publish_results.py [REPORT_DIR]      (default: report)

- docs/results.md: the report's REPORT.md, its figures copied to docs/results/ and its
  links pointed there; nothing else is changed;
- src/dlf/presets/measured.json: the report's results.json (each preset's figures, the
  machine, date and command): what `dlf presets` shows;
- README.md: the results table between its two `results table` markers, made from the
  same figures (tests/test_docs.py checks that the three agree).

A quick report (`dlf report --quick`) is refused: its figures are a smoke test.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

from dlf.tables import markdown_table

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MEASURED = ROOT / "src" / "dlf" / "presets" / "measured.json"
README = ROOT / "README.md"
BEGIN = "<!-- results table: written by tools/publish_results.py -->"
END = "<!-- end of results table -->"
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)]+\.png)\)")


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def readme_table(summary: dict) -> str:
    """The README's results table: one row per preset of the report."""
    rows = [[r["label"], f"`{preset}`", f"{r['num_parameters']:,}", f"{r['val_loss']:.3f}",
             r["reference"], duration(r["train_seconds"])]
            for preset, r in summary["runs"].items()]
    lines = [(f"Measured by `{summary['command']}` on {summary['machine']}, {summary['date']} "
              "([docs/results.md](docs/results.md) has every figure)."), "",
             *markdown_table(["model", "preset", "parameters", "val loss", "reference",
                              "training time"], rows)]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise SystemExit(f"README.md needs one {BEGIN!r} and one {END!r} line")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{block}\n{END}{tail}"


def publish(report: Path) -> None:
    summary = json.loads((report / "results.json").read_text(encoding="utf-8"))
    if summary["quick"]:
        raise SystemExit(f"{report} holds a quick report (a smoke test): run `dlf report`")
    figures = DOCS / "results"
    shutil.rmtree(figures, ignore_errors=True)
    figures.mkdir(parents=True)

    def copy(m: re.Match) -> str:
        src = Path(m.group(2))
        name = "-".join(src.parts)  # runs/x/loss.png -> runs-x-loss.png
        shutil.copyfile(report / src, figures / name)
        return f"![{m.group(1)}](results/{name})"

    md = IMAGE.sub(copy, (report / "REPORT.md").read_text(encoding="utf-8"))
    (DOCS / "results.md").write_text(md, encoding="utf-8")
    MEASURED.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    README.write_text(replace_block(README.read_text(encoding="utf-8"), readme_table(summary)),
                      encoding="utf-8")
    print(f"published {report}: docs/results.md ({len(list(figures.iterdir()))} figures), "
          f"{MEASURED.relative_to(ROOT)}, README.md's results table")


if __name__ == "__main__":
    publish(Path(sys.argv[1] if len(sys.argv) > 1 else "report"))
