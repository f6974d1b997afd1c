"""Tables for people: markdown (results.md, REPORT.md, the docs) and aligned plain text
(the terminal), from a header and rows of cells already formatted as strings."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row of {len(row)} cells under {len(header)} columns")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def text_table(header: Sequence[str], rows: Iterable[Sequence[str]],
               left: Iterable[int] = (0,)) -> list[str]:
    """The lines of a plain-text table, columns two spaces apart, each as wide as its
    widest cell: the columns numbered in `left` aligned left, the others right."""
    rows = [header, *rows]
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    left = set(left)
    return ["  ".join(cell.ljust(w) if i in left else cell.rjust(w)
                      for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in rows]
