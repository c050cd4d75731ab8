"""Embeddings of TorchScript models whose ``forward`` does more than run their layers in order.

jacal takes the input of the last linear layer (or a named layer's output) out of the model's own
scripted or traced graph (``jacal/models/_compiled.py``). Every reachable cell is checked against the eager
model it came from, in float64: the logits equal the model's own ``forward``, the embedding equals
both a by-hand computation and the eager forward hook. Cells that cannot be reached (a last linear
layer inside a loop or a branch, no linear layer at all) must give a one-line error.
"""
import io
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import jacal
from jacal.models import load_model_file
from jacal.models._compiled import _eager_runner, embedding_runner

warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.* are deprecated in favour of torch.export


class Normalized(nn.Module):
    """The issue's forward: reshape and normalize, then ``head(body(x))``."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(0.3))
        self.register_buffer("std", torch.tensor(1.7))
        self.body = nn.Sequential(nn.Linear(64, 12), nn.ReLU(), nn.Dropout(0.1), nn.Linear(12, 8), nn.Tanh())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        n = x.shape[0]
        x = (x.reshape(n, -1) - self.mean) / self.std
        return self.head(self.body(x))

    def penultimate(self, x):
        return self.body((x.reshape(len(x), -1) - self.mean) / self.std)


class NestedHead(nn.Module):
    """A head of nested Sequentials, the last Linear two containers deep."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Sequential(nn.Dropout(0.2), nn.Linear(8, 3)))

    def forward(self, x):
        return self.head(self.body(x))

    def penultimate(self, x):
        return self.head[1](self.head[0](self.body(x)))


class PlainHead(nn.Module):
    """Layers as plain attributes, with arithmetic between them."""

    def __init__(self):
        super().__init__()
        self.features = nn.Linear(64, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.features(x.flatten(1))) * 2.0 + 1.0)

    def penultimate(self, x):
        return torch.relu(self.features(x.flatten(1))) * 2.0 + 1.0


class Functional(nn.Module):
    """Functional preprocessing (pooling) and a functional first layer on raw parameters."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 16) / 4)
        self.b = nn.Parameter(torch.randn(8) / 4)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = F.avg_pool2d(x.reshape(-1, 1, 8, 8), 2).flatten(1)
        return self.head(F.layer_norm(F.gelu(F.linear(x, self.w, self.b)), (8,)))

    def penultimate(self, x):
        x = F.avg_pool2d(x.reshape(-1, 1, 8, 8), 2).flatten(1)
        return F.layer_norm(F.gelu(F.linear(x, self.w, self.b)), (8,))


class Residual(nn.Module):
    """A skip connection: running the layers in order does not reproduce this forward."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(64, 64)
        self.head = nn.Linear(64, 3)

    def forward(self, x):
        x = x.flatten(1)
        return self.head(torch.relu(self.a(x)) + x)

    def penultimate(self, x):
        x = x.flatten(1)
        return torch.relu(self.a(x)) + x


class Stack(nn.Module):
    """A ModuleList run in a Python loop (TorchScript unrolls it) with residual updates."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(64, 64) for _ in range(3)])
        self.out = nn.Linear(64, 3)

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.layers:
            x = x + torch.tanh(layer(x))
        return self.out(x)

    def penultimate(self, x):
        x = x.flatten(1)
        for layer in self.layers:
            x = x + torch.tanh(layer(x))
        return x


class Conv(nn.Module):
    """A CNN: conv, pooling, flatten, a linear head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x):
        return self.fc(F.max_pool2d(torch.relu(self.conv(x.reshape(-1, 1, 8, 8))), 2).flatten(1))

    def penultimate(self, x):
        return F.max_pool2d(torch.relu(self.conv(x.reshape(-1, 1, 8, 8))), 2).flatten(1)


class Looped(nn.Module):
    """The last linear layer runs in a loop: scripted, a ``prim::Loop`` (out of reach); traced, unrolled."""

    def __init__(self):
        super().__init__()
        self.steps = 3
        self.cell = nn.Linear(64, 64)

    def forward(self, x):
        x = x.flatten(1)
        for _ in range(self.steps):
            x = torch.tanh(self.cell(x))
        return x[:, :3]

    def penultimate(self, x):
        x = x.flatten(1)
        for _ in range(self.steps - 1):
            x = torch.tanh(self.cell(x))
        return x


class Branchy(nn.Module):
    """The last linear layer runs in a data-dependent branch (scripted only: a trace keeps one branch)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(64, 3)
        self.b = nn.Linear(64, 3)

    def forward(self, x):
        x = x.flatten(1)
        if bool(x.sum() > 0):
            return self.a(x)
        return self.b(x)


class NoLinear(nn.Module):
    """A matrix product for a head: no linear layer at all."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(64, 3))

    def forward(self, x):
        return x.flatten(1) @ self.w


REACHABLE = [Normalized, NestedHead, PlainHead, Functional, Residual, Stack, Conv]
# (model, how it was compiled) -> the one line it must refuse with
REFUSED = {(Looped, "script"): "last linear layer of this TorchScript model is out of reach .*loop or branch",
           (Branchy, "script"): "last linear layer of this TorchScript model is out of reach .*loop or branch",
           (NoLinear, "script"): "has no linear layer .*`embedding_layer` .*`embed`",
           (NoLinear, "trace"): "has no linear layer .*`embedding_layer` .*`embed`"}


def _compiled(eager, how, example):
    """``eager`` scripted or traced, then saved and loaded back, as a user's file reaches jacal."""
    compiled = torch.jit.script(eager) if how == "script" else torch.jit.trace(eager, example)
    buf = io.BytesIO()
    torch.jit.save(compiled, buf)
    buf.seek(0)
    return torch.jit.load(buf)


def _eager(cls):
    torch.manual_seed(0)
    return cls().double().eval()


X = torch.randn(7, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


CELLS = [(cls, how) for cls in REACHABLE + [Looped] for how in ("script", "trace") if (cls, how) not in REFUSED]


@pytest.mark.parametrize("cls,how", CELLS, ids=[f"{c.__name__}-{h}" for c, h in CELLS])
def test_last_linear_input_equals_the_eager_model(cls, how):
    eager = _eager(cls)
    model = _compiled(eager, how, X[:4])  # traced at another batch size than it is run at
    with torch.no_grad():
        z, emb = embedding_runner(model)(X)
        z_eager, emb_hook = _eager_runner(eager, None)(X)
        assert torch.equal(z, model(X))  # the logits are the model's own forward
        torch.testing.assert_close(z, z_eager, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(emb, eager.penultimate(X), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(emb, emb_hook, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", sorted(REFUSED, key=lambda c: (c[0].__name__, c[1])),
                         ids=lambda c: f"{c[0].__name__}-{c[1]}")
def test_unreachable_last_linear_refuses_in_one_line(case):
    cls, how = case
    model = _compiled(_eager(cls), how, X[:4])
    with pytest.raises(ValueError, match=REFUSED[case]) as err:
        embedding_runner(model)
    assert "\n" not in str(err.value)
    with torch.no_grad():  # the model itself still runs: only its embedding is refused
        assert model(X).shape == (len(X), 3)


# a named layer's output, and the same by hand on the eager model
LAYERS = [(Normalized, "body.1", lambda m, x: torch.relu(m.body[0]((x.reshape(len(x), -1) - m.mean) / m.std))),
          (Normalized, "body", lambda m, x: m.penultimate(x)),
          (NestedHead, "head.2", lambda m, x: m(x)),
          (Residual, "a", lambda m, x: m.a(x.flatten(1))),
          (Conv, "conv", lambda m, x: m.conv(x.reshape(-1, 1, 8, 8)))]


@pytest.mark.parametrize("how", ["script", "trace"])
@pytest.mark.parametrize("cls,layer,by_hand", LAYERS, ids=[f"{c.__name__}-{n}" for c, n, _ in LAYERS])
def test_named_layer_output_equals_the_eager_model(cls, layer, by_hand, how):
    eager = _eager(cls)
    model = _compiled(eager, how, X[:4])
    with torch.no_grad():
        z, emb = embedding_runner(model, layer)(X)
        assert torch.equal(z, model(X))
        torch.testing.assert_close(emb, by_hand(eager, X), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(emb, _eager_runner(eager, layer)(X)[1], rtol=1e-12, atol=1e-12)


def test_named_layer_out_of_reach_or_unknown():
    looped = _compiled(_eager(Looped), "script", X[:4])
    with pytest.raises(ValueError, match="layer 'cell' of this TorchScript model is out of reach") as err:
        embedding_runner(looped, "cell")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="`embedding_layer` 'nope' is not a layer .*'body.0'"):
        embedding_runner(_compiled(_eager(NestedHead), "script", X[:4]), "nope")
    identity = _compiled(nn.Sequential(nn.Identity(), nn.Linear(64, 3)).double().eval(), "script", X[:4])
    with pytest.raises(ValueError, match="leaves no output of layer '0'") as err:  # nn.Identity runs no op
        embedding_runner(identity, "0")
    assert "\n" not in str(err.value)


def test_the_model_keeps_its_own_graph_and_modes():
    eager = _eager(Normalized)
    model = _compiled(eager, "script", X[:4])
    before = str(model.forward.graph)
    run = embedding_runner(model)
    with torch.no_grad():
        run(X)
        model.train()  # the copy reads the model's attributes when it runs: its dropout follows the mode
        z_train = run(X)[0]
        model.eval()
        assert not torch.equal(z_train, run(X)[0])
    assert str(model.forward.graph) == before


@pytest.mark.parametrize("how", ["script", "trace"])
def test_strategies_and_estimators_on_the_issue_forward(how, tmp_path):
    """knn, mahalanobis, coreset and badge on a saved scripted/traced model with the issue's forward
    (reshape, normalize, head(body(x))) give what they give on the eager model."""
    d = jacal.load_dataset("digits", n_train=200, seed=0)

    torch.manual_seed(0)
    eager = Normalized().eval()
    x, y = d.x_train[:120], d.y_train[:120].numpy() % 3  # three classes, as the head has
    compiled = torch.jit.script(eager) if how == "script" else torch.jit.trace(eager, x[:4])
    compiled.save(str(tmp_path / "m.pt"))
    model = load_model_file(tmp_path / "m.pt").model
    pool = d.x_test[:60]
    for strategy in ("coreset", "badge"):
        got = jacal.acquire(model, pool, 6, strategy=strategy, device="cpu", seed=1)
        ref = jacal.acquire(eager, pool, 6, strategy=strategy, device="cpu", seed=1)
        assert list(got.indices) == list(ref.indices)
    for method, labels in (("knn", None), ("mahalanobis", y)):
        kw = {"k": 5} if method == "knn" else {}
        got = jacal.ConfidenceEstimator(method, **kw).learn(model, x, labels).predict_confidence(model, pool)
        ref = jacal.ConfidenceEstimator(method, **kw).learn(eager, x, labels).predict_confidence(eager, pool)
        # the same float32 kernels on the same values; distances of float32 embeddings (D = 8) differ
        # by rounding at most, far below the spread of the scores
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
        assert np.std(ref) > 1e-3
