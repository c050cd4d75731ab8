"""Every strategy on every model format: the same picks as the eager model, or a pinned one-line error.

Formats: a jacal checkpoint, a plain ``nn.Module`` subclass with its own ``forward``, TorchScript
scripted, TorchScript traced, and a ``torch.export`` program, all with dropout layers and the same
weights. Penultimate embeddings (coreset, badge) and MC dropout (bald) reach into compiled models
(see ``jacal/acquisition/_foreign.py``), so the picks must equal the eager model's exactly.
"""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import jacal
from jacal.acquisition import STRATEGIES
from jacal.checkpoint import load_model_file


class Net(nn.Module):
    """Not a Sequential: its own forward, a body and a head."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 32), nn.ReLU(),
                                  nn.Dropout(0.2))
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.body(x.flatten(1)))


class Residual(nn.Module):
    """A forward that running the layers in order does not reproduce."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(64, 64)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.a(x))) + x)


FORMATS = ["checkpoint", "module", "scripted", "traced", "export"]
# cells that cannot work, with the one line that says why
PINNED = {("traced", "bald"): "traced TorchScript model keeps the dropout it was traced with"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    warnings.simplefilter("ignore")
    root = tmp_path_factory.mktemp("formats")
    d = jacal.load_dataset("digits", n_train=300, seed=0)
    mlp = jacal.mlp(64, 10, width=32, depth=2, dropout=0.2, seed=0)
    jacal.train(mlp, d, epochs=3, seed=0)
    mlp.eval()
    torch.manual_seed(0)
    net = Net().eval()
    x = d.x_test[:80].reshape(80, -1)
    seq = nn.Sequential(*mlp.children()).eval()  # the same layers, as a user's own Sequential (scriptable)
    jacal.save_checkpoint(root / "mlp.pt", mlp, metadata={"input_shape": [64]})
    torch.jit.script(seq).save(str(root / "scripted.pt"))
    torch.jit.trace(seq, x[:4]).save(str(root / "traced.pt"))
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(seq, (x[:4],), dynamic_shapes={"input": {0: batch}}), str(root / "mlp.pt2"))
    models = {"checkpoint": load_model_file(root / "mlp.pt").model, "module": net,
              "scripted": load_model_file(root / "scripted.pt").model,
              "traced": load_model_file(root / "traced.pt").model,
              "export": load_model_file(root / "mlp.pt2").model}
    eager = {"checkpoint": mlp, "module": net, "scripted": seq, "traced": seq, "export": seq}
    return models, eager, x


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_strategy_on_every_format(built, fmt, strategy):
    models, eager, x = built
    if (fmt, strategy) in PINNED:
        with pytest.raises(ValueError, match=PINNED[(fmt, strategy)]) as err:
            jacal.acquire(models[fmt], x, 5, strategy=strategy, device="cpu", seed=1)
        assert "\n" not in str(err.value)
        return
    got = jacal.acquire(models[fmt], x, 5, strategy=strategy, device="cpu", seed=1)
    ref = jacal.acquire(eager[fmt], x, 5, strategy=strategy, device="cpu", seed=1)
    assert list(got.indices) == list(ref.indices)
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("compile_", ["script", "trace", "export"])
def test_custom_forward_compiled(built, compile_, tmp_path):
    """A compiled nn.Module subclass: embeddings and MC dropout reach in when its layers run in order;
    a residual forward gets the pinned error for embeddings, and nothing else changes."""
    _, _, x = built
    warnings.simplefilter("ignore")
    for cls, reachable in ((Net, True), (Residual, False)):
        torch.manual_seed(0)
        eager = cls().eval()
        if compile_ == "export":
            torch.export.save(torch.export.export(eager, (x[:4],), dynamic_shapes={"x": {0: torch.export.Dim("b")}}),
                              str(tmp_path / "m.pt2"))
            model = load_model_file(tmp_path / "m.pt2").model
        else:
            fn = torch.jit.script if compile_ == "script" else (lambda m: torch.jit.trace(m, x[:4]))
            fn(eager).save(str(tmp_path / "m.pt"))
            model = load_model_file(tmp_path / "m.pt").model
        if reachable or compile_ == "export":  # a graph is reachable whatever its forward
            got = jacal.acquire(model, x, 5, strategy="coreset", device="cpu", seed=1)
            assert list(got.indices) == list(jacal.acquire(eager, x, 5, strategy="coreset", device="cpu",
                                                           seed=1).indices)
        else:
            with pytest.raises(ValueError, match="out of reach"):
                jacal.acquire(model, x, 5, strategy="coreset", device="cpu", seed=1)
        assert jacal.acquire(model, x, 5, strategy="margin", device="cpu").indices.tolist() == \
            jacal.acquire(eager, x, 5, strategy="margin", device="cpu").indices.tolist()


def test_export_without_dropout_pinned(built, tmp_path):
    _, _, x = built
    plain = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    torch.export.save(torch.export.export(plain, (x[:4],), dynamic_shapes={"input": {0: torch.export.Dim("b")}}),
                      str(tmp_path / "p.pt2"))
    with pytest.raises(ValueError, match="needs a model with dropout layers"):
        jacal.acquire(load_model_file(tmp_path / "p.pt2").model, x, 5, strategy="bald", device="cpu")
