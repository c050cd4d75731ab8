"""Every strategy on every model format: the same picks as the eager model, or a pinned one-line error.

Formats: a jacal checkpoint, a plain ``nn.Module`` subclass with its own ``forward``, TorchScript
scripted, TorchScript traced, and a ``torch.export`` program, all with dropout layers and the same
weights. Penultimate embeddings (coreset, badge) and MC dropout (bald) reach into compiled models
(see ``jacal/models/_compiled.py``), so the picks must equal the eager model's exactly.
"""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import jacal
from jacal.acquisition import STRATEGIES
from jacal.models import load_model_file

from _formats import FORMATS, PINNED, Net, Residual, build_formats


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_formats(tmp_path_factory.mktemp("formats"))


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
@pytest.mark.parametrize("cls", [Net, Residual])
def test_custom_forward_compiled(built, compile_, cls, tmp_path):
    """A compiled nn.Module subclass with its own forward (a residual one too): embeddings reach into
    its graph in every format, so coreset and margin pick what the eager model picks. Forwards whose
    last linear layer is out of reach are in tests/models/test_foreign_script.py."""
    _, _, x = built
    warnings.simplefilter("ignore")
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
    for strategy in ("coreset", "margin"):
        assert jacal.acquire(model, x, 5, strategy=strategy, device="cpu", seed=1).indices.tolist() == \
            jacal.acquire(eager, x, 5, strategy=strategy, device="cpu", seed=1).indices.tolist()


def test_export_without_dropout_pinned(built, tmp_path):
    _, _, x = built
    plain = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    torch.export.save(torch.export.export(plain, (x[:4],), dynamic_shapes={"input": {0: torch.export.Dim("b")}}),
                      str(tmp_path / "p.pt2"))
    with pytest.raises(ValueError, match="needs a model with dropout layers"):
        jacal.acquire(load_model_file(tmp_path / "p.pt2").model, x, 5, strategy="bald", device="cpu")


# the first ReLU's output, named as each format names it
LAYER = {"checkpoint": "1", "module": "body.1", "scripted": "1", "traced": "1", "export": "1"}


@pytest.mark.parametrize("strategy", ["coreset", "badge"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_embedding_layer_on_every_format(built, fmt, strategy):
    """``embedding_layer=`` takes the named layer's output in every format: the picks equal those of
    ``embed=`` computing that output by hand on the eager model, and differ from the default's."""
    models, eager, x = built
    ref_model = eager[fmt]
    layers = list((ref_model.body if fmt == "module" else ref_model).children())[:2]
    first = nn.Sequential(*layers)  # the first Linear and ReLU, by hand
    got = jacal.acquire(models[fmt], x, 6, strategy=strategy, device="cpu", seed=1, embedding_layer=LAYER[fmt])
    by_hand = jacal.acquire(ref_model, x, 6, strategy=strategy, device="cpu", seed=1, embed=first)
    default = jacal.acquire(models[fmt], x, 6, strategy=strategy, device="cpu", seed=1)
    assert list(got.indices) == list(by_hand.indices)
    np.testing.assert_allclose(got.scores, by_hand.scores, rtol=1e-4, atol=1e-6)
    assert not np.allclose(got.scores, default.scores)


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_embedding_layer_names_the_layers(built, fmt):
    models, _, x = built
    with pytest.raises(ValueError, match="`embedding_layer` 'nope' is not") as err:
        jacal.acquire(models[fmt], x, 5, strategy="coreset", device="cpu", embedding_layer="nope")
    assert "\n" not in str(err.value) and repr(LAYER[fmt]) in str(err.value)


def test_embed_callable_and_its_errors(built):
    models, eager, x = built
    no_linear = nn.Sequential(nn.Flatten(), nn.Identity()).eval()  # no linear layer: the logits are the input
    pool = torch.rand(30, 10)
    with pytest.raises(ValueError, match="no nn.Linear module .* `embedding_layer` .* `embed`") as err:
        jacal.acquire(no_linear, pool, 3, strategy="coreset")
    assert "\n" not in str(err.value)
    got = jacal.acquire(no_linear, pool, 3, strategy="coreset", embed=lambda t: t * 2)
    assert list(got.indices) == list(jacal.acquire(no_linear, pool, 3, strategy="coreset", embed=lambda t: t).indices)
    with pytest.raises(ValueError, match="Expected embeddings \\(30, d\\)"):
        jacal.acquire(no_linear, pool, 3, strategy="coreset", embed=lambda t: t[:2], batch_size=30)
    with pytest.raises(ValueError, match="not both"):
        jacal.acquire(models["checkpoint"], x, 3, strategy="coreset", embed=lambda t: t, embedding_layer="1")
