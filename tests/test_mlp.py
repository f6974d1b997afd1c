"""Layered MLP vs the manual-backprop path, eval determinism, init, gradcheck CLI."""

import json
import math

import pytest
import torch

from dlf.cli import main
from dlf.manual.mlp import ManualMLP, ManualMLPConfig
from dlf.models.mlp import MLP, MLPConfig
from dlf.models.wavenet import WaveNet, WaveNetConfig
from tolerances import assert_close_to_scale, fp64_tol, network_terms


def test_layered_mlp_gradients_equal_manual_path():
    """Same weights -> the layered MLP's autograd gradients equal the hand-written ones."""
    torch.manual_seed(0)
    V, T, E, H, B = 11, 3, 5, 16, 24
    manual = ManualMLP(ManualMLPConfig(vocab_size=V, block_size=T, n_embd=E, n_hidden=H,
                                       bessel=False), dtype=torch.float64)
    layered = MLP(MLPConfig(vocab_size=V, block_size=T, n_embd=E, n_hidden=H, n_layer=1,
                            linear_bias=True))
    layered.to(dtype=torch.float64)
    sd = manual.state_dict()
    layered.load_state_dict({
        "wte.weight": sd["C"], "net.0.weight": sd["W1"], "net.0.bias": sd["b1"],
        "net.1.weight": sd["bngain"].view(-1), "net.1.bias": sd["bnbias"].view(-1),
        "net.1.running_mean": torch.zeros(H), "net.1.running_var": torch.ones(H),
        "net.3.weight": sd["W2"], "net.3.bias": sd["b2"]})
    idx = torch.randint(0, V, (B, T))
    y = torch.randint(0, V, (B,))
    cache = manual.forward_cache(idx, y)
    grads = manual.backward_fast(cache, idx, y)
    _, loss = layered(idx, y)
    loss.backward()
    # float64, two layers whose widest reduction is H (or T * E, or V) terms, over B rows
    tol = fp64_tol(network_terms(B, 2, max(H, T * E, V)))
    assert loss.item() == pytest.approx(cache["loss"].item(), rel=tol)
    pairs = {"wte.weight": "dC", "net.0.weight": "dW1", "net.0.bias": "db1",
             "net.1.weight": "dbngain", "net.1.bias": "dbnbias", "net.3.weight": "dW2",
             "net.3.bias": "db2"}
    # the bias before BatchNorm has gradient 0 by mathematics: its entries are sums over the
    # batch of dL/dhprebn that cancel, so the scale is the sum of their sizes
    dhprebn = manual.backward(cache, idx, y)["dhprebn"]  # (B, H)
    scales = {"net.0.bias": dhprebn.abs().sum(0).max().item()}
    named = dict(layered.named_parameters())
    for name, g in pairs.items():
        assert_close_to_scale(named[name].grad, grads[g].view_as(named[name]), tol, msg=name,
                              scale=scales.get(name))


def test_initial_loss_is_uniform_and_eval_is_deterministic():
    torch.manual_seed(1)
    model = MLP(MLPConfig(vocab_size=27, block_size=3, n_embd=10, n_hidden=100, n_layer=4))
    idx = torch.randint(0, 27, (256, 3))
    y = torch.randint(0, 27, (256,))
    _, loss = model(idx, y)
    assert abs(loss.item() - math.log(27)) < 0.1
    model.eval()
    a, _ = model(idx[:5])
    b, _ = model(idx[:5])
    c, _ = model(idx[:1])  # eval uses running stats: a single example gives the same logits
    assert torch.equal(a, b)
    torch.testing.assert_close(a[:1], c)


def test_wavenet_shapes_and_errors():
    torch.manual_seed(0)
    m = WaveNet(WaveNetConfig(vocab_size=27, block_size=8, n_embd=6, n_hidden=10))
    logits, _ = m(torch.randint(0, 27, (4, 8)))
    assert logits.shape == (4, 27)
    shapes = []
    x = torch.randint(0, 27, (4, 8))
    for layer in m.net.layers:
        x = layer(x)
        shapes.append(tuple(x.shape))
    assert shapes[:3] == [(4, 8, 6), (4, 4, 12), (4, 4, 10)]  # embed, flatten 2, linear
    assert shapes[-1] == (4, 27) and (4, 10) in shapes  # the time axis was fused away
    from dlf.errors import DlfError

    cfg = WaveNetConfig(vocab_size=27, block_size=6)  # the config is checked by the model
    with pytest.raises(DlfError, match="power of"):
        WaveNet(cfg)


def test_gradcheck_cli(capsys):
    assert main(["gradcheck", "--json", "--batch-size", "8"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"name", "exact", "approx", "max_abs_diff"} <= set(rows[0])
    assert all(r["max_abs_diff"] < 1e-10 for r in rows)
    assert {"dC", "dW1", "dhprebn", "dlogits (fused)"} <= {r["name"] for r in rows}
    assert main(["gradcheck", "--torch-batchnorm"]) == 0
    assert "largest difference" in capsys.readouterr().out
