"""What a model can do beyond the forward contract, declared once per model class.

Every model offers `logits, loss = model(idx, targets=None)`, `parameters()`,
`train()`, `eval()`, `state_dict()`, `load_state_dict()`, `num_parameters()` and
`block_size`. Everything else is optional and declared in the class attribute
`capabilities`; the trainer, sampler, bench and run writer read it with
`capabilities(model)` instead of probing attributes:

    regime             how the parameters are set:
                       "autograd" -- loss.backward() and a dlf.optim optimizer;
                       "manual"   -- `manual_step(x, y, lr) -> loss`, gradients by hand;
                       "fitted"   -- `fit(X, Y)` once, no optimisation loop.
    sequence_targets   forward also takes targets (B, T): a prediction at every
                       position (text streams, whole-name sequences). Such a model also
                       offers generation's two primitives (dlf.sample runs the loop):
                         `prefill(idx (B, T)) -> (logits (B, V), cache)`: a window from
                           position 0, and what later positions need of it;
                         `advance(token (B, 1), cache) -> (logits (B, V), cache)`: the
                           next position. The cache is the model's own: keys and values
                           (Transformer), the hidden state (RNN), a running sum (BoW).
    flop_count         `flops_per_token()`: forward + backward matmul FLOPs per token.
    output_weights     `output_weights() -> list of tensors`: the output layer's weight
                       matrices (none when the head is tied to the token embedding), which
                       train.optimizer = "muon" keeps on AdamW with the embeddings.
    bigram_tables      `probability_table() -> (V, V)` (rows: previous character),
                       so the run writer can draw it and compare models.
"""

from __future__ import annotations

from dataclasses import dataclass

REGIMES = ("autograd", "manual", "fitted")


@dataclass(frozen=True)
class Capabilities:
    regime: str = "autograd"
    sequence_targets: bool = False
    flop_count: bool = False
    output_weights: bool = False
    bigram_tables: bool = False

    def __post_init__(self) -> None:
        if self.regime not in REGIMES:
            raise ValueError(f"regime must be one of {REGIMES}, got {self.regime!r}")


DEFAULT = Capabilities()


def capabilities(model) -> Capabilities:
    """What a model (or model class) declares; the defaults when its class declares none."""
    cls = model if isinstance(model, type) else type(model)
    return getattr(cls, "capabilities", DEFAULT)


def slide_window(start: int, length: int, block_size: int) -> int:
    """Where the context of the next prediction starts, given `length` tokens so far.

    The context grows until it would pass block_size, then restarts with the last
    block_size // 2 tokens. A cache is therefore re-prefilled once every block_size // 2
    tokens instead of recomputing a full window at every step; the uncached loop
    follows the same rule, so both produce the same tokens."""
    if length - start > block_size:
        return length - max(1, block_size // 2)
    return start
