"""The progress bar of a training run."""

from __future__ import annotations

import sys
from typing import Self

from tqdm import tqdm


class Progress:
    """A tqdm bar on stderr (steps, with loss, lr and tokens/s), shown on a terminal by the
    writing rank only; `say` prints a line above it (or alone when there is no bar)."""

    def __init__(self, total: int, initial: int, show: bool):
        self.show = show
        self.bar = tqdm(total=total, initial=initial, disable=not show, unit="step",
                        dynamic_ncols=True, file=sys.stderr)

    def update(self, record: dict | None = None, diverging: bool = False) -> None:
        """One step done; a logged step's record updates the figures shown."""
        self.bar.update(1)
        if record is not None:
            warning = {"warning": "diverging"} if diverging else {}
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                                 tok_s=f"{record['tokens_per_second']:,.0f}", **warning)

    def evaluated(self, step: int, losses: dict) -> None:
        if self.show:
            self.bar.write(f"step {step}: train {losses['train_loss']:.4f}, "
                           f"val {losses['val_loss']:.4f}")

    def say(self, line: str) -> None:
        """A warning or note for the user, whether or not the bar is shown."""
        tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False
