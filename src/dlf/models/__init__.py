"""Model registry: a config `type` names a (config dataclass, model class) pair.

Every gradient-trained model follows one contract:
`logits, loss = model(idx, targets=None)`, `parameters()`, `train()`, `eval()`,
`state_dict()`, `load_state_dict()`, `block_size`. What a model can do beyond
that (its training regime, sequence targets, cached generation, FLOP count, bigram
tables) is declared in `dlf.models.protocol`.
"""

from __future__ import annotations

import importlib

from dlf.errors import DlfError

# type -> (module, config class, model class); imported lazily so `dlf --help` stays fast.
_REGISTRY = {
    "count-bigram": ("dlf.models.bigram", "CountBigramConfig", "CountBigram"),
    "neural-bigram": ("dlf.models.bigram", "NeuralBigramConfig", "NeuralBigram"),
    "mlp": ("dlf.models.mlp", "MLPConfig", "MLP"),
    "manual-mlp": ("dlf.models.manual_mlp", "ManualMLPConfig", "ManualMLP"),
    "wavenet": ("dlf.models.wavenet", "WaveNetConfig", "WaveNet"),
    "transformer": ("dlf.models.transformer", "TransformerConfig", "Transformer"),
    "bow": ("dlf.models.bow", "BoWConfig", "BoW"),
    "rnn": ("dlf.models.rnn", "RNNConfig", "RNN"),
    "gru": ("dlf.models.rnn", "GRUConfig", "GRU"),
}


def model_types() -> list[str]:
    return list(_REGISTRY)


def _lookup(type_: str, index: int):
    if type_ not in _REGISTRY:
        raise DlfError(f"unknown model type {type_!r}; known: {', '.join(_REGISTRY)}")
    module, *names = _REGISTRY[type_]
    return getattr(importlib.import_module(module), names[index])


def model_config_class(type_: str):
    return _lookup(type_, 0)


def model_class(type_: str):
    """The model class registered as `type_`."""
    return _lookup(type_, 1)


def build_model(config, **kwargs):
    """Instantiate the model that `config` (a registered config dataclass) describes."""
    return _lookup(config.type, 1)(config, **kwargs)


def model_type(model) -> str:
    """The registered type of a built model (the `type` its config names)."""
    for type_, (module, _, class_name) in _REGISTRY.items():
        cls = type(model)
        if cls.__module__ == module and cls.__name__ == class_name:
            return type_
    raise DlfError(f"{type(model).__name__} is not a registered model class")
