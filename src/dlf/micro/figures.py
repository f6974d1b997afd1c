"""Pictures of scalar autograd: a computation graph, and a trained classifier's boundary.

Both functions return a matplotlib Figure (and with `path=`, also write it as a PNG, so
that `dlf.show(draw, value)` shows it in a notebook). They use matplotlib's object API
(Figure + the Agg canvas, no pyplot, no global backend) and import it only when called:
`import dlf.micro` stays free of matplotlib as well as torch. No Graphviz needed.
"""

from __future__ import annotations

import io
from pathlib import Path

from dlf.errors import DlfError
from dlf.fileio import atomic_write_bytes
from dlf.micro.engine import Value, topological_order

__all__ = ["decision_grid", "draw", "draw_boundary", "layout"]

MAX_NODES = 80  # beyond this a graph drawing is unreadable; draw a smaller piece of it
DPI = 100

# The graph's layout, in inches (the axes fill the figure: one data unit is one inch).
COLUMN = 2.6  # from one Value's column to the next
ROW = 0.9  # from one row to the next
BOX_W, BOX_H = 1.5, 0.62  # a Value's box
OP_R = 0.22  # an operation's circle; it sits left of the Value it makes
OP_DX = 1.15  # from the circle's centre to the box's centre
MARGIN = 0.45  # above and below the boxes, room for bent edges
SIDE = 0.2  # left and right of the boxes
TITLE_H = 0.4
BEND = -0.3  # curvature of an edge that skips a column (matplotlib's arc3 rad)

# The graph's style: leaves (inputs, weights, constants) blue, the output green, the
# Values in between grey, the operations orange.
LEAF, ROOT, INNER, OP = "#dbe9f6", "#d9f0d3", "#f4f4f4", "#fde0c5"
BOX = {"boxstyle": "round,pad=0,rounding_size=0.08", "ec": "0.3", "lw": 0.8}
CIRCLE = {"ec": "0.3", "lw": 0.8}
ARROW = {"arrowstyle": "-|>", "color": "0.35", "lw": 0.9, "shrinkA": 0, "shrinkB": 0}
TEXT = {"ha": "center", "va": "center", "fontsize": 8, "family": "monospace"}
OP_TEXT = {"ha": "center", "va": "center", "fontsize": 7}
TITLE = {"ha": "center", "va": "center", "fontsize": 10}

# The boundary figure: its size (inches); per label, the points' colour and a lighter one
# for its region.
BOUNDARY_SIZE = (5.5, 4.5)
CLASSES = {-1: ("#b2182b", "#f4a582"), 1: ("#2166ac", "#92c5de")}
REGION_ALPHA = 0.6
POINT = {"s": 18, "edgecolors": "k", "linewidths": 0.5}
MESH_MARGIN = 0.5  # the mesh extends this far beyond the points


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path | None):
    if path is not None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        atomic_write_bytes(path, buf.getvalue())
    return fig


def layout(root: Value) -> dict[Value, tuple[int, float]]:
    """Value -> (column, row), the root rightmost. An operation's column is one more than its
    parents' latest; a leaf sits just left of its first user (no edge runs across a row of
    boxes to reach it). Columns are filled from the right, each ordered by the mean row of
    its Values' users, so that edges cross rarely."""
    topo = topological_order(root)
    users: dict[Value, list[Value]] = {v: [] for v in topo}
    for v in topo:
        for p in v.prev:
            users[p].append(v)
    column = {}
    for v in topo:  # parents first, so their columns are known
        column[v] = 1 + max((column[p] for p in v.prev), default=-1)
    for v in topo:
        if not v.prev and users[v]:
            column[v] = min(column[u] for u in users[v]) - 1
    columns: list[list[Value]] = [[] for _ in range(column[root] + 1)]
    for v in topo:
        columns[column[v]].append(v)
    row = {}
    for values in reversed(columns):
        values.sort(key=lambda v: sum(row[u] for u in users[v]) / len(users[v]) if users[v]
                    else 0.0)
        for i, v in enumerate(values):
            row[v] = i - (len(values) - 1) / 2  # centred on 0
    return {v: (column[v], row[v]) for v in topo}


def draw(root: Value, path: str | Path | None = None, title: str = ""):
    """The graph that computed `root`, left to right: each Value as a box with its label,
    data and grad, each operation as a circle between its inputs and its result."""
    from matplotlib.patches import Circle, FancyBboxPatch

    pos = layout(root)
    if len(pos) > MAX_NODES:
        raise DlfError(f"draw: the graph has {len(pos)} Values; at most {MAX_NODES} can be "
                       "drawn legibly")
    n_columns = max(c for c, _ in pos.values()) + 1
    half_rows = max(abs(r) for _, r in pos.values())
    left = BOX_W / 2 + SIDE  # column 0 holds leaves only: no circle left of its boxes
    width = 2 * left + (n_columns - 1) * COLUMN
    boxes = 2 * half_rows * ROW + BOX_H
    height = boxes + 2 * MARGIN + (TITLE_H if title else 0)
    fig = _figure(width, height)
    ax = fig.add_axes((0, 0, 1, 1))
    bottom = -boxes / 2 - MARGIN
    ax.set_xlim(-left, width - left)
    ax.set_ylim(bottom, bottom + height)
    ax.axis("off")

    def centre(v):
        c, r = pos[v]
        return c * COLUMN, -r * ROW

    for v in pos:
        x, y = centre(v)
        face = LEAF if not v.prev else (ROOT if v is root else INNER)
        ax.add_patch(FancyBboxPatch((x - BOX_W / 2, y - BOX_H / 2), BOX_W, BOX_H, fc=face,
                                    **BOX))
        text = f"data {v.data:.4f}\ngrad {v.grad:.4f}"
        ax.text(x, y, f"{v.label}\n{text}" if v.label else text, **TEXT)
        if v.prev:
            ox = x - OP_DX
            ax.add_patch(Circle((ox, y), OP_R, fc=OP, **CIRCLE))
            ax.text(ox, y, v.op, **OP_TEXT)
            ax.annotate("", xy=(x - BOX_W / 2, y), xytext=(ox + OP_R, y), arrowprops=ARROW)
            for i, p in enumerate(v.prev):
                px, py = centre(p)
                # an edge that skips a column, or a parent's second edge (x * x), bends
                # round the boxes in between rather than running through them
                bend = pos[v][0] - pos[p][0] > 1 or p in v.prev[:i]
                ax.annotate("", xy=(ox - OP_R, y), xytext=(px + BOX_W / 2, py),
                            arrowprops={**ARROW, "connectionstyle": f"arc3,rad={BEND * bend}"})
    if title:
        ax.text(width / 2 - left, bottom + height - TITLE_H / 2, title, **TITLE)
    return _save(fig, path)


def decision_grid(model, X, grid: int = 40):
    """(g1, g2, side): grid evenly spaced values of each coordinate, spanning the points X
    with a margin of MESH_MARGIN, and side[j][i] = 1.0 where model([g1[i], g2[j]]) > 0,
    else 0.0."""
    if not isinstance(grid, int) or grid < 2:
        raise DlfError(f"draw_boundary needs grid >= 2, got {grid!r}")
    lo1, hi1 = min(p[0] for p in X) - MESH_MARGIN, max(p[0] for p in X) + MESH_MARGIN
    lo2, hi2 = min(p[1] for p in X) - MESH_MARGIN, max(p[1] for p in X) + MESH_MARGIN
    g1 = [lo1 + (hi1 - lo1) * i / (grid - 1) for i in range(grid)]
    g2 = [lo2 + (hi2 - lo2) * j / (grid - 1) for j in range(grid)]
    side = [[1.0 if model([a, b]).data > 0 else 0.0 for a in g1] for b in g2]  # (grid, grid)
    return g1, g2, side


def draw_boundary(model, X, y, path: str | Path | None = None, grid: int = 40,
                  title: str = ""):
    """The points X (lists [x1, x2]) coloured by label y (-1 or +1), over the regions where
    the model's score is negative or positive (evaluated on a grid x grid mesh)."""
    g1, g2, side = decision_grid(model, X, grid)
    fig = _figure(*BOUNDARY_SIZE)
    ax = fig.add_subplot()
    # side is 0 or 1: one level between them, each region in its class's light colour
    ax.contourf(g1, g2, side, levels=[-0.5, 0.5, 1.5],
                colors=[CLASSES[-1][1], CLASSES[1][1]], alpha=REGION_ALPHA)
    for label, (color, _) in CLASSES.items():
        pts = [p for p, t in zip(X, y) if t == label]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], c=color, label=f"y = {label:+d}",
                   **POINT)
    ax.set_xlabel("x1")  # the axes span the mesh: contourf sets their limits
    ax.set_ylabel("x2")
    ax.set_title(title or "decision boundary: the sign of the score")
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)
