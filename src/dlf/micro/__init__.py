"""dlf.micro: scalar autograd on plain Python floats, the idea under every later lesson.

    from dlf.micro import Value
    a, b = Value(2.0, label="a"), Value(-3.0, label="b")
    L = (a * b + 1).tanh()
    L.backward()              # a.grad = dL/da, b.grad = dL/db
    draw(L)                   # the graph, with each Value's data and grad (a Figure)

`Value` (engine.py) carries the operations and `backward()`; `Neuron`, `Layer` and `MLP`
(nn.py) build a network of Values; `make_moons` and `train_moons` (moons.py) are the
lecture's experiment; `draw` and `draw_boundary` (figures.py) the pictures. Plain Python:
no torch, and matplotlib only when a picture is drawn.
"""

from dlf.micro.engine import DomainError, Value, topological_order
from dlf.micro.figures import draw, draw_boundary
from dlf.micro.moons import MoonsResult, accuracy, hinge_loss, make_moons, train, train_moons
from dlf.micro.nn import MLP, Layer, Module, Neuron

__all__ = [
    "MLP", "DomainError", "Layer", "Module", "MoonsResult", "Neuron", "Value", "accuracy",
    "draw", "draw_boundary", "hinge_loss", "make_moons", "topological_order", "train",
    "train_moons",
]
